"""The whole agent against the simulated platform: API contract, scheduling, signals."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import yaml

from failsight.agent.config import Config
from failsight.agent.demo.simulator import Fault, Platform
from tests.fixtures.platform import (
    demo_config_data,
    get_json,
    running_agent,
    start_agent_process,
    wait_for,
)

MakeConfig = Callable[..., tuple[Config, Path]]


async def test_verdict_json_and_health_semantics(
    make_config: MakeConfig, platform: Platform
) -> None:
    config, _ = make_config()
    async with running_agent(config) as agent:
        base = f"http://127.0.0.1:{agent.port}"
        await wait_for(lambda: all(v.successes >= 1 for v in agent.views.views.values()))
        status, body = await get_json(base + "/v1/verdict")
        assert status == 200
        assert body["vantage"] == "aws-use1"
        aws = body["sites"]["aws-use1"]
        assert set(aws) >= {
            "role",
            "verdict",
            "since",
            "reasons",
            "view",
            "quorum",
            "failover_target",
            "replication",
        }
        assert aws["verdict"] == "healthy" and aws["role"] == "primary"
        assert aws["view"]["state"] == "up"
        assert aws["quorum"] == {
            "down": 0,
            "fresh": 1,
            "required": 1,
            "vantages": {"aws-use1": "up"},
        }
        status, _ = await get_json(base + "/v1/sites/aws-use1/health")
        assert status == 200

        platform.set_fault("aws-use1", Fault(kind="outage"))
        # The failover is recommended, then latched at once: failed_over, still 503.
        await wait_for(lambda: agent.verdicts["aws-use1"].verdict.value == "failed_over")
        async with aiohttp.ClientSession() as s, s.get(base + "/v1/sites/aws-use1/health") as r:
            assert r.status == 503
            raw = await r.read()
        assert raw.startswith(b'{"verdict": "failed_over"')
        status, body = await get_json(base + "/v1/verdict")
        aws = body["sites"]["aws-use1"]
        assert aws["verdict"] == "failed_over" and aws["current"] == "failover_recommended"
        assert aws["failover_target"] == "gcp-euw1"
        assert aws["latch"]["target"] == "gcp-euw1" and aws["latch"]["by"] == "verdict@aws-use1"
        assert aws["failback"] == {"policy": "manual", "stable_for": None, "up_since": None}
        assert any("order_submit" in e and "http_status" in e for e in aws["view"]["evidence"])
        status, gcp = await get_json(base + "/v1/sites/gcp-euw1/health")
        assert status == 200 and gcp["verdict"] == "healthy"
        status, _ = await get_json(base + "/v1/sites/nowhere/health")
        assert status == 404

        async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
            metrics = await r.text()
        assert 'failsight_site_view_down{site="aws-use1",vantage="aws-use1"} 1.0' in metrics
        assert (
            'failsight_site_verdict{site="aws-use1",vantage="aws-use1",verdict="failed_over"} 1.0'
        ) in metrics
        assert (
            'failsight_site_failed_over{failover_target="gcp-euw1",site="aws-use1",'
            'vantage="aws-use1"} 1.0'
        ) in metrics
        assert (
            'failsight_step_failures_total{journey="order-to-invoice",reason="http_status",'
            'site="aws-use1",step="order_submit",vantage="aws-use1"}' in metrics
        )
        assert 'failsight_agent_info{vantage="aws-use1",version="' in metrics

        # Failback is never a side effect of the primary answering again.
        platform.recover("aws-use1")
        await wait_for(lambda: agent.views.views["aws-use1"].state == "up")
        await wait_for(lambda: agent.verdicts["aws-use1"].current.value == "healthy")
        status, body = await get_json(base + "/v1/sites/aws-use1/health")
        assert status == 503
        assert body["verdict"] == "failed_over" and body["current"] == "healthy"
        assert any("failback is manual" in r for r in body["reasons"])


async def test_a_lone_vantage_that_sees_every_site_fail_is_impaired(
    make_config: MakeConfig, platform: Platform
) -> None:
    config, _ = make_config()
    async with running_agent(config) as agent:
        for site in ("aws-use1", "gcp-euw1"):
            platform.set_fault(site, Fault(kind="outage"))
        await wait_for(
            lambda: agent.impaired and all(v.state == "down" for v in agent.views.views.values())
        )
        status, body = await get_json(f"http://127.0.0.1:{agent.port}/v1/verdict")
        assert {s["verdict"] for s in body["sites"].values()} == {"unknown"}
        assert body["sites"]["aws-use1"]["quorum"]["vantages"] == {"aws-use1": "impaired"}
        status, _ = await get_json(f"http://127.0.0.1:{agent.port}/v1/sites/aws-use1/health")
        assert status == 200  # unknown never triggers failover


async def test_an_overrunning_check_is_skipped_not_stacked(
    make_config: MakeConfig, platform: Platform
) -> None:
    config, _ = make_config()
    platform.set_fault("aws-use1", Fault(kind="latency", step="pick", latency_ms=1500))
    async with running_agent(config) as agent:
        await asyncio.sleep(2.5)
        assert agent.scheduler is not None
        skipped = agent.scheduler.skipped.get(("journey/order-to-invoice/aws-use1", "journey"), 0)
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{agent.port}/metrics") as r,
        ):
            metrics = await r.text()
    assert skipped >= 2
    assert (
        'failsight_check_runs_skipped_total{check="journey/order-to-invoice/aws-use1",'
        'kind="journey",vantage="aws-use1"}'
    ) in metrics
    # Runs never overlapped: one pick at a time, each ~1.5 s.
    picks = [r for r in platform.state("aws-use1").requests if "/pick" in r.path]
    assert 1 <= len(picks) <= 3


async def test_removed_checks_leave_no_stale_series(
    make_config: MakeConfig, platform: Platform, tmp_path: Path
) -> None:
    config, path = make_config()
    async with running_agent(config, path) as agent:
        await wait_for(lambda: len(agent.latest_results()) == 2)
        data = demo_config_data(platform)
        data["journeys"][0]["sites"] = ["gcp-euw1"]
        path.write_text(yaml.safe_dump(data))
        assert agent.reload()
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"http://127.0.0.1:{agent.port}/metrics") as r,
        ):
            metrics = await r.text()
    # The site stays (its view and verdict are still exported); its journey series go.
    assert 'journey="order-to-invoice",site="aws-use1"' not in metrics
    assert 'check="journey/order-to-invoice/aws-use1"' not in metrics
    assert 'journey="order-to-invoice",site="gcp-euw1"' in metrics


async def _start_cli(path: Path | list[Path]) -> asyncio.subprocess.Process:
    return await start_agent_process(
        path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )


@contextlib.asynccontextmanager
async def _running_cli(path: Path | list[Path]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`failsight run` for the body of the block, then SIGTERM: it must exit 0 (killed if the
    body failed first)."""
    proc = await _start_cli(path)
    try:
        yield proc
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await proc.communicate()
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _read_until(proc: asyncio.subprocess.Process, needle: str, timeout: float = 15) -> str:
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError("process ended early:\n" + "".join(seen))
            seen.append(line)
            if needle in line:
                return "".join(seen)


