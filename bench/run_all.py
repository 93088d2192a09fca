"""Runs every benchmark, each in its own process, and prints one summary table at the end.

Run: `.venv/bin/python -m bench.run_all` (about an hour and a half: the footprint alone is
35 minutes, the detection trials about 5) or
`--quick` for a smoke run of a few seconds each. `--only NAME` / `--skip NAME` pick benchmarks.
Nothing is asserted: the table reports medians with their spread; the machine is shared, so the
load average before and after each benchmark is printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (module, arguments for a full run, arguments for --quick)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "journeys": (
        "bench.journeys",
        [],
        ["--seconds", "2", "--repeat", "1", "--footprint-seconds", "4"],
    ),
    "blackbox": ("bench.blackbox", ["--extra-log-level", "warning"], ["--quick"]),
    "otlp_cost": ("bench.otlp_cost", [], ["--quick"]),
    "capacity": ("bench.capacity", [], ["--quick"]),
    "metrics_render": ("bench.metrics_render", [], ["--quick"]),
    "scrape_formats": ("bench.scrape_formats", [], ["--quick"]),
    "profile": ("bench.profile_journeys", [], ["--quick"]),
    "footprint": ("bench.footprint", [], ["--quick"]),
    "log_line": ("bench.log_line", [], ["--quick"]),
    "gc_pause": ("bench.gc_pause", [], ["--quick"]),
    "replication": (
        "bench.replication_lag_accuracy",
        [],
        ["--durations", "2", "--reps", "1"],
    ),
    "detection": ("bench.detection", [], ["--quick"]),
    "api_starvation": ("bench.api_starvation", [], ["--quick"]),
    "cleanup_journal": ("bench.cleanup_journal", [], ["--runs", "20"]),
    "group": ("bench.group", [], ["--quick"]),
}
# These take `--baseline-tree DIR` and measure that older code beside this one, in the same run.
TAKES_BASELINE = {"journeys", "blackbox", "otlp_cost", "footprint", "log_line", "gc_pause"}
# These print their figures and write no summary file: their last lines are the summary.
PRINTS_ONLY = {"journeys", "replication", "detection"}


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def journeys_rows(output: str) -> list[dict[str, str]]:
    """Rows from bench/journeys.py's printed lines (it has no summary file of its own)."""
    rows = []
    for line in output.splitlines():
        if m := re.match(
            r"throughput keepalive=(\w+): steps/s median (.*?); CPU ms/step (.*?);", line
        ):
            rows.append(
                {
                    "bench": "journeys",
                    "figure": f"steps/s on one core, keepalive={m[1]}",
                    "value": m[2],
                    "goal": ">= 3000" if m[1] == "True" else "",
                }
            )
            rows.append(
                {
                    "bench": "journeys",
                    "figure": f"CPU ms per step, keepalive={m[1]}",
                    "value": m[3].removeprefix("median "),
                    "goal": "",
                }
            )
        elif m := re.match(
            r"timing error, (\d+) concurrent journeys.*?: (p50 .*?, p99 .*?) over", line
        ):
            rows.append(
                {
                    "bench": "journeys",
                    "figure": f"timing error, {m[1]} concurrent journeys",
                    "value": m[2],
                    "goal": "p99 <= 2 ms" if m[1] == "200" else "",
                }
            )
        elif m := re.match(r"OTLP overhead.*?: CPU ms/step (.*)$", line):
            rows.append(
                {
                    "bench": "journeys",
                    "figure": "OTLP overhead, CPU ms/step",
                    "value": m[1],
                    "goal": "",
                }
            )
        elif line.startswith("footprint, "):
            rows.append({"bench": "journeys", "figure": "footprint", "value": line, "goal": ""})
    return rows


def run(name: str, quick: bool, extra: Sequence[str]) -> tuple[list[dict[str, str]], float, int]:
    module, full, smoke = BENCHMARKS[name]
    with tempfile.NamedTemporaryFile(suffix=".json") as summary:
        cmd = [sys.executable, "-m", module, *(smoke if quick else full), *extra]
        if name not in PRINTS_ONLY:
            cmd += ["--summary-json", summary.name]
        print(f"\n##### {name}: {' '.join(cmd[1:])} (load average {load()})", flush=True)
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        output = []
        for line in proc.stdout:
            # capacity's child reports each step as a JSON line on stderr: the table says it all.
            if name == "capacity" and line.startswith("{"):
                continue
            print(line, end="", flush=True)
            output.append(line)
        code = proc.wait()
        elapsed = time.monotonic() - start
        print(f"##### {name}: exit {code} after {elapsed:.0f}s (load average {load()})", flush=True)
        if name == "journeys":
            rows = journeys_rows("".join(output))
        elif name in PRINTS_ONLY:
            last = [line.strip() for line in output if line.strip()][-1:] or ["no output"]
            rows = [{"bench": name, "figure": "summary", "value": last[0], "goal": ""}]
        else:
            text = Path(summary.name).read_text()
            rows = json.loads(text) if text else []
    if code != 0:
        rows.append({"bench": name, "figure": "FAILED", "value": f"exit {code}", "goal": ""})
    return rows, elapsed, code


def table(rows: Sequence[dict[str, str]]) -> str:
    header = ("bench", "figure", "value", "goal", "met")
    cells = [header, *(tuple(r.get(k, "") for k in header) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c[i].ljust(widths[i]) for i in range(len(header))) + " |" for c in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a few seconds each")
    p.add_argument("--only", action="append", choices=sorted(BENCHMARKS), default=[])
    p.add_argument("--skip", action="append", choices=sorted(BENCHMARKS), default=[])
    p.add_argument("--footprint-seconds", type=float, help="default 600 (20 with --quick)")
    p.add_argument(
        "--baseline-tree",
        help="a checkout of older code (e.g. `git worktree add /tmp/before v0.1.0`), measured "
        "beside this one by the benchmarks that can",
    )
    args = p.parse_args(argv)
    names = [n for n in BENCHMARKS if (not args.only or n in args.only) and n not in args.skip]
    print(
        f"failsight benchmarks: {', '.join(names)}; quick={args.quick}; {os.cpu_count()} CPUs; "
        f"load average {load()}",
        flush=True,
    )
    rows: list[dict[str, str]] = []
    failed = []
    started = time.monotonic()
    for name in names:
        extra = []
        if name == "footprint" and args.footprint_seconds:
            extra = ["--seconds", str(args.footprint_seconds)]
        if args.baseline_tree and name in TAKES_BASELINE:
            extra += ["--baseline-tree", args.baseline_tree]
        got, _elapsed, code = run(name, args.quick, extra)
        rows += got
        if code:
            failed.append(name)
    print(f"\n===== summary ({time.monotonic() - started:.0f}s; load average now {load()})")
    print(table(rows))
    if failed:
        print(f"failed: {', '.join(failed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
