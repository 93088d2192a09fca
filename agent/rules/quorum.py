"""The failover group: votes across vantages, failover readiness and the verdict alerts.

It exists because these rules must stay in one Prometheus group, evaluated in order, so that the
alerts reading the votes and the readiness never see those of a previous cycle; and because they
carry the verdict's principles (quorum, data safety, latch, holds) that a controller acts on.
"""

from __future__ import annotations

from failsight.agent.rules.common import (
    CRITICAL,
    INFO,
    WARNING,
    Rule,
    RuleContext,
    any_of,
    duration,
    indent,
    number,
    quote,
    record,
)

__all__ = ["failover_rules"]

# Per (site, vantage): 1 while that vantage's view of the site is down, else 0.
_VIEWS = "failsight_site_view_down"


def failover_rules(ctx: RuleContext) -> list[Rule]:
    """The failover group's rules, in evaluation order: the votes, the standbys' readiness as
    failover targets, then the alerts that read them."""
    rules = _vote_records(ctx)
    rules += _failover_targets(ctx)
    rules += [_failover_recommended(ctx), _failover_unsafe(ctx), _failback_pending(ctx)]
    rules += _total_outage(ctx)
    rules += _site_tickets(ctx)
    return _matchable(ctx, rules)


def _vote_records(ctx: RuleContext) -> list[Rule]:
    """Per site, the unimpaired vantages that see it down, that see it up, and (per failover
    target) that hold its failover latch."""
    on_sites = _on_sites(ctx)
    primaries = _sites_with_role(ctx, "primary")
    return [
        record(
            "failsight:site_down_votes:count",
            f"count by (site) (\n{indent(ctx.votes_of(_VIEWS, 'site', on_sites))} == 1\n)",
        ),
        record(
            "failsight:site_up_votes:count",
            f"count by (site) (\n{indent(ctx.votes_of(_VIEWS, 'site', on_sites))} == 0\n)",
        ),
        # Per (site, failover_target): the unimpaired vantages holding the site's failover
        # latch. Unlatched agents export failover_target="" at 0, which `== 1` drops.
        record(
            "failsight:site_failed_over_votes:count",
            "count by (site, failover_target) (\n"
            + indent(
                ctx.votes_of(
                    "failsight_site_failed_over",
                    "site, failover_target",
                    f"site=~{primaries}, ",
                )
            )
            + " == 1\n)",
        ),
    ]


def _failover_recommended(ctx: RuleContext) -> Rule:
    """FailsightFailoverRecommended: a quorum of vantages holds the site's failover latch."""
    q = ctx.quorum
    latched = _latched(ctx)
    return ctx.alert(
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
        for_=duration(ctx.inp.failover_for),
        severity=CRITICAL,
        labels={"failover_trigger": "true"},
        summary="Fail over {{ $labels.site }} to {{ $labels.failover_target }}",
        description=(
            f"{{{{ $value }}}} vantages (at least {q}, impaired ones not counted) hold"
            " {{ $labels.site }} failed over to {{ $labels.failover_target }}: their"
            " verdict found it down from a quorum while that standby was up, streaming"
            " and within the RPO. It stays latched until failback is released, by an"
            " operator or the auto-failback policy: this alert resolving means failback,"
            " never just the primary answering again."
        ),
    )


def _failover_unsafe(ctx: RuleContext) -> Rule:
    """FailsightFailoverUnsafe: a primary down from a quorum with no standby ready to take
    over, neither latched nor held."""
    q = ctx.quorum
    primaries = _sites_with_role(ctx, "primary")
    latched = _latched(ctx)
    return ctx.alert(
        "FailsightFailoverUnsafe",
        f"(failsight:site_down_votes:count{{site=~{primaries}}} >= {q})\n"
        "unless on (site) failsight:failover_target_ready\n"
        # Once latched the standby serves: its replication from the failed primary
        # breaking is expected, not a reason to page about an unsafe failover.
        f"unless on (site) ({latched})\n"
        # A hold (operator or maintenance window) travels to every agent; one report of
        # it is enough to know nobody will fail the site over.
        f"unless on (site) (max by (site) (failsight_site_hold{{vantage=~{ctx.vantages}}})"
        " == 1)",
        for_="1m",
        severity=CRITICAL,
        summary="{{ $labels.site }} is down but failing over is unsafe",
        description=(
            f"At least {q} vantages see {{{{ $labels.site }}}} down, but no standby is"
            f" up in {q} views with replication lag within the RPO, streaming and no"
            " split brain. Failing over now would lose data or land on a broken site."
        ),
    )


