"""The hysteresis state machine and the impaired rule, as pure functions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from failsight.agent.view import Hysteresis, SiteState, SiteView, ViewTracker, advance
from failsight.core.results import DependsOn, Reason, Result
from tests.factories import journey_result

U, DG, DN, RC = SiteState.UP, SiteState.DEGRADED, SiteState.DOWN, SiteState.RECOVERING


def walk(outcomes: str, h: Hysteresis, step: float = 1.0) -> list[SiteView]:
    view, out = SiteView(), []
    for i, c in enumerate(outcomes):
        view = advance(view, c == "+", now=i * step, h=h, evidence="boom")
        out.append(view)
    return out


def run(outcomes: str, failure: int = 3, recovery: int = 2) -> list[SiteState]:
    return [v.state for v in walk(outcomes, Hysteresis(failure, recovery))]


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ("+++", [U, U, U]),
        ("-", [DG]),
        ("---", [DG, DG, DN]),
        ("--+", [DG, DG, U]),  # below the threshold: never down
        ("-+-+-+-+", [DG, U] * 4),  # flapping never reaches down
        ("---+", [DG, DG, DN, RC]),  # one success is not a recovery, but no longer a down vote
        ("---++", [DG, DG, DN, RC, U]),
        ("---+-+", [DG, DG, DN, RC, DN, RC]),  # a failure while recovering: down again at once
        ("---+-++", [DG, DG, DN, RC, DN, RC, U]),
    ],
)
def test_hysteresis(outcomes: str, expected: list[SiteState]) -> None:
    assert run(outcomes) == expected


def test_a_site_that_keeps_going_down_is_flapping_until_the_penalty_decays() -> None:
    h = Hysteresis(failure_threshold=2, recovery_threshold=2, flap_threshold=3, flap_half_life=60)
    # Down and back three times, ten seconds a step: each entry into down adds one.
    views = walk("--++" * 3, h, step=10.0)
    downs = [v for v in views if v.state is DN]
    assert [round(v.penalty, 2) for v in downs] == [1.0, 1.63, 2.03]
    assert not any(v.flapping for v in views)
    views = walk("--++" * 4, h, step=2.0)  # four entries into down within 30 s
    assert views[-1].flapping and views[-1].episode_since == 2.0
    assert "flapping: entered down" in views[-1].evidence[-1]
    # Quiet for long enough, it stops flapping, and the next outage starts a new episode.
    quiet = advance(views[-1], True, now=views[-1].penalty_at + 120, h=h)
    assert not quiet.flapping
    assert quiet.last_run_at is not None
    later = quiet
    for i in (1, 2):
        later = advance(later, False, now=quiet.last_run_at + 400 + i, h=h)
    assert later.state is DN and later.episode_since == quiet.last_run_at + 402


def test_one_clean_outage_is_not_flapping() -> None:
    views = walk("---" + "+" * 5, Hysteresis())
    assert views[2].state is DN and views[2].penalty == 1.0
    assert not any(v.flapping for v in views)


def test_since_moves_only_on_state_change_and_evidence_counts() -> None:
    view = SiteView()
    for i in range(3):
        view = advance(view, False, now=10.0 + i, h=Hysteresis(2, 1), evidence="journey j failed")
    assert view.state is DN and view.since == 11.0
    assert view.evidence == ("journey j failed (3 consecutive)",)


def result(site: str, ok: bool, critical: bool = True) -> Result:
    return journey_result(site, ok, 100.0, journey="j", step="pick", critical=critical)


def test_tracker_says_when_every_site_fails() -> None:
    tracker = ViewTracker(("a", "b"), Hysteresis(1, 1))
    tracker.handle(result("a", False))
    assert not tracker.every_site_failing  # b not seen yet
    tracker.handle(result("b", True))
    assert not tracker.every_site_failing
    tracker.handle(result("b", False))
    assert tracker.every_site_failing
    assert tracker.views["a"].evidence == (
        "journey j failed at step pick [http_status]: HTTP 500 (1 consecutive)",
    )


def test_tracker_ignores_non_critical_and_single_site_is_never_every_site() -> None:
    tracker = ViewTracker(("a",), Hysteresis(1, 1))
    tracker.handle(result("a", False, critical=False))
    assert tracker.views["a"].state is U
    tracker.handle(result("a", False))
    assert tracker.views["a"].state is DN and not tracker.every_site_failing


def test_tracker_asks_for_confirmation_runs_only_while_unsettled() -> None:
    asked: list[str] = []
    tracker = ViewTracker(("a", "b"), Hysteresis(2, 2), on_unsettled=asked.append)
    tracker.handle(result("a", True))
    assert asked == []  # up: settled
    tracker.handle(result("a", False))  # degraded
    tracker.handle(result("a", False))  # down: settled
    tracker.handle(result("a", True))  # recovering
    tracker.handle(result("a", True))  # up
    assert asked == ["journey/j/a", "journey/j/a"]


def test_tracker_says_when_a_site_enters_down_once_per_entry() -> None:
    downs: list[str] = []
    tracker = ViewTracker(("a", "b"), Hysteresis(2, 2), on_down=downs.append)
    for ok in (False, False, False, True, False):
        tracker.handle(result("a", ok))
    assert downs == ["a", "a"]  # down, recovering, down again


def test_an_auth_failure_asks_the_idp_check_again_at_once() -> None:
    rechecks: list[str] = []
    tracker = ViewTracker(("a", "b"), Hysteresis(3, 2), on_recheck=rechecks.append)
    # The journey authenticates through the IdP: its results say so as typed evidence.
    relies = DependsOn("idp/corp", "IdP corp", Reason.AUTH, "journey j cannot authenticate")
    refused = replace(result("a", False), reason=Reason.AUTH, evidence=(relies,))
    tracker.handle(refused)
    assert rechecks == ["idp/corp"]
    # Once the IdP check fails, the journey's auth failures are the IdP's: no recheck needed.
    tracker.handle(replace(result("a", False), check="idp/corp", kind="idp", site=None))
    tracker.handle(refused)
    assert rechecks == ["idp/corp"]
    assert tracker.views["a"].state is DG and tracker.views["a"].failures == 0


def test_a_failing_dependency_is_blamed_only_for_the_reason_it_explains() -> None:
    tracker = ViewTracker(("a", "b"), Hysteresis(3, 2))
    relies = DependsOn("idp/corp", "IdP corp", Reason.AUTH, "journey j cannot authenticate")
    tracker.handle(
        replace(result("a", False), check="idp/corp", kind="idp", site=None, message="down")
    )
    # A timeout is the site's own failure even while the IdP fails: it counts towards down.
    timed_out = replace(result("a", False), reason=Reason.TIMEOUT, evidence=(relies,))
    assert tracker.blame_dependency(timed_out) is None
    refused = replace(result("a", False), reason=Reason.AUTH, evidence=(relies,))
    blamed = tracker.blame_dependency(refused)
    assert blamed is not None
    assert blamed.startswith("IdP corp is failing")
    assert blamed.endswith("journey j cannot authenticate (a dependency fault, not the site)")
