"""Hostile peers: `/v1/view` answers that are not JSON, nested too deep, too large, of the wrong
types, slow, or that echo the bearer token back.

The peers are real HTTP servers on loopback (aiohttp, or raw asyncio sockets for what aiohttp
would not send). Each answer must end as a recorded peer error (one short line, no secret, no
traceback) or be taken field by field with the bad fields ignored; never an exception out of the
poller, and what is taken must be something the verdict can judge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from failsight.agent.control import ControlStore
from failsight.agent.peers import MAX_VIEW_BYTES, PeerConfig, PeerPoller, PeerState
from failsight.agent.verdict import decide
from failsight.agent.view import SiteOpinion, SiteState, VantageView
from failsight.core.http import new_session
from failsight.core.redact import REDACTED, REDACTOR

PEER = "gcp-euw1"
TOKEN = "peer-view-token-0123456789"
SITES = [("aws-use1", "primary"), ("gcp-euw1", "standby")]
DEEP = b"[" * 400_000 + b"]" * 400_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def view(**overrides: Any) -> dict[str, Any]:
    """A healthy peer view, as agent/api.py serves it."""
    body: dict[str, Any] = {
        "vantage": PEER,
        "generated_at": time.time(),
        "sites": {
            "aws-use1": {"state": "up", "since": 1_700_000_000.0, "evidence": []},
            "gcp-euw1": {"state": "up", "since": 1_700_000_000.0, "evidence": []},
        },
        "every_site_failing": False,
        "self_check": True,
        "control": {"actions": []},
    }
    body.update(overrides)
    return body


class PeerServer:
    """An aiohttp server on loopback whose /v1/view answer a test sets."""

    def __init__(self) -> None:
        self.handler: Handler = self.json(view())
        self.requests = 0
        self.authorizations: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    @staticmethod
    def json(data: object) -> Handler:
        return PeerServer.raw(json.dumps(data).encode())

    @staticmethod
    def raw(body: bytes, status: int = 200) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, status=status, content_type="application/json")

        return handler

    async def _view(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.authorizations.append(request.headers.get("Authorization", ""))
        return await self.handler(request)

    async def __aenter__(self) -> PeerServer:
        app = web.Application()
        app.router.add_get("/v1/view", self._view)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[PeerServer]:
    async with PeerServer() as peer_server:
        yield peer_server


RawPeer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[RawPeer], Awaitable[str]]]:
    """A raw TCP peer: `behaviour(reader, writer)` after the request head has been read."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def start(behaviour: RawPeer) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            writers.add(writer)
            try:
                await behaviour(reader, writer)
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writers.discard(writer)
                writer.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for writer in list(writers):
        writer.transport.abort()
    if tasks:
        _, late = await asyncio.wait(tasks, timeout=2.0)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def peer_at(url: str, **overrides: Any) -> PeerConfig:
    data: dict[str, Any] = {
        "name": PEER,
        "url": url,
        "bearer_token": TOKEN,
        "timeout": "1s",
        "interval": "1s",
    }
    data.update(overrides)
    return PeerConfig.model_validate(data)


@pytest.fixture
def fetch(
    caplog: pytest.LogCaptureFixture,
) -> Callable[[str], Awaitable[tuple[PeerPoller, PeerState]]]:
    """Fetch the peer's view once, as the poller does; nothing may escape or log an error."""
    caplog.set_level(logging.INFO)

    async def run(url: str) -> tuple[PeerPoller, PeerState]:
        async with new_session() as http:
            poller = PeerPoller([peer_at(url)], http)
            state = await poller.fetch(poller.peers[0])
        assert poller.states[PEER] is state
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors
        for record in caplog.records:
            assert TOKEN not in record.getMessage()
            assert record.exc_info is None
        return poller, state

    return run


Fetch = Callable[[str], Awaitable[tuple[PeerPoller, PeerState]]]


def assert_peer_error(state: PeerState, *fragments: str) -> None:
    assert state.view is None, state
    assert state.error is not None
    error = state.error
    assert "\n" not in error and len(error) <= 303, error
    assert "Traceback" not in error
    assert TOKEN not in error
    for fragment in fragments:
        assert fragment in error, error


