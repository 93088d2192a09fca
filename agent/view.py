"""This vantage's view of each site: flap-damped state from critical journey results, and the
view's wire format (`VantageView`: what /v1/view serves and what a peer's agent reads back)."""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from failsight.agent.control import MAX_ACTIONS, Action
from failsight.core.redact import excerpt
from failsight.core.results import DependsOn, Result, VantageReach


class SiteState(enum.StrEnum):
    UP = "up"
    DEGRADED = "degraded"  # failing, but not for failure_threshold runs in a row yet
    DOWN = "down"  # failure_threshold failed runs in a row, and the latest run failed
    RECOVERING = "recovering"  # down, then a success: on the way back, never a down vote


@dataclass(frozen=True, slots=True)
class Hysteresis:
    """The view's thresholds (from `verdict:`)."""

    failure_threshold: int = 3
    recovery_threshold: int = 2
    # Route-flap damping: each entry into `down` adds 1 to a penalty that halves every
    # `flap_half_life` seconds; at `flap_threshold` the site is flapping, and it stays so
    # until the penalty has decayed below half of that.
    flap_threshold: float = 3.0
    flap_half_life: float = 600.0


# A penalty decayed below this starts a new flapping episode at the next entry into `down`.
EPISODE_RESET = 0.5


@dataclass(frozen=True, slots=True)
class SiteView:
    """One site as seen from here. Pure data: `advance` returns the next one."""

    state: SiteState = SiteState.UP
    since: float = 0.0
    failures: int = 0  # consecutive failed critical runs
    successes: int = 0  # consecutive successful critical runs
    evidence: tuple[str, ...] = ()
    last_run_at: float | None = None  # None: no critical run seen yet
    penalty: float = 0.0  # flap penalty as of `penalty_at`
    penalty_at: float = 0.0
    flapping: bool = False
    episode_since: float | None = None  # first entry into `down` of this flapping episode

    def penalty_now(self, now: float, half_life: float) -> float:
        if self.penalty <= 0.0:
            return 0.0
        decay: float = 0.5 ** (max(0.0, now - self.penalty_at) / half_life)
        return self.penalty * decay


def advance(view: SiteView, ok: bool, *, now: float, h: Hysteresis, evidence: str = "") -> SiteView:
    """The hysteresis state machine.

    up -> degraded on a failure; degraded -> down after `failure_threshold` consecutive
    failures, or back to up on a success. down -> recovering on a success, recovering -> up
    after `recovery_threshold` consecutive successes, or straight back to down on a failure:
    the incident goes on. Only `down` is a vote for failing over, so a recovering site (one
    that has answered since it went down) can keep a failover but never start one.
    """
    failures = 0 if ok else view.failures + 1
    successes = view.successes + 1 if ok else 0
    state = view.state
    if ok:
        if state is SiteState.DEGRADED:
            state = SiteState.UP
        elif state in (SiteState.DOWN, SiteState.RECOVERING):
            state = SiteState.UP if successes >= h.recovery_threshold else SiteState.RECOVERING
    elif state in (SiteState.DOWN, SiteState.RECOVERING) or failures >= h.failure_threshold:
        state = SiteState.DOWN
    elif state is SiteState.UP:
        state = SiteState.DEGRADED
    penalty = view.penalty_now(now, h.flap_half_life)
    episode = view.episode_since
    if state is SiteState.DOWN and view.state is not SiteState.DOWN:
        if penalty < EPISODE_RESET:
            episode = now
        penalty += 1.0
    flapping = penalty >= h.flap_threshold or (view.flapping and penalty >= h.flap_threshold / 2)
    if ok:
        notes: tuple[str, ...] = ()
        if state is SiteState.RECOVERING:
            notes = (f"recovering: {successes}/{h.recovery_threshold} successful runs",)
    else:
        notes = (f"{evidence} ({failures} consecutive)" if evidence else f"{failures} failures",)
    if flapping:
        notes = (*notes, f"flapping: entered down {penalty:.1f} times (decayed) recently")
    return SiteView(
        state=state,
        since=view.since if state is view.state and view.last_run_at is not None else now,
        failures=failures,
        successes=successes,
        evidence=notes,
        last_run_at=now,
        penalty=penalty,
        penalty_at=now,
        flapping=flapping,
        episode_since=episode if penalty >= EPISODE_RESET else None,
    )


