"""The verdict reads replication: a real PostgreSQL primary and streaming replica behind the
simulated sites decide whether failing over is safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from failsight.agent.config import Config
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.runtime import Agent
from failsight.agent.verdict import replication_states
from tests.fixtures.platform import (
    demo_config_data,
    get_json,
    running_agent,
    wait_for,
    write_config,
)
from tests.fixtures.postgres import PgPair


def config_with_replication(
    platform: Platform, pg_pair: PgPair, tmp_path: Path, rpo: str
) -> Config:
    data = demo_config_data(platform)
    data["replication"] = [
        {
            "cluster": "orders-db",
            "rpo": rpo,
            "interval": "300ms",
            "timeout": "300ms",
            "primary": {"site": "aws-use1", "dsn": pg_pair.primary.dsn()},
            "replicas": [{"site": "gcp-euw1", "dsn": pg_pair.replica.dsn()}],
        }
    ]
    return write_config(tmp_path / "c.yaml", data)


async def verdict_of(port: int | None, site: str = "aws-use1") -> dict[str, object]:
    status, body = await get_json(f"http://127.0.0.1:{port}/v1/verdict")
    assert status == 200
    result: dict[str, object] = body["sites"][site]
    return result


async def replication_ok(agent: Agent) -> None:
    """Until the agent's replication check has passed once."""

    def ok() -> bool:
        result = agent.latest_results().get("replication/orders-db")
        return result is not None and result.ok

    await wait_for(ok, timeout=15)


def verdict_word(agent: Agent) -> str:
    return agent.refresh_verdicts()["aws-use1"].verdict.value


async def lagging_outage(agent: Agent, platform: Platform, pg_pair: PgPair) -> None:
    """The primary goes down while its standby is beyond the RPO: failover_unsafe."""
    await replication_ok(agent)
    await asyncio.to_thread(pg_pair.pause_replay)

    def beyond_rpo() -> bool:
        pairs = replication_states(agent.latest_results().values())
        return bool(pairs) and not pairs[0].within_rpo

    await wait_for(beyond_rpo, timeout=15)
    platform.set_fault("aws-use1", Fault(kind="outage"))
    await wait_for(lambda: verdict_word(agent) == "failover_unsafe", timeout=15)


async def test_lag_over_rpo_makes_failover_unsafe_and_catching_up_makes_it_safe(
    platform: Platform, pg_pair: PgPair, tmp_path: Path
) -> None:
    config = config_with_replication(platform, pg_pair, tmp_path, rpo="2s")
    async with running_agent(config) as agent:
        await lagging_outage(agent, platform, pg_pair)
        body = await verdict_of(agent.port)
        assert any("over the RPO of 2s" in str(r) for r in body["reasons"])  # type: ignore[union-attr]
        repl = body["replication"]
        assert isinstance(repl, dict) and repl["within_rpo"] is False
        assert repl["cluster"] == "orders-db" and repl["rpo_seconds"] == 2.0
        assert repl["lag_seconds"] > 2.0
        status, _ = await get_json(f"http://127.0.0.1:{agent.port}/v1/sites/aws-use1/health")
        assert status == 200  # unsafe is not a trigger

        # The standby catches up while the primary is still down: now it is safe, once a
        # run that fails after the catch-up confirms the primary is still down.
        await asyncio.to_thread(pg_pair.resume_replay)
        await wait_for(lambda: verdict_word(agent) == "failed_over", timeout=15)
        body = await verdict_of(agent.port)
        assert body["current"] == "failover_recommended"
        repl = body["replication"]
        assert isinstance(repl, dict) and repl["within_rpo"] is True


async def test_a_primary_back_as_its_standby_catches_up_is_never_failed_over(
    platform: Platform, pg_pair: PgPair, tmp_path: Path
) -> None:
    # The failure seen in the field: unsafe, then the primary recovers and the standby
    # catches up at the same moment. The health endpoint answered 503 for about 3 s.
    config = config_with_replication(platform, pg_pair, tmp_path, rpo="2s")
    async with running_agent(config) as agent:
        await lagging_outage(agent, platform, pg_pair)
        platform.recover("aws-use1")
        await asyncio.to_thread(pg_pair.resume_replay)
        seen: list[tuple[int, str]] = []
        url = f"http://127.0.0.1:{agent.port}/v1/sites/aws-use1/health"
        async with aiohttp.ClientSession() as session:
            for _ in range(120):  # 6 s, every 50 ms
                async with session.get(url) as response:
                    seen.append((response.status, (await response.json())["verdict"]))
                await asyncio.sleep(0.05)
        assert {status for status, _ in seen} == {200}, seen
        assert seen[-1][1] == "healthy"
        assert agent.control.controls(0.0).latches == {}


async def test_primary_database_lost_with_the_site_is_still_safe_to_fail_over(
    platform: Platform, pg_pair: PgPair, tmp_path: Path
) -> None:
    # The whole primary site goes: application and database. The replica stops streaming
    # and the live heartbeat ages, but it holds every write the primary took: safe.
    config = config_with_replication(platform, pg_pair, tmp_path, rpo="2s")
    async with running_agent(config) as agent:
        await replication_ok(agent)
        platform.set_fault("aws-use1", Fault(kind="outage"))
        await asyncio.to_thread(pg_pair.stop_primary)
        await wait_for(lambda: verdict_word(agent) == "failed_over")
        await asyncio.sleep(3.0)  # longer than the RPO: still safe
        body = await verdict_of(agent.port)
        assert body["verdict"] == "failed_over" and body["current"] == "failover_recommended"
        repl = body["replication"]
        assert isinstance(repl, dict) and repl["within_rpo"] is True and repl["lag_seconds"] == 0


async def test_promoted_replica_is_split_brain_and_unsafe(
    platform: Platform, pg_pair: PgPair, tmp_path: Path
) -> None:
    config = config_with_replication(platform, pg_pair, tmp_path, rpo="30s")
    async with running_agent(config) as agent:
        await replication_ok(agent)
        await asyncio.to_thread(pg_pair.promote_replica)
        await wait_for(lambda: verdict_word(agent) == "failover_unsafe", timeout=15)
        body = await verdict_of(agent.port)
        assert any("split brain in orders-db" in str(r) for r in body["reasons"])  # type: ignore[union-attr]
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{agent.port}/metrics") as r,
        ):
            metrics = await r.text()
        for role in ("primary", "replica"):
            assert (
                f'failsight_replication_writable{{cluster="orders-db",replica="gcp-euw1",'
                f'role="{role}",vantage="aws-use1"}} 1.0'
            ) in metrics
