"""Alert rules: promtool lint and unit tests, the generator, SLO config, Alertmanager routing."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from aiohttp import web
from pydantic import ValidationError

from failsight.agent.cli import main
from failsight.agent.config import load_config
from failsight.agent.metrics import CATALOGUE
from failsight.agent.rules import RulesInput, render_rules, rules_input
from failsight.agent.slo import SloConfig
from failsight.core.telemetry import MetricType
from tests.fixtures.prometheus import (
    WebhookRecorder,
    alertmanager_example_config,
    require_binary,
    start_alertmanager,
    start_prometheus,
)

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "alerts"
SHIPPED_RULES = ALERTS / "failsight.rules.yml"
RULE_FILES = sorted(ALERTS.glob("*.rules.yml"))
TEST_FILES = sorted((ALERTS / "tests").glob("*.test.yml"))
ALERTMANAGER_EXAMPLE = ALERTS / "alertmanager.example.yml"
PLACEHOLDER = "http://127.0.0.1:9095"
# Where runbook links point by default: the alert docs, one heading per alert. A public name.
DOCS = "https://github.com/failsight/failsight/blob/main/docs/alerts.md"

# Series the rules read that agent/metrics.py does not export yet: the split-brain signal.
PROPOSED_METRICS: set[str] = set()


def demo_rules_input() -> RulesInput:
    """The shipped rule file is the generator's output for the demo config."""
    return rules_input(load_config(Path(__file__).parents[2] / "deploy" / "demo.yaml"))


