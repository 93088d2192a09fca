"""Profiles (py-spy) of the journey throughput path and of the agent in the blackbox comparison.

Run: `.venv/bin/python -m bench.profile_journeys` (`--quick` for a smoke run). Nothing is
asserted. py-spy (installed into .venv: `pip install py-spy`) samples, at 250 Hz, (1) the
throughput loop of bench/journeys.py (50 journeys back to back, keep-alive and fresh
connections) in a child pinned to CPU 0, and (2) a real `failsight run` with 200 one-step
journeys at 1 s (the failsight side of bench/blackbox.py), fresh connections and keep-alive.
Each profile is folded into self time and inclusive time per function and per area (aiohttp,
logging, JSON, the Prometheus sink...). Then candidate fixes are measured on the throughput path
by monkeypatching them into a child (agent/ and probes/ are not this benchmark's to edit), each
against the unpatched code in the same run, alternating, CPU ms per step.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.blackbox import (
    PROBER_CPU,
    SIDE_CPU,
    FailsightProber,
    pinned,
    spread,
    two_cores,
    wait_http,
    write_summary,
)
from bench.target import Target

ROOT = Path(__file__).resolve().parent.parent
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"
RATE_HZ = 250

# Areas, by the first matching frame of a stack (innermost first): where the time goes.
AREAS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("logging (per-run JSON line)", re.compile(r"logging/|agent/logs\.py|_LogSink")),
    ("json encode/decode", re.compile(r"json/")),
    # The render's functions first: the rest of agent/prometheus.py is the sink's `handle`.
    (
        "/metrics render",
        re.compile(r"prometheus_client/|_render|render_sliced|_histogram_lines|_gauge_text"),
    ),
    ("prometheus sink (handle)", re.compile(r"agent/prometheus\.py|agent/metrics\.py")),
    ("view tracker", re.compile(r"agent/view\.py")),
    ("verdict loop", re.compile(r"agent/verdict\.py")),
    ("phase timing (core/http.py)", re.compile(r"core/http\.py")),
    ("aiohttp tracing plumbing", re.compile(r"aiohttp/tracing\.py")),
    ("templating / json paths", re.compile(r"probes/templating\.py|jsonpath")),
    ("ids (secrets/random)", re.compile(r"secrets\.py|random\.py|new_run_id|new_span_id")),
    ("aiohttp connector (connect/close)", re.compile(r"aiohttp/connector\.py")),
    ("aiohttp client request/response", re.compile(r"aiohttp/client|aiohttp/helpers|yarl/")),
    ("aiohttp http parser/writer", re.compile(r"aiohttp/http_|aiohttp/_http|streams\.py")),
    ("aiohttp server (agent API)", re.compile(r"aiohttp/web")),
    ("journey probe", re.compile(r"probes/journey/")),
    ("scheduler", re.compile(r"agent/scheduler\.py")),
    ("event loop (uvloop C code, asyncio)", re.compile(r"asyncio/|uvloop")),
)


def py_spy(args: Sequence[str]) -> None:
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} not found: .venv/bin/pip install py-spy")
    subprocess.run([str(PY_SPY), *args], check=True, capture_output=True)


def fold(raw: Path) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """(self samples per function, inclusive samples per function, total) from py-spy raw."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return own, inclusive, total


def _frame(text: str) -> str:
    # "function (path/to/file.py:123)" -> "function (to/file.py)": line numbers split one
    # function into many rows.
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", text)
    if not m:
        return text
    name, path = m.groups()
    return f"{name} ({'/'.join(Path(path).parts[-2:])})"


def areas(raw: Path) -> tuple[collections.Counter[str], int]:
    """Samples per area: each stack goes to the innermost frame matching an area."""
    out: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        for frame in reversed(stack.split(";")):
            area = next((name for name, pattern in AREAS if pattern.search(frame)), None)
            if area is not None:
                out[area] += count
                break
        else:
            out["other"] += count
    return out, total


