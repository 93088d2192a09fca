"""The one contract every probe module follows, and what the agent hands to a running check."""

from __future__ import annotations

import abc
import asyncio
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from failsight.core.results import Evidence, Reason, Result

log = logging.getLogger(__name__)

# What a check's hard limit adds to its own time budget: the probe reports its own classified
# timeout (which step, which phase) before the hard limit cuts it off with a bare one.
TIMEOUT_MARGIN = 1.0


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


@dataclass(frozen=True, slots=True)
class Run:
    """One run in progress: its id and clocks, set by `Check.run` before the probe starts."""

    id: str
    started_at: float  # wall clock, seconds since the epoch
    start: float  # time.monotonic() at the start
    deadline: float  # time.monotonic() by which the probe's own budget is spent

    @classmethod
    def begin(cls, budget: float) -> Run:
        start = time.monotonic()
        return cls(id=new_run_id(), started_at=wall_now(), start=start, deadline=start + budget)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def loop_deadline(self) -> float:
        """The deadline on the event loop's clock, as asyncio.timeout_at wants it."""
        return loop_time(self.deadline)


def loop_time(monotonic: float) -> float:
    """A time.monotonic() instant on the running loop's clock: the default loop's clock is
    time.monotonic, but an installed loop (uvloop) may keep its own, so translate."""
    return asyncio.get_running_loop().time() + (monotonic - time.monotonic())


class Check(abc.ABC):
    """One scheduled probe of one configured object (a journey at one site, a cluster, ...).

    `run` is a template method: it gives the run its id and clocks, enforces the hard time
    limit (the probe's `budget` plus a margin) and turns a bug into a `reason="internal"`
    result; `probe` holds only the kind's own logic and must turn every failure of the target
    into a failed Result, never an exception. A check owns whatever it keeps between runs
    (pools, caches) and frees it in `close()`. The scheduler does cadence and no-overlap.
    """

    kind: str = ""
    # Evidence every result of this check carries, whatever happens in the run (the IdP a
    # journey relies on, a self-check's meaning), the hard limit's results included.
    standing_evidence: tuple[Evidence, ...] = ()

    def __init__(
        self,
        *,
        name: str,
        target: str,
        interval: float,
        budget: float,
        margin: float = TIMEOUT_MARGIN,
        site: str | None = None,
        critical: bool = False,
        placement: str = "sharded",
    ) -> None:
        self.name = name
        self.target = target
        self.interval = interval
        self.budget = budget  # the probe's own time for one run
        self.timeout = budget + margin  # the hard limit `run` enforces
        self.site = site
        self.critical = critical
        # "sharded": one member of a group runs it; "every_member": each member does.
        self.placement = placement

    async def run(self, ctx: ProbeContext) -> Result:
        """Run once and describe what happened; never raises (but for cancellation)."""
        run = Run.begin(self.budget)
        try:
            async with asyncio.timeout(self.timeout):
                return await self.probe(ctx, run)
        except TimeoutError:
            return self.failed(Reason.TIMEOUT, f"run exceeded its {self.timeout:g}s limit", run)
        except Exception as exc:  # a bug in a probe: report it, keep the agent running
            log.exception("check %s raised; reported as reason=internal", self.name)
            return self.failed(Reason.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", run)

    @abc.abstractmethod
    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        """The kind's own logic for one run."""

    async def close(self) -> None:
        """Free what the check keeps between runs (called on reload and shutdown)."""
        return None

    def result(self, run: Run, **fields: Any) -> Result:
        """A Result of this run: the check's identity (check, kind, target, site, critical)
        and the run's id, start and duration (up to now) filled in, the rest as given."""
        fields.setdefault("run_id", run.id)
        fields.setdefault("started_at", run.started_at)
        fields.setdefault("duration", run.elapsed())
        fields.setdefault("evidence", self.standing_evidence)
        return Result(
            check=self.name,
            kind=self.kind,
            target=self.target,
            site=self.site,
            critical=self.critical,
            **fields,
        )

    def failed(self, reason: Reason, message: str, run: Run, **fields: Any) -> Result:
        """A failed Result of this run."""
        return self.result(run, ok=False, reason=reason, message=message, **fields)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def idp_check_name(idp: str) -> str:
    """The name of the check that probes the IdP named `idp`: one place, for the IdP kind
    and the journeys that depend on that check."""
    return f"idp/{idp}"


def new_run_id() -> str:
    return secrets.token_hex(8)


def new_trace_id() -> str:
    return secrets.token_hex(16)


def new_span_id() -> str:
    return secrets.token_hex(8)


def wall_now() -> float:
    return time.time()
