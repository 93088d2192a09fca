"""Generates the Prometheus rule file (SLO burn rates, failover, dependency alerts) from config."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import yaml

from failsight.agent.slo import SloConfig

if TYPE_CHECKING:
    from failsight.agent.config import Config

__all__ = ["RUNBOOK_BASE", "RulesInput", "render_rules", "rules_input"]

RUNBOOK_BASE = "README.md"
"""Every alert's `runbook_url` is this plus `#` and the alert name in lower case."""

_ROLES = ("primary", "standby")

# The SRE workbook's multiwindow, multi-burn-rate alerts (chapter 5, table 5-8): a burn rate of
# 14.4 spends 2% of a 30-day budget in one hour. The short window of each pair makes the alert
# stop soon after the burn stops.
_PAGE_BURNS = (("5m", "1h", 14.4), ("30m", "6h", 6.0))
_TICKET_BURNS = (("2h", "1d", 3.0), ("6h", "3d", 1.0))
_BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

_IMPAIRED = "failsight_vantage_impaired == 1"
_CERT_WARNING_DAYS = 14
_TELEMETRY_FAILURE_SHARE = 0.5


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

    def replica_site(self, cluster: str, replica: str) -> str:
        return self.replica_sites.get((cluster, replica), replica)


def rules_input(config: Config, failover_for: float = 0.0) -> RulesInput:
    """What the rules need from a loaded config; `failover_for` is the `for:` of
    FailsightFailoverRecommended in seconds."""
    replication = tuple(
        (c.cluster, c.primary.site, r.name, c.rpo) for c in config.replication for r in c.replicas
    )
    return RulesInput(
        quorum=config.quorum,
        vantages=config.vantages,
        sites=tuple((s.name, s.role) for s in config.sites),
        replication=replication,
        slos=tuple(config.slos),
        journey_sites=MappingProxyType(
            {j.name: tuple(s.name for s in config.journey_sites(j)) for j in config.journeys}
        ),
        replica_sites=MappingProxyType(
            {
                (c.cluster, r.name): r.site
                for c in config.replication
                for r in c.replicas
                if r.name != r.site
            }
        ),
        failover_for=failover_for,
    )


# --- PromQL text helpers --------------------------------------------------------------------


def _q(value: str) -> str:
    """A PromQL double-quoted string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def _any_of(values: Iterable[str]) -> str:
    """A PromQL literal for a regex matching exactly one of `values` (matchers are anchored)."""
    alternatives = ("".join("\\" + c if c in _RE2_SPECIAL else c for c in v) for v in values)
    return _q("|".join(sorted(set(alternatives))))


def _template_text(value: str) -> str:
    """A static alert label value: Prometheus expands labels as Go templates, so `{{` in a
    configured name must be written as a template that prints it."""
    return value.replace("{{", '{{ "{{" }}')


def _duration(seconds: float) -> str:
    """A PromQL duration for a whole number of milliseconds, in the largest exact unit."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"  # not "0d", which is valid but reads like a typo
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def _number(value: float) -> str:
    """A float as PromQL and Prometheus' own `le` labels print it (2.5, 30, 0.005)."""
    if value == math.floor(value):
        return str(int(value))
    return repr(value)


def _le_matcher(threshold: float) -> str:
    # The Prometheus client prints bucket bounds as `1.0`, the OpenTelemetry translation as `1`:
    # a rule must match whichever telemetry path the series arrived by.
    text = _number(threshold)
    if "." in text or "e" in text:
        return f"le={_q(text)}"
    return "le=~" + _q(f"{text}|{text}\\.0")


def _indent(text: str, spaces: int = 2) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


# --- rule builders ---------------------------------------------------------------------------


def _alert(
    name: str,
    expr: str,
    *,
    for_: str,
    labels: Mapping[str, str],
    summary: str,
    description: str,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": _PromQL(expr),
        "for": for_,
        "labels": {k: _template_text(v) for k, v in sorted(labels.items())},
        "annotations": {
            "description": description,
            "runbook_url": f"{RUNBOOK_BASE}#{name.lower()}",
            "summary": summary,
        },
    }


