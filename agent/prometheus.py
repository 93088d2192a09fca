"""The Prometheus path: a collector that renders the latest results at scrape time, in the
classic text format or, for a scraper that asks for it, in OpenMetrics with exemplars."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as classic
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar as ClientExemplar

from failsight.agent.metrics import CATALOGUE, gauges_of, increments_of
from failsight.core.results import Result
from failsight.core.telemetry import Exemplar, MetricType, Sample

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
Bucket = tuple[str, float] | tuple[str, float, ClientExemplar]


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    buckets: list[int] = field(init=False)
    # The latest exemplar of each bucket, with the value observed (OpenMetrics allows one per
    # bucket sample): the newest trace is the one worth opening, and its timestamp never goes
    # back, which Prometheus' exemplar storage requires of each series.
    exemplars: list[tuple[Exemplar, float] | None] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.buckets = [0] * (len(self.bounds) + 1)
        self.exemplars = [None] * (len(self.bounds) + 1)

    def observe(self, value: float, exemplar: Exemplar | None = None) -> None:
        index = bisect.bisect_left(self.bounds, value)
        self.buckets[index] += 1
        if exemplar is not None:
            self.exemplars[index] = (exemplar, value)
        self.total += value

    def cumulative(self) -> list[Bucket]:
        """The bucket samples, cumulative, each with the exemplar of an observation that fell
        into that very bucket (the classic text format leaves exemplars out)."""
        out: list[Bucket] = []
        running = 0
        bounds = (*self.bounds, float("inf"))
        for bound, count, seen in zip(bounds, self.buckets, self.exemplars, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            if seen is None:
                out.append((le, float(running)))
            else:
                ex, value = seen
                out.append(
                    (le, float(running), ClientExemplar(dict(ex.labels), value, ex.timestamp))
                )
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
                hist = self._histograms.get(key)
                if hist is None:
                    hist = self._histograms[key] = _Histogram(sample.spec.buckets)
                hist.observe(sample.value, sample.exemplar)
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


# The format classic.generate_latest writes (prometheus_client >= 0.21 names it
# CONTENT_TYPE_PLAIN_0_0_4; spelled out here for the older releases the agent accepts).
CLASSIC_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def exposition(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The body and Content-Type of a scrape, by the scraper's Accept header.

    OpenMetrics 1.0.0 when the scraper accepts it at least as much as the classic text format
    (Prometheus asks for it first): only it carries exemplars. Otherwise the classic text
    format 0.0.4, as before. The series are the same in both, so a scraper that switches
    format sees no series end and none begin. Unlike prometheus_client's `choose_encoder`,
    a scraper that names only an older OpenMetrics version gets 1.0.0 (a 0.0.1 parser reads
    it) rather than the classic format, and one that asks for `text/plain; version=1.0.0`
    gets the 0.0.4 format labelled as such: the agent writes no other text format.
    """
    wants = _quality(accept, "application/openmetrics-text")
    if wants > 0 and wants >= _quality(accept, "text/plain"):
        body: bytes = openmetrics.generate_latest(registry)  # type: ignore[no-untyped-call]
        return body, openmetrics.CONTENT_TYPE_LATEST
    return classic.generate_latest(registry), CLASSIC_CONTENT_TYPE


def _quality(accept: str, media_type: str) -> float:
    """The highest q the Accept header gives `media_type` by name (wildcards do not count:
    `*/*` is a client that takes anything, and anything means the classic format)."""
    best = 0.0
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name.lower() != media_type:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best