@dataclass
class ViewTracker:
    """A sink that keeps the latest result of every check and this vantage's site views."""

    sites: tuple[str, ...]
    hysteresis: Hysteresis = field(default_factory=Hysteresis)
    name: str = "view"
    views: dict[str, SiteView] = field(default_factory=dict)
    latest: dict[str, Result] = field(default_factory=dict)
    # Called with a critical journey check's name when its site's view is left unsettled
    # (degraded or recovering): the agent re-runs it soon (fast confirmation).
    on_unsettled: Callable[[str], None] | None = None
    # Called with a site's name when this vantage's view of it enters `down`: the agent
    # re-checks the other sites at once, so the verdict knows whether they still answer from
    # here (a failover target, or a vantage that lost its own network).
    on_down: Callable[[str], None] | None = None
    # Called with a check's name to run it at once (the IdP check behind an auth failure).
    on_recheck: Callable[[str], None] | None = None
    # The latest self-check outcome (`agent.self_check`): None when there is none.
    self_check_ok: bool | None = None
    # In a group: the latest results of checks other members run (an IdP check whose failure
    # explains a journey's), by check name.
    remote: Mapping[str, Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for site in self.sites:
            self.views.setdefault(site, SiteView())

    def handle(self, result: Result) -> None:
        if result.skipped:
            return
        self.latest[result.check] = result
        if _reaches(result):
            self.self_check_ok = result.ok
            return
        # Critical runs (journeys marked critical) are the votes on a site's health.
        if not result.critical or result.site not in self.views:
            return
        blamed = self.blame_dependency(result)
        if blamed is None and self.on_recheck is not None:
            for dependency in _explaining(result):
                # Refused (at auth) while the dependency (the IdP) last passed: ask it again
                # now, so the next run knows whose fault it is before this site's failures
                # add up to `down`.
                self.on_recheck(dependency.check)
        view = self.views[result.site]
        if blamed is not None:
            # The site may be fine: a shared dependency fails. Failing over would not help, so
            # this run does not count towards `down`, and a site already down is only
            # degraded now that the dependency explains its failures.
            self.views[result.site] = replace(
                view,
                state=SiteState.DEGRADED,
                since=view.since if view.state is SiteState.DEGRADED else result.started_at,
                failures=0,
                successes=0,
                evidence=(blamed,),
                last_run_at=result.started_at + result.duration,
            )
            return
        before = view.state
        view = advance(
            view,
            result.ok,
            now=result.started_at + result.duration,
            h=self.hysteresis,
            evidence=describe_failure(result),
        )
        entered_down = view.state is SiteState.DOWN and before is not SiteState.DOWN
        self.views[result.site] = view
        if entered_down and self.on_down is not None:
            self.on_down(result.site)
        if self.on_unsettled is not None and view.state in (
            SiteState.DEGRADED,
            SiteState.RECOVERING,
        ):
            self.on_unsettled(result.check)

    def reconfigure(self, sites: tuple[str, ...], checks: set[str], h: Hysteresis) -> None:
        """After a reload: keep the history of sites that remain, forget the rest."""
        self.sites = sites
        self.hysteresis = h
        self.views = {s: self.views.get(s, SiteView()) for s in sites}
        self.latest = {c: r for c, r in self.latest.items() if c in checks}
        if not any(_reaches(r) for r in self.latest.values()):
            self.self_check_ok = None

    @property
    def every_site_failing(self) -> bool:
        """Every site's latest critical run failed (not through a failing dependency).

        Either every site is down or this vantage lost its own network: the verdict tells
        them apart by asking the other vantages (and the self-check). With a single site
        configured this cannot be told apart, so it is never claimed.
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
        """Evidence naming the dependency (a journey's IdP) when a run failed in the way that
        dependency explains (at auth) while the dependency's own check fails."""
        for dependency in _explaining(result):
            latest = self.latest.get(dependency.check)
            there = self.remote.get(dependency.check)
            if there is not None and (latest is None or latest.started_at < there.started_at):
                latest = there
            if latest is not None and not latest.ok:
                return (
                    f"{dependency.label} is failing [{latest.reason}]: {latest.message}; "
                    f"{dependency.effect} (a dependency fault, not the site)"
                )
        return None


def _reaches(result: Result) -> bool:
    """A self-check result: it says whether this vantage reaches the outside world."""
    return any(isinstance(e, VantageReach) for e in result.evidence)


def _explaining(result: Result) -> list[DependsOn]:
    """The dependencies a failed run relied on whose failure explains its reason."""
    if result.ok:
        return []
    return [e for e in result.evidence if isinstance(e, DependsOn) and e.via is result.reason]


def describe_failure(result: Result) -> str:
    step = result.failed_step
    where = f" at step {step.name}" if step else ""
    reason = f" [{result.reason.value}]" if result.reason else ""
    detail = step.message if step else result.message
    return f"journey {result.target} failed{where}{reason}: {detail}"


# --- the view wire format: what /v1/view serves and what a peer's agent reads back ----------

# More sites than this in one view is no agent's view: refused as a whole.
MAX_SITES = 1024
# A site name longer than a configured one can be (core.configtypes.Name) names no site here.
MAX_SITE_NAME = 128
# Evidence lines kept per site, and their length.
MAX_EVIDENCE = 10
MAX_EVIDENCE_CHARS = 500
# The peer's own values quoted in an error are cut to this.
SHOWN_CHARS = 64


@dataclass(frozen=True, slots=True)
class SiteOpinion:
    state: SiteState
    since: float = 0.0
    evidence: tuple[str, ...] = ()
    last_run_at: float | None = None  # the vantage's own clock: compared only with itself
    flapping: bool = False
    episode_since: float | None = None
    failures: int = 0  # consecutive failed critical runs (shown; the verdict reads `state`)
    successes: int = 0  # consecutive successful critical runs

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "since": self.since,
            "evidence": list(self.evidence),
            "consecutive_failures": self.failures,
            "consecutive_successes": self.successes,
            "last_run_at": self.last_run_at,
            "flapping": self.flapping,
            "episode_since": self.episode_since,
        }


@dataclass(frozen=True, slots=True)
class VantageView:
    """One vantage's view of every site: the verdict's input, and the one owner of the
    `/v1/view` wire format (`to_json` serves it, `from_json` reads a peer's)."""

    vantage: str
    generated_at: float
    sites: Mapping[str, SiteOpinion]
    every_site_failing: bool = False
    self_check: bool | None = None  # the vantage's self-check: None when it has none
    # Shown to people and peers; the verdict does not read them from a view.
    impaired: bool = False  # the vantage's own judgement: its views do not vote
    control_clock: int = 0  # the vantage's control-register Lamport clock
    # Holds, failbacks and latches travel with the view: every agent converges on them.
    actions: tuple[Action, ...] = ()
    # Sites this vantage has no fresh evidence for (a group member's shard is missing): stale
    # for this vantage, so it casts no vote on them, never an `up` one (agent/group.py).
    missing: frozenset[str] = frozenset()
    # What a group of agents says about itself (members, freshness, partial): shown, never
    # judged; None for an agent that is not in a group.
    group: Mapping[str, object] | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "vantage": self.vantage,
            "generated_at": self.generated_at,
            "impaired": self.impaired,
            "every_site_failing": self.every_site_failing,
            "self_check": self.self_check,
            "sites": {site: opinion.to_json() for site, opinion in self.sites.items()},
            "control": {
                "clock": self.control_clock,
                "actions": [a.to_json() for a in self.actions],
            },
        }
        if self.group is not None:
            out["missing_sites"] = sorted(self.missing)
            out["group"] = dict(self.group)
        return out

    @classmethod
    def from_json(cls, data: object, *, expected: str, received_at: float) -> VantageView:
        """A peer's `/v1/view` body; ValueError if it is not one.

        Freshness is judged by when *we* received the view, not the peer's `generated_at`:
        the peer's clock may be skewed from ours, and a fetched view is exactly as fresh as
        the fetch.

        Every value it returns is of the type the verdict expects (finite times, bounded
        strings): a field of the wrong type is ignored (taken as absent), a site name no
        configured site can have is skipped, and only what makes the whole view meaningless
        (no sites, a site that is not an object or has no known state, the wrong vantage, bad
        control actions) refuses it.
        """
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        vantage = data.get("vantage")
        if vantage != expected:
            raise ValueError(f"reports vantage {_shown(vantage)}, expected {expected!r}")
        sites = data.get("sites")
        if not isinstance(sites, Mapping):
            raise ValueError("has no sites")
        opinions = opinions_from_json(sites)
        every = data.get("every_site_failing")
        self_check = data.get("self_check")
        clock, actions = _control(data.get("control"))
        return cls(
            vantage=expected,
            generated_at=received_at,
            sites=MappingProxyType(opinions),
            # An older agent only says `impaired` (its own judgement): take it as such.
            every_site_failing=every if isinstance(every, bool) else data.get("impaired") is True,
            self_check=self_check if isinstance(self_check, bool) else None,
            impaired=data.get("impaired") is True,
            control_clock=clock,
            actions=actions,
            missing=_site_names(data.get("missing_sites")),
            group=_group_summary(data.get("group")),
        )


