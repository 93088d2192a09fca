"""Renders docs/metrics.md from the metric catalogue and the failure reasons the code defines,
so the page cannot drift: tests/agent/test_metrics_doc.py fails when the file differs from
`render()`.

Regenerate: `.venv/bin/python -m failsight.agent.metricsdoc > docs/metrics.md`
"""

from __future__ import annotations

from failsight.agent.metrics import CATALOGUE
from failsight.core.results import Reason
from failsight.core.telemetry import LATENCY_BUCKETS, MAX_EXEMPLAR_LABEL_CHARS, MetricType

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

FOOTER = """\
`failsight_event_loop_lag_seconds` is how late the agent's event loop woke a timer: when it grows
past a few milliseconds, the agent's own latency figures are no longer trustworthy.
"""

EXPOSITION = f"""\
## Exposition formats and exemplars

`/metrics` answers in the format the scraper asks for in its `Accept` header:

- `application/openmetrics-text` (Prometheus asks for it first): OpenMetrics 1.0.0
  (`Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8`, ending in
  `# EOF`). A counter's family is named without `_total` and its sample with it, as OpenMetrics
  wants; the series are the same as in the classic format.
- anything else, or no `Accept` header: the classic text format 0.0.4
  (`text/plain; version=0.0.4; charset=utf-8`). A scraper that accepts `text/plain` with a
  higher `q` than OpenMetrics gets it too.

Only OpenMetrics carries exemplars. Every observation of `failsight_journey_duration_seconds`,
`failsight_step_duration_seconds` and `failsight_step_phase_duration_seconds` links to the
journey run it came from: each bucket carries the exemplar of the latest observation that fell
into it, with the value observed, when, and two labels: `trace_id` (32 hex digits: the run's
trace, which every request of the run sends the site in `traceparent`, so it finds the site's
own spans even with OTLP export off) and `span_id` (16 hex digits: the step's span, or the
run's root span for the journey duration). Together they stay well within OpenMetrics' limit
of {MAX_EXEMPLAR_LABEL_CHARS} characters for an exemplar's labels. Prometheus keeps exemplars
with `--enable-feature=exemplar-storage` and serves them from `/api/v1/query_exemplars`;
Grafana links them to a trace data source by `trace_id`. A run cut off by its check's hard
limit has no trace, and its observation no exemplar.
"""


def _buckets_text() -> str:
    """The default histogram buckets, and the families that declare their own."""
    lines = [f"Histogram buckets (seconds): {_bounds(LATENCY_BUCKETS)}."]
    for spec in sorted(CATALOGUE.values(), key=lambda s: s.prometheus_name):
        if spec.type is MetricType.HISTOGRAM and spec.buckets != LATENCY_BUCKETS:
            lines.append(f"Those of `{spec.prometheus_name}`: {_bounds(spec.buckets)}.")
    return "\n".join(lines) + "\n"


def _bounds(bounds: tuple[float, ...]) -> str:
    return ", ".join(f"{b:g}" for b in bounds)


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
    "failsight_step_phase_duration_seconds": (
        "`phase`: `resolve` (the DNS lookup), `connect` (the TCP connect), `tls` (the TLS "
        "handshake, on https), `request` (sending the request headers), "
        "`first_byte` (from then until the response headers: the body upload and the server's "
        "work) and `transfer` (reading the body). Only the phases the request went through: a "
        "reused keep-alive connection has no `resolve`, `connect` or `tls`, a name answered "
        "from the resolver cache (10 s) or an IP address no `resolve`. A polled step's phases "
        "are its last attempt's; cleanup steps are not counted. Its size: 15 samples per phase "
        "series, about 270 per five-step journey and site, three quarters of what a journey "
        "adds to a scrape ([performance.md](performance.md))."
    ),
    "failsight_step_http_status_code": (
        "Like blackbox_exporter's `probe_http_status_code`; a polled step's last attempt. "
        "A step the run did not reach (after a failed one) has no series until it runs again."
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
            _buckets_text() + FOOTER,
            EXPOSITION,
            "## Failure reasons\n\n"
            "Every failed step or check has exactly one `reason` (what to check for each is in\n"
            "[troubleshooting.md](troubleshooting.md)):\n\n" + _reasons_table(),
        ]
    )


if __name__ == "__main__":
    print(render(), end="")
