"""The agent's HTTP API: metrics, health, this vantage's view, and the verdict."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.verdict import Verdict, dependencies_json, verdict_json

if TYPE_CHECKING:
    from agent.runtime import Agent

AGENT: web.AppKey[Agent] = web.AppKey("agent")


def build_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT] = agent
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/view", view)
    app.router.add_get("/v1/verdict", verdict)
    app.router.add_get("/v1/sites/{site}/health", site_health)
    app.router.add_get("/v1/results", results)
    return app


async def metrics(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    agent.scrapes += 1
    body = generate_latest(agent.prometheus.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[AGENT].ready
    return web.json_response(
        {"status": "ready" if ready else "starting"}, status=200 if ready else 503
    )


def _view_json(agent: Agent) -> dict[str, object]:
    local = agent.local_view()
    views = agent.views.snapshot()
    return {
        "vantage": local.vantage,
        "generated_at": local.generated_at,
        "impaired": local.impaired,
        "sites": {
            site: {
                "state": v.state.value,
                "since": v.since,
                "evidence": list(v.evidence),
                "consecutive_failures": v.failures,
                "consecutive_successes": v.successes,
                "last_run_at": v.last_run_at,
            }
            for site, v in views.items()
        },
    }


async def view(request: web.Request) -> web.Response:
    return web.json_response(_view_json(request.app[AGENT]))


def _site_json(agent: Agent, site: str) -> dict[str, object]:
    v = agent.verdicts[site]
    local = agent.views.snapshot()[site]
    return verdict_json(
        v, {"state": local.state.value, "since": local.since, "evidence": list(local.evidence)}
    )


async def verdict(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    agent.refresh_verdicts()
    return web.json_response(
        {
            "vantage": agent.config.agent.vantage,
            "generated_at": time.time(),
            "sites": {site: _site_json(agent, site) for site in agent.verdicts},
            "dependencies": dependencies_json(agent.views.latest.values()),
        }
    )


async def site_health(request: web.Request) -> web.Response:
    """For DNS/load-balancer health checkers: 503 only when failover is recommended."""
    agent = request.app[AGENT]
    agent.refresh_verdicts()
    site = request.match_info["site"]
    if site not in agent.verdicts:
        return web.json_response({"error": "unknown site"}, status=404)
    body = _site_json(agent, site)
    status = 503 if agent.verdicts[site].verdict is Verdict.FAILOVER_RECOMMENDED else 200
    return web.json_response(body, status=status)


async def results(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    return web.json_response(
        {name: r.summary() for name, r in sorted(agent.latest_results().items())}
    )
