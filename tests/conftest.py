"""Shared pytest set-up: real-server fixtures are registered here, and no test may skip."""

from __future__ import annotations

import gc
import logging
from collections.abc import Generator

import pytest

from failsight.agent.logs import _FailsightHandler

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


@pytest.fixture(autouse=True)
def _heap_thawed() -> Generator[None, None, None]:
    # A running agent freezes the heap (agent/runtime.py settle_heap): in the test process
    # that would keep one test's cyclic garbage out of every later collection.
    yield
    gc.unfreeze()


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Generator[None, None, None]:
    # `agent.cli.main()` called in-process installs its JSON handler on the sys.stdout of the
    # moment, which under capsys is closed when the test ends: every later log line would
    # then print a "--- Logging error ---" traceback into other tests' output.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers and isinstance(handler, _FailsightHandler):
            root.removeHandler(handler)
    root.setLevel(level)
