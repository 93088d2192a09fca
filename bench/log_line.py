"""The per-run JSON log line: µs per line, the code before issue 16 against this one, same run.

Run: `.venv/bin/python -m bench.log_line` (`--quick` for a smoke run). Nothing is asserted.
Each measurement is a fresh interpreter that sets logging up as `failsight run` does
(configure_logging at info, stdout to /dev/null, so each line is one write(2) as in the agent),
registers ten secrets in the process's redactor (each line is searched for all their forms),
and calls `log_result` on a success Result and on a failure Result with a step and a detail,
timing each kind of line over many calls in CPU time (the process's, write(2) included: on
the shared machine, wall time mostly measures the other processes). The old code is the same
child under PYTHONPATH=DIR (`--baseline-tree DIR`, e.g. a `git worktree` of the release
before); old and new alternate, so the noise of the shared machine falls on both. Medians
with min-max over the repetitions.

Then, in this process, the JSON encoders a line could be built with, on the failure line's
object: json.dumps as the old formatter called it, one stdlib JSONEncoder made once (what
agent/logs.py now does), an f-string of the known keys, and orjson when it is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.blackbox import PROBER_CPU, pinned, two_cores, write_summary

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter, with the code under test first on sys.path (and cwd elsewhere, so
# this checkout's bench/ cannot shadow anything). Prints {"success": µs, "failure": µs}.
CHILD = r"""
import json, os, sys, time
from failsight.agent.logs import configure_logging, log_result
from failsight.core.redact import REDACTOR
from failsight.core.results import Reason, Result, StepResult

