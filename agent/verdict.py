"""The failover verdict per site, from every vantage's view: quorum, freshness and data safety.

Pure functions only: the transport that brings peers' views lives elsewhere, so the rules can be
tested as a table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.results import Result
from agent.view import SiteState


class Verdict(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILOVER_RECOMMENDED = "failover_recommended"
    FAILOVER_UNSAFE = "failover_unsafe"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SiteOpinion:
    state: SiteState
    since: float = 0.0
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VantageView:
    """One vantage's view of every site, as served on /v1/view."""

    vantage: str
    generated_at: float
    impaired: bool
    sites: Mapping[str, SiteOpinion]


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


def decide(
    sites: Sequence[tuple[str, str]],
    views: Sequence[VantageView],
    *,
    quorum: int,
    stale_after: float,
    now: float,
    replication: Sequence[ReplicationState] = (),
    previous: Mapping[str, SiteVerdict] | None = None,
) -> dict[str, SiteVerdict]:
    """The verdict for every site (name, role).

    A vote is a fresh (younger than `stale_after`), non-impaired view. A site is
    `failover_recommended` only when at least `quorum` votes see it down, a standby is up in at
    least `quorum` votes and its replication is within RPO, streaming and not split-brained.
    A down site without such a standby is `failover_unsafe`; fewer than `quorum` votes is
    `unknown`. Failback is never recommended: a recovered site is only reported.
    """
    previous = previous or {}
    votes: list[VantageView] = []
    status: dict[str, str] = {}
    for view in views:
        if now - view.generated_at > stale_after:
            status[view.vantage] = "stale"
        elif view.impaired:
            status[view.vantage] = "impaired"
        else:
            votes.append(view)
    roles = dict(sites)
    split = [r for r in replication if r.split_brain]
    out: dict[str, SiteVerdict] = {}
    for site, role in sites:
        states = {v.vantage: v.sites.get(site, SiteOpinion(SiteState.UP)).state for v in votes}
        q = Quorum(
            down=sum(1 for s in states.values() if s is SiteState.DOWN),
            fresh=len(votes),
            required=quorum,
            vantages={**status, **{v: s.value for v, s in states.items()}},
        )
        verdict, reasons, target, repl = _judge(site, role, q, votes, roles, quorum, replication)
        if (
            split
            and verdict is not Verdict.UNKNOWN
            and any(site in (r.primary_site, r.replica_site) for r in split)
        ):
            verdict = Verdict.FAILOVER_UNSAFE
            reasons = (
                *reasons,
                *(
                    f"split brain in {r.cluster}: replica {r.replica_site} "
                    "is writable while the primary is"
                    for r in split
                ),
            )
        before = previous.get(site)
        notes: tuple[str, ...] = ()
        if before is not None and before.verdict in _FAILED_OVER and verdict is Verdict.HEALTHY:
            notes = (
                f"recovered after {before.verdict.value}; failback is never automatic: "
                "move traffic back by hand when ready",
            )
        elif before is not None and before.notes and verdict is Verdict.HEALTHY:
            notes = before.notes
        since = before.since if before is not None and before.verdict is verdict else now
        out[site] = SiteVerdict(
            site, role, verdict, since, (*reasons, *notes), q, target, repl, notes
        )
    return out


_FAILED_OVER = (Verdict.FAILOVER_RECOMMENDED, Verdict.FAILOVER_UNSAFE)


def _judge(
    site: str,
    role: str,
    q: Quorum,
    votes: Sequence[VantageView],
    roles: Mapping[str, str],
    quorum: int,
    replication: Sequence[ReplicationState],
) -> tuple[Verdict, tuple[str, ...], str | None, ReplicationState | None]:
    if q.fresh < quorum:
        return (
            Verdict.UNKNOWN,
            (f"only {q.fresh} fresh, unimpaired view(s); {quorum} needed to judge",),
            None,
            None,
        )
    evidence = tuple(
        f"{v.vantage}: {e}"
        for v in votes
        for e in v.sites.get(site, SiteOpinion(SiteState.UP)).evidence
    )
    if q.down < quorum:
        seen_bad = [
            v.vantage
            for v in votes
            if v.sites.get(site, SiteOpinion(SiteState.UP)).state is not SiteState.UP
        ]
        if seen_bad:
            lead = (
                f"{q.down} of {q.fresh} views see it down ({quorum} needed): "
                f"not a failover; failing from {', '.join(sorted(seen_bad))}"
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
    for standby, standby_role in roles.items():
        if standby_role != "standby":
            continue
        up = sum(
            1
            for v in votes
            if v.sites.get(standby, SiteOpinion(SiteState.UP)).state is SiteState.UP
        )
        if up < quorum:
            candidates.append((standby, None, f"standby {standby} is up in only {up} views"))
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
    }


def dependency_reasons(site: str, latest: Iterable[Result]) -> tuple[str, ...]:
    """What the IdP and DNS checks say that bears on a site's verdict.

    DNS shows where the global name really points (after a failover, has traffic moved?); a
    failing IdP explains journey failures that are not the site's fault.
    """
    reasons: list[str] = []
    for result in latest:
        facts = result.facts
        if result.kind == "dns":
            resolved = facts.get("resolved_sites")
            if isinstance(resolved, list) and site in resolved:
                reasons.append(
                    f"DNS: {result.target} resolves to {site} (resolver {facts.get('resolver')})"
                )
            elif facts.get("expected_site") == site and not result.ok:
                reasons.append(
                    f"DNS: {result.target} should resolve to {site} but "
                    f"{result.message or 'does not'} (resolver {facts.get('resolver')})"
                )
        elif result.kind == "idp" and not result.ok:
            reasons.append(f"IdP {result.target} is failing [{result.reason}]: {result.message}")
    return tuple(reasons)


def dependencies_json(latest: Iterable[Result]) -> dict[str, object]:
    """The latest IdP, DNS and TLS results, for the verdict JSON and the status page."""
    out: dict[str, list[dict[str, object]]] = {"idps": [], "dns": [], "tls": []}
    key = {"idp": "idps", "dns": "dns", "tls": "tls"}
    for result in latest:
        if result.kind in key:
            out[key[result.kind]].append(
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
    """Every primary -> replica pair, from the latest replication check results."""
    out: list[ReplicationState] = []
    for result in latest:
        if result.kind != "replication":
            continue
        facts = result.facts
        replicas = facts.get("replicas")
        if not isinstance(replicas, list):
            continue
        for replica in replicas:
            if not isinstance(replica, Mapping):
                continue
            lag = replica.get("lag_seconds")
            streaming = replica.get("streaming")
            at_loss = replica.get("at_primary_loss")
            if isinstance(at_loss, Mapping):
                # The primary takes no writes: judge the replica as of the last write it took.
                lag, streaming = at_loss.get("lag_seconds"), at_loss.get("streaming")
            out.append(
                ReplicationState(
                    cluster=str(facts.get("cluster")),
                    primary_site=str(facts.get("primary_site")),
                    replica_site=str(replica.get("site")),
                    rpo_seconds=float(facts.get("rpo_seconds") or 0.0),  # type: ignore[arg-type]
                    lag_seconds=float(lag) if isinstance(lag, int | float) else None,
                    streaming=bool(streaming),
                    split_brain=bool(replica.get("split_brain")),
                    observed_at=result.started_at,
                )
            )
    return out
