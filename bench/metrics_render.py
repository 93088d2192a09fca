"""`/metrics` scrape cost: render time and the longest event-loop stall per scrape, old vs new.

Run: `.venv/bin/python -m bench.metrics_render` (`--quick` for a smoke run). Nothing is asserted.
A PrometheusSink (agent/prometheus.py) is fed synthetic journey Results through its real
`handle`, as the scheduler's fan-out does: five-step journeys, one in ten with a failing step now
and then, so every family of the journey path (runs, success, durations, step histograms, step
failures) is present. Journeys are added until the scrape has at least `--series` samples (10k
and 30k by default).

Each scrape is served on a running event loop while a ticker task sleeps 1 ms at a time; the
longest gap between two ticks, less the 1 ms, is how late a probe's timer would have fired
because of the scrape (the loop stall). On a shared core the wall clock of a slice includes the
time other processes had the core, so the longest slice is also given in CPU time (what the
stall is on a core of its own). Compared, alternately in the same run so that the
background load of the shared machine falls on both alike (pinned to one core when there are
two):

- before: prometheus_client's `generate_latest` over the collector the agent served with until
  now (tests/fixtures/prometheus_reference.py: the old `collect()`, unchanged), called from the
  handler as before, in one go;
- after: the agent's own render (agent/prometheus.py), series text cached, in slices of
  `SLICE_SECONDS` with the loop free between them, driven as `exposition()` drives it.

Between two scrapes, new results arrive for `--changed` of the checks (0.25: a scrape every 15 s,
journeys every minute), so the cache re-renders what changed as it would in an agent. Render time
is the CPU spent rendering (for the sliced render, its slices added up); both formats, classic
and OpenMetrics. Figures: per run, the median over its scrapes; then the median and min-max over
`--runs` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from bench.blackbox import PROBER_CPU, two_cores, write_summary
from failsight.agent.prometheus import SLICE_SECONDS, PrometheusSink, give_way
from failsight.core.results import Reason, Result, StepResult
from tests.fixtures.prometheus_reference import reference_registry, reference_render

STEPS = ("submit-order", "allocate", "pick", "ship", "invoice")
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
TICK = 0.001


def journey_result(journey: str, site: str, rng: random.Random, fail: bool) -> Result:
    failing = rng.randrange(len(STEPS)) if fail else None
    steps = tuple(
        StepResult(
            name=name,
            ok=i != failing,
            duration=rng.uniform(0.005, 0.8),
            reason=Reason.HTTP_STATUS if i == failing else None,
            status=503 if i == failing else 200,
            skipped=failing is not None and i > failing,
            span_id=f"{rng.getrandbits(64):016x}",
        )
        for i, name in enumerate(STEPS)
    )
    return Result(
        check=f"journey/{journey}/{site}",
        kind="journey",
        target=journey,
        ok=failing is None,
        started_at=time.time(),
        duration=sum(s.duration for s in steps),
        run_id=f"{rng.getrandbits(64):016x}",
        site=site,
        reason=Reason.HTTP_STATUS if failing is not None else None,
        critical=True,
        steps=steps,
        trace_id=f"{rng.getrandbits(128):032x}",  # exemplars, for the OpenMetrics scrapes
        span_id=f"{rng.getrandbits(64):016x}",
    )


def series_count(sink: PrometheusSink) -> int:
    text = sink.render()
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def build_sink(
    target_series: int, sites: int, runs: int, rng: random.Random
) -> tuple[PrometheusSink, list[tuple[str, str]], int]:
    """A sink fed until it renders `target_series` samples; (sink, its journeys, series)."""
    sink = PrometheusSink("bench")
    pairs: list[tuple[str, str]] = []
    series = 0
    journeys = 0
    while series < target_series:
        name = f"journey-{journeys:04d}"
        for s in range(sites):
            pairs.append((name, f"site-{s}"))
            for _ in range(runs):
                sink.handle(journey_result(name, f"site-{s}", rng, fail=rng.random() < 0.05))
        journeys += 1
        if journeys % 20 == 0 or series > target_series * 0.8:
            series = series_count(sink)  # cheap: the render is cached
    return sink, pairs, series_count(sink)


class Ticker:
    """A task sleeping `TICK` at a time, recording the longest gap between two wake-ups."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            self.longest = max(self.longest, now - last - TICK)
            last = now

    def stop(self) -> None:
        self._stop = True


# Render CPU; longest slice, CPU and wall clock; loop stall seen by the ticker.
Scrape = tuple[float, float, float, float]


async def old_scrape(registry: CollectorRegistry, openmetrics: bool) -> tuple[float, ...]:
    """The old handler: generate_latest, in one go, on the loop: (CPU, CPU, wall time)."""
    cpu, wall = time.process_time(), time.perf_counter()
    reference_render(registry, openmetrics)
    spent = time.process_time() - cpu
    return spent, spent, time.perf_counter() - wall


