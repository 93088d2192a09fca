"""The kind's descriptor `KIND`: `plan`, which makes one check per journey and site, the config
cross-checks (references to sites and IdPs, step names, every template's variables defined
before use), and the journey metric families with the samples a result gives them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from failsight.core.check import Check
from failsight.core.kind import Env, Kind, Loc, duplicates
from failsight.core.results import Result
from failsight.core.telemetry import MetricSpec, MetricType, Sample, sample
from failsight.probes.journey.check import JourneyCheck
from failsight.probes.journey.config import BUILTIN_VARIABLES, JourneyConfig, Step
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
    defined before use (built-ins, the journey's `variables`, what an earlier step extracts)."""
    site_names = env.site_names
    idp_names = env.names.get("idps", frozenset())
    for j, journey in enumerate(section):
        for s, site_name in enumerate(journey.sites or []):
            if site_name not in site_names:
                yield (
                    (j, "sites", s),
                    f"unknown site {site_name!r} (sites: {_names(site_names)})",
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
    fields: dict[str, Any] = {
        "path": step.path,
        "query": step.query,
        "json": step.body,
        "headers": {k: v.get_secret_value() for k, v in step.headers.items()},
    }
    for key, value in fields.items():
        for bad in malformed_placeholders(value):
            yield (*loc, key), f"invalid template {{{{{bad}}}}}: only {{{{variable}}}} is allowed"
        for name in sorted(variables_in(value) - known):
            yield (*loc, key), f"template uses {{{{{name}}}}}, which {who} extracts"


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none"


JOURNEY_RUNS = MetricSpec(
    "journey_runs_total",
    MetricType.COUNTER,
    "Journey runs by outcome.",
    ("site", "journey", "result"),
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
)


def gauges(result: Result) -> Iterator[Sample]:
    """Whether the journey's last run at its site succeeded."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return
    yield sample(
        JOURNEY_SUCCESS, 1.0 if result.ok else 0.0, site=result.site, journey=result.target
    )


def increments(result: Result) -> Iterator[Sample]:
    """The run by outcome and its duration (steps only), and each step that ran: its duration
    and, failed, its reason."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return
    site, journey = result.site, result.target
    yield sample(
        JOURNEY_RUNS, 1.0, site=site, journey=journey, result="success" if result.ok else "failure"
    )
    yield sample(JOURNEY_DURATION, result.duration, site=site, journey=journey)
    for step in result.steps:
        if step.skipped:
            continue
        yield sample(STEP_DURATION, step.duration, site=site, journey=journey, step=step.name)
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
    metrics=(JOURNEY_RUNS, JOURNEY_SUCCESS, JOURNEY_DURATION, STEP_DURATION, STEP_FAILURES),
    naming=("journey", lambda journey: journey.name),
    check_config=check_config,
    gauges=gauges,
    increments=increments,
)
