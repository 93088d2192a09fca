"""The API against hostile clients on the pod network, over raw sockets against a real agent:
silent and half-sent connections, idle keep-alives, requests that never finish, an fd limit
flooded with idle sockets, the connection cap, bad Authorization headers and malformed requests.

The connection timeouts are agent/server.py's module constants, shortened here so that each
test waits a second or so; nothing asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from failsight.agent import api, server
from failsight.agent.demo.simulator import Platform
from failsight.agent.runtime import Agent
from failsight.agent.server import GuardedSite, ListenError, Phase
from tests.fixtures.platform import demo_config_data, running_agent, wait_for, write_config

FAILSIGHT = Path(sys.executable).with_name("failsight")
VIEW_TOKEN = "v1ew-t0ken"
ADMIN_TOKEN = "4dm1n-t0ken"
HOLD = "/v1/sites/aws-use1/hold"
LONG = 60.0  # a timeout that never fires within a test
# A bound on waiting for something the server must do by itself: the test fails, never hangs.
BOUND = 20.0
STATUS_JS = Path(__file__).resolve().parents[2] / "agent" / "static" / "status.js"


# --------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def timeouts(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Set agent/server.py's connection timeouts (seconds) for the agent started next."""

    def set_timeouts(*, head: float = LONG, idle: float = LONG, request: float = LONG) -> None:
        monkeypatch.setattr(server, "HEADER_TIMEOUT", head)
        monkeypatch.setattr(server, "IDLE_TIMEOUT", idle)
        monkeypatch.setattr(server, "REQUEST_TIMEOUT", request)
        monkeypatch.setattr(server, "REAP_INTERVAL", 0.05)

    return set_timeouts


@pytest.fixture
def sites(monkeypatch: pytest.MonkeyPatch) -> list[GuardedSite]:
    """Every GuardedSite started from now on, to look at its connections."""
    started: list[GuardedSite] = []
    start = GuardedSite.start

    async def recording_start(self: GuardedSite) -> None:
        started.append(self)
        await start(self)

    monkeypatch.setattr(GuardedSite, "start", recording_start)
    return started


@contextlib.asynccontextmanager
async def agent_on(platform: Platform, tmp_path: Path, **agent_keys: Any) -> AsyncIterator[Agent]:
    data = demo_config_data(platform)
    data["agent"].pop("admin_token", None)
    data["agent"].update(agent_keys)
    async with running_agent(write_config(tmp_path / "failsight.yaml", data)) as agent:
        yield agent


def request(
    method: str, path: str, *headers: bytes, body: bytes = b"", close: bool = True
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: agent", *headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def exchange(port: int, data: bytes) -> tuple[int, bytes]:
    """Send `data` on a fresh connection and read until the server closes: (status, body)."""
    reader, writer = await connect(port)
    try:
        writer.write(data)
        async with asyncio.timeout(BOUND):
            raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    assert match, raw[:300]
    return int(match[1]), body


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One response off a keep-alive connection: (head, body)."""
    async with asyncio.timeout(BOUND):
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head, re.IGNORECASE)
        assert length, head
        return head, await reader.readexactly(int(length[1]))


async def closed_unanswered(reader: asyncio.StreamReader) -> bytes:
    """Whatever arrives until the server closes the connection (EOF or reset)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(BOUND):
            while chunk := await reader.read(65536):
                received += chunk
    return received


def closed_by_server(reader: asyncio.StreamReader) -> bool:
    return reader.at_eof() or reader.exception() is not None


async def trickle(writer: asyncio.StreamWriter, piece: bytes, every: float = 0.05) -> None:
    """Send `piece` again and again, slowly, until the connection is gone."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)


def hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed or reset this socket, without reading from it."""
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poll.poll(0))


async def wait_hung_up(sock: socket.socket) -> None:
    async with asyncio.timeout(BOUND):
        while not hung_up(sock):
            await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------------
# (a) request heads on a clock


