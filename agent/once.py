"""`failsight once`: every check run a single time, without the server or the scheduler."""

from __future__ import annotations

import asyncio

from failsight.agent.config import Config
from failsight.agent.config import plan as plan_checks
from failsight.agent.runtime import probe_context
from failsight.agent.scheduler import run_check
from failsight.core.http import new_session
from failsight.core.results import Result


async def run_once(config: Config, only: str | None = None) -> list[Result]:
    checks = [c for c in plan_checks(config) if only is None or only in (c.name, c.target)]
    semaphore = asyncio.Semaphore(config.agent.concurrency)
    async with new_session(keepalive=config.agent.keepalive) as http:
        ctx = probe_context(config, http)

        async def one(check_index: int) -> Result:
            async with semaphore:
                return await run_check(checks[check_index], ctx)

        try:
            return list(await asyncio.gather(*(one(i) for i in range(len(checks)))))
        finally:
            await asyncio.gather(*(c.close() for c in checks), return_exceptions=True)
