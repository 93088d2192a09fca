"""End to end: a real Prometheus with exemplar storage scrapes an agent that runs a journey
against the simulated sites; the run's trace id comes back from `/api/v1/query_exemplars`,
and the phase and status series arrive as the agent exports them."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

from failsight.agent.demo.simulator import Fault, Platform
from tests.fixtures.platform import demo_config_data, running_agent, write_config
from tests.fixtures.prometheus import Prometheus, start_prometheus

# The journey step each of the demo journey's requests belongs to, by method and path.
STEPS = (
    ("POST", re.compile(r"/api/v1/orders"), "order_submit"),
    ("POST", re.compile(r"/api/v1/orders/[^/]+/allocation"), "allocation"),
    ("GET", re.compile(r"/api/v1/allocations/[^/]+"), "allocation_done"),
    ("POST", re.compile(r"/api/v1/orders/[^/]+/(pick|shipment|invoice|cancel)"), ""),
)


def _sent(platform: Platform, site: str) -> set[tuple[str, str, str]]:
    """(trace id, step, span id) of every request the site received, from `traceparent`."""
    out = set()
    for record in platform.state(site).requests:
        parts = (record.headers.get("traceparent") or "").split("-")
        for method, path, step in STEPS:
            if len(parts) == 4 and record.method == method and path.fullmatch(record.path):
                out.add((parts[1], step or record.path.rsplit("/", 1)[1], parts[2]))
    return out


async def _exemplars(prom: Prometheus, query: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The series with exemplars for `query`, once there are some."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        body = await prom.get_json(
            "/api/v1/query_exemplars", query=query, start=repr(now - 300), end=repr(now + 60)
        )
        assert body["status"] == "success", body
        series: list[dict[str, Any]] = body["data"]
        if series:
            return series
        if time.monotonic() > deadline:
            raise AssertionError(f"no exemplars for {query} within {timeout}s")
        await asyncio.sleep(0.2)


async def test_prometheus_returns_the_run_s_trace_id_as_an_exemplar(
    platform: Platform, tmp_path: Path
) -> None:
    platform.set_fault("gcp-euw1", Fault(kind="fail_step", step="pick", status=503))
    data = demo_config_data(platform)
    # Slow enough that the sites' request logs (the last 1000) still hold every run that an
    # exemplar can come from when the test reads them.
    data["journeys"][0]["interval"] = "1s"
    config = write_config(tmp_path / "failsight.yaml", data)
    async with (
        running_agent(config) as agent,
        await start_prometheus(
            [f"127.0.0.1:{agent.port}"], extra_args=["--enable-feature=exemplar-storage"]
        ) as prom,
    ):
        series = await _exemplars(prom, "failsight_step_duration_seconds_bucket")
        # The scrape went through OpenMetrics without a complaint from Prometheus' parser.
        (target,) = await prom.targets()
        assert target["health"] == "up" and target["lastError"] == "", target

        sent = {site: _sent(platform, site) for site in ("aws-use1", "gcp-euw1")}
        runs = {
            site: {trace for trace, step, _ in sent[site] if step == "order_submit"}
            for site in sent
        }
        for one in series:
            labels = one["seriesLabels"]
            assert labels["__name__"] == "failsight_step_duration_seconds_bucket"
            for ex in one["exemplars"]:
                # The trace of a run, and the span of the very step the series is about, as
                # the site received them in `traceparent`.
                trace, span = ex["labels"]["trace_id"], ex["labels"]["span_id"]
                assert (trace, labels["step"], span) in sent[labels["site"]], (labels, ex)
                assert trace in runs[labels["site"]]
                assert float(ex["value"]) <= float(labels["le"])
                assert ex["timestamp"] > 0

        # The phase histogram and the status series, as Prometheus stored them.
        statuses = await prom.wait_for(
            'failsight_step_http_status_code{step="pick"}', lambda r: len(r) == 2
        )
        assert {r["metric"]["site"]: r["value"][1] for r in statuses} == {
            "aws-use1": "201",
            "gcp-euw1": "503",
        }
        phases = await prom.wait_for(
            'sum by (phase) (failsight_step_phase_duration_seconds_count{site="aws-use1"})',
            lambda r: {x["metric"]["phase"] for x in r} >= {"connect", "request", "first_byte"},
        )
        assert {x["metric"]["phase"] for x in phases} <= {
            "connect",
            "request",
            "first_byte",
            "transfer",
        }
        # Counters keep their _total name when scraped as OpenMetrics.
        assert await prom.query("failsight_journey_runs_total")
        assert not await prom.query('{__name__=~"failsight_.*_created"}')
        phase_exemplars = await _exemplars(prom, "failsight_step_phase_duration_seconds_bucket")
        assert all(ex["labels"]["trace_id"] for one in phase_exemplars for ex in one["exemplars"])