def _failback_pending(ctx: RuleContext) -> Rule:
    """FailsightFailbackPending: still latched though fewer than a quorum see the site down."""
    q = ctx.quorum
    latched = _latched(ctx)
    return ctx.alert(
        "FailsightFailbackPending",
        # No down-votes series at all (every view up) must count as "below quorum":
        # `unless` keeps the latch then, where a comparison would drop it.
        f"({latched})\nunless on (site) (failsight:site_down_votes:count >= {q})",
        for_="15m",
        # Users are served (traffic is on the standby): a decision is due, nothing is broken.
        severity=INFO,
        summary="{{ $labels.site }} answers again; failback awaits a decision",
        description=(
            "{{ $labels.site }} is still failed over to {{ $labels.failover_target }} by"
            f" {{{{ $value }}}} vantages, but fewer than {q} see it down: the former"
            " primary answers again. Failback awaits a decision (verdict.failback:"
            " manual): release with `failsight failback {{ $labels.site }}`."
        ),
    )


def _total_outage(ctx: RuleContext) -> list[Rule]:
    """FailsightTotalOutage, with two sites or more: a quorum of vantages sees every site
    down."""
    if len(ctx.inp.sites) < 2:
        return []
    q = ctx.quorum
    on_sites = _on_sites(ctx)
    n = len(ctx.inp.sites)
    # Per vantage, the number of configured sites it sees down must be all of them: a
    # `min` over the sites would call a vantage that lacks one site's series all-down.
    return [
        ctx.alert(
            "FailsightTotalOutage",
            "count(\n"
            "  count by (vantage) (\n"
            f"{indent(ctx.votes_of(_VIEWS, 'site', on_sites), 4)} == 1\n"
            f"  ) == {n}\n"
            f") >= {q}",
            for_="1m",
            severity=CRITICAL,
            summary="Every site is down from {{ $value }} vantages",
            description=(
                f"{{{{ $value }}}} vantages (at least {q}, impaired ones not counted) see"
                f" every configured site down ({n} of {n}). No standby is healthy, so"
                " failing over would not help: check the shared dependencies (identity"
                " provider, DNS) and the cloud providers."
            ),
        )
    ]


def _site_tickets(ctx: RuleContext) -> list[Rule]:
    """The ticket alerts about one site: down from one vantage only, standby down, flapping."""
    q = ctx.quorum
    standbys = _sites_with_role(ctx, "standby")
    on_sites = _on_sites(ctx)
    return [
        ctx.alert(
            "FailsightSiteDownFromOneVantage",
            f"(max by (site, vantage) ({_VIEWS}{{{on_sites}vantage=~{ctx.vantages}}}) == 1)\n"
            f"unless on (site) (failsight:site_down_votes:count >= {q})",
            for_="2m",
            severity=WARNING,
            summary="{{ $labels.vantage }} sees {{ $labels.site }} down; no quorum agrees",
            description=(
                f"Fewer than {q} vantages see {{{{ $labels.site }}}} down: the fault is"
                " local to the path from {{ $labels.vantage }} (network, DNS, the vantage"
                " itself). This is not a failover."
            ),
        ),
        ctx.alert(
            "FailsightStandbyDown",
            f"failsight:site_down_votes:count{{site=~{standbys}}} >= {q}",
            for_="2m",
            severity=WARNING,
            summary="Standby {{ $labels.site }} is down",
            description=(
                f"At least {q} vantages see standby {{{{ $labels.site }}}} down. Nothing to"
                " fail over, but a primary failing now would have one standby fewer."
            ),
        ),
        ctx.alert(
            "FailsightSiteFlapping",
            "count by (site) (\n"
            "  max by (site, vantage) (\n"
            f"    failsight_site_flapping{{{on_sites}vantage=~{ctx.vantages}}}\n"
            "  ) == 1\n"
            ")",
            for_="1m",
            severity=WARNING,
            summary="{{ $labels.site }} is flapping",
            description=(
                "{{ $labels.site }} keeps changing state (its flap penalty is over the"
                " threshold from {{ $value }} vantage(s)). The agents fail it over at most once"
                " per flapping episode; look for what makes it come and go: an unstable"
                " dependency, a load balancer cycling backends, a crash-looping service."
            ),
        ),
    ]


