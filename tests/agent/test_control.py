"""Latched failover, operator failback and holds, agreed across three agents over real HTTP."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from failsight.agent.config import Config
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.runtime import Agent
from tests.fixtures.platform import (
    demo_config_data,
    free_port,
    get_json,
    running_agent,
    three_agents,
    wait_for,
    write_config,
)

ADMIN = "4dm1n-t0ken"
PRIMARY = "aws-use1"
MakeConfig = Callable[..., tuple[Config, Path]]


def with_agent(config: Config, **agent: Any) -> Config:
    """The config with keys of its `agent:` block changed, validated like a loaded file."""
    data = config.model_dump(by_alias=True, exclude_none=True)
    return Config.model_validate({**data, "agent": {**data["agent"], **agent}})


def word(agent: Agent, site: str = PRIMARY) -> str:
    return agent.verdicts[site].verdict.value if site in agent.verdicts else ""


async def health(agent: Agent, site: str = PRIMARY) -> tuple[int, Any]:
    return await get_json(f"http://127.0.0.1:{agent.port}/v1/sites/{site}/health")


async def call(
    agent: Agent,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    token: str | None = ADMIN,
    raw_auth: str | None = None,
) -> tuple[int, Any]:
    headers = {}
    if raw_auth is not None:
        headers["Authorization"] = raw_auth
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as s,
        s.request(
            method, f"http://127.0.0.1:{agent.port}{path}", json=body or {}, headers=headers
        ) as r,
    ):
        return r.status, await r.json()


async def failed_over_everywhere(agents: list[Agent], platform: Platform) -> None:
    await wait_for(lambda: all(word(a) == "healthy" for a in agents), timeout=15)
    platform.set_fault(PRIMARY, Fault(kind="outage"))
    await wait_for(lambda: all(word(a) == "failed_over" for a in agents), timeout=15)


async def test_failback_is_manual_and_one_agent_releases_it_for_all(platform: Platform) -> None:
    async with three_agents(platform, admin_token=ADMIN) as agents:
        await failed_over_everywhere(agents, platform)
        platform.recover(PRIMARY)
        await wait_for(
            lambda: all(a.verdicts[PRIMARY].current.value == "healthy" for a in agents),
            timeout=15,
        )
        await asyncio.sleep(1.0)  # well past recovery_threshold runs: nothing moves back
        for agent in agents:
            status, body = await health(agent)
            assert status == 503, body
            assert body["verdict"] == "failed_over" and body["current"] == "healthy"
            assert body["latch"]["target"] == "gcp-euw1"

        status, answer = await call(
            agents[2],
            "POST",
            f"/v1/sites/{PRIMARY}/failback",
            {"by": "alice", "reason": "primary verified"},
        )
        assert status == 200, answer
        assert answer["action"]["kind"] == "failback"
        assert answer["action"]["by"] == "alice via azure-weu"
        assert answer["verdict"]["verdict"] == "healthy"
        # The others learn it with the next view they fetch (peers poll every 200 ms).
        await wait_for(lambda: all(word(a) == "healthy" for a in agents), timeout=3)
        for agent in agents:
            status, body = await health(agent)
            assert status == 200
            assert "failback released; was failed over to gcp-euw1" in body["reasons"]
        # Nothing left to release.
        status, answer = await call(agents[0], "POST", f"/v1/sites/{PRIMARY}/failback")
        assert status == 409
        assert answer["error"] == "site aws-use1 is not failed over: there is nothing to fail back"


async def test_control_calls_without_the_admin_token_change_nothing(platform: Platform) -> None:
    async with three_agents(platform, admin_token=ADMIN) as agents:
        await failed_over_everywhere(agents, platform)
        path = f"/v1/sites/{PRIMARY}/failback"
        for auth in (None, "Bearer wrong", ADMIN, f"Basic {ADMIN}", "Bearer \udcff"):
            status, body = await call(agents[0], "POST", path, token=None, raw_auth=auth)
            assert status == 401 and ADMIN not in json.dumps(body)
        status, _ = await call(agents[0], "POST", f"/v1/sites/{PRIMARY}/hold", {"for": "1h"})
        assert status == 400  # authorised, but a hold needs a reason
        status, _ = await call(agents[0], "POST", "/v1/sites/nowhere/failback")
        assert status == 404
        await asyncio.sleep(0.5)
        for agent in agents:
            assert word(agent) == "failed_over"
            assert (await health(agent))[0] == 503


async def test_without_an_admin_token_the_controls_are_off(
    make_config: MakeConfig, platform: Platform
) -> None:
    config, _ = make_config()
    async with running_agent(with_agent(config, admin_token=None)) as agent:
        status, body = await call(agent, "POST", f"/v1/sites/{PRIMARY}/failback")
        assert status == 403
        assert body == {
            "error": "operator controls are disabled: set agent.admin_token to enable them"
        }


async def test_a_hold_keeps_a_down_site_from_failing_over_and_is_lifted(
    platform: Platform,
) -> None:
    async with three_agents(platform, admin_token=ADMIN) as agents:
        await wait_for(lambda: all(word(a) == "healthy" for a in agents), timeout=15)
        status, answer = await call(
            agents[1],
            "POST",
            f"/v1/sites/{PRIMARY}/hold",
            {"for": "1h", "reason": "db upgrade", "by": "bob"},
        )
        assert status == 200, answer
        await wait_for(lambda: all(word(a) == "held" for a in agents), timeout=3)
        platform.set_fault(PRIMARY, Fault(kind="outage"))  # the planned work starts
        await wait_for(
            lambda: all(a.views.views[PRIMARY].state.value == "down" for a in agents), timeout=10
        )
        await asyncio.sleep(0.5)
        for agent in agents:
            status, body = await health(agent)
            assert status == 200 and body["verdict"] == "held"
            assert body["current"] == "failover_recommended"
            assert body["hold"]["by"] == "bob via gcp-euw1"
            assert body["reasons"][0].startswith("held by bob via gcp-euw1 until ")
            assert body["reasons"][0].endswith(": db upgrade (never failed over while held)")
        # Lifting the hold while the site is still down: the down votes must fail again
        # after the lift, then the failover is entered (and latched).
        status, _ = await call(agents[0], "DELETE", f"/v1/sites/{PRIMARY}/hold")
        assert status == 200
        await wait_for(lambda: all(word(a) == "failed_over" for a in agents), timeout=10)
        status, body = await call(agents[0], "DELETE", f"/v1/sites/{PRIMARY}/hold")
        assert status == 409 and body["error"] == "site aws-use1 is not held"


async def test_a_hold_survives_a_restart_and_a_restarted_agent_relearns_from_peers(
    make_config: MakeConfig, platform: Platform, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    config, _ = make_config()
    config = with_agent(config, admin_token=ADMIN, state_dir=str(state))
    async with running_agent(config) as agent:
        status, _ = await call(
            agent, "POST", f"/v1/sites/{PRIMARY}/hold", {"for": "2h", "reason": "migration"}
        )
        assert status == 200
    saved = json.loads((state / "control.json").read_text())
    assert [a["kind"] for a in saved["actions"]] == ["hold"]
    async with running_agent(config) as agent:
        await wait_for(lambda: word(agent) == "held")
        assert agent.verdicts[PRIMARY].hold is not None
        assert agent.verdicts[PRIMARY].hold.reason == "migration"


async def test_a_restarted_agent_without_state_relearns_the_latch_from_its_peers(
    platform: Platform,
) -> None:
    async with three_agents(platform, admin_token=ADMIN) as agents:
        await failed_over_everywhere(agents, platform)
        platform.recover(PRIMARY)
        config = agents[1].config
        agents[1].stop()
        await wait_for(lambda: not agents[1].ready, timeout=10)
        await asyncio.sleep(0.5)
        async with running_agent(config) as again:
            # Its own views say healthy by now; the latch comes from the peers.
            await wait_for(lambda: word(again) == "failed_over", timeout=5)
            assert (await health(again))[0] == 503


async def test_a_total_outage_is_unsafe_not_unknown_and_never_latched(
    platform: Platform,
) -> None:
    async with three_agents(platform) as agents:
        await wait_for(lambda: all(word(a) == "healthy" for a in agents), timeout=15)
        for site in (PRIMARY, "gcp-euw1"):
            platform.set_fault(site, Fault(kind="outage"))
        await wait_for(
            lambda: all(
                a.verdicts[PRIMARY].total_outage
                and word(a) == "failover_unsafe"
                and set(a.verdicts[PRIMARY].quorum.vantages.values()) == {"down"}
                for a in agents
            ),
            timeout=15,
        )
        for agent in agents:
            status, body = await health(agent)
            assert status == 200
            assert body["total_outage"] is True
            assert body["reasons"][0].startswith("total outage: every site is down in 3 views")
            assert "no healthy standby" in " ".join(body["reasons"])
            assert body["quorum"]["vantages"] == {
                "aws-use1": "down",
                "gcp-euw1": "down",
                "azure-weu": "down",
            }
            assert not agent.impaired and agent.control.controls(0.0).latches == {}


async def test_a_self_check_settles_impairment_for_a_lone_agent(
    make_config: MakeConfig, platform: Platform
) -> None:
    outside = web.Application()

    async def reachable(_request: web.Request) -> web.Response:
        return web.Response(text="reachable")

    outside.router.add_get("/", reachable)
    runner = web.AppRunner(outside)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        for url, impaired in ((f"http://127.0.0.1:{port}/", False), (_dead_url(), True)):
            config, _ = make_config()
            config = with_agent(config, self_check={"url": url, "interval": "1s", "timeout": "1s"})
            platform.recover(PRIMARY)
            platform.recover("gcp-euw1")
            async with running_agent(config) as agent:
                await wait_for(lambda: agent.views.self_check_ok is not None)
                for s in (PRIMARY, "gcp-euw1"):
                    platform.set_fault(s, Fault(kind="outage"))
                await wait_for(lambda: agent.views.every_site_failing, timeout=10)
                expected = "unknown" if impaired else "failover_unsafe"
                await wait_for(lambda: word(agent) == expected, timeout=10)  # noqa: B023
                assert agent.impaired is impaired
                assert agent.verdicts[PRIMARY].total_outage is not impaired
    finally:
        await runner.cleanup()


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


async def test_a_flapping_primary_fails_over_once(platform: Platform) -> None:
    async with three_agents(platform, admin_token=ADMIN) as agents:
        await wait_for(lambda: all(word(a) == "healthy" for a in agents), timeout=15)
        codes: dict[str, list[int]] = {a.config.agent.vantage: [] for a in agents}

        async def flap() -> None:
            for _ in range(6):  # 1.2 s down, 1.2 s up, six times
                platform.set_fault(PRIMARY, Fault(kind="outage"))
                await asyncio.sleep(1.2)
                platform.recover(PRIMARY)
                await asyncio.sleep(1.2)

        async def watch() -> None:
            while True:
                for agent in agents:
                    codes[agent.config.agent.vantage].append((await health(agent))[0])
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        await flap()
        watcher.cancel()
        for vantage, seen in codes.items():
            entries = sum(1 for a, b in itertools.pairwise(seen) if (a, b) == (200, 503))
            assert entries == 1, f"{vantage}: {entries} failover entries"
            assert seen[-1] == 503  # latched: no failback without an operator
        assert any(a.views.views[PRIMARY].flapping for a in agents)


async def test_maintenance_windows_from_the_config_hold_a_site(
    platform: Platform, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    data["maintenance"] = [
        {
            "name": "db-upgrade",
            "sites": [PRIMARY],
            "reason": "PostgreSQL 16",
            "start": "2020-01-01T00:00:00Z",
            "end": "2099-01-01T00:00:00Z",
        }
    ]
    config = write_config(tmp_path / "c.yaml", data)
    platform.set_fault(PRIMARY, Fault(kind="outage"))
    async with running_agent(config) as agent:
        await wait_for(lambda: agent.views.views[PRIMARY].state.value == "down")
        await asyncio.sleep(0.3)
        status, body = await health(agent)
        assert status == 200 and body["verdict"] == "held"
        assert body["hold"]["source"] == "maintenance"
        assert body["reasons"][0] == (
            "held by maintenance db-upgrade until 2099-01-01T00:00:00Z: PostgreSQL 16 "
            "(never failed over while held)"
        )


async def test_fast_confirmation_reaches_down_long_before_the_next_interval(
    platform: Platform, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    data["journeys"][0]["interval"] = "60s"  # without confirmation, down would take 2 min
    data["verdict"] = {"failure_threshold": 3, "recovery_threshold": 2, "confirm_interval": "200ms"}
    config = write_config(tmp_path / "c.yaml", data)
    async with running_agent(config) as agent:
        await wait_for(lambda: agent.views.views[PRIMARY].last_run_at is not None, timeout=35)
        platform.set_fault(PRIMARY, Fault(kind="outage"))
        assert agent.scheduler is not None
        check = f"journey/order-to-invoice/{PRIMARY}"
        agent.scheduler.tick(next(c for c in agent.scheduler.checks if c.name == check))
        await wait_for(lambda: agent.views.views[PRIMARY].state.value == "down", timeout=10)
        assert agent.scheduler.confirmations[(check, "journey")] == 2
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{agent.port}/metrics") as r,
        ):
            metrics = await r.text()
        assert (
            f'failsight_check_confirmation_runs_total{{check="{check}",kind="journey",'
            'vantage="aws-use1"} 2.0'
        ) in metrics
        # Down is settled: no more confirmation runs until something changes.
        await asyncio.sleep(0.6)
        assert agent.scheduler.confirmations[(check, "journey")] == 2


async def test_the_cli_holds_and_fails_back_through_the_api(
    make_config: MakeConfig, platform: Platform
) -> None:
    config, _ = make_config()
    config = with_agent(config, admin_token=ADMIN)
    async with running_agent(config) as agent:
        env = {**os.environ, "FAILSIGHT_ADMIN_TOKEN": ADMIN}
        url = f"http://127.0.0.1:{agent.port}"

        async def cli(*args: str) -> tuple[int, str, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "failsight",
                *args,
                "--agent",
                url,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode is not None
            return proc.returncode, out.decode(), err.decode()

        code, out, err = await cli("hold", PRIMARY, "--for", "30m", "--reason", "patching")
        assert code == 0, err
        assert out.startswith("hold aws-use1 recorded by aws-use1 (id ")
        assert out.rstrip().endswith("verdict now held")
        code, out, err = await cli("failback", PRIMARY)
        assert code == 1 and out == ""
        assert err.strip() == (
            f"{url}: HTTP 409: site aws-use1 is not failed over: there is nothing to fail back"
        )
        code, out, err = await cli("hold", PRIMARY, "--lift")
        assert code == 0, err
        assert word(agent) != "held"
        code, _, err = await cli("hold", PRIMARY, "--for", "1h")
        assert code == 1 and "a reason is required" in err
        assert ADMIN not in out + err
