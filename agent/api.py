"""The agent's HTTP API: metrics, health, this vantage's view, and the verdict.

GET handlers serve the agent's latest published status (agent/status.py) and never change the
agent; only the operator's POST/DELETE calls reach into it, through `StatusSource`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from pydantic import SecretStr

from failsight.agent.control import ActionKind, ControlConflict, clean_text, hold_until
from failsight.agent.prometheus import exposition
from failsight.agent.status import Status, StatusSource
from failsight.agent.verdict import FAILOVER_VERDICTS, dependencies_json, verdict_json


class Scrapes:
    """How many times this API has served /metrics: the API's own count, which the agent
    exports as `failsight_telemetry_exports_total{path="prometheus"}`."""

    def __init__(self) -> None:
        self.count = 0


AGENT: web.AppKey[StatusSource] = web.AppKey("agent")
SCRAPES: web.AppKey[Scrapes] = web.AppKey("scrapes")


def build_app(agent: StatusSource) -> web.Application:
    # Only the control endpoints take a body, and theirs is small: aiohttp's default 1 MiB
    # would let any client make the agent buffer a megabyte per request.
    app = web.Application(client_max_size=MAX_CONTROL_BODY)
    app[AGENT] = agent
    app[SCRAPES] = Scrapes()
    app.on_response_prepare.append(_nosniff)
    app.router.add_get("/", status_page)
    app.router.add_get("/status.js", _static_file(STATUS_SCRIPT, "text/javascript"))
    app.router.add_get("/status.css", _static_file(STATUS_STYLES, "text/css"))
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


async def _nosniff(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer is taken for what its Content-Type says, never sniffed as something else."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


STATIC = Path(__file__).with_name("static")
STATUS_PAGE = STATIC / "status.html"
STATUS_SCRIPT = STATIC / "status.js"
STATUS_STYLES = STATIC / "status.css"

# The status page runs its own script and styles, from the agent, and nothing else: no inline
# script or style (an injected one would not run), no framing (clickjacking), no <base> or
# form to redirect anything. The page fetches only the agent's own v1/ endpoints.
STATUS_PAGE_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
_STATIC_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


async def status_page(request: web.Request) -> web.Response:
    """The operator's page: HTML whose script (status.js) refreshes it from /v1/verdict."""
    return web.Response(
        body=STATUS_PAGE.read_bytes(),
        content_type="text/html",
        charset="utf-8",
        headers={
            **_STATIC_HEADERS,
            "Content-Security-Policy": STATUS_PAGE_CSP,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


def _static_file(path: Path, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler serving one of the status page's own files (script, styles), read once."""
    body = path.read_bytes()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers=_STATIC_HEADERS,
        )

    return serve


async def metrics(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT]
    if not agent.status.prometheus_enabled:
        return web.json_response({"error": "telemetry.prometheus is disabled"}, status=404)
    request.app[SCRAPES].count += 1
    # OpenMetrics (with exemplars) or the classic text format, as the scraper asks.
    # Rendered in slices with the event loop free between them, and written a piece at a time:
    # a scrape of any size delays the probes' timers by a slice at most.
    accept = request.headers.get("Accept", "")
    chunks, content_type = await exposition(agent.metrics_sink, accept)
    response = web.StreamResponse(headers={"Content-Type": content_type, "Vary": "Accept"})
    response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    if request.method != "HEAD":
        for chunk in chunks:
            await response.write(chunk)
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[AGENT].status.ready
    return web.json_response(
        {"status": "ready" if ready else "starting"}, status=200 if ready else 503
    )


def _bearer_ok(request: web.Request, secret: SecretStr) -> bool:
    """`Authorization: Bearer <secret>` (the scheme in any case), compared in constant time;
    anything else is no: a bare token, another scheme, two Authorization headers, bytes that
    are not UTF-8. Never raises."""
    headers = request.headers.getall("Authorization", [])
    if len(headers) != 1:
        return False
    scheme, _, presented = headers[0].partition(" ")
    presented = presented.strip(" \t")
    if scheme.lower() != "bearer" or not presented:
        return False
    try:
        # Header bytes that are not UTF-8 arrive as surrogates: encode them back.
        given = presented.encode("utf-8", "surrogateescape")
    except UnicodeError:
        return False
    # Digests of both: the comparison takes the same time whatever the presented length.
    expected = secret.get_secret_value().encode("utf-8")
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": "Bearer"})


async def view(request: web.Request) -> web.Response:
    status = request.app[AGENT].status
    token = status.view_token
    if token is not None and not _bearer_ok(request, token):
        return _unauthorized("a valid bearer token is required")
    scope = request.query.get("scope", "group")
    if scope == "group":
        return web.json_response(status.view.to_json())
    if scope != "member":
        return web.json_response({"error": "scope is `group` (default) or `member`"}, status=400)
    # One member's own part, for the other members of its group: answered only while this
    # member is ready (a member is in its group while it answers), and conditional on the
    # ETag, which changes only when the part does (not with the time it was generated at).
    if status.shard is None:
        return web.json_response({"error": "this agent is not in a group"}, status=404)
    if not status.ready:
        return web.json_response({"ready": False}, status=503)
    body = status.shard.to_json()
    stamp = body.pop("generated_at")
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
    etag = f'"{digest}"'
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers={"ETag": etag})
    body["generated_at"] = stamp
    return web.json_response(body, headers={"ETag": etag})


def _site_json(status: Status, site: str) -> dict[str, object]:
    local = status.view.sites[site]
    return verdict_json(
        status.verdicts[site],
        {"state": local.state.value, "since": local.since, "evidence": list(local.evidence)},
    )


async def verdict(request: web.Request) -> web.Response:
    status = request.app[AGENT].status
    return web.json_response(
        {
            "vantage": status.vantage,
            "generated_at": time.time(),
            "sites": {site: _site_json(status, site) for site in status.verdicts},
            "dependencies": dependencies_json(status.results.values()),
            "peers": {
                name: {"fetched_at": peer.fetched_at, "error": peer.error}
                for name, peer in status.peers.items()
            },
            # In a group: its members as this member sees them (null without a group).
            "group": None if status.view.group is None else dict(status.view.group),
        }
    )


async def site_health(request: web.Request) -> web.Response:
    """For DNS/load-balancer health checkers: 503 while a failover is recommended or latched."""
    status = request.app[AGENT].status
    site = request.match_info["site"]
    if site not in status.verdicts:
        return web.json_response({"error": "unknown site"}, status=404)
    body = _site_json(status, site)
    code = 503 if status.verdicts[site].verdict in FAILOVER_VERDICTS else 200
    return web.json_response(body, status=code)


async def results(request: web.Request) -> web.Response:
    status = request.app[AGENT].status
    return web.json_response({name: r.summary() for name, r in sorted(status.results.items())})


async def timeline(request: web.Request) -> web.Response:
    """The last hour of verdicts, views and control actions, for the status page."""
    return web.json_response(request.app[AGENT].status.timeline.to_json(time.time()))


# --- operator controls ---------------------------------------------------------------------

MAX_CONTROL_BODY = 16_384
# A control call's body (a few hundred bytes of JSON) arrives at once; one trickling in holds a
# connection and a handler, so it gets this long, then 408.
CONTROL_BODY_TIMEOUT = 10.0


async def _control_request(request: web.Request) -> tuple[str, dict[str, object]] | web.Response:
    """The site and JSON body of an authorised control call, or the response refusing it."""
    status = request.app[AGENT].status
    token = status.admin_token
    if token is None:
        return web.json_response(
            {"error": "operator controls are disabled: set agent.admin_token to enable them"},
            status=403,
        )
    if not _bearer_ok(request, token):
        return _unauthorized("the admin bearer token is required")
    site = request.match_info["site"]
    if site not in status.sites:
        return web.json_response({"error": "unknown site"}, status=404)
    if request.content_length is not None and request.content_length > MAX_CONTROL_BODY:
        return web.json_response({"error": "request body too large"}, status=413)
    try:
        async with asyncio.timeout(CONTROL_BODY_TIMEOUT):
            raw = await request.read()  # all of it, at most client_max_size (MAX_CONTROL_BODY)
    except TimeoutError:
        late = web.json_response(
            {"error": f"the request body did not arrive within {CONTROL_BODY_TIMEOUT:g}s"},
            status=408,
        )
        late.force_close()  # the rest of that body is not worth waiting for
        return late
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": "request body too large"}, status=413)
    except web.RequestPayloadError:  # a malformed chunked or compressed body
        return web.json_response({"error": "the request body is malformed"}, status=400)
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
    return f"{by} via {request.app[AGENT].status.vantage}", reason


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
    # The agent has judged again and republished: the answer is the new snapshot's verdict.
    return web.json_response(
        {"action": action.to_json(), "verdict": _site_json(agent.status, site)}, status=200
    )


async def failback(request: web.Request) -> web.Response:
    return await _act(request, ActionKind.FAILBACK)


async def hold(request: web.Request) -> web.Response:
    return await _act(request, ActionKind.HOLD, needs_reason=True)


async def lift(request: web.Request) -> web.Response:
    return await _act(request, ActionKind.LIFT)
