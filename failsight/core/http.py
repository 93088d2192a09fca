"""HTTP plumbing shared by probes: the agent's client session, phase timings, bounded reads, and
turning transport errors into the contract's failure reasons."""

from __future__ import annotations

import contextvars
import functools
import socket
import ssl
import time
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from yarl import URL

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


# The phases dict of the request this task is sending (None: nobody is timing it). The
# connector, the resolver, the TLS object and the request class below write into it: they run
# in the sending task or, for the DNS lookup and the TLS handshake, in tasks and transport
# callbacks started from it, which run in a copy of its context and so see the same dict.
_PHASES: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "failsight_request_phases", default=None
)


async def timed_request(
    session: aiohttp.ClientSession,
    method: str,
    url: URL,
    phases: dict[str, float],
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    """`session.request(method, url, **kwargs)`, its phases written into `phases`.

    dns, connect (TCP) and tls (over an `ssl_context`) are only present for a new connection
    of a `new_session()` session; `send` is from the start of the request to its headers
    handed to the transport, less dns, connect and tls; `ttfb` from there to the response
    headers (present once the request got that far); the caller adds `body`.

    The timestamps are taken where aiohttp does the work (the session's connector, resolver
    and request class) rather than by aiohttp's TraceConfig signals: a TraceConfig makes
    every request build a trace context and await a coroutine per signal, phases wanted or
    not, which cost 10-14% of the agent's CPU per step (docs/performance.md).
    """
    token = _PHASES.set(phases)
    began = time.perf_counter()
    try:
        response = await session.request(method, url, **kwargs)
    finally:
        _PHASES.reset(token)
        sent = phases.pop("_sent", None)
        if sent is not None:
            phases["send"] = max(
                0.0,
                sent
                - began
                - phases.get("dns", 0.0)
                - phases.get("connect", 0.0)
                - phases.get("tls", 0.0),
            )
    if sent is not None:
        phases["ttfb"] = time.perf_counter() - sent
    return response


class _TimedResolver(AbstractResolver):
    """The connector's resolver, timing each lookup it makes into the request's `dns` phase
    (a DNS cache hit, or a literal IP address, makes none: no `dns` phase)."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        began = time.perf_counter()
        found = await self._inner.resolve(host, port, family)
        phases = _PHASES.get()
        if phases is not None:
            phases["dns"] = phases.get("dns", 0.0) + time.perf_counter() - began
        return found

    async def close(self) -> None:
        await self._inner.close()


class _TimedConnector(aiohttp.TCPConnector):
    """Times each new connection into the request's `connect` phase; aiohttp creates it
    with the DNS lookup and, over TLS, the handshake inside, which are reported apart."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Wrapped rather than passed as `resolver=`: the connector still owns (and closes) it.
        self._resolver = _TimedResolver(self._resolver)

    async def _create_connection(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Any],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature
    ) -> ResponseHandler:
        phases = _PHASES.get()
        if phases is None:
            return await super()._create_connection(req, traces, timeout)
        began = time.perf_counter()
        protocol = await super()._create_connection(req, traces, timeout)
        connect = time.perf_counter() - began - phases.get("dns", 0.0)
        if "_tls" in phases:
            phases["tls"] = phases.pop("_tls")
            connect -= phases["tls"]
        phases["connect"] = max(0.0, connect)
        return protocol


class _TimedRequest(aiohttp.ClientRequest):
    """Notes when the request's headers (and, unless aiohttp writes a body in a task of its
    own, its body) are handed to the transport: the end of `send`, the start of `ttfb`."""

    async def send(self, conn: Connection) -> aiohttp.ClientResponse:
        response = await super().send(conn)
        phases = _PHASES.get()
        if phases is not None:
            phases["_sent"] = time.perf_counter()
        return response


def public_phases(phases: dict[str, float]) -> dict[str, float]:
    """Drop the internal timestamps (keys starting with `_`) from a phases dict."""
    return {k: v for k, v in phases.items() if not k.startswith("_")}


def new_session(*, limit: int = 0, keepalive: bool = True) -> aiohttp.ClientSession:
    """The one ClientSession an agent shares between all HTTP checks.

    TLS is verified against the system store by default; per-site trust comes as an SSLContext
    on each request. No cookie jar: synthetic runs must not leak state into each other.
    """
    connector = _TimedConnector(
        limit=limit,
        ttl_dns_cache=10,
        force_close=not keepalive,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
        request_class=_TimedRequest,
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


class _TimedSSLObject(ssl.SSLObject):
    """An SSLObject that times its handshake into the opening request's phases (`_tls`).
    aiohttp times TCP connect and TLS handshake as one "connection create"; `_TimedConnector`
    then reports them apart. The first `do_handshake` call is made as soon as TCP is connected
    (it sends the ClientHello); the one that returns without SSLWantRead ends the handshake."""

    handshake_began: float | None = None

    def do_handshake(self) -> None:
        if self.handshake_began is None:
            self.handshake_began = time.perf_counter()
        super().do_handshake()
        phases = _PHASES.get()
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
