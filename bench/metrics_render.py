"""`/metrics` render time: generate_latest over an agent's PrometheusSink holding ~10,000 series.

Run: `.venv/bin/python -m bench.metrics_render` (`--quick` for a smoke run). Nothing is asserted.
The sink (agent/prometheus.py) is fed synthetic journey Results through its real `handle`, as
the scheduler's fan-out does: five-step journeys, one in ten with a failing step now and then,
so every family of the journey path (runs, success, durations, step histograms, step failures)
is present. Journeys are added until the rendered text has at least `--series` samples. Then
`generate_latest(sink.registry)` is timed over many renders (pinned to one core when there are
two), and a cProfile of some renders shows where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from prometheus_client import generate_latest
from prometheus_client.utils import floatToGoString

from bench.blackbox import PROBER_CPU, two_cores, write_summary
from failsight.agent.metrics import CATALOGUE
from failsight.agent.prometheus import PrometheusSink, _Histogram
from failsight.core.results import Reason, Result, StepResult
from failsight.core.telemetry import MetricType

STEPS = ("submit-order", "allocate", "pick", "ship", "invoice")


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
    )


def series_count(sink: PrometheusSink) -> int:
    text = generate_latest(sink.registry)
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def build_sink(target_series: int, sites: int, runs: int) -> tuple[PrometheusSink, int, int]:
    """A sink fed until it renders `target_series` samples; (sink, journeys, series)."""
    rng = random.Random(8)
    sink = PrometheusSink("bench")
    journeys = 0
    series = 0
    while series < target_series:
        name = f"journey-{journeys:04d}"
        for s in range(sites):
            for _ in range(runs):
                sink.handle(
                    journey_result(
                        name, f"site-{s}", rng, fail=journeys % 10 == 0 and rng.random() < 0.5
                    )
                )
        journeys += 1
        if journeys % 10 == 0 or series > target_series * 0.9:
            series = series_count(sink)
    return sink, journeys, series_count(sink)


Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class DirectRenderer:
    """Candidate fix, measured here and not in agent/: render the exposition text straight from
    the sink's own dicts, with each series' `name{labels} ` prefix built once and cached.

    generate_latest re-validates and re-escapes every label name and value of every sample on
    every scrape (and collect() first copies everything into MetricFamily objects); the series of
    an agent change only on reload. A real version would live in agent/prometheus.py, serve
    `/metrics` itself, and drop cache entries in `prune()`.
    """

    def __init__(self, sink: PrometheusSink) -> None:
        self.sink = sink
        self._prefix: dict[tuple[str, Labels], str] = {}

    def prefix(self, name: str, labels: Labels) -> str:
        key = (name, labels)
        text = self._prefix.get(key)
        if text is None:
            pairs = sorted((("vantage", self.sink.vantage), *labels))
            text = name + "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "} "
            self._prefix[key] = text
        return text

    def render(self) -> bytes:
        sink = self.sink
        gauges: dict[str, list[tuple[Labels, float]]] = {}
        for samples in sink._gauges.values():
            for g in samples:
                gauges.setdefault(g.spec.name, []).append((g.labels, g.value))
        counters: dict[str, list[tuple[Labels, float]]] = {}
        for (name, labels), value in sink._counters.items():
            counters.setdefault(name, []).append((labels, value))
        histograms: dict[str, list[tuple[Labels, _Histogram]]] = {}
        for (name, labels), hist in sink._histograms.items():
            histograms.setdefault(name, []).append((labels, hist))
        out: list[str] = []
        for spec in CATALOGUE.values():
            pname = spec.prometheus_name
            present = {
                MetricType.GAUGE: gauges,
                MetricType.COUNTER: counters,
                MetricType.HISTOGRAM: histograms,
            }[spec.type]
            if spec.name not in present:
                continue
            out.append(f"# HELP {pname} {_escape(spec.help)}\n# TYPE {pname} {spec.type.value}\n")
            if spec.type is MetricType.HISTOGRAM:
                for labels, hist in histograms[spec.name]:
                    for le, count in hist.cumulative():
                        bucket = self.prefix(pname + "_bucket", (*labels, ("le", le)))
                        out.append(bucket + floatToGoString(count) + "\n")
                    count_prefix = self.prefix(pname + "_count", labels)
                    out.append(count_prefix + floatToGoString(sum(hist.buckets)) + "\n")
                    sum_prefix = self.prefix(pname + "_sum", labels)
                    out.append(sum_prefix + floatToGoString(hist.total) + "\n")
            else:
                flat = gauges if spec.type is MetricType.GAUGE else counters
                for labels, value in flat[spec.name]:
                    out.append(self.prefix(pname, labels) + floatToGoString(value) + "\n")
        return "".join(out).encode()


def time_renders(render: Callable[[], bytes], n: int) -> list[float]:
    times: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        render()
        times.append(time.perf_counter() - t)
    return sorted(times)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=10_000)
    p.add_argument("--sites", type=int, default=2)
    p.add_argument("--renders", type=int, default=300)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.quick:
        args.renders = 20
    if two_cores():
        os.sched_setaffinity(0, {PROBER_CPU})
    sink, journeys, series = build_sink(args.series, args.sites, runs=4)
    body = generate_latest(sink.registry)
    print(
        f"/metrics render: {series} series ({journeys} five-step journeys x {args.sites} sites), "
        f"{len(body) / 1024:.0f} KiB of text; {args.renders} renders, pinned: {two_cores()}",
        flush=True,
    )
    gc.collect()
    times: list[float] = []
    cpu0 = time.process_time()
    for _ in range(args.renders):
        t = time.perf_counter()
        generate_latest(sink.registry)
        times.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    times.sort()
    median = statistics.median(times) * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    print(
        f"render time: median {median:.1f} ms, p99 {p99:.1f} ms, min {times[0] * 1000:.1f} ms, "
        f"max {times[-1] * 1000:.1f} ms; CPU {cpu / args.renders * 1000:.1f} ms per render; "
        f"{median / series * 1000:.2f} us per series"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(max(5, args.renders // 20)):
        generate_latest(sink.registry)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print("where a render's time goes (cProfile, self time):")
    for line in lines[start : start + 9]:
        print("  " + line)
    direct = DirectRenderer(sink)
    same = direct.render() == generate_latest(sink.registry)
    # Alternate the two, so background load on the shared machine falls on both alike.
    old_t: list[float] = []
    new_t: list[float] = []
    for _ in range(max(3, args.renders // 10)):
        old_t += time_renders(lambda: generate_latest(sink.registry), 10)
        new_t += time_renders(direct.render, 10)
    old_m, new_m = statistics.median(old_t) * 1000, statistics.median(new_t) * 1000
    print(
        f"candidate fix, direct render with cached series prefixes (byte-identical output: "
        f"{same}): median {new_m:.1f} ms vs generate_latest {old_m:.1f} ms in the same "
        f"alternating run: {old_m / new_m:.1f}x faster"
    )
    write_summary(
        args.summary_json,
        [
            {
                "bench": "metrics_render",
                "figure": f"generate_latest, {series} series: median / p99 (ms)",
                "value": f"{median:.1f} / {p99:.1f} (min {times[0] * 1000:.1f}, "
                f"max {times[-1] * 1000:.1f}, n={args.renders})",
                "goal": "",
            },
            {
                "bench": "metrics_render",
                "figure": "candidate: direct render with cached prefixes (same run)",
                "value": f"{new_m:.1f} ms vs {old_m:.1f} ms ({old_m / new_m:.1f}x; "
                f"identical: {same})",
                "goal": "",
            },
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:])