def assert_well_typed(v: VantageView) -> None:
    """What the verdict may assume of a parsed view."""
    assert v.vantage == PEER
    assert isinstance(v.generated_at, float) and math.isfinite(v.generated_at)
    assert isinstance(v.every_site_failing, bool)
    assert v.self_check is None or isinstance(v.self_check, bool)
    for site, opinion in v.sites.items():
        assert isinstance(site, str) and 0 < len(site) <= 128
        assert isinstance(opinion, SiteOpinion)
        assert isinstance(opinion.state, SiteState)
        assert isinstance(opinion.since, float) and math.isfinite(opinion.since)
        for moment in (opinion.last_run_at, opinion.episode_since):
            assert moment is None or (isinstance(moment, float) and 0 <= moment < 1e11)
        assert isinstance(opinion.flapping, bool)
        assert isinstance(opinion.evidence, tuple) and len(opinion.evidence) <= 10
        assert all(isinstance(e, str) and len(e) <= 503 for e in opinion.evidence)
    # The verdict judges it without trouble, alongside a local view.
    local = VantageView("aws-use1", time.time(), {s: SiteOpinion(SiteState.UP) for s, _ in SITES})
    verdicts = decide(SITES, [local, v], quorum=1, stale_after=30.0, now=time.time())
    assert set(verdicts) == {s for s, _ in SITES}


# -- refused as a whole: a recorded peer error ----------------------------------------------------


def nested_field(depth: int) -> bytes:
    return b'{"vantage": ' + b"[" * depth + b"]" * depth + b', "sites": {}}'


