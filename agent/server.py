"""The API's listening socket, and every connection on it kept on a clock.

aiohttp's TCPSite keeps a connection for as long as its client likes: a socket that never sends
a request, or sends half a header, holds a file descriptor forever. On the pod network that was
measured: 4,000 idle or half-sent-header connections were all still open after 90 s, and with
the fd limit at 1,024, 1,100 idle sockets locked out /healthz, so the liveness probe failed and
the agent was restarted.

`GuardedSite` listens with `loop.create_server` itself. Each accepted connection is a
`_Connection`: a thin protocol around aiohttp's own RequestHandler (made by the runner's
low-level `web.Server`) that records when it connected, when bytes arrived, and, through a
wrapper around the server's request handler, when a request started and when its response
had been written. A reaper closes what overstays its phase's timeout (below), and a cap on
concurrent connections closes the oldest idle one to make room for a new one, or refuses the
new one when every connection has a request in flight. The cap is kept below the process's fd
limit, with room left for the probes' own sockets.

A bind failure raises `ListenError`, whose text is one line, e.g.
`cannot listen on 127.0.0.1:9747: address already in use`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import os
import resource
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from failsight.agent.startup import StartupError

log = logging.getLogger(__name__)
# aiohttp's RequestHandler logs through this logger (see `_ClientErrors`).
HTTP_LOG = logging.getLogger(f"{__name__}.http")

# -- timeouts: module constants, read when a site (or the runner's options) is made ---------------

# From connect, or from the first byte after the previous response, to a complete request head
# (request line and headers). Every real client sends its head in one go, in well under a
# second even over a slow link; what takes longer is a silent socket, a half-sent header or a
# slowloris dribbling one header byte at a time, each of which pins a file descriptor.
HEADER_TIMEOUT = 10.0
# A keep-alive connection with no request for this long is closed. Peers poll every few seconds
# (peers[].interval, 5 s by default) and reuse their connection; a connection idle for longer
# than this is not saving anyone a handshake. Also given to aiohttp as keepalive_timeout.
IDLE_TIMEOUT = 15.0
# From a complete request head to the last byte of its response handed to the kernel. Every
# handler answers from memory in milliseconds (the control endpoints read at most 16 KiB of
# body, themselves within agent.api.CONTROL_BODY_TIMEOUT); a request still in flight after this
# is a body trickling in or a client that does not read its response.
REQUEST_TIMEOUT = 30.0
# How often the reaper looks: a connection overstays its timeout by at most this much.
REAP_INTERVAL = 0.5

# -- file descriptors -------------------------------------------------------------------------

# RLIMIT_NOFILE's soft limit is raised to its hard limit at start, but not past this: an agent
# never needs more, and some tools still assume small fd numbers.
FD_LIMIT_CAP = 65_536
# Descriptors kept for everything but API connections: the probes' sockets (journeys, DNS,
# PostgreSQL, peers, OTLP exporters), log files, the event loop's own.
FD_RESERVE = 128
# Never fewer API connections than this, whatever the fd limit: /healthz, a scrape, the peers.
MIN_CONNECTIONS = 8

# -- what one request may cost (aiohttp's parser limits) --------------------------------------

# The request line: the longest URL the API serves is a site's health path with a refresh
# query; 4 KiB is generous and half aiohttp's default.
MAX_LINE_SIZE = 4096
# One header field: aiohttp's default, so a browser's cookies for a shared ingress domain fit.
MAX_FIELD_SIZE = 8190
# Browsers send about 15 headers, proxies add a few: 64 is plenty (aiohttp allows 128).
MAX_HEADERS = 64
# After answering a request whose body it did not read, aiohttp reads and discards the rest of
# that body for this long before closing (its default is 10 s of a client's choosing).
LINGERING_TIME = 2.0
# On shutdown, requests in flight get this long to finish before they are cancelled.
SHUTDOWN_TIMEOUT = 3.0
# Listen backlog; also how many connections one readiness event may accept at once, before
# the cap sees them: the fd reserve covers it.
BACKLOG = 128


class ListenError(StartupError):
    """The API cannot listen on its address. Its text is one line, for the CLI to print."""


def listen_error(host: str, port: int, exc: OSError) -> ListenError:
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        reason = exc.strerror or str(exc)  # a name that does not resolve: the resolver's words
    else:
        reason = os.strerror(exc.errno)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ListenError(f"cannot listen on {where}: {' '.join(reason.lower().split())}")


def runner_options() -> dict[str, Any]:
    """Keyword arguments for web.AppRunner: the parser's limits, keep-alive, logging."""
    return {
        "keepalive_timeout": IDLE_TIMEOUT,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGERING_TIME,
        "shutdown_timeout": SHUTDOWN_TIMEOUT,
        "logger": HTTP_LOG,
    }


