"""Fetching the other vantages' views (`/v1/view` of the agents in the other clouds)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from pydantic import field_validator

from agent.configtypes import Duration, Model, Name, Secret
from agent.control import MAX_ACTIONS, Action
from agent.verdict import SiteOpinion, VantageView
from agent.view import SiteState
from probes.http import classify, read_bounded, ssl_context

log = logging.getLogger(__name__)

MAX_VIEW_BYTES = 1_048_576


class PeerConfig(Model):
    name: Name  # the peer's vantage, as it reports itself
    url: str  # base URL of the peer agent's API
    bearer_token: Secret | None = None  # sent to the peer; its agent.view_token
    ca_file: str | None = None
    interval: Duration = 5.0
    timeout: Duration = 2.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class PeerState:
    """The last view fetched from a peer, and how the last attempt went."""

    view: VantageView | None
    fetched_at: float | None  # local wall clock when the view arrived
    error: str | None = None
    actions: tuple[Action, ...] = ()  # the control actions the peer's view carried


def parse_view(data: object, *, expected: str, received_at: float) -> VantageView:
    """A peer's `/v1/view` body as a VantageView; ValueError if it is not one.

    Freshness is judged by when *we* received the view, not the peer's `generated_at`: the
    peer's clock may be skewed from ours, and a fetched view is exactly as fresh as the fetch.
    """
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    if data.get("vantage") != expected:
        raise ValueError(f"reports vantage {data.get('vantage')!r}, expected {expected!r}")
    sites = data.get("sites")
    if not isinstance(sites, Mapping):
        raise ValueError("has no sites")
    opinions: dict[str, SiteOpinion] = {}
    for site, body in sites.items():
        if not isinstance(body, Mapping):
            raise ValueError(f"site {site!r} is not an object")
        try:
            state = SiteState(str(body.get("state")))
        except ValueError:
            raise ValueError(f"site {site!r} has state {body.get('state')!r}") from None
        evidence = body.get("evidence") or []
        opinions[str(site)] = SiteOpinion(
            state=state,
            since=_time(body.get("since")) or 0.0,
            evidence=tuple(str(e) for e in evidence)[:10] if isinstance(evidence, list) else (),
            last_run_at=_time(body.get("last_run_at")),
            flapping=body.get("flapping") is True,
            episode_since=_time(body.get("episode_since")),
        )
    every = data.get("every_site_failing")
    self_check = data.get("self_check")
    return VantageView(
        vantage=expected,
        generated_at=received_at,
        sites=opinions,
        # An older agent only says `impaired` (its own judgement): take it as such.
        every_site_failing=bool(every if isinstance(every, bool) else data.get("impaired")),
        self_check=self_check if isinstance(self_check, bool) else None,
    )


def parse_actions(data: object) -> tuple[Action, ...]:
    """The control actions a peer's view carries (`control.actions`); ValueError if bad."""
    if not isinstance(data, Mapping):
        return ()
    control = data.get("control")
    if control is None:
        return ()
    actions = control.get("actions") if isinstance(control, Mapping) else None
    if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
        raise ValueError("control.actions is not a list of at most 4096 actions")
    return tuple(Action.from_json(a) for a in actions)


def _time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1e11:
        return float(value)
    return None


class PeerPoller:
    """Polls every peer on its own cadence; one slow or dead peer never delays another."""

    def __init__(
        self,
        peers: Sequence[PeerConfig],
        http: aiohttp.ClientSession | None,
        on_view: Callable[[str, PeerState], None] | None = None,
    ) -> None:
        self.peers = list(peers)
        self.http = http
        self.on_view = on_view  # called with each view fetched (the agent merges its actions)
        self.states: dict[str, PeerState] = {p.name: PeerState(None, None) for p in self.peers}

    def views(self) -> list[VantageView]:
        """Every peer's latest view; a peer never heard from appears as an empty, ancient view,
        so it is listed as stale rather than forgotten."""
        out = []
        for peer in self.peers:
            state = self.states.get(peer.name)
            if state is not None and state.view is not None:
                out.append(state.view)
            else:
                out.append(VantageView(peer.name, 0.0, {}))
        return out

    async def run(self) -> None:
        if not self.peers:
            return
        async with asyncio.TaskGroup() as tg:
            for peer in self.peers:
                tg.create_task(self._poll(peer), name=f"peer {peer.name}")

    async def _poll(self, peer: PeerConfig) -> None:
        while True:
            await self.fetch(peer)
            await asyncio.sleep(peer.interval)

    async def fetch(self, peer: PeerConfig) -> PeerState:
        assert self.http is not None, "the poller needs a session to fetch"
        previous = self.states.get(peer.name, PeerState(None, None))
        headers = {"Accept": "application/json"}
        if peer.bearer_token is not None:
            headers["Authorization"] = f"Bearer {peer.bearer_token.get_secret_value()}"
        try:
            async with (
                asyncio.timeout(peer.timeout),
                self.http.get(
                    peer.url + "/v1/view", headers=headers, ssl=ssl_context(peer.ca_file)
                ) as response,
            ):
                body = await read_bounded(response, MAX_VIEW_BYTES)
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
            data = json.loads(body)
            view = parse_view(data, expected=peer.name, received_at=time.time())
            actions = parse_actions(data)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = classify(exc)[1]
        except Exception as exc:  # a bad body from a peer is its fault, not a reason to stop
            error = f"bad view: {exc}"
        else:
            state = PeerState(view, view.generated_at, None, actions)
            if previous.error is not None:
                log.info("peer %s is reachable again", peer.name)
            self.states[peer.name] = state
            if self.on_view is not None:
                self.on_view(peer.name, state)
            return state
        if previous.error is None:
            log.warning("cannot fetch the view of peer %s: %s", peer.name, error)
        state = PeerState(previous.view, previous.fetched_at, error, previous.actions)
        self.states[peer.name] = state
        return state
