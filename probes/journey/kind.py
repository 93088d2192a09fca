"""The kind's descriptor `KIND`: `plan`, which makes one check per journey and site, the config
cross-checks (references to sites and IdPs, step names, every template's variables defined
before use), and the journey metric families with the samples a result gives them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from failsight.core.check import Check
from failsight.core.kind import Env, Kind, Loc, duplicates
from failsight.core.results import Result
from failsight.core.telemetry import Exemplar, MetricSpec, MetricType, Sample, sample
from failsight.probes.journey.check import JourneyCheck
from failsight.probes.journey.config import (
    BUILTIN_VARIABLES,
    JourneyConfig,
    Step,
    expectation_templates,
)
from failsight.probes.templating import malformed_placeholders, variables_in


def plan(section: Sequence[JourneyConfig], env: Env) -> list[Check]:
    """One check per journey and site it runs against (`sites`, by default every site)."""
    return [
        JourneyCheck(
            journey,
            site=site.name,
            base_url=site.base_url,
            site_headers=site.headers,
            ca_file=site.ca_file,
            tls_verify=site.tls_verify,
        )
        for journey in section
        for site in env.sites
        if journey.sites is None or site.name in journey.sites
    ]


def check_config(section: Sequence[JourneyConfig], env: Env) -> Iterator[tuple[Loc, str]]:
    """References to sites and IdPs, unique step names, and every template's variables
    defined before use (built-ins, the journey's `variables`, what an earlier step extracts),
    in a step's request and in what its assertions and poll expect."""
    site_names = env.site_names
    listed = _names(site_names)
    idp_names = env.names.get("idps", frozenset())
    for j, journey in enumerate(section):
        for s, site_name in enumerate(journey.sites or []):
            if site_name not in site_names:
                yield (
                    (j, "sites", s),
                    f"unknown site {site_name!r} (sites: {listed})",
                )
        if journey.idp is not None and journey.idp not in idp_names:
            yield (j, "idp"), f"unknown idp {journey.idp!r}"
        yield from duplicates((j, "steps"), [s.name for s in journey.steps], "step")
        known = set(BUILTIN_VARIABLES) | set(journey.variables)
        for s, step in enumerate(journey.steps):
            yield from _template_errors((j, "steps", s), step, known, "no earlier step")
            known |= set(step.extract)
        for s, step in enumerate(journey.cleanup):
            yield from _template_errors((j, "cleanup", s), step, known, "no step")


def _template_errors(loc: Loc, step: Step, known: set[str], who: str) -> Iterator[tuple[Loc, str]]:
    fields: list[tuple[Loc, Any]] = [
        (("path",), step.path),
        (("query",), step.query),
        (("json",), step.body),
        (("headers",), {k: v.get_secret_value() for k, v in step.headers.items()}),
        *expectation_templates(step),
    ]
    for key, value in fields:
        for bad in malformed_placeholders(value):
            yield (*loc, *key), f"invalid template {{{{{bad}}}}}: only {{{{variable}}}} is allowed"
        for name in sorted(variables_in(value) - known):
            if name in step.extract and key[0] in ("expect", "poll"):
                # A step's extracts are taken once its response has passed its checks.
                why = "this step extracts only after checking its response"
            else:
                why = f"{who} extracts"
            yield (*loc, *key), f"template uses {{{{{name}}}}}, which {why}"


# How many names a message lists; a config with thousands of sites gets the first few.
_NAMES_SHOWN = 10


def _names(names: frozenset[str]) -> str:
    ordered = sorted(names)
    more = len(ordered) - _NAMES_SHOWN
    shown = ", ".join(ordered[:_NAMES_SHOWN]) or "none"
    return f"{shown} and {more} more" if more > 0 else shown


JOURNEY_RUNS = MetricSpec(
    "journey_runs_total",
    MetricType.COUNTER,
    "Journey runs by outcome.",
    ("site", "journey", "result"),
    "{run}",
)
JOURNEY_SUCCESS = MetricSpec(
    "journey_success",
    MetricType.GAUGE,
    "1 if the last run of the journey succeeded.",
    ("site", "journey"),
)
JOURNEY_DURATION = MetricSpec(
    "journey_duration_seconds",
    MetricType.HISTOGRAM,
    "Journey run duration, steps only.",
    ("site", "journey"),
    "s",
)
STEP_DURATION = MetricSpec(
    "step_duration_seconds",
    MetricType.HISTOGRAM,
    "Journey step duration (polls included).",
    ("site", "journey", "step"),
    "s",
)
STEP_FAILURES = MetricSpec(
    "step_failures_total",
    MetricType.COUNTER,
    "Journey step failures by reason.",
    ("site", "journey", "step", "reason"),
    "{failure}",
)
# Phases are a fraction of a step: a resolve from cache or a connect inside a region takes a
# millisecond or two, a cross-cloud TLS handshake tens of milliseconds, a slow backend's first
# byte seconds. So the buckets start at 1 ms, where the step buckets start at 5 ms, and end at
# 10 s: a phase longer than that is a timeout in the making, and +Inf counts it.
PHASE_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
# The `phase` label's values, from the phases a step result holds (core.http's timings; the
# API, logs and spans keep those names): the names blackbox_exporter users know.
PHASES: dict[str, str] = {
    "dns": "resolve",
    "connect": "connect",
    "tls": "tls",
    "send": "request",
    "ttfb": "first_byte",
    "body": "transfer",
}
STEP_PHASE_DURATION = MetricSpec(
    "step_phase_duration_seconds",
    MetricType.HISTOGRAM,
    "Journey step HTTP phase duration, for the phases the step's request went through.",
    ("site", "journey", "step", "phase"),
    "s",
    buckets=PHASE_BUCKETS,
)
# Named after blackbox_exporter's `probe_http_status_code`, with `step_` as every per-step
# family has, so a blackbox user finds it where they would look.
STEP_HTTP_STATUS = MetricSpec(
    "step_http_status_code",
    MetricType.GAUGE,
    "HTTP status code of the journey step's last response in the last run; 0 if none came.",
    ("site", "journey", "step"),
)


_HEX = "0123456789abcdef"
# Both ids valid, an exemplar's labels hold 8 + 32 + 7 + 16 = 63 characters: always within
# OpenMetrics' 128 (MAX_EXEMPLAR_LABEL_CHARS), so the journey builds its exemplars directly.
_TRACE_ID_LEN = 32
_SPAN_ID_LEN = 16


def _is_id(value: str, length: int) -> bool:
    """Whether `value` is a W3C trace context id of `length` lowercase hex digits, not all
    zeros (an id a run did not get is "")."""
    return len(value) == length and not value.strip(_HEX) and bool(value.strip("0"))


def _trace(trace_id: str, span_id: str, at: float) -> Exemplar:
    """The exemplar linking an observation to the run's trace (`trace_id`, already checked:
    see `increments`), with the span's id when it has a valid one."""
    if _is_id(span_id, _SPAN_ID_LEN):
        return Exemplar((("trace_id", trace_id), ("span_id", span_id)), at)
    return Exemplar((("trace_id", trace_id),), at)


def gauges(result: Result) -> Iterator[Sample]:
    """Whether the journey's last run at its site succeeded, and the last status of each step
    it ran (0: no response). A step it did not reach gets no series: the previous run's status
    would be stale, and gauges are replaced as a set."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return
    site, journey = result.site, result.target
    yield sample(JOURNEY_SUCCESS, 1.0 if result.ok else 0.0, site=site, journey=journey)
    for step in result.steps:
        if not step.skipped:
            status = float(step.status or 0)
            yield sample(STEP_HTTP_STATUS, status, site=site, journey=journey, step=step.name)


# Samples made as NamedTuple's own __new__ makes them (tuple.__new__), without its extra Python
# call: half the cost of `Sample(...)`, for the ~22 samples of a five-step run.
_new = tuple.__new__


def increments(result: Result) -> list[Sample]:
    """The run by outcome and its duration (steps only), and each step that ran: its duration,
    its phases and, failed, its reason. Durations carry the run's trace as exemplar: every
    journey run has a trace id (its requests carry it in `traceparent`), whether or not OTLP
    exports its spans, so the exemplar also leads to the site's own traces; a run cut off
    before it had one gets none.

    This runs for every result, so the label tuples are built here directly in each family's
    label order (`sample()` looks each label up by name) and the trace id is checked once."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return []
    run_labels = (("site", result.site), ("journey", result.target))
    started = result.started_at
    trace_id = result.trace_id
    traced = _is_id(trace_id, _TRACE_ID_LEN)
    outcome = "success" if result.ok else "failure"
    run_trace = _trace(trace_id, result.span_id, started + result.duration) if traced else None
    out: list[Sample] = [
        _new(Sample, (JOURNEY_RUNS, (*run_labels, ("result", outcome)), 1.0, None)),
        _new(Sample, (JOURNEY_DURATION, run_labels, result.duration, run_trace)),
    ]
    for step in result.steps:
        if step.skipped:
            continue
        step_labels = (*run_labels, ("step", step.name))
        trace = (
            _trace(trace_id, step.span_id, started + step.start_offset + step.duration)
            if traced
            else None
        )
        out.append(_new(Sample, (STEP_DURATION, step_labels, step.duration, trace)))
        # A polled step's phases are its last attempt's; a phase the request did not go
        # through (no lookup or connect on a reused connection) is absent, never a zero.
        phases = step.phases
        for key, phase in PHASES.items():
            if key in phases:
                labels = (*step_labels, ("phase", phase))
                out.append(_new(Sample, (STEP_PHASE_DURATION, labels, phases[key], trace)))
        if not step.ok and step.reason is not None:
            labels = (*step_labels, ("reason", step.reason.value))
            out.append(_new(Sample, (STEP_FAILURES, labels, 1.0, None)))
    return out


KIND = Kind(
    name=JourneyCheck.kind,
    key="journeys",
    model=JourneyConfig,
    plan=plan,
    summary="business journeys: ordered HTTP steps with assertions at each site, then cleanup",
    metrics=(
        JOURNEY_RUNS,
        JOURNEY_SUCCESS,
        JOURNEY_DURATION,
        STEP_DURATION,
        STEP_FAILURES,
        STEP_PHASE_DURATION,
        STEP_HTTP_STATUS,
    ),
    naming=("journey", lambda journey: journey.name),
    check_config=check_config,
    gauges=gauges,
    increments=increments,
)
