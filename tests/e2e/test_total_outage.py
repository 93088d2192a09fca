"""End to end: every site down for every vantage pages a total outage, and nothing reaches the
failover controller (three agents, a real Prometheus with the generated rules, a real
Alertmanager with the shipped example, a webhook)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.rules import render_rules, rules_input
from tests.fixtures.platform import SITES, three_agents, three_vantage_config, wait_for
from tests.fixtures.prometheus import (
    Alertmanager,
    WebhookRecorder,
    alertmanager_example_config,
    start_alertmanager,
    start_prometheus,
)


def pages(hooks: WebhookRecorder) -> set[str]:
    return {a["alertname"] for a in hooks.alert_labels("/pager")}


async def test_every_site_down_pages_a_total_outage_and_never_the_controller(
    platform: Platform, tmp_path: Path
) -> None:
    # The rules as `failsight rules` makes them for this deployment, with every `for:` cut to
    # 0s: the pipeline is under test, the waits are promtool's (alerts/tests).
    rules = tmp_path / "rules.yml"
    generated = render_rules(rules_input(three_vantage_config(platform)))
    rules.write_text(re.sub(r"(?m)^(\s+for: )\S+$", r"\g<1>0s", generated))

    async with (
        three_agents(platform) as agents,
        WebhookRecorder() as hooks,
        await start_alertmanager(alertmanager_example_config(hooks.url)) as am,
        await start_prometheus(
            [f"127.0.0.1:{a.port}" for a in agents], [rules], alertmanager_url=am.url
        ) as prom,
    ):
        await wait_for(
            lambda: all(
                v.verdict.value == "healthy" for a in agents for v in a.refresh_verdicts().values()
            ),
            timeout=20,
        )

        # Both sites go down at once for every vantage (a shared dependency gone, say). Each
        # agent's view of a site is degraded after one failed run and down after two, so the
        # standby is never seen up while the primary is down: nothing may latch a failover.
        for site in SITES:
            platform.set_fault(site, Fault(kind="outage"))

        await hooks.wait_for(lambda h: "FailsightTotalOutage" in pages(h), timeout=30)
        total = [
            a for a in hooks.alert_labels("/pager") if a["alertname"] == "FailsightTotalOutage"
        ]
        assert total[0] == {"alertname": "FailsightTotalOutage", "severity": "critical"}

        # The agents agree once every view has caught up: a total outage, nobody impaired,
        # nothing latched, the primary unsafe to fail over.
        def judged_total() -> bool:
            verdicts = [a.refresh_verdicts() for a in agents]
            return all(v[s].total_outage for v in verdicts for s in SITES) and all(
                v["aws-use1"].verdict.value == "failover_unsafe" for v in verdicts
            )

        await wait_for(judged_total, timeout=20)
        await prom.wait_for(
            "failsight_vantage_impaired", lambda r: [s["value"][1] for s in r] == ["0"] * 3
        )
        assert await prom.query("failsight_site_failed_over == 1") == []

        # The rules raise the unsafe-failover page too; the example inhibits it under the total
        # outage. (With every `for:` cut to 0s it may have paged in the second before the total
        # outage fired; in production both wait 1m and the pager's group_wait covers the gap.)
        unsafe = await prom.wait_for('ALERTS{alertname="FailsightFailoverUnsafe"}')
        assert [a["metric"]["site"] for a in unsafe] == ["aws-use1"]
        held = await _alertmanager_holds(am, "FailsightFailoverUnsafe")
        assert [a["status"]["state"] for a in held] == ["suppressed"]
        assert held[0]["status"]["inhibitedBy"]
        assert hooks.alert_labels("/failover") == []


async def _alertmanager_holds(am: Alertmanager, alertname: str) -> list[dict[str, Any]]:
    """The alerts named `alertname` once Prometheus has sent them to Alertmanager."""
    deadline = time.monotonic() + 10
    while not (held := await am.alerts(alertname=alertname)):
        assert time.monotonic() < deadline, f"{alertname} never reached Alertmanager"
        await asyncio.sleep(0.2)
    return held
