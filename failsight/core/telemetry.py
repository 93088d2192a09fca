"""Metric families as data: what a kind declares and both telemetry paths render.

A kind lists its `MetricSpec`s in its `Kind`; the agent's catalogue is its own families plus
every kind's, so a family is declared once, next to the code that measures it, and reaches
Prometheus, OTLP and docs/metrics.md from there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MetricType(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # without the failsight_ prefix
    type: MetricType
    help: str
    labels: tuple[str, ...]  # besides `vantage`, which every series carries
    unit: str = "1"  # UCUM unit for OTLP

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


@dataclass(frozen=True, slots=True)
class Sample:
    """One value for one series: a gauge's value, a counter's increment or a histogram
    observation, by the spec's type. Labels exclude `vantage`, which the sinks add."""

    spec: MetricSpec
    labels: tuple[tuple[str, str], ...]
    value: float


def sample(spec: MetricSpec, value: float, **labels: str) -> Sample:
    """A sample of `spec` with its labels in the spec's order (a missing one is a KeyError)."""
    return Sample(spec, tuple((k, labels[k]) for k in spec.labels), value)
