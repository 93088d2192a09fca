"""Metric families as data: what a kind declares and both telemetry paths render.

A kind lists its `MetricSpec`s in its `Kind`; the agent's catalogue is its own families plus
every kind's, so a family is declared once, next to the code that measures it, and reaches
Prometheus, OTLP and docs/metrics.md from there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class MetricType(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


# Histogram buckets for API latency: fine-grained below a second, where business APIs live.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # without the failsight_ prefix
    type: MetricType
    help: str
    labels: tuple[str, ...]  # besides `vantage`, which every series carries
    unit: str = "1"  # UCUM unit for OTLP
    # A histogram's bucket bounds. A family that measures something much shorter or longer
    # than an API call declares its own, next to it.
    buckets: tuple[float, ...] = LATENCY_BUCKETS

    @property
    def prometheus_name(self) -> str:
        return f"failsight_{self.name}"

    @property
    def otel_name(self) -> str:
        # OpenTelemetry naming: dotted namespace, no unit or _total suffix (the unit field
        # carries the unit; the Prometheus translation adds the suffixes back).
        base = self.name
        for suffix in ("_total", "_seconds", "_bytes", "_timestamp_seconds"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
        return "failsight." + base


# OpenMetrics 1.0: an exemplar's label names and values together hold at most 128 UTF-8
# characters; a longer set makes the whole exposition invalid.
MAX_EXEMPLAR_LABEL_CHARS = 128


# Exemplar and Sample are NamedTuples, not frozen dataclasses: as immutable, and made for every
# observation (about 22 for a five-step run), where a frozen dataclass's __init__ sets each
# field through object.__setattr__, several times the cost of making a tuple.
class Exemplar(NamedTuple):
    """What one observation links to (a trace), for the bucket it falls into."""

    labels: tuple[tuple[str, str], ...]  # e.g. (("trace_id", "4bf9..."),)
    timestamp: float  # wall clock, seconds since the epoch: when the observation was made


def exemplar(timestamp: float, **labels: str) -> Exemplar | None:
    """An exemplar, or None when its labels would break the OpenMetrics length limit (an
    observation without its exemplar is better than a scrape that fails)."""
    if sum(len(k) + len(v) for k, v in labels.items()) > MAX_EXEMPLAR_LABEL_CHARS:
        return None
    return Exemplar(tuple(labels.items()), timestamp)


class Sample(NamedTuple):
    """One value for one series: a gauge's value, a counter's increment or a histogram
    observation, by the spec's type. Labels exclude `vantage`, which the sinks add. A histogram
    observation may carry an exemplar; other samples ignore it."""

    spec: MetricSpec
    labels: tuple[tuple[str, str], ...]
    value: float
    exemplar: Exemplar | None = None


def sample(
    spec: MetricSpec, value: float, exemplar: Exemplar | None = None, /, **labels: str
) -> Sample:
    """A sample of `spec` with its labels in the spec's order (a missing one is a KeyError);
    the positional-only parameters leave every name free for a label."""
    return Sample(spec, tuple([(k, labels[k]) for k in spec.labels]), value, exemplar)
