"""Grafana dashboards: importable JSON, shared variables, PromQL that a real Prometheus parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from failsight.agent.metrics import CATALOGUE
from failsight.core.telemetry import MetricType
from tests.fixtures.grafana import (
    DASHBOARDS,
    DATASOURCE,
    SHIPPED_RULES,
    expressions,
    load,
    panels,
    targets,
    variables,
)
from tests.fixtures.prometheus import PrometheusError, start_prometheus


def known_series() -> set[str]:
    names = {"ALERTS", "ALERTS_FOR_STATE"}
    for spec in CATALOGUE.values():
        names.add(spec.prometheus_name)
        if spec.type is MetricType.HISTOGRAM:
            names |= {spec.prometheus_name + s for s in ("_bucket", "_count", "_sum")}
    for group in yaml.safe_load(SHIPPED_RULES.read_text())["groups"]:
        names |= {rule["record"] for rule in group["rules"] if "record" in rule}
    return names


def test_the_five_dashboards_exist() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "failsight-overview",
        "failsight-journeys",
        "failsight-replication",
        "failsight-dependencies",
        "failsight-agent",
    }


def test_dashboard_uids_and_titles_are_unique() -> None:
    loaded = [load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in loaded}) == len(loaded)
    assert len({d["title"] for d in loaded}) == len(loaded)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_importable_with_the_shared_variables(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == path.stem
    assert "id" not in dashboard or dashboard["id"] is None  # Grafana assigns ids on import
    found = variables(dashboard)
    datasource = found["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for name, metric in (
        ("vantage", "failsight_agent_info"),
        ("site", "failsight_site_view_down"),
        ("journey", "failsight_journey_runs_total"),
    ):
        var = found[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["query"]["query"] == f"label_values({metric}, {name})"
        assert (var["multi"], var["includeAll"], var["allValue"]) == (True, True, ".*")


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_the_datasource_variable(path: Path) -> None:
    dashboard = load(path)
    queried = [p for p in panels(dashboard) if p["type"] != "row"]
    assert queried
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_series_a_dashboard_reads_exists(path: Path) -> None:
    known = known_series()
    dashboard = load(path)
    exprs = [t["expr"] for _, t in targets(dashboard)]
    exprs += [v["query"]["query"] for v in variables(dashboard).values() if v["type"] == "query"]
    used = {
        name for expr in exprs for name in re.findall(r"\b(?:failsight[_:]|ALERTS)[\w:]*", expr)
    }
    assert used
    assert used - known == set()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
async def test_every_expression_parses_in_prometheus(path: Path) -> None:
    queries = expressions(path)
    assert queries
    errors = []
    async with await start_prometheus(rule_files=[SHIPPED_RULES]) as prom:
        for title, expr in queries:
            try:
                await prom.query(expr)
            except PrometheusError as error:
                errors.append(f"{title}: {error}")
    assert errors == []
