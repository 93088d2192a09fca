"""End to end: three agents with every check kind, scraped by a real Prometheus evaluating the
generated rules, routed by a real Alertmanager with the shipped example, into a webhook."""

from __future__ import annotations

import re
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme

from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.rules import render_rules, rules_input
from failsight.agent.runtime import Agent
from tests.fixtures.dnsmasq import Dnsmasq
from tests.fixtures.grafana import DASHBOARDS, expressions
from tests.fixtures.oidc import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcIssuer
from tests.fixtures.platform import three_agents, three_vantage_config, wait_for
from tests.fixtures.postgres import PgPair
from tests.fixtures.prometheus import (
    Prometheus,
    WebhookRecorder,
    alertmanager_example_config,
    start_alertmanager,
    start_prometheus,
)

# Dashboard queries that have no data in this run, and why. Everything else must return data.
NO_DATA_EXPECTED = {
    # No OTLP collector is configured here: only the Prometheus path reports exports.
    "otlp",
}


@pytest.fixture
async def tls_issuer(tmp_path: Path) -> AsyncIterator[tuple[OidcIssuer, Path]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with OidcIssuer(tls=context) as issuer:
        yield issuer, ca_file


def everything(pg_pair: PgPair, issuer: OidcIssuer, ca_file: Path, dns: Dnsmasq) -> dict[str, Any]:
    return {
        "replication": [
            {
                "cluster": "orders-db",
                "rpo": "30s",
                "interval": "500ms",
                "timeout": "500ms",
                "primary": {"site": "aws-use1", "dsn": pg_pair.primary.dsn()},
                "replicas": [{"site": "gcp-euw1", "dsn": pg_pair.replica.dsn()}],
            }
        ],
        "idps": [
            {
                "name": "corp-idp",
                "issuer": issuer.issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "audience": AUDIENCE,
                "interval": "1s",
                "ca_file": str(ca_file),
            }
        ],
        "dns": [
            {
                "name": "orders.test",
                "interval": "1s",
                "resolvers": [{"name": "local", "address": "127.0.0.1", "port": dns.port}],
                "answers": {"aws-use1": ["127.0.0.11"], "gcp-euw1": ["127.0.0.12"]},
            }
        ],
        # The issuer's certificate is also checked automatically (target idp/corp-idp), every
        # 5 minutes; this one runs every second so the test sees it.
        "tls": [
            {
                "name": "issuer",
                "host": "127.0.0.1",
                "port": issuer.port,
                "ca_file": str(ca_file),
                "interval": "1s",
            }
        ],
        "slos": [
            {
                "name": "o2i-availability",
                "journey": "order-to-invoice",
                "kind": "availability",
                "objective": 99.5,
            },
            {
                "name": "o2i-latency",
                "journey": "order-to-invoice",
                "kind": "latency",
                "objective": 99,
                "latency_threshold": "2.5s",
            },
        ],
    }


def fired(name: str) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda result: any(r["metric"].get("alertname") == name for r in result)


async def test_outage_reaches_the_failover_webhook_and_a_partition_never_does(
    platform: Platform,
    pg_pair: PgPair,
    tls_issuer: tuple[OidcIssuer, Path],
    dnsmasq_factory: Callable[..., Dnsmasq],
    tmp_path: Path,
) -> None:
    issuer, ca_file = tls_issuer
    dns = dnsmasq_factory({"orders.test": ["127.0.0.11"]})
    extra = everything(pg_pair, issuer, ca_file, dns)
    # The rules exactly as `failsight rules` makes them for this deployment, with every `for:`
    # cut to 0s: the pipeline is under test here, the waits are promtool's (alerts/tests).
    rules = tmp_path / "rules.yml"
    generated = render_rules(rules_input(three_vantage_config(platform, extra)))
    rules.write_text(re.sub(r"(?m)^(\s+for: )\S+$", r"\g<1>0s", generated))

    async with (
        three_agents(platform, extra) as agents,
        WebhookRecorder() as hooks,
        await start_alertmanager(alertmanager_example_config(hooks.url)) as am,
        await start_prometheus(
            [f"127.0.0.1:{a.port}" for a in agents], [rules], alertmanager_url=am.url
        ) as prom,
    ):
        await wait_for(lambda: all(_all_ok(a) for a in agents), timeout=20)

        # One vantage loses its path to the primary: a ticket, never a failover.
        platform.set_fault("aws-use1", Fault(kind="outage", vantage="azure-weu"))
        await prom.wait_for("ALERTS", fired("FailsightSiteDownFromOneVantage"), timeout=30)
        await hooks.wait_for(
            lambda h: any(
                a["alertname"] == "FailsightSiteDownFromOneVantage"
                for a in h.alert_labels("/tickets")
            ),
            30,
        )
        assert hooks.alert_labels("/failover") == []
        assert not fired("FailsightFailoverRecommended")(await prom.query("ALERTS"))
        platform.recover("aws-use1")
        await prom.wait_for(
            "failsight:site_down_votes:count",
            lambda r: all(v["value"][1] == "0" for v in r),
            timeout=30,
        )

        # The primary goes down for everyone: the failover controller is called.
        platform.set_fault("aws-use1", Fault(kind="outage"))
        await hooks.wait_for(lambda h: bool(h.alert_labels("/failover")), 60)
        assert hooks.alert_labels("/failover")[0] == {
            "alertname": "FailsightFailoverRecommended",
            "site": "aws-use1",
            "failover_target": "gcp-euw1",
            "severity": "critical",
            "failover_trigger": "true",
        }
        assert all(a.refresh_verdicts()["aws-use1"].verdict.value == "failed_over" for a in agents)

        await _every_dashboard_query_returns_data(prom)


def _all_ok(agent: Agent) -> bool:
    latest = agent.latest_results()
    kinds = {r.kind for r in latest.values() if r.ok}
    return {"journey", "replication", "idp", "dns", "tls"} <= kinds


async def _every_dashboard_query_returns_data(prom: Prometheus) -> None:
    empty = []
    for path in DASHBOARDS:
        for title, expr in expressions(path):
            if any(word in expr for word in NO_DATA_EXPECTED):
                continue
            if not await prom.query(expr):
                empty.append(f"{path.stem} / {title}: {expr}")
    assert empty == [], "\n".join(empty)
