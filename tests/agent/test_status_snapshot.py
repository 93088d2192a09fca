"""The API serves the agent's published status snapshot (agent/status.py) and never changes the
agent on a GET; the snapshot is immutable; one type owns the `/v1/view` wire format."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from failsight.agent.api import build_app
from failsight.agent.config import Config
from failsight.agent.control import Action, ActionKind
from failsight.agent.runtime import Agent
from failsight.agent.status import Status
from failsight.agent.view import SiteOpinion, SiteState, VantageView
from tests.factories import journey_result
from tests.fixtures.platform import running_agent, wait_for

MakeConfig = Callable[..., tuple[Config, Path]]
ADMIN = {"Authorization": "Bearer demo-admin-token"}
PRIMARY = "aws-use1"
READ_ENDPOINTS = [
    "/v1/verdict",
    "/v1/view",
    "/v1/results",
    "/v1/timeline",
    f"/v1/sites/{PRIMARY}/health",
    "/v1/sites/nowhere/health",
    "/metrics",
    "/",
    "/readyz",
    "/healthz",
]


@asynccontextmanager
async def served(agent: Agent) -> AsyncIterator[TestClient[Any, Any]]:
    """The agent's API app, served without running the agent: nothing else changes it."""
    async with TestClient(TestServer(build_app(agent))) as client:
        yield client


def judged_agent(config: Config) -> Agent:
    """An agent (not running) that has seen the primary fail and the standby answer."""
    agent = Agent(config)
    for n in range(3):
        agent.fanout.handle(journey_result(PRIMARY, False, 1000.0 + n))
        agent.fanout.handle(journey_result("gcp-euw1", True, 1000.0 + n))
    agent.refresh_verdicts()  # failover recommended, and latched
    agent.refresh_verdicts()  # failed over
    return agent


def agent_state(agent: Agent) -> tuple[object, ...]:
    return (
        dict(agent.verdicts),
        agent.views.snapshot(),
        dict(agent.views.latest),
        {site: list(points) for site, points in agent.timeline.points.items()},
        agent.control.clock,
        agent.control.actions(),
        dict(agent.peers.states),
    )


async def test_every_read_endpoint_leaves_the_agent_unchanged(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = make_config()
    agent = judged_agent(config)
    assert agent.verdicts[PRIMARY].verdict.value == "failed_over"
    published, verdicts, state = agent.status, agent.verdicts, agent_state(agent)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a GET judged the verdicts again")

    monkeypatch.setattr(agent, "refresh_verdicts", never)
    async with served(agent) as client:
        for _ in range(2):
            for path in READ_ENDPOINTS:
                response = await client.get(path)
                assert response.status in (200, 404, 503), path
                await response.read()
    assert agent.status is published
    assert agent.verdicts is verdicts
    assert agent_state(agent) == state


async def test_the_snapshot_exists_from_the_start_with_verdicts(make_config: MakeConfig) -> None:
    config, _ = make_config()
    agent = Agent(config)  # never run, never refreshed by hand
    assert set(agent.status.verdicts) == {s.name for s in config.sites}
    assert not agent.status.ready
    async with served(agent) as client:
        response = await client.get(f"/v1/sites/{PRIMARY}/health")
        assert response.status == 200
        assert (await response.json())["verdict"] == "healthy"
        response = await client.get("/readyz")
        assert response.status == 503


async def test_an_operator_action_republishes(make_config: MakeConfig) -> None:
    config, _ = make_config()
    agent = judged_agent(config)
    before = agent.status
    async with served(agent) as client:
        response = await client.post(
            f"/v1/sites/{PRIMARY}/failback", headers=ADMIN, json={"reason": "fixed"}
        )
        assert response.status == 200
        body = await response.json()
    assert agent.status is not before
    served_verdict = body["verdict"]["verdict"]
    assert served_verdict == agent.status.verdicts[PRIMARY].verdict.value != "failed_over"
    assert [a.kind for a in agent.status.view.actions if a.site == PRIMARY] == [ActionKind.FAILBACK]


async def test_the_status_is_immutable(make_config: MakeConfig) -> None:
    config, _ = make_config()
    status: Status = judged_agent(config).status
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.ready = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.view.sites[PRIMARY].state = SiteState.UP  # type: ignore[misc]
    mappings: list[Any] = [
        status.verdicts,
        status.results,
        status.peers,
        status.view.sites,
        status.timeline.points,
        status.verdicts[PRIMARY].quorum.vantages,
    ]
    for mapping in mappings:
        assert isinstance(mapping, MappingProxyType)
        with pytest.raises(TypeError):
            mapping["x"] = None
    assert isinstance(status.view.actions, tuple)
    assert isinstance(status.timeline.actions, tuple)
    assert all(isinstance(points, tuple) for points in status.timeline.points.values())


def test_the_view_wire_type_round_trips() -> None:
    action = Action(
        id="0123456789abcdef",
        kind=ActionKind.HOLD,
        site="aws-use1",
        clock=7,
        origin="gcp-euw1",
        at=1_700_000_100.0,
        by="ops via gcp-euw1",
        reason="migration",
        until=1_700_003_700.0,
    )
    view = VantageView(
        vantage="gcp-euw1",
        generated_at=1_700_000_200.5,
        sites={
            "aws-use1": SiteOpinion(
                SiteState.DOWN,
                since=1_700_000_000.0,
                evidence=("journey j failed at step pick [http_status]: HTTP 500 (3 consecutive)",),
                last_run_at=1_700_000_190.0,
                flapping=True,
                episode_since=1_699_999_000.0,
                failures=3,
            ),
            "gcp-euw1": SiteOpinion(SiteState.UP, since=1_699_000_000.0, successes=12),
        },
        every_site_failing=False,
        self_check=True,
        impaired=False,
        control_clock=9,
        actions=(action,),
    )
    wire = view.to_json()
    assert list(wire) == [
        "vantage",
        "generated_at",
        "impaired",
        "every_site_failing",
        "self_check",
        "sites",
        "control",
    ]
    again = VantageView.from_json(wire, expected="gcp-euw1", received_at=view.generated_at)
    assert again == view
    # Through real JSON too, as a peer receives it.
    decoded = json.loads(json.dumps(wire))
    assert VantageView.from_json(decoded, expected="gcp-euw1", received_at=1_700_000_200.5) == view


async def test_what_v1_view_serves_parses_back_to_the_local_view(make_config: MakeConfig) -> None:
    config, _ = make_config()
    agent = judged_agent(config)
    async with served(agent) as client:
        response = await client.get("/v1/view")
        assert response.status == 200
        body = await response.json()
    local = agent.status.view
    assert local.sites[PRIMARY].state is SiteState.DOWN and local.actions  # the latch travels
    parsed = VantageView.from_json(
        body, expected=config.agent.vantage, received_at=body["generated_at"]
    )
    assert parsed == local


async def test_the_prometheus_scrape_count_is_the_apis_and_counts_each_scrape(
    make_config: MakeConfig,
) -> None:
    config, _ = make_config()
    pattern = re.compile(
        r'failsight_telemetry_exports_total\{path="prometheus",result="success",'
        r'vantage="aws-use1"\} (\S+)'
    )
    async with running_agent(config) as agent, aiohttp.ClientSession() as session:
        await wait_for(lambda: agent.status.ready)
        seen = []
        for _ in range(3):
            async with session.get(f"http://127.0.0.1:{agent.port}/metrics") as response:
                match = pattern.search(await response.text())
            assert match is not None
            seen.append(float(match.group(1)))
        assert seen == [1.0, 2.0, 3.0]  # each answer counts itself, as before
        assert agent.scrapes == 3
