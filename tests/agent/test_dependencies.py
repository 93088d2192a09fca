"""The agent with its dependencies: journeys authenticate through a real OIDC issuer, and the
view tells an IdP fault from a site fault; DNS state shows in the verdict."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from failsight.agent.config import Config
from failsight.agent.demo.simulator import Fault, Platform
from tests.fixtures.dnsmasq import Dnsmasq
from tests.fixtures.oidc import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcIssuer
from tests.fixtures.platform import (
    demo_config_data,
    get_json,
    running_agent,
    wait_for,
    write_config,
)

MakeConfig = Callable[..., tuple[Config, Path]]


def with_idp(
    platform: Platform, issuer: OidcIssuer, idp_timeout: str = "1s", **journey: Any
) -> dict[str, Any]:
    data = demo_config_data(platform)
    data["idps"] = [
        {
            "name": "corp-idp",
            "issuer": issuer.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "audience": AUDIENCE,
            "interval": idp_timeout,  # a check's timeout may not exceed its interval
            "timeout": idp_timeout,
            "refresh_before": "1s",
        }
    ]
    data["journeys"][0].update({"idp": "corp-idp", **journey})
    return data


async def test_journeys_share_one_cached_token_from_the_idp(
    platform: Platform, oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    # A token request that outlives its timeout on a loaded machine is retried, and counted:
    # the timeout is generous so that the count measures sharing, not the machine's speed.
    config = write_config(tmp_path / "c.yaml", with_idp(platform, oidc_issuer, idp_timeout="5s"))
    async with running_agent(config) as agent:
        await wait_for(
            lambda: (
                sum(1 for r in agent.latest_results().values() if r.kind == "journey" and r.ok) == 2
            )
        )
        await asyncio.sleep(1.0)  # several more runs of both journeys
        journey_runs = [r for r in agent.latest_results().values() if r.kind == "journey"]
        assert all(r.ok for r in journey_runs)
        # Each IdP check run asks for a fresh token (it measures the IdP); the journeys'
        # runs on both sites share one cached token.
        assert agent.scheduler is not None
        tokens = agent.scheduler.ctx.tokens
        assert tokens is not None and getattr(tokens, "requests_made", None) == 1
    records = platform.state("aws-use1").requests
    assert records and all(r.authorization_present for r in records)


async def test_idp_down_is_blamed_on_the_idp_not_the_site(
    platform: Platform, oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    # Tokens live 2 s and are refreshed 1 s early, so journeys need the IdP all the time.
    oidc_issuer.expires_in = 2
    config = write_config(tmp_path / "c.yaml", with_idp(platform, oidc_issuer))
    async with running_agent(config) as agent:
        await wait_for(
            lambda: any(r.kind == "journey" and r.ok for r in agent.latest_results().values())
        )
        oidc_issuer.token_status = 500
        await wait_for(
            lambda: any(
                r.kind == "journey" and not r.ok and r.reason == "auth"
                for r in agent.latest_results().values()
            ),
            timeout=15,
        )
        await asyncio.sleep(1.5)  # well past failure_threshold runs
        view = agent.views.views["aws-use1"]
        assert view.state == "degraded"
        assert view.failures == 0
        assert "IdP corp-idp is failing [http_status]" in view.evidence[0]
        assert "a dependency fault, not the site" in view.evidence[0]
        status, body = await get_json(f"http://127.0.0.1:{agent.port}/v1/verdict")
        assert status == 200
        aws = body["sites"]["aws-use1"]
        assert aws["verdict"] == "degraded"
        assert any(r.startswith("IdP corp-idp is failing") for r in aws["reasons"])
        idps = body["dependencies"]["idps"]
        assert [(i["target"], i["ok"], i["reason"]) for i in idps] == [
            ("corp-idp", False, "http_status")
        ]
        assert CLIENT_SECRET not in str(body)


async def test_site_refusing_tokens_while_idp_is_healthy_is_the_sites_fault(
    platform: Platform, oidc_issuer: OidcIssuer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", with_idp(platform, oidc_issuer))
    platform.set_fault("aws-use1", Fault(kind="fail_step", step="order_submit", status=401))
    async with running_agent(config) as agent:
        await wait_for(lambda: agent.views.views["aws-use1"].state == "down")
        assert "[auth]" in agent.views.views["aws-use1"].evidence[0]


async def test_dns_state_shows_in_the_verdict(
    platform: Platform, dnsmasq_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server: Dnsmasq = dnsmasq_factory({"orders.test": ["127.0.0.11"]})
    data = demo_config_data(platform)
    data["dns"] = [
        {
            "name": "orders.test",
            "interval": "300ms",
            "resolvers": [{"name": "local", "address": "127.0.0.1", "port": server.port}],
            "answers": {"aws-use1": ["127.0.0.11"], "gcp-euw1": ["127.0.0.12"]},
        }
    ]
    config = write_config(tmp_path / "c.yaml", data)

    def reasons(agent: Any, site: str) -> tuple[str, ...]:
        verdict = agent.verdicts.get(site)
        return () if verdict is None else tuple(verdict.reasons)

    # The verdict loop judges a new result within milliseconds, not in the same step: wait
    # for the judgement, then read it through the API.
    async with running_agent(config) as agent:
        aws_line = "DNS: orders.test resolves to aws-use1 (resolver local)"
        await wait_for(lambda: aws_line in reasons(agent, "aws-use1"))
        status, body = await get_json(f"http://127.0.0.1:{agent.port}/v1/verdict")
        assert status == 200
        assert aws_line in body["sites"]["aws-use1"]["reasons"]
        server.write_hosts({"orders.test": ["127.0.0.12"]})
        server.reload()
        await wait_for(
            lambda: any(
                r.startswith("DNS: orders.test should resolve to aws-use1")
                for r in reasons(agent, "aws-use1")
            )
        )
        status, body = await get_json(f"http://127.0.0.1:{agent.port}/v1/verdict")
        assert status == 200
        assert (
            "DNS: orders.test resolves to gcp-euw1 (resolver local)"
            in (body["sites"]["gcp-euw1"]["reasons"])
        )
        assert any(
            r.startswith("DNS: orders.test should resolve to aws-use1")
            for r in body["sites"]["aws-use1"]["reasons"]
        )
