"""Journey benchmark: steps/s on one core, CPU per step, timing error, RSS (issue 2 figures).

Run: `.venv/bin/python -m bench.journeys` (or `make bench`). Prints a table; nothing is asserted.
The agent side is pinned to CPU 0 and the target to CPU 1 when the machine has two cores.
The timing error at 200 concurrent journeys is measured `--timing-runs` times (5), each run in a
fresh process; with `--baseline-tree DIR` the code in DIR (the code before a change, run with
this venv) takes turns with this tree's in the same run. `--timing-only` skips the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.target import Target
from failsight.agent.cli import run_async
from failsight.agent.config import Config
from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.probes.journey import JourneyCheck, JourneyConfig


def five_step_journey(name: str = "bench", delay_ms: int = 0) -> JourneyConfig:
    query = {"delay_ms": str(delay_ms)} if delay_ms else {}
    steps: list[dict[str, Any]] = [
        {
            "name": f"step{i}",
            "method": "POST" if i == 0 else "GET",
            "path": f"/s{i}",
            "query": query,
            "expect": {"status": 200, "json": [{"path": "$.ok", "equals": True}]},
            **({"extract": {"item": "$.id"}} if i == 0 else {}),
        }
        for i in range(5)
    ]
    steps[1]["path"] = "/s1/{{item}}"
    return JourneyConfig.model_validate(
        {"name": name, "interval": "10s", "timeout": "30s", "steps": steps}
    )


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def throughput(
    url: str, seconds: float, concurrency: int, keepalive: bool, otlp: str | None = None
) -> dict[str, float]:
    """Journeys back to back with `concurrency` workers; steps/s, CPU ms per step, loop lag.

    With `otlp` (a gRPC collector endpoint), every result also goes to a real OtlpSink, as in
    the agent: its export threads' CPU is in the process time measured.
    """
    journey = five_step_journey()
    sink = None
    if otlp is not None:
        from failsight.agent.otlp import OtlpSink
        from failsight.agent.otlp_config import OtlpCollectorConfig, build_resource

        collector = OtlpCollectorConfig.model_validate(
            {"name": "bench", "endpoint": otlp, "protocol": "grpc", "export_interval": "1s"}
        )
        sink = OtlpSink(
            [collector], resource=build_resource("bench", None, None, "bench"), logs_over_otlp=True
        )
    async with new_session(keepalive=keepalive) as http:
        ctx = ProbeContext(vantage="bench", http=http)
        checks = [JourneyCheck(journey, site=f"s{i}", base_url=url) for i in range(concurrency)]
        for c in checks:  # warm-up
            await run_check(c, ctx)
        steps = 0
        lag = 0.0
        stop_at = time.monotonic() + seconds

        async def worker(check: JourneyCheck) -> None:
            nonlocal steps
            while time.monotonic() < stop_at:
                result = await run_check(check, ctx)
                steps += len(result.steps)
                assert result.ok, result.summary()
                if sink is not None:
                    sink.handle(result)

        async def lag_monitor() -> None:
            nonlocal lag
            while time.monotonic() < stop_at:
                t = time.monotonic()
                await asyncio.sleep(0.01)
                lag = max(lag, time.monotonic() - t - 0.01)

        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.gather(lag_monitor(), *(worker(c) for c in checks))
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    if sink is not None:
        sink.close(5.0)
    return {
        "steps_per_s": steps / wall,
        "cpu_ms_per_step": cpu / steps * 1000,
        "cpu_share": cpu / wall,
        "max_loop_lag_ms": lag * 1000,
    }


async def timing_error(url: str, journeys: int, delay_ms: int, seconds: float) -> dict[str, float]:
    """Measured step latency minus the delay the target injects, with `journeys` journeys in
    flight at once, started at random offsets as the scheduler does (not in lockstep)."""
    import random

    journey = five_step_journey(delay_ms=delay_ms)
    errors: list[float] = []
    async with new_session() as http:
        ctx = ProbeContext(vantage="bench", http=http)
        checks = [JourneyCheck(journey, site=f"s{i}", base_url=url) for i in range(journeys)]
        stop_at = time.monotonic() + seconds
        measure_from = time.monotonic() + 1.0  # after every connection is open

        async def worker(check: JourneyCheck) -> None:
            await asyncio.sleep(random.uniform(0, 5 * delay_ms / 1000))
            while time.monotonic() < stop_at:
                result = await run_check(check, ctx)
                if time.monotonic() > measure_from:
                    errors.extend(s.duration * 1000 - delay_ms for s in result.steps)

        cpu0 = time.process_time()
        await asyncio.gather(*(worker(c) for c in checks))
        cpu = time.process_time() - cpu0
    errors.sort()
    return {
        "p50_ms": errors[len(errors) // 2],
        "p99_ms": errors[int(len(errors) * 0.99)],
        "samples": float(len(errors)),
        "cpu_share": cpu / seconds,
    }


async def footprint(url: str, journeys: int, seconds: float) -> dict[str, float]:
    """RSS of a real Agent with `journeys` five-step journeys configured and running."""
    from failsight.agent.runtime import Agent

    gc.collect()
    before = rss_mb()
    data: dict[str, Any] = {
        "agent": {"vantage": "bench", "listen": "127.0.0.1:0"},
        "sites": [{"name": "bench", "role": "primary", "base_url": url}],
        "journeys": [
            {
                **five_step_journey(f"j{i}").model_dump(by_alias=True, exclude_defaults=True),
                "interval": "2s",
            }
            for i in range(journeys)
        ],
    }
    config = Config.model_validate(data)
    agent = Agent(config)
    task = asyncio.create_task(agent.run(install_signals=False))
    await asyncio.sleep(seconds / 2)
    middle = rss_mb()
    await asyncio.sleep(seconds / 2)
    after = rss_mb()
    runs = agent.scheduler.runs_started if agent.scheduler else 0
    agent.stop()
    await task
    return {"rss_start_mb": before, "rss_mid_mb": middle, "rss_end_mb": after, "runs": float(runs)}


TIMING_GOAL_MS = 2.0
ROOT = Path(__file__).resolve().parent.parent

# One timing-error run in a fresh process of a given tree: the tree's own `timing_error`, so a
# baseline tree is measured by the harness it shipped with.
_TIMING_CHILD = (
    "import json, sys\n"
    "from bench.journeys import timing_error\n"
    "from failsight.agent.cli import run_async\n"
    "url, n, delay, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])\n"
    "print(json.dumps(run_async(timing_error(url, n, delay, seconds))))\n"
)


def timing_run(url: str, journeys: int, seconds: float, tree: Path) -> dict[str, float]:
    """`timing_error` with 100 ms injected, in a child running the code in `tree` (pinned as
    this process is: the child inherits the affinity)."""
    out = subprocess.run(
        [sys.executable, "-c", _TIMING_CHILD, url, str(journeys), "100", str(seconds)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    row: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return row


def timing_runs(url: str, journeys: int, seconds: float, runs: int, baseline: Path | None) -> None:
    """The timing-error figure over `runs` runs: each run's p99 and how many meet the goal;
    with a baseline tree, its run and this tree's take turns (first one, then the other)."""
    trees = {"this tree": ROOT, **({f"baseline {baseline}": baseline} if baseline else {})}
    p99s: dict[str, list[float]] = {name: [] for name in trees}
    for i in range(runs):
        order = list(trees.items())
        if i % 2:
            order.reverse()
        for name, tree in order:
            t = timing_run(url, journeys, seconds, tree)
            p99s[name].append(t["p99_ms"])
            print(
                f"  run {i + 1}/{runs} {name}: timing error p50 {t['p50_ms']:.2f} ms, p99 "
                f"{t['p99_ms']:.2f} ms over {t['samples']:.0f} steps; agent CPU "
                f"{t['cpu_share'] * 100:.0f}% of a core",
                flush=True,
            )
    for name, values in p99s.items():
        met = sum(v <= TIMING_GOAL_MS for v in values)
        print(
            f"timing error p99, {journeys} concurrent journeys, {name}: "
            f"{' '.join(f'{v:.2f}' for v in values)} ms; median {statistics.median(values):.2f}; "
            f"<= {TIMING_GOAL_MS:g} ms in {met} of {len(values)} runs"
        )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timing-runs", type=int, default=5, help="runs of the 200-journey error")
    p.add_argument("--timing-only", action="store_true", help="only the timing-error runs")
    p.add_argument("--baseline-tree", type=Path, metavar="DIR", help="also time the code in DIR")
    p.add_argument("--footprint-seconds", type=float, default=30.0)
    p.add_argument("--footprint-only", dest="only_footprint", action="store_true")
    p.add_argument("--url", help="with --footprint-only: the running target")
    args = p.parse_args()
    if args.only_footprint:
        footprint_main(args.url, args.footprint_seconds)
        return
    two_cores = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    if two_cores:
        os.sched_setaffinity(0, {0})
    baseline = args.baseline_tree.resolve() if args.baseline_tree else None
    with Target(cpu=1 if two_cores else None) as url:
        time.sleep(0.5)
        print(f"target {url}; agent pinned to one core: {two_cores}")
        if args.timing_only:
            timing_runs(url, 200, args.seconds, args.timing_runs, baseline)
            return
        for keepalive in (True, False):
            rows = [
                run_async(throughput(url, args.seconds, 50, keepalive)) for _ in range(args.repeat)
            ]
            sps = [r["steps_per_s"] for r in rows]
            cpu = [r["cpu_ms_per_step"] for r in rows]
            print(
                f"throughput keepalive={keepalive}: steps/s median {statistics.median(sps):.0f} "
                f"(min {min(sps):.0f}, max {max(sps):.0f}); CPU ms/step median "
                f"{statistics.median(cpu):.3f} (min {min(cpu):.3f}, max {max(cpu):.3f}); "
                f"max loop lag {max(r['max_loop_lag_ms'] for r in rows):.1f} ms"
            )
        with _receiver_process() as endpoint:
            pairs = []
            for _ in range(args.repeat):
                plain = run_async(throughput(url, args.seconds, 50, True))
                with_otlp = run_async(throughput(url, args.seconds, 50, True, otlp=endpoint))
                pairs.append((plain["cpu_ms_per_step"], with_otlp["cpu_ms_per_step"]))
            ratios = [b / a for a, b in pairs]
            print(
                "OTLP overhead (metrics, traces and logs to a gRPC collector in another process):"
                f" CPU ms/step {statistics.median(a for a, _ in pairs):.3f} without, "
                f"{statistics.median(b for _, b in pairs):.3f} with; ratio median "
                f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
            )
        redaction(url, args.seconds, args.repeat)
        timing_runs(url, 200, args.seconds, args.timing_runs, baseline)
        for n in (50, 1000):
            t = run_async(timing_error(url, n, 100, args.seconds))
            print(
                f"timing error, {n} concurrent journeys (100 ms injected per step): "
                f"p50 {t['p50_ms']:.2f} ms, p99 {t['p99_ms']:.2f} ms over "
                f"{t['samples']:.0f} steps; agent CPU {t['cpu_share'] * 100:.0f}% of a core"
            )
        if args.only_footprint is False:
            # A fresh process, so earlier sections' allocations do not count.
            import subprocess
            import sys

            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.journeys",
                    "--footprint-only",
                    "--footprint-seconds",
                    str(args.footprint_seconds),
                    "--url",
                    url,
                ],
                check=True,
            )


