"""`/metrics` in its two formats: what the phase and status families cost, and what OpenMetrics
with exemplars costs against the classic text, for the same agent state.

Run: `.venv/bin/python -m bench.scrape_formats` (`--quick` for a smoke run). Nothing is asserted.
A PrometheusSink (agent/prometheus.py) is fed synthetic journey Results through its real
`handle`, shaped as the journey probe makes them: five steps, the first on a new connection
(`dns`, `connect`, `tls`, `send`, `ttfb`, `body`), the others on the kept-alive one (`send`,
`ttfb`, `body`), an HTTP status per step, and the run's trace and span ids (the exemplars).
Reported: samples and bytes per journey and site, in total and for the two families this
release added (`failsight_step_phase_duration_seconds`, `failsight_step_http_status_code`), and
the render time for a classic and an OpenMetrics scraper, alternated in the same run (pinned to
one core when there are two): medians with min-max. Rendered both by the agent (agent/prometheus.py,
whole, not sliced) and by prometheus_client's generate_latest over the collector the agent used
before it wrote the text itself (tests/fixtures/prometheus_reference.py), which also gives the
baseline without the phase and status families.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from bench.blackbox import PROBER_CPU, two_cores, write_summary
from failsight.agent.prometheus import PrometheusSink, exposition
from failsight.core.results import Result, StepResult
from tests.fixtures.prometheus_reference import (
    ReferenceCollector,
    reference_registry,
    reference_render,
)

STEPS = ("submit-order", "allocate", "pick", "ship", "invoice")
OPENMETRICS = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"
NEW_FAMILIES = (b"failsight_step_phase_duration_seconds", b"failsight_step_http_status_code")


def journey_result(journey: str, site: str, rng: random.Random) -> Result:
    offset = 0.0
    steps = []
    for i, name in enumerate(STEPS):
        phases = {"send": 0.0002, "ttfb": rng.uniform(0.005, 0.5), "body": 0.0003}
        if i == 0:  # the run's first request opens the connection
            phases |= {"dns": 0.001, "connect": 0.002, "tls": rng.uniform(0.005, 0.05)}
        duration = sum(phases.values())
        steps.append(
            StepResult(
                name=name,
                ok=True,
                duration=duration,
                status=201 if i == 0 else 200,
                phases=phases,
                start_offset=offset,
                span_id=secrets.token_hex(8),
            )
        )
        offset += duration
    return Result(
        check=f"journey/{journey}/{site}",
        kind="journey",
        target=journey,
        ok=True,
        started_at=time.time(),
        duration=offset,
        run_id=secrets.token_hex(8),
        site=site,
        critical=True,
        steps=tuple(steps),
        trace_id=secrets.token_hex(16),
        span_id=secrets.token_hex(8),
    )


class WithoutNewFamilies(Collector):
    """The baseline: the same sink's output without the two families this release added,
    i.e. what /metrics held for the same state before them."""

    def __init__(self, sink: PrometheusSink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        names = {n.decode().removeprefix("failsight_") for n in NEW_FAMILIES}
        for family in ReferenceCollector(self.sink).collect():
            if family.name.removeprefix("failsight_") not in names:
                yield family


def samples(body: bytes) -> list[bytes]:
    return [line for line in body.splitlines() if line and not line.startswith(b"#")]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--journeys", type=int, default=100)
    p.add_argument("--sites", type=int, default=2)
    p.add_argument("--renders", type=int, default=200)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.quick:
        args.renders, args.journeys = 20, 20
    if two_cores():
        os.sched_setaffinity(0, {PROBER_CPU})
    rng = random.Random(14)
    sink = PrometheusSink("bench")
    for j in range(args.journeys):
        for s in range(args.sites):
            for _ in range(4):
                sink.handle(journey_result(f"journey-{j:04d}", f"site-{s}", rng))
    classic_chunks, classic_type = asyncio.run(exposition(sink, ""))
    om_chunks, om_type = asyncio.run(exposition(sink, OPENMETRICS))
    classic, om = b"".join(classic_chunks), b"".join(om_chunks)
    assert classic_type.startswith("text/plain") and om_type.startswith("application/openm")
    pairs = args.journeys * args.sites
    lines = samples(classic)
    added = [line for line in lines if line.startswith(NEW_FAMILIES)]
    added_bytes = sum(len(line) + 1 for line in added)
    exemplars = sum(1 for line in samples(om) if b" # {" in line)
    print(
        f"{args.journeys} five-step journeys x {args.sites} sites: {len(lines)} samples, "
        f"{len(lines) / pairs:.0f} per journey and site, of which the phase and status families "
        f"{len(added) / pairs:.0f} ({len(added) / len(lines):.0%}); classic "
        f"{len(classic) / 1024:.0f} KiB ({added_bytes / 1024:.0f} KiB of it the new families), "
        f"OpenMetrics {len(om) / 1024:.0f} KiB with {exemplars} exemplars; "
        f"pinned: {two_cores()}",
        flush=True,
    )
    gc.collect()
    baseline = CollectorRegistry(auto_describe=False)
    baseline.register(WithoutNewFamilies(sink))
    registry = reference_registry(sink)
    runs: tuple[tuple[str, Callable[[], bytes]], ...] = (
        # classic, without the phase and status families
        ("baseline", lambda: reference_render(baseline, False)),
        ("classic", lambda: reference_render(registry, False)),
        ("openmetrics", lambda: reference_render(registry, True)),
        ("agent classic", lambda: sink.render(False)),
        ("agent openmetrics", lambda: sink.render(True)),
    )
    times: dict[str, list[float]] = {name: [] for name, _ in runs}
    # Alternate them, so background load on the shared machine falls on all alike.
    for _ in range(args.renders):
        for name, render in runs:
            t = time.perf_counter()
            render()
            times[name].append(time.perf_counter() - t)
    figures = []
    for name, ts in times.items():
        ts.sort()
        median = statistics.median(ts) * 1000
        text = (
            f"median {median:.1f} ms (min {ts[0] * 1000:.1f}, max {ts[-1] * 1000:.1f}, n={len(ts)})"
        )
        print(f"{name:17} render: {text}")
        figures.append(
            {
                "bench": "scrape_formats",
                "figure": f"{name} render, {len(lines)} samples",
                "value": text,
                "goal": "",
            }
        )
    median = {name: statistics.median(ts) for name, ts in times.items()}
    print(
        f"same run: classic with the new families / baseline "
        f"{median['classic'] / median['baseline']:.2f}x; OpenMetrics with exemplars / classic "
        f"{median['openmetrics'] / median['classic']:.2f}x (prometheus_client); the agent's own "
        f"render, classic {median['classic'] / median['agent classic']:.0f}x and OpenMetrics "
        f"{median['openmetrics'] / median['agent openmetrics']:.0f}x quicker than it"
    )
    write_summary(args.summary_json, figures)


if __name__ == "__main__":
    main(sys.argv[1:])
