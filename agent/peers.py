"""Fetching the other vantages' views (`/v1/view` of the agents in the other clouds)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from pydantic import field_validator

from failsight.agent.control import MAX_ACTIONS, Action
from failsight.agent.verdict import SiteOpinion, VantageView
from failsight.agent.view import SiteState
from failsight.core.configtypes import Interval, Model, Name, Secret, Timeout
from failsight.core.http import classify, read_bounded, ssl_context
from failsight.core.redact import REDACTOR, redact

log = logging.getLogger(__name__)

# A view with every site and MAX_ACTIONS control actions fits well within this; a larger body is
# refused unread (a peer error), whatever the peer declares.
MAX_VIEW_BYTES = 4 * 1_048_576
# More sites than this in one view is no agent's view: refused as a whole.
MAX_SITES = 1024
# A site name longer than a configured one can be (core.configtypes.Name) names no site here.
MAX_SITE_NAME = 128
# Evidence lines kept per site, and their length.
MAX_EVIDENCE = 10
MAX_EVIDENCE_CHARS = 500
# A peer error (state.error, the API, the log) is one line of at most this many characters.
MAX_ERROR_CHARS = 300
# The peer's own values quoted in an error are cut to this.
SHOWN_CHARS = 64


class PeerConfig(Model):
    name: Name  # the peer's vantage, as it reports itself
    url: str  # base URL of the peer agent's API
    bearer_token: Secret | None = None  # sent to the peer; its agent.view_token
    ca_file: str | None = None
    interval: Interval = 5.0
    timeout: Timeout = 2.0

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

    Every value it returns is of the type the verdict expects (finite times, bounded strings):
    a field of the wrong type is ignored (taken as absent), a site name no configured site can
    have is skipped, and only what makes the whole view meaningless (no sites, a site that is
    not an object or has no known state, the wrong vantage) refuses it.
    """
    if not isinstance(data, Mapping):
        raise ValueError("not a JSON object")
    vantage = data.get("vantage")
    if vantage != expected:
        raise ValueError(f"reports vantage {_shown(vantage)}, expected {expected!r}")
    sites = data.get("sites")
    if not isinstance(sites, Mapping):
        raise ValueError("has no sites")
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
        )
    every = data.get("every_site_failing")
    self_check = data.get("self_check")
    return VantageView(
        vantage=expected,
        generated_at=received_at,
        sites=opinions,
        # An older agent only says `impaired` (its own judgement): take it as such.
        every_site_failing=every if isinstance(every, bool) else data.get("impaired") is True,
        self_check=self_check if isinstance(self_check, bool) else None,
    )


_STATES = frozenset(s.value for s in SiteState)


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
    lines = (_line(e, MAX_EVIDENCE_CHARS) for e in value if isinstance(e, str))
    return tuple(itertools.islice(lines, MAX_EVIDENCE))


def _line(text: str, limit: int) -> str:
    """`text` on one line, control characters replaced, cut to `limit` characters; every
    secret the process holds is redacted first, while it is still whole (a cut one would no
    longer be recognised)."""
    cut = redact(text[: limit + 2048])[: limit + 1]
    flat = "".join(c if c.isprintable() else " " for c in cut)
    return flat[:limit] + "..." if len(cut) > limit or len(text) > limit + 2048 else flat


def _shown(value: object) -> str:
    """A peer's value, as an error quotes it: never a repr of a megabyte or of a structure
    nested a thousand deep."""
    if isinstance(value, str):
        return repr(_line(value, SHOWN_CHARS))
    if value is None or isinstance(value, bool | int | float):
        return repr(value) if not isinstance(value, int) or abs(value) < 10**20 else "a number"
    return f"a JSON {'array' if isinstance(value, list) else 'object'}"


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
    """A Unix time (finite, from 1970 to the year 5138), or None."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value < 1e11
    ):
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
        # Sent to the peers: redacted by value wherever a peer (or anything) echoes it.
        REDACTOR.add(*(p.bearer_token.get_secret_value() for p in self.peers if p.bearer_token))
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
            try:
                await self.fetch(peer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here (or in on_view), not the peer's doing: said loudly, and this peer
                # stays polled; an exception escaping would end every peer's polling.
                log.exception("polling peer %s failed", peer.name)
            await asyncio.sleep(peer.interval)

    async def fetch(self, peer: PeerConfig) -> PeerState:
        assert self.http is not None, "the poller needs a session to fetch"
        previous = self.states.get(peer.name, PeerState(None, None))
        headers = {"Accept": "application/json"}
        if peer.bearer_token is not None:
            headers["Authorization"] = f"Bearer {peer.bearer_token.get_secret_value()}"
        try:
            # One deadline for everything: connecting, the headers, and a body that may come a
            # byte at a time.
            async with (
                asyncio.timeout(peer.timeout),
                self.http.get(
                    peer.url + "/v1/view", headers=headers, ssl=ssl_context(peer.ca_file)
                ) as response,
            ):
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await read_bounded(response, MAX_VIEW_BYTES)
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                # Not UTF-8, not JSON, an integer too long to convert, nested too deep.
                raise ValueError(f"not JSON ({len(body)} bytes)") from None
            view = parse_view(data, expected=peer.name, received_at=time.time())
            actions = parse_actions(data)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = _error(classify(exc)[1])
        except Exception as exc:  # a bad body from a peer is its fault, not a reason to stop
            error = _error(f"bad view: {exc}")
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


def _error(text: str) -> str:
    """A peer error as state.error keeps it (and the API serves and the log prints it): one
    line, bounded, every secret the process holds redacted. The text may quote the peer's
    bytes (an HTTP parser error does), and a peer may echo what it was sent."""
    return _line(" ".join(text.split()), MAX_ERROR_CHARS)
