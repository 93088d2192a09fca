"""This vantage's view of each site: flap-damped state from critical journey results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from agent.results import Reason, Result


class SiteState(enum.StrEnum):
    UP = "up"
    DEGRADED = "degraded"  # failing, but not for failure_threshold runs in a row yet
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class SiteView:
    """One site as seen from here. Pure data: `advance` returns the next one."""

    state: SiteState = SiteState.UP
    since: float = 0.0
    failures: int = 0  # consecutive failed critical runs
    successes: int = 0  # consecutive successful critical runs
    evidence: tuple[str, ...] = ()
    last_run_at: float | None = None  # None: no critical run seen yet


def advance(
    view: SiteView,
    ok: bool,
    *,
    now: float,
    failure_threshold: int,
    recovery_threshold: int,
    evidence: str = "",
) -> SiteView:
    """The hysteresis state machine.

    up/degraded -> down after `failure_threshold` consecutive failures; down -> up after
    `recovery_threshold` consecutive successes; one failure below the threshold is `degraded`,
    so a flapping site never reaches `down` and a recovering one never flaps back to `up`.
    """
    failures = 0 if ok else view.failures + 1
    successes = view.successes + 1 if ok else 0
    state = view.state
    if ok:
        if state is SiteState.DEGRADED or (
            state is SiteState.DOWN and successes >= recovery_threshold
        ):
            state = SiteState.UP
    elif failures >= failure_threshold:
        state = SiteState.DOWN
    elif state is SiteState.UP:
        state = SiteState.DEGRADED
    if ok:
        notes: tuple[str, ...] = ()
        if state is SiteState.DOWN:
            notes = (f"recovering: {successes}/{recovery_threshold} successful runs",)
    else:
        notes = (f"{evidence} ({failures} consecutive)" if evidence else f"{failures} failures",)
    return SiteView(
        state=state,
        since=view.since if state is view.state and view.last_run_at is not None else now,
        failures=failures,
        successes=successes,
        evidence=notes,
        last_run_at=now,
    )


@dataclass
class ViewTracker:
    """A sink that keeps the latest result of every check and this vantage's site views."""

    sites: tuple[str, ...]
    failure_threshold: int
    recovery_threshold: int
    name: str = "view"
    views: dict[str, SiteView] = field(default_factory=dict)
    latest: dict[str, Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for site in self.sites:
            self.views.setdefault(site, SiteView())

    def handle(self, result: Result) -> None:
        if result.skipped:
            return
        self.latest[result.check] = result
        if result.kind != "journey" or not result.critical or result.site not in self.views:
            return
        blamed = self.blame_dependency(result)
        if blamed is not None:
            # The site may be fine: a shared dependency fails. Failing over would not help, so
            # this run does not count towards `down`; the site is degraded, with the reason.
            view = self.views[result.site]
            self.views[result.site] = replace(
                view,
                state=SiteState.DEGRADED if view.state is SiteState.UP else view.state,
                since=result.started_at if view.state is SiteState.UP else view.since,
                evidence=(blamed,),
                last_run_at=result.started_at + result.duration,
            )
            return
        self.views[result.site] = advance(
            self.views[result.site],
            result.ok,
            now=result.started_at + result.duration,
            failure_threshold=self.failure_threshold,
            recovery_threshold=self.recovery_threshold,
            evidence=describe_failure(result),
        )

    def reconfigure(
        self, sites: tuple[str, ...], checks: set[str], failure: int, recovery: int
    ) -> None:
        """After a reload: keep the history of sites that remain, forget the rest."""
        self.sites = sites
        self.failure_threshold, self.recovery_threshold = failure, recovery
        self.views = {s: self.views.get(s, SiteView()) for s in sites}
        self.latest = {c: r for c, r in self.latest.items() if c in checks}

    @property
    def impaired(self) -> bool:
        """Every site's latest critical run failed: the fault is most likely ours, not theirs.

        With a single site configured this cannot be told apart, so it is never claimed.
        """
        seen = [v for v in self.views.values() if v.last_run_at is not None]
        return (
            len(self.sites) >= 2
            and len(seen) == len(self.sites)
            and all(v.failures > 0 for v in seen)
        )

    def snapshot(self) -> Mapping[str, SiteView]:
        return dict(self.views)

    def blame_dependency(self, result: Result) -> str | None:
        """Evidence naming the IdP when a journey failed at auth while its IdP check fails."""
        idp = result.facts.get("idp")
        if result.ok or result.reason is not Reason.AUTH or not isinstance(idp, str):
            return None
        idp_result = self.latest.get(f"idp/{idp}")
        if idp_result is None or idp_result.ok:
            return None
        return (
            f"IdP {idp} is failing [{idp_result.reason}]: {idp_result.message}; journey "
            f"{result.target} cannot authenticate (a dependency fault, not the site)"
        )


def describe_failure(result: Result) -> str:
    step = result.failed_step
    where = f" at step {step.name}" if step else ""
    reason = f" [{result.reason.value}]" if result.reason else ""
    detail = step.message if step else result.message
    return f"journey {result.target} failed{where}{reason}: {detail}"
