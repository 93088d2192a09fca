"""Operator controls and failover latches: actions ordered across agents, kept across restarts.

Every agent holds the same small set of registers, two per site: `failover` (a latch, or the
failback that released it) and `hold` (a hold, or the lift that ended it). An action is recorded
on one agent (an operator's API call, or the verdict latching a failover) and reaches the others
with the views they already exchange. Each register keeps its newest action, "newest" by a
Lamport clock (ties broken by the recording vantage and the action id), never by wall clocks,
which disagree across clouds. The registers are written to `agent.state_dir` on every change, so
a restarted agent keeps them; one without a state dir re-learns them from its peers.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import secrets
import tempfile
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from failsight.core.configtypes import Duration, Model, Name, parse_duration

log = logging.getLogger(__name__)
AUDIT = logging.getLogger("failsight.audit")

STATE_FILE = "control.json"
MAX_TEXT = 500  # reason and `by` are operator text: bounded, so a peer cannot bloat our state
MAX_ACTIONS = 4096  # a peer's view carrying more is refused as a whole
MAX_HOLD_SECONDS = 31 * 86400.0


class ActionKind(enum.StrEnum):
    LATCH = "latch"  # the verdict reached failover_recommended: failed over, until failback
    FAILBACK = "failback"  # an operator (or the auto policy) released the latch
    HOLD = "hold"  # an operator: do not fail this site over until `until`
    LIFT = "lift"  # an operator ended a hold early


REGISTER: Mapping[ActionKind, str] = {
    ActionKind.LATCH: "failover",
    ActionKind.FAILBACK: "failover",
    ActionKind.HOLD: "hold",
    ActionKind.LIFT: "hold",
}


@dataclass(frozen=True, slots=True)
class Action:
    """One control action. `clock` and `origin` order it; `at` is only for people to read."""

    id: str
    kind: ActionKind
    site: str
    clock: int
    origin: str  # the vantage whose agent recorded it
    at: float  # the origin's wall clock
    by: str
    reason: str = ""
    until: float | None = None  # hold
    target: str | None = None  # latch: the standby failed over to
    latched_at: float | None = None  # failback: when the latch it released was set

    @property
    def order(self) -> tuple[int, str, str]:
        return (self.clock, self.origin, self.id)

    @property
    def register(self) -> tuple[str, str]:
        return (self.site, REGISTER[self.kind])

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.id,
            "kind": self.kind.value,
            "site": self.site,
            "clock": self.clock,
            "origin": self.origin,
            "at": self.at,
            "by": self.by,
            "reason": self.reason,
        }
        for key in ("until", "target", "latched_at"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: object) -> Action:
        """An action from a peer or the state file; ValueError when it is not a valid one."""
        if not isinstance(data, Mapping):
            raise ValueError("an action is not a JSON object")
        try:
            kind = ActionKind(str(data.get("kind")))
        except ValueError:
            raise ValueError(f"unknown action kind {data.get('kind')!r}") from None
        clock = data.get("clock")
        if not isinstance(clock, int) or isinstance(clock, bool) or not 0 < clock < 2**53:
            raise ValueError("an action's clock must be a positive integer")
        return cls(
            id=_text(data, "id", 64),
            kind=kind,
            site=_text(data, "site", 128),
            clock=clock,
            origin=_text(data, "origin", 128),
            at=_number(data, "at"),
            by=_text(data, "by", MAX_TEXT),
            reason=_text(data, "reason", MAX_TEXT, required=False),
            until=_number(data, "until") if data.get("until") is not None else None,
            target=_text(data, "target", 128) if data.get("target") is not None else None,
            latched_at=(
                _number(data, "latched_at") if data.get("latched_at") is not None else None
            ),
        )


def _text(data: Mapping[str, object], key: str, limit: int, *, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"an action's {key} must be a non-empty string")
    if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"an action's {key} is too long or has control characters")
    return value


def _number(data: Mapping[str, object], key: str) -> float:
    value = data.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 1e11:
        raise ValueError(f"an action's {key} must be a Unix time")
    return float(value)


def clean_text(value: object, what: str, *, limit: int = MAX_TEXT) -> str:
    """Operator text for an action (`by`, `reason`): a string, bounded, no control characters."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"{what} must be at most {limit} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what} must not contain control characters")
    return value


class ControlConflict(ValueError):
    """An operator action the site's current state does not allow (HTTP 409): a failback of a
    site that is not failed over, a lift of a hold that is not there or comes from config."""