async def test_silent_and_half_sent_heads_are_closed_after_the_header_timeout(
    platform: Platform, tmp_path: Path, timeouts: Callable[..., None], sites: list[GuardedSite]
) -> None:
    timeouts(head=0.5)  # the idle and request timeouts never fire here
    async with agent_on(platform, tmp_path) as agent:
        silent = await connect(agent.port)
        half = await connect(agent.port)
        half[1].write(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n")  # and never the blank line
        slowloris = await connect(agent.port)
        slowloris[1].write(b"GET /healthz HTTP/1.1\r\n")
        dribbling = asyncio.create_task(trickle(slowloris[1], b"X-a: b\r\n"))
        # Served, then half of the next request head: its clock starts at that first byte.
        again = await connect(agent.port)
        again[1].write(request("GET", "/healthz", close=False))
        head, body = await read_response(again[0])
        assert head.startswith(b"HTTP/1.1 200 ") and json.loads(body) == {"status": "ok"}
        again[1].write(b"GET /v1/verdict HTTP/1.1\r\nHost: ag")

        # A head sent whole is answered, however many of those are waiting.
        assert (await exchange(agent.port, request("GET", "/healthz")))[0] == 200

        # Each of them is closed without a word: no response, not even a 400.
        for reader, _ in (silent, half, slowloris, again):
            assert await closed_unanswered(reader) == b""
        await asyncio.wait_for(dribbling, BOUND)
        for _, writer in (silent, half, slowloris, again):
            writer.close()
        (site,) = sites
        assert site.closed["header timeout"] >= 4, site.closed
        assert (await exchange(agent.port, request("GET", "/healthz")))[0] == 200


# --------------------------------------------------------------------------------------------
# (b) keep-alive on a clock


async def test_an_idle_keepalive_connection_is_closed_after_the_idle_timeout(
    platform: Platform, tmp_path: Path, timeouts: Callable[..., None], sites: list[GuardedSite]
) -> None:
    # aiohttp's own keep-alive timer gets the idle timeout too: 5 s here, a backstop that never
    # fires in this test, as heads and requests have all the time in the world. The site's
    # reaper has 0.5 s.
    timeouts(idle=5.0)
    assert server.runner_options()["keepalive_timeout"] == 5.0
    async with agent_on(platform, tmp_path) as agent:
        (site,) = sites
        site.timeouts[Phase.IDLE] = 0.5
        reader, writer = await connect(agent.port)
        # Kept alive: two requests on the one connection, both answered.
        for path in ("/healthz", "/v1/verdict"):
            writer.write(request("GET", path, close=False))
            head, _ = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
        # Then nothing: the server closes it, with nothing more to say.
        assert await closed_unanswered(reader) == b""
        writer.close()
        assert site.closed == {"idle timeout": 1} and site.connections == 0, site.closed


# --------------------------------------------------------------------------------------------
# (c) requests on a clock


async def test_a_client_that_never_reads_its_responses_is_cut_after_the_request_timeout(
    platform: Platform, tmp_path: Path, timeouts: Callable[..., None], sites: list[GuardedSite]
) -> None:
    timeouts(request=1.0)
    async with agent_on(platform, tmp_path) as agent:
        size = len(STATUS_JS.read_bytes())
        count = 32 * 2**20 // size  # 32 MiB of responses: far more than the sockets buffer
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", agent.port))
            pipelined = request("GET", "/status.js", close=False) * count
            async with asyncio.timeout(BOUND):
                await loop.sock_sendall(sock, pipelined)
            # Never read: the server's writes stall, its request stays in flight, and it is cut.
            await wait_hung_up(sock)
            received = 0
            with contextlib.suppress(ConnectionError, BlockingIOError):
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            assert received < count * size
        assert sites[0].closed["request timeout"] == 1, sites[0].closed
        assert (await exchange(agent.port, request("GET", "/healthz")))[0] == 200


async def test_a_request_body_that_trickles_in_is_cut_after_the_request_timeout(
    platform: Platform, tmp_path: Path, timeouts: Callable[..., None], sites: list[GuardedSite]
) -> None:
    timeouts(request=1.0)  # before the control body's own 10 s
    async with agent_on(platform, tmp_path, admin_token=ADMIN_TOKEN) as agent:
        reader, writer = await connect(agent.port)
        body = json.dumps({"by": "mallory", "reason": "x" * 200}).encode()
        auth = f"Authorization: Bearer {ADMIN_TOKEN}".encode()
        head = request("POST", HOLD, auth, b"Content-Type: application/json", body=body)
        writer.write(head[: -len(body)])  # the head, then the body a byte at a time
        dribbling = asyncio.create_task(trickle(writer, b" ", every=0.05))
        assert await closed_unanswered(reader) == b""
        await asyncio.wait_for(dribbling, BOUND)
        writer.close()
        assert agent.control.actions() == []
        assert sites[0].closed["request timeout"] == 1, sites[0].closed
        assert (await exchange(agent.port, request("GET", "/healthz")))[0] == 200


async def test_a_control_body_is_read_whole_and_within_its_own_time_bound(
    platform: Platform,
    tmp_path: Path,
    timeouts: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeouts()
    monkeypatch.setattr(api, "CONTROL_BODY_TIMEOUT", 0.5)
    async with agent_on(platform, tmp_path, admin_token=ADMIN_TOKEN) as agent:
        auth = f"Authorization: Bearer {ADMIN_TOKEN}".encode()
        body = json.dumps({"by": "alice", "reason": "upgrade", "for": "1h"}).encode()
        head = request("POST", HOLD, auth, b"Content-Type: application/json", body=body)
        head = head[: -len(body)]

        # In two pieces, the second a moment later: read whole, the hold applied.
        reader, writer = await connect(agent.port)
        writer.write(head + body[:10])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(body[10:])
        raw = await closed_unanswered(reader)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 200 "), raw[:300]
        assert [a.kind.value for a in agent.control.actions()] == ["hold"]

        # Never finished: 408 after the control body's bound, and the connection closed.
        reader, writer = await connect(agent.port)
        writer.write(head + body[:10])
        raw = await closed_unanswered(reader)
        writer.close()
        assert raw.startswith(b"HTTP/1.1 408 "), raw[:300]
        assert b"did not arrive within 0.5s" in raw
        assert len(agent.control.actions()) == 1


# --------------------------------------------------------------------------------------------
# (d) an fd limit flooded with idle sockets


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """This process may open `needed` files for the test's duration (soft limit raised)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.fail(f"the test needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _limit_open_files(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return preexec


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def fresh_get(port: int, path: str, attempts: int = 3) -> int:
    """GET on a fresh connection, tried a few times within a few seconds: its status."""
    for attempt in range(attempts):
        try:
            async with asyncio.timeout(3):
                return (await exchange(port, request("GET", path)))[0]
        except (OSError, TimeoutError, AssertionError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def open_idle_sockets(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing, opened a batch at a time so the agent's listen
    backlog keeps up (a burst past it leaves connections only this side believes in)."""
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def one() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        socks.append(sock)
        await loop.sock_connect(sock, ("127.0.0.1", port))

    for start in range(0, count, 32):
        await asyncio.gather(*(one() for _ in range(min(32, count - start))))
    return socks


async def test_idle_sockets_at_twice_the_fd_limit_never_lock_out_health_or_the_verdict(
    platform: Platform, tmp_path: Path
) -> None:
    fd_limit, idle = 1024, 2048
    data = demo_config_data(platform)
    # More than 1,024 descriptors allow: the agent lowers it, and says so.
    data["agent"]["max_connections"] = 4096
    path = tmp_path / "failsight.yaml"
    path.write_text(yaml.safe_dump(data))
    log_path = tmp_path / "agent.log"
    with open_files_limit(idle + 512), log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(FAILSIGHT), "run", "--config", str(path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_limit_open_files(fd_limit),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        socks: list[socket.socket] = []
        try:
            port = 0

            def listening() -> bool:
                nonlocal port
                assert proc.poll() is None, log_path.read_text()
                found = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log_path.read_text())
                port = int(found[1]) if found else 0
                return bool(port)

            await wait_for(listening, timeout=BOUND)
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            assert re.search(rf"Max open files\s+{fd_limit}\s+{fd_limit}\s", limits), limits
            cap = (fd_limit - server.FD_RESERVE) // 2
            assert f"agent.max_connections lowered from 4096 to {cap}" in log_path.read_text()
            assert await fresh_get(port, "/healthz") == 200

            socks = await open_idle_sockets(port, idle)
            most = open_fds(proc.pid)
            for path_ in ("/healthz", "/v1/verdict", "/healthz", "/v1/verdict"):
                assert await fresh_get(port, path_) == 200, path_
                most = max(most, open_fds(proc.pid))
            assert most < fd_limit, most
            # It made that room by closing ours: at most `cap` of them are left open. (A byte on
            # each shows up any the agent's kernel never accepted, if the backlog overflowed
            # anyway: those get a reset.)
            for sock in socks:
                if not hung_up(sock):
                    with contextlib.suppress(OSError):
                        sock.send(b"G")
            await wait_for(lambda: sum(not hung_up(s) for s in socks) <= cap, timeout=BOUND)
            assert proc.poll() is None

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, BOUND) == 0
        finally:
            for sock in socks:
                sock.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log = log_path.read_text()
    assert "Too many open files" not in log and "out of system resource" not in log
    assert '"exc":' not in log and "Traceback" not in log, log[-3000:]


# --------------------------------------------------------------------------------------------
# (e) Authorization and malformed requests


async def test_bad_authorization_is_401_never_500_and_logs_no_traceback(
    platform: Platform,
    tmp_path: Path,
    timeouts: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeouts()
    caplog.set_level(logging.DEBUG)
    async with agent_on(
        platform, tmp_path, view_token=VIEW_TOKEN, admin_token=ADMIN_TOKEN
    ) as agent:
        body = json.dumps({"by": "bob", "reason": "test", "for": "1h"}).encode()
        refused = [
            b"",
            VIEW_TOKEN.encode(),  # bare, without the scheme
            ADMIN_TOKEN.encode(),
            b"Basic " + VIEW_TOKEN.encode(),
            b"Bearer",
            b"Bearer ",
            b"Bearer wrong",
            b"Bearer \xff\xfe\xfd",
            b"Bearer " + VIEW_TOKEN.encode() + b"\xff",
            b"Bearer " + ADMIN_TOKEN.encode() + b"\xc3",
            b"\xff\xfe " + VIEW_TOKEN.encode(),
            b"Bearer\xa0" + VIEW_TOKEN.encode(),
        ]
        for value in refused:
            auth = (b"Authorization: " + value,) if value else ()
            status, _ = await exchange(agent.port, request("GET", "/v1/view", *auth))
            assert status == 401, value
            status, answer = await exchange(agent.port, request("POST", HOLD, *auth, body=body))
            assert status == 401, value
            assert ADMIN_TOKEN.encode() not in answer
        # Two Authorization headers, even both right, are refused.
        twice = (b"Authorization: Bearer " + VIEW_TOKEN.encode(),) * 2
        assert (await exchange(agent.port, request("GET", "/v1/view", *twice)))[0] == 401
        assert agent.control.actions() == []

        # The scheme in any case is fine; the tokens are not interchangeable.
        for scheme in (b"Bearer", b"bearer", b"BEARER"):
            auth = b"Authorization: " + scheme + b" " + VIEW_TOKEN.encode()
            assert (await exchange(agent.port, request("GET", "/v1/view", auth)))[0] == 200
        wrong = b"Authorization: Bearer " + ADMIN_TOKEN.encode()
        assert (await exchange(agent.port, request("GET", "/v1/view", wrong)))[0] == 401
        auth = b"Authorization: bearer " + ADMIN_TOKEN.encode()
        status, answer = await exchange(agent.port, request("POST", HOLD, auth, body=body))
        assert status == 200, answer
        assert [a.kind.value for a in agent.control.actions()] == ["hold"]

        # Malformed requests are the client's problem: 4xx, and one line at debug in the log.
        malformed = [
            b"GET /healthz HTTP/1.1\r\nHost: agent\r\nBad\x01Name: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: agent\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
            b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: agent\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 200 + b"\r\n",
            b"G\x01T /healthz HTTP/1.1\r\nHost: agent\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # TLS hello
            request("GET", "/healthz", close=False) + b"NOT-HTTP\r\n\r\n",
        ]
        for data in malformed:
            reader, writer = await connect(agent.port)
            writer.write(data)
            raw = await closed_unanswered(reader)
            writer.close()
            statuses = [int(s) for s in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]
            assert statuses and 400 <= statuses[-1] < 500, (data[:60], raw[:300])
        # Methods the API does not serve: 405; made-up ones do not even parse.
        for method in ("PUT", "TRACE", "OPTIONS", "BREW"):
            status, _ = await exchange(agent.port, request(method, "/v1/view"))
            assert status == (400 if method == "BREW" else 405), method
        assert (await exchange(agent.port, request("GET", "/healthz")))[0] == 200

    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    # They did reach the log, stripped: the check above is not passing by default.
    assert [r for r in caplog.records if r.getMessage().startswith("bad request from ")]


# --------------------------------------------------------------------------------------------
# (f) the cap on connections


async def test_at_the_connection_cap_the_oldest_idle_connection_makes_room(
    platform: Platform, tmp_path: Path, timeouts: Callable[..., None], sites: list[GuardedSite]
) -> None:
    timeouts()
    async with agent_on(platform, tmp_path, max_connections=8) as agent:
        (site,) = sites
        assert site.max_connections == 8
        idle = [await connect(agent.port) for _ in range(8)]
        await wait_for(lambda: site.connections == 8, timeout=BOUND)
        # The cap is reached by idle sockets; a new request is served all the same...
        fresh = await connect(agent.port)
        fresh[1].write(request("GET", "/healthz", close=False))
        head, _ = await read_response(fresh[0])
        assert head.startswith(b"HTTP/1.1 200 ")
        # ...by closing the oldest of them, and only that one.
        await wait_for(lambda: closed_by_server(idle[0][0]), timeout=BOUND)
        assert [closed_by_server(r) for r, _ in idle] == [True] + [False] * 7
        assert site.closed == {"evicted": 1}

        # The next newcomer closes the next oldest: the one served above is younger.
        status, _ = await exchange(agent.port, request("GET", "/v1/verdict"))
        assert status == 200
        await wait_for(lambda: closed_by_server(idle[1][0]), timeout=BOUND)
        assert [closed_by_server(r) for r, _ in idle] == [True, True] + [False] * 6
        assert not closed_by_server(fresh[0])
        assert site.closed == {"evicted": 2}
        for _, writer in [*idle, fresh]:
            writer.close()


async def test_at_the_connection_cap_with_every_request_in_flight_newcomers_are_refused(
    platform: Platform,
    tmp_path: Path,
    timeouts: Callable[..., None],
    sites: list[GuardedSite],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    timeouts()
    monkeypatch.setattr(api, "CONTROL_BODY_TIMEOUT", LONG)
    async with agent_on(platform, tmp_path, max_connections=8, admin_token=ADMIN_TOKEN) as agent:
        (site,) = sites
        # Eight control calls whose bodies have not arrived yet: all eight in flight.
        auth = f"Authorization: Bearer {ADMIN_TOKEN}".encode()
        head = request("POST", HOLD, auth, b"Content-Length: 100", close=False)
        busy = []
        for _ in range(8):
            reader, writer = await connect(agent.port)
            writer.write(head)
            busy.append((reader, writer))
        await wait_for(lambda: site.phases()[Phase.BUSY] == 8, timeout=BOUND)
        # A newcomer can only be refused (there is nothing idle to close for it).
        reader, writer = await connect(agent.port)
        writer.write(request("GET", "/healthz"))
        assert await closed_unanswered(reader) == b""
        writer.close()
        assert site.closed == {"refused": 1}
        assert not any(closed_by_server(r) for r, _ in busy)
        # Once they are gone, there is room again.
        for _, writer in busy:
            writer.close()
        assert await fresh_get(agent.port, "/healthz") == 200


# --------------------------------------------------------------------------------------------
# Listening


async def test_an_unusable_address_is_a_one_line_listen_error(
    platform: Platform, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            f"127.0.0.1:{port}": f"cannot listen on 127.0.0.1:{port}: address already in use",
            # TEST-NET-1: no interface of this machine has it.
            "192.0.2.1:0": "cannot listen on 192.0.2.1:0: cannot assign requested address",
        }
        for listen, expected in cases.items():
            data = demo_config_data(platform)
            data["agent"]["listen"] = listen
            agent = Agent(write_config(tmp_path / "failsight.yaml", data))
            with pytest.raises(ListenError) as caught:
                await asyncio.wait_for(agent.run(install_signals=False), BOUND)
            assert str(caught.value) == expected
            assert caught.value.__cause__ is None and caught.value.__suppress_context__
