"""What every group of generated rules shares: the input, its validation, the PromQL text helpers
and the rule builders.

It exists so that the modules writing one group each (quorum, SLO, dependencies, the agents)
compose PromQL and alerts the same way, without importing the package that assembles them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from failsight.agent.slo import SloConfig

RUNBOOK_BASE = "https://github.com/failsight/failsight/blob/main/docs/alerts.md"
"""Every alert's `runbook_url` is this plus `#` and the alert name in lower case."""

ROLES = ("primary", "standby")
# The severities Alertmanager routing trees, kube-prometheus and PagerDuty's integration speak:
# critical wakes someone (a failover, an unsafe failover, a fast SLO burn), warning is a
# ticket for working hours, info needs no action now (context beside the other alerts).
CRITICAL, WARNING, INFO = "critical", "warning", "info"

IMPAIRED = "failsight_vantage_impaired == 1"

Rule = dict[str, Any]
"""One rule of a group, as it is written to YAML (keys in the order written)."""


@dataclass(frozen=True)
class RulesInput:
    """What the rules depend on, taken from the loaded config."""

    quorum: int
    vantages: tuple[str, ...]  # every vantage expected to report (self + peers)
    sites: tuple[tuple[str, str], ...]  # (site, role), role in {"primary", "standby"}
    # (cluster, primary_site, replica, rpo_seconds); `replica` is the `replica` label value.
    replication: tuple[tuple[str, str, str, float], ...]
    slos: tuple[SloConfig, ...]
    journey_sites: Mapping[str, tuple[str, ...]]  # journey -> sites it runs against
    # (cluster, replica) -> the site the replica runs in, for replicas not named after it.
    replica_sites: Mapping[tuple[str, str], str] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The `for:` of FailsightFailoverRecommended, in seconds (`failsight rules --failover-for`).
    failover_for: float = 0.0
    # Where the alert docs live (`failsight rules --runbook-base`).
    runbook_base: str = RUNBOOK_BASE

    def replica_site(self, cluster: str, replica: str) -> str:
        return self.replica_sites.get((cluster, replica), replica)


def validate(inp: RulesInput) -> None:
    """Raise ValueError listing every inconsistency of `inp`."""
    problems = []
    if not inp.vantages or len(set(inp.vantages)) != len(inp.vantages):
        problems.append("vantages must be a non-empty list of distinct names")
    if not 1 <= inp.quorum <= len(set(inp.vantages)):
        problems.append(f"quorum {inp.quorum} must be between 1 and the number of vantages")
    if not (math.isfinite(inp.failover_for) and inp.failover_for >= 0):
        problems.append(
            f"failover_for must be a number of seconds, zero or more (got {inp.failover_for!r})"
        )
    # The alert name is appended as the fragment, and annotations are expanded as Go templates.
    base = inp.runbook_base
    if not base or any(c in "#{}" or c.isspace() for c in base):
        problems.append(f"runbook_base must be a URL without '#', braces or spaces (got {base!r})")
    site_names = [site for site, _ in inp.sites]
    if len(set(site_names)) != len(site_names):
        problems.append("site names must be distinct")
    problems += [
        f"site {s}: role {r!r} is not one of {ROLES}" for s, r in inp.sites if r not in ROLES
    ]
    for cluster, primary, replica, rpo in inp.replication:
        replica_site = inp.replica_site(cluster, replica)
        if primary not in site_names or replica_site not in site_names:
            problems.append(
                f"replication {cluster}: primary {primary} and replica site {replica_site} "
                "must be configured sites"
            )
        if not rpo > 0:
            problems.append(f"replication {cluster}: rpo must be greater than zero")
    names = [slo.name for slo in inp.slos]
    if len(set(names)) != len(names):
        problems.append("slo names must be distinct")
    for slo in inp.slos:
        sites = inp.journey_sites.get(slo.journey)
        if not sites:
            problems.append(f"slo {slo.name}: journey {slo.journey} runs against no site")
    if problems:
        raise ValueError("; ".join(problems))


# --- PromQL text helpers --------------------------------------------------------------------


def quote(value: str) -> str:
    """A PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def any_of(values: Iterable[str]) -> str:
    """A PromQL literal for a regex matching exactly one of `values` (matchers are anchored)."""
    alternatives = ("".join("\\" + c if c in _RE2_SPECIAL else c for c in v) for v in values)
    return quote("|".join(sorted(set(alternatives))))


def template_text(value: str) -> str:
    """A static alert label value: Prometheus expands labels as Go templates, so `{{` in a
    configured name must be written as a template that prints it."""
    return value.replace("{{", '{{ "{{" }}')


def duration(seconds: float) -> str:
    """A PromQL duration for a whole number of milliseconds, in the largest exact unit."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"  # not "0d", which is valid but reads like a typo
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def seconds(text: str) -> float:
    """The inverse of `duration`, for sorting durations."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise ValueError(text)


def number(value: float) -> str:
    """A float as PromQL and Prometheus' own `le` labels print it (2.5, 30, 0.005)."""
    if value == math.floor(value):
        return str(int(value))
    return repr(value)


def le_matcher(threshold: float) -> str:
    # The Prometheus client prints bucket bounds as `1.0`, the OpenTelemetry translation as `1`:
    # a rule must match whichever telemetry path the series arrived by.
    text = number(threshold)
    if "." in text or "e" in text:
        return f"le={quote(text)}"
    return "le=~" + quote(f"{text}|{text}\\.0")


def indent(text: str, spaces: int = 2) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


# --- rule builders ---------------------------------------------------------------------------


class PromQL(str):
    """An expression: always written as a YAML literal block, exactly as composed here."""


def record(name: str, expr: str, labels: Mapping[str, str] | None = None) -> Rule:
    rule: Rule = {"record": name, "expr": PromQL(expr)}
    if labels:
        rule["labels"] = dict(sorted(labels.items()))
    return rule


class RuleContext:
    """What every group's builders derive from the (validated) input: the quorum, the anchored
    regexes of the configured vantages and sites, and where runbook links point."""

    def __init__(self, inp: RulesInput) -> None:
        self.inp = inp
        self.quorum = inp.quorum
        self.vantages = any_of(inp.vantages)
        self.sites = any_of(site for site, _ in inp.sites)

    def votes_of(self, metric: str, by: str, matchers: str = "") -> str:
        """Per-vantage series of `metric`, one per (by, vantage), impaired vantages left out."""
        return (
            f"max by ({by}, vantage) (\n"
            f"  {metric}{{{matchers}vantage=~{self.vantages}}}\n"
            f"  unless on (vantage) ({IMPAIRED})\n"
            f")"
        )

    def alert(
        self,
        name: str,
        expr: str,
        *,
        for_: str,
        severity: str,
        labels: Mapping[str, str] | None = None,
        summary: str,
        description: str,
    ) -> Rule:
        """An alert: every one has a severity (CRITICAL, WARNING or INFO), `labels` adds the
        others it carries."""
        all_labels = {"severity": severity, **(labels or {})}
        return {
            "alert": name,
            "expr": PromQL(expr),
            "for": for_,
            "labels": {k: template_text(v) for k, v in sorted(all_labels.items())},
            "annotations": {
                "description": description,
                "runbook_url": f"{self.inp.runbook_base}#{name.lower()}",
                "summary": summary,
            },
        }
