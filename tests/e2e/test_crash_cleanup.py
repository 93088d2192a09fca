"""The whole agent killed mid-journey (SIGKILL): the synthetic order it created is left on the
platform, and the next agent started on the same state dir cancels it, with no operator."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from failsight.agent.demo.simulator import Fault, Platform
from tests.fixtures.platform import (
    demo_config_data,
    running_agent,
    start_agent_process,
    wait_for,
    write_config,
)
from tests.probes.test_cleanup_journal import SITE, synthetic_orders, waiting_on


async def test_an_agent_killed_mid_journey_cleans_up_after_restart(
    platform: Platform, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    data["agent"]["state_dir"] = str(tmp_path / "state")
    journey = data["journeys"][0]
    journey.update({"interval": "1m", "timeout": "1m", "sites": [SITE]})
    data["journeys"] = [journey]
    path = tmp_path / "failsight.yaml"
    config = write_config(path, data)
    # Created and allocated, then `pick` hangs: the agent is mid-journey when it is killed.
    platform.set_fault(SITE, Fault(kind="latency", step="pick", latency_ms=120_000))
    agent = await start_agent_process(
        path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        await wait_for(lambda: waiting_on(platform, "/pick"), timeout=60)
    finally:
        agent.send_signal(signal.SIGKILL)
        _, err = await agent.communicate()
    assert agent.returncode == -signal.SIGKILL, err.decode()
    (left_behind,) = synthetic_orders(platform)

    platform.recover(SITE)
    async with running_agent(config, path) as restarted:
        await wait_for(lambda: left_behind not in synthetic_orders(platform), timeout=30)
        await wait_for(lambda: restarted.journal.pending() == [], timeout=30)
        assert restarted.journal.abandoned == {}