async def test_sigterm_exits_zero_after_cleanups(platform: Platform, tmp_path: Path) -> None:
    data = demo_config_data(platform)
    data["agent"]["listen"] = "127.0.0.1:0"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    # Slow invoices keep a run in flight when SIGTERM arrives.
    platform.set_fault("aws-use1", Fault(kind="latency", step="invoice", latency_ms=800))
    proc = await _start_cli(path)
    try:
        await _read_until(proc, "listening on")
        await wait_for(
            lambda: any("/invoice" in r.path for r in platform.state("aws-use1").requests), 10
        )
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert platform.state("aws-use1").synthetic_orders == 0
    assert platform.state("gcp-euw1").synthetic_orders == 0


async def test_sighup_rereads_every_config_file_in_order(
    platform: Platform, tmp_path: Path
) -> None:
    shared, vantage = tmp_path / "shared.yaml", tmp_path / "vantage.yaml"
    shared.write_text(yaml.safe_dump(demo_config_data(platform)))
    vantage.write_text("agent: {cloud_region: us-east-1}\n")
    async with _running_cli([shared, vantage]) as proc:
        await _read_until(proc, "listening on")
        vantage.write_text("agent: {cloud_region: us-east-1}\nsurprise: 1\n")
        proc.send_signal(signal.SIGHUP)
        log = await _read_until(proc, "reload refused")
        assert f"{vantage}:2: surprise: unknown key" in log
        vantage.write_text("agent: {cloud_region: us-east-1}\n")
        proc.send_signal(signal.SIGHUP)
        log = await _read_until(proc, "config reloaded")
        assert f"config reloaded from {shared} + {vantage}" in log


async def test_sighup_with_a_bad_file_keeps_the_old_config(
    platform: Platform, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    async with _running_cli(path) as proc:
        await _read_until(proc, "listening on")
        path.write_text(yaml.safe_dump({**data, "surprise": 1}))
        proc.send_signal(signal.SIGHUP)
        log = await _read_until(proc, "reload refused")
        assert "surprise: unknown key" in log
        requests_before = len(platform.state("gcp-euw1").requests)
        await wait_for(lambda: len(platform.state("gcp-euw1").requests) > requests_before + 5)
        assert proc.returncode is None  # still running on the old config
        data["journeys"][0]["sites"] = ["aws-use1"]
        path.write_text(yaml.safe_dump(data))
        proc.send_signal(signal.SIGHUP)
        await _read_until(proc, "config reloaded")