def run(
    binary: str, *args: str | Path, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary(binary), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def alert_rules(text: str) -> list[dict[str, Any]]:
    groups = yaml.safe_load(text)["groups"]
    return [rule for group in groups for rule in group["rules"]]


# --- the shipped files --------------------------------------------------------------------


def test_the_shipped_rule_and_test_files_exist() -> None:
    # An empty glob would parametrize the checks below into nothing.
    assert SHIPPED_RULES in RULE_FILES
    assert {f.name for f in TEST_FILES} >= {
        "failover.test.yml",
        "slo.test.yml",
        "dependencies.test.yml",
    }


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_passes_promtool_lint(rule_file: Path) -> None:
    done = run("promtool", "check", "rules", "--lint=all", "--lint-fatal", rule_file)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    done = run("promtool", "test", "rules", test_file.name, cwd=test_file.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_fires_in_some_promtool_test() -> None:
    fired: set[str] = set()
    for test_file in TEST_FILES:
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    alerts = {r["alert"] for r in alert_rules(SHIPPED_RULES.read_text()) if "alert" in r}
    assert alerts - fired == set()


def test_alertmanager_example_passes_amtool() -> None:
    done = run("amtool", "check-config", ALERTMANAGER_EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alertmanager_example_routes_each_severity_to_its_receiver() -> None:
    """amtool's own routing answer, label set by label set: the controller gets the failover
    trigger (and the pager too), critical pages, warning tickets, info never pages."""
    cases = {
        ("alertname=FailsightFailoverRecommended", "severity=critical", "failover_trigger=true"): (
            "failover-controller,pager"
        ),
        ("alertname=FailsightTotalOutage", "severity=critical"): "pager",
        ("alertname=FailsightStandbyDown", "severity=warning", "site=gcp-euw1"): "tickets",
        ("alertname=FailsightFailbackPending", "severity=info", "site=aws-use1"): "chat",
    }
    for labels, receivers in cases.items():
        done = run(
            "amtool", "config", "routes", "test", "--config.file", ALERTMANAGER_EXAMPLE, *labels
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == receivers, labels


def test_every_alert_has_a_conventional_severity() -> None:
    rules = [r for r in alert_rules(SHIPPED_RULES.read_text()) if "alert" in r]
    severities = {r["alert"]: r["labels"]["severity"] for r in rules}
    assert set(severities.values()) == {"critical", "warning", "info"}
    assert severities["FailsightFailoverRecommended"] == "critical"
    assert severities["FailsightFailbackPending"] == "info"
    # Only the failover trigger reaches the controller's route.
    triggers = [r["alert"] for r in rules if r["labels"].get("failover_trigger") == "true"]
    assert triggers == ["FailsightFailoverRecommended"]


def test_prometheusrule_format_wraps_exactly_the_same_groups(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = str(REPO / "deploy" / "demo.yaml")
    assert main(["rules", "--config", config, "--format", "prometheusrule"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# Generated by `failsight rules --format prometheusrule`")
    obj = yaml.safe_load(text)
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["kind"] == "PrometheusRule"
    assert obj["metadata"]["name"] == "failsight"
    assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "failsight"
    assert obj["spec"] == yaml.safe_load(SHIPPED_RULES.read_text())
    # --label adds to the metadata and changes nothing else.
    assert (
        main(
            [
                "rules",
                "--config",
                config,
                "--format",
                "prometheusrule",
                "--label",
                "release=kube-prometheus-stack",
            ]
        )
        == 0
    )
    labelled = yaml.safe_load(capsys.readouterr().out)
    assert labelled["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert labelled["spec"] == obj["spec"]


def test_prometheusrule_groups_pass_promtool(tmp_path: Path) -> None:
    obj = yaml.safe_load(render_rules(demo_rules_input(), "prometheusrule"))
    extracted = tmp_path / "spec.rules.yml"
    extracted.write_text(yaml.safe_dump(obj["spec"]))
    done = run("promtool", "check", "rules", "--lint=all", "--lint-fatal", extracted)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "release=x"], "--label needs --format prometheusrule"),
        (["--format", "prometheusrule", "--label", "Bad Key=x"], "is not a Kubernetes label name"),
        (["--format", "prometheusrule", "--label", "k=bad value"], "not a Kubernetes label value"),
    ],
)
def test_rules_refuses_labels_kubernetes_would_refuse(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "--config", str(REPO / "deploy" / "demo.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_rules_read_only_catalogued_series() -> None:
    known = set(PROPOSED_METRICS)
    for spec in CATALOGUE.values():
        known.add(spec.prometheus_name)
        if spec.type is MetricType.HISTOGRAM:
            known |= {spec.prometheus_name + s for s in ("_bucket", "_count", "_sum")}
    used = set(re.findall(r"\bfailsight_[a-z_]+", SHIPPED_RULES.read_text()))
    assert used - known == set()


# --- the generator ------------------------------------------------------------------------


def test_render_rules_is_deterministic_and_independent_of_input_order() -> None:
    demo = demo_rules_input()
    shuffled = RulesInput(
        quorum=demo.quorum,
        vantages=tuple(reversed(demo.vantages)),
        sites=tuple(reversed(demo.sites)),
        replication=demo.replication,
        slos=tuple(reversed(demo.slos)),
        journey_sites=demo.journey_sites,
    )
    first = render_rules(demo)
    assert render_rules(demo_rules_input()) == first
    assert render_rules(shuffled) == first


def test_shipped_rules_are_the_generators_output_for_the_demo() -> None:
    assert SHIPPED_RULES.read_text() == render_rules(demo_rules_input())


def test_runbook_urls_point_at_the_alert_docs_by_default() -> None:
    rules = alert_rules(SHIPPED_RULES.read_text())
    urls = {r["annotations"]["runbook_url"] for r in rules if "alert" in r}
    assert urls == {f"{DOCS}#{r['alert'].lower()}" for r in rules if "alert" in r}


def test_runbook_base_option_changes_only_the_runbook_urls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = "https://example.org/runbooks"
    config = str(REPO / "deploy" / "demo.yaml")
    assert main(["rules", "--config", config, "--runbook-base", base]) == 0
    moved = capsys.readouterr().out
    assert main(["rules", "--config", config]) == 0
    default = capsys.readouterr().out
    assert default == SHIPPED_RULES.read_text()
    # Every alert links to the new base, and nothing else changed (not even the layout).
    alerts = [r for r in alert_rules(moved) if "alert" in r]
    assert alerts
    assert all(r["annotations"]["runbook_url"] == f"{base}#{r['alert'].lower()}" for r in alerts)
    assert moved.replace(f"runbook_url: {base}#", f"runbook_url: {DOCS}#") == default
    assert moved.count(f"runbook_url: {base}#") == len(alerts)


def _slo(**fields: Any) -> SloConfig:
    return SloConfig.model_validate({"name": "s", "journey": "j", **fields})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quorum": 4}, "quorum 4 must be between 1 and the number of vantages"),
        ({"quorum": 0}, "quorum 0 must be between 1 and the number of vantages"),
        ({"sites": (("a", "primary"), ("b", "backup"))}, "site b: role 'backup' is not one of"),
        (
            {"replication": (("db", "a", "c", 30.0),)},
            "replication db: primary a and replica site c must be configured sites",
        ),
        (
            {"slos": (_slo(kind="availability", objective=99),), "journey_sites": {}},
            "slo s: journey j runs against no site",
        ),
        (
            {"failover_for": -1.0},
            "failover_for must be a number of seconds, zero or more (got -1.0)",
        ),
        (
            {"failover_for": float("nan")},
            "failover_for must be a number of seconds, zero or more (got nan)",
        ),
        (
            {"runbook_base": "https://example.org/alerts.md#top"},
            "runbook_base must be a URL without '#', braces or spaces",
        ),
        ({"runbook_base": ""}, "runbook_base must be a URL without '#', braces or spaces"),
    ],
)
def test_render_rules_refuses_inconsistent_input(change: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {
        "quorum": 2,
        "vantages": ("a", "b", "c"),
        "sites": (("a", "primary"), ("b", "standby")),
        "replication": (),
        "slos": (),
        "journey_sites": {},
        **change,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        render_rules(RulesInput(**fields))


def _for_of(text: str, alert: str) -> str:
    return str(next(r["for"] for r in alert_rules(text) if r.get("alert") == alert))


@pytest.mark.parametrize(
    ("seconds", "rendered"), [(0.0, "0s"), (90.0, "90s"), (120.0, "2m"), (0.25, "250ms")]
)
def test_failover_for_sets_only_the_recommendations_for(seconds: float, rendered: str) -> None:
    config = load_config(REPO / "deploy" / "demo.yaml")
    text = render_rules(rules_input(config, failover_for=seconds))
    assert _for_of(text, "FailsightFailoverRecommended") == rendered
    # The other alerts keep their own waits.
    assert _for_of(text, "FailsightFailoverUnsafe") == "1m"
    assert _for_of(text, "FailsightTotalOutage") == "1m"


def test_failover_for_defaults_to_zero() -> None:
    # Each view already needed failure_threshold failed runs and the agents gated on quorum and
    # data safety: an extra wait would only delay the controller.
    assert demo_rules_input().failover_for == 0.0
    assert _for_of(render_rules(demo_rules_input()), "FailsightFailoverRecommended") == "0s"


def _alert_names(inp: RulesInput) -> set[str]:
    return {r["alert"] for r in alert_rules(render_rules(inp)) if "alert" in r}


@pytest.mark.parametrize(
    ("sites", "present", "absent"),
    [
        (
            (("a", "primary"), ("b", "standby")),
            {"FailsightFailoverRecommended", "FailsightFailbackPending", "FailsightTotalOutage"},
            set(),
        ),
        # One site: "every site down" is that site down, already a failover or unsafe page.
        (
            (("a", "primary"),),
            {"FailsightFailoverRecommended", "FailsightFailbackPending"},
            {"FailsightTotalOutage", "FailsightStandbyDown"},
        ),
        # No primary: nothing can be failed over, so nothing latches.
        (
            (("a", "standby"), ("b", "standby")),
            {"FailsightTotalOutage", "FailsightSiteFlapping", "FailsightStandbyDown"},
            {
                "FailsightFailoverRecommended",
                "FailsightFailoverUnsafe",
                "FailsightFailbackPending",
            },
        ),
    ],
)
def test_failover_alerts_follow_the_deployments_shape(
    sites: tuple[tuple[str, str], ...], present: set[str], absent: set[str]
) -> None:
    inp = RulesInput(
        quorum=2,
        vantages=("a", "b", "c"),
        sites=sites,
        replication=(),
        slos=(),
        journey_sites={},
    )
    names = _alert_names(inp)
    assert present <= names
    assert absent & names == set()


# Another deployment: three sites, two standbys in priority order, a replica not named after
# its site, four vantages with regex-special names, quorum 3, a latency SLO on a whole-second
# bucket and SLO names that Go templates and PromQL strings must not interpret.
OTHER = RulesInput(
    quorum=3,
    vantages=("v-1", "v.2", "v(3)", "v|4"),
    sites=(("eu-west", "primary"), ("us-east", "standby"), ("ap-south", "standby")),
    replication=(("orders", "eu-west", "us-east", 10.0), ("orders", "eu-west", "pg-ap", 60.0)),
    slos=(
        _slo(
            name="checkout {{fast}}",
            journey="checkout",
            kind="latency",
            objective=99.9,
            window="7d",
            latency_threshold="1s",
        ),
        _slo(name='checkout "ok"', journey="checkout", kind="availability", objective=99),
    ),
    journey_sites=MappingProxyType({"checkout": ("eu-west", "us-east", "ap-south")}),
    replica_sites=MappingProxyType({("orders", "pg-ap"): "ap-south"}),
)
VOTERS = ("v-1", "v.2", "v(3)")


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{text}}}", "values": values}


def _failover_case(
    us_east_lag: str = "5x10", latched: tuple[str, ...] = (), down: tuple[str, ...] = ("eu-west",)
) -> list[dict[str, str]]:
    """Views from VOTERS, replication seen from v-1, and failover latches (to ap-south) held by
    the vantages in `latched`; the others export the unlatched empty target at 0."""
    series = []
    for vantage in VOTERS:
        for site in ("eu-west", "us-east", "ap-south"):
            value = "1" if site in down else "0"
            series.append(
                _series(
                    "failsight_site_view_down", {"vantage": vantage, "site": site}, f"{value}x10"
                )
            )
    for replica, lag in (("us-east", us_east_lag), ("pg-ap", "5x10")):
        pair = {"vantage": "v-1", "cluster": "orders", "replica": replica}
        series.append(
            _series("failsight_replication_lag_seconds", {**pair, "method": "heartbeat"}, lag)
        )
        series.append(_series("failsight_replication_streaming", pair, "1x10"))
    for vantage in OTHER.vantages:
        target, value = ("ap-south", "1") if vantage in latched else ("", "0")
        labels = {"vantage": vantage, "site": "eu-west", "failover_target": target}
        series.append(_series("failsight_site_failed_over", labels, f"{value}x10"))
    return series


def _ready(ranks: dict[str, int]) -> dict[str, Any]:
    return {
        "expr": "failsight:failover_target_ready",
        "eval_time": "5m",
        "exp_samples": [
            {
                "labels": "failsight:failover_target_ready"
                f'{{site="eu-west", failover_target="{target}"}}',
                "value": rank,
            }
            for target, rank in ranks.items()
        ],
    }


def _recommended(target: str, votes: int) -> dict[str, Any]:
    return {
        "exp_labels": {
            "site": "eu-west",
            "failover_target": target,
            "severity": "critical",
            "failover_trigger": "true",
        },
        "exp_annotations": {
            "summary": f"Fail over eu-west to {target}",
            "description": f"{votes} vantages (at least 3, impaired ones not counted) hold"
            f" eu-west failed over to {target}: their verdict found it down from a quorum while"
            " that standby was up, streaming and within the RPO. It stays latched until failback"
            " is released, by an operator or the auto-failback policy: this alert resolving"
            " means failback, never just the primary answering again.",
            "runbook_url": DOCS + "#failsightfailoverrecommended",
        },
    }


def test_generated_rules_for_another_deployment_pass_promtool(tmp_path: Path) -> None:
    rules = tmp_path / "other.rules.yml"
    rules.write_text(render_rules(OTHER))
    done = run("promtool", "check", "rules", "--lint=all", "--lint-fatal", rules)
    assert done.returncode == 0, done.stdout + done.stderr

    histogram = {"vantage": "v.2", "site": "us-east", "journey": "checkout"}
    tests = {
        "rule_files": [rules.name],
        "evaluation_interval": "1m",
        "tests": [
            {
                # The value ranks the ready standbys in config order, for dashboards and for
                # FailsightFailoverUnsafe; the agents pick the target the same way.
                "name": "ready standbys are ranked in config order",
                "interval": "1m",
                "input_series": _failover_case("5x10"),
                "promql_expr_test": [_ready({"us-east": 1, "ap-south": 2})],
            },
            {
                "name": "a standby lagging beyond its RPO is not ready",
                "interval": "1m",
                "input_series": _failover_case("20x10"),
                "promql_expr_test": [_ready({"ap-south": 2})],
            },
            {
                "name": "three latches of four vantages are a quorum of three",
                "interval": "1m",
                "input_series": _failover_case(latched=VOTERS),
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "FailsightFailoverRecommended",
                        "exp_alerts": [_recommended("ap-south", 3)],
                    }
                ],
            },
            {
                "name": "two latches of four vantages are not",
                "interval": "1m",
                "input_series": _failover_case(latched=VOTERS[:2]),
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "FailsightFailoverRecommended"},
                ],
            },
            {
                "name": "three vantages of four seeing all three sites down is a total outage",
                "interval": "1m",
                "input_series": _failover_case(down=("eu-west", "us-east", "ap-south")),
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "FailsightTotalOutage",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "Every site is down from 3 vantages",
                                    "description": "3 vantages (at least 3, impaired ones not"
                                    " counted) see every configured site down (3 of 3). No"
                                    " standby is healthy, so failing over would not help: check"
                                    " the shared dependencies (identity provider, DNS) and the"
                                    " cloud providers.",
                                    "runbook_url": DOCS + "#failsighttotaloutage",
                                },
                            }
                        ],
                    }
                ],
            },
            {
                "name": "two sites of three down is no total outage",
                "interval": "1m",
                "input_series": _failover_case(down=("eu-west", "us-east")),
                "alert_rule_test": [{"eval_time": "5m", "alertname": "FailsightTotalOutage"}],
            },
            {
                # The OpenTelemetry translation prints the 1s bucket as le="1".
                "name": "a latency SLO on a whole-second bucket matches le=1 and le=1.0",
                "interval": "1m",
                "input_series": [
                    _series(
                        "failsight_journey_duration_seconds_bucket",
                        {**histogram, "le": "1"},
                        "0+90x10",
                    ),
                    _series("failsight_journey_duration_seconds_count", histogram, "0+100x10"),
                    _series(
                        "failsight_journey_duration_seconds_bucket",
                        {**histogram, "site": "ap-south", "le": "1.0"},
                        "0+100x10",
                    ),
                    _series(
                        "failsight_journey_duration_seconds_count",
                        {**histogram, "site": "ap-south"},
                        "0+100x10",
                    ),
                ],
                "promql_expr_test": [
                    {
                        "expr": "round(failsight:journey_slow_ratio:rate5m, 0.001)",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": '{site="us-east", journey="checkout", le="1"}',
                                "value": 0.1,
                            },
                            {"labels": '{site="ap-south", journey="checkout", le="1"}', "value": 0},
                        ],
                    },
                    {
                        # The SLO window (7d) gets its own recording for the budget left.
                        "expr": "round(failsight:slo_error_budget_remaining:ratio, 0.001)",
                        "eval_time": "5m",
                        "exp_samples": [
                            {
                                "labels": '{slo="checkout {{fast}}", site="us-east",'
                                ' journey="checkout", le="1"}',
                                "value": -99,
                            },
                            {
                                "labels": '{slo="checkout {{fast}}", site="ap-south",'
                                ' journey="checkout", le="1"}',
                                "value": 1,
                            },
                        ],
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "FailsightJourneyErrorBudgetBurn",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "slo": "checkout {{fast}}",
                                    "site": "us-east",
                                    "journey": "checkout",
                                    "le": "1",
                                    "severity": "critical",
                                },
                                "exp_annotations": {
                                    "summary": "checkout on us-east is burning the error"
                                    " budget of checkout {{fast}}",
                                    "description": "The share of runs slower than 1s is 10%"
                                    " against an objective of 99.9% over 7d (burn windows"
                                    " 5m+1h at 14.4x or 30m+6h at 6x).",
                                    "runbook_url": DOCS + "#failsightjourneyerrorbudgetburn",
                                },
                            }
                        ],
                    }
                ],
            },
        ],
    }
    test_file = tmp_path / "other.test.yml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = run("promtool", "test", "rules", test_file.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# --- SLO config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        (
            {"kind": "latency", "objective": 99, "latency_threshold": "2s"},
            ("latency_threshold",),
            "Value error, 2s is not a bucket of failsight_journey_duration_seconds; use one of"
            " 0.005s, 0.01s, 0.025s, 0.05s, 0.1s, 0.25s, 0.5s, 1s, 2.5s, 5s, 10s, 30s",
        ),
        (
            {"kind": "latency", "objective": 99},
            ("latency_threshold",),
            "Value error, required when kind is latency",
        ),
        (
            {"kind": "availability", "objective": 99, "latency_threshold": "1s"},
            ("latency_threshold",),
            "Value error, only allowed when kind is latency",
        ),
        (
            {"kind": "availability", "objective": 100},
            ("objective",),
            "Value error, must be a percentage greater than 0 and less than 100, e.g. 99.5",
        ),
        (
            {"kind": "availability", "objective": 0},
            ("objective",),
            "Value error, must be a percentage greater than 0 and less than 100, e.g. 99.5",
        ),
        (
            {"kind": "availability", "objective": "nan"},
            ("objective",),
            "Value error, must be a percentage greater than 0 and less than 100, e.g. 99.5",
        ),
        (
            {"kind": "throughput", "objective": 99},
            ("kind",),
            "Input should be 'availability' or 'latency'",
        ),
        (
            {"kind": "availability", "objective": 99, "window": "0s"},
            ("window",),
            "Value error, must be greater than zero",
        ),
        (
            {"kind": "availability", "objective": 99, "target": 99},
            ("target",),
            "Extra inputs are not permitted",
        ),
    ],
)
def test_slo_config_refuses(fields: dict[str, Any], loc: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _slo(**fields)
    assert [(e["loc"], e["msg"]) for e in caught.value.errors()] == [(loc, message)]


def test_slo_config_defaults_and_units() -> None:
    availability = _slo(kind="availability", objective=99.5)
    assert availability.window == 30 * 86400
    assert availability.latency_threshold is None
    assert availability.error_budget == 0.005
    latency = _slo(kind="latency", objective=99, window="28d", latency_threshold="500ms")
    assert (latency.window, latency.latency_threshold, latency.error_budget) == (
        28 * 86400,
        0.5,
        0.01,
    )


# --- Alertmanager and Prometheus, for real ---------------------------------------------------


def _alert(name: str, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, **labels}, "annotations": {"summary": name}}


