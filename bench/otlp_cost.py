"""What the OTLP path costs: CPU per five-step journey step with OTLP off and on, old code and new.

Run: `.venv/bin/python -m bench.otlp_cost` (`--quick` for a smoke run). Prints a table; nothing is
asserted. Each measurement is a fresh child process running bench/journeys.py's `throughput`
(50 journeys back to back against a loopback target, keep-alive) pinned to CPU 0; with OTLP on,
every result also goes to a real OtlpSink sending metrics, traces and logs to one gRPC collector
(the test suite's receiver) in another process. The target, the collector and this script share
CPU 1, and their CPU is not counted: a child's CPU is its own process time, export threads
included. "before" is the code at `--baseline-tree` (default /tmp/before, a checkout from before the
change) on PYTHONPATH, "after" this tree; within each repeat the four runs (before off/on, after
off/on) alternate, so background load touches them alike, and each ratio (on / off) is taken
within a repeat. Then, per repeat and code, the sink alone: `--sink-rate` real five-step
results a second (each with its own ids) handed to an OtlpSink for `--seconds` and the sink
closed, in a process that does nothing else: its CPU per run (all threads) and handle()'s on
the calling thread, with no probing to share the core with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.blackbox import PROBER_CPU, SIDE_CPU, pinned, spread, two_cores, write_summary

ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = 50


def child(url: str, otlp: str | None, seconds: float) -> None:
    """One measurement, in the code that PYTHONPATH names; prints one JSON line."""
    from bench.journeys import throughput
    from failsight.agent.cli import run_async

    counts: dict[str, int] = {}
    if otlp is not None:
        # What the sink sent and dropped, read as it closes (throughput() closes it).
        from failsight.agent import otlp as sink_module

        close = sink_module.OtlpSink.close

        def counting_close(self: sink_module.OtlpSink, timeout: float) -> None:
            close(self, timeout)
            for (path, result), n in self.export_counts().items():
                counts[f"{path.rsplit(':', 1)[-1]} {result}"] = n

        sink_module.OtlpSink.close = counting_close  # type: ignore[method-assign]
    row = run_async(throughput(url, seconds, CONCURRENCY, True, otlp=otlp))
    print(json.dumps({**row, "exports": counts}), flush=True)


def sink_only(url: str, otlp: str, seconds: float, rate: float) -> None:
    """The sink alone: CPU per run of handing `rate` five-step results a second to an
    OtlpSink for `seconds`, then closing it (everything sent), with no probing in the
    process. Each result is a real run's with its own ids, as consecutive runs have."""
    import asyncio
    import dataclasses
    import secrets
    import time

    from bench.journeys import five_step_journey
    from failsight.agent.otlp import OtlpSink
    from failsight.agent.otlp_config import OtlpCollectorConfig, build_resource
    from failsight.agent.scheduler import run_check
    from failsight.core.check import ProbeContext
    from failsight.core.http import new_session
    from failsight.probes.journey import JourneyCheck

    async def one_run() -> Any:
        async with new_session(keepalive=True) as http:
            check = JourneyCheck(five_step_journey(), site="s0", base_url=url)
            return await run_check(check, ProbeContext(vantage="bench", http=http))

    template = asyncio.run(one_run())
    runs = int(seconds * rate)
    results = [
        dataclasses.replace(
            template,
            run_id=secrets.token_hex(8),
            trace_id=secrets.token_hex(16),
            span_id=secrets.token_hex(8),
            steps=tuple(
                dataclasses.replace(s, span_id=secrets.token_hex(8)) for s in template.steps
            ),
        )
        for _ in range(runs)
    ]
    collector = OtlpCollectorConfig.model_validate(
        {"name": "bench", "endpoint": otlp, "protocol": "grpc", "export_interval": "1s"}
    )
    sink = OtlpSink(
        [collector], resource=build_resource("bench", None, None, "bench"), logs_over_otlp=True
    )
    cpu0, start = time.process_time(), time.monotonic()
    loop_cpu = 0.0
    for i, result in enumerate(results):
        t = time.thread_time()
        sink.handle(result)
        loop_cpu += time.thread_time() - t
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    sink.close(10.0)
    cpu = time.process_time() - cpu0
    counts = {f"{p.rsplit(':', 1)[-1]} {r}": n for (p, r), n in sink.export_counts().items()}
    row = {"cpu_us_per_run": cpu / runs * 1e6, "handle_us_per_run": loop_cpu / runs * 1e6}
    print(json.dumps({**row, "exports": counts}), flush=True)


