"""`failsight demo`: the simulated two-cloud platform and an agent watching it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from urllib.parse import urlsplit

from agent.config import Config, load_config
from agent.demo.simulator import Fault, Platform
from agent.runtime import Agent

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("config.yaml")
OUTAGE_AFTER = 20.0


async def run_demo(*, scenario: str = "steady", duration: float | None = None) -> int:
    config = load_config(DEMO_CONFIG)
    ports = [urlsplit(s.base_url).port or 80 for s in config.sites]
    platform = Platform([s.name for s in config.sites], ports=ports)
    await platform.start()
    agent = Agent(config, str(DEMO_CONFIG))
    api = f"http://{config.agent.listen}"
    print("failsight demo: the simulated platform and one agent are running")
    for site in config.sites:
        print(
            f"  site {site.name:10} ({site.role:7}) {platform.urls[site.name]}"
            f"   admin: {platform.urls[site.name]}/admin/state"
        )
    print(f"  agent verdict   {api}/v1/verdict")
    print(f"  agent metrics   {api}/metrics")
    print(f"  site health     {api}/v1/sites/{config.sites[0].name}/health (503 = fail over)")
    if scenario == "site-outage":
        print(f"  scenario site-outage: {config.sites[0].name} goes down after {OUTAGE_AFTER:.0f}s")
    print("Ctrl-C stops everything.", flush=True)
    try:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(agent.run())
            helpers = [tg.create_task(_report(agent, config))]
            if scenario == "site-outage":
                helpers.append(tg.create_task(_outage(platform, config.sites[0].name)))
            if duration is not None:
                helpers.append(tg.create_task(_stop_after(agent, duration)))
            await run
            for task in helpers:
                task.cancel()
    finally:
        await platform.stop()
    print("failsight demo: stopped")
    return 0


async def _outage(platform: Platform, site: str) -> None:
    await asyncio.sleep(OUTAGE_AFTER)
    print(f">>> injecting an outage at {site} (every API call answers 503)", flush=True)
    platform.set_fault(site, Fault(kind="outage"))


async def _stop_after(agent: Agent, seconds: float) -> None:
    await asyncio.sleep(seconds)
    agent.stop()


async def _report(agent: Agent, config: Config) -> None:
    """One status line every few seconds, so the user sees the view and verdict move."""
    start = time.monotonic()
    while True:
        await asyncio.sleep(5.0)
        with contextlib.suppress(KeyError):
            verdicts = agent.refresh_verdicts()
            views = agent.views.snapshot()
            parts = [
                f"{s.name}: view={views[s.name].state.value} "
                f"verdict={verdicts[s.name].verdict.value}"
                for s in config.sites
            ]
            print(f"[{time.monotonic() - start:5.0f}s] " + " | ".join(parts), flush=True)
