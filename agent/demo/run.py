"""`failsight demo`: the simulated two-cloud platform and one agent per cloud watching it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from failsight.agent.config import Config, load_config
from failsight.agent.demo import postgres
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.runtime import Agent
from failsight.agent.verdict import SiteVerdict, Verdict
from failsight.agent.view import VantageView
from failsight.core.redact import redact
from failsight.probes import replication

log = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("config.yaml")
FAULT_AFTER = 20.0
OUTAGE_LASTS = 40.0
FLAP_PERIOD = 10.0
REPORT_EVERY = 1.0
SCENARIOS = {
    "steady": "no faults",
    "site-outage": "the primary answers 503 to everyone for 40 s: failover, latched until "
    "`failsight failback aws-use1 --config deploy/demo.yaml`",
    "flapping": "the primary fails 10 s and works 10 s, over and over: it fails over once",
    "total-outage": "both sites answer 503 to everyone: failover_unsafe, no healthy standby",
    "vantage-partition": "azure-weu alone loses its path to the primary: local, no failover",
    "vantage-offline": "azure-weu loses its network to every site: its view is impaired, no vote",
}


def vantage_configs(config: Config) -> list[Config]:
    """This config's agent plus one per peer, each listing the others as its peers."""
    everyone = [(config.agent.vantage, config.agent.listen)] + [
        (p.name, urlsplit(p.url).netloc) for p in config.peers
    ]
    template: dict[str, Any] = config.model_dump(by_alias=True, exclude_none=True)
    peer_defaults = (
        config.peers[0].model_dump(include={"interval", "timeout"}) if config.peers else {}
    )
    out = [config]
    for vantage, listen in everyone[1:]:
        data = {**template, "agent": {**template["agent"], "vantage": vantage, "listen": listen}}
        data["peers"] = [
            {"name": name, "url": f"http://{addr}", **peer_defaults}
            for name, addr in everyone
            if name != vantage
        ]
        out.append(Config.model_validate(data))
    return out


async def run_demo(*, scenario: str = "steady", duration: float | None = None) -> int:
    config = load_config(DEMO_CONFIG)
    with contextlib.ExitStack() as databases:
        config = await _start_databases(config, databases)
        return await _run(config, scenario, duration)


async def _start_databases(config: Config, stack: contextlib.ExitStack) -> Config:
    """A real primary and streaming replica on the demo config's ports, if PostgreSQL is
    installed; otherwise the demo goes on without replication checks."""
    clusters = config.section(replication.KIND)
    if not clusters:
        return config
    if not postgres.available():
        print(
            f"note: PostgreSQL server binaries not found in {postgres.PG_BIN}: replication "
            "checks are off (apt-get install postgresql-15 to see them)"
        )
        return config.model_copy(update={"replication": []})
    cluster = clusters[0]
    ports = tuple(
        urlsplit(e.dsn.get_secret_value()).port or 5432
        for e in (cluster.primary, cluster.replicas[0])
    )
    print(f"starting PostgreSQL: primary :{ports[0]}, streaming replica :{ports[1]}...", flush=True)
    try:
        await asyncio.to_thread(stack.enter_context, postgres.running_pair(ports=ports))  # type: ignore[arg-type]
    except postgres.PgError as exc:
        print(
            f"note: PostgreSQL did not start, replication checks are off: "
            f"{str(exc).splitlines()[0]}"
        )
        return config.model_copy(update={"replication": []})
    return config


async def _run(config: Config, scenario: str, duration: float | None) -> int:
    ports = [urlsplit(s.base_url).port or 80 for s in config.sites]
    platform = Platform([s.name for s in config.sites], ports=ports)
    try:
        await platform.start()
    except OSError as exc:
        print(
            f"failsight demo: cannot listen on the demo ports {ports}: {exc.strerror} "
            "(is another demo running?)"
        )
        return 1
    agents = [Agent(c) for c in vantage_configs(config)]
    primary = config.sites[0].name
    print("failsight demo: the simulated platform and one agent per cloud are running")
    for site in config.sites:
        print(
            f"  site {site.name:10} ({site.role:7}) {platform.urls[site.name]}"
            f"   admin: {platform.urls[site.name]}/admin/state"
        )
    for agent in agents:
        api = f"http://{agent.config.agent.listen}"
        print(f"  agent {agent.config.agent.vantage:10} {api}/v1/verdict   {api}/metrics   {api}/")
    print(
        f"  site health     http://{config.agent.listen}/v1/sites/{primary}/health "
        "(503 = fail over)"
    )
    print(
        f"  scenario {scenario}: {SCENARIOS[scenario]}"
        + (f", after {FAULT_AFTER:.0f}s" if scenario != "steady" else "")
    )
    print(
        "  status: a line per site when something changes: the verdict of the "
        f"{config.agent.vantage} agent, the views it judged from (vantage→state) and, unless "
        "healthy, its reason"
    )
    print("Ctrl-C stops everything.", flush=True)
    loop = asyncio.get_running_loop()

    def stop_all() -> None:
        for agent in agents:
            agent.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    try:
        async with asyncio.TaskGroup() as tg:
            runs = [tg.create_task(a.run(install_signals=False)) for a in agents]
            helpers = [tg.create_task(_report(agents))]
            if scenario != "steady":
                helpers.append(tg.create_task(_inject(platform, config, scenario)))
            if duration is not None:
                helpers.append(tg.create_task(_stop_after(agents, duration)))
            await asyncio.gather(*runs)
            for task in helpers:
                task.cancel()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await platform.stop()
    print("failsight demo: stopped")
    return 0


