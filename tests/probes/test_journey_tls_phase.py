"""A journey step's `tls` phase: the handshake timed apart from the TCP connect, over real TLS
(a trustme CA, an aiohttp site on loopback), on asyncio's and on uvloop's event loop."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

import pytest
import trustme
import uvloop
from aiohttp import web

from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.core.results import Result
from failsight.probes.journey import JourneyCheck, JourneyConfig

HANDSHAKE_DELAY = 0.5

JOURNEY = JourneyConfig.model_validate(
    {
        "name": "tls",
        "steps": [
            {"name": "first", "path": "/a"},  # opens the connection: connect and tls
            {"name": "second", "path": "/b"},  # reuses it: neither
        ],
    }
)


async def _run_over_tls(ca: trustme.CA, ca_file: str, *, keepalive: bool) -> Result:
    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    # The server takes HANDSHAKE_DELAY over each handshake, after the TCP connect is done (it
    # sees the ClientHello): the delay lands in the client's `tls` phase and never in its
    # `connect`, whatever the machine's load. Blocking the loop is the point: the client's
    # handshake cannot finish meanwhile.
    server_ctx.sni_callback = lambda *_: time.sleep(HANDSHAKE_DELAY)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with new_session(keepalive=keepalive) as http:
            check = JourneyCheck(
                JOURNEY, site="s", base_url=f"https://localhost:{port}", ca_file=ca_file
            )
            return await run_check(check, ProbeContext(vantage="v", http=http))
    finally:
        await runner.cleanup()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,  # what `failsight run` uses (the `fast` extra)
}


@pytest.mark.parametrize("loop", LOOPS)
def test_the_handshake_is_its_own_phase_only_on_a_new_connection(
    loop: str, ca: trustme.CA, ca_file: str
) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        result = runner.run(_run_over_tls(ca, ca_file, keepalive=True))
    assert result.ok, result.summary()
    first, second = (s.phases for s in result.steps)
    assert {"connect", "tls", "send", "ttfb", "body"} <= set(first), first
    # Taken out of connect, not counted twice (aiohttp times the two as one connect).
    assert first["tls"] >= HANDSHAKE_DELAY
    assert first["connect"] < HANDSHAKE_DELAY
    assert first["send"] < HANDSHAKE_DELAY  # nor counted in `send`
    assert "tls" not in second and "connect" not in second, second


def test_every_new_connection_times_its_own_handshake(ca: trustme.CA, ca_file: str) -> None:
    with asyncio.Runner() as runner:
        result = runner.run(_run_over_tls(ca, ca_file, keepalive=False))
    assert result.ok, result.summary()
    assert all(s.phases.get("tls", 0) > 0 for s in result.steps), [s.phases for s in result.steps]
