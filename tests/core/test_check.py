"""Check.run, the template method every kind's checks share: identity and clocks for each run,
the hard limit, and a bug turned into a classified result instead of an escaped exception."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from failsight.core.check import Check, ProbeContext, Run
from failsight.core.results import Reason, Remark, Result


class Probe(Check):
    kind = "probe"
    standing_evidence = (Remark(None, "always here"),)

    def __init__(self, behaviour: str, *, budget: float = 0.05, margin: float = 0.05) -> None:
        super().__init__(
            name=f"probe/{behaviour}",
            target=behaviour,
            interval=1.0,
            budget=budget,
            margin=margin,
            site="a",
        )
        self.behaviour = behaviour
        self.seen: Run | None = None

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        self.seen = run
        if self.behaviour == "hang":
            await asyncio.sleep(60)
        if self.behaviour == "raise":
            raise ValueError("a bug in the probe")
        return self.result(run, ok=True, message="fine")


async def _run(check: Check) -> Result:
    async with aiohttp.ClientSession() as http:
        return await check.run(ProbeContext(vantage="v", http=http))


async def test_a_run_gets_its_identity_clocks_and_standing_evidence() -> None:
    check = Probe("ok")
    result = await _run(check)
    assert check.seen is not None
    assert result.ok and result.message == "fine"
    assert (result.check, result.kind, result.target, result.site) == (
        "probe/ok",
        "probe",
        "ok",
        "a",
    )
    assert result.run_id == check.seen.id and len(result.run_id) == 16
    assert result.started_at == check.seen.started_at
    assert 0.0 <= result.duration < 1.0
    assert result.evidence == (Remark(None, "always here"),)
    assert check.seen.deadline == pytest.approx(check.seen.start + check.budget)


async def test_the_hard_limit_is_the_budget_plus_the_margin() -> None:
    check = Probe("hang", budget=0.05, margin=0.1)
    assert check.timeout == pytest.approx(0.15)
    result = await _run(check)
    assert not result.ok
    assert result.reason is Reason.TIMEOUT
    assert result.message == "run exceeded its 0.15s limit"
    assert check.seen is not None and result.run_id == check.seen.id
    assert 0.1 <= result.duration < 5.0
    assert result.evidence == check.standing_evidence


async def test_a_bug_in_a_probe_is_an_internal_result_not_an_exception() -> None:
    result = await _run(Probe("raise"))
    assert not result.ok
    assert result.reason is Reason.INTERNAL
    assert result.message == "internal error: ValueError: a bug in the probe"


async def test_cancelling_a_run_is_not_swallowed() -> None:
    task = asyncio.create_task(_run(Probe("hang", budget=30.0)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
