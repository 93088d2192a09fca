"""The one contract every probe module follows, and what the agent hands to a running check."""

from __future__ import annotations

import abc
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from failsight.core.results import Reason, Result


class TokenSource(Protocol):
    """Gives a bearer token for an IdP by name (the journey's `idp:`), cached by the source.

    Raises CheckFailure(Reason.AUTH, ...) when no token can be had.
    """

    async def token(self, idp: str) -> str: ...

    def invalidate(self, idp: str, token: str | None = None) -> None:
        """Drop a cached token the target refused (only if it is still the cached one)."""


class RunJournal(Protocol):
    """Where a journey run notes what its cleanup will need, before it creates anything, so
    that cleanup can still happen after a crash (probes/journal.py's CleanupJournal).

    Best effort by contract: these methods never raise for I/O trouble (they log it), and the
    run goes on either way.
    """

    @property
    def enabled(self) -> bool: ...

    async def record(
        self,
        *,
        check: str,
        journey: str,
        site: str,
        run_id: str,
        variables: Mapping[str, object],
    ) -> None:
        """Note a run, with the variables its cleanup uses known so far, before the step whose
        effects that cleanup would undo (before the first step, at the latest before the
        step after the one that extracted what the cleanup needs)."""

    async def update(self, run_id: str, variables: Mapping[str, object]) -> None:
        """The run extracted variables its cleanup uses: note them before its next step."""

    async def finish(self, run_id: str, *, cleaned: bool) -> None:
        """The run's cleanup is over: forget the run if it `cleaned`, else keep it for a
        later retry."""


@dataclass(frozen=True, slots=True)
class ProbeContext:
    """What the agent shares with every check run: never per-run state."""

    vantage: str
    http: aiohttp.ClientSession
    tokens: TokenSource | None = None
    # Extra long-lived shared objects, by name, for probes that need them.
    extras: Mapping[str, object] = field(default_factory=dict)
    # Journeys with cleanup steps note their runs here (None: no journal, no crash recovery).
    journal: RunJournal | None = None


class Check(abc.ABC):
    """One scheduled probe of one configured object (a journey at one site, a cluster, ...).

    A check owns whatever it keeps between runs (pools, caches) and frees it in `close()`. The
    scheduler does the shared work: cadence, no-overlap, the run timeout, turning a bug into a
    `reason="internal"` result; `run` holds only the probe's own logic and must turn every
    failure of the target into a failed Result, never an exception.
    """

    kind: str = ""

    def __init__(
        self,
        *,
        name: str,
        target: str,
        interval: float,
        timeout: float,
        site: str | None = None,
        critical: bool = False,
    ) -> None:
        self.name = name
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.site = site
        self.critical = critical

    @abc.abstractmethod
    async def run(self, ctx: ProbeContext) -> Result:
        """Run once and describe what happened."""

    async def close(self) -> None:
        """Free what the check keeps between runs (called on reload and shutdown)."""
        return None

    def result(self, **fields: Any) -> Result:
        """A Result of this check: its identity (check, kind, target, site, critical) filled
        in, the rest as given."""
        return Result(
            check=self.name,
            kind=self.kind,
            target=self.target,
            site=self.site,
            critical=self.critical,
            **fields,
        )

    def failed(
        self,
        reason: Reason,
        message: str,
        *,
        started_at: float,
        duration: float,
        run_id: str | None = None,
    ) -> Result:
        """A failed Result for this check when nothing more specific is known."""
        return self.result(
            ok=False,
            reason=reason,
            message=message,
            started_at=started_at,
            duration=duration,
            run_id=run_id or new_run_id(),
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def new_run_id() -> str:
    return secrets.token_hex(8)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def wall_now() -> float:
    return time.time()