async def test_alertmanager_example_routes_failover_triggers_and_inhibits_lesser_alerts() -> None:
    async with (
        WebhookRecorder() as hooks,
        await start_alertmanager(alertmanager_example_config(hooks.url)) as am,
    ):
        await am.post_alerts(
            [
                _alert(
                    "FailsightFailoverRecommended",
                    site="aws-use1",
                    failover_target="gcp-euw1",
                    severity="critical",
                    failover_trigger="true",
                ),
                _alert(
                    "FailsightSiteDownFromOneVantage",
                    site="aws-use1",
                    vantage="azure-weu",
                    severity="warning",
                ),
                _alert(
                    "FailsightJourneyErrorBudgetBurn",
                    site="aws-use1",
                    slo="order-to-invoice-availability",
                    journey="order-to-invoice",
                    severity="critical",
                ),
                _alert(
                    "FailsightSiteDownFromOneVantage",
                    site="gcp-euw1",
                    vantage="azure-weu",
                    severity="warning",
                ),
                _alert("FailsightIdPDown", idp="corp-sso", severity="critical"),
            ]
        )

        def delivered(h: WebhookRecorder) -> bool:
            pages = {a["alertname"] for a in h.alert_labels("/pager")}
            return (
                bool(h.alert_labels("/failover"))
                and {"FailsightFailoverRecommended", "FailsightIdPDown"} <= pages
                and bool(h.alert_labels("/tickets"))
            )

        await hooks.wait_for(delivered, timeout=30)

        # Only the failover trigger reaches the controller, with what it needs to act.
        assert hooks.alert_labels("/failover") == [
            {
                "alertname": "FailsightFailoverRecommended",
                "site": "aws-use1",
                "failover_target": "gcp-euw1",
                "severity": "critical",
                "failover_trigger": "true",
            }
        ]
        # The site being failed over has its lesser alerts inhibited; the other site's
        # ticket and the site-less IdP page are untouched.
        inhibited = await am.alerts(site="aws-use1", vantage="azure-weu")
        burn = await am.alerts(alertname="FailsightJourneyErrorBudgetBurn")
        other = await am.alerts(site="gcp-euw1")
        assert [a["status"]["state"] for a in inhibited + burn] == ["suppressed"] * 2
        assert all(a["status"]["inhibitedBy"] for a in inhibited + burn)
        assert [a["status"]["state"] for a in other] == ["active"]
        assert [a["site"] for a in hooks.alert_labels("/tickets")] == ["gcp-euw1"]
        assert "FailsightJourneyErrorBudgetBurn" not in {
            a["alertname"] for a in hooks.alert_labels("/pager")
        }


