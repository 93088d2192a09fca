"""HTTP plumbing shared by probes: the agent's client session, phase timings, bounded reads, and
turning transport errors into the contract's failure reasons."""

from __future__ import annotations

import contextvars
import functools
import socket
import ssl
import time
from types import SimpleNamespace
from typing import Any

import aiohttp

from failsight.core.results import CheckFailure, Reason
from failsight.core.version import __version__

USER_AGENT = f"failsight/{__version__} (synthetic monitoring)"


def classify(exc: BaseException) -> tuple[Reason, str]:
    """The failure reason and a short message for a transport-level exception.

    Order matters: aiohttp's exception classes inherit from each other and from OSError and
    TimeoutError, so the most specific checks come first.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return Reason.TLS, f"certificate verification failed: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return Reason.TLS, f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return Reason.DNS, f"cannot resolve {exc.host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, socket.gaierror):
            return Reason.DNS, f"cannot resolve {exc.host}"
        return Reason.CONNECT, f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror}"
    if isinstance(exc, TimeoutError):
        return Reason.TIMEOUT, "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return Reason.CONNECT, "server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return Reason.CONNECT, "response body truncated or malformed on the wire"
    if isinstance(exc, aiohttp.ClientResponseError):
        return Reason.HTTP_STATUS, f"bad HTTP response: {exc.message}"
    if isinstance(exc, aiohttp.InvalidURL):
        return Reason.INTERNAL, f"invalid URL {exc.url}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return Reason.CONNECT, f"connection failed: {type(exc).__name__}: {exc}"
    return Reason.INTERNAL, f"{type(exc).__name__}: {exc}"


def _phases_of(ctx: SimpleNamespace) -> dict[str, float] | None:
    phases = ctx.trace_request_ctx
    return phases if isinstance(phases, dict) else None


async def _mark(name: str, ctx: SimpleNamespace) -> None:
    phases = _phases_of(ctx)
    if phases is not None:
        phases["_" + name] = time.perf_counter()


async def _span(start: str, phase: str, ctx: SimpleNamespace) -> None:
    phases = _phases_of(ctx)
    if phases is not None and "_" + start in phases:
        phases[phase] = phases.get(phase, 0.0) + time.perf_counter() - phases["_" + start]


def _trace_config() -> aiohttp.TraceConfig:
    """Phase timings, written into the dict passed as `trace_request_ctx`.

    dns, connect (TCP) and tls (over an `ssl_context`) are only present for a new
    connection; `ttfb` is from the end of sending the request to the
    response headers; the caller adds `body`.
    """
    tc = aiohttp.TraceConfig()

    async def on_request_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _mark("request", ctx)
        _HANDSHAKE_PHASES.set(_phases_of(ctx))

    async def on_dns_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _mark("dns", ctx)

    async def on_dns_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _span("dns", "dns", ctx)

    async def on_conn_start(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _mark("connect", ctx)

    async def on_conn_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _span("connect", "connect", ctx)
        phases = _phases_of(ctx)
        if phases is not None:
            # Connection creation includes DNS resolution and, over an `ssl_context`, the
            # TLS handshake in aiohttp: report them apart.
            phases["connect"] = max(0.0, phases["connect"] - phases.get("dns", 0.0))
            if "_tls" in phases:
                phases["tls"] = phases.pop("_tls")
                phases["connect"] = max(0.0, phases["connect"] - phases["tls"])

    async def on_headers_sent(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _mark("sent", ctx)
        await _span("request", "send", ctx)
        phases = _phases_of(ctx)
        if phases is not None:
            phases["send"] = max(
                0.0, phases["send"] - phases.get("dns", 0.0) - phases.get("connect", 0.0)
            )

    async def on_request_end(_s: Any, ctx: SimpleNamespace, _p: Any) -> None:
        await _span("sent", "ttfb", ctx)

    tc.on_request_start.append(on_request_start)
    tc.on_dns_resolvehost_start.append(on_dns_start)
    tc.on_dns_resolvehost_end.append(on_dns_end)
    tc.on_connection_create_start.append(on_conn_start)
    tc.on_connection_create_end.append(on_conn_end)
    tc.on_request_headers_sent.append(on_headers_sent)
    tc.on_request_end.append(on_request_end)
    return tc


def public_phases(phases: dict[str, float]) -> dict[str, float]:
    """Drop the internal timestamps (keys starting with `_`) from a phases dict."""
    return {k: v for k, v in phases.items() if not k.startswith("_")}


def new_session(*, limit: int = 0, keepalive: bool = True) -> aiohttp.ClientSession:
    """The one ClientSession an agent shares between all HTTP checks.

    TLS is verified against the system store by default; per-site trust comes as an SSLContext
    on each request. No cookie jar: synthetic runs must not leak state into each other.
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        ttl_dns_cache=10,
        force_close=not keepalive,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        trace_configs=[_trace_config()],
        raise_for_status=False,
        auto_decompress=True,
    )


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read a body of at most `limit` bytes; a larger one is a failure, read no further."""
    declared = response.content_length
    if declared is not None and declared > limit:
        response.close()
        raise CheckFailure(
            Reason.ASSERTION, f"response body of {declared} bytes exceeds the limit of {limit}"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            response.close()
            raise CheckFailure(
                Reason.ASSERTION, f"response body exceeds the limit of {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


# The phases dict of the request being sent, for the TLS handshake of the connection it opens:
# the transport's callbacks (where `do_handshake` runs) run in a copy of the context of the
# task that opened it, so they see what `on_request_start` set there.
_HANDSHAKE_PHASES: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "failsight_handshake_phases", default=None
)


class _TimedSSLObject(ssl.SSLObject):
    """An SSLObject that times its handshake into the opening request's phases (`_tls`).
    aiohttp times TCP connect and TLS handshake as one "connection create"; `on_conn_end`
    then reports them apart. The first `do_handshake` call is made as soon as TCP is connected
    (it sends the ClientHello); the one that returns without SSLWantRead ends the handshake."""

    handshake_began: float | None = None

    def do_handshake(self) -> None:
        if self.handshake_began is None:
            self.handshake_began = time.perf_counter()
        super().do_handshake()
        phases = _HANDSHAKE_PHASES.get()
        if phases is not None:
            phases["_tls"] = time.perf_counter() - self.handshake_began


def ssl_context(ca_file: str | None, verify: bool = True) -> ssl.SSLContext:
    """What to pass as `ssl=` (aiohttp, asyncio): verification on by default, extra trust from
    ca_file. Its connections time their TLS handshake into the opening request's phases (a
    journey step's `tls` phase); for any other connection that costs one context lookup."""
    if verify and ca_file is None:
        return _system_context()
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.sslobject_class = _TimedSSLObject
    return ctx


@functools.cache
def _system_context() -> ssl.SSLContext:
    # One context for every connection that trusts the system store alone, as aiohttp's own
    # default is one: each context holds its own copy of the CA store.
    ctx = ssl.create_default_context()
    ctx.sslobject_class = _TimedSSLObject
    return ctx