lines = int(sys.argv[1])
sys.stdout = open(os.devnull, "w")
configure_logging("info", stdout=True)
REDACTOR.add(*(f"bench-secret-{i:02d}-value" for i in range(10)))
now = time.time()
common = dict(
    check="journey/order-to-invoice/aws-use1", kind="journey", target="order-to-invoice",
    started_at=now, duration=0.1234567, run_id="0123456789abcdef", site="aws-use1",
    trace_id="0af7651916cd43dd8448eb211c80319c",
)
steps = tuple(StepResult(name=f"step{i}", ok=True, duration=0.02) for i in range(4))
results = {
    "success": Result(ok=True, steps=(*steps, StepResult(name="invoice", ok=True, duration=0.02)),
                      **common),
    "failure": Result(
        ok=False, reason=Reason.HTTP_STATUS,
        message="step invoice: expected status 200, got 503 from /api/invoices/42: "
                "'Service Unavailable: upstream connect error'",
        steps=(*steps, StepResult(name="invoice", ok=False, duration=0.02,
                                  reason=Reason.HTTP_STATUS)),
        **common),
}
out = {}
for name, result in results.items():
    for _ in range(lines // 10):  # warm-up
        log_result(result)
    start = time.process_time()
    for _ in range(lines):
        log_result(result)
    out[name] = (time.process_time() - start) / lines * 1e6
print(json.dumps(out), file=sys.__stdout__)
"""


def child(code: Path, lines: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = pinned([sys.executable, "-c", CHILD, str(lines)], PROBER_CPU if two_cores() else None)
    done = subprocess.run(cmd, env=env, cwd="/", capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def encoders() -> dict[str, Callable[[], str]]:
    from json.encoder import encode_basestring

    out: dict[str, object] = {
        "ts": "2026-12-02T03:04:05.678Z",
        "level": "warning",
        "logger": "failsight.run",
        "msg": "journey/order-to-invoice/aws-use1 failure (http_status)",
        "check": "journey/order-to-invoice/aws-use1",
        "kind": "journey",
        "site": "aws-use1",
        "target": "order-to-invoice",
        "run_id": "0123456789abcdef",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "ok": False,
        "outcome": "failure",
        "reason": "http_status",
        "duration_seconds": 0.123457,
        "failed_step": "invoice",
        "detail": "step invoice: expected status 200, got 503: 'Service Unavailable'",
    }
    made_once = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))

    def value(v: object) -> str:
        if isinstance(v, str):
            return encode_basestring(v)
        return "null" if v is None else "true" if v is True else "false" if v is False else repr(v)

    def fstring() -> str:
        o = out
        return (
            f'{{"ts":"{o["ts"]}","level":"{o["level"]}","logger":"{o["logger"]}",'
            f'"msg":{value(o["msg"])},"check":{value(o["check"])},"kind":{value(o["kind"])},'
            f'"site":{value(o["site"])},"target":{value(o["target"])},'
            f'"run_id":{value(o["run_id"])},"trace_id":{value(o["trace_id"])},'
            f'"ok":{value(o["ok"])},"outcome":{value(o["outcome"])},'
            f'"reason":{value(o["reason"])},"duration_seconds":{value(o["duration_seconds"])},'
            f'"failed_step":{value(o["failed_step"])},"detail":{value(o["detail"])}}}'
        )

    found: dict[str, Callable[[], str]] = {
        "json.dumps per line (old)": lambda: json.dumps(
            out, default=str, ensure_ascii=False, separators=(",", ":")
        ),
        "JSONEncoder made once (new)": lambda: made_once.encode(out),
        "f-string of the known keys": fstring,
    }
    try:
        import orjson  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pass
    else:
        found["orjson (+ decode to str)"] = lambda: orjson.dumps(out).decode()
    reference = found["json.dumps per line (old)"]()
    for name, fn in found.items():
        if fn() != reference:
            print(f"  note: {name} does not write the same bytes as json.dumps")
    return found


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=20000, help="lines per measurement")
    p.add_argument("--runs", type=int, default=5, help="fresh interpreters per code, alternating")
    p.add_argument("--quick", action="store_true", help="3 runs of 2000 lines")
    p.add_argument(
        "--baseline-tree", type=Path, help="a checkout of older code, measured as 'before'"
    )
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.quick:
        args.lines, args.runs = 2000, 3
    codes = {"now": ROOT}
    if args.baseline_tree is not None:
        if not (args.baseline_tree / "failsight").is_dir():
            raise SystemExit(f"--baseline-tree {args.baseline_tree}: no failsight/ there")
        codes = {"before": args.baseline_tree.resolve(), **codes}
    print(
        f"log line: {args.runs} runs x {args.lines} lines per kind, old and new alternating, "
        f"one core; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    got: dict[str, dict[str, list[float]]] = {c: {"success": [], "failure": []} for c in codes}
    for run in range(args.runs):
        for code, path in codes.items():
            figures = child(path, args.lines)
            for kind, us in figures.items():
                got[code][kind].append(us)
            print(
                f"  run {run + 1} {code:6s} "
                + ", ".join(f"{k} {v:.1f} µs" for k, v in figures.items())
            )
    rows = []
    for code in codes:
        for kind in ("success", "failure"):
            text = spread(got[code][kind])
            print(f"{code:6s} {kind} line: CPU µs per line, median (min-max) {text}")
            rows.append(
                {
                    "bench": "log_line",
                    "figure": f"CPU µs per {kind} line, {code}",
                    "value": text,
                    "goal": "<= 20" if code == "now" else "",
                    "met": (
                        ("yes" if statistics.median(got[code][kind]) <= 20 else "no")
                        if code == "now"
                        else ""
                    ),
                }
            )
    print("\nencoders, failure line's object, CPU µs per line (min of 5 repeats, this process):")
    for name, fn in encoders().items():
        n = 20000 if not args.quick else 2000
        us = min(timeit.repeat(fn, number=n, repeat=5, timer=time.process_time))
        per = us / n * 1e6
        print(f"  {name:30s} {per:.2f}")
        rows.append(
            {
                "bench": "log_line",
                "figure": f"encoder: {name}",
                "value": f"{per:.2f} µs",
                "goal": "",
            }
        )
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