async def _inject(platform: Platform, config: Config, scenario: str) -> None:
    await asyncio.sleep(FAULT_AFTER)
    primary = config.sites[0].name
    observer = config.peers[-1].name if config.peers else config.agent.vantage
    if scenario == "site-outage":
        print(f">>> {primary} goes down: every API call answers 503", flush=True)
        platform.set_fault(primary, Fault(kind="outage"))
        await asyncio.sleep(OUTAGE_LASTS)
        print(
            f">>> {primary} is back; it stays failed over until you run: failsight failback "
            f"{primary} --config deploy/demo.yaml",
            flush=True,
        )
        platform.recover(primary)
    elif scenario == "flapping":
        while True:
            print(f">>> {primary} fails for {FLAP_PERIOD:.0f}s", flush=True)
            platform.set_fault(primary, Fault(kind="outage"))
            await asyncio.sleep(FLAP_PERIOD)
            print(f">>> {primary} works for {FLAP_PERIOD:.0f}s", flush=True)
            platform.recover(primary)
            await asyncio.sleep(FLAP_PERIOD)
    elif scenario == "total-outage":
        print(">>> every site goes down for everyone", flush=True)
        for site in config.sites:
            platform.set_fault(site.name, Fault(kind="outage"))
    elif scenario == "vantage-partition":
        print(f">>> {observer} loses its network path to {primary}", flush=True)
        platform.set_fault(primary, Fault(kind="outage", vantage=observer))
    elif scenario == "vantage-offline":
        print(f">>> {observer} loses its network to every site", flush=True)
        for site in config.sites:
            platform.set_fault(site.name, Fault(kind="outage", vantage=observer))


async def _stop_after(agents: list[Agent], seconds: float) -> None:
    await asyncio.sleep(seconds)
    for agent in agents:
        agent.stop()


def status_line(site: str, verdict: SiteVerdict, views: Sequence[VantageView]) -> str:
    """One site's status: its verdict, each vantage's view of it as that verdict counted it, and
    the verdict's lead reason unless healthy (the rest are at /v1/verdict and on the status page).

    `views` are the views the verdict was judged from (see `judged`), so the two cannot
    disagree. A vantage that did not vote says why: `stale`, or its view marked `(impaired)`.
    """
    shown = []
    for view in views:
        counted = verdict.quorum.vantages.get(view.vantage)
        opinion = view.sites.get(site)
        seen = opinion.state.value if opinion is not None else "unseen"
        if counted == "impaired":
            seen = f"{seen}(impaired)"
        elif counted is not None:
            seen = counted  # the state it voted with, or "stale"
        shown.append(f"{view.vantage}→{seen}")
    line = f"site {site}: {verdict.verdict.value}  views {' '.join(shown)}"
    if verdict.verdict is not Verdict.HEALTHY:
        lead = verdict.reasons[0] if verdict.reasons else "none given"
        line += f"  (reason: {redact(lead)})"
    return line


class StatusLines:
    """The demo's status output: a site's line only when it differs from the last one printed
    for that site (its verdict, a view, an impairment or the reason), every site at first."""

    def __init__(self) -> None:
        self._shown: dict[str, str] = {}

    def changed(
        self, verdicts: Mapping[str, SiteVerdict], views: Sequence[VantageView]
    ) -> list[str]:
        out = []
        for site, verdict in verdicts.items():
            line = status_line(site, verdict, views)
            if self._shown.get(site) != line:
                self._shown[site] = line
                out.append(line)
        return out


def judged(agent: Agent) -> tuple[dict[str, SiteVerdict], list[VantageView]]:
    """Judge every site now, and the views that judgement was made from: this vantage's own and
    its copies of the peers' (fetched up to a poll ago, so not what each peer holds now)."""
    verdicts = agent.refresh_verdicts()
    return verdicts, agent.judged_views


async def _report(agents: list[Agent]) -> None:
    """Print what changed, once a second: lines are printed on change only, so polling often
    costs one judgement and no output when nothing happens."""
    start = time.monotonic()
    lines = StatusLines()
    while True:
        await asyncio.sleep(REPORT_EVERY)
        for line in lines.changed(*judged(agents[0])):
            print(f"[{time.monotonic() - start:4.0f}s] {line}", flush=True)