# --- what the verdict reads ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latch:
    """A site's failover is latched: it stays failed over until failback is released."""

    target: str | None
    at: float
    by: str


@dataclass(frozen=True, slots=True)
class Hold:
    """A site must not be failed over until `until` (an operator's hold, or a maintenance
    window from the config)."""

    by: str
    reason: str
    until: float
    source: Literal["operator", "maintenance"] = "operator"


@dataclass(frozen=True, slots=True)
class Controls:
    """The latches and holds in force now, and when each site was last latched (for the
    flap rule: at most one failover per flapping episode)."""

    latches: Mapping[str, Latch] = field(default_factory=dict)
    holds: Mapping[str, Hold] = field(default_factory=dict)
    last_latched_at: Mapping[str, float] = field(default_factory=dict)


# --- the replicated registers ----------------------------------------------------------------


class ControlStore:
    """This agent's copy of the registers. Not thread-safe: used on the event loop only."""

    def __init__(self, vantage: str, state_dir: str | None = None) -> None:
        self.vantage = vantage
        self.path = Path(state_dir) / STATE_FILE if state_dir else None
        self.clock = 0
        self.registers: dict[tuple[str, str], Action] = {}
        self.history: list[Action] = []  # every action accepted since start, for the timeline

    # persistence -----------------------------------------------------------------------------

    def load(self) -> None:
        """Read the state file, if any. A damaged file is reported and set aside, never fatal:
        the registers are re-learned from the peers."""
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            actions = [Action.from_json(a) for a in data["actions"]]
            clock = int(data.get("clock", 0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error(
                "cannot read the control state %s (%s): starting without it; holds and "
                "latches are re-learned from the peers",
                self.path,
                exc,
            )
            return
        self.clock = max(clock, 0)
        for action in actions:
            self._accept(action)
        log.info("control state loaded from %s: %d register(s)", self.path, len(self.registers))

    def save(self) -> None:
        if self.path is None:
            return
        body = json.dumps(
            {"version": 1, "clock": self.clock, "actions": [a.to_json() for a in self.actions()]},
            sort_keys=True,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a crash mid-write leaves the previous file, never half of one.
            fd, tmp = tempfile.mkstemp(prefix=".control.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot write the control state %s: %s", self.path, exc)

    # actions -----------------------------------------------------------------------------------

    def actions(self) -> list[Action]:
        return sorted(self.registers.values(), key=lambda a: (a.site, REGISTER[a.kind]))

    def record(
        self,
        kind: ActionKind,
        site: str,
        *,
        by: str,
        reason: str = "",
        now: float,
        until: float | None = None,
        target: str | None = None,
        latched_at: float | None = None,
    ) -> Action:
        """A new action from this agent: newer than every action it has seen."""
        self.clock += 1
        action = Action(
            id=secrets.token_hex(8),
            kind=kind,
            site=site,
            clock=self.clock,
            origin=self.vantage,
            at=now,
            by=by,
            reason=reason,
            until=until,
            target=target,
            latched_at=latched_at,
        )
        self._accept(action)
        _audit(action, source="local")
        self.save()
        return action

    def merge(self, actions: Iterable[Action], *, source: str) -> list[Action]:
        """Take a peer's actions; returns those that were new here (each audit-logged once)."""
        taken = [a for a in actions if self._accept(a)]
        for action in taken:
            _audit(action, source=source)
        if taken:
            self.save()
        return taken

    def _accept(self, action: Action) -> bool:
        self.clock = max(self.clock, action.clock)
        current = self.registers.get(action.register)
        if current is not None and current.order >= action.order:
            return False
        self.registers[action.register] = action
        self.history.append(action)
        del self.history[:-MAX_ACTIONS]
        return True

    def controls(self, now: float, maintenance: Mapping[str, Hold] | None = None) -> Controls:
        latches: dict[str, Latch] = {}
        holds: dict[str, Hold] = dict(maintenance or {})
        last: dict[str, float] = {}
        for (site, register), action in self.registers.items():
            if register == "failover":
                if action.kind is ActionKind.LATCH:
                    latches[site] = Latch(action.target, action.at, action.by)
                    last[site] = action.at
                elif action.latched_at is not None:
                    last[site] = action.latched_at
            elif action.kind is ActionKind.HOLD and action.until is not None and action.until > now:
                window = holds.get(site)
                # An operator's hold wins over a window; of two, the one that lasts longer.
                if window is None or window.source == "maintenance" or window.until < action.until:
                    holds[site] = Hold(action.by, action.reason, action.until, "operator")
        return Controls(latches=latches, holds=holds, last_latched_at=last)


def _audit(action: Action, *, source: str) -> None:
    AUDIT.warning(
        "audit: %s %s by %s%s",
        action.kind.value,
        action.site,
        action.by,
        f": {action.reason}" if action.reason else "",
        extra={
            "audit": True,
            "source": source,
            **{f"action_{k}": v for k, v in action.to_json().items()},
        },
    )


# --- maintenance windows (config) ---------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class WeeklyWindow(Model):
    days: list[Day] = Field(min_length=1)
    at: str  # HH:MM, local to `timezone`
    duration: Duration
    timezone: str = "UTC"

    @field_validator("at")
    @classmethod
    def _at(cls, value: str) -> str:
        try:
            dt.time.fromisoformat(value)
        except ValueError:
            raise ValueError("expected a time of day as HH:MM, e.g. 02:30") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as UTC)"
            ) from None
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        if value > 7 * 86400:
            raise ValueError("a weekly window lasts at most 7d")
        return value


class MaintenanceConfig(Model):
    """A planned-work window: the listed sites are held (never failed over) while it is open."""

    name: Name
    sites: list[Name] = Field(min_length=1)
    reason: str = ""
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    weekly: WeeklyWindow | None = None

    @model_validator(mode="after")
    def _one_schedule(self) -> MaintenanceConfig:
        once = self.start is not None or self.end is not None
        if once == (self.weekly is not None):
            raise ValueError("give either start and end, or weekly")
        if once:
            if self.start is None or self.end is None:
                raise ValueError("a one-off window needs both start and end")
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end need a time zone, e.g. 2026-12-05T02:00:00Z")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        return self

    def open_until(self, now: float) -> float | None:
        """When the window that is open at `now` closes; None when none is open."""
        if self.start is not None and self.end is not None:
            if self.start.timestamp() <= now < self.end.timestamp():
                return self.end.timestamp()
            return None
        assert self.weekly is not None
        weekly = self.weekly
        zone = zoneinfo.ZoneInfo(weekly.timezone)
        local = dt.datetime.fromtimestamp(now, zone)
        at = dt.time.fromisoformat(weekly.at)
        # A window may have opened on one of the previous days and still be open.
        for back in range(8):
            day = local.date() - dt.timedelta(days=back)
            if _DAYS[day.weekday()] not in weekly.days:
                continue
            opened = dt.datetime.combine(day, at, zone).timestamp()
            if opened <= now < opened + weekly.duration:
                return opened + weekly.duration
        return None


def maintenance_holds(windows: Sequence[MaintenanceConfig], now: float) -> dict[str, Hold]:
    """The holds the config's maintenance windows put in force at `now`, by site."""
    holds: dict[str, Hold] = {}
    for window in windows:
        until = window.open_until(now)
        if until is None:
            continue
        for site in window.sites:
            held = holds.get(site)
            if held is None or held.until < until:
                holds[site] = Hold(
                    f"maintenance {window.name}", window.reason, until, "maintenance"
                )
    return holds


def hold_until(body: Mapping[str, object], now: float) -> float:
    """The end of a hold asked for as `{"until": RFC 3339}` or `{"for": duration}`."""
    if ("until" in body) == ("for" in body):
        raise ValueError("give either until (RFC 3339 time) or for (a duration such as 2h)")
    if "for" in body:
        try:
            seconds = float(parse_duration(body["for"]))
        except ValueError as exc:
            raise ValueError(f"for: {exc}") from None
        until = now + seconds
    else:
        raw = body["until"]
        if not isinstance(raw, str):
            raise ValueError("until must be an RFC 3339 time such as 2026-12-05T04:00:00Z")
        try:
            when = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(
                "until must be an RFC 3339 time such as 2026-12-05T04:00:00Z"
            ) from None
        if when.tzinfo is None:
            raise ValueError("until needs a time zone, e.g. 2026-12-05T04:00:00Z")
        until = when.timestamp()
    if not until > now:
        raise ValueError("the hold would end in the past")
    if until - now > MAX_HOLD_SECONDS:
        raise ValueError("a hold lasts at most 31 days")
    return until


def iso(ts: float) -> str:
    """A Unix time as RFC 3339 UTC, to the second, for reasons and logs."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "Action",
    "ActionKind",
    "ControlConflict",
    "ControlStore",
    "Controls",
    "Hold",
    "Latch",
    "MaintenanceConfig",
    "clean_text",
    "hold_until",
    "iso",
    "maintenance_holds",
]
