"""The catalogue of every metric failsight exports: one source for both telemetry paths and docs."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from failsight.core.results import Result


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


_G, _C, _H = MetricType.GAUGE, MetricType.COUNTER, MetricType.HISTOGRAM

CATALOGUE: dict[str, MetricSpec] = {
    m.name: m
    for m in (
        MetricSpec(
            "journey_runs_total", _C, "Journey runs by outcome.", ("site", "journey", "result")
        ),
        MetricSpec(
            "journey_success",
            _G,
            "1 if the last run of the journey succeeded.",
            ("site", "journey"),
        ),
        MetricSpec(
            "journey_duration_seconds",
            _H,
            "Journey run duration, steps only.",
            ("site", "journey"),
            "s",
        ),
        MetricSpec(
            "step_duration_seconds",
            _H,
            "Journey step duration (polls included).",
            ("site", "journey", "step"),
            "s",
        ),
        MetricSpec(
            "step_failures_total",
            _C,
            "Journey step failures by reason.",
            ("site", "journey", "step", "reason"),
        ),
        MetricSpec(
            "replication_lag_seconds",
            _G,
            "Replication lag seen by one method.",
            ("cluster", "replica", "method"),
            "s",
        ),
        MetricSpec(
            "replication_lag_bytes",
            _G,
            "WAL bytes the replica has not replayed.",
            ("cluster", "replica"),
            "By",
        ),
        MetricSpec(
            "replication_streaming",
            _G,
            "1 if the replica is streaming from the primary.",
            ("cluster", "replica"),
        ),
        MetricSpec(
            "replication_writable",
            _G,
            "1 if the server accepts writes (not in recovery); two in one pair is split brain.",
            ("cluster", "replica", "role"),
        ),
        MetricSpec(
            "replication_rpo_seconds", _G, "Configured recovery point objective.", ("cluster",), "s"
        ),
        MetricSpec(
            "idp_up", _G, "1 if every phase of the identity provider check passed.", ("idp",)
        ),
        MetricSpec(
            "idp_phase_duration_seconds",
            _G,
            "Duration of each IdP check phase.",
            ("idp", "phase"),
            "s",
        ),
        MetricSpec(
            "dns_answer_match",
            _G,
            "1 if the answers match what is expected now.",
            ("name", "resolver"),
        ),
        MetricSpec(
            "dns_resolved_site",
            _G,
            "The site the name resolves to (value 1).",
            ("name", "resolver", "site"),
        ),
        MetricSpec(
            "tls_cert_not_after_timestamp_seconds",
            _G,
            "Earliest notAfter in the served certificate chain.",
            ("target",),
            "s",
        ),
        MetricSpec(
            "site_view_down",
            _G,
            "1 if this vantage's view of the site is down (not recovering).",
            ("site",),
        ),
        MetricSpec(
            "site_verdict",
            _G,
            "1 for the site's current verdict, 0 for the others.",
            ("site", "verdict"),
        ),
        MetricSpec(
            "site_failed_over",
            _G,
            "1 while the site's failover is latched (until failback), with the standby it went to.",
            ("site", "failover_target"),
        ),
        MetricSpec(
            "site_hold",
            _G,
            "1 while an operator hold or a maintenance window keeps the site from failing over.",
            ("site",),
        ),
        MetricSpec(
            "site_flapping",
            _G,
            "1 while this vantage's view of the site is flapping (flap penalty over threshold).",
            ("site",),
        ),
        MetricSpec(
            "telemetry_exports_total",
            _C,
            "Telemetry exports by path and outcome.",
            ("path", "result"),
        ),
        MetricSpec("agent_info", _G, "Agent build information (value 1).", ("version",)),
        # Not in the public contract: the agent's own health.
        MetricSpec(
            "check_runs_skipped_total",
            _C,
            "Runs skipped because the previous run of the check was still going.",
            ("check", "kind"),
        ),
        MetricSpec(
            "check_confirmation_runs_total",
            _C,
            "Extra runs of a critical check to confirm a failure or a recovery quickly.",
            ("check", "kind"),
        ),
        MetricSpec(
            "check_success", _G, "1 if the last run of the check succeeded.", ("check", "kind")
        ),
        MetricSpec(
            "check_duration_seconds",
            _G,
            "Duration of the last run of the check.",
            ("check", "kind"),
            "s",
        ),
        MetricSpec(
            "vantage_impaired",
            _G,
            "1 if this vantage sees every site fail while the others do not: it does not vote.",
            (),
        ),
        MetricSpec("sink_errors_total", _C, "Results a sink failed to take.", ("sink",)),
        MetricSpec(
            "cleanup_pending",
            _G,
            "Journey runs whose cleanup is owed (a crash or a failed cleanup), to be retried.",
            (),
        ),
        MetricSpec(
            "cleanup_abandoned_total",
            _C,
            "Journey runs whose cleanup was given up: their synthetic data is left on the site.",
            ("journey", "site"),
        ),
        MetricSpec(
            "event_loop_lag_seconds",
            _G,
            "How late the event loop woke a timer last; agent timings are only as good as this.",
            (),
            "s",
        ),
    )
}

# Buckets for API latency: fine-grained below a second, where business APIs live.
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
class Sample:
    """One value for one series: a gauge's value, a counter's increment or a histogram
    observation, by the spec's type. Labels exclude `vantage`, which the sinks add."""

    spec: MetricSpec
    labels: tuple[tuple[str, str], ...]
    value: float


def _sample(name: str, value: float, **labels: str) -> Sample:
    spec = CATALOGUE[name]
    return Sample(spec, tuple((k, labels[k]) for k in spec.labels), value)


def gauges_of(result: Result) -> list[Sample]:
    """Every gauge a result sets. They replace, as a set, the gauges of the check's previous
    result, so a replica or step that disappears leaves no stale series behind."""
    out = [
        _sample("check_success", 1.0 if result.ok else 0.0, check=result.check, kind=result.kind),
        _sample("check_duration_seconds", result.duration, check=result.check, kind=result.kind),
    ]
    if result.kind == "journey" and result.site is not None:
        out.append(
            _sample(
                "journey_success",
                1.0 if result.ok else 0.0,
                site=result.site,
                journey=result.target,
            )
        )
    for m in result.measurements:
        spec = CATALOGUE[m.name]
        out.append(Sample(spec, tuple((k, m.labels[k]) for k in spec.labels), m.value))
    return out


def increments_of(result: Result) -> list[Sample]:
    """Counter increments and histogram observations for one result."""
    if result.kind != "journey" or result.site is None:
        return []
    site, journey = result.site, result.target
    out = [
        _sample(
            "journey_runs_total",
            1.0,
            site=site,
            journey=journey,
            result="success" if result.ok else "failure",
        ),
        _sample("journey_duration_seconds", result.duration, site=site, journey=journey),
    ]
    for step in result.steps:
        if step.skipped:
            continue
        out.append(
            _sample(
                "step_duration_seconds", step.duration, site=site, journey=journey, step=step.name
            )
        )
        if not step.ok and step.reason is not None:
            out.append(
                _sample(
                    "step_failures_total",
                    1.0,
                    site=site,
                    journey=journey,
                    step=step.name,
                    reason=step.reason.value,
                )
            )
    return out