def redaction(url: str, seconds: float, repeat: int) -> None:
    """What scrubbing every result of the process's secrets costs: journeys with no secret
    known against 20 config secrets and 32 remembered IdP tokens, interleaved; then one
    failed result with a 1 KB message, redacted alone."""
    import secrets as random_secrets

    from failsight.core.redact import REDACTOR, redact_result
    from failsight.core.results import Reason, Result, StepResult

    def load() -> None:
        REDACTOR.add(*(random_secrets.token_urlsafe(24) for _ in range(20)))
        for _ in range(32):
            REDACTOR.remember(random_secrets.token_urlsafe(600))

    pairs = []
    for _ in range(repeat):
        REDACTOR.clear()
        plain = run_async(throughput(url, seconds, 50, True))
        load()
        scrubbed = run_async(throughput(url, seconds, 50, True))
        pairs.append((plain["cpu_ms_per_step"], scrubbed["cpu_ms_per_step"]))
    ratios = [b / a for a, b in pairs]
    print(
        "redaction (20 config secrets + 32 IdP tokens known): CPU ms/step "
        f"{statistics.median(a for a, _ in pairs):.3f} without, "
        f"{statistics.median(b for _, b in pairs):.3f} with; ratio median "
        f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    message = "HTTP 401: " + "x" * 1000
    failed = Result(
        check="journey/bench/s0",
        kind="journey",
        target="bench",
        ok=False,
        started_at=0.0,
        duration=0.1,
        run_id="r",
        reason=Reason.AUTH,
        message=message,
        steps=tuple(
            StepResult(name=f"step{i}", ok=False, duration=0.01, message=message) for i in range(5)
        ),
    )
    samples = []
    for _ in range(repeat * 5):
        t = time.perf_counter()
        for _ in range(200):
            redact_result(failed)
        samples.append((time.perf_counter() - t) / 200 * 1e6)
    print(
        f"redaction of one failed 5-step result (6 x 1 KB of text): median "
        f"{statistics.median(samples):.0f} us (min {min(samples):.0f}, max {max(samples):.0f})"
    )
    REDACTOR.clear()


@contextlib.contextmanager
def _receiver_process() -> Iterator[str]:
    """A real OTLP/gRPC receiver (the test suite's) in a child process; yields its endpoint."""
    import multiprocessing

    from tests.fixtures.otlp_receiver import GrpcReceiver

    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe()

    def serve() -> None:
        receiver = GrpcReceiver()
        receiver.start()
        child.send(receiver.endpoint)
        child.recv()  # until told to stop
        receiver.stop()

    proc = context.Process(target=serve, daemon=True)
    proc.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(5)


def footprint_main(url: str, seconds: float) -> None:
    f = run_async(footprint(url, 200, seconds))
    print(
        f"footprint, 200 five-step journeys every 2s: RSS {f['rss_start_mb']:.1f} MB "
        f"before the agent, {f['rss_mid_mb']:.1f} MB at {seconds / 2:.0f}s, "
        f"{f['rss_end_mb']:.1f} MB at {seconds:.0f}s ({f['runs']:.0f} runs)"
    )


if __name__ == "__main__":
    main()
