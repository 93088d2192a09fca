"""docs/limits.md is generated from the constants the code enforces: it must be current."""

from __future__ import annotations

from pathlib import Path

from failsight.agent.limitsdoc import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


def test_the_limits_page_is_generated_from_the_code() -> None:
    assert DOC.read_text() == render(), (
        "docs/limits.md is stale: run "
        "`.venv/bin/python -m failsight.agent.limitsdoc > docs/limits.md`"
    )
