"""A reload keeps each unchanged check's place on its grid: a SIGHUP storm must not make a check
run more often than its interval."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from failsight.agent.demo.simulator import Platform
from tests.fixtures.platform import demo_config_data, running_agent, wait_for, write_config

INTERVAL = 2.0


class _NoJitter(random.Random):
    """First offsets of 0: without the fix, every reload would start each check at once."""

    def uniform(self, a: float, b: float) -> float:
        return a


def run_ids(platform: Platform, site: str) -> set[str]:
    return {
        r.headers["X-Failsight-Run-Id"]
        for r in platform.state(site).requests
        if "X-Failsight-Run-Id" in r.headers
    }


async def test_a_reload_storm_does_not_reschedule_unchanged_checks(
    platform: Platform, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    data["journeys"] = data["journeys"][:1]
    data["journeys"][0]["interval"] = f"{INTERVAL}s"
    data["journeys"][0]["sites"] = ["aws-use1"]
    path = tmp_path / "c.yaml"
    config = write_config(path, data)
    async with running_agent(config, path) as agent:
        assert agent.scheduler is not None
        agent.scheduler._rng = _NoJitter()
        agent.reload()  # from here on, a re-drawn offset would be 0: a run at every reload
        await wait_for(lambda: len(run_ids(platform, "aws-use1")) >= 1, timeout=10)
        first = len(run_ids(platform, "aws-use1"))
        loop = asyncio.get_running_loop()
        start = loop.time()
        reloads = 0
        while loop.time() - start < 2.5 * INTERVAL:
            assert agent.reload()
            reloads += 1
            await asyncio.sleep(0.05)
        elapsed = loop.time() - start
        runs = len(run_ids(platform, "aws-use1")) - first
    assert reloads >= 40
    # On its grid the check runs at most once per interval (plus one for a tick at the edge).
    assert runs <= int(elapsed // INTERVAL) + 1, (runs, reloads, elapsed)
    assert runs >= 1