@pytest.mark.parametrize(
    ("handler", "fragments"),
    [
        (PeerServer.raw(b"<html>not json</html>"), ("bad view: not JSON",)),
        (PeerServer.raw(DEEP), ("bad view: not JSON (800000 bytes)",)),
        (PeerServer.raw(b"\xff\xfe\xfd"), ("bad view: not JSON",)),
        (PeerServer.raw(b'{"vantage": 1' + b"0" * 5000 + b"}"), ("bad view: not JSON",)),
        (PeerServer.raw(b""), ("bad view: not JSON (0 bytes)",)),
        (PeerServer.json([]), ("not a JSON object",)),
        (PeerServer.json(None), ("not a JSON object",)),
        (PeerServer.json(view(vantage="aws-use1")), ("reports vantage 'aws-use1'",)),
        (PeerServer.json(view(vantage="v" * 3_000_000)), ("reports vantage 'vvvv",)),
        (PeerServer.raw(nested_field(900)), ("reports vantage a JSON array",)),
        (PeerServer.json(view(vantage={"a": 1})), ("reports vantage a JSON object",)),
        (PeerServer.json(view(sites=["aws-use1", "gcp-euw1"])), ("has no sites",)),
        (PeerServer.json(view(sites="all of them")), ("has no sites",)),
        (PeerServer.json(view(sites=None)), ("has no sites",)),
        (
            PeerServer.json(view(sites={"aws-use1": {"state": "sideways"}})),
            ("site 'aws-use1' has state 'sideways'",),
        ),
        (
            PeerServer.json(view(sites={"aws-use1": {"state": ["up"]}})),
            ("has state a JSON array",),
        ),
        (PeerServer.json(view(sites={"aws-use1": {"state": None}})), ("has state None",)),
        (
            PeerServer.json(view(sites={"aws-use1": {"state": "x" * 100_000}})),
            ("has state 'xxxx",),
        ),
        (PeerServer.json(view(sites={"aws-use1": "up"})), ("is not an object",)),
        (
            PeerServer.json(view(sites={f"site-{i}": {"state": "up"} for i in range(5000)})),
            ("reports 5000 sites, more than 1024",),
        ),
        (PeerServer.json(view(control="yes")), ("control.actions is not a list",)),
        (PeerServer.json(view(control={"actions": {"a": 1}})), ("control.actions is not a list",)),
        (
            PeerServer.json(view(control={"actions": [{"kind": "latch"}] * 5000})),
            ("control.actions is not a list of at most 4096",),
        ),
        (PeerServer.json(view(control={"actions": [{"kind": "nuke"}]})), ("unknown action kind",)),
        (PeerServer.json(view(control={"actions": [17]})), ("not a JSON object",)),
        (
            PeerServer.json(view(control={"actions": [{"kind": "x" * 200_000}]})),
            ("unknown action kind",),
        ),
        (
            PeerServer.json(
                view(
                    control={
                        "actions": [
                            {
                                "id": "a1",
                                "kind": "hold",
                                "site": "aws-use1",
                                "clock": True,
                                "origin": PEER,
                                "at": 1.7e9,
                                "by": "x",
                            }
                        ]
                    }
                )
            ),
            ("clock must be a positive integer",),
        ),
        (
            PeerServer.json(
                view(
                    control={
                        "actions": [
                            {
                                "id": "a1",
                                "kind": "hold",
                                "site": "aws-use1",
                                "clock": 3,
                                "origin": PEER,
                                "at": float("nan"),
                                "by": "x\r\ny",
                            }
                        ]
                    }
                )
            ),
            ("must be a Unix time",),
        ),
        (PeerServer.raw(b'{"error": "nope"}', status=500), ("bad view: HTTP 500",)),
        (PeerServer.raw(b"", status=401), ("bad view: HTTP 401",)),
    ],
    ids=[
        "html",
        "nested-400000-deep",
        "not-utf8",
        "integer-5000-digits",
        "empty",
        "array",
        "null",
        "other-vantage",
        "megabyte-vantage",
        "nested-vantage",
        "object-vantage",
        "sites-list",
        "sites-string",
        "sites-null",
        "unknown-state",
        "state-list",
        "state-null",
        "huge-state",
        "site-string",
        "5000-sites",
        "control-string",
        "actions-object",
        "5000-actions",
        "unknown-action",
        "action-number",
        "huge-action-kind",
        "clock-bool",
        "at-nan",
        "http-500",
        "http-401",
    ],
)
async def test_a_bad_view_is_a_short_peer_error(
    server: PeerServer, fetch: Fetch, handler: Handler, fragments: tuple[str, ...]
) -> None:
    server.handler = handler
    poller, state = await fetch(server.url)
    assert_peer_error(state, *fragments)
    assert poller.views()[0] == VantageView(PEER, 0.0, {})  # listed as stale, never judged


async def test_a_body_larger_than_the_cap_is_refused_unread(
    server: PeerServer, fetch: Fetch
) -> None:
    # Declared: refused at the headers.
    server.handler = PeerServer.raw(b" " * (MAX_VIEW_BYTES + 1))
    _, state = await fetch(server.url)
    assert_peer_error(state, "exceeds the limit")

    # Chunked, no length: refused once the cap is crossed.
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(200):
            await response.write(b" " * 65536)
        return response

    server.handler = endless
    _, state = await fetch(server.url)
    assert_peer_error(state, "exceeds the limit of 4194304 bytes")


async def test_a_view_within_the_cap_is_taken(server: PeerServer, fetch: Fetch) -> None:
    # A view carries one action per register, two registers per site: 1024 sites' worth of
    # actions of the largest size an action may have is more than the old 1 MiB cap.
    action = {
        "id": "x" * 64,
        "kind": "hold",
        "origin": PEER,
        "at": 1.7e9,
        "by": "b" * 500,
        "reason": "r" * 500,
        "until": 1.8e9,
    }
    actions = [{**action, "site": f"site-{i // 2}", "clock": i + 1} for i in range(2048)]
    body = json.dumps(view(control={"actions": actions})).encode()
    assert 1_048_576 < len(body) < MAX_VIEW_BYTES
    server.handler = PeerServer.raw(body)
    _, state = await fetch(server.url)
    assert state.error is None and state.view is not None
    assert len(state.actions) == 2048


