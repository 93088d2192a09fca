"""The failover verdict per site, from every vantage's view: quorum, freshness and data safety.

Pure functions only: the transport that brings peers' views lives elsewhere, so the rules can be
tested as a table.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from failsight.agent.control import Controls, Hold, Latch, iso
from failsight.agent.view import SiteOpinion, SiteState, VantageView
from failsight.core.results import Remark, ReplicaSafety, Result
from failsight.probes.registry import KINDS

# Kind name -> the key its latest results are listed under in the verdict's `dependencies`.
DEPENDENCY_GROUPS: Mapping[str, str] = MappingProxyType(
    {kind.name: kind.dependency_group for kind in KINDS if kind.dependency_group is not None}
)


class Verdict(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILOVER_RECOMMENDED = "failover_recommended"
    FAILED_OVER = "failed_over"  # latched: stays so until failback is released
    FAILOVER_UNSAFE = "failover_unsafe"
    HELD = "held"  # an operator hold or a maintenance window: never failed over
    UNKNOWN = "unknown"


# What a health checker must treat as "fail over / stay failed over".
FAILOVER_VERDICTS = frozenset({Verdict.FAILOVER_RECOMMENDED, Verdict.FAILED_OVER})

# A failover is entered directly only from these; from any other (a blocked failover, a hold,
# a released latch, no judgement yet) the down votes must first show a run that failed after
# the block cleared.
_DIRECT_ENTRY = frozenset({Verdict.HEALTHY, Verdict.DEGRADED, Verdict.FAILOVER_RECOMMENDED})

# Flapping episodes are compared across agents' wall clocks: allow this much skew.
CLOCK_SKEW_MARGIN = 60.0


@dataclass(frozen=True, slots=True)
class FailbackPolicy:
    """`verdict.failback`: `manual` (an operator releases) or `auto` after `stable_for`."""

    auto: bool = False
    stable_for: float = 600.0


MANUAL = FailbackPolicy()


@dataclass(frozen=True, slots=True)
class ReplicationState:
    """What the replication check last saw of one primary -> replica pair."""

    cluster: str
    primary_site: str
    replica_site: str
    rpo_seconds: float
    lag_seconds: float | None
    streaming: bool
    split_brain: bool
    observed_at: float

    @property
    def within_rpo(self) -> bool:
        return self.lag_seconds is not None and self.lag_seconds <= self.rpo_seconds

    def as_json(self) -> dict[str, object]:
        return {
            "cluster": self.cluster,
            "replica_site": self.replica_site,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "rpo_seconds": self.rpo_seconds,
            "within_rpo": self.within_rpo,
            "streaming": self.streaming,
            "split_brain": self.split_brain,
        }


@dataclass(frozen=True, slots=True)
class Quorum:
    down: int
    fresh: int
    required: int
    vantages: Mapping[str, str]  # vantage -> state, or "stale"/"impaired"


@dataclass(frozen=True, slots=True)
class SiteVerdict:
    site: str
    role: str
    verdict: Verdict
    since: float
    reasons: tuple[str, ...]
    quorum: Quorum
    failover_target: str | None = None
    replication: ReplicationState | None = None
    notes: tuple[str, ...] = field(default=())
    # What the evidence says now, before the latch and holds are applied.
    current: Verdict = Verdict.UNKNOWN
    latch: Latch | None = None
    hold: Hold | None = None
    flapping: bool = False
    total_outage: bool = False
    failback: FailbackPolicy = MANUAL
    # Up in a quorum of views since (this agent's clock); None when not.
    up_since: float | None = None
    failback_due: bool = False
    # While a blocked failover waits for confirmation: each down vote's last run, by vantage.
    confirm: Mapping[str, float] | None = None


def judge_vantages(fresh: Sequence[VantageView], quorum: int) -> tuple[set[str], bool]:
    """Which fresh views are impaired, and whether this is a total outage.

    A vantage whose self-check fails is impaired. One that sees every site fail is impaired
    when another fresh vantage sees otherwise, or when it is alone and has no self-check that
    vouches for its network. When at least `quorum` (and at least two, unless a self-check
    vouches) vantages see every site fail, it is a total outage: they all vote.
    """
    impaired = {v.vantage for v in fresh if v.self_check is False}
    failing = [v for v in fresh if v.every_site_failing and v.vantage not in impaired]
    seeing = [v for v in fresh if not v.every_site_failing and v.vantage not in impaired]
    vouched = [v for v in failing if v.self_check is True]
    if len(failing) >= quorum and (len(failing) >= 2 or vouched) and len(failing) > len(seeing):
        return impaired, True
    for v in failing:
        if seeing or not (v.self_check is True or len(failing) >= 2):
            impaired.add(v.vantage)
    return impaired, False


def decide(
    sites: Sequence[tuple[str, str]],
    views: Sequence[VantageView],
    *,
    quorum: int,
    stale_after: float,
    now: float,
    replication: Sequence[ReplicationState] = (),
    previous: Mapping[str, SiteVerdict] | None = None,
    controls: Controls | None = None,
    failback: Mapping[str, FailbackPolicy] | None = None,
) -> dict[str, SiteVerdict]:
    """The verdict for every site (name, role).

    A vote is a fresh (younger than `stale_after`), non-impaired view. A site is
    `failover_recommended` only when at least `quorum` votes see it down (current failures,
    never `recovering`), a standby is up in at least `quorum` votes and its replication is
    within RPO, streaming and not split-brained. A down site without such a standby is
    `failover_unsafe`; fewer than `quorum` votes is `unknown`. Then the controls: a latched
    site is `failed_over` until failback is released, a held one is `held`.
    """
    previous = previous or {}
    controls = controls or Controls()
    failback = failback or {}
    fresh = [v for v in views if now - v.generated_at <= stale_after]
    status = {v.vantage: "stale" for v in views if now - v.generated_at > stale_after}
    impaired, total = judge_vantages(fresh, quorum)
    status.update({name: "impaired" for name in impaired})
    all_votes = [v for v in fresh if v.vantage not in impaired]
    roles = dict(sites)
    split = [r for r in replication if r.split_brain]
    out: dict[str, SiteVerdict] = {}
    for site, role in sites:
        # A vantage with no evidence of this site (a group member's missing shard) is stale
        # for it: no vote, neither down nor up.
        votes = [v for v in all_votes if site not in v.missing]
        absent = {v.vantage: "stale" for v in all_votes if site in v.missing}
        states = {v.vantage: _opinion(v, site).state for v in votes}
        q = Quorum(
            down=sum(1 for s in states.values() if s is SiteState.DOWN),
            fresh=len(votes),
            required=quorum,
            vantages={**status, **absent, **{v: s.value for v, s in states.items()}},
        )
        verdict, reasons, target, repl = _judge(
            site, role, q, votes, roles, quorum, replication, controls.holds
        )
        if (
            split
            and verdict is not Verdict.UNKNOWN
            and any(site in (r.primary_site, r.replica_site) for r in split)
        ):
            verdict, target = Verdict.FAILOVER_UNSAFE, None
            reasons = (
                *reasons,
                *(
                    f"split brain in {r.cluster}: replica {r.replica_site} "
                    "is writable while the primary is"
                    for r in split
                ),
            )
        if total:
            reasons = (
                f"total outage: every site is down in {len(all_votes)} views; no healthy standby "
                "to fail over to (check shared dependencies and the providers)",
                *reasons,
            )
        before = previous.get(site)
        flapping = [v for v in votes if _opinion(v, site).flapping]
        confirm: Mapping[str, float] | None = None
        if verdict is Verdict.FAILOVER_RECOMMENDED:
            verdict, reasons, confirm = _gate(
                site, verdict, reasons, votes, quorum, before, controls, flapping
            )
            if verdict is not Verdict.FAILOVER_RECOMMENDED:
                target = None
        out[site] = _apply_controls(
            SiteVerdict(
                site,
                role,
                verdict,
                now,
                reasons,
                q,
                target,
                repl,
                current=verdict,
                flapping=bool(flapping),
                total_outage=total,
                failback=failback.get(site, MANUAL),
                confirm=confirm,
                up_since=_up_since(site, votes, quorum, before, now),
            ),
            before,
            controls,
            replication,
            now,
        )
    return out


def _opinion(view: VantageView, site: str) -> SiteOpinion:
    # A vantage that has not judged a site yet says nothing against it.
    return view.sites.get(site, SiteOpinion(SiteState.UP))


def _up_since(
    site: str,
    votes: Sequence[VantageView],
    quorum: int,
    before: SiteVerdict | None,
    now: float,
) -> float | None:
    up = sum(1 for v in votes if _opinion(v, site).state is SiteState.UP)
    if up < quorum:
        return None
    return before.up_since if before is not None and before.up_since is not None else now


def _gate(
    site: str,
    verdict: Verdict,
    reasons: tuple[str, ...],
    votes: Sequence[VantageView],
    quorum: int,
    before: SiteVerdict | None,
    controls: Controls,
    flapping: Sequence[VantageView],
) -> tuple[Verdict, tuple[str, ...], Mapping[str, float] | None]:
    """May a failover be entered now? The flap rule, then the confirmation rule."""
    if controls.latches.get(site) is not None:
        return verdict, reasons, None  # already failed over: nothing is entered
    if flapping:
        episode = min(
            (e for v in flapping if (e := _opinion(v, site).episode_since) is not None),
            default=None,
        )
        last = controls.last_latched_at.get(site)
        if episode is not None and last is not None and last >= episode - CLOCK_SKEW_MARGIN:
            return (
                Verdict.FAILOVER_UNSAFE,
                (
                    f"flapping (seen from {', '.join(sorted(v.vantage for v in flapping))}): "
                    f"it failed over once already in this flapping episode (at {iso(last)}); "
                    "no second failover until it is stable",
                    *reasons,
                ),
                None,
            )
    if before is not None and before.verdict in _DIRECT_ENTRY and before.confirm is None:
        return verdict, reasons, None
    if site in controls.holds:
        return verdict, reasons, None  # what it would be: the hold keeps it from happening
    # Coming from a blocked failover (unsafe, held) or from no judgement at all (a restart,
    # peers coming back): the down votes may predate a recovery. Only runs that fail after
    # this moment confirm the site is still down.
    down = [v for v in votes if _opinion(v, site).state is SiteState.DOWN]
    record = dict(before.confirm) if before is not None and before.confirm is not None else {}
    confirmed = 0
    for v in down:
        last_run = _opinion(v, site).last_run_at
        if last_run is None:
            continue
        if v.vantage not in record:
            record[v.vantage] = last_run
        elif last_run > record[v.vantage]:
            confirmed += 1
    if confirmed >= quorum:
        return verdict, reasons, None
    return (
        Verdict.FAILOVER_UNSAFE,
        (
            f"failing over looks possible now, but the down votes predate it: waiting for "
            f"{quorum} views to see a run fail again ({confirmed} so far)",
            *reasons,
        ),
        record,
    )


def _apply_controls(
    v: SiteVerdict,
    before: SiteVerdict | None,
    controls: Controls,
    replication: Sequence[ReplicationState],
    now: float,
) -> SiteVerdict:
    latch = controls.latches.get(v.site)
    hold = controls.holds.get(v.site)
    verdict, reasons, target, notes = v.verdict, v.reasons, v.failover_target, v.notes
    failback_due = False
    if latch is not None:
        verdict, target = Verdict.FAILED_OVER, latch.target
        reasons = (
            f"failed over to {latch.target or 'a standby'} at {iso(latch.at)} (latched: the "
            "health endpoint answers 503 until failback is released)",
            _failback_text(v, latch, now),
            f"now: {v.current.value}",
            *v.reasons,
        )
        failback_due = _failback_due(v, latch, replication, now)
        if hold is not None:
            reasons = (*reasons, _hold_text(hold) + " (noted; the site is already failed over)")
    elif hold is not None:
        verdict, target = Verdict.HELD, None
        reasons = (_hold_text(hold), f"without the hold: {v.current.value}", *v.reasons)
    elif before is not None and before.latch is not None:
        notes = (f"failback released; was failed over to {before.latch.target}",)
    elif before is not None and before.notes and verdict is Verdict.HEALTHY:
        notes = before.notes
    if verdict is Verdict.FAILOVER_RECOMMENDED and v.flapping:
        reasons = (
            *reasons,
            "flapping: this is its one failover for the episode; it stays latched",
        )
    since = before.since if before is not None and before.verdict is verdict else now
    return replace(
        v,
        verdict=verdict,
        since=since,
        reasons=(*reasons, *notes),
        failover_target=target,
        notes=notes,
        latch=latch,
        hold=hold,
        failback_due=failback_due,
    )


def _hold_text(hold: Hold) -> str:
    why = f": {hold.reason}" if hold.reason else ""
    return f"held by {hold.by} until {iso(hold.until)}{why} (never failed over while held)"


def _failback_text(v: SiteVerdict, latch: Latch, now: float) -> str:
    if not v.failback.auto:
        return (
            f"failback is manual: when {v.site} is ready, release it with "
            f"`failsight failback {v.site}` (POST /v1/sites/{v.site}/failback)"
        )
    stable = _duration_text(v.failback.stable_for)
    if v.up_since is None:
        return f"failback is automatic once {v.site} is up in a quorum of views for {stable}"
    so_far = _duration_text(now - v.up_since)
    return (
        f"failback is automatic once {v.site} is up in a quorum of views for {stable} "
        f"({so_far} so far)"
    )


def _failback_due(
    v: SiteVerdict, latch: Latch, replication: Sequence[ReplicationState], now: float
) -> bool:
    if not v.failback.auto or v.up_since is None or now - v.up_since < v.failback.stable_for:
        return False
    # Data first: when the former primary now replicates from the standby that took over,
    # it must have caught up before traffic goes back to it.
    back = [r for r in replication if r.primary_site == latch.target and r.replica_site == v.site]
    return all(_replication_problem(r) is None for r in back)


def _duration_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _judge(
    site: str,
    role: str,
    q: Quorum,
    votes: Sequence[VantageView],
    roles: Mapping[str, str],
    quorum: int,
    replication: Sequence[ReplicationState],
    holds: Mapping[str, Hold],
) -> tuple[Verdict, tuple[str, ...], str | None, ReplicationState | None]:
    if q.fresh < quorum:
        return (
            Verdict.UNKNOWN,
            (f"only {q.fresh} fresh, unimpaired view(s); {quorum} needed to judge",),
            None,
            None,
        )
    evidence = tuple(f"{v.vantage}: {e}" for v in votes for e in _opinion(v, site).evidence)
    if q.down < quorum:
        seen_bad = [v.vantage for v in votes if _opinion(v, site).state is not SiteState.UP]
        if seen_bad:
            lead = (
                f"{q.down} of {q.fresh} views see it down ({quorum} needed): "
                f"not a failover; failing or recovering from {', '.join(sorted(seen_bad))}"
            )
            return Verdict.DEGRADED, (lead, *evidence), None, None
        return Verdict.HEALTHY, (), None, None
    agree = f"down in {q.down} of {q.fresh} views (quorum {quorum})"
    if role != "primary":
        return (
            Verdict.DEGRADED,
            (
                f"{agree}; it is a standby: nothing to fail over, but the primary has no "
                "healthy standby here",
                *evidence,
            ),
            None,
            None,
        )
    candidates: list[tuple[str, ReplicationState | None, str]] = []
    waiting: list[str] = []
    for standby, standby_role in roles.items():
        if standby_role != "standby":
            continue
        if standby in holds:
            candidates.append((standby, None, f"standby {standby} is held: {holds[standby].by}"))
            continue
        seen = [_standby_seen(v, site, standby) for v in votes]
        up = seen.count("up")
        if up < quorum:
            if up + seen.count("before") >= quorum:
                waiting.append(
                    f"standby {standby}: up in {up} views checked since the primary went down, "
                    f"{seen.count('before')} more to check ({quorum} needed)"
                )
                continue
            candidates.append(
                (standby, None, f"standby {standby} is up in only {up} views: no healthy standby")
            )
            continue
        pair = next(
            (r for r in replication if r.primary_site == site and r.replica_site == standby), None
        )
        if pair is None:
            return (
                Verdict.FAILOVER_RECOMMENDED,
                (
                    agree,
                    f"standby {standby} is up in {up} views",
                    f"no replication configured from {site} to {standby}: data safety not checked",
                    *evidence,
                ),
                standby,
                None,
            )
        problem = _replication_problem(pair)
        if problem is None:
            return (
                Verdict.FAILOVER_RECOMMENDED,
                (
                    agree,
                    f"standby {standby} is up in {up} views",
                    f"{pair.cluster} lag {pair.lag_seconds:.1f}s within RPO {pair.rpo_seconds:g}s",
                    *evidence,
                ),
                standby,
                pair,
            )
        candidates.append((standby, pair, problem))
    if waiting:
        # Not blocked, only not judged yet: the standby's rerun comes within moments.
        return Verdict.DEGRADED, (agree, *waiting, *evidence), None, None
    if not candidates:
        return (
            Verdict.FAILOVER_UNSAFE,
            (agree, "no standby site is configured", *evidence),
            None,
            None,
        )
    pair = next((p for _, p, _ in candidates if p is not None), None)
    return (
        Verdict.FAILOVER_UNSAFE,
        (agree, *(why for _, _, why in candidates), *evidence),
        None,
        pair,
    )


def _standby_seen(view: VantageView, primary: str, standby: str) -> str:
    """How one vote sees a failover target: "up", "before" (up, but last checked before this
    view saw the primary go down), or "no".

    A vantage that loses its own network sees the primary fail first and the standby still
    "up" from a run made before the loss; only a standby checked after the primary went down,
    from the same vantage (one clock), vouches for it.
    """
    if standby in view.missing:
        return "no"  # no fresh evidence of the standby from this vantage
    target, failed = _opinion(view, standby), _opinion(view, primary)
    if target.state is not SiteState.UP:
        return "no"
    if (
        failed.state is SiteState.DOWN
        and target.last_run_at is not None
        and target.last_run_at < failed.since
    ):
        return "before"
    return "up"


def _replication_problem(pair: ReplicationState) -> str | None:
    if pair.split_brain:
        return f"split brain in {pair.cluster}: {pair.replica_site} is writable"
    if not pair.streaming:
        return f"{pair.cluster}: replica {pair.replica_site} is not streaming"
    if pair.lag_seconds is None:
        return f"{pair.cluster}: replication lag to {pair.replica_site} is unknown"
    if not pair.within_rpo:
        return (
            f"{pair.cluster}: replica {pair.replica_site} lags {pair.lag_seconds:.1f}s, "
            f"over the RPO of {pair.rpo_seconds:g}s"
        )
    return None


def verdict_json(v: SiteVerdict, view: Mapping[str, object]) -> dict[str, object]:
    """A site's verdict in the contract's JSON shape. The verdict word comes first."""
    repl = v.replication
    return {
        "verdict": v.verdict.value,
        "site": v.site,
        "role": v.role,
        "since": v.since,
        "reasons": list(v.reasons),
        "view": dict(view),
        "quorum": {
            "down": v.quorum.down,
            "fresh": v.quorum.fresh,
            "required": v.quorum.required,
            "vantages": dict(v.quorum.vantages),
        },
        "failover_target": v.failover_target,
        "replication": None if repl is None else repl.as_json(),
        "current": v.current.value,
        "latch": None
        if v.latch is None
        else {"target": v.latch.target, "at": v.latch.at, "by": v.latch.by},
        "hold": None
        if v.hold is None
        else {
            "by": v.hold.by,
            "reason": v.hold.reason,
            "until": v.hold.until,
            "source": v.hold.source,
        },
        "failback": {
            "policy": "auto" if v.failback.auto else "manual",
            "stable_for": v.failback.stable_for if v.failback.auto else None,
            "up_since": v.up_since,
        },
        "flapping": v.flapping,
        "total_outage": v.total_outage,
    }


def dependency_reasons(site: str, latest: Iterable[Result]) -> tuple[str, ...]:
    """What the shared dependencies' latest results say that bears on a site's verdict.

    DNS shows where the global name really points (after a failover, has traffic moved?); a
    failing IdP explains journey failures that are not the site's fault. Each kind says so
    with `Remark` evidence on its results.
    """
    return tuple(
        e.text
        for result in latest
        for e in result.evidence
        if isinstance(e, Remark) and e.site in (None, site)
    )


def dependencies_json(latest: Iterable[Result]) -> dict[str, object]:
    """The latest results of the shared-dependency kinds (IdP, DNS, TLS...), for the verdict
    JSON and the status page, grouped under each kind's `dependency_group`."""
    out: dict[str, list[dict[str, object]]] = {group: [] for group in DEPENDENCY_GROUPS.values()}
    for result in latest:
        if (group := DEPENDENCY_GROUPS.get(result.kind)) is not None:
            out[group].append(
                {
                    "check": result.check,
                    "target": result.target,
                    "ok": result.ok,
                    "reason": result.reason.value if result.reason else None,
                    "message": result.message,
                    "checked_at": result.started_at,
                    "facts": dict(result.facts),
                }
            )
    return dict(out)


def replication_states(latest: Iterable[Result]) -> list[ReplicationState]:
    """Every primary -> replica pair, from the `ReplicaSafety` evidence of the latest results."""
    return [
        ReplicationState(**dataclasses.asdict(e), observed_at=result.started_at)
        for result in latest
        for e in result.evidence
        if isinstance(e, ReplicaSafety)
    ]