class _ClientErrors(logging.Filter):
    """aiohttp logs a malformed request (a bad request line, an oversized or invalid header)
    at ERROR with its traceback: any client on the network could fill the log with them. They
    are the client's fault, not the agent's: one line at debug level, without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True  # an error in the agent's own handlers keeps its traceback
        detail = (exc.message or type(exc).__name__).splitlines() or [type(exc).__name__]
        remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
        record.msg, record.args = "bad request from %s: %s", (remote, detail[0][:200])
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return HTTP_LOG.isEnabledFor(logging.DEBUG)


HTTP_LOG.addFilter(_ClientErrors())


# -- the fd limit -----------------------------------------------------------------------------


def raise_fd_limit(cap: int = FD_LIMIT_CAP) -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (at most `cap`); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft == resource.RLIM_INFINITY:
        return cap
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        else:
            soft = target
    return soft


def connection_cap(configured: int, fd_limit: int) -> int:
    """At most half the descriptors left after the reserve go to API connections."""
    return min(configured, max(MIN_CONNECTIONS, (fd_limit - FD_RESERVE) // 2))


# -- connections ------------------------------------------------------------------------------


class Phase(enum.Enum):
    HEAD = "header"  # waiting for a complete request head
    BUSY = "request"  # a request in flight: from its head to its response written
    IDLE = "idle"  # keep-alive, between a response and the next request's first byte


class _Connection(asyncio.Protocol):
    """One accepted connection: aiohttp's RequestHandler inside, the site's clock outside."""

    def __init__(self, site: GuardedSite) -> None:
        self.site = site
        self.handler: RequestHandler | None = None
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.HEAD
        self.since = 0.0  # when the current phase's timeout started counting
        self.idle_since = 0.0  # when it last had no request in flight: eviction order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if not self.site._admit(self):
            reset(self.transport)  # every connection has a request in flight: refused
            return
        self.handler = self.site._handler()
        self.site._by_handler[self.handler] = self
        self.handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.site._forget(self)
        if self.handler is not None:
            self.site._by_handler.pop(self.handler, None)
            self.handler.connection_lost(exc)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.IDLE and data:
            # The next request's head has this long from its first byte.
            self.site._set_phase(self, Phase.HEAD)
        if self.handler is not None:
            self.handler.data_received(data)

    def eof_received(self) -> None:
        if self.handler is not None:
            self.handler.eof_received()  # None: the transport closes

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()


_Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_LINGER_NONE = struct.pack("ii", 1, 0)


def _leaving(conn: _Connection) -> bool:
    """Closed by aiohttp with nothing left to send: gone on the loop's next pass by itself (and
    a reset now could cut short a response the kernel has yet to deliver)."""
    transport = conn.transport
    return transport is None or (transport.is_closing() and not transport.get_write_buffer_size())


def reset(transport: asyncio.Transport) -> None:
    """Abort the connection with a TCP reset. A plain abort closes the fd, but the kernel then
    keeps the socket, and whatever the client did not read (megabytes, for a client that stopped
    reading), until it has delivered it or given up; the reset drops both at once, and tells
    the client."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already gone
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
    transport.abort()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are on a clock and capped in number (module docstring).

    Timeouts left as None are read from the module's constants when the site is made."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout: float | None = None,
        idle_timeout: float | None = None,
        request_timeout: float | None = None,
        reap_interval: float | None = None,
        reuse_address: bool = True,
        backlog: int | None = None,
    ) -> None:
        super().__init__(runner, backlog=BACKLOG if backlog is None else backlog)
        self._host = host
        self._port = port
        self._reuse_address = reuse_address
        self.configured_connections = max_connections
        self.max_connections = max_connections
        self.timeouts = {
            Phase.HEAD: HEADER_TIMEOUT if header_timeout is None else header_timeout,
            Phase.IDLE: IDLE_TIMEOUT if idle_timeout is None else idle_timeout,
            Phase.BUSY: REQUEST_TIMEOUT if request_timeout is None else request_timeout,
        }
        self._reap_interval = REAP_INTERVAL if reap_interval is None else reap_interval
        self._web: web.Server | None = None
        self._listener: asyncio.Server | None = None  # also BaseSite's _server, which stops it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conns: dict[_Connection, None] = {}  # every admitted, open connection
        self._idle: dict[_Connection, None] = {}  # those with no request in flight, oldest first
        self._by_handler: dict[RequestHandler, _Connection] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False
        # Connections the site closed, by why: "header timeout", "idle timeout", "request
        # timeout", "evicted" (to make room at the cap), "refused" (no room), "shutdown".
        self.closed: collections.Counter[str] = collections.Counter()

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the one asked for until started: 0 means any free one)."""
        if self._listener is not None and self._listener.sockets:
            return int(self._listener.sockets[0].getsockname()[1])
        return self._port

    @property
    def connections(self) -> int:
        return len(self._conns)

    def phases(self) -> collections.Counter[Phase]:
        """How many open connections are in each phase."""
        return collections.Counter(conn.phase for conn in self._conns)

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._web = server
        self._loop = asyncio.get_running_loop()
        fd_limit = raise_fd_limit()
        self.max_connections = connection_cap(self.configured_connections, fd_limit)
        if self.max_connections < self.configured_connections:
            log.warning(
                "agent.max_connections lowered from %d to %d: the process may open %d files, "
                "and the probes need theirs",
                self.configured_connections,
                self.max_connections,
                fd_limit,
            )
        # Every RequestHandler made from now on calls the wrapped handler.
        server.request_handler = self._on_request(server.request_handler)
        try:
            self._listener = await self._loop.create_server(
                lambda: _Connection(self),
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_address=self._reuse_address,
            )
        except OSError as exc:
            raise listen_error(self._host, self._port, exc) from None
        self._server = self._listener
        self._reaper = asyncio.create_task(self._reap_forever(), name="api connection reaper")

    async def stop(self) -> None:
        """Stop listening and reaping (runner.cleanup calls this, then closes the connections
        through aiohttp's own shutdown; `abort_remaining` is for what outlives that)."""
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.wait([self._reaper])
            self._reaper = None
        await super().stop()

    async def abort_remaining(self) -> None:
        """Abort the connections aiohttp's shutdown left open: a response that its client never
        reads keeps a closed transport flushing forever."""
        for conn in list(self._conns):
            if not _leaving(conn):
                self._drop(conn, "shutdown", abort=True)
        await asyncio.sleep(0)  # their connection_lost runs on the next pass of the loop

    # -- bookkeeping (called by _Connection and the request wrapper) ---------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _handler(self) -> RequestHandler:
        assert self._web is not None
        return self._web()

    def _admit(self, conn: _Connection) -> bool:
        if self._closing:
            self.closed["refused"] += 1
            return False
        while len(self._conns) >= self.max_connections and self._idle:
            # Room for the newcomer: the connection idle the longest goes (a reset frees its fd
            # on the loop's next pass, whatever its client does).
            oldest = next(iter(self._idle))
            if _leaving(oldest):
                self._forget(oldest)  # closed by aiohttp already: its fd goes just as soon
            else:
                self._drop(oldest, "evicted", abort=True)
        if len(self._conns) >= self.max_connections:
            self.closed["refused"] += 1  # every one of them has a request in flight
            return False
        now = self._now()
        conn.phase, conn.since, conn.idle_since = Phase.HEAD, now, now
        self._conns[conn] = None
        self._idle[conn] = None
        return True

    def _forget(self, conn: _Connection) -> None:
        self._conns.pop(conn, None)
        self._idle.pop(conn, None)

    def _set_phase(self, conn: _Connection, phase: Phase) -> None:
        if conn not in self._conns:
            return  # already closed by the site
        now = self._now()
        conn.phase, conn.since = phase, now
        if phase is Phase.BUSY:
            self._idle.pop(conn, None)
        elif phase is Phase.IDLE:
            self._idle.pop(conn, None)
            self._idle[conn] = None  # the youngest idle one now
            conn.idle_since = now
        # HEAD after IDLE keeps its place among the idle: it has no request in flight either.

    def _drop(self, conn: _Connection, why: str, *, abort: bool = False) -> None:
        self._forget(conn)
        self.closed[why] += 1
        transport = conn.transport
        if transport is None:
            return
        if abort or conn.phase is Phase.BUSY or transport.get_write_buffer_size():
            reset(transport)  # nothing it sends or reads matters any more
        else:
            transport.close()  # nothing left to write: an orderly FIN, the fd goes just as soon

    def reap(self) -> None:
        """Close every connection that has overstayed its phase's timeout."""
        now = self._now()
        for conn in list(self._conns):
            if now - conn.since > self.timeouts[conn.phase]:
                self._drop(conn, f"{conn.phase.value} timeout")

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval)
            self.reap()

    def _on_request(self, handler: _Handler) -> _Handler:
        """The server's request handler, marking the request's start and end on its connection.

        The end is when the response has been written, so the response is written here rather
        than by aiohttp after the handler returns (aiohttp then finds it written already): a
        client that does not read it keeps the request in flight, on the request clock."""

        async def on_request(request: web.BaseRequest) -> web.StreamResponse:
            conn = self._by_handler.get(request.protocol)
            if conn is None:
                return await handler(request)
            self._set_phase(conn, Phase.BUSY)
            try:
                try:
                    response = await handler(request)
                except web.HTTPException as exc:
                    await _write(request, exc)
                    raise
                except ConnectionError:
                    if conn.transport is not None and not conn.transport.is_closing():
                        raise
                    # The connection was lost, or cut by the reaper, while the handler read the
                    # body: nobody is left to answer, and no traceback is due.
                    return web.Response(status=400)
                await _write(request, response)
                return response
            finally:
                self._set_phase(conn, Phase.IDLE)

        return on_request


async def _write(request: web.BaseRequest, response: web.StreamResponse) -> None:
    if not isinstance(response, web.StreamResponse):
        return  # a handler bug: aiohttp reports it
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left: aiohttp's own write_eof after us sees it and drops the connection
