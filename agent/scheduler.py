"""Runs every check on its own cadence: random first offset, no overlap, a global cap."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

from failsight.agent.sinks import Sink
from failsight.core.check import Check, ProbeContext
from failsight.core.redact import redact_result
from failsight.core.results import Result

log = logging.getLogger(__name__)

MAX_FIRST_OFFSET = 30.0


def next_due(previous_due: float, interval: float, now: float) -> tuple[float, int]:
    """The next tick after `previous_due`, and how many ticks were missed getting there.

    Ticks stay on the original grid (no drift from run durations); ticks already in the past
    when we wake (a stalled loop) are dropped, not run in a burst.
    """
    due = previous_due + interval
    if due > now:
        return due, 0
    missed = int((now - due) // interval) + 1
    return due + missed * interval, missed


def phase_due(name: str, interval: float, *, wall: float, mono: float) -> float:
    """The next instant (on the monotonic clock) of the check's own wall-clock grid: every
    `interval`, at an offset derived from `name` (the vantage and the check's name). Every
    member of a group computes the same grid, so a check that changes owner keeps its rhythm:
    no run doubled or skipped by more than one."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    phase = int.from_bytes(digest[:8]) / 2**64 * interval
    return mono + (phase - wall) % interval


class Scheduler:
    """Owns the check loops and the runs they start.

    Every run is a task of this scheduler's TaskGroup; results go to `sink.handle`. A run still
    going when its next tick comes makes that tick a counted skip, never a second, overlapping
    run. A bug in a probe becomes a `reason="internal"` result; the scheduler keeps going.
    """

    def __init__(
        self,
        ctx: ProbeContext,
        sink: Sink,
        *,
        concurrency: int,
        rng: random.Random | None = None,
        aligned: str | None = None,
    ) -> None:
        self.ctx = ctx
        # In a group, the vantage: each check's first run is on its wall-clock grid
        # (`phase_due`), the same on every member of the vantage (and apart from the other
        # vantages' grids), rather than at a random offset.
        self.aligned = aligned
        self._handle = sink.handle
        self._semaphore = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._checks: dict[str, Check] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._due: dict[str, float] = {}  # each check's next tick on its grid (monotonic)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._confirming: dict[str, asyncio.Task[None]] = {}
        self._confirmation_runs: set[str] = set()  # checks whose run in flight confirms
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self.running = False
        self.skipped: dict[tuple[str, str], int] = {}
        self.confirmations: dict[tuple[str, str], int] = {}
        self.runs_started = 0

    @property
    def checks(self) -> Sequence[Check]:
        return list(self._checks.values())

    async def run(self, checks: Iterable[Check], *, grace: float) -> None:
        """Run until `stop()`; then give in-flight runs `grace` seconds to finish (their
        cleanup steps included) before cancelling them."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                self.replace(checks)
                self.running = True
                await self._stop.wait()
                self.running = False
                for task in (*self._loops.values(), *self._confirming.values()):
                    task.cancel()
                pending = list(self._inflight.values())
                if pending:
                    log.info("waiting up to %.1fs for %d in-flight run(s)", grace, len(pending))
                    _, late = await asyncio.wait(pending, timeout=grace)
                    for task in late:
                        task.cancel()
        finally:
            self.running = False
            self._tg = None
            await asyncio.gather(
                *(c.close() for c in self._checks.values()), return_exceptions=True
            )

    def stop(self) -> None:
        self._stop.set()

    def replace(self, checks: Iterable[Check]) -> None:
        """Swap the check set (reload). Runs in flight finish; a new check of the same name
        waits for them (no overlap across a reload); old check objects are closed after."""
        assert self._tg is not None, "the scheduler is not running"
        old = self._checks
        self._checks = {c.name: c for c in checks}
        for task in (*self._loops.values(), *self._confirming.values()):
            task.cancel()
        # A check that stays keeps its place on the grid: a reload (a SIGHUP storm) must not
        # re-draw the random offset and run it again early. One whose interval changed keeps
        # its next tick if that comes within the new interval.
        now = time.monotonic()
        kept = {
            name: min(due, now + self._checks[name].interval)
            for name, due in self._due.items()
            if name in self._checks
        }
        self._due = kept
        self._loops = {
            name: self._tg.create_task(self._loop(check, kept.get(name)), name=f"loop {name}")
            for name, check in self._checks.items()
        }
        for name, check in old.items():
            if self._checks.get(name) is not check:
                self._tg.create_task(self._close_after_run(name, check))

    async def _close_after_run(self, name: str, check: Check) -> None:
        running = self._inflight.get(name)
        if running is not None:
            await asyncio.wait([running])
        await check.close()

    async def _loop(self, check: Check, due: float | None = None) -> None:
        if due is None and self.aligned is not None:
            due = phase_due(
                f"{self.aligned}\0{check.name}",
                check.interval,
                wall=time.time(),
                mono=time.monotonic(),
            )
        if due is None:
            # A random first offset spreads checks over time; capped, so that a check with a
            # long interval (TLS: 5 minutes) still reports soon after start.
            offset = self._rng.uniform(0, min(check.interval, MAX_FIRST_OFFSET))
            # The grid starts at the planned offset, not when the sleep returned: checks whose
            # first sleeps end in the same stall (start-up, a full collection) would otherwise
            # share one `due` and tick in lockstep for good, a burst and a loop stall per
            # interval.
            due = time.monotonic() + offset
        self._due[check.name] = due
        await asyncio.sleep(due - time.monotonic())
        while True:
            self.tick(check)
            due, missed = next_due(due, check.interval, time.monotonic())
            self._due[check.name] = due
            if missed:
                self._count_skip(check, missed)
            await asyncio.sleep(due - time.monotonic())

    def confirm(self, name: str, delay: float) -> None:
        """Run the check again `delay` seconds from now, besides its cadence (fast
        confirmation of a failure or a recovery). At most one is pending per check; a run in
        flight then makes it a no-op rather than a skip, and the grid is left as it is."""
        check = self._checks.get(name)
        if self._tg is None or not self.running or check is None or name in self._confirming:
            return
        task = self._tg.create_task(self._confirm_after(check, delay), name=f"confirm {name}")
        self._confirming[name] = task
        task.add_done_callback(lambda t: _forget(self._confirming, name, t))

    async def _confirm_after(self, check: Check, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._checks.get(check.name) is check and check.name not in self._inflight:
            key = (check.name, check.kind)
            self.confirmations[key] = self.confirmations.get(key, 0) + 1
            self.tick(check, confirmation=True)

    def tick(self, check: Check, *, confirmation: bool = False) -> None:
        """Start a run of the check now, unless one is still going."""
        assert self._tg is not None
        if check.name in self._inflight:
            if check.name in self._confirmation_runs:
                return  # a confirmation run took this tick's place: not an overrun
            self._count_skip(check, 1)
            log.warning("skipped a run of %s: the previous run is still going", check.name)
            return
        task = self._tg.create_task(self._execute(check), name=f"run {check.name}")
        self._inflight[check.name] = task
        if confirmation:
            self._confirmation_runs.add(check.name)
        else:
            self._confirmation_runs.discard(check.name)
        task.add_done_callback(lambda t: _forget(self._inflight, check.name, t))

    def _count_skip(self, check: Check, n: int) -> None:
        key = (check.name, check.kind)
        self.skipped[key] = self.skipped.get(key, 0) + n

    async def _execute(self, check: Check) -> None:
        try:
            async with self._semaphore:
                self.runs_started += 1
                result = await run_check(check, self.ctx)
        finally:
            # Not in flight from here on, in this very step: whoever sees the result (a test,
            # a confirmation, an operator's recheck) may start the next run at once. The done
            # callback alone would leave the name in flight for one more loop iteration, and a
            # tick landing in it would be dropped as an overrun.
            _forget(self._inflight, check.name, asyncio.current_task())
        self._handle(result)


def _forget(
    tasks: dict[str, asyncio.Task[None]], name: str, task: asyncio.Task[Any] | None
) -> None:
    if tasks.get(name) is task:
        del tasks[name]


async def run_check(check: Check, ctx: ProbeContext) -> Result:
    """One run with its guarantees: a hard time limit and no exception escaping (the check's
    template method, `Check.run`), and no secret the process holds in its text (a target may
    echo our headers back)."""
    return redact_result(await check.run(ctx))