def measure(root: Path, url: str, otlp: str | None, seconds: float, *extra: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--url", url]
    cmd += ["--seconds", str(seconds), *extra]
    if otlp is not None:
        cmd += ["--otlp", otlp]
    cpu = PROBER_CPU if two_cores() else None
    out = subprocess.run(
        pinned(cmd, cpu), env=env, cwd=root, check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--baseline-tree", default="/tmp/before", help="the old code's checkout")
    p.add_argument("--after", default=str(ROOT), help="the new code's checkout")
    p.add_argument("--quick", action="store_true", help="smoke run: one short repeat")
    p.add_argument("--summary-json", help="write summary rows here (for bench/run_all.py)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--otlp", help=argparse.SUPPRESS)
    p.add_argument("--sink-rate", type=float, default=1000.0, help="runs/s, sink alone")
    p.add_argument("--sink-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        if args.sink_only:
            sink_only(args.url, args.otlp, args.seconds, args.sink_rate)
        else:
            child(args.url, args.otlp, args.seconds)
        return
    if args.quick:
        args.seconds, args.repeat = 2.0, 1
    from bench.journeys import _receiver_process
    from bench.target import Target

    if two_cores():
        # The collector (forked from here) and this script stay off the measured core.
        os.sched_setaffinity(0, {SIDE_CPU})
    variants = {"before": Path(args.baseline_tree), "after": Path(args.after)}
    variants = {k: v for k, v in variants.items() if (v / "agent" / "otlp.py").exists()}
    cpu: dict[tuple[str, bool], list[float]] = {}
    alone: dict[str, list[dict[str, Any]]] = {}
    with Target(cpu=SIDE_CPU if two_cores() else None) as url, _receiver_process() as endpoint:
        print(
            f"target {url}, collector {endpoint}; children pinned to CPU {PROBER_CPU}: "
            f"{two_cores()}; {args.repeat} x {args.seconds:.0f} s per setting",
            flush=True,
        )
        for i in range(args.repeat):
            for name, root in variants.items():
                for otlp in (False, True):
                    row = measure(root, url, endpoint if otlp else None, args.seconds)
                    cpu.setdefault((name, otlp), []).append(row["cpu_ms_per_step"])
                    print(
                        f"  repeat {i + 1} {name} otlp={'on' if otlp else 'off'}: "
                        f"{row['cpu_ms_per_step']:.3f} CPU ms/step, "
                        f"{row['steps_per_s']:.0f} steps/s"
                        + (f", exports {row['exports']}" if otlp else ""),
                        flush=True,
                    )
                rate = ["--sink-only", "--sink-rate", str(args.sink_rate)]
                row = measure(root, url, endpoint, args.seconds, *rate)
                alone.setdefault(name, []).append(row)
                print(
                    f"  repeat {i + 1} {name} sink alone: {row['cpu_us_per_run']:.0f} us CPU "
                    f"per run, handle() {row['handle_us_per_run']:.1f} us, "
                    f"exports {row['exports']}",
                    flush=True,
                )
    rows = []
    print("\n| code | CPU ms/step, OTLP off | CPU ms/step, OTLP on | ratio on/off |")
    print("|---|---|---|---|")
    for name in variants:
        off, on = cpu[(name, False)], cpu[(name, True)]
        ratios = [b / a for a, b in zip(off, on, strict=True)]
        print(f"| {name} | {spread(off)} | {spread(on)} | {spread(ratios, '{:.2f}')} |")
        rows.append(
            {
                "bench": "otlp_cost",
                "figure": f"OTLP on/off, CPU per journey step ({name})",
                "value": spread(ratios, "{:.2f}"),
                "goal": "<= 1.3" if name == "after" else "",
            }
        )
    print(
        f"\nThe sink alone ({args.sink_rate:.0f} five-step runs/s, all sent): CPU per run, "
        "all threads | handle() on the caller's thread"
    )
    for name, got in alone.items():
        total = [r["cpu_us_per_run"] for r in got]
        handle = [r["handle_us_per_run"] for r in got]
        print(f"  {name}: {spread(total, '{:.0f}')} us | {spread(handle, '{:.1f}')} us")
        rows.append(
            {
                "bench": "otlp_cost",
                "figure": f"OTLP sink alone, CPU us per five-step run ({name})",
                "value": spread(total, "{:.0f}"),
                "goal": "",
            }
        )
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main()
