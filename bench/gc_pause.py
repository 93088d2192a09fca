"""Garbage-collector pauses of a busy agent: how long a full collection stalls the event loop.

Run: `.venv/bin/python -m bench.gc_pause --baseline-tree DIR` (`--quick` for a smoke run).
Nothing is asserted. A child process runs a real `Agent` (as `failsight run` does: JSON log
lines to /dev/null, uvloop when installed) with 200 five-step journeys every 2 s against a
loopback target in another process, pinned to one core when there are two. After a settling
time it records every collection the interpreter makes (gc.callbacks) for a window, then times
five full collections forced one second apart: a full collection walks every tracked object,
so its pause is what any collection of the oldest generation costs whenever it comes.

With `--baseline-tree DIR` (a checkout of an older version, e.g. `git worktree add DIR REV`)
the old code runs in the same way, alternating with this tree, so both see the same machine.
The child is this file run by path with the tree as its working directory and PYTHONPATH:
`python -m` from this repository would import this tree's code whatever PYTHONPATH says.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
JOURNEYS = 200
INTERVAL = "2s"


def _config(url: str, journeys: int) -> dict[str, Any]:
    """bench/journeys.py's five-step journey, `journeys` times, as the config's plain data:
    the child, which may be older code, validates it with its own model."""
    from bench.journeys import five_step_journey

    journey = five_step_journey().model_dump(by_alias=True, exclude_defaults=True)
    return {
        "agent": {"vantage": "bench", "listen": "127.0.0.1:0"},
        "sites": [{"name": "bench", "role": "primary", "base_url": url}],
        "journeys": [
            {**journey, "name": f"j{i:04d}", "interval": INTERVAL, "timeout": "10s"}
            for i in range(journeys)
        ],
    }


async def _child(config: dict[str, Any], settle: float, window: float) -> dict[str, Any]:
    from failsight.agent import runtime
    from failsight.agent.config import Config
    from failsight.agent.logs import configure_logging

    configure_logging("info", stdout=True)  # stdout is /dev/null: formatted, never read
    agent = runtime.Agent(Config.model_validate(config))
    task = asyncio.create_task(agent.run(install_signals=False))
    while not agent.ready:
        await asyncio.sleep(0.05)
    # (generation, wall seconds, CPU seconds of this thread): the wall time is the loop's
    # stall; the CPU time leaves out what the machine's other processes took from the core.
    pauses: list[tuple[int, float, float]] = []
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[:] = time.perf_counter(), time.thread_time()
        else:
            pauses.append(
                (
                    info["generation"],
                    time.perf_counter() - started[0],
                    time.thread_time() - started[1],
                )
            )

    await asyncio.sleep(settle)
    gc.callbacks.append(on_gc)
    await asyncio.sleep(window)
    gc.callbacks.remove(on_gc)
    forced: list[float] = []
    forced_cpu: list[float] = []
    for _ in range(5):
        await asyncio.sleep(1.0)
        t, c = time.perf_counter(), time.thread_time()
        gc.collect()
        forced.append(time.perf_counter() - t)
        forced_cpu.append(time.thread_time() - c)
    tracked = len(gc.get_objects())
    agent.stop()
    await task
    full = [d for g, d, _ in pauses if g == 2]
    return {
        "settles_heap": hasattr(runtime, "settle_heap"),
        "collections": len(pauses),
        "full_collections": len(full),
        "full_max_ms": max(full, default=0.0) * 1000,
        "any_max_ms": max((d for _, d, _ in pauses), default=0.0) * 1000,
        "any_max_cpu_ms": max((c for _, _, c in pauses), default=0.0) * 1000,
        "forced_full_ms": statistics.median(forced) * 1000,
        "forced_full_cpu_ms": statistics.median(forced_cpu) * 1000,
        "tracked_objects": tracked,
        "frozen_objects": gc.get_freeze_count(),
    }


def child_main(args: argparse.Namespace) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    config = json.loads(Path(args.child).read_text())
    row = asyncio.run(_child(config, args.settle, args.window))
    Path(args.out).write_text(json.dumps(row))


def run_child(
    tree: Path, config: Path, args: argparse.Namespace, workdir: Path, cpu: int | None
) -> dict[str, Any]:
    from bench.blackbox import pinned

    out = workdir / "row.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(config),
        "--settle",
        str(args.settle),
        "--window",
        str(args.window),
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(pinned(cmd, cpu), cwd=tree, env=env, stdout=subprocess.DEVNULL, check=True)
    row: dict[str, Any] = json.loads(out.read_text())
    return row


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)  # the config file, in the child
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--baseline-tree", type=Path, help="an older checkout, run alternately")
    p.add_argument("--journeys", type=int, default=JOURNEYS)
    p.add_argument("--settle", type=float, default=15.0)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.child:
        child_main(args)
        return
    sys.path.insert(0, str(ROOT))
    from bench.blackbox import PROBER_CPU, SIDE_CPU, spread, two_cores, write_summary
    from bench.target import Target

    if args.quick:
        args.settle, args.window, args.repeat = 3.0, 5.0, 1
    trees = [("this tree", ROOT)]
    if args.baseline_tree is not None:
        trees.insert(0, ("baseline", args.baseline_tree.resolve()))
    pin = two_cores()
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    print(
        f"GC pauses: {args.journeys} five-step journeys every {INTERVAL}, {args.settle:.0f} s "
        f"settling, {args.window:.0f} s window, {args.repeat} repeats, pinned: {pin}",
        flush=True,
    )
    with Target(cpu=SIDE_CPU if pin else None) as url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps(_config(url, args.journeys)))
        for repeat in range(args.repeat):
            for name, tree in trees:
                row = run_child(tree, config, args, Path(tmp), PROBER_CPU if pin else None)
                rows[name].append(row)
                print(f"  repeat {repeat + 1} {name}: {json.dumps(row)}", flush=True)
    summary = []
    for name, _ in trees:
        got = rows[name]
        forced = spread([r["forced_full_ms"] for r in got], "{:.1f}")
        forced_cpu = spread([r["forced_full_cpu_ms"] for r in got], "{:.1f}")
        young = spread([r["any_max_cpu_ms"] for r in got], "{:.1f}")
        natural = spread([r["full_max_ms"] for r in got], "{:.1f}")
        count = sum(r["full_collections"] for r in got)
        tracked = spread([float(r["tracked_objects"]) for r in got], "{:.0f}")
        print(
            f"{name}: full collection {forced} ms wall, {forced_cpu} ms CPU (forced, median of "
            f"5 per run); longest collection of any generation in the windows {young} ms CPU; "
            f"longest full collection in the windows {natural} ms wall ({count} in all); "
            f"tracked objects {tracked}; heap settled: {got[0]['settles_heap']}"
        )
        summary.append(
            {
                "bench": "gc_pause",
                "figure": f"full GC pause, {args.journeys} journeys ({name})",
                "value": f"{forced} ms wall, {forced_cpu} ms CPU",
                "goal": "<= 10 ms",
            }
        )
    write_summary(args.summary_json, summary)


if __name__ == "__main__":
    main(sys.argv[1:])
