"""Simulated distribution platform: one in-memory aiohttp app per site, with injectable faults."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self, get_args

from aiohttp import web
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from failsight.core.configtypes import Model, Name

Step = Literal["order_submit", "allocation", "pick", "shipment", "invoice", "cancel", "order_get"]
FaultKind = Literal["outage", "latency", "fail_step", "hang", "html", "truncate", "huge"]

STEPS: tuple[str, ...] = get_args(Step)
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

REQUEST_LOG_SIZE = 1000
HUGE_BODY_BYTES = 10 * 1024 * 1024
RECORDED_HEADERS = (
    "traceparent",
    "Idempotency-Key",
    "X-Failsight-Synthetic",
    "X-Failsight-Run-Id",
    "X-Failsight-Vantage",
)

# Long enough for normal requests to drain, short enough that a wedged handler cannot hold
# `Platform.stop()` for aiohttp's default of a minute.
_SHUTDOWN_TIMEOUT = 3.0
# How often a hanging handler looks whether its client has gone away: aiohttp does not cancel
# handlers on disconnect by default, so without this a hung request would outlive its client.
_HANG_POLL_SECONDS = 0.05
_HUGE_PREFIX = b'{"padding":"'
_HUGE_SUFFIX = b'"}'
_HUGE_CHUNK = b"x" * 65536
_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Scheduled maintenance</title></head>\n"
    "<body><h1>We'll be back soon</h1><p>The service is under maintenance.</p></body></html>\n"
)


# The status the site itself answers with, per kind; `outage` and `fail_step` answer the
# `status` they are given (by default 503 and 500). `latency` and `hang` have none: a late
# request gets whatever the API answers, a hung one nothing.
_FIXED_STATUS: Mapping[str, int] = MappingProxyType({"html": 200, "truncate": 200, "huge": 200})
_DEFAULT_STATUS: Mapping[str, int] = MappingProxyType({"outage": 503, "fail_step": 500})


class Fault(Model):
    """One injected fault; `step` and `vantage` narrow which `/api/` requests it hits.

    Once validated it holds what the site serves: `status` is the status every matched request
    gets (None for `latency` and `hang`), `latency_ms` is set for `latency` only. So its
    `model_dump(exclude_none=True)` is the truthful echo, and posting that echo back makes the
    same fault. A field that means nothing for the kind is refused rather than ignored.
    """

    kind: FaultKind
    step: Step | None = Field(default=None, validate_default=True)
    vantage: Name | None = None
    latency_ms: int | None = Field(default=None, ge=0, le=600_000, validate_default=True)
    status: int | None = Field(default=None, validate_default=True)

    @field_validator("step")
    @classmethod
    def _step_required_for_fail_step(cls, step: Step | None, info: ValidationInfo) -> Step | None:
        if step is None and info.data.get("kind") == "fail_step":
            raise ValueError("required when kind is fail_step")
        return step

    @field_validator("latency_ms")
    @classmethod
    def _latency_for_latency_only(cls, latency_ms: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("kind")
        if kind == "latency" and (latency_ms is None or latency_ms <= 0):
            raise ValueError("must be greater than zero when kind is latency")
        if kind != "latency" and latency_ms is not None:
            raise ValueError(f"only for kind latency, not {kind}")
        return latency_ms

    @field_validator("status")
    @classmethod
    def _status_as_served(cls, status: int | None, info: ValidationInfo) -> int | None:
        kind = info.data.get("kind")
        if kind is None:
            return status  # the kind itself is refused
        if kind in _DEFAULT_STATUS:
            status = _DEFAULT_STATUS[kind] if status is None else status
            if not 400 <= status <= 599:
                raise ValueError(f"must be an error status, 400 to 599, for {kind}")
            return status
        served = _FIXED_STATUS.get(kind)
        if status is not None and status != served:
            answers = f"always answers {served}" if served else "answers no status of its own"
            raise ValueError(f"only outage and fail_step choose their status; {kind} {answers}")
        return served

    def matches(self, step: str | None, vantage: str | None) -> bool:
        """Whether this fault applies to a request on `step` sent from `vantage`."""
        if self.step is not None and self.step != step:
            return False
        return self.vantage is None or self.vantage == vantage

    def covers(self, other: Fault) -> bool:
        """Whether this fault matches every request `other` does (first match wins, so an
        earlier fault that covers a later one leaves it nothing to do)."""
        return self.step in (None, other.step) and self.vantage in (None, other.vantage)


@dataclass(slots=True)
class Order:
    id: str
    sku: str
    qty: int
    tenant: str
    synthetic: bool
    idempotency_key: str
    status: str = "created"
    allocation_id: str | None = None
    pick_id: str | None = None
    shipment_id: str | None = None
    invoice_id: str | None = None


@dataclass(slots=True)
class Allocation:
    id: str
    order_id: str
    ready_at: float
    """`time.monotonic()` from which the allocation is complete."""


@dataclass(slots=True)
class RequestRecord:
    """One `/api/` request as the site saw it; never holds the Authorization value."""

    method: str
    path: str
    headers: dict[str, str | None]
    authorization_present: bool
    at: float = field(default_factory=time.time)
    status: int | None = None
    """None while unanswered, and for ever when a `hang` fault swallowed the request."""

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "headers": dict(self.headers),
            "authorization_present": self.authorization_present,
            "at": self.at,
        }


@dataclass
class SiteState:
    """Everything one simulated site holds in memory; tests read it directly."""

    site: str
    orders: dict[str, Order] = field(default_factory=dict)
    idempotency_keys: dict[str, str] = field(default_factory=dict)
    allocations: dict[str, Allocation] = field(default_factory=dict)
    picks: dict[str, str] = field(default_factory=dict)
    shipments: dict[str, str] = field(default_factory=dict)
    invoices: dict[str, str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))
    requests_total: int = 0

    @property
    def synthetic_orders(self) -> int:
        return sum(1 for order in self.orders.values() if order.synthetic)

    def snapshot(self) -> dict[str, Any]:
        """The `/admin/state` body."""
        return {
            "site": self.site,
            "orders": len(self.orders),
            "synthetic_orders": self.synthetic_orders,
            "allocations": len(self.allocations),
            "picks": len(self.picks),
            "shipments": len(self.shipments),
            "invoices": len(self.invoices),
            "faults": [fault.model_dump(exclude_none=True) for fault in self.faults],
            "requests_total": self.requests_total,
        }

    def fault_for(self, step: str | None, vantage: str | None) -> Fault | None:
        return next((fault for fault in self.faults if fault.matches(step, vantage)), None)

    def record(self, entry: RequestRecord) -> None:
        self.requests.append(entry)
        self.requests_total += 1

    def allocation_state(self, allocation: Allocation, now: float) -> str:
        return "allocated" if now >= allocation.ready_at else "pending"

    def refresh(self, order: Order, now: float) -> Order:
        """Promote a created order whose allocation has completed since it was last looked at."""
        if order.status == "created" and order.allocation_id is not None:
            allocation = self.allocations[order.allocation_id]
            if self.allocation_state(allocation, now) == "allocated":
                order.status = "allocated"
        return order

    def purge(self, order: Order) -> None:
        """Remove an order and everything hanging off it, idempotency key included."""
        del self.orders[order.id]
        if self.idempotency_keys.get(order.idempotency_key) == order.id:
            del self.idempotency_keys[order.idempotency_key]
        if order.allocation_id is not None:
            self.allocations.pop(order.allocation_id, None)
        if order.pick_id is not None:
            self.picks.pop(order.pick_id, None)
        if order.shipment_id is not None:
            self.shipments.pop(order.shipment_id, None)
        if order.invoice_id is not None:
            self.invoices.pop(order.invoice_id, None)


@dataclass(frozen=True)
class _SiteSettings:
    site: str
    allocation_delay: float
    token: str | None = field(repr=False)


SITE_STATE = web.AppKey("failsight_site_state", SiteState)
_SETTINGS = web.AppKey("failsight_site_settings", _SiteSettings)
_SHUTDOWN = web.AppKey("failsight_site_shutdown", asyncio.Event)
_ROUTE_STEPS = web.AppKey("failsight_route_steps", dict[web.AbstractRoute, str])

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(8)}"


def _error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def _order_json(order: Order, site: str, *, detail: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": order.id,
        "status": order.status,
        "sku": order.sku,
        "qty": order.qty,
        "tenant": order.tenant,
        "synthetic": order.synthetic,
        "site": site,
    }
    if detail:
        body["allocation_id"] = order.allocation_id
        body["pick_id"] = order.pick_id
        body["shipment_id"] = order.shipment_id
        body["invoice_id"] = order.invoice_id
    return body


def _unit_price(sku: str) -> float:
    # Deterministic per SKU so that an invoice amount can be asserted on.
    return 5.0 + (zlib.crc32(sku.encode()) % 9500) / 100


def _validate_order_body(body: Any) -> tuple[str, int, str] | web.Response:
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    sku, qty, tenant = body.get("sku"), body.get("qty"), body.get("tenant")
    if not isinstance(sku, str) or not sku.strip():
        return _error(400, "sku: must be a non-empty string", field="sku")
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        return _error(400, "qty: must be an integer greater than zero", field="qty")
    if not isinstance(tenant, str) or not tenant.strip():
        return _error(400, "tenant: must be a non-empty string", field="tenant")
    return sku, qty, tenant


def _is_synthetic(request: web.Request) -> bool:
    return request.headers.get("X-Failsight-Synthetic", "").strip().lower() in {"1", "true"}


def _find_order(request: web.Request) -> Order | web.Response:
    state = request.app[SITE_STATE]
    order = state.orders.get(request.match_info["order_id"])
    if order is None:
        return _error(404, "order not found")
    return state.refresh(order, time.monotonic())


def _require_status(order: Order, expected: str, step: str) -> web.Response | None:
    if order.status != expected:
        return _error(409, f"cannot {step} an order that is {order.status}; it must be {expected}")
    return None


async def _submit_order(request: web.Request) -> web.Response:
    state, site = request.app[SITE_STATE], request.app[_SETTINGS].site
    key = request.headers.get("Idempotency-Key", "").strip()
    if not key:
        return _error(400, "Idempotency-Key header is required")
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "body must be valid JSON")
    fields = _validate_order_body(body)
    if isinstance(fields, web.Response):
        return fields
    sku, qty, tenant = fields
    synthetic = _is_synthetic(request)

    existing_id = state.idempotency_keys.get(key)
    if existing_id is not None:
        existing = state.refresh(state.orders[existing_id], time.monotonic())
        if (existing.sku, existing.qty, existing.tenant, existing.synthetic) != (
            sku,
            qty,
            tenant,
            synthetic,
        ):
            return _error(422, "Idempotency-Key was already used with a different request")
        return web.json_response(
            _order_json(existing, site), status=200, headers={"Idempotent-Replayed": "true"}
        )

    order = Order(
        id=_new_id("ord"),
        sku=sku,
        qty=qty,
        tenant=tenant,
        synthetic=synthetic,
        idempotency_key=key,
    )
    state.orders[order.id] = order
    state.idempotency_keys[key] = order.id
    return web.json_response(_order_json(order, site), status=201)


async def _get_order(request: web.Request) -> web.Response:
    order = _find_order(request)
    if isinstance(order, web.Response):
        return order
    return web.json_response(_order_json(order, request.app[_SETTINGS].site, detail=True))


async def _allocate(request: web.Request) -> web.Response:
    state, settings = request.app[SITE_STATE], request.app[_SETTINGS]
    order = _find_order(request)
    if isinstance(order, web.Response):
        return order
    if order.status == "cancelled":
        return _error(409, "cannot allocate a cancelled order")
    now = time.monotonic()
    if order.allocation_id is None:
        # Completion is computed from this timestamp when next looked at, so no background task
        # exists that could outlive the app.
        allocation = Allocation(_new_id("alc"), order.id, now + settings.allocation_delay)
        state.allocations[allocation.id] = allocation
        order.allocation_id = allocation.id
    else:
        allocation = state.allocations[order.allocation_id]
    return web.json_response(
        {
            "allocation_id": allocation.id,
            "order_id": order.id,
            "state": state.allocation_state(allocation, now),
        },
        status=202,
    )


async def _get_allocation(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    allocation = state.allocations.get(request.match_info["allocation_id"])
    if allocation is None:
        return _error(404, "allocation not found")
    return web.json_response(
        {
            "allocation_id": allocation.id,
            "order_id": allocation.order_id,
            "state": state.allocation_state(allocation, time.monotonic()),
        }
    )


async def _pick(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    order = _find_order(request)
    if isinstance(order, web.Response):
        return order
    if (conflict := _require_status(order, "allocated", "pick")) is not None:
        return conflict
    order.pick_id = _new_id("pck")
    order.status = "picked"
    state.picks[order.pick_id] = order.id
    return web.json_response(
        {"pick_id": order.pick_id, "order_id": order.id, "status": "picked"}, status=201
    )


async def _ship(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    order = _find_order(request)
    if isinstance(order, web.Response):
        return order
    if (conflict := _require_status(order, "picked", "ship")) is not None:
        return conflict
    order.shipment_id = _new_id("shp")
    order.status = "shipped"
    state.shipments[order.shipment_id] = order.id
    tracking = f"TRK{secrets.token_hex(5).upper()}"
    return web.json_response(
        {"shipment_id": order.shipment_id, "order_id": order.id, "tracking": tracking},
        status=201,
    )


async def _invoice(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    order = _find_order(request)
    if isinstance(order, web.Response):
        return order
    if (conflict := _require_status(order, "shipped", "invoice")) is not None:
        return conflict
    order.invoice_id = _new_id("inv")
    order.status = "invoiced"
    state.invoices[order.invoice_id] = order.id
    amount = round(order.qty * _unit_price(order.sku), 2)
    return web.json_response(
        {"invoice_id": order.invoice_id, "order_id": order.id, "amount": amount, "currency": "EUR"},
        status=201,
    )


async def _cancel(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    order = _find_order(request)
    if isinstance(order, web.Response):
        return order
    if order.synthetic:
        # Synthetic journeys must leave nothing behind on the platform they watch.
        state.purge(order)
    else:
        order.status = "cancelled"
    return web.json_response({"id": order.id, "status": "cancelled", "purged": order.synthetic})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"site": request.app[_SETTINGS].site, "status": "ok"})


async def _admin_state(request: web.Request) -> web.Response:
    return web.json_response(request.app[SITE_STATE].snapshot())


async def _admin_requests(request: web.Request) -> web.Response:
    records = request.app[SITE_STATE].requests
    raw_limit = request.query.get("limit")
    limit = len(records)
    if raw_limit is not None:
        try:
            limit = int(raw_limit)
        except ValueError:
            return _error(400, "limit: must be an integer", field="limit")
        if limit < 0:
            return _error(400, "limit: must not be negative", field="limit")
    newest = list(records)[len(records) - min(limit, len(records)) :]
    return web.json_response([entry.to_json() for entry in newest])


async def _admin_clear_requests(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    cleared = len(state.requests)
    state.requests.clear()
    return web.json_response({"site": state.site, "cleared": cleared})


async def _admin_fault(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "body must be valid JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    try:
        fault = Fault.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "body"
        return _error(400, f"invalid fault: {name}: {first['msg']}", field=name)
    covered = any(earlier.covers(fault) for earlier in state.faults)
    state.faults.append(fault)
    # The fault as the site now serves it (the kind's real status, only the fields that apply),
    # then the site's state, as GET /admin/state shows it.
    echo: dict[str, Any] = {"fault": fault.model_dump(exclude_none=True), **state.snapshot()}
    if covered:
        echo["note"] = (
            "an earlier fault matches every request this one does and answers them first: "
            "POST /admin/recover clears all faults"
        )
    return web.json_response(echo, status=201)


async def _admin_recover(request: web.Request) -> web.Response:
    state = request.app[SITE_STATE]
    state.faults.clear()
    return web.json_response(state.snapshot())


async def _sleep_unless_shutdown(app: web.Application, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[_SHUTDOWN].wait(), seconds)


async def _hang(request: web.Request) -> None:
    """Hold the request open until its client leaves or the site shuts down."""
    shutdown = request.app[_SHUTDOWN]
    while not shutdown.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await _sleep_unless_shutdown(request.app, _HANG_POLL_SECONDS)
    transport = request.transport
    if transport is not None:
        transport.close()


async def _truncated(request: web.Request, status: int) -> web.StreamResponse:
    body = json.dumps({"id": "ord-truncated", "status": "created", "padding": "x" * 200}).encode()
    response = web.StreamResponse(status=status)
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    # Closing before the declared length is reached is what a dying proxy looks like: the
    # client gets a payload error, not a clean short body.
    transport = request.transport
    if transport is not None:
        transport.close()
    return response


async def _huge(request: web.Request, status: int) -> web.StreamResponse:
    response = web.StreamResponse(status=status)
    response.content_type = "application/json"
    response.content_length = HUGE_BODY_BYTES
    await response.prepare(request)
    await response.write(_HUGE_PREFIX)
    remaining = HUGE_BODY_BYTES - len(_HUGE_PREFIX) - len(_HUGE_SUFFIX)
    while remaining > 0:
        chunk = _HUGE_CHUNK if remaining >= len(_HUGE_CHUNK) else _HUGE_CHUNK[:remaining]
        await response.write(chunk)
        remaining -= len(chunk)
    await response.write(_HUGE_SUFFIX)
    await response.write_eof()
    return response


async def _apply_fault(request: web.Request, fault: Fault, step: str | None) -> web.StreamResponse:
    # The status comes from the fault itself: what /admin/fault echoes is what is served.
    status = fault.status
    if status is None:
        raise AssertionError(f"fault kind {fault.kind} has no direct answer")
    match fault.kind:
        case "outage":
            return _error(status, "site unavailable")
        case "fail_step":
            return _error(status, f"injected failure on step {step}")
        case "html":
            return web.Response(status=status, text=_HTML_PAGE, content_type="text/html")
        case "truncate":
            return await _truncated(request, status)
        case "huge":
            return await _huge(request, status)
    raise AssertionError(f"fault kind {fault.kind} has no direct answer")


def _authorized(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


async def _serve_api(request: web.Request, handler: _Handler) -> web.StreamResponse | None:
    """Answer one `/api/` request through faults and auth; None when a hang swallowed it."""
    settings, state = request.app[_SETTINGS], request.app[SITE_STATE]
    step = request.app[_ROUTE_STEPS].get(request.match_info.route)
    fault = state.fault_for(step, request.headers.get("X-Failsight-Vantage"))
    if fault is not None and fault.kind == "hang":
        await _hang(request)
        return None
    if fault is not None and fault.latency_ms is not None:
        await _sleep_unless_shutdown(request.app, fault.latency_ms / 1000)
    elif fault is not None:
        return await _apply_fault(request, fault, step)
    if settings.token is not None and not _authorized(request, settings.token):
        return _error(
            401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return await handler(request)


@web.middleware
async def _api_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    record = RequestRecord(
        method=request.method,
        path=request.path,
        headers={name: request.headers.get(name) for name in RECORDED_HEADERS},
        authorization_present="Authorization" in request.headers,
    )
    request.app[SITE_STATE].record(record)
    try:
        response = await _serve_api(request, handler)
    except web.HTTPException as exc:
        # Unknown paths and methods under /api/ still answer JSON, like the real platform.
        response = _error(exc.status, exc.reason)
    if response is None:
        # The client or the server already dropped the connection: this answer is never sent,
        # and the record keeps no status.
        return web.Response(status=503)
    record.status = response.status
    return response


async def _add_site_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Site"] = request.app[_SETTINGS].site


async def _signal_shutdown(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers, which lets hanging ones end promptly.
    app[_SHUTDOWN].set()


def build_site_app(
    site: str, *, allocation_delay: float = 0.3, token: str | None = None
) -> web.Application:
    """One simulated site: business API under /api/, fault control under /admin/, /healthz."""
    if allocation_delay < 0:
        raise ValueError("allocation_delay must not be negative")
    app = web.Application(middlewares=[_api_middleware])
    app[_SETTINGS] = _SiteSettings(site=site, allocation_delay=allocation_delay, token=token)
    app[SITE_STATE] = SiteState(site=site)
    app[_SHUTDOWN] = asyncio.Event()

    api: list[tuple[str, str, _Handler, Step]] = [
        ("POST", "/api/v1/orders", _submit_order, "order_submit"),
        ("GET", "/api/v1/orders/{order_id}", _get_order, "order_get"),
        ("POST", "/api/v1/orders/{order_id}/allocation", _allocate, "allocation"),
        ("GET", "/api/v1/allocations/{allocation_id}", _get_allocation, "allocation"),
        ("POST", "/api/v1/orders/{order_id}/pick", _pick, "pick"),
        ("POST", "/api/v1/orders/{order_id}/shipment", _ship, "shipment"),
        ("POST", "/api/v1/orders/{order_id}/invoice", _invoice, "invoice"),
        ("POST", "/api/v1/orders/{order_id}/cancel", _cancel, "cancel"),
    ]
    route_steps: dict[web.AbstractRoute, str] = {}
    for method, path, handler, step in api:
        route_steps[app.router.add_route(method, path, handler)] = step
    app[_ROUTE_STEPS] = route_steps

    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/admin/state", _admin_state)
    app.router.add_get("/admin/requests", _admin_requests)
    app.router.add_delete("/admin/requests", _admin_clear_requests)
    app.router.add_post("/admin/fault", _admin_fault)
    app.router.add_post("/admin/recover", _admin_recover)
    app.on_response_prepare.append(_add_site_header)
    app.on_shutdown.append(_signal_shutdown)
    return app


class Platform:
    """Several simulated sites, each served on its own loopback port."""

    def __init__(
        self,
        sites: Sequence[str],
        *,
        host: str = "127.0.0.1",
        ports: Sequence[int] | None = None,
        allocation_delay: float = 0.3,
        token: str | None = None,
    ) -> None:
        if not sites:
            raise ValueError("a Platform needs at least one site")
        if len(set(sites)) != len(sites):
            raise ValueError(f"site names must be unique, got {list(sites)}")
        if ports is not None and len(ports) != len(sites):
            raise ValueError(f"got {len(ports)} ports for {len(sites)} sites")
        self._host = host
        self._ports = list(ports) if ports is not None else [0] * len(sites)
        self._apps = {
            site: build_site_app(site, allocation_delay=allocation_delay, token=token)
            for site in sites
        }
        self._runners: list[web.AppRunner] = []
        self._started = False
        self.urls: dict[str, str] = {}

    async def start(self) -> None:
        """Serve every site; port 0 picks a free port, readable afterwards in `urls`."""
        if self._started:
            raise RuntimeError("a Platform starts once; build a new one to start again")
        self._started = True
        url_host = f"[{self._host}]" if ":" in self._host else self._host
        try:
            for (site, app), port in zip(self._apps.items(), self._ports, strict=True):
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
                await runner.setup()
                self._runners.append(runner)
                await web.TCPSite(runner, self._host, port).start()
                self.urls[site] = f"http://{url_host}:{runner.addresses[0][1]}"
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every site; open requests, hanging ones included, end within seconds."""
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()

    def state(self, site: str) -> SiteState:
        try:
            return self._apps[site][SITE_STATE]
        except KeyError:
            raise KeyError(f"unknown site {site!r}") from None

    def set_fault(self, site: str, fault: Fault) -> None:
        """Add a fault to a site; earlier faults keep precedence for requests they match."""
        self.state(site).faults.append(fault)

    def recover(self, site: str) -> None:
        """Clear every fault on a site."""
        self.state(site).faults.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
