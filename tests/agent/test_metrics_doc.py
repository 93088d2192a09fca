"""docs/metrics.md is generated from the metric catalogue and the failure reasons: it must be
current."""

from __future__ import annotations

from pathlib import Path

from failsight.agent.metrics import CATALOGUE
from failsight.agent.metricsdoc import NOTES, REASONS, render
from failsight.core.results import Reason

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def test_the_metrics_page_is_generated_from_the_code() -> None:
    assert DOC.read_text() == render(), (
        "docs/metrics.md is stale: run "
        "`.venv/bin/python -m failsight.agent.metricsdoc > docs/metrics.md`"
    )


def test_every_metric_has_a_row_and_every_note_a_metric() -> None:
    page = render()
    for spec in CATALOGUE.values():
        assert f"| `{spec.prometheus_name}` |" in page
    assert set(NOTES) <= {spec.prometheus_name for spec in CATALOGUE.values()}


def test_every_failure_reason_is_described() -> None:
    assert set(REASONS) == {reason.value for reason in Reason}