def show(title: str, raw: Path, top: int) -> dict[str, float]:
    own, inclusive, total = fold(raw)
    by_area, _ = areas(raw)
    print(f"\n== {title}: {total} samples at {RATE_HZ} Hz (idle excluded)", flush=True)
    print("  by area (innermost matching frame):")
    for area, n in by_area.most_common():
        print(f"    {n / total * 100:5.1f}%  {area}")
    print(f"  top {top} by self time:")
    for name, n in own.most_common(top):
        print(f"    {n / total * 100:5.1f}%  {name}")
    print(f"  top {top} by inclusive time (project and aiohttp frames):")
    shown = 0
    for name, n in inclusive.most_common():
        if re.search(r"\((agent|probes|aiohttp|logging|json|prometheus_client)/", name):
            print(f"    {n / total * 100:5.1f}%  {name}")
            shown += 1
            if shown == top:
                break
    return {area: n / total for area, n in by_area.items()}


# -- profile 1: the throughput path of bench/journeys.py --------------------------------------


def throughput_child(url: str, seconds: float, keepalive: bool, patches: Sequence[str]) -> None:
    from bench.journeys import throughput
    from failsight.agent.cli import run_async

    for name in patches:
        PATCHES[name][1]()
    row = run_async(throughput(url, seconds, 50, keepalive))
    print(json.dumps(row))


