"""The agent's HTTP API: metrics, health, this vantage's view, and the verdict."""

from __future__ import annotations

import hmac
import time
from pathlib import Path
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
    app.router.add_get("/", status_page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/view", view)
    app.router.add_get("/v1/verdict", verdict)
    app.router.add_get("/v1/sites/{site}/health", site_health)
    app.router.add_get("/v1/results", results)
    return app


STATUS_PAGE = Path(__file__).with_name("static") / "status.html"


async def status_page(request: web.Request) -> web.Response:
    """The operator's page: self-contained HTML that refreshes itself from /v1/verdict."""
    return web.Response(
        body=STATUS_PAGE.read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        },
    )


async def metrics(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    if not agent.config.telemetry.prometheus.enabled:
        return web.json_response({"error": "telemetry.prometheus is disabled"}, status=404)
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
    agent = request.app[AGENT]
    token = agent.config.agent.view_token
    if token is not None:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(presented, token.get_secret_value().encode()):
            return web.json_response(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    return web.json_response(_view_json(agent))


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
            "peers": {
                name: {"fetched_at": state.fetched_at, "error": state.error}
                for name, state in agent.peers.states.items()
            },
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