async def test_alertmanager_example_inhibits_per_site_alerts_during_a_total_outage() -> None:
    async with (
        WebhookRecorder() as hooks,
        await start_alertmanager(alertmanager_example_config(hooks.url)) as am,
    ):
        inhibited = [
            _alert("FailsightFailoverUnsafe", site="aws-use1", severity="critical"),
            _alert(
                "FailsightSiteDownFromOneVantage",
                site="gcp-euw1",
                vantage="azure-weu",
                severity="warning",
            ),
            _alert("FailsightStandbyDown", site="gcp-euw1", severity="warning"),
            _alert(
                "FailsightJourneyErrorBudgetBurn",
                site="gcp-euw1",
                slo="order-to-invoice-availability",
                journey="order-to-invoice",
                severity="critical",
            ),
        ]
        await am.post_alerts(
            [
                _alert("FailsightTotalOutage", severity="critical"),
                *inhibited,
                # The likely cause stays visible.
                _alert("FailsightIdPDown", idp="corp-sso", severity="critical"),
            ]
        )

        def delivered(h: WebhookRecorder) -> bool:
            pages = {a["alertname"] for a in h.alert_labels("/pager")}
            return {"FailsightTotalOutage", "FailsightIdPDown"} <= pages

        await hooks.wait_for(delivered, timeout=30)
        for alert in inhibited:
            held = await am.alerts(alertname=alert["labels"]["alertname"])
            assert [a["status"]["state"] for a in held] == ["suppressed"], alert
            assert held[0]["status"]["inhibitedBy"]
        assert {a["alertname"] for a in hooks.alert_labels("/pager")} == {
            "FailsightTotalOutage",
            "FailsightIdPDown",
        }
        assert hooks.alert_labels("/failover") == []
        assert hooks.alert_labels("/tickets") == []


