"""Fetching the other vantages' views (`/v1/view` of the agents in the other clouds)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from pydantic import field_validator

from failsight.agent.control import Action
from failsight.agent.view import VantageView
from failsight.core.configtypes import Interval, Model, Name, Secret, Timeout
from failsight.core.http import classify, read_bounded, ssl_context
from failsight.core.redact import REDACTOR, excerpt

log = logging.getLogger(__name__)

# A view with every site and MAX_ACTIONS control actions fits well within this; a larger body is
# refused unread (a peer error), whatever the peer declares. What a view may hold (MAX_SITES,
# MAX_EVIDENCE...) is checked where it is parsed: VantageView.from_json (agent/view.py).
MAX_VIEW_BYTES = 4 * 1_048_576
# A peer error (state.error, the API, the log) is one line of at most this many characters.
MAX_ERROR_CHARS = 300


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

    @property
    def actions(self) -> tuple[Action, ...]:
        """The control actions the peer's last view carried."""
        return self.view.actions if self.view is not None else ()


class PeerPoller:
    """Polls every peer on its own cadence; one slow or dead peer never delays another."""

    def __init__(
        self,
        peers: Sequence[PeerConfig],
        http: aiohttp.ClientSession | None,
        on_fetch: Callable[[str, PeerState], None] | None = None,
    ) -> None:
        self.peers = list(peers)
        self.http = http
        # Sent to the peers: redacted by value wherever a peer (or anything) echoes it.
        REDACTOR.add(*(p.bearer_token.get_secret_value() for p in self.peers if p.bearer_token))
        # Called after every fetch, a view or an error: the agent merges a view's actions and
        # judges again (the API shows each peer's last error too).
        self.on_fetch = on_fetch
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
                # A bug here (or in on_fetch), not the peer's doing: said loudly, and this peer
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
            view = VantageView.from_json(data, expected=peer.name, received_at=time.time())
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = _error(classify(exc)[1])
        except Exception as exc:  # a bad body from a peer is its fault, not a reason to stop
            error = _error(f"bad view: {exc}")
        else:
            if previous.error is not None:
                log.info("peer %s is reachable again", peer.name)
            return self._fetched(peer.name, PeerState(view, view.generated_at))
        if previous.error is None:
            log.warning("cannot fetch the view of peer %s: %s", peer.name, error)
        # The last view is kept (it goes stale by its age), with this fetch's error.
        return self._fetched(peer.name, PeerState(previous.view, previous.fetched_at, error))

    def _fetched(self, name: str, state: PeerState) -> PeerState:
        self.states[name] = state
        if self.on_fetch is not None:
            self.on_fetch(name, state)
        return state


def _error(text: str) -> str:
    """A peer error as state.error keeps it (and the API serves and the log prints it): one
    line, bounded, every secret the process holds redacted. The text may quote the peer's
    bytes (an HTTP parser error does), and a peer may echo what it was sent."""
    return excerpt(" ".join(text.split()), MAX_ERROR_CHARS, unprintable=" ")
