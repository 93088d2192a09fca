"""The per-run JSON line: the direct path `log_result` takes when configure_logging's handler is
the only one writes what the stdlib path writes, byte for byte, and redacts as it does."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Iterator
from unittest import mock

import pytest

from failsight.agent import logs
from failsight.agent.logs import RUN_LOGGER, configure_logging, log_result
from failsight.core.redact import REDACTED, REDACTOR
from failsight.core.results import Reason, Result, StepResult

NOW = 1764644000.1239


def result(*, ok: bool, detail: str = "", target: str = "order-to-invoice") -> Result:
    return Result(
        check="journey/order-to-invoice/aws-use1",
        kind="journey",
        target=target,
        ok=ok,
        started_at=NOW - 1,
        duration=0.12345678,
        run_id="0123456789abcdef",
        site="aws-use1",
        reason=None if ok else Reason.HTTP_STATUS,
        message=detail,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        steps=(
            StepResult(name="submit", ok=True, duration=0.1),
            StepResult(name="allocate", ok=ok, duration=0.02),
        ),
    )


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The buffer `alone` sends the lines to; the clock stopped."""
    monkeypatch.setattr(time, "time", lambda: NOW)
    return io.StringIO()


@contextlib.contextmanager
def alone(buffer: io.StringIO, level: str = "info") -> Iterator[None]:
    """configure_logging's handler alone on the root logger, as in `failsight run`, writing to
    `buffer`: pytest's capture handlers and stdout (both set for each test phase) set aside."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers = []
    try:
        with mock.patch("sys.stdout", buffer):
            configure_logging(level, stdout=True)
        yield
    finally:
        root.handlers = saved


def lines_both_ways(buffer: io.StringIO, results: list[Result]) -> tuple[str, str]:
    """What the direct path wrote, then what the stdlib path writes for the same results (a
    filter on the handler, even one that passes everything, sends lines the stdlib way)."""
    with alone(buffer):
        handler = logging.getLogger().handlers[0]
        assert logs._sole_json_handler(logging.getLogger(RUN_LOGGER), logging.INFO) is handler
        for r in results:
            log_result(r)
        direct = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        handler.addFilter(lambda record: True)
        assert logs._sole_json_handler(logging.getLogger(RUN_LOGGER), logging.INFO) is None
        for r in results:
            log_result(r)
    return direct, buffer.getvalue()


def test_the_direct_line_is_the_stdlib_line(stdout: io.StringIO) -> None:
    results = [
        result(ok=True),
        result(ok=False, detail='step allocate: expected 200, got 503: "ünïcode\\ \t\x00 ✓"'),
    ]
    direct, stdlib = lines_both_ways(stdout, results)
    assert direct == stdlib
    first, second = (json.loads(line) for line in direct.splitlines())
    assert list(first) == [
        "ts",
        "level",
        "logger",
        "msg",
        "check",
        "kind",
        "site",
        "target",
        "run_id",
        "trace_id",
        "ok",
        "outcome",
        "reason",
        "duration_seconds",
        "failed_step",
        "detail",
    ]
    assert first["ts"] == "2025-12-02T02:53:20.123Z"
    assert (first["level"], first["outcome"], first["detail"]) == ("info", "success", None)
    assert (second["level"], second["failed_step"], second["reason"]) == (
        "warning",
        "allocate",
        "http_status",
    )
    assert second["detail"] == results[1].message


@pytest.mark.parametrize("secret", ["s3cret-token-value", 'pässwörd"with-quote'])
def test_a_secret_in_any_field_does_not_reach_the_line(stdout: io.StringIO, secret: str) -> None:
    # The second secret has a character JSON escapes and one the line leaves as it is: neither
    # the raw value nor its ASCII-escaped JSON form is what the line holds.
    REDACTOR.add(secret)
    try:
        results = [
            result(ok=False, detail=f"the target echoed {secret} back"),
            result(ok=True, target=f"order-{secret}"),
        ]
        direct, stdlib = lines_both_ways(stdout, results)
    finally:
        REDACTOR.clear()
    assert direct == stdlib
    assert secret not in direct
    assert json.dumps(secret, ensure_ascii=False)[1:-1] not in direct
    assert json.dumps(secret)[1:-1] not in direct
    first, second = (json.loads(line) for line in direct.splitlines())
    assert first["detail"] == f"the target echoed {REDACTED} back"
    assert second["target"] == f"order-{REDACTED}"


def test_a_line_the_level_drops_is_not_built(
    stdout: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_called(r: Result) -> dict[str, str | float | bool | None]:
        raise AssertionError("fields built for a line the level drops")

    monkeypatch.setattr(logs, "result_fields", not_called)
    with alone(stdout, "warning"):
        log_result(result(ok=True))
    assert stdout.getvalue() == ""


def test_another_handler_gets_the_line_the_stdlib_way(stdout: io.StringIO) -> None:
    other = io.StringIO()
    handler = logging.StreamHandler(other)
    run_log = logging.getLogger(RUN_LOGGER)
    run_log.addHandler(handler)
    try:
        with alone(stdout):
            assert logs._sole_json_handler(run_log, logging.INFO) is None
            log_result(result(ok=True))
    finally:
        run_log.removeHandler(handler)
    assert json.loads(stdout.getvalue())["outcome"] == "success"
    assert other.getvalue() == "journey/order-to-invoice/aws-use1 success\n"
