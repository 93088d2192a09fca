"""The hysteresis state machine and the impaired rule, as pure functions."""

from __future__ import annotations

import pytest

from agent.results import Reason, Result, StepResult
from agent.view import SiteState, SiteView, ViewTracker, advance

U, DG, DN = SiteState.UP, SiteState.DEGRADED, SiteState.DOWN


def run(outcomes: str, failure: int = 3, recovery: int = 2) -> list[SiteState]:
    view, states = SiteView(), []
    for i, c in enumerate(outcomes):
        view = advance(
            view,
            c == "+",
            now=float(i),
            failure_threshold=failure,
            recovery_threshold=recovery,
            evidence="boom",
        )
        states.append(view.state)
    return states


@pytest.mark.parametrize(
    ("outcomes", "expected"),
    [
        ("+++", [U, U, U]),
        ("-", [DG]),
        ("---", [DG, DG, DN]),
        ("--+", [DG, DG, U]),  # below the threshold: never down
        ("-+-+-+-+", [DG, U] * 4),  # flapping never reaches down
        ("---+", [DG, DG, DN, DN]),  # one success is not a recovery
        ("---++", [DG, DG, DN, DN, U]),
        ("---+-+", [DG, DG, DN, DN, DN, DN]),  # the success streak restarts
    ],
)
def test_hysteresis(outcomes: str, expected: list[SiteState]) -> None:
    assert run(outcomes) == expected


def test_since_moves_only_on_state_change_and_evidence_counts() -> None:
    view = SiteView()
    for i in range(3):
        view = advance(
            view,
            False,
            now=10.0 + i,
            failure_threshold=2,
            recovery_threshold=1,
            evidence="journey j failed",
        )
    assert view.state is DN and view.since == 11.0
    assert view.evidence == ("journey j failed (3 consecutive)",)


def result(site: str, ok: bool, critical: bool = True) -> Result:
    step = StepResult(
        name="pick",
        ok=ok,
        duration=0.1,
        reason=None if ok else Reason.HTTP_STATUS,
        message="" if ok else "HTTP 500",
    )
    return Result(
        check=f"journey/j/{site}",
        kind="journey",
        target="j",
        site=site,
        ok=ok,
        started_at=100.0,
        duration=0.1,
        run_id="r",
        critical=critical,
        reason=None if ok else Reason.HTTP_STATUS,
        steps=(step,),
    )


def test_tracker_impaired_only_when_every_site_fails() -> None:
    tracker = ViewTracker(("a", "b"), failure_threshold=1, recovery_threshold=1)
    tracker.handle(result("a", False))
    assert not tracker.impaired  # b not seen yet
    tracker.handle(result("b", True))
    assert not tracker.impaired
    tracker.handle(result("b", False))
    assert tracker.impaired
    assert tracker.views["a"].evidence == (
        "journey j failed at step pick [http_status]: HTTP 500 (1 consecutive)",
    )


def test_tracker_ignores_non_critical_and_single_site_is_never_impaired() -> None:
    tracker = ViewTracker(("a",), failure_threshold=1, recovery_threshold=1)
    tracker.handle(result("a", False, critical=False))
    assert tracker.views["a"].state is U
    tracker.handle(result("a", False))
    assert tracker.views["a"].state is DN and not tracker.impaired