class Vantages:
    """Loopback /metrics endpoints, one per vantage, serving exposition text a test can edit."""

    def __init__(self, text: dict[str, str]) -> None:
        self.text = text
        self.runners: list[web.AppRunner] = []
        self.targets: list[str] = []

    async def __aenter__(self) -> Vantages:
        for name in self.text:
            app = web.Application()
            app.router.add_get("/metrics", self._handler(name))
            runner = web.AppRunner(app, access_log=None)
            self.runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            self.targets.append(f"{host}:{port}")
        return self

    def _handler(self, name: str) -> Any:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=self.text[name], content_type="text/plain")

        return metrics

    async def __aexit__(self, *exc_info: object) -> None:
        for runner in self.runners:
            await runner.cleanup()


def has_votes(site: str, count: str) -> Callable[[list[dict[str, Any]]], bool]:
    def check(result: list[dict[str, Any]]) -> bool:
        return [(v["metric"]["site"], v["value"][1]) for v in result] == [(site, count)]

    return check


def _exposition(
    vantage: str, down: dict[str, int], impaired: int = 0, failed_over_to: str = ""
) -> str:
    latched = 1 if failed_over_to else 0
    lines = [
        f'failsight_agent_info{{vantage="{vantage}",version="0.1.0"}} 1',
        f'failsight_vantage_impaired{{vantage="{vantage}"}} {impaired}',
        *(
            f'failsight_site_view_down{{vantage="{vantage}",site="{s}"}} {v}'
            for s, v in down.items()
        ),
        f'failsight_site_failed_over{{vantage="{vantage}",site="aws-use1",'
        f'failover_target="{failed_over_to}"}} {latched}',
        f'failsight_replication_lag_seconds{{vantage="{vantage}",cluster="orders-db",'
        'replica="gcp-euw1",method="heartbeat"} 2.5',
        f'failsight_replication_streaming{{vantage="{vantage}",cluster="orders-db",'
        'replica="gcp-euw1"} 1',
    ]
    return "\n".join(lines) + "\n"


