"""The agent's published status: one immutable snapshot of everything the API serves.

The agent builds a new `Status` whenever its state changes (each verdict pass, a peer's view or
error, an operator action, a reload, start and stop) and replaces `agent.status` with it. The
API's GET handlers read only the latest snapshot: a GET never judges, counts or changes anything
in the agent. The API reaches the agent through `StatusSource` alone, never agent/runtime.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import SecretStr

from failsight.agent.config import Config
from failsight.agent.control import Action, ActionKind
from failsight.agent.group import Shard
from failsight.agent.peers import PeerState
from failsight.agent.timeline import MAX_POINTS_PER_SITE, Point, Timeline
from failsight.agent.verdict import SiteVerdict
from failsight.agent.view import VantageView
from failsight.core.results import Result

if TYPE_CHECKING:
    from failsight.agent.prometheus import PrometheusSink


@dataclass(frozen=True, slots=True)
class PeerLink:
    """How the last fetch of a peer's view went, as `/v1/verdict` shows it."""

    fetched_at: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class TimelineSnapshot:
    """The timeline's points and actions as of the snapshot; rendered for `now` on a GET."""

    window: float
    points: Mapping[str, tuple[Point, ...]]
    actions: tuple[Action, ...]

    def to_json(self, now: float) -> dict[str, object]:
        # A throwaway Timeline renders it: one owner of the timeline's JSON (agent/timeline.py).
        points = {s: deque(p, maxlen=MAX_POINTS_PER_SITE) for s, p in self.points.items()}
        return Timeline(self.window, points, self.actions).to_json(now)


@dataclass(frozen=True, slots=True)
class Status:
    """Everything the API's GET handlers serve, as of `published_at`. Immutable all the way
    down to what the handlers read: frozen dataclasses, tuples and read-only mappings."""

    vantage: str
    published_at: float
    ready: bool  # the scheduler runs (and the agent is not stopping)
    view: VantageView  # this vantage's own view: `/v1/view` serves `view.to_json()`
    verdicts: Mapping[str, SiteVerdict]
    results: Mapping[str, Result]  # the latest result of every check, by check name
    peers: Mapping[str, PeerLink]
    timeline: TimelineSnapshot
    sites: tuple[str, ...]  # the configured sites' names
    prometheus_enabled: bool
    view_token: SecretStr | None
    admin_token: SecretStr | None
    # In a group, this member's own part (`/v1/view?scope=member`); None without a group.
    shard: Shard | None = None

    @property
    def impaired(self) -> bool:
        return self.view.impaired


class StatusSource(Protocol):
    """What the API needs of the agent: the latest snapshot, the sink that renders /metrics,
    and the operator's one action (POST/DELETE only), after which the agent republishes."""

    @property
    def status(self) -> Status: ...

    @property
    def metrics_sink(self) -> PrometheusSink: ...

    def control_action(
        self,
        kind: ActionKind,
        site: str,
        *,
        by: str,
        reason: str,
        until: float | None = None,
    ) -> Action: ...


def build_status(
    config: Config,
    *,
    ready: bool,
    view: VantageView,
    verdicts: Mapping[str, SiteVerdict],
    shard: Shard | None = None,
    results: Mapping[str, Result],
    peers: Mapping[str, PeerState],
    timeline: Timeline,
) -> Status:
    """The snapshot of the agent's state: copies of its mutable containers, frozen."""
    return Status(
        vantage=config.agent.vantage,
        published_at=view.generated_at,
        ready=ready,
        view=replace(view, sites=_frozen(view.sites), actions=tuple(view.actions)),
        shard=shard,
        verdicts=_frozen({site: _frozen_verdict(v) for site, v in verdicts.items()}),
        results=_frozen(results),
        peers=_frozen({name: PeerLink(s.fetched_at, s.error) for name, s in peers.items()}),
        timeline=TimelineSnapshot(
            timeline.window,
            _frozen({site: tuple(series) for site, series in timeline.points.items()}),
            tuple(timeline.actions),
        ),
        sites=tuple(s.name for s in config.sites),
        prometheus_enabled=config.telemetry.prometheus.enabled,
        view_token=config.agent.view_token,
        admin_token=config.agent.admin_token,
    )


K = TypeVar("K")
V = TypeVar("V")


def _frozen(mapping: Mapping[K, V]) -> Mapping[K, V]:
    return MappingProxyType(dict(mapping))


def _frozen_verdict(v: SiteVerdict) -> SiteVerdict:
    return replace(
        v,
        quorum=replace(v.quorum, vantages=_frozen(v.quorum.vantages)),
        confirm=None if v.confirm is None else _frozen(v.confirm),
    )