def _record(name: str, expr: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": _PromQL(expr)}
    if labels:
        rule["labels"] = dict(sorted(labels.items()))
    return rule


class _Rules:
    def __init__(self, inp: RulesInput) -> None:
        _validate(inp)
        self.inp = inp
        self.quorum = inp.quorum
        self.vantages = _any_of(inp.vantages)
        self.sites = _any_of(site for site, _ in inp.sites)

    def votes_of(self, metric: str, by: str, matchers: str = "") -> str:
        """Per-vantage series of `metric`, one per (by, vantage), impaired vantages left out."""
        return (
            f"max by ({by}, vantage) (\n"
            f"  {metric}{{{matchers}vantage=~{self.vantages}}}\n"
            f"  unless on (vantage) ({_IMPAIRED})\n"
            f")"
        )

    # Failover ----------------------------------------------------------------------------

    def failover(self) -> list[dict[str, Any]]:
        q = self.quorum
        views = "failsight_site_view_down"
        primaries = _any_of(site for site, role in self.inp.sites if role == "primary")
        standbys = _any_of(site for site, role in self.inp.sites if role == "standby")
        on_sites = f"site=~{self.sites}, "
        latched = f"failsight:site_failed_over_votes:count >= {q}"
        rules = [
            _record(
                "failsight:site_down_votes:count",
                f"count by (site) (\n{_indent(self.votes_of(views, 'site', on_sites))} == 1\n)",
            ),
            _record(
                "failsight:site_up_votes:count",
                f"count by (site) (\n{_indent(self.votes_of(views, 'site', on_sites))} == 0\n)",
            ),
            # Per (site, failover_target): the unimpaired vantages holding the site's failover
            # latch. Unlatched agents export failover_target="" at 0, which `== 1` drops.
            _record(
                "failsight:site_failed_over_votes:count",
                "count by (site, failover_target) (\n"
                + _indent(
                    self.votes_of(
                        "failsight_site_failed_over",
                        "site, failover_target",
                        f"site=~{primaries}, ",
                    )
                )
                + " == 1\n)",
            ),
        ]
        rules += self.failover_targets()
        rules += [
            _alert(
                "FailsightFailoverRecommended",
                # The agents decide (quorum, data safety, holds, flap damping) and latch; this
                # only counts their latches, so it says what /v1/verdict says (failed_over), fires
                # on after the primary recovers (a "resolved" means failback was released, never
                # that the primary answers again) and never for a held or recovering site.
                # `for:` defaults to 0s: each view already needed failure_threshold failed runs
                # in a row and the quorum and safety gating happened in the agents, so waiting
                # again only delays the controller; with 15s scrape and evaluation intervals the
                # webhook reaches it within about 15-30s of the verdict.
                latched,
                for_=_duration(self.inp.failover_for),
                labels={"severity": "page", "failover_trigger": "true"},
                summary="Fail over {{ $labels.site }} to {{ $labels.failover_target }}",
                description=(
                    f"{{{{ $value }}}} vantages (at least {q}, impaired ones not counted) hold"
                    " {{ $labels.site }} failed over to {{ $labels.failover_target }}: their"
                    " verdict found it down from a quorum while that standby was up, streaming"
                    " and within the RPO. It stays latched until failback is released, by an"
                    " operator or the auto-failback policy: this alert resolving means failback,"
                    " never just the primary answering again."
                ),
            ),
            _alert(
                "FailsightFailoverUnsafe",
                f"(failsight:site_down_votes:count{{site=~{primaries}}} >= {q})\n"
                "unless on (site) failsight:failover_target_ready\n"
                # Once latched the standby serves: its replication from the failed primary
                # breaking is expected, not a reason to page about an unsafe failover.
                f"unless on (site) ({latched})\n"
                # A hold (operator or maintenance window) travels to every agent; one report of
                # it is enough to know nobody will fail the site over.
                f"unless on (site) (max by (site) (failsight_site_hold{{vantage=~{self.vantages}}})"
                " == 1)",
                for_="1m",
                labels={"severity": "page"},
                summary="{{ $labels.site }} is down but failing over is unsafe",
                description=(
                    f"At least {q} vantages see {{{{ $labels.site }}}} down, but no standby is"
                    f" up in {q} views with replication lag within the RPO, streaming and no"
                    " split brain. Failing over now would lose data or land on a broken site."
                ),
            ),
            _alert(
                "FailsightFailbackPending",
                # No down-votes series at all (every view up) must count as "below quorum":
                # `unless` keeps the latch then, where a comparison would drop it.
                f"({latched})\nunless on (site) (failsight:site_down_votes:count >= {q})",
                for_="15m",
                labels={"severity": "ticket"},
                summary="{{ $labels.site }} answers again; failback awaits a decision",
                description=(
                    "{{ $labels.site }} is still failed over to {{ $labels.failover_target }} by"
                    f" {{{{ $value }}}} vantages, but fewer than {q} see it down: the former"
                    " primary answers again. Failback awaits a decision (verdict.failback:"
                    " manual): release with `failsight failback {{ $labels.site }}`."
                ),
            ),
        ]
        if len(self.inp.sites) >= 2:
            n = len(self.inp.sites)
            # Per vantage, the number of configured sites it sees down must be all of them: a
            # `min` over the sites would call a vantage that lacks one site's series all-down.
            rules.append(
                _alert(
                    "FailsightTotalOutage",
                    "count(\n"
                    "  count by (vantage) (\n"
                    f"{_indent(self.votes_of(views, 'site', on_sites), 4)} == 1\n"
                    f"  ) == {n}\n"
                    f") >= {q}",
                    for_="1m",
                    labels={"severity": "page"},
                    summary="Every site is down from {{ $value }} vantages",
                    description=(
                        f"{{{{ $value }}}} vantages (at least {q}, impaired ones not counted) see"
                        f" every configured site down ({n} of {n}). No standby is healthy, so"
                        " failing over would not help: check the shared dependencies (identity"
                        " provider, DNS) and the cloud providers."
                    ),
                )
            )
        rules += [
            _alert(
                "FailsightSiteDownFromOneVantage",
                f"(max by (site, vantage) ({views}{{{on_sites}vantage=~{self.vantages}}}) == 1)\n"
                f"unless on (site) (failsight:site_down_votes:count >= {q})",
                for_="2m",
                labels={"severity": "ticket"},
                summary="{{ $labels.vantage }} sees {{ $labels.site }} down; no quorum agrees",
                description=(
                    f"Fewer than {q} vantages see {{{{ $labels.site }}}} down: the fault is"
                    " local to the path from {{ $labels.vantage }} (network, DNS, the vantage"
                    " itself). This is not a failover."
                ),
            ),
            _alert(
                "FailsightStandbyDown",
                f"failsight:site_down_votes:count{{site=~{standbys}}} >= {q}",
                for_="2m",
                labels={"severity": "ticket"},
                summary="Standby {{ $labels.site }} is down",
                description=(
                    f"At least {q} vantages see standby {{{{ $labels.site }}}} down. Nothing to"
                    " fail over, but a primary failing now would have one standby fewer."
                ),
            ),
            _alert(
                "FailsightSiteFlapping",
                "count by (site) (\n"
                "  max by (site, vantage) (\n"
                f"    failsight_site_flapping{{{on_sites}vantage=~{self.vantages}}}\n"
                "  ) == 1\n"
                ")",
                for_="1m",
                labels={"severity": "ticket"},
                summary="{{ $labels.site }} is flapping",
                description=(
                    "{{ $labels.site }} keeps changing state (its flap penalty is over the"
                    " threshold from {{ $value }} vantage(s)). The agents fail it over at most once"
                    " per flapping episode; look for what makes it come and go: an unstable"
                    " dependency, a load balancer cycling backends, a crash-looping service."
                ),
            ),
        ]
        # A deployment without primaries (or standbys) gets no rule that could never match.
        needs_primary = {
            "failsight:site_failed_over_votes:count",
            "FailsightFailoverRecommended",
            "FailsightFailoverUnsafe",
            "FailsightFailbackPending",
        }
        has_role = {role for _, role in self.inp.sites}
        return [
            r
            for r in rules
            if not (r.get("alert", r.get("record")) in needs_primary and "primary" not in has_role)
            and not (r.get("alert") == "FailsightStandbyDown" and "standby" not in has_role)
        ]

    def failover_targets(self) -> list[dict[str, Any]]:
        """One `failsight:failover_target_ready` series per (site, standby) pair that is ready;
        its value ranks the standby by config order, so the first ready one is the target."""
        standbys = [site for site, role in self.inp.sites if role == "standby"]
        rules = []
        for site in sorted(site for site, role in self.inp.sites if role == "primary"):
            candidates = [s for s in standbys if s != site]
            for rank, target in enumerate(candidates, start=1):
                up_votes = f"failsight:site_up_votes:count{{site={_q(target)}}}"
                clauses = [f"vector({rank})", f"and on () ({up_votes} >= {self.quorum})"]
                for cluster, primary, replica, rpo in sorted(self.inp.replication):
                    if primary != site or self.inp.replica_site(cluster, replica) != target:
                        continue
                    pair = f"cluster={_q(cluster)}, replica={_q(replica)}"
                    # Safety first: the worst lag any vantage sees, and streaming in every view.
                    clauses += [
                        "and on () (\n  max(failsight_replication_lag_seconds"
                        f'{{{pair}, method="heartbeat"}}) <= {_number(rpo)}\n)',
                        f"and on () (min(failsight_replication_streaming{{{pair}}}) == 1)",
                        "unless on () (\n"
                        f'  max(failsight_replication_writable{{{pair}, role="replica"}}) == 1\n'
                        "  and on ()\n"
                        f'  max(failsight_replication_writable{{{pair}, role="primary"}}) == 1\n'
                        ")",
                    ]
                rules.append(
                    _record(
                        "failsight:failover_target_ready",
                        "\n".join(clauses),
                        {"site": site, "failover_target": target},
                    )
                )
        return rules

    # SLOs --------------------------------------------------------------------------------

    def ratio_window(self, metric: str, window: str, extra: str = "") -> str:
        selector = f"{{vantage=~{self.vantages}{extra}}}"
        return (
            f"sum by (site, journey) (\n"
            f"  rate({metric}{selector}[{window}])\n"
            f"  unless on (vantage) ({_IMPAIRED})\n"
            f")"
        )

    def error_ratio(self, window: str) -> dict[str, Any]:
        runs = "failsight_journey_runs_total"
        failures = self.ratio_window(runs, window, ', result="failure"')
        total = self.ratio_window(runs, window)
        # A journey that never failed has no failure series: count it as zero, not as no data.
        return _record(
            f"failsight:journey_error_ratio:rate{window}",
            f"(\n{_indent(failures)}\n  or\n  0 * {_indent(total).lstrip()}\n)\n/\n{total}",
        )

    def slow_ratio(self, window: str, threshold: float) -> dict[str, Any]:
        fast = self.ratio_window(
            "failsight_journey_duration_seconds_bucket", window, ", " + _le_matcher(threshold)
        )
        total = self.ratio_window("failsight_journey_duration_seconds_count", window)
        return _record(
            f"failsight:journey_slow_ratio:rate{window}",
            f"1 - (\n{_indent(fast)}\n  /\n{_indent(total)}\n)",
            {"le": _number(threshold)},
        )

    def slo(self) -> list[dict[str, Any]]:
        slos = sorted(self.inp.slos, key=lambda s: s.name)
        budget_windows = {_duration(s.window) for s in slos}
        windows = list(_BURN_WINDOWS) + sorted(budget_windows - set(_BURN_WINDOWS), key=_seconds)
        thresholds = sorted({s.latency_threshold for s in slos if s.latency_threshold})
        rules = [self.error_ratio(w) for w in windows]
        for threshold in thresholds:
            rules += [self.slow_ratio(w, threshold) for w in windows]
        for slo in slos:
            ratio, selector = self.slo_series(slo)
            rules.append(
                _record(
                    "failsight:slo_error_budget_remaining:ratio",
                    f"1 - {ratio}:rate{_duration(slo.window)}{selector}"
                    f" / {_number(slo.error_budget)}",
                    {"slo": slo.name},
                )
            )
        for slo in slos:
            rules += self.burn_alerts(slo)
        return rules

    def slo_series(self, slo: SloConfig) -> tuple[str, str]:
        sites = _any_of(self.inp.journey_sites[slo.journey])
        selector = f"journey={_q(slo.journey)}, site=~{sites}"
        if slo.latency_threshold is None:
            return "failsight:journey_error_ratio", f"{{{selector}}}"
        le = _q(_number(slo.latency_threshold))
        return "failsight:journey_slow_ratio", f"{{{selector}, le={le}}}"

    def burn_alerts(self, slo: SloConfig) -> list[dict[str, Any]]:
        ratio, selector = self.slo_series(slo)
        budget = _number(slo.error_budget)
        what = (
            "failed runs"
            if slo.kind == "availability"
            else f"runs slower than {_number(slo.latency_threshold or 0)}s"
        )
        rules = []
        for severity, burns, for_ in (
            ("page", _PAGE_BURNS, "2m"),
            ("ticket", _TICKET_BURNS, "15m"),
        ):
            branches = [
                f"(\n  {ratio}:rate{short}{selector} > {_number(factor)} * {budget}\n"
                f"  and\n  {ratio}:rate{long}{selector} > {_number(factor)} * {budget}\n)"
                for short, long, factor in burns
            ]
            windows = " or ".join(
                f"{short}+{long} at {_number(factor)}x" for short, long, factor in burns
            )
            rules.append(
                _alert(
                    "FailsightJourneyErrorBudgetBurn",
                    "\nor\n".join(branches),
                    for_=for_,
                    labels={"severity": severity, "slo": slo.name},
                    # Static labels are not in $labels when annotations are expanded.
                    summary=(
                        "{{ $labels.journey }} on {{ $labels.site }} is burning the error budget"
                        f" of {_template_text(slo.name)}"
                    ),
                    description=(
                        f"The share of {what} is {{{{ $value | humanizePercentage }}}} against an"
                        f" objective of {_number(slo.objective)}% over"
                        f" {_duration(slo.window)} (burn windows {windows})."
                    ),
                )
            )
        return rules

    # Replication ---------------------------------------------------------------------------

    def replication(self) -> list[dict[str, Any]]:
        lag_branches = []
        for cluster, _, replica, rpo in sorted(self.inp.replication):
            pair = f"cluster={_q(cluster)}, replica={_q(replica)}"
            lag_branches.append(
                "max by (cluster, replica) (failsight_replication_lag_seconds"
                f'{{{pair}, method="heartbeat"}}) > {_number(rpo)}'
            )
        rules = []
        if lag_branches:
            rules.append(
                _alert(
                    "FailsightReplicationLagAboveRPO",
                    "\nor\n".join(f"({b})" for b in lag_branches),
                    for_="2m",
                    labels={"severity": "ticket"},
                    summary="{{ $labels.replica }} of {{ $labels.cluster }} lags beyond the RPO",
                    description=(
                        "The heartbeat lag of replica {{ $labels.replica }} is"
                        " {{ $value | humanizeDuration }}, above the RPO of cluster"
                        " {{ $labels.cluster }}: failing over to it now would lose data."
                    ),
                )
            )
        rules += [
            _alert(
                "FailsightReplicaNotStreaming",
                "min by (cluster, replica) (failsight_replication_streaming) == 0",
                for_="2m",
                labels={"severity": "ticket"},
                summary="{{ $labels.replica }} of {{ $labels.cluster }} is not streaming",
                description=(
                    "Replica {{ $labels.replica }} does not stream WAL from the primary of"
                    " {{ $labels.cluster }}; its lag will grow until it reconnects."
                ),
            ),
            _alert(
                "FailsightSplitBrain",
                'max by (cluster, replica) (failsight_replication_writable{role="replica"}) == 1\n'
                "and on (cluster, replica)\n"
                'max by (cluster, replica) (failsight_replication_writable{role="primary"}) == 1',
                for_="1m",
                labels={"severity": "page"},
                summary="Split brain in {{ $labels.cluster }}: two writable primaries",
                description=(
                    "Replica {{ $labels.replica }} has left recovery and accepts writes while the"
                    " primary of {{ $labels.cluster }} still does. Writes are diverging; stop one"
                    " of them."
                ),
            ),
        ]
        return rules

    # Dependencies ----------------------------------------------------------------------------

    def dependencies(self) -> list[dict[str, Any]]:
        q = self.quorum
        return [
            _alert(
                "FailsightIdPDown",
                f"count by (idp) (\n{_indent(self.votes_of('failsight_idp_up', 'idp'))} == 0\n)"
                f" >= {q}",
                for_="2m",
                labels={"severity": "page"},
                summary="Identity provider {{ $labels.idp }} is down",
                description=(
                    f"{{{{ $value }}}} vantages (at least {q}) fail to obtain or validate a token"
                    " from {{ $labels.idp }}: every site that depends on it will look down."
                ),
            ),
            _alert(
                "FailsightDNSMisrouted",
                "min by (name, resolver) (\n"
                f"  failsight_dns_answer_match{{vantage=~{self.vantages}}}\n"
                f"  unless on (vantage) ({_IMPAIRED})\n"
                ") == 0",
                for_="2m",
                labels={"severity": "page"},
                summary="{{ $labels.name }} does not resolve where it should",
                description=(
                    "Resolver {{ $labels.resolver }} answers {{ $labels.name }} with addresses"
                    " that are not those of the site it should point at now."
                ),
            ),
            _alert(
                "FailsightCertExpiringSoon",
                "min by (target) (failsight_tls_cert_not_after_timestamp_seconds) - time()\n"
                f"< {_CERT_WARNING_DAYS} * 86400",
                for_="10m",
                labels={"severity": "ticket"},
                summary="The certificate of {{ $labels.target }} expires soon",
                description=(
                    "A certificate served by {{ $labels.target }} expires in"
                    f" {{{{ $value | humanizeDuration }}}} (warning at {_CERT_WARNING_DAYS} days)."
                ),
            ),
        ]

    # The agents themselves ---------------------------------------------------------------------

    def agents(self) -> list[dict[str, Any]]:
        silent = "\nor\n".join(
            f"absent_over_time(failsight_agent_info{{vantage={_q(v)}}}[2m])"
            for v in sorted(self.inp.vantages)
        )
        exports = "failsight_telemetry_exports_total"
        return [
            _alert(
                "FailsightVantageSilent",
                silent,
                for_="1m",
                labels={"severity": "ticket"},
                summary="Vantage {{ $labels.vantage }} stopped reporting",
                description=(
                    "No failsight_agent_info from {{ $labels.vantage }} for 3 minutes: its"
                    " agent or the path to Prometheus is down, and its views no longer vote."
                ),
            ),
            _alert(
                "FailsightTelemetryPathFailing",
                "(\n"
                f'  sum by (vantage, path) (rate({exports}{{result=~"failure|dropped"}}[10m]))\n'
                "  /\n"
                f"  sum by (vantage, path) (rate({exports}[10m]))\n"
                f") > {_number(_TELEMETRY_FAILURE_SHARE)}",
                for_="5m",
                labels={"severity": "ticket"},
                summary="Telemetry path {{ $labels.path }} of {{ $labels.vantage }} is failing",
                description=(
                    "{{ $value | humanizePercentage }} of the exports on {{ $labels.path }} failed"
                    " or were dropped over 10 minutes; the other path still carries the data."
                ),
            ),
        ]


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for unit in ("ms", "s", "m", "h", "d"):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * units[unit]
    raise ValueError(duration)


def _validate(inp: RulesInput) -> None:
    problems = []
    if not inp.vantages or len(set(inp.vantages)) != len(inp.vantages):
        problems.append("vantages must be a non-empty list of distinct names")
    if not 1 <= inp.quorum <= len(set(inp.vantages)):
        problems.append(f"quorum {inp.quorum} must be between 1 and the number of vantages")
    if not (math.isfinite(inp.failover_for) and inp.failover_for >= 0):
        problems.append(
            f"failover_for must be a number of seconds, zero or more (got {inp.failover_for!r})"
        )
    site_names = [site for site, _ in inp.sites]
    if len(set(site_names)) != len(site_names):
        problems.append("site names must be distinct")
    problems += [
        f"site {s}: role {r!r} is not one of {_ROLES}" for s, r in inp.sites if r not in _ROLES
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


class _PromQL(str):
    """An expression: always written as a YAML literal block, exactly as composed here."""


class _Dumper(yaml.SafeDumper):
    pass


def _promql_presenter(dumper: yaml.SafeDumper, value: _PromQL) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value), style="|")


_Dumper.add_representer(_PromQL, _promql_presenter)


def render_rules(inp: RulesInput) -> str:
    """The complete Prometheus rule file for `inp`: same input, same bytes."""
    rules = _Rules(inp)
    groups: Sequence[tuple[str, list[dict[str, Any]]]] = (
        # Votes, readiness and the alerts reading them share a group: rules of one group run in
        # order within one evaluation, so the alerts never see votes from a previous cycle.
        ("failsight-failover", rules.failover()),
        ("failsight-slo", rules.slo()),
        ("failsight-replication", rules.replication()),
        ("failsight-dependencies", rules.dependencies()),
        ("failsight-agents", rules.agents()),
    )
    document = {"groups": [{"name": name, "rules": body} for name, body in groups if body]}
    header = "# Generated by `failsight rules`: edit the config, not this file.\n"
    return header + yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, width=1_000_000, allow_unicode=True
    )