async def test_prometheus_fires_the_shipped_rules_on_scraped_vantages_into_alertmanager(
    tmp_path: Path,
) -> None:
    # The shipped rules with every `for:` cut to 0s: the pipeline is under test, not the waits
    # (promtool tests cover those).
    rules = tmp_path / "failsight.rules.yml"
    rules.write_text(re.sub(r"(?m)^(\s+for: )\S+$", r"\g<1>0s", SHIPPED_RULES.read_text()))
    # Two agents have latched the failover of aws-use1; azure-weu still reaches it.
    views = {
        "aws-use1": _exposition(
            "aws-use1", {"aws-use1": 1, "gcp-euw1": 0}, failed_over_to="gcp-euw1"
        ),
        "gcp-euw1": _exposition(
            "gcp-euw1", {"aws-use1": 1, "gcp-euw1": 0}, failed_over_to="gcp-euw1"
        ),
        "azure-weu": _exposition("azure-weu", {"aws-use1": 0, "gcp-euw1": 0}),
    }
    async with (
        Vantages(views) as vantages,
        WebhookRecorder() as hooks,
        await start_alertmanager(alertmanager_example_config(hooks.url)) as am,
        await start_prometheus(vantages.targets, [rules], alertmanager_url=am.url) as prom,
    ):
        # Until every vantage has been scraped before an evaluation, fewer votes are counted.
        await prom.wait_for("failsight:site_down_votes:count", has_votes("aws-use1", "2"))
        await hooks.wait_for(lambda h: bool(h.alert_labels("/failover")), 30)
        assert hooks.alert_labels("/failover")[0] == {
            "alertname": "FailsightFailoverRecommended",
            "site": "aws-use1",
            "failover_target": "gcp-euw1",
            "severity": "critical",
            "failover_trigger": "true",
        }

        # aws-use1's agent now sees everything down and calls itself impaired: its votes (its
        # latch among them) go, the quorum with them, and the recommendation resolves without
        # turning unsafe.
        vantages.text["aws-use1"] = _exposition(
            "aws-use1", {"aws-use1": 1, "gcp-euw1": 1}, impaired=1, failed_over_to="gcp-euw1"
        )
        await prom.wait_for(
            'ALERTS{alertname="FailsightFailoverRecommended"}', lambda result: not result
        )
        await prom.wait_for("failsight:site_down_votes:count", has_votes("aws-use1", "1"))
        assert await prom.query('ALERTS{alertname=~"FailsightFailover.*"}') == []
