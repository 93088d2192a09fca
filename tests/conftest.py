"""Shared pytest set-up: real-server fixtures are registered here, and no test may skip."""

from __future__ import annotations

from collections.abc import Generator

import pytest

pytest_plugins = [
    "tests.fixtures.platform",
    "tests.fixtures.dnsmasq",
    "tests.fixtures.oidc",
    "tests.fixtures.postgres",
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    # CI must fail, not pass quietly, when a real server is missing: a skip is a failure here.
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped tests are not allowed in this suite: {report.longrepr}"