def _matchable(ctx: RuleContext, rules: list[Rule]) -> list[Rule]:
    """`rules` less those that need a role (primary, standby) that no configured site has."""
    # A deployment without primaries (or standbys) gets no rule that could never match.
    needs_primary = {
        "failsight:site_failed_over_votes:count",
        "FailsightFailoverRecommended",
        "FailsightFailoverUnsafe",
        "FailsightFailbackPending",
    }
    has_role = {role for _, role in ctx.inp.sites}
    return [
        r
        for r in rules
        if not (r.get("alert", r.get("record")) in needs_primary and "primary" not in has_role)
        and not (r.get("alert") == "FailsightStandbyDown" and "standby" not in has_role)
    ]


def _failover_targets(ctx: RuleContext) -> list[Rule]:
    """One `failsight:failover_target_ready` series per (site, standby) pair that is ready;
    its value ranks the standby by config order, so the first ready one is the target."""
    standbys = [site for site, role in ctx.inp.sites if role == "standby"]
    rules = []
    for site in sorted(site for site, role in ctx.inp.sites if role == "primary"):
        candidates = [s for s in standbys if s != site]
        for rank, target in enumerate(candidates, start=1):
            up_votes = f"failsight:site_up_votes:count{{site={quote(target)}}}"
            clauses = [f"vector({rank})", f"and on () ({up_votes} >= {ctx.quorum})"]
            for cluster, primary, replica, rpo in sorted(ctx.inp.replication):
                if primary != site or ctx.inp.replica_site(cluster, replica) != target:
                    continue
                pair = f"cluster={quote(cluster)}, replica={quote(replica)}"
                # Safety first: the worst lag any vantage sees, and streaming in every view.
                clauses += [
                    "and on () (\n  max(failsight_replication_lag_seconds"
                    f'{{{pair}, method="heartbeat"}}) <= {number(rpo)}\n)',
                    f"and on () (min(failsight_replication_streaming{{{pair}}}) == 1)",
                    "unless on () (\n"
                    f'  max(failsight_replication_writable{{{pair}, role="replica"}}) == 1\n'
                    "  and on ()\n"
                    f'  max(failsight_replication_writable{{{pair}, role="primary"}}) == 1\n'
                    ")",
                ]
            rules.append(
                record(
                    "failsight:failover_target_ready",
                    "\n".join(clauses),
                    {"site": site, "failover_target": target},
                )
            )
    return rules


def _sites_with_role(ctx: RuleContext, role: str) -> str:
    """An anchored regex of the configured sites with `role` ("primary" or "standby")."""
    return any_of(site for site, r in ctx.inp.sites if r == role)


def _on_sites(ctx: RuleContext) -> str:
    """The matcher (with its trailing separator) for the configured sites."""
    return f"site=~{ctx.sites}, "


def _latched(ctx: RuleContext) -> str:
    """The failover latches held by a quorum of vantages, per (site, failover_target)."""
    return f"failsight:site_failed_over_votes:count >= {ctx.quorum}"
