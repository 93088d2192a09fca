"""A journey step's HTTP phases over plain HTTP on loopback (the `tls` phase has its own file):
which phases a step reports on a new connection, on a reused one, with a fresh connection per
request, and when the request fails part way; and that the session's phase timing leaves other
requests on the shared session alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.core.results import Reason, Result
from failsight.probes.journey import JourneyCheck, JourneyConfig

SLOW = 0.3  # what the slow endpoint waits before its headers

NEW_CONNECTION = {"connect", "send", "ttfb", "body"}
REUSED = {"send", "ttfb", "body"}


@pytest.fixture
async def server() -> AsyncIterator[int]:
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW)
        return web.json_response({"ok": True})

    async def hang(_request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/hang", hang)
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def journey(*paths: str, timeout: str = "10s") -> JourneyConfig:
    return JourneyConfig.model_validate(
        {
            "name": "phases",
            "timeout": timeout,
            "steps": [
                {"name": f"s{i}", "method": "POST" if i == 1 else "GET", "path": path}
                for i, path in enumerate(paths)
            ],
        }
    )


async def run(base_url: str, cfg: JourneyConfig, *, keepalive: bool = True) -> Result:
    async with new_session(keepalive=keepalive) as http:
        check = JourneyCheck(cfg, site="s", base_url=base_url)
        return await run_check(check, ProbeContext(vantage="v", http=http))


async def test_a_new_connection_has_connect_a_reused_one_does_not(server: int) -> None:
    result = await run(f"http://127.0.0.1:{server}", journey("/a", "/b", "/c"))
    assert result.ok, result.summary()
    first, *others = (s.phases for s in result.steps)
    # A literal IP address needs no lookup: no `dns` phase, and no `tls` over plain HTTP.
    assert set(first) == NEW_CONNECTION, first
    assert all(set(p) == REUSED for p in others), others
    assert all(v >= 0 for s in result.steps for v in s.phases.values())


async def test_a_lookup_is_its_own_phase_and_a_cached_name_has_none(server: int) -> None:
    result = await run(f"http://localhost:{server}", journey("/a", "/b"), keepalive=False)
    assert result.ok, result.summary()
    first, second = (s.phases for s in result.steps)
    assert set(first) == NEW_CONNECTION | {"dns"}, first
    # A fresh connection for every request, the name from the connector's DNS cache.
    assert set(second) == NEW_CONNECTION, second


async def test_every_request_opens_its_own_connection_without_keepalive(server: int) -> None:
    result = await run(f"http://127.0.0.1:{server}", journey("/a", "/b", "/c"), keepalive=False)
    assert result.ok, result.summary()
    assert all(set(s.phases) == NEW_CONNECTION for s in result.steps), [
        s.phases for s in result.steps
    ]


async def test_waiting_for_the_answer_is_ttfb_and_nothing_else(server: int) -> None:
    result = await run(f"http://127.0.0.1:{server}", journey("/slow"))
    assert result.ok, result.summary()
    (step,) = result.steps
    assert step.phases["ttfb"] >= SLOW
    assert step.phases["connect"] < SLOW and step.phases["send"] < SLOW, step.phases
    # Disjoint phases: together never more than the step.
    assert sum(step.phases.values()) <= step.duration


async def test_a_request_without_an_answer_has_send_but_no_ttfb(server: int) -> None:
    result = await run(f"http://127.0.0.1:{server}", journey("/a", "/hang", timeout="1s"))
    assert not result.ok
    assert result.reason is Reason.TIMEOUT, result.summary()
    hung = result.steps[1].phases
    assert set(hung) == {"send"}, hung


async def test_a_refused_connection_has_no_phases(server: int) -> None:
    # A port nobody listens on: the server's, once it is gone.
    async with new_session() as http:
        cfg = journey("/a")
        check = JourneyCheck(cfg, site="s", base_url="http://127.0.0.1:1")
        result = await run_check(check, ProbeContext(vantage="v", http=http))
    assert result.reason is Reason.CONNECT, result.summary()
    assert not result.steps[0].phases


async def test_other_requests_on_the_shared_session_are_untouched(server: int) -> None:
    # Other probes use the agent's session directly; nobody times their requests.
    async with new_session() as http:
        for _ in range(2):
            async with http.get(f"http://localhost:{server}/a") as response:
                assert response.status == 200
                assert await response.json() == {"ok": True}
