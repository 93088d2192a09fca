"""The last hour of each site's verdict and views, and the control actions: what happened when.

Only changes are kept (a point when the verdict, the evidence's verdict or any vantage's state
changes), bounded in time and count, so an agent that runs for months holds a few kilobytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from failsight.agent.control import Action
from failsight.agent.verdict import SiteVerdict

WINDOW = 3600.0
MAX_POINTS_PER_SITE = 2000  # a site flipping every second for an hour still fits half of it


@dataclass(frozen=True, slots=True)
class Point:
    at: float
    verdict: str
    current: str
    vantages: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "verdict": self.verdict,
            "current": self.current,
            "vantages": dict(self.vantages),
        }


@dataclass
class Timeline:
    window: float = WINDOW
    points: dict[str, deque[Point]] = field(default_factory=dict)
    actions: Sequence[Action] = ()

    def observe(
        self, now: float, verdicts: Mapping[str, SiteVerdict], actions: Sequence[Action]
    ) -> None:
        self.actions = actions
        for site, v in verdicts.items():
            point = Point(
                now, v.verdict.value, v.current.value, tuple(sorted(v.quorum.vantages.items()))
            )
            series = self.points.setdefault(site, deque(maxlen=MAX_POINTS_PER_SITE))
            last = series[-1] if series else None
            if last is None or (last.verdict, last.current, last.vantages) != (
                point.verdict,
                point.current,
                point.vantages,
            ):
                series.append(point)
            # Keep one point from before the window: it tells the state at the window's start.
            while len(series) >= 2 and series[1].at <= now - self.window:
                series.popleft()
        for site in [s for s in self.points if s not in verdicts]:
            del self.points[site]

    def to_json(self, now: float) -> dict[str, object]:
        start = now - self.window
        return {
            "now": now,
            "window_seconds": self.window,
            "sites": {site: [p.to_json() for p in series] for site, series in self.points.items()},
            "actions": [a.to_json() for a in self.actions if a.at >= start],
        }