def opinions_from_json(sites: Mapping[object, object]) -> dict[str, SiteOpinion]:
    """The `sites` object of a view (or of a group member's shard); ValueError if bad."""
    if len(sites) > MAX_SITES:
        raise ValueError(f"reports {len(sites)} sites, more than {MAX_SITES}")
    opinions: dict[str, SiteOpinion] = {}
    for site, body in sites.items():
        if not isinstance(site, str) or not _is_site_name(site):
            continue  # no configured site has this name: nothing here would ever read it
        if not isinstance(body, Mapping):
            raise ValueError(f"site {_shown(site)} is not an object")
        state = body.get("state")
        if not isinstance(state, str) or state not in _STATES:
            raise ValueError(f"site {_shown(site)} has state {_shown(state)}")
        opinions[site] = SiteOpinion(
            state=SiteState(state),
            since=_time(body.get("since")) or 0.0,
            evidence=_evidence(body.get("evidence")),
            last_run_at=_time(body.get("last_run_at")),
            flapping=body.get("flapping") is True,
            episode_since=_time(body.get("episode_since")),
            failures=_count(body.get("consecutive_failures")),
            successes=_count(body.get("consecutive_successes")),
        )
    return opinions


def _site_names(value: object) -> frozenset[str]:
    """A list of site names (`missing_sites`): what is not a site name is dropped."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(
        v for v in itertools.islice(value, MAX_SITES) if isinstance(v, str) and _is_site_name(v)
    )


def _group_summary(value: object) -> Mapping[str, object] | None:
    """What a peer's view says of its group, as far as this agent shows it: whether it is
    partial and how many members contributed (the member list itself is not kept)."""
    if not isinstance(value, Mapping):
        return None
    members = value.get("members")
    live = (
        sum(1 for m in members[:MAX_SITES] if isinstance(m, Mapping) and m.get("state") == "live")
        if isinstance(members, list)
        else 0
    )
    return MappingProxyType({"partial": value.get("partial") is True, "live_members": live})


_STATES = frozenset(s.value for s in SiteState)


def _control(control: object) -> tuple[int, tuple[Action, ...]]:
    """The clock and control actions a view carries (`control`); ValueError if bad."""
    if control is None:
        return 0, ()
    actions = control.get("actions") if isinstance(control, Mapping) else None
    if not isinstance(control, Mapping) or not isinstance(actions, list):
        raise ValueError("control.actions is not a list of at most 4096 actions")
    if len(actions) > MAX_ACTIONS:
        raise ValueError("control.actions is not a list of at most 4096 actions")
    return _count(control.get("clock")), tuple(Action.from_json(a) for a in actions)


def _is_site_name(name: str) -> bool:
    # What failsight.core.configtypes.Name lets a configured site be called.
    return (
        0 < len(name) <= MAX_SITE_NAME
        and name == name.strip()
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)
    )


def _evidence(value: object) -> tuple[str, ...]:
    """Up to MAX_EVIDENCE lines of text; anything else in the list is dropped."""
    if not isinstance(value, list):
        return ()
    lines = (excerpt(e, MAX_EVIDENCE_CHARS, unprintable=" ") for e in value if isinstance(e, str))
    return tuple(itertools.islice(lines, MAX_EVIDENCE))


def _shown(value: object) -> str:
    """A peer's value, as an error quotes it: never a repr of a megabyte or of a structure
    nested a thousand deep."""
    if isinstance(value, str):
        return repr(excerpt(value, SHOWN_CHARS, unprintable=" "))
    if value is None or isinstance(value, bool | int | float):
        return repr(value) if not isinstance(value, int) or abs(value) < 10**20 else "a number"
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


def _time(value: object) -> float | None:
    """A Unix time (finite, from 1970 to the year 5138), or None."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        # The range first: math.isfinite raises OverflowError for a 400-digit integer.
        and 0 <= value < 1e11
        and math.isfinite(value)
    ):
        return float(value)
    return None


def _count(value: object) -> int:
    """A count (a non-negative JSON integer below 2**53), or 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return 0
