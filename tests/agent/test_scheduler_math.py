"""Scheduling maths: the tick grid never drifts and a stalled loop does not burst."""

from __future__ import annotations

import pytest

from failsight.agent.scheduler import next_due


@pytest.mark.parametrize(
    ("previous", "interval", "now", "expected"),
    [
        (10.0, 5.0, 11.0, (15.0, 0)),  # normal: next tick on the grid
        (10.0, 5.0, 14.999, (15.0, 0)),
        (10.0, 5.0, 15.0, (20.0, 1)),  # woke exactly at the next tick: it is missed
        (10.0, 5.0, 27.0, (30.0, 3)),  # stalled 17 s: 15, 20, 25 missed, no burst
        (0.0, 0.25, 0.1, (0.25, 0)),
    ],
)
def test_next_due(
    previous: float, interval: float, now: float, expected: tuple[float, int]
) -> None:
    assert next_due(previous, interval, now) == expected
