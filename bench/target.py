"""A fast loopback HTTP target for benchmarks, run in its own process (its CPU is not ours)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
from typing import Any

from aiohttp import web


async def _step(request: web.Request) -> web.Response:
    # An injected delay is the "truth" the timing-accuracy benchmark compares against.
    delay_ms = request.query.get("delay_ms")
    if delay_ms:
        await asyncio.sleep(int(delay_ms) / 1000)
    return web.json_response({"ok": True, "id": "x1", "state": "done"})


def _serve(sock: socket.socket, cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _step)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


def loopback_listener() -> tuple[socket.socket, str]:
    """A socket listening on a free loopback port, for a child process to serve on, and the
    URL it answers at: bound here, so the port is known before the child starts."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


class Target:
    """`with Target() as url:` serves on a free loopback port in a child process."""

    def __init__(self, cpu: int | None = None) -> None:
        self.cpu = cpu
        self.sock, self.url = loopback_listener()
        self.proc: Any = None

    def __enter__(self) -> str:
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=_serve, args=(self.sock, self.cpu), daemon=True)
        self.proc.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(5)
        self.sock.close()
