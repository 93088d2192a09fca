"""The agent's two telemetry paths together: OTLP to real receivers beside Prometheus, and a
black-holing collector that costs nothing but counted failures."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from failsight.agent.demo.simulator import Platform
from failsight.agent.otlp_config import INSTANCE_ID
from failsight.core.http import USER_AGENT
from tests.fixtures.otlp_receiver import BlackHole, GrpcReceiver, attributes
from tests.fixtures.platform import (
    demo_config_data,
    running_agent,
    start_agent_process,
    wait_for,
    write_config,
)


@pytest.fixture
def grpc_receiver() -> AsyncIterator[GrpcReceiver]:
    receiver = GrpcReceiver()
    receiver.start()
    yield receiver  # type: ignore[misc]
    receiver.stop()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    await hole.start()
    yield hole
    await hole.stop()


def collectors(live: GrpcReceiver, hole: BlackHole) -> list[dict[str, object]]:
    fast = {"timeout": "500ms", "export_interval": "300ms", "max_queue_size": 64}
    return [
        {"name": "live", "endpoint": live.endpoint, "protocol": "grpc", **fast},
        {"name": "hole", "endpoint": hole.endpoint, "protocol": "http/protobuf", **fast},
    ]


async def test_spans_carry_the_traceparent_the_site_received_and_a_black_hole_costs_nothing(
    platform: Platform, grpc_receiver: GrpcReceiver, black_hole: BlackHole, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    data["agent"]["cloud_provider"], data["agent"]["cloud_region"] = "aws", "us-east-1"
    data["telemetry"] = {"otlp": collectors(grpc_receiver, black_hole)}
    config = write_config(tmp_path / "c.yaml", data)
    async with running_agent(config) as agent:
        await wait_for(lambda: len(grpc_receiver.inbox.spans()) > 0, timeout=15)
        spans = grpc_receiver.inbox.spans()
        resource = spans[0].resource
        assert resource["service.name"] == "failsight"
        assert (
            resource["failsight.vantage"],
            resource["cloud.provider"],
            resource["cloud.region"],
        ) == ("aws-use1", "aws", "us-east-1")
        assert "vantage" not in resource
        assert resource["service.instance.id"] == INSTANCE_ID
        # Every traceparent a site received names a trace and a span that reached the collector.
        received = {
            tuple(r.headers["traceparent"].split("-")[1:3])
            for site in ("aws-use1", "gcp-euw1")
            for r in platform.state(site).requests
        }
        await wait_for(
            lambda: (
                received
                <= {
                    (s.item.trace_id.hex(), s.item.span_id.hex())
                    for s in grpc_receiver.inbox.spans()
                }
            ),
            timeout=15,
        )
        await wait_for(
            lambda: "failsight.journey_runs" in grpc_receiver.inbox.newest_metric_names(),
            timeout=15,
        )

        # The demo journey's allocation step, as the HTTP client conventions name and describe
        # it: the request the site received (test_otlp checks the User-Agent a site receives).
        allocation = next(
            s.item
            for s in grpc_receiver.inbox.spans()
            if s.item.name == "POST /api/v1/orders/{order_id}/allocation"
        )
        attrs = attributes(allocation.attributes)
        site = attrs["failsight.site"]
        request = next(
            r
            for r in platform.state(site).requests
            if (r.headers["traceparent"] or "").split("-")[2:3] == [allocation.span_id.hex()]
        )
        base = urlsplit(platform.urls[site])
        assert allocation.kind == 3  # SPAN_KIND_CLIENT
        assert allocation.status.code == 0
        assert {k: v for k, v in attrs.items() if not k.startswith("failsight.")} == {
            "http.request.method": "POST",
            "url.full": f"{platform.urls[site]}{request.path}",
            "url.scheme": "http",
            "url.template": "/api/v1/orders/{order_id}/allocation",
            "server.address": base.hostname,
            "server.port": base.port,
            "http.response.status_code": 202,
            "network.protocol.version": "1.1",
            "user_agent.original": USER_AGENT,
            "user_agent.synthetic.type": "test",
        }

        # The black hole: its exports fail (counted), and nothing else notices.
        assert agent.scheduler is not None
        runs_before = agent.scheduler.runs_started
        skips_before = sum(agent.scheduler.skipped.values())
        started = time.monotonic()
        await asyncio.sleep(3.0)
        ticks = 2 * (time.monotonic() - started) / 0.3  # two journeys every 300 ms
        runs = agent.scheduler.runs_started - runs_before
        skips = sum(agent.scheduler.skipped.values()) - skips_before
        # The cadence holds: nearly every tick started a run (a tick skipped because the previous
        # run overran counts too); a loop blocked on exports would lose whole ticks.
        assert runs + skips >= 0.8 * ticks - 2, (runs, skips, ticks)
        assert runs >= 0.5 * ticks, (runs, ticks)
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            async with s.get(f"http://127.0.0.1:{agent.port}/metrics") as r:
                metrics = await r.text()
            scrape = time.monotonic() - t0
        assert scrape < 1.0, scrape  # generous: a blocked loop would take the export timeout
        assert (
            'failsight_telemetry_exports_total{path="otlp:live:traces",result="success",'
            'vantage="aws-use1"}'
        ) in metrics
        failing = [
            line
            for line in metrics.splitlines()
            if 'path="otlp:hole:' in line and 'result="failure"' in line
        ]
        assert failing and all(float(line.rsplit(" ", 1)[1]) > 0 for line in failing)
        assert agent.otlp is not None
        assert all(n <= 64 for n in agent.otlp.queued().values())


async def test_sigterm_exits_promptly_with_a_black_holing_collector(
    platform: Platform, black_hole: BlackHole, tmp_path: Path
) -> None:
    data = demo_config_data(platform)
    data["agent"]["shutdown_grace"] = "2s"
    data["telemetry"] = {
        "otlp": [
            {
                "name": "hole",
                "endpoint": black_hole.endpoint,
                "protocol": "grpc",
                "timeout": "30s",
                "export_interval": "300ms",
            }
        ]
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    proc = await start_agent_process(
        path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_for(lambda: black_hole.connections > 0, timeout=15)
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await proc.wait()
        took = time.monotonic() - t0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    # Grace for runs (2 s) + the bounded OTLP close (5 s), not the collector's 30 s timeout.
    assert took < 12.0, took
