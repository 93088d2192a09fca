"""API starvation: /healthz latency with no idle sockets vs with twice the agent's fd limit held.

Run: `.venv/bin/python -m bench.api_starvation` (`--quick` for a smoke run). Nothing is asserted.
The agent is `failsight run` with RLIMIT_NOFILE lowered to `--fd-limit` (soft and hard, so it
cannot raise it), running `--journeys` one-step journeys against bench/target.py so its probes
hold sockets of their own. Each round measures `--requests` sequential GET /healthz, each on a
fresh connection (connect to last byte, in this process), first with no idle sockets (the
baseline, in the same run), then while this process holds `--idle-factor` times the agent's fd
limit in idle connections that never send a byte (opened just before, kept open throughout,
and one more opened before each request, so that the agent's connection table is full every
time and each request has to make room by closing the oldest idle one).
Before the API kept connections on a clock and capped their number, about 1,100 such sockets
against a limit of 1,024 locked /healthz out for good; the figures to look at are the failures
and the agent's open fds against its limit, then the latency. The agent's open fds are counted
from /proc/<pid>/fd after every request.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.blackbox import (
    FAILSIGHT,
    PROBER_CPU,
    SIDE_CPU,
    failsight_config,
    free_port,
    pinned,
    spread,
    stop_process,
    two_cores,
    wait_http,
    write_summary,
)
from bench.target import Target

REQUEST_TIMEOUT = 5.0  # a /healthz slower than this counts as failed (the probe's own timeout)


@dataclass
class Condition:
    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    round_medians: list[float] = field(default_factory=list)
    max_fds: int = 0


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def healthz(port: int) -> float | None:
    """One GET /healthz on a fresh connection: milliseconds to the last byte, or None."""
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    except OSError:
        return None
    if not raw.startswith(b"HTTP/1.1 200 "):
        return None
    return (time.perf_counter() - start) * 1000


def measure(
    port: int, pid: int, requests: int, into: Condition, refill: list[socket.socket] | None = None
) -> None:
    """`requests` GET /healthz; with `refill`, one more idle socket is opened (and appended to
    it) before each, so the agent's table stays full and every request has to make room."""
    got = []
    for _ in range(requests):
        if refill is not None:
            refill += open_idle(port, 1)
        latency = healthz(port)
        into.max_fds = max(into.max_fds, open_fds(pid))
        if latency is None:
            into.failures += 1
        else:
            got.append(latency)
    into.latencies_ms += got
    if got:
        into.round_medians.append(statistics.median(got))


def open_idle(port: int, count: int, batch: int = 64) -> list[socket.socket]:
    """`count` connections that never send anything. Opened `batch` at a time, each batch
    connected before the next, so the agent's listen backlog (128) keeps up: a burst beyond it
    would end in connections only this side believes in (SYN cookies), no load on the agent."""
    socks = []
    for start in range(0, count, batch):
        poll = select.poll()  # not select(): these descriptors go past FD_SETSIZE
        for _ in range(min(batch, count - start)):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect(("127.0.0.1", port))
            socks.append(sock)
            poll.register(sock.fileno(), select.POLLOUT)
        pending, deadline = min(batch, count - start), time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            for fd, _ in poll.poll(1000):
                poll.unregister(fd)
                pending -= 1
    return socks


def closed_by_agent(socks: Sequence[socket.socket]) -> int:
    poll = select.poll()
    for sock in socks:
        poll.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return len(poll.poll(0))


def settle(socks: Sequence[socket.socket], quiet: float = 1.0, bound: float = 60.0) -> None:
    """Wait until the agent has accepted them all: it stops closing ours for `quiet` seconds.
    (Connected from our side is not accepted: the listen backlog holds only so many.)"""
    deadline = time.monotonic() + bound
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = closed_by_agent(socks)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