async def new_scrape(sink: PrometheusSink, openmetrics: bool) -> tuple[float, ...]:
    """The new handler's render, driven as `exposition()` drives it (`render_sliced`: a slice,
    then the loop's turn), each slice timed: (CPU of the slices together, longest slice's CPU,
    longest slice's wall time)."""
    spent = longest_cpu = longest_wall = 0.0
    steps = sink._render(openmetrics, SLICE_SECONDS)
    done = False
    while not done:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            next(steps)
        except StopIteration:
            done = True
        used = time.process_time() - cpu
        spent += used
        longest_cpu = max(longest_cpu, used)
        longest_wall = max(longest_wall, time.perf_counter() - wall)
        if not done:
            await give_way()
    return spent, longest_cpu, longest_wall


async def measure(
    sink: PrometheusSink,
    pairs: list[tuple[str, str]],
    scrapes: int,
    changed: float,
    rng: random.Random,
) -> dict[str, list[Scrape]]:
    """Each scrape's figures, by "old"/"new" and format."""
    registry = reference_registry(sink)
    out: dict[str, list[Scrape]] = {}
    for i in range(scrapes):
        openmetrics = i % 2 == 1
        fmt = "openmetrics" if openmetrics else "classic"
        # New results for a share of the checks, then the same state scraped old and new
        # (in alternating order).
        for journey, site in rng.sample(pairs, int(len(pairs) * changed)):
            sink.handle(journey_result(journey, site, rng, fail=rng.random() < 0.05))
        order = ("old", "new") if i % 4 < 2 else ("new", "old")
        for who in order:
            gc.collect()
            ticker = Ticker()
            task = asyncio.create_task(ticker.run())
            await asyncio.sleep(TICK * 3)  # the ticker is ticking
            ticker.longest = 0.0
            if who == "old":
                spent, slice_cpu, slice_wall = await old_scrape(registry, openmetrics)
            else:
                spent, slice_cpu, slice_wall = await new_scrape(sink, openmetrics)
            await asyncio.sleep(TICK * 2)  # the tick that fell due during the last slice
            ticker.stop()
            await task
            figures = (spent, slice_cpu, slice_wall, ticker.longest)
            out.setdefault(f"{who} {fmt}", []).append(figures)
    return out


def ms(values: list[float]) -> str:
    values = sorted(values)
    return (
        f"{statistics.median(values) * 1000:.1f} ms "
        f"({values[0] * 1000:.1f}-{values[-1] * 1000:.1f})"
    )


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, nargs="+", default=[10_000, 30_000])
    p.add_argument("--sites", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scrapes", type=int, default=12, help="per run, formats alternating")
    p.add_argument("--changed", type=float, default=0.25)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.quick:
        args.series, args.runs, args.scrapes = [2_000], 3, 4
    if two_cores():
        os.sched_setaffinity(0, {PROBER_CPU})
    figures = []
    for target in args.series:
        rng = random.Random(8)
        sink, pairs, series = build_sink(target, args.sites, 4, rng)
        same = all(
            sink.render(om) == reference_render(reference_registry(sink), om)
            for om in (False, True)
        )
        body = sink.render(True)
        print(
            f"/metrics, {series} series ({len(pairs)} journey-site pairs), OpenMetrics "
            f"{len(body) / 1024:.0f} KiB; byte-identical to generate_latest: {same}; "
            f"{args.runs} runs x {args.scrapes} scrapes, {args.changed:.0%} of the checks with a "
            f"new result before each; pinned: {two_cores()}; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
            flush=True,
        )
        runs: list[dict[str, list[Scrape]]] = []
        for _ in range(args.runs):
            runs.append(asyncio.run(measure(sink, pairs, args.scrapes, args.changed, rng)))
        for key in sorted(runs[0]):
            render = [statistics.median(f[0] for f in run[key]) for run in runs]
            slice_cpu = [statistics.median(f[1] for f in run[key]) for run in runs]
            slice_wall = [statistics.median(f[2] for f in run[key]) for run in runs]
            stall = [statistics.median(f[3] for f in run[key]) for run in runs]
            worst = [max(f[3] for f in run[key]) for run in runs]
            text = (
                f"render CPU {ms(render)}; longest slice CPU {ms(slice_cpu)}, wall "
                f"{ms(slice_wall)}; loop stall seen by a 1 ms timer {ms(stall)}, worst of a "
                f"run {ms(worst)}"
            )
            print(f"  {key:16} {text}", flush=True)
            figures.append(
                {
                    "bench": "metrics_render",
                    "figure": f"{key}, {series} series: per scrape",
                    "value": text,
                    "goal": "after: stall <= 5 ms; render <= 15 ms at 10k series",
                }
            )
    write_summary(args.summary_json, figures)


if __name__ == "__main__":
    main(sys.argv[1:])
