"""The Prometheus path: a collector that renders the latest results at scrape time."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from failsight.agent.metrics import CATALOGUE, LATENCY_BUCKETS, gauges_of, increments_of
from failsight.core.results import Result
from failsight.core.telemetry import MetricType, Sample

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class PrometheusSink(Collector):
    """Takes results (cheap dict updates on the event loop) and renders them on scrape.

    Gauges are kept per check and replaced as a set by each result, so nothing stale
    survives a replica, step or check going away. Counters and histograms accumulate, and are
    pruned on reload for journeys and sites that are no longer configured. `collect()` does no
    I/O: live values (views, verdicts, export counts) come from in-memory `sources`.
    """

    name = "prometheus"

    def __init__(self, vantage: str) -> None:
        self.vantage = vantage
        self.registry = CollectorRegistry(auto_describe=False)
        self._gauges: dict[str, list[Sample]] = {}
        self._counters: dict[SeriesKey, float] = {}
        self._histograms: dict[SeriesKey, _Histogram] = {}
        self.sources: list[Callable[[], Iterable[Sample]]] = []
        self.registry.register(self)

    def handle(self, result: Result) -> None:
        if result.skipped:
            return
        self._gauges[result.check] = gauges_of(result)
        for sample in increments_of(result):
            key = (sample.spec.name, sample.labels)
            if sample.spec.type is MetricType.HISTOGRAM:
                self._histograms.setdefault(key, _Histogram()).observe(sample.value)
            else:
                self._counters[key] = self._counters.get(key, 0.0) + sample.value

    def prune(self, checks: set[str], journeys: set[tuple[str, str]]) -> None:
        """Forget checks, and (site, journey) pairs, that a reload removed."""
        self._gauges = {c: g for c, g in self._gauges.items() if c in checks}

        def live(key: SeriesKey) -> bool:
            labels = dict(key[1])
            return "journey" not in labels or (labels["site"], labels["journey"]) in journeys

        self._counters = {k: v for k, v in self._counters.items() if live(k)}
        self._histograms = {k: v for k, v in self._histograms.items() if live(k)}

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gauges: dict[str, list[Sample]] = {}
        counters: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for samples in self._gauges.values():
            for s in samples:
                gauges.setdefault(s.spec.name, []).append(s)
        for source in self.sources:
            for s in source():
                if s.spec.type is MetricType.COUNTER:
                    counters.setdefault(s.spec.name, []).append((s.labels, s.value))
                else:
                    gauges.setdefault(s.spec.name, []).append(s)
        for (name, labels), value in self._counters.items():
            counters.setdefault(name, []).append((labels, value))
        histograms: dict[str, list[tuple[tuple[tuple[str, str], ...], _Histogram]]] = {}
        for (name, labels), hist in self._histograms.items():
            histograms.setdefault(name, []).append((labels, hist))

        # Every family of the catalogue (the agent's and every kind's) is described from the
        # first scrape, samples or not, so a dashboard or rule finds its metric before the
        # first run, and a family left out of a kind's `metrics` cannot go unnoticed.
        for spec in CATALOGUE.values():
            label_names = ["vantage", *spec.labels]
            if spec.type is MetricType.GAUGE:
                g = GaugeMetricFamily(spec.prometheus_name, spec.help, labels=label_names)
                for s in gauges.get(spec.name, ()):
                    g.add_metric([self.vantage, *(v for _, v in s.labels)], s.value)
                yield g
            elif spec.type is MetricType.COUNTER:
                c = CounterMetricFamily(spec.prometheus_name, spec.help, labels=label_names)
                for labels, value in counters.get(spec.name, ()):
                    c.add_metric([self.vantage, *(v for _, v in labels)], value)
                yield c
            else:
                h = HistogramMetricFamily(spec.prometheus_name, spec.help, labels=label_names)
                for labels, hist in histograms.get(spec.name, ()):
                    h.add_metric(
                        [self.vantage, *(v for _, v in labels)], hist.cumulative(), hist.total
                    )
                yield h