def child_cmd(url: str, seconds: float, keepalive: bool, patches: Sequence[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.profile_journeys",
        "--child-throughput",
        url,
        "--seconds",
        str(seconds),
        *([] if keepalive else ["--fresh"]),
        *(f"--patch={p}" for p in patches),
    ]


def profile_throughput(url: str, seconds: float, keepalive: bool, out: Path) -> Path:
    raw = out / f"throughput-{'ka' if keepalive else 'fresh'}.txt"
    cmd = child_cmd(url, seconds, keepalive, ())
    py_spy(["record", "-r", str(RATE_HZ), "-f", "raw", "-o", str(raw), "--", *pinned(cmd, None)])
    return raw


# -- profile 2: the failsight side of the blackbox comparison ---------------------------------


def profile_agent(url: str, seconds: float, keepalive: bool, out: Path) -> Path:
    raw = out / f"agent-{'ka' if keepalive else 'fresh'}.txt"
    prober = FailsightProber(url, out, keepalive=keepalive, journeys=200)
    try:
        prober.start()
        time.sleep(3)
        py_spy(
            [
                "record",
                "-r",
                str(RATE_HZ),
                "-f",
                "raw",
                "-o",
                str(raw),
                "-d",
                str(int(seconds)),
                "--pid",
                str(prober.pid()),
            ]
        )
    finally:
        prober.stop()
    return raw


# -- candidate fixes, monkeypatched into a throughput child or a `failsight run` ---------------


def _patch_quiet_logs() -> None:
    """The per-run line only for runs that did not succeed, unless the level is debug: a
    success at 200 runs/s is 200 JSON lines/s nobody reads (failures stay at warning)."""
    import logging

    import failsight.agent.runtime
    from failsight.agent.logs import RUN_LOGGER, log_result
    from failsight.core.results import Result

    run_log = logging.getLogger(RUN_LOGGER)

    def handle(self: object, result: Result) -> None:
        if result.ok and not run_log.isEnabledFor(logging.DEBUG):
            return
        log_result(result)

    failsight.agent.runtime._LogSink.handle = handle  # type: ignore[method-assign]


def _patch_no_phases() -> None:
    """Upper bound of what the phase timings cost: the journey's requests sent without
    `timed_request` (no phases but `body`; the session's connector and request class then
    find no phases dict and time nothing)."""
    from typing import Any

    from failsight.probes.journey import run

    def untimed(session: Any, method: str, url: Any, _phases: Any, **kwargs: Any) -> Any:
        return session.request(method, url, **kwargs)

    run.timed_request = untimed  # type: ignore[assignment]


def _patch_fast_ids() -> None:
    """Run, trace and span ids from random.getrandbits (as the OpenTelemetry SDK makes its
    trace ids) instead of secrets.token_hex, a getrandom() system call per id."""
    import random

    from failsight.core import check as base

    rng = random.Random()  # seeded from os.urandom once

    base.new_run_id = lambda: f"{rng.getrandbits(64):016x}"
    base.new_span_id = lambda: f"{rng.getrandbits(64):016x}"
    base.new_trace_id = lambda: f"{rng.getrandbits(128):032x}"
    # The journey modules import the id functions by name: patched where they are called.
    from failsight.probes.journey import check as journey_check
    from failsight.probes.journey import run as journey_run

    journey_check.new_span_id = base.new_span_id
    journey_check.new_trace_id = base.new_trace_id
    journey_run.new_span_id = base.new_span_id


PATCHES: dict[str, tuple[str, Callable[[], None]]] = {
    "quiet-logs": ("per-run log line for failures only (agent path)", _patch_quiet_logs),
    "no-phases": ("HTTP phase timing off (upper bound of its cost)", _patch_no_phases),
    "fast-ids": ("ids from random.getrandbits, not secrets", _patch_fast_ids),
}


def agent_child(patches: Sequence[str], argv: Sequence[str]) -> None:
    """`failsight` CLI with candidate fixes monkeypatched in first."""
    for name in patches:
        PATCHES[name][1]()
    from failsight.agent.cli import main as failsight_main

    raise SystemExit(failsight_main(list(argv)))


def measure_agent_patches(
    url: str, workdir: Path, combos: Sequence[tuple[str, ...]], window: float, repeat: int
) -> dict[tuple[bool, tuple[str, ...]], list[float]]:
    """CPU ms per probe of `failsight run` (200 one-step journeys at 1s) for each combination
    of patches, () being today's code; the combinations take turns within each repeat."""
    from bench.blackbox import measure

    out: dict[tuple[bool, tuple[str, ...]], list[float]] = {}
    for r in range(repeat):
        for keepalive in (False, True):
            for combo in combos:
                launcher = [
                    sys.executable,
                    "-m",
                    "bench.profile_journeys",
                    *(f"--patch={name}" for name in combo),
                    "--agent-child",
                ]
                prober = FailsightProber(
                    url,
                    workdir,
                    keepalive=keepalive,
                    journeys=200,
                    launcher=launcher,
                    variant="+".join(combo) or "today",
                )
                w = measure(prober, 5.0, window)
                out.setdefault((keepalive, combo), []).append(w.cpu_ms_per_probe)
                print(
                    f"  repeat {r + 1}/{repeat} {w.label:60} {w.probes_per_s:6.1f} probes/s "
                    f"({w.failures} failed), {w.cpu_ms_per_probe:.3f} CPU ms/probe",
                    flush=True,
                )
    return out


def measure_patch(
    url: str, seconds: float, keepalive: bool, patch: str, repeat: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """journeys.py throughput rows without and with `patch`, alternating runs."""
    base: list[dict[str, float]] = []
    patched: list[dict[str, float]] = []
    cpu = PROBER_CPU if two_cores() else None
    for _ in range(repeat):
        for patches, into in (((), base), ((patch,), patched)):
            out = subprocess.run(
                pinned(child_cmd(url, seconds, keepalive, patches), cpu),
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            into.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return base, patched


def profiles(url: str, seconds: float, top: int, out: Path) -> list[dict[str, str]]:
    rows = []
    for keepalive in (True, False):
        raw = profile_throughput(url, seconds, keepalive, out)
        show(f"journeys.py throughput, 50 workers, keepalive={keepalive}", raw, top)
    for keepalive in (False, True):
        raw = profile_agent(url, seconds, keepalive, out)
        share = show(f"failsight run, 200 one-step journeys at 1s, keepalive={keepalive}", raw, top)
        logging_share = share.get("logging (per-run JSON line)", 0.0)
        rows.append(
            {
                "bench": "profile",
                "figure": f"agent at 200 probes/s, keepalive={keepalive}: logging share",
                "value": f"{logging_share * 100:.0f}% of busy samples",
                "goal": "",
            }
        )
    return rows


THROUGHPUT_CANDIDATES = ("no-phases", "fast-ids")
AGENT_COMBOS: tuple[tuple[str, ...], ...] = (
    (),
    ("quiet-logs",),
    ("no-phases",),
    ("quiet-logs", "no-phases"),
)


def throughput_candidates(url: str, seconds: float, repeat: int) -> list[dict[str, str]]:
    rows = []
    print("\n== candidate fixes on the throughput path (alternating runs)")
    for name in THROUGHPUT_CANDIDATES:
        what = PATCHES[name][0]
        for keepalive in (True, False):
            base, patched = measure_patch(url, seconds, keepalive, name, repeat)
            gain = [
                1 - b["cpu_ms_per_step"] / a["cpu_ms_per_step"]
                for a, b in zip(base, patched, strict=True)
            ]
            cpu_a = [r["cpu_ms_per_step"] for r in base]
            cpu_b = [r["cpu_ms_per_step"] for r in patched]
            sps_a = [r["steps_per_s"] for r in base]
            sps_b = [r["steps_per_s"] for r in patched]
            saving = spread([g * 100 for g in gain], "{:.1f}")
            print(
                f"  {name} ({what}), keepalive={keepalive}: CPU ms/step {spread(cpu_a)} -> "
                f"{spread(cpu_b)}, saving {saving}%; steps/s {spread(sps_a, '{:.0f}')} -> "
                f"{spread(sps_b, '{:.0f}')}",
                flush=True,
            )
            rows.append(
                {
                    "bench": "profile",
                    "figure": f"candidate {name}, journeys.py keepalive={keepalive}: CPU/step",
                    "value": f"{-statistics.median(gain) * 100:+.1f}% "
                    f"({statistics.median(cpu_a):.3f} -> {statistics.median(cpu_b):.3f} ms)",
                    "goal": "",
                }
            )
    return rows


def agent_candidates(url: str, workdir: Path, window: float, repeat: int) -> list[dict[str, str]]:
    print(
        "\n== candidate fixes in `failsight run`, 200 one-step journeys at 1s, CPU ms per probe "
        f"({window:.0f}s windows, combinations taking turns)"
    )
    got = measure_agent_patches(url, workdir, AGENT_COMBOS, window, repeat)
    rows = []
    for keepalive in (False, True):
        base = got[(keepalive, ())]
        for combo in AGENT_COMBOS:
            values = got[(keepalive, combo)]
            gain = [1 - v / b for b, v in zip(base, values, strict=True)]
            label = "+".join(combo) or "today's code"
            print(
                f"  keepalive={keepalive} {label:24} {spread(values)} ms/probe"
                + (f", saving {spread([g * 100 for g in gain], '{:.1f}')}%" if combo else ""),
                flush=True,
            )
            rows.append(
                {
                    "bench": "profile",
                    "figure": f"agent keepalive={keepalive}, {label}: CPU ms/probe",
                    "value": spread(values)
                    + (f" ({-statistics.median(gain) * 100:+.0f}%)" if combo else ""),
                    "goal": "",
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="per profile")
    p.add_argument("--repeat", type=int, default=3, help="per candidate fix")
    p.add_argument("--agent-window", type=float, default=20.0, help="CPU window per agent run")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--keep", help="keep the raw py-spy profiles in this directory")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--summary-json")
    p.add_argument("--child-throughput", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--fresh", dest="keepalive", action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--patch", action="append", default=[], choices=sorted(PATCHES))
    p.add_argument("--agent-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--skip-profiles", action="store_true")
    p.add_argument("--skip-throughput-candidates", action="store_true")
    p.add_argument("--skip-agent-candidates", action="store_true")
    args, rest = p.parse_known_args(argv)
    if args.agent_child:
        agent_child(args.patch, rest)
        return
    if rest:
        p.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.child_throughput:
        if two_cores():
            os.sched_setaffinity(0, {PROBER_CPU})
        throughput_child(args.child_throughput, args.seconds, args.keepalive, args.patch)
        return
    if args.quick:
        args.seconds, args.repeat, args.top, args.agent_window = 3.0, 1, 8, 4.0
    if two_cores():
        os.sched_setaffinity(0, {SIDE_CPU})
    rows: list[dict[str, str]] = []
    with (
        tempfile.TemporaryDirectory(prefix="failsight-bench-prof-") as tmp,
        Target(cpu=SIDE_CPU if two_cores() else None) as url,
    ):
        wait_http(url + "/")
        out = Path(args.keep) if args.keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(f"py-spy {RATE_HZ} Hz, {args.seconds:.0f}s per profile; raw profiles in {out}")
        if not args.skip_profiles:
            rows += profiles(url, args.seconds, args.top, out)
        if not args.skip_throughput_candidates:
            rows += throughput_candidates(url, args.seconds, args.repeat)
        if not args.skip_agent_candidates:
            rows += agent_candidates(url, out, args.agent_window, args.repeat)
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
