"""The verdict rules of the contract, as a table over pure inputs."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from failsight.agent.control import Controls, Hold, Latch
from failsight.agent.verdict import (
    FailbackPolicy,
    ReplicationState,
    SiteVerdict,
    Verdict,
    decide,
    judge_vantages,
)
from failsight.agent.view import SiteOpinion, SiteState, VantageView

NOW = 1_000.0
SITES = [("aws", "primary"), ("gcp", "standby")]
UP, DOWN, DEG, REC = SiteState.UP, SiteState.DOWN, SiteState.DEGRADED, SiteState.RECOVERING


def view(
    vantage: str,
    aws: SiteState,
    gcp: SiteState = UP,
    *,
    age: float = 1.0,
    run: float = 500.0,
    every_failing: bool | None = None,
    self_check: bool | None = None,
    flapping: bool = False,
    episode: float | None = None,
) -> VantageView:
    failing = every_failing if every_failing is not None else aws is DOWN and gcp is DOWN
    return VantageView(
        vantage,
        NOW - age,
        {
            "aws": SiteOpinion(
                aws,
                evidence=("boom",) if aws is not UP else (),
                last_run_at=run,
                flapping=flapping,
                episode_since=episode,
            ),
            "gcp": SiteOpinion(gcp, last_run_at=run),
        },
        every_site_failing=failing,
        self_check=self_check,
    )


def repl(
    lag: float | None,
    *,
    streaming: bool = True,
    split: bool = False,
    primary: str = "aws",
    replica: str = "gcp",
) -> ReplicationState:
    return ReplicationState("orders", primary, replica, 30.0, lag, streaming, split, NOW)


def healthy(views: list[VantageView], **kw: object) -> Mapping[str, SiteVerdict]:
    """A previous judgement in which every site was healthy: a failover may be entered."""
    ups = [view(v.vantage, UP) for v in views]
    return decide(SITES, ups, quorum=1, stale_after=30.0, now=NOW - 1)


def judge(
    views: list[VantageView],
    quorum: int = 2,
    *,
    previous: Mapping[str, SiteVerdict] | None = None,
    now: float = NOW,
    **kw: object,
) -> dict[str, SiteVerdict]:
    before = healthy(views) if previous is None else previous
    return decide(
        SITES,
        views,
        quorum=quorum,
        stale_after=30.0,
        now=now,
        previous=before,
        **kw,  # type: ignore[arg-type]
    )


def verdict(views: list[VantageView], quorum: int = 2, **kw: object) -> Verdict:
    return judge(views, quorum, **kw)["aws"].verdict


# --- quorum and data safety ---------------------------------------------------------------


def test_quorum_down_with_healthy_standby_within_rpo_recommends_failover() -> None:
    views = [view("a", DOWN), view("b", DOWN), view("c", UP)]
    out = judge(views, replication=[repl(1.5)])
    aws = out["aws"]
    assert aws.verdict is Verdict.FAILOVER_RECOMMENDED
    assert aws.failover_target == "gcp"
    assert aws.quorum.down == 2 and aws.quorum.fresh == 3
    assert aws.quorum.vantages == {"a": "down", "b": "down", "c": "up"}
    assert "orders lag 1.5s within RPO 30s" in aws.reasons
    assert out["gcp"].verdict is Verdict.HEALTHY


def test_one_vantage_down_is_degraded_not_failover() -> None:
    assert verdict([view("a", DOWN), view("b", UP), view("c", UP)]) is Verdict.DEGRADED


def test_lag_over_rpo_is_unsafe() -> None:
    out = judge([view("a", DOWN), view("b", DOWN)], replication=[repl(45.0)])
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
    views = [view("a", DOWN, DOWN), view("b", DOWN, DOWN), view("c", UP, UP)]
    out = judge(views)
    assert out["aws"].verdict is Verdict.FAILOVER_UNSAFE
    assert "standby gcp is up in only 1 views: no healthy standby" in out["aws"].reasons


def test_stale_views_do_not_vote() -> None:
    out = judge([view("a", DOWN), view("b", DOWN, age=31.0)])
    assert out["aws"].verdict is Verdict.UNKNOWN
    assert out["aws"].quorum.vantages == {"a": "down", "b": "stale"}
    assert out["aws"].quorum.fresh == 1


def test_no_views_is_unknown_and_never_failover() -> None:
    assert verdict([], quorum=1) is Verdict.UNKNOWN


def test_without_replication_config_failover_is_recommended_but_says_so() -> None:
    out = judge([view("a", DOWN)], quorum=1)
    assert out["aws"].verdict is Verdict.FAILOVER_RECOMMENDED
    assert any("data safety not checked" in r for r in out["aws"].reasons)


def test_degraded_views_never_reach_failover() -> None:
    # Views already damp flapping (test_view); a degraded view is not a down vote.
    assert verdict([view("a", DEG), view("b", DEG)]) is Verdict.DEGRADED


def test_since_is_kept_while_the_verdict_stays() -> None:
    first = judge([view("a", DOWN)], quorum=1)
    assert first["aws"].since == NOW
    again = judge([view("a", DOWN)], quorum=1, now=NOW + 5, previous=first)
    assert again["aws"].since == NOW


# --- recovery never starts a failover ------------------------------------------------------


def test_a_recovering_view_is_not_a_down_vote() -> None:
    out = judge([view("a", REC), view("b", REC), view("c", DOWN)])
    assert out["aws"].verdict is Verdict.DEGRADED
    assert out["aws"].quorum.down == 1
    assert out["aws"].quorum.vantages == {"a": "recovering", "b": "recovering", "c": "down"}


def test_unsafe_to_safe_needs_runs_that_fail_after_the_standby_caught_up() -> None:
    # The outage began while the standby was beyond its RPO: unsafe.
    downs = [view("a", DOWN, run=100), view("b", DOWN, run=100), view("c", DOWN, run=100)]
    unsafe = judge(downs, replication=[repl(45.0)])
    assert unsafe["aws"].verdict is Verdict.FAILOVER_UNSAFE
    # The standby catches up just as the primary comes back: the views still hold runs from
    # before the recovery. This is the moment that used to answer 503.
    waiting = judge(downs, replication=[repl(1.0)], previous=unsafe, now=NOW + 1)
    assert waiting["aws"].verdict is Verdict.FAILOVER_UNSAFE
    assert waiting["aws"].reasons[0].startswith("failing over looks possible now, but the down")
    assert waiting["aws"].confirm == {"a": 100, "b": 100, "c": 100}
    # The next runs succeed: recovering, never a failover.
    back = [view("a", REC, run=105), view("b", REC, run=105), view("c", DOWN, run=100)]
    healed = judge(back, replication=[repl(1.0)], previous=waiting, now=NOW + 2)
    assert healed["aws"].verdict is Verdict.DEGRADED
    assert healed["aws"].confirm is None


def test_unsafe_to_safe_fails_over_once_fresh_runs_still_fail() -> None:
    downs = [view("a", DOWN, run=100), view("b", DOWN, run=100)]
    unsafe = judge(downs, replication=[repl(45.0)])
    waiting = judge(downs, replication=[repl(1.0)], previous=unsafe, now=NOW + 1)
    one = [view("a", DOWN, run=106), view("b", DOWN, run=100)]
    still = judge(one, replication=[repl(1.0)], previous=waiting, now=NOW + 2)
    assert still["aws"].verdict is Verdict.FAILOVER_UNSAFE  # 1 of the 2 needed
    both = [view("a", DOWN, run=106), view("b", DOWN, run=107)]
    go = judge(both, replication=[repl(1.0)], previous=still, now=NOW + 3)
    assert go["aws"].verdict is Verdict.FAILOVER_RECOMMENDED
    assert go["aws"].failover_target == "gcp"


def test_a_first_judgement_needs_fresh_failures_before_failing_over() -> None:
    # A restarted agent cannot know whether the down views predate a recovery.
    first = judge([view("a", DOWN, run=100)], quorum=1, previous={})
    assert first["aws"].verdict is Verdict.FAILOVER_UNSAFE
    then = judge([view("a", DOWN, run=101)], quorum=1, previous=first, now=NOW + 1)
    assert then["aws"].verdict is Verdict.FAILOVER_RECOMMENDED


# --- the latch and failback ------------------------------------------------------------------


LATCHED = Controls(latches={"aws": Latch("gcp", 900.0, "verdict@a")}, last_latched_at={"aws": 900})


@pytest.mark.parametrize(
    ("aws", "current"),
    [
        (DOWN, Verdict.FAILOVER_RECOMMENDED),
        (REC, Verdict.DEGRADED),
        (UP, Verdict.HEALTHY),
    ],
)
def test_a_latched_failover_stays_failed_over_whatever_the_primary_does(
    aws: SiteState, current: Verdict
) -> None:
    out = judge([view("a", aws), view("b", aws)], controls=LATCHED)
    v = out["aws"]
    assert v.verdict is Verdict.FAILED_OVER
    assert v.current is current
    assert v.failover_target == "gcp"
    assert v.reasons[0].startswith("failed over to gcp at 1970-01-01T00:15:00Z (latched")
    assert v.reasons[1].startswith("failback is manual: when aws is ready, release it with")
    assert not v.failback_due


def test_the_latch_holds_even_when_no_view_is_fresh() -> None:
    assert verdict([view("a", UP, age=99)], controls=LATCHED) is Verdict.FAILED_OVER


def test_auto_failback_is_due_after_stable_for_in_a_quorum_of_views() -> None:
    auto = {"aws": FailbackPolicy(auto=True, stable_for=60.0)}
    ups = [view("a", UP), view("b", UP), view("c", DOWN)]
    first = judge(ups, controls=LATCHED, failback=auto, previous={})
    assert first["aws"].up_since == NOW and not first["aws"].failback_due
    assert (
        "failback is automatic once aws is up in a quorum of views for 1m"
        in (first["aws"].reasons[1])
    )
    ups = [view("a", UP, age=-60), view("b", UP, age=-60), view("c", DOWN, age=-60)]
    later = judge(ups, controls=LATCHED, failback=auto, previous=first, now=NOW + 61)
    assert later["aws"].failback_due
    # One view short of the quorum restarts the clock.
    dip = [view("a", UP, age=-61), view("b", DEG, age=-61), view("c", DOWN, age=-61)]
    reset = judge(dip, controls=LATCHED, failback=auto, previous=later, now=NOW + 62)
    assert reset["aws"].up_since is None and not reset["aws"].failback_due


def test_auto_failback_waits_for_the_former_primary_to_catch_up_as_a_replica() -> None:
    auto = {"aws": FailbackPolicy(auto=True, stable_for=10.0)}
    ups = [view("a", UP), view("b", UP)]
    behind = [repl(90.0, primary="gcp", replica="aws")]
    first = judge(ups, controls=LATCHED, failback=auto, replication=behind)
    later = judge(
        ups, controls=LATCHED, failback=auto, replication=behind, previous=first, now=NOW + 11
    )
    assert not later["aws"].failback_due
    caught_up = [repl(1.0, primary="gcp", replica="aws")]
    ready = judge(
        ups, controls=LATCHED, failback=auto, replication=caught_up, previous=first, now=NOW + 11
    )
    assert ready["aws"].failback_due


def test_after_failback_the_site_is_judged_afresh_and_says_it_was_released() -> None:
    latched = judge([view("a", UP), view("b", UP)], controls=LATCHED)
    released = Controls(last_latched_at={"aws": 900.0})
    out = judge([view("a", UP), view("b", UP)], controls=released, previous=latched)
    assert out["aws"].verdict is Verdict.HEALTHY
    assert "failback released; was failed over to gcp" in out["aws"].reasons


# --- holds -------------------------------------------------------------------------------------


def test_a_held_site_is_never_failover_recommended() -> None:
    held = Controls(holds={"aws": Hold("alice", "db upgrade", NOW + 3600)})
    out = judge([view("a", DOWN), view("b", DOWN)], controls=held)
    v = out["aws"]
    assert v.verdict is Verdict.HELD and v.current is Verdict.FAILOVER_RECOMMENDED
    assert v.failover_target is None
    assert v.reasons[0] == (
        "held by alice until 1970-01-01T01:16:40Z: db upgrade (never failed over while held)"
    )
    assert v.reasons[1] == "without the hold: failover_recommended"
    # When the hold ends, the down votes must fail again before a failover is entered.
    after = judge([view("a", DOWN), view("b", DOWN)], previous=out, now=NOW + 1)
    assert after["aws"].verdict is Verdict.FAILOVER_UNSAFE


def test_a_held_standby_is_no_failover_target() -> None:
    held = Controls(holds={"gcp": Hold("maintenance patching", "", NOW + 60, "maintenance")})
    out = judge([view("a", DOWN), view("b", DOWN)], controls=held)
    assert out["aws"].verdict is Verdict.FAILOVER_UNSAFE
    assert "standby gcp is held: maintenance patching" in out["aws"].reasons
    assert out["gcp"].verdict is Verdict.HELD


def test_a_latch_wins_over_a_later_hold() -> None:
    both = Controls(
        latches=LATCHED.latches, holds={"aws": Hold("bob", "", NOW + 60)}, last_latched_at={}
    )
    out = judge([view("a", UP), view("b", UP)], controls=both)
    assert out["aws"].verdict is Verdict.FAILED_OVER
    assert out["aws"].reasons[-1].endswith("(noted; the site is already failed over)")


# --- flapping ------------------------------------------------------------------------------------


def test_a_flapping_site_fails_over_once_per_episode() -> None:
    flapping = [view("a", DOWN, flapping=True, episode=800.0), view("b", DOWN)]
    first = judge(flapping)  # never latched: its one failover
    assert first["aws"].verdict is Verdict.FAILOVER_RECOMMENDED and first["aws"].flapping
    assert first["aws"].reasons[-1].startswith("flapping: this is its one failover")
    # Failed back since, and down again within the same episode: no second failover.
    again = judge(flapping, controls=Controls(last_latched_at={"aws": 850.0}))
    v = again["aws"]
    assert v.verdict is Verdict.FAILOVER_UNSAFE and v.failover_target is None
    assert v.reasons[0].startswith(
        "flapping (seen from a): it failed over once already in this flapping episode"
    )
    # A failover before this episode began does not count against it.
    earlier = judge(flapping, controls=Controls(last_latched_at={"aws": 600.0}))
    assert earlier["aws"].verdict is Verdict.FAILOVER_RECOMMENDED


# --- impairment and total outages ---------------------------------------------------------


@pytest.mark.parametrize(
    ("views", "quorum", "impaired", "total"),
    [
        # One vantage sees everything fail while the others see the sites fine: its fault.
        ([view("a", DOWN, DOWN), view("b", UP), view("c", UP)], 2, {"a"}, False),
        # Every vantage sees every site fail: a total outage, nobody is impaired.
        ([view("a", DOWN, DOWN), view("b", DOWN, DOWN), view("c", DOWN, DOWN)], 2, set(), True),
        # Two of three (a quorum, a majority) see everything fail.
        ([view("a", DOWN, DOWN), view("b", DOWN, DOWN), view("c", UP)], 2, set(), True),
        # Alone with nothing to compare with: impaired, unless a self-check vouches.
        ([view("a", DOWN, DOWN)], 1, {"a"}, False),
        ([view("a", DOWN, DOWN, self_check=True)], 1, set(), True),
        # A failing self-check is impairment whatever the sites look like.
        ([view("a", UP, self_check=False), view("b", UP)], 2, {"a"}, False),
    ],
)
def test_impairment_is_judged_against_the_other_vantages(
    views: list[VantageView], quorum: int, impaired: set[str], total: bool
) -> None:
    assert judge_vantages(views, quorum) == (impaired, total)


def test_a_total_outage_is_failover_unsafe_with_no_healthy_standby() -> None:
    views = [view("a", DOWN, DOWN), view("b", DOWN, DOWN), view("c", DOWN, DOWN)]
    out = judge(views)
    aws = out["aws"]
    assert aws.verdict is Verdict.FAILOVER_UNSAFE and aws.total_outage
    assert aws.reasons[0].startswith("total outage: every site is down in 3 views")
    assert "standby gcp is up in only 0 views: no healthy standby" in aws.reasons
    assert out["gcp"].verdict is Verdict.DEGRADED and out["gcp"].total_outage


def test_an_impaired_vantage_does_not_vote() -> None:
    out = judge([view("a", DOWN, DOWN), view("b", UP), view("c", UP)])
    assert out["aws"].verdict is Verdict.HEALTHY
    assert out["aws"].quorum.vantages == {"a": "impaired", "b": "up", "c": "up"}


def test_a_standby_checked_before_the_primary_went_down_does_not_vouch_for_it() -> None:
    # Two vantages lose their own network: the primary's runs fail first, while their standby
    # opinion still comes from a run made before the loss. Waiting, not a failover.
    def lost(vantage: str, standby_run: float) -> VantageView:
        return VantageView(
            vantage,
            NOW - 1,
            {
                "aws": SiteOpinion(DOWN, since=600.0, last_run_at=610.0),
                "gcp": SiteOpinion(UP, last_run_at=standby_run),
            },
        )

    views = [lost("a", 590.0), lost("b", 595.0), view("c", UP)]
    out = judge(views)
    assert out["aws"].verdict is Verdict.DEGRADED
    assert out["aws"].reasons[1] == (
        "standby gcp: up in 1 views checked since the primary went down, 2 more to check (2 needed)"
    )
    # Once rechecked from there after the primary went down, it vouches.
    rechecked = [lost("a", 605.0), lost("b", 606.0), view("c", UP)]
    assert judge(rechecked, previous=out)["aws"].verdict is Verdict.FAILOVER_RECOMMENDED
