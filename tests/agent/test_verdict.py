"""The verdict rules of the contract, as a table over pure inputs."""

from __future__ import annotations

from agent.verdict import (
    ReplicationState,
    SiteOpinion,
    VantageView,
    Verdict,
    decide,
)
from agent.view import SiteState

NOW = 1_000.0
SITES = [("aws", "primary"), ("gcp", "standby")]
UP, DOWN, DEG = SiteState.UP, SiteState.DOWN, SiteState.DEGRADED


def view(
    vantage: str, aws: SiteState, gcp: SiteState = UP, *, age: float = 1.0, impaired: bool = False
) -> VantageView:
    return VantageView(
        vantage,
        NOW - age,
        impaired,
        {
            "aws": SiteOpinion(aws, evidence=("boom",) if aws is not UP else ()),
            "gcp": SiteOpinion(gcp),
        },
    )


def repl(lag: float | None, *, streaming: bool = True, split: bool = False) -> ReplicationState:
    return ReplicationState("orders", "aws", "gcp", 30.0, lag, streaming, split, NOW)


def verdict(views: list[VantageView], quorum: int = 2, **kw: object) -> Verdict:
    out = decide(SITES, views, quorum=quorum, stale_after=30.0, now=NOW, **kw)  # type: ignore[arg-type]
    return out["aws"].verdict


def test_quorum_down_with_healthy_standby_within_rpo_recommends_failover() -> None:
    views = [view("a", DOWN), view("b", DOWN), view("c", UP)]
    out = decide(SITES, views, quorum=2, stale_after=30, now=NOW, replication=[repl(1.5)])
    aws = out["aws"]
    assert aws.verdict is Verdict.FAILOVER_RECOMMENDED
    assert aws.failover_target == "gcp"
    assert aws.quorum.down == 2 and aws.quorum.fresh == 3
    assert aws.quorum.vantages == {"a": "down", "b": "down", "c": "up"}
    assert "orders lag 1.5s within RPO 30s" in aws.reasons
    assert out["gcp"].verdict is Verdict.HEALTHY


def test_one_vantage_down_is_degraded_not_failover() -> None:
    v = verdict([view("a", DOWN), view("b", UP), view("c", UP)], replication=[repl(1)])
    assert v is Verdict.DEGRADED


def test_lag_over_rpo_is_unsafe() -> None:
    out = decide(
        SITES,
        [view("a", DOWN), view("b", DOWN)],
        quorum=2,
        stale_after=30,
        now=NOW,
        replication=[repl(45.0)],
    )
    assert out["aws"].verdict is Verdict.FAILOVER_UNSAFE
    assert "orders: replica gcp lags 45.0s, over the RPO of 30s" in out["aws"].reasons
    assert out["aws"].replication is not None and not out["aws"].replication.within_rpo


def test_not_streaming_unknown_lag_and_split_brain_are_unsafe() -> None:
    downs = [view("a", DOWN), view("b", DOWN)]
    assert verdict(downs, replication=[repl(1, streaming=False)]) is Verdict.FAILOVER_UNSAFE
    assert verdict(downs, replication=[repl(None)]) is Verdict.FAILOVER_UNSAFE
    assert verdict(downs, replication=[repl(1, split=True)]) is Verdict.FAILOVER_UNSAFE


def test_split_brain_makes_a_healthy_pair_unsafe_too() -> None:
    assert verdict([view("a", UP), view("b", UP)], replication=[repl(0, split=True)]) is (
        Verdict.FAILOVER_UNSAFE
    )


def test_standby_down_too_is_unsafe() -> None:
    assert verdict([view("a", DOWN, DOWN), view("b", DOWN, DOWN)]) is Verdict.FAILOVER_UNSAFE


def test_stale_and_impaired_views_do_not_vote() -> None:
    views = [view("a", DOWN), view("b", DOWN, age=31.0), view("c", DOWN, DOWN, impaired=True)]
    out = decide(SITES, views, quorum=2, stale_after=30, now=NOW)
    assert out["aws"].verdict is Verdict.UNKNOWN
    assert out["aws"].quorum.vantages == {"a": "down", "b": "stale", "c": "impaired"}
    assert out["aws"].quorum.fresh == 1


def test_no_views_is_unknown_and_never_failover() -> None:
    assert verdict([], quorum=1) is Verdict.UNKNOWN


def test_without_replication_config_failover_is_recommended_but_says_so() -> None:
    out = decide(SITES, [view("a", DOWN)], quorum=1, stale_after=30, now=NOW)
    assert out["aws"].verdict is Verdict.FAILOVER_RECOMMENDED
    assert any("data safety not checked" in r for r in out["aws"].reasons)


def test_flapping_views_never_reach_failover() -> None:
    # Views already damp flapping (test_view); a degraded view is not a down vote.
    assert verdict([view("a", DEG), view("b", DEG)]) is Verdict.DEGRADED


def test_failback_is_reported_not_recommended_and_since_is_kept() -> None:
    first = decide(SITES, [view("a", DOWN)], quorum=1, stale_after=30, now=NOW)
    assert first["aws"].since == NOW
    again = decide(SITES, [view("a", DOWN)], quorum=1, stale_after=30, now=NOW + 5, previous=first)
    assert again["aws"].since == NOW
    back = decide(SITES, [view("a", UP)], quorum=1, stale_after=30, now=NOW + 10, previous=again)
    assert back["aws"].verdict is Verdict.HEALTHY
    assert back["aws"].failover_target is None
    assert any("failback is never automatic" in r for r in back["aws"].reasons)
