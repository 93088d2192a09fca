"""Three agents, three vantages, one platform: quorum across clouds over real HTTP."""

from __future__ import annotations

import pytest

from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.runtime import Agent
from failsight.agent.view import VantageView
from tests.fixtures.platform import (
    VANTAGES,
    get_json,
    running_agent,
    three_agents,
    three_vantage_config,
    wait_for,
)


def verdicts(agents: list[Agent], site: str) -> set[str]:
    return {a.refresh_verdicts()[site].verdict.value for a in agents}


async def test_quorum_of_vantages_recommends_failover(platform: Platform) -> None:
    async with three_agents(platform) as agents:
        await wait_for(lambda: verdicts(agents, "aws-use1") == {"healthy"}, timeout=15)
        platform.set_fault("aws-use1", Fault(kind="outage"))
        await wait_for(lambda: verdicts(agents, "aws-use1") == {"failed_over"}, timeout=15)
        # Every vantage's own view is down; the peers' copies catch up within a poll or two.
        await wait_for(lambda: agents[1].refresh_verdicts()["aws-use1"].quorum.down == 3)
        status, body = await get_json(f"http://127.0.0.1:{agents[1].port}/v1/sites/aws-use1/health")
        assert status == 503
        assert body["quorum"]["required"] == 2
        assert body["quorum"]["down"] == 3
        assert body["quorum"]["vantages"] == {v: "down" for v in VANTAGES}
        assert body["failover_target"] == "gcp-euw1"
        assert verdicts(agents, "gcp-euw1") == {"healthy"}


async def test_one_vantage_losing_its_path_is_not_a_failover(platform: Platform) -> None:
    async with three_agents(platform) as agents:
        await wait_for(lambda: verdicts(agents, "aws-use1") == {"healthy"}, timeout=15)
        platform.set_fault("aws-use1", Fault(kind="outage", vantage="azure-weu"))
        await wait_for(lambda: agents[2].views.views["aws-use1"].state == "down", timeout=15)
        await wait_for(lambda: verdicts(agents, "aws-use1") == {"degraded"}, timeout=5)
        await wait_for(
            lambda: (
                agents[0].refresh_verdicts()["aws-use1"].quorum.vantages.get("azure-weu") == "down"
            )
        )
        status, body = await get_json(f"http://127.0.0.1:{agents[0].port}/v1/sites/aws-use1/health")
        assert status == 200
        assert body["verdict"] == "degraded"
        assert body["quorum"]["vantages"] == {
            "aws-use1": "up",
            "gcp-euw1": "up",
            "azure-weu": "down",
        }
        assert body["reasons"][0].startswith("1 of 3 views see it down (2 needed): not a failover")


async def test_a_vantage_that_sees_everything_fail_does_not_vote(platform: Platform) -> None:
    async with three_agents(platform) as agents:
        for site in ("aws-use1", "gcp-euw1"):
            platform.set_fault(site, Fault(kind="outage", vantage="azure-weu"))
        await wait_for(lambda: agents[2].views.every_site_failing, timeout=15)
        await wait_for(lambda: agents[2].impaired, timeout=5)
        await wait_for(
            lambda: (
                agents[0].refresh_verdicts()["aws-use1"].quorum.vantages.get("azure-weu")
                == "impaired"
            ),
            timeout=5,
        )
        # Two fresh votes remain, enough for the quorum of 2: both sites stay healthy for all.
        # (each agent within a poll of azure's impaired view)
        await wait_for(lambda: verdicts(agents, "aws-use1") == {"healthy"}, timeout=5)
        await wait_for(lambda: verdicts(agents, "gcp-euw1") == {"healthy"}, timeout=5)
        await wait_for(
            lambda: all(a.refresh_verdicts()["aws-use1"].quorum.fresh == 2 for a in agents),
            timeout=5,
        )


async def test_dead_peers_go_stale_and_too_few_views_is_unknown(platform: Platform) -> None:
    config = three_vantage_config(platform)
    async with running_agent(config) as agent:  # its two peers never start
        # What the API serves: the published snapshot, which follows the peers' live state
        # after the next judgement (a fetch wakes it), not within the same tick.
        await wait_for(
            lambda: (
                len(agent.status.peers) == 2 and all(p.error for p in agent.status.peers.values())
            ),
            timeout=5,
        )
        status, body = await get_json(f"http://127.0.0.1:{agent.port}/v1/verdict")
        aws = body["sites"]["aws-use1"]
        assert aws["verdict"] == "unknown"
        assert aws["quorum"]["vantages"] == {
            "aws-use1": "up",
            "gcp-euw1": "stale",
            "azure-weu": "stale",
        }
        assert "cannot connect" in body["peers"]["gcp-euw1"]["error"]
        platform.set_fault("aws-use1", Fault(kind="outage"))
        await wait_for(lambda: agent.views.views["aws-use1"].state == "down")
        status, _ = await get_json(f"http://127.0.0.1:{agent.port}/v1/sites/aws-use1/health")
        assert status == 200  # unknown never triggers failover


async def test_view_token_guards_the_view(platform: Platform) -> None:
    async with three_agents(platform, view_token="t0ken") as agents:
        status, body = await get_json(f"http://127.0.0.1:{agents[0].port}/v1/view")
        assert status == 401 and "t0ken" not in str(body)
        # The peers were not given the token: every fetch is refused and shows as an error.
        await wait_for(
            lambda: all("HTTP 401" in (s.error or "") for s in agents[0].peers.states.values()),
            timeout=5,
        )
        assert all(s.view is None for s in agents[0].peers.states.values())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not a JSON object"),
        ({"vantage": "x", "sites": {}}, "reports vantage 'x', expected 'gcp-euw1'"),
        ({"vantage": "gcp-euw1"}, "has no sites"),
        (
            {"vantage": "gcp-euw1", "sites": {"a": {"state": "sideways"}}},
            "site 'a' has state 'sideways'",
        ),
    ],
)
def test_a_bad_peer_view_is_refused(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VantageView.from_json(body, expected="gcp-euw1", received_at=0.0)
