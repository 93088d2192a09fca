"""The agent's HTTP API: metrics, health, this vantage's view, and the verdict."""

from __future__ import annotations

import hmac
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from agent.control import ActionKind, ControlConflict, clean_text, hold_until
from agent.verdict import FAILOVER_VERDICTS, dependencies_json, verdict_json

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
    app.router.add_get("/v1/timeline", timeline)
    app.router.add_post("/v1/sites/{site}/failback", failback)
    app.router.add_post("/v1/sites/{site}/hold", hold)
    app.router.add_delete("/v1/sites/{site}/hold", lift)
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
        "impaired": agent.impaired,
        "every_site_failing": local.every_site_failing,
        "self_check": local.self_check,
        "sites": {
            site: {
                "state": v.state.value,
                "since": v.since,
                "evidence": list(v.evidence),
                "consecutive_failures": v.failures,
                "consecutive_successes": v.successes,
                "last_run_at": v.last_run_at,
                "flapping": v.flapping,
                "episode_since": v.episode_since,
            }
            for site, v in views.items()
        },
        # Holds, failbacks and latches travel with the view: every agent converges on them.
        "control": {
            "clock": agent.control.clock,
            "actions": [a.to_json() for a in agent.control.actions()],
        },
    }


def _bearer_ok(request: web.Request, secret: SecretStr) -> bool:
    """`Authorization: Bearer <secret>`, compared in constant time; anything else is no."""
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    # Header bytes that are not UTF-8 arrive as surrogates: encode them back, never raise.
    given = presented.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, secret.get_secret_value().encode("utf-8"))


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": "Bearer"})


async def view(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    token = agent.config.agent.view_token
    if token is not None and not _bearer_ok(request, token):
        return _unauthorized("a valid bearer token is required")
    return web.json_response(_view_json(agent))


def _site_json(agent: Agent, site: str) -> dict[str, object]:
    v = agent.verdicts[site]
    local = agent.views.snapshot()[site]
    return verdict_json(
        v, {"state": local.state.value, "since": local.since, "evidence": list(local.evidence)}
    )


def _judged(agent: Agent) -> None:
    # Verdicts are judged by the agent's verdict loop; before its first pass (or in a test
    # that drives the agent by hand) there are none yet: judge once.
    if not agent.verdicts:
        agent.refresh_verdicts()


async def verdict(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    _judged(agent)
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
    """For DNS/load-balancer health checkers: 503 while a failover is recommended or latched."""
    agent = request.app[AGENT]
    _judged(agent)
    site = request.match_info["site"]
    if site not in agent.verdicts:
        return web.json_response({"error": "unknown site"}, status=404)
    body = _site_json(agent, site)
    status = 503 if agent.verdicts[site].verdict in FAILOVER_VERDICTS else 200
    return web.json_response(body, status=status)


async def results(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    return web.json_response(
        {name: r.summary() for name, r in sorted(agent.latest_results().items())}
    )


async def timeline(request: web.Request) -> web.Response:
    """The last hour of verdicts, views and control actions, for the status page."""
    agent = request.app[AGENT]
    _judged(agent)
    return web.json_response(agent.timeline.to_json(time.time()))


# --- operator controls ---------------------------------------------------------------------

MAX_CONTROL_BODY = 16_384


async def _control_request(request: web.Request) -> tuple[str, dict[str, object]] | web.Response:
    """The site and JSON body of an authorised control call, or the response refusing it."""
    agent = request.app[AGENT]
    token = agent.config.agent.admin_token
    if token is None:
        return web.json_response(
            {"error": "operator controls are disabled: set agent.admin_token to enable them"},
            status=403,
        )
    if not _bearer_ok(request, token):
        return _unauthorized("the admin bearer token is required")
    site = request.match_info["site"]
    if site not in {s.name for s in agent.config.sites}:
        return web.json_response({"error": "unknown site"}, status=404)
    if request.content_length is not None and request.content_length > MAX_CONTROL_BODY:
        return web.json_response({"error": "request body too large"}, status=413)
    raw = await request.content.read(MAX_CONTROL_BODY + 1)
    if len(raw) > MAX_CONTROL_BODY:
        return web.json_response({"error": "request body too large"}, status=413)
    body: object = {}
    if raw.strip():
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "the body must be a JSON object"}, status=400)
    return site, body


def _operator(body: dict[str, object], request: web.Request) -> tuple[str, str]:
    by = clean_text(body.get("by") or "operator", "by", limit=128) or "operator"
    reason = clean_text(body.get("reason") or "", "reason")
    return f"{by} via {request.app[AGENT].config.agent.vantage}", reason


async def _act(
    request: web.Request, kind: ActionKind, *, needs_reason: bool = False
) -> web.Response:
    checked = await _control_request(request)
    if isinstance(checked, web.Response):
        return checked
    site, body = checked
    agent = request.app[AGENT]
    try:
        by, reason = _operator(body, request)
        if needs_reason and not reason:
            raise ValueError("a reason is required: say why the site is held")
        until = hold_until(body, time.time()) if kind is ActionKind.HOLD else None
        action = agent.control_action(kind, site, by=by, reason=reason, until=until)
    except ControlConflict as exc:
        return web.json_response({"error": str(exc)}, status=409)
    except ValueError as exc:  # the request itself: a bad duration, time or text
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(
        {"action": action.to_json(), "verdict": _site_json(agent, site)}, status=200
    )


async def failback(request: web.Request) -> web.Response:
    return await _act(request, ActionKind.FAILBACK)


async def hold(request: web.Request) -> web.Response:
    return await _act(request, ActionKind.HOLD, needs_reason=True)


async def lift(request: web.Request) -> web.Response:
    return await _act(request, ActionKind.LIFT)
