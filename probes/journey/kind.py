"""The kind's descriptor `KIND`: `plan`, which makes one check per journey and site, the config
cross-checks (references to sites and IdPs, step names, every template's variables defined
before use), and the journey metric families with the samples a result gives them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from failsight.core.check import Check
from failsight.core.kind import Env, Kind, Loc, duplicates
from failsight.core.results import Result
from failsight.core.telemetry import Exemplar, MetricSpec, MetricType, Sample, exemplar, sample
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

_TRACE_ID = re.compile("[0-9a-f]{32}")
_SPAN_ID = re.compile("[0-9a-f]{16}")


def _trace(result: Result, span_id: str, at: float) -> Exemplar | None:
    """The exemplar linking an observation to the run's trace: every journey run has a trace
    id (its requests carry it in `traceparent`), whether or not OTLP exports its spans, so the
    exemplar also leads to the site's own traces. None for a run cut off before it had one."""
    if not _TRACE_ID.fullmatch(result.trace_id) or not result.trace_id.strip("0"):
        return None
    if _SPAN_ID.fullmatch(span_id) and span_id.strip("0"):
        return exemplar(at, trace_id=result.trace_id, span_id=span_id)
    return exemplar(at, trace_id=result.trace_id)


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


def increments(result: Result) -> Iterator[Sample]:
    """The run by outcome and its duration (steps only), and each step that ran: its duration,
    its phases and, failed, its reason. Durations carry the run's trace as exemplar."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return
    site, journey = result.site, result.target
    yield sample(
        JOURNEY_RUNS, 1.0, site=site, journey=journey, result="success" if result.ok else "failure"
    )
    yield sample(
        JOURNEY_DURATION,
        result.duration,
        _trace(result, result.span_id, result.started_at + result.duration),
        site=site,
        journey=journey,
    )
    for step in result.steps:
        if step.skipped:
            continue
        trace = _trace(result, step.span_id, result.started_at + step.start_offset + step.duration)
        yield sample(
            STEP_DURATION, step.duration, trace, site=site, journey=journey, step=step.name
        )
        # A polled step's phases are its last attempt's; a phase the request did not go
        # through (no lookup or connect on a reused connection) is absent, never a zero.
        for key, phase in PHASES.items():
            if key in step.phases:
                yield sample(
                    STEP_PHASE_DURATION,
                    step.phases[key],
                    trace,
                    site=site,
                    journey=journey,
                    step=step.name,
                    phase=phase,
                )
        if not step.ok and step.reason is not None:
            yield sample(
                STEP_FAILURES,
                1.0,
                site=site,
                journey=journey,
                step=step.name,
                reason=step.reason.value,
            )


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
