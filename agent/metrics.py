"""The catalogue of every metric failsight exports: one source for both telemetry paths and docs."""

from __future__ import annotations

from failsight.core.results import Result
from failsight.core.telemetry import MetricSpec, MetricType, Sample, sample
from failsight.probes.registry import KINDS

_G, _C, _H = MetricType.GAUGE, MetricType.COUNTER, MetricType.HISTOGRAM

# The agent's own families; each kind declares its own (`Kind.metrics`), added below.
AGENT_METRICS: tuple[MetricSpec, ...] = (
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
        "{export}",
    ),
    MetricSpec("agent_info", _G, "Agent build information (value 1).", ("version",)),
    MetricSpec(
        "group_members",
        _G,
        "Members of this agent's group (agent.group) that answer, this one included.",
        (),
        "{member}",
    ),
    MetricSpec(
        "group_members_listed",
        _G,
        "Members the group's DNS SRV name or static list names, answering or not.",
        (),
        "{member}",
    ),
    MetricSpec(
        "group_checks_owned",
        _G,
        "Checks this member of a group runs (its share, and every `every_member` check).",
        (),
        "{check}",
    ),
    MetricSpec(
        "group_partial",
        _G,
        "1 while this member's view of its group lacks a listed member or a site's evidence.",
        (),
    ),
    MetricSpec(
        "group_handovers_total",
        _C,
        "Checks this member took over from another (in) or gave to another (out).",
        ("direction",),
        "{check}",
    ),
    MetricSpec(
        "group_fetches_total",
        _C,
        "Requests this member sent to the other members of its group, by outcome.",
        ("outcome",),
        "{request}",
    ),
    # Not in the public contract: the agent's own health.
    MetricSpec(
        "check_runs_skipped_total",
        _C,
        "Runs skipped because the previous run of the check was still going.",
        ("check", "kind"),
        "{run}",
    ),
    MetricSpec(
        "check_confirmation_runs_total",
        _C,
        "Extra runs of a critical check to confirm a failure or a recovery quickly.",
        ("check", "kind"),
        "{run}",
    ),
    MetricSpec("check_success", _G, "1 if the last run of the check succeeded.", ("check", "kind")),
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
    MetricSpec("sink_errors_total", _C, "Results a sink failed to take.", ("sink",), "{result}"),
    MetricSpec(
        "cleanup_pending",
        _G,
        "Journey runs whose cleanup is owed (a crash or a failed cleanup), to be retried.",
        (),
        "{run}",
    ),
    MetricSpec(
        "cleanup_abandoned_total",
        _C,
        "Journey runs whose cleanup was given up: their synthetic data is left on the site.",
        ("journey", "site"),
        "{run}",
    ),
    MetricSpec(
        "event_loop_lag_seconds",
        _G,
        "How late the event loop woke a timer last; agent timings are only as good as this.",
        (),
        "s",
    ),
    MetricSpec(
        "event_loop_lag_max_seconds",
        _G,
        "The longest the event loop was late waking a timer over the last 60 s (a sliding "
        "window, not reset by a scrape): a stall between two scrapes still shows.",
        (),
        "s",
    ),
)

CATALOGUE: dict[str, MetricSpec] = {
    m.name: m for m in (*AGENT_METRICS, *(m for kind in KINDS for m in kind.metrics))
}
"""Every family failsight exports, by name without the prefix: the agent's, then each kind's."""

_KINDS = {kind.name: kind for kind in KINDS}


def _sample(name: str, value: float, **labels: str) -> Sample:
    return sample(CATALOGUE[name], value, **labels)


def gauges_of(result: Result) -> list[Sample]:
    """Every gauge a result sets. They replace, as a set, the gauges of the check's previous
    result, so a replica or step that disappears leaves no stale series behind."""
    out = [
        _sample("check_success", 1.0 if result.ok else 0.0, check=result.check, kind=result.kind),
        _sample("check_duration_seconds", result.duration, check=result.check, kind=result.kind),
    ]
    kind = _KINDS.get(result.kind)
    if kind is not None:
        out.extend(kind.gauges(result))
    for m in result.measurements:
        spec = CATALOGUE[m.name]
        out.append(Sample(spec, tuple((k, m.labels[k]) for k in spec.labels), m.value))
    return out


def increments_of(result: Result) -> list[Sample]:
    """Counter increments and histogram observations for one result (the kind's own)."""
    kind = _KINDS.get(result.kind)
    if kind is None:
        return []
    samples = kind.increments(result)
    # A kind may return its own fresh list (the journey's, made for each result): no copy.
    return samples if isinstance(samples, list) else list(samples)