@contextlib.contextmanager
def own_fd_limit(needed: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"this benchmark needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _limit_files(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def run(
    requests: int, rounds: int, fd_limit: int, idle_factor: float, journeys: int
) -> tuple[Condition, Condition, list[int]]:
    idle_count = int(fd_limit * idle_factor)
    baseline, flooded = Condition(), Condition()
    closed: list[int] = []
    with (
        own_fd_limit(idle_count + 256),
        tempfile.TemporaryDirectory(prefix="failsight-bench-starve-") as tmp,
        Target(cpu=SIDE_CPU if two_cores() else None) as url,
    ):
        wait_http(url + "/")
        port = free_port()
        config = Path(tmp) / "agent.yaml"
        config.write_text(failsight_config(url, port, journeys=journeys, keepalive=True))
        log = Path(tmp) / "agent.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                pinned(
                    [str(FAILSIGHT), "run", "--config", str(config)],
                    PROBER_CPU if two_cores() else None,
                ),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _limit_files(fd_limit),
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            print(
                f"agent pid {proc.pid}: fd limit {fd_limit}, {open_fds(proc.pid)} fds open at "
                f"start; {journeys} journeys; {idle_count} idle sockets per flooded round",
                flush=True,
            )
            for n in range(rounds):
                measure(port, proc.pid, requests, baseline)
                socks = open_idle(port, idle_count)
                settle(socks)
                try:
                    measure(port, proc.pid, requests, flooded, refill=socks)
                    closed.append(closed_by_agent(socks))
                finally:
                    for sock in socks:
                        sock.close()
                medians = [
                    c.round_medians[-1] if c.round_medians else float("nan")
                    for c in (baseline, flooded)
                ]
                print(
                    f"  round {n + 1}: median ms baseline {medians[0]:.2f}, "
                    f"flooded {medians[1]:.2f}; "
                    f"failures {baseline.failures}/{flooded.failures} so far; agent fds max "
                    f"{flooded.max_fds}; the agent closed {closed[-1]} of our {len(socks)}",
                    flush=True,
                )
                # Let the agent see ours go before the next baseline.
                deadline = time.monotonic() + 10
                while open_fds(proc.pid) > baseline.max_fds + 8 and time.monotonic() < deadline:
                    time.sleep(0.1)
            if proc.poll() is not None:
                raise SystemExit(f"the agent exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        finally:
            stop_process(proc)
    text = log.read_text() if log.exists() else ""
    if "Too many open files" in text or '"exc":' in text:
        print("the agent logged errors:\n" + text[-3000:], flush=True)
    return baseline, flooded, closed


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200, help="per condition per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fd-limit", type=int, default=1024, help="the agent's RLIMIT_NOFILE")
    p.add_argument("--idle-factor", type=float, default=2.0, help="idle sockets / fd limit")
    p.add_argument("--journeys", type=int, default=20, help="1 s journeys the agent runs")
    p.add_argument("--quick", action="store_true", help="1 round of 50 requests")
    p.add_argument("--summary-json", help="write rows for bench/run_all.py here")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 50, 1
    baseline, flooded, closed = run(
        args.requests, args.rounds, args.fd_limit, args.idle_factor, args.journeys
    )
    idle = int(args.fd_limit * args.idle_factor)
    rows = [
        {
            "bench": "api_starvation",
            "figure": "/healthz on a fresh connection, no idle sockets (ms)",
            "value": spread(baseline.latencies_ms, "{:.2f}"),
            "goal": "",
        },
        {
            "bench": "api_starvation",
            "figure": f"/healthz on a fresh connection, {idle} idle sockets held (ms)",
            "value": spread(flooded.latencies_ms, "{:.2f}"),
            "goal": "",
        },
        {
            "bench": "api_starvation",
            "figure": "per-round medians, baseline / flooded (ms)",
            "value": f"{spread(baseline.round_medians, '{:.2f}')} / "
            f"{spread(flooded.round_medians, '{:.2f}')}",
            "goal": "",
        },
        {
            "bench": "api_starvation",
            "figure": "failed /healthz, baseline / flooded",
            "value": f"{baseline.failures} / {flooded.failures} "
            f"of {args.requests * args.rounds} each",
            "goal": "0 flooded",
            "met": "yes" if flooded.failures == 0 else "no",
        },
        {
            "bench": "api_starvation",
            "figure": f"agent open fds, max while flooded (limit {args.fd_limit})",
            "value": str(flooded.max_fds),
            "goal": f"< {args.fd_limit}",
            "met": "yes" if flooded.max_fds < args.fd_limit else "no",
        },
        {
            "bench": "api_starvation",
            "figure": "idle sockets the agent closed, per round",
            "value": spread([float(c) for c in closed], "{:.0f}") + f" of {idle + args.requests}",
            "goal": "",
        },
    ]
    print()
    for row in rows:
        print(f"{row['figure']}: {row['value']}")
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
