"""The scheduler's no-overlap rule ends with the run: whoever is handed a result may start the
next run at once (a confirmation, an operator's recheck, a test driving the agent)."""

from __future__ import annotations

import asyncio

import aiohttp

from failsight.agent.scheduler import Scheduler
from failsight.core.check import Check, ProbeContext, Run
from failsight.core.results import Result


class Instant(Check):
    kind = "instant"

    def __init__(self) -> None:
        super().__init__(name="instant/x", target="x", interval=3600.0, budget=1.0)
        self.runs = 0

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        self.runs += 1
        return self.result(run, ok=True, duration=0.0)


class TickAgain:
    """A sink that starts the check again, in the very step it is handed the result."""

    name = "tick-again"

    def __init__(self, check: Check, times: int) -> None:
        self.check = check
        self.left = times
        self.scheduler: Scheduler | None = None
        self.done = asyncio.Event()

    def handle(self, result: Result) -> None:
        assert self.scheduler is not None
        if self.left == 0:
            self.done.set()
            return
        self.left -= 1
        self.scheduler.tick(self.check)


async def test_a_tick_made_as_the_result_is_handed_out_starts_a_run_not_a_skip() -> None:
    check = Instant()
    sink = TickAgain(check, times=3)
    async with aiohttp.ClientSession() as http:
        scheduler = Scheduler(ProbeContext(vantage="v", http=http), sink, concurrency=4)
        sink.scheduler = scheduler
        runner = asyncio.create_task(scheduler.run([], grace=1.0))
        await asyncio.sleep(0)
        scheduler.replace([check])  # its first tick is up to an hour away: we tick by hand
        scheduler.tick(check)
        await asyncio.wait_for(sink.done.wait(), timeout=10)
        scheduler.stop()
        await runner
    assert check.runs == 4
    assert scheduler.skipped == {}