# -- transport: slow, garbage, echoing ----------------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


async def byte_by_byte_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n"
    )
    for byte in json.dumps(view()).encode().ljust(4096):
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.05)


async def byte_by_byte_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"s" * 4000:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.05)


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    await asyncio.sleep(30)


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"\x16\x03\x01\x00\xff garbage \r\n\r\n" + bytes(range(256)))
    await writer.drain()


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    return None


async def echo_token_in_status_line(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    head = await read_head(reader)
    authorization = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"authorization:")
    )
    writer.write(b"HTTP/1.1 2x0 " + authorization + b"\r\n\r\n")
    await writer.drain()


async def truncated_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_head(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{")
    await writer.drain()


@pytest.mark.parametrize(
    ("behaviour", "fragments"),
    [
        (byte_by_byte_body, ("no answer in time",)),
        (byte_by_byte_head, ("no answer in time",)),
        (never_answer, ("no answer in time",)),
        (garbage, ("bad HTTP response",)),
        (close_at_once, ("connection",)),
        (echo_token_in_status_line, ("bad HTTP response", REDACTED)),
        (truncated_body, ("truncated",)),
    ],
)
async def test_hostile_transports_are_peer_errors(
    raw_server: Callable[[RawPeer], Awaitable[str]],
    fetch: Fetch,
    behaviour: RawPeer,
    fragments: tuple[str, ...],
) -> None:
    url = await raw_server(behaviour)
    _, state = await fetch(url)
    assert_peer_error(state, *fragments)


async def test_a_peer_echoing_the_token_in_its_view_never_shows_it(
    server: PeerServer, fetch: Fetch
) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        authorization = request.headers["Authorization"]
        return web.json_response(view(vantage=authorization, sites={authorization: "x"}))

    server.handler = echo
    _, state = await fetch(server.url)
    assert_peer_error(state, "reports vantage 'Bearer " + REDACTED)
    assert server.authorizations == [f"Bearer {TOKEN}"]
    assert REDACTOR.text(TOKEN) == REDACTED


async def test_a_long_token_echoed_is_redacted_before_it_is_cut_short(
    server: PeerServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The vantage quoted in the error is cut to 64 characters: cut first, the token's prefix
    # would be shown, no longer recognisable as the token.
    long_token = "L" + "0123456789abcdef" * 12

    async def echo(request: web.Request) -> web.StreamResponse:
        return web.json_response(view(vantage=request.headers["Authorization"]))

    server.handler = echo
    async with new_session() as http:
        poller = PeerPoller([peer_at(server.url, bearer_token=long_token)], http)
        state = await poller.fetch(poller.peers[0])
    assert state.error == f"bad view: reports vantage 'Bearer {REDACTED}', expected {PEER!r}"
    assert long_token[:16] not in " ".join(r.getMessage() for r in caplog.records)


# -- taken field by field: bad fields ignored ----------------------------------------------------


async def test_wrong_types_in_a_view_are_ignored_field_by_field(
    server: PeerServer, fetch: Fetch
) -> None:
    odd_sites: dict[str, Any] = {
        "aws-use1": {
            "state": "down",
            "since": "yesterday",
            "last_run_at": float("nan"),
            "episode_since": float("inf"),
            "flapping": "yes",
            "evidence": "everything is on fire",
        },
        "gcp-euw1": {
            "state": "up",
            "since": float("-inf"),
            "last_run_at": 1e300,
            "episode_since": -5,
            "flapping": 1,
            "evidence": [1, None, {"a": 1}, ["x"], "real\r\nline\x00", "e" * 100_000]
            + ["more"] * 10_000,
        },
        # Names no configured site can have: skipped, whatever their bodies.
        "": {"state": "nonsense"},
        " padded ": 17,
        "ctl\x07": None,
        "n" * 129: {"state": "down"},
    }
    # Sites not in our config: kept, and never read by the verdict.
    odd_sites.update({f"elsewhere-{i}": {"state": "down"} for i in range(1000)})
    server.handler = PeerServer.json(
        view(
            sites=odd_sites,
            generated_at=1e300,  # the far future: freshness is our receive time anyway
            every_site_failing="true",
            impaired=1,
            self_check="yes",
        )
    )
    before = time.time()
    poller, state = await fetch(server.url)
    assert state.error is None, state.error
    v = state.view
    assert v is not None
    assert before <= v.generated_at <= time.time()
    assert state.fetched_at == v.generated_at
    assert v.every_site_failing is False and v.self_check is None
    aws, gcp = v.sites["aws-use1"], v.sites["gcp-euw1"]
    assert (aws.state, aws.since, aws.last_run_at, aws.episode_since) == (
        SiteState.DOWN,
        0.0,
        None,
        None,
    )
    assert aws.flapping is False and aws.evidence == ()
    assert (gcp.since, gcp.last_run_at, gcp.episode_since, gcp.flapping) == (0.0, None, None, False)
    assert gcp.evidence[0] == "real  line "
    assert gcp.evidence[1] == "e" * 500 + "..."
    assert len(gcp.evidence) == 10
    assert len(v.sites) == 1002 and "" not in v.sites and "n" * 129 not in v.sites
    assert_well_typed(v)
    assert poller.views() == [v]


async def test_odd_but_valid_actions_merge_and_the_verdict_still_judges(
    server: PeerServer, fetch: Fetch
) -> None:
    actions = [
        {
            "id": "far-future",
            "kind": "hold",
            "site": "no-such-site",
            "clock": 2**53 - 1,
            "origin": PEER,
            "at": 99_999_999_999,
            "by": "someone",
            "until": 99_999_999_999,
        },
        {
            "id": "latch",
            "kind": "latch",
            "site": "aws-use1",
            "clock": 7,
            "origin": PEER,
            "at": 0,
            "by": "verdict",
            "target": "t" * 128,
        },
    ]
    server.handler = PeerServer.json(view(control={"actions": actions}))
    _, state = await fetch(server.url)
    assert state.error is None and state.view is not None
    store = ControlStore("aws-use1")
    store.merge(state.actions, source=f"peer {PEER}")
    now = time.time()
    controls = store.controls(now)
    assert "no-such-site" in controls.holds and "aws-use1" in controls.latches
    local = VantageView("aws-use1", now, {s: SiteOpinion(SiteState.UP) for s, _ in SITES})
    verdicts = decide(
        SITES, [local, state.view], quorum=1, stale_after=30.0, now=now, controls=controls
    )
    assert set(verdicts) == {"aws-use1", "gcp-euw1"}


async def test_a_peer_error_keeps_the_last_good_view(server: PeerServer, fetch: Fetch) -> None:
    async with new_session() as http:
        poller = PeerPoller([peer_at(server.url)], http)
        good = await poller.fetch(poller.peers[0])
        assert good.error is None and good.view is not None
        server.handler = PeerServer.raw(DEEP)
        bad = await poller.fetch(poller.peers[0])
    assert bad.view is good.view and bad.fetched_at == good.fetched_at
    assert bad.error is not None and bad.error.startswith("bad view: not JSON")


async def test_the_poller_keeps_polling_when_handling_a_view_fails(
    server: PeerServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug in what handles a view (on_view) must not end the polling of every peer.
    caplog.set_level(logging.INFO)
    calls: list[str] = []

    def on_view(name: str, state: PeerState) -> None:
        calls.append(name)
        raise RuntimeError("a bug in the handler")

    async with new_session() as http:
        poller = PeerPoller([peer_at(server.url, interval="100ms")], http, on_view)
        task = asyncio.create_task(poller.run())
        try:
            async with asyncio.timeout(20):
                while len(calls) < 3:
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert server.requests >= 3
    assert any("polling peer gcp-euw1 failed" in r.getMessage() for r in caplog.records)


async def test_the_bearer_token_is_registered_for_redaction() -> None:
    PeerPoller([peer_at("http://127.0.0.1:9")], None)
    assert REDACTOR.text(f"echo {TOKEN}") == f"echo {REDACTED}"
