"""Renders docs/metrics.md from the metric catalogue and the failure reasons the code defines,
so the page cannot drift: tests/agent/test_metrics_doc.py fails when the file differs from
`render()`.

Regenerate: `.venv/bin/python -m failsight.agent.metricsdoc > docs/metrics.md`
"""

from __future__ import annotations

from failsight.agent.metrics import CATALOGUE, LATENCY_BUCKETS
from failsight.core.results import Reason

HEADER = """\
# Metrics

Every metric failsight exports, with its labels, and the closed set of failure reasons.

Generated from the code by `python -m failsight.agent.metricsdoc`; a test fails when this page
and the code disagree.

Every `failsight_*` series carries `vantage`. Gauges are rendered from each check's latest result
at scrape time, so a check, step or replica removed by a reload leaves no stale series. The same
series go over OTLP with OpenTelemetry names (the Prometheus name without the `failsight_`
prefix, the unit and `_total`, under `failsight.`) and the units below; see
[configuration.md](configuration.md#telemetry).
"""

FOOTER = f"""\
Histogram buckets (seconds): {", ".join(f"{b:g}" for b in LATENCY_BUCKETS)}.
`failsight_event_loop_lag_seconds` is how late the agent's event loop woke a timer: when it grows
past a few milliseconds, the agent's own latency figures are no longer trustworthy.
"""

# What the catalogue's help text does not say: label values and fine print, by Prometheus name.
# A key that names no metric in the catalogue is an error (the note would document a metric
# that does not exist).
NOTES: dict[str, str] = {
    "failsight_journey_runs_total": "`result`: `success` or `failure`.",
    "failsight_replication_lag_seconds": (
        "`method`: `heartbeat` (what the verdict uses), `replay_timestamp` or `primary_stat`."
    ),
    "failsight_replication_writable": "`role`: `primary` or `replica`.",
    "failsight_idp_phase_duration_seconds": (
        "`phase`: `discovery`, `jwks`, `token` or `validate`."
    ),
    "failsight_site_verdict": "A state set: one series per verdict word.",
    "failsight_site_failed_over": '`failover_target` is `""` when the site is not failed over.',
    "failsight_telemetry_exports_total": (
        "`path`: `prometheus` or `otlp:<collector>:<signal>`; "
        "`result`: `success`, `failure` or `dropped`."
    ),
    "failsight_cleanup_pending": "Retried every 30 s.",
    "failsight_cleanup_abandoned_total": "After 5 attempts or 24 h.",
}

# The failure reasons table: meaning and where to look, for every member of `Reason`.
REASONS: dict[str, tuple[str, str]] = {
    "timeout": (
        "no answer within the step/run budget, or a `poll` deadline passed",
        "target latency, `poll.deadline`, network path",
    ),
    "connect": (
        "refused, reset, or the body was cut short on the wire",
        "is the service listening? load balancer, firewall",
    ),
    "dns": (
        "a name did not resolve, or a DNS check got NXDOMAIN/SERVFAIL/REFUSED",
        "resolver, zone, the record",
    ),
    "tls": (
        "handshake or certificate verification failed",
        "certificate expiry/hostname/CA (`failsight_tls_*`)",
    ),
    "http_status": (
        "an unexpected status code",
        "the target's own logs (find the run by `X-Failsight-Run-Id`)",
    ),
    "assertion": (
        "the response did not match an expectation, or the body was too large",
        "the step's `expect`; a changed API",
    ),
    "extraction": (
        "the body was not JSON, or an `extract` path matched nothing",
        "content type (maintenance pages), API shape",
    ),
    "auth": (
        "a 401/403, or no token could be had from the IdP",
        "the IdP check (`failsight_idp_up`), credentials",
    ),
    "internal": (
        "a bug in failsight: the run was reported, the agent kept going",
        "the agent log; please report it",
    ),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _metrics_table() -> str:
    specs = sorted(CATALOGUE.values(), key=lambda s: s.prometheus_name)
    unknown = sorted(set(NOTES) - {s.prometheus_name for s in specs})
    if unknown:
        raise ValueError(f"metricsdoc.NOTES names metrics not in the catalogue: {unknown}")
    out = [
        "| name | type | labels (besides `vantage`) | unit | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "(none)"
        meaning = spec.help
        if "reason" in spec.labels:
            meaning += " `reason`: one of the [failure reasons](#failure-reasons)."
        note = NOTES.get(spec.prometheus_name)
        if note:
            meaning += " " + note
        out.append(
            f"| `{spec.prometheus_name}` | {spec.type.value} | {labels} | `{spec.unit}` "
            f"| {_cell(meaning)} |"
        )
    return "\n".join(out) + "\n"


def _reasons_table() -> str:
    members = [r.value for r in Reason]
    missing = [r for r in members if r not in REASONS]
    extra = sorted(set(REASONS) - set(members))
    if missing or extra:
        raise ValueError(
            f"metricsdoc.REASONS is out of step with Reason: missing {missing}, unknown {extra}"
        )
    out = ["| reason | meaning | where to look |", "|---|---|---|"]
    for reason in members:
        meaning, where = REASONS[reason]
        out.append(f"| [`{reason}`](troubleshooting.md#{reason}) | {meaning} | {where} |")
    return "\n".join(out) + "\n"


def render() -> str:
    return "\n".join(
        [
            HEADER,
            "## Metric families\n\n" + _metrics_table(),
            FOOTER,
            "## Failure reasons\n\n"
            "Every failed step or check has exactly one `reason` (what to check for each is in\n"
            "[troubleshooting.md](troubleshooting.md)):\n\n" + _reasons_table(),
        ]
    )


if __name__ == "__main__":
    print(render(), end="")
