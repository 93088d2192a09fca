"""Detection time: from a site outage to `failover_recommended` on /v1/verdict and to the
failover controller's webhook, with the demo's intervals and the shipped rules and routing.

Run: `.venv/bin/python -m bench.detection [--repeat 3] [--scrape 5s]`. Three agents (the demo's
vantages) watch the simulated platform; a real Prometheus scrapes them with the rules
`failsight rules` generates (production `for:` durations) and a real Alertmanager routes with
`alerts/alertmanager.example.yml` (production `group_wait`). Nothing is asserted: it prints each
trial and the floor the configured intervals allow.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from agent.config import Config, load_config
from agent.demo.run import DEMO_CONFIG, vantage_configs
from agent.demo.simulator import Fault, Platform
from agent.rules import render_rules, rules_input
from agent.runtime import Agent
from tests.fixtures.prometheus import (
    WebhookRecorder,
    alertmanager_example_config,
    start_alertmanager,
    start_prometheus,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_config(platform: Platform) -> Config:
    """The demo config on free ports, without the demo's database (not what is measured)."""
    config = load_config(DEMO_CONFIG)
    data: dict[str, Any] = config.model_dump(by_alias=True, exclude_none=True)
    ports = [free_port() for _ in range(1 + len(config.peers))]
    data["agent"]["listen"] = f"127.0.0.1:{ports[0]}"
    data["peers"] = [
        {**p, "url": f"http://127.0.0.1:{port}"}
        for p, port in zip(data["peers"], ports[1:], strict=True)
    ]
    data["replication"] = []
    for site in data["sites"]:
        site["base_url"] = platform.urls[site["name"]]
    return Config.model_validate(data)


def _for_of(rules: str, alert: str) -> float:
    group = yaml.safe_load(rules)["groups"]
    for g in group:
        for rule in g["rules"]:
            if rule.get("alert") == alert:
                value = str(rule.get("for", "0s"))
                number, unit = re.fullmatch(r"(\d+)([smh])", value).groups()  # type: ignore[union-attr]
                return int(number) * {"s": 1, "m": 60, "h": 3600}[unit]
    return 0.0


async def trial(
    platform: Platform, agents: list[Agent], hooks: WebhookRecorder, primary: str
) -> tuple[float, float]:
    """One outage: seconds until every agent's verdict says so, and to the failover webhook."""
    hooks.received.clear()  # earlier trials' notifications, resolved ones included
    t0 = time.monotonic()
    platform.set_fault(primary, Fault(kind="outage"))
    verdict_at = None
    while True:
        now = time.monotonic()
        if verdict_at is None and all(
            a.refresh_verdicts()[primary].verdict.value == "failover_recommended" for a in agents
        ):
            verdict_at = now - t0
        if any(
            alert["status"] == "firing"
            for body in hooks.received.get("/failover", [])
            for alert in body["alerts"]
        ):
            return verdict_at or now - t0, now - t0
        if now - t0 > 600:
            raise TimeoutError("no failover webhook within 10 minutes")
        await asyncio.sleep(0.05)


async def main_async(repeat: int, scrape: str) -> None:
    async with Platform(["aws-use1", "gcp-euw1"]) as platform:
        config = bench_config(platform)
        primary = next(s.name for s in config.sites if s.role == "primary")
        rules_text = render_rules(rules_input(config))
        workdir = Path(tempfile.mkdtemp(prefix="failsight-detect-"))
        rules = workdir / "rules.yml"
        rules.write_text(rules_text)
        agents = [Agent(c) for c in vantage_configs(config)]
        tasks = [asyncio.create_task(a.run(install_signals=False)) for a in agents]
        try:
            while not all(a.ready and a.port for a in agents):
                await asyncio.sleep(0.05)
            async with WebhookRecorder() as hooks:
                am_config = alertmanager_example_config(hooks.url)
                # Production routing, except the test helper's shortened waits: restore them.
                shipped = yaml.safe_load(
                    (Path(__file__).parents[1] / "alerts" / "alertmanager.example.yml").read_text()
                )
                am_config["route"] = {**shipped["route"]}
                async with (
                    await start_alertmanager(am_config) as am,
                    await start_prometheus(
                        [f"127.0.0.1:{a.port}" for a in agents],
                        [rules],
                        scrape_interval=scrape,
                        eval_interval=scrape,
                        alertmanager_url=am.url,
                    ) as prom,
                ):
                    journey = config.journeys[0]
                    for_s = _for_of(rules_text, "FailsightFailoverRecommended")
                    scrape_s = float(scrape.rstrip("s"))
                    route = shipped["route"]["routes"][0]
                    print(
                        f"journey every {journey.interval:g}s, failure_threshold "
                        f"{config.verdict.failure_threshold}, peers every "
                        f"{config.peers[0].interval:g}s; scrape and evaluation every "
                        f"{scrape}; FailsightFailoverRecommended for: {for_s:g}s; "
                        f"failover route group_wait {route['group_wait']}"
                    )
                    low = (config.verdict.failure_threshold - 1) * journey.interval
                    high = config.verdict.failure_threshold * journey.interval
                    print(
                        f"floor to the verdict: {low:g}-{high:g}s (the first failing run "
                        "comes within one interval of the outage, then threshold-1 more)"
                    )
                    print(
                        f"floor to the webhook: verdict + up to {scrape_s:g}s scrape + up to "
                        f"{scrape_s:g}s evaluation + {for_s:g}s for: "
                        f"= {low + for_s:g}-{high + 2 * scrape_s + for_s:g}s"
                    )
                    verdicts, webhooks = [], []
                    for i in range(repeat):
                        platform.recover(primary)
                        await prom.wait_for(
                            'ALERTS{alertname="FailsightFailoverRecommended"}',
                            lambda r: not r,
                            timeout=600,
                        )
                        while any(
                            a.refresh_verdicts()[primary].verdict.value != "healthy" for a in agents
                        ):
                            await asyncio.sleep(0.2)
                        await asyncio.sleep(journey.interval)
                        v, w = await trial(platform, agents, hooks, primary)
                        verdicts.append(v)
                        webhooks.append(w)
                        print(
                            f"trial {i + 1}: verdict after {v:.1f}s, webhook after {w:.1f}s",
                            flush=True,
                        )
                    print(
                        f"verdict: median {statistics.median(verdicts):.1f}s "
                        f"(min {min(verdicts):.1f}, max {max(verdicts):.1f}); webhook: median "
                        f"{statistics.median(webhooks):.1f}s (min {min(webhooks):.1f}, "
                        f"max {max(webhooks):.1f}) over {repeat} trials"
                    )
        finally:
            for agent in agents:
                agent.stop()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--scrape", default="5s", help="Prometheus scrape and evaluation interval")
    args = p.parse_args()
    logging.disable(logging.WARNING)  # the agents' per-run lines would drown the figures
    asyncio.run(main_async(args.repeat, args.scrape))


if __name__ == "__main__":
    main()
