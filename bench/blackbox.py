"""Probe cost against blackbox_exporter: CPU per single-request HTTP probe at 200 probes/s.

Run: `.venv/bin/python -m bench.blackbox` (`--quick` for a smoke run). Prints a table; nothing is
asserted. Each prober under test runs alone, pinned to CPU 0; the target (bench/target.py), the
load generator that drives blackbox_exporter and this script share CPU 1, and their CPU is not
counted. A prober's CPU is utime+stime of its process (all threads) from /proc/<pid>/stat over a
steady window after a warm-up. The probers take turns within each repeat, so background load on
the shared machine touches them alike, and the ratio is taken within a repeat. With
`--baseline-tree DIR`, the code in DIR (say a worktree of the commit before a change) runs as
"failsight before", keep-alive and fresh, with this venv, taking turns with the others; the
report gives each prober's ratio to blackbox_exporter and failsight's to the bare client, per
repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench.target import Target

ROOT = Path(__file__).resolve().parent.parent
FAILSIGHT = ROOT / ".venv" / "bin" / "failsight"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
CLK_TCK = os.sysconf("SC_CLK_TCK")

PROBER_CPU = 0  # the prober under test has this core to itself (other engineers permitting)
SIDE_CPU = 1  # target, load generator, this script


# -- process measurements (shared with the other benchmarks) ------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds (clock-tick resolution)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the command name: state is field 3, utime 14, stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def two_cores() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def pinned(cmd: Sequence[str], cpu: int | None) -> list[str]:
    """`cmd` under taskset, so every thread it ever starts (Go's too) stays on `cpu`."""
    if cpu is None or shutil.which("taskset") is None:
        return list(cmd)
    return ["taskset", "-c", str(cpu), *cmd]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError):
            if http_get(url, 1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples in Prometheus text whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """`median (min-max, n=N)` for a table cell."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return (
        f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))}, n={len(values)})"
    )


def write_summary(path: str | None, rows: list[dict[str, str]]) -> None:
    """Rows for bench/run_all.py's table: bench, figure, value, goal."""
    if path:
        Path(path).write_text(json.dumps(rows, indent=1))


# -- paced HTTP load in a child process -----------------------------------------------------------


def _paced_client(
    url: str,
    rate: float,
    seconds: float,
    keepalive: bool,
    expect: bytes | None,
    answered: Any,
    failed: Any,
    cpu: int | None,
) -> None:
    """Issue GET `url` at `rate`/s (open loop, at most `rate * seconds` requests), counting
    answers that are 200 and contain `expect`. Stops by itself; SIGTERM ends it sooner."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    import aiohttp
    import uvloop

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=256, force_close=not keepalive)
        in_flight = asyncio.Semaphore(256)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> None:
                try:
                    async with (
                        in_flight,
                        session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response,
                    ):
                        body = await response.read()
                        good = response.status == 200 and (expect is None or expect in body)
                except (aiohttp.ClientError, OSError, TimeoutError):
                    good = False
                with (answered if good else failed).get_lock():
                    (answered if good else failed).value += 1

            tasks: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            for i in range(int(rate * seconds)):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=10)

    uvloop.run(main())


class PacedLoad:
    """A child process running `_paced_client`; `answered`/`failed` are live counts."""

    def __init__(
        self,
        url: str,
        rate: float,
        seconds: float,
        *,
        keepalive: bool,
        expect: bytes | None,
        cpu: int | None,
    ) -> None:
        ctx = multiprocessing.get_context("fork")
        self._answered = ctx.Value("q", 0)
        self._failed = ctx.Value("q", 0)
        self.proc = ctx.Process(
            target=_paced_client,
            args=(url, rate, seconds, keepalive, expect, self._answered, self._failed, cpu),
            daemon=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def start(self) -> None:
        self.proc.start()

    def answered(self) -> int:
        return int(self._answered.value)

    def failed(self) -> int:
        return int(self._failed.value)

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)


# -- the probers ------------------------------------------------------------------------------


class Prober(Protocol):
    label: str

    def start(self) -> None: ...
    def pid(self) -> int: ...
    def done(self) -> tuple[int, int]: ...  # (probes succeeded, probes failed) so far
    def stop(self) -> None: ...


BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      method: GET
      valid_status_codes: [200]
      preferred_ip_protocol: ip4
"""


class BlackboxProber:
    """blackbox_exporter pinned to the prober core, driven through /probe by a paced load
    generator in another process; a probe is done when /probe answers probe_success 1."""

    label = "blackbox_exporter 0.23"

    def __init__(self, target_url: str, rate: float, seconds: float, workdir: Path) -> None:
        self.target_url = target_url
        self.rate = rate
        self.seconds = seconds
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.load: PacedLoad | None = None

    def start(self) -> None:
        config = self.workdir / "blackbox.yml"
        config.write_text(BLACKBOX_CONFIG)
        self.proc = subprocess.Popen(
            pinned(
                [
                    BLACKBOX,
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                PROBER_CPU if two_cores() else None,
            ),
            stdout=subprocess.DEVNULL,
            stderr=(self.workdir / "blackbox.log").open("wb"),
        )
        wait_http(f"http://127.0.0.1:{self.port}/-/healthy", proc=self.proc)
        probe = f"http://127.0.0.1:{self.port}/probe?module=http_2xx&target={self.target_url}/"
        status, body = http_get(probe)
        if status != 200 or b"probe_success 1" not in body:
            raise RuntimeError(f"blackbox_exporter probe failed: {status} {body[:500]!r}")
        # The load generator holds keep-alive connections to the exporter, as Prometheus does.
        self.load = PacedLoad(
            probe,
            self.rate,
            self.seconds,
            keepalive=True,
            expect=b"probe_success 1",
            cpu=SIDE_CPU if two_cores() else None,
        )
        self.load.start()

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def done(self) -> tuple[int, int]:
        assert self.load is not None
        return self.load.answered(), self.load.failed()

    def stop(self) -> None:
        if self.load is not None:
            self.load.stop()
        if self.proc is not None:
            stop_process(self.proc)


def failsight_config(
    target_url: str,
    port: int,
    *,
    journeys: int,
    keepalive: bool,
    interval: str = "1s",
) -> str:
    """An agent config: `journeys` one-step journeys (GET /, expect 200) against one site."""
    lines = [
        "agent:",
        "  vantage: bench",
        f"  listen: 127.0.0.1:{port}",
        f"  keepalive: {'true' if keepalive else 'false'}",
        "sites:",
        "  - name: bench",
        "    role: primary",
        f"    base_url: {target_url}",
        "journeys:",
    ]
    for i in range(journeys):
        lines += [
            f"  - name: probe{i:03d}",
            f"    interval: {interval}",
            "    timeout: 5s",
            "    steps:",
            "      - name: get",
            "        method: GET",
            "        path: /",
            "        expect: {status: 200}",
        ]
    return "\n".join(lines) + "\n"


class FailsightProber:
    """`failsight run` pinned to the prober core; probes done come from its own /metrics."""

    def __init__(
        self,
        target_url: str,
        workdir: Path,
        *,
        keepalive: bool,
        journeys: int = 200,
        log_level: str | None = None,
        launcher: Sequence[str] | None = None,
        variant: str = "",
        tree: Path | None = None,
    ) -> None:
        self.keepalive = keepalive
        # Another checkout of the code (the code before a change), run with this venv: its
        # directory first on the path, and as the working directory (`-m` looks there first).
        self.tree = tree
        if tree is not None and launcher is None:
            launcher = [str(ROOT / ".venv" / "bin" / "python"), "-m", "failsight"]
        self.log_level = log_level
        # What runs `failsight`'s CLI: a profiling script may launch it with patches applied.
        self.launcher = list(launcher or [str(FAILSIGHT)])
        name = "failsight before" if tree is not None else "failsight"
        self.label = f"{name}, {'keep-alive' if keepalive else 'fresh connection'}" + (
            f", --log-level {log_level}" if log_level else ""
        )
        if variant:
            self.label += f", {variant}"
        self.workdir = workdir
        self.port = free_port()
        suffix = f"{'ka' if keepalive else 'fresh'}{log_level or ''}{variant.replace(' ', '_')}"
        suffix += "-before" if tree is not None else ""
        self.config = workdir / f"failsight-{suffix}.yaml"
        self.config.write_text(
            failsight_config(target_url, self.port, journeys=journeys, keepalive=keepalive)
        )
        self.log = workdir / f"failsight-{suffix}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        level = ["--log-level", self.log_level] if self.log_level else []
        env = None
        if self.tree is not None:
            env = {**os.environ, "PYTHONPATH": str(self.tree)}
        # The per-run JSON log lines go to /dev/null: formatting them is counted, a reader is not.
        self.proc = subprocess.Popen(
            pinned(
                [*self.launcher, *level, "run", "--config", str(self.config)],
                PROBER_CPU if two_cores() else None,
            ),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
            cwd=self.tree,
            env=env,
        )
        wait_http(f"http://127.0.0.1:{self.port}/readyz", proc=self.proc)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.port}/metrics")[1].decode()

    def done(self) -> tuple[int, int]:
        text = self.metrics()
        ok = metric_sum(text, "failsight_journey_runs_total", result="success")
        bad = metric_sum(text, "failsight_journey_runs_total", result="failure")
        return int(ok), int(bad)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


class BareAiohttpProber:
    """The floor: a bare aiohttp client (uvloop) doing the same GETs at the same rate, pinned
    to the prober core, no scheduler, no results, no telemetry."""

    def __init__(self, target_url: str, rate: float, seconds: float, *, keepalive: bool) -> None:
        self.label = f"bare aiohttp client, {'keep-alive' if keepalive else 'fresh connection'}"
        self.load = PacedLoad(
            target_url + "/",
            rate,
            seconds,
            keepalive=keepalive,
            expect=None,
            cpu=PROBER_CPU if two_cores() else None,
        )

    def start(self) -> None:
        self.load.start()

    def pid(self) -> int:
        return self.load.pid

    def done(self) -> tuple[int, int]:
        return self.load.answered(), self.load.failed()

    def stop(self) -> None:
        self.load.stop()


@dataclass
class Window:
    label: str
    cpu_s: float
    cpu_wall_s: float
    probes: int
    failures: int
    count_wall_s: float

    @property
    def probes_per_s(self) -> float:
        return self.probes / self.count_wall_s

    @property
    def cpu_ms_per_probe(self) -> float:
        # Rates, not totals: the CPU window and the counting window differ by a scrape or so.
        if not self.probes:
            return float("nan")
        return self.cpu_s / self.cpu_wall_s / self.probes_per_s * 1000


def _count(prober: Prober) -> tuple[int, int, float]:
    before = time.monotonic()
    ok, bad = prober.done()
    return ok, bad, (before + time.monotonic()) / 2


def measure(prober: Prober, warmup: float, window: float) -> Window:
    """Start, warm up, then CPU and probes done over `window` seconds; always stops."""
    try:
        prober.start()
        time.sleep(warmup)
        # Count before the CPU window opens and after it closes: the failsight scrape that does
        # the counting (and its render CPU) stays outside the CPU window.
        ok0, bad0, n0 = _count(prober)
        cpu0, t0 = cpu_seconds(prober.pid()), time.monotonic()
        time.sleep(window)
        cpu1, t1 = cpu_seconds(prober.pid()), time.monotonic()
        ok1, bad1, n1 = _count(prober)
    finally:
        prober.stop()
    return Window(prober.label, cpu1 - cpu0, t1 - t0, ok1 - ok0, bad1 - bad0, n1 - n0)


@dataclass
class Outcome:
    windows: dict[str, list[Window]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)  # to blackbox_exporter
    to_bare: dict[str, list[float]] = field(default_factory=dict)  # to the bare client, same mode


def compare(
    target_url: str,
    *,
    rate: float,
    warmup: float,
    window: float,
    repeat: int,
    bare: bool,
    extra_log_level: str | None,
    workdir: Path,
    baseline_tree: Path | None = None,
) -> Outcome:
    outcome = Outcome()
    for r in range(repeat):
        probers: list[Prober] = [
            BlackboxProber(target_url, rate, warmup + window + 5, workdir),
            FailsightProber(target_url, workdir, keepalive=False, journeys=int(rate)),
            FailsightProber(target_url, workdir, keepalive=True, journeys=int(rate)),
        ]
        if baseline_tree is not None:
            probers += [
                FailsightProber(
                    target_url, workdir, keepalive=k, journeys=int(rate), tree=baseline_tree
                )
                for k in (False, True)
            ]
        if extra_log_level:
            probers += [
                FailsightProber(
                    target_url,
                    workdir,
                    keepalive=k,
                    journeys=int(rate),
                    log_level=extra_log_level,
                )
                for k in (False, True)
            ]
        if bare:
            probers += [
                BareAiohttpProber(target_url, rate, warmup + window + 5, keepalive=k)
                for k in (False, True)
            ]
        # Rotate the order each repeat so no prober always runs first (cold caches, drift).
        probers = probers[r % len(probers) :] + probers[: r % len(probers)]
        by_label: dict[str, Window] = {}
        for prober in probers:
            w = measure(prober, warmup, window)
            by_label[w.label] = w
            outcome.windows.setdefault(w.label, []).append(w)
            print(
                f"  repeat {r + 1}/{repeat} {w.label:52} {w.probes_per_s:6.1f} probes/s "
                f"({w.failures} failed), CPU {w.cpu_s:6.2f} s = "
                f"{w.cpu_ms_per_probe:.3f} ms/probe",
                flush=True,
            )
        base = by_label[BlackboxProber.label].cpu_ms_per_probe
        for label, w in by_label.items():
            if label.startswith("failsight") or label.startswith("bare"):
                outcome.ratios.setdefault(label, []).append(w.cpu_ms_per_probe / base)
            floor = by_label.get(_bare_label(label))
            if label.startswith("failsight") and floor is not None:
                outcome.to_bare.setdefault(label, []).append(
                    w.cpu_ms_per_probe / floor.cpu_ms_per_probe
                )
    return outcome


def _bare_label(label: str) -> str:
    """The bare client's label for the connection mode of a failsight prober's label."""
    mode = "keep-alive" if "keep-alive" in label else "fresh connection"
    return f"bare aiohttp client, {mode}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=200.0, help="probes per second")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--window", type=float, default=30.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-bare", dest="bare", action="store_false", help="skip the aiohttp floor")
    p.add_argument(
        "--extra-log-level",
        choices=["warning", "error"],
        help="also run failsight with this --log-level (no per-run log line)",
    )
    p.add_argument(
        "--baseline-tree",
        type=Path,
        metavar="DIR",
        help="also run the failsight code in DIR (e.g. a worktree of the commit before a "
        "change) with this venv, keep-alive and fresh, taking turns with the others",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: one short repeat")
    p.add_argument("--summary-json", help="write summary rows here (for bench/run_all.py)")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.window, args.repeat = 2.0, 4.0, 1
    if not Path(BLACKBOX).exists():
        raise SystemExit(f"{BLACKBOX} not found: apt-get install -y prometheus-blackbox-exporter")
    if two_cores():
        os.sched_setaffinity(0, {SIDE_CPU})
    print(
        f"probe cost at {args.rate:.0f} probes/s: {args.warmup:.0f}s warm-up, "
        f"{args.window:.0f}s window, {args.repeat} repeat(s); prober pinned to CPU {PROBER_CPU}, "
        f"target + load generator on CPU {SIDE_CPU}: {two_cores()}",
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory(prefix="failsight-bench-bb-") as tmp,
        Target(cpu=SIDE_CPU if two_cores() else None) as url,
    ):
        wait_http(url + "/")
        outcome = compare(
            url,
            rate=args.rate,
            warmup=args.warmup,
            window=args.window,
            repeat=args.repeat,
            bare=args.bare,
            extra_log_level=args.extra_log_level,
            workdir=Path(tmp),
            baseline_tree=args.baseline_tree.resolve() if args.baseline_tree else None,
        )
    rows = report(outcome, args.rate)
    write_summary(args.summary_json, rows)


def report(outcome: Outcome, rate: float) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    print(f"\n{'prober':52} {'probes/s':>16} {'CPU ms/probe':>28} {'CPU s/1000 probes':>18}")
    for label, windows in outcome.windows.items():
        per_probe = [w.cpu_ms_per_probe for w in windows]
        rates = [w.probes_per_s for w in windows]
        print(
            f"{label:52} {statistics.median(rates):16.1f} {spread(per_probe):>28} "
            f"{statistics.median(per_probe):18.3f}"
        )
        rows.append(
            {
                "bench": "blackbox",
                "figure": f"CPU ms/probe at {rate:.0f}/s: {label}",
                "value": spread(per_probe),
                "goal": "",
            }
        )
    print(
        "\nratio to blackbox_exporter's CPU per probe, same repeat (goal for failsight: "
        "<= 0.45 keep-alive, <= 0.6 fresh); then each repeat's"
    )
    for label, ratios in outcome.ratios.items():
        each = " ".join(f"{r:.2f}" for r in ratios)
        print(f"  {label:52} {spread(ratios, '{:.2f}'):>24}   [{each}]")
        goal = _goal(label)
        rows.append(
            {
                "bench": "blackbox",
                "figure": f"ratio to blackbox: {label}",
                "value": spread(ratios, "{:.2f}"),
                "goal": f"<= {goal}" if goal else "(floor)",
                "met": ("yes" if statistics.median(ratios) <= goal else "no") if goal else "",
            }
        )
    if outcome.to_bare:
        print("\nratio to the bare aiohttp client, same connection mode, same repeat")
        for label, ratios in outcome.to_bare.items():
            each = " ".join(f"{r:.2f}" for r in ratios)
            print(f"  {label:52} {spread(ratios, '{:.2f}'):>24}   [{each}]")
            rows.append(
                {
                    "bench": "blackbox",
                    "figure": f"ratio to the bare client: {label}",
                    "value": spread(ratios, "{:.2f}"),
                    "goal": "<= 1.2" if "keep-alive" in label else "",
                }
            )
    return rows


def _goal(label: str) -> float | None:
    """Issue 16's goal for a prober's ratio to blackbox_exporter (None: a reference)."""
    if not label.startswith("failsight"):
        return None
    return 0.45 if "keep-alive" in label else 0.6


if __name__ == "__main__":
    main(sys.argv[1:])
