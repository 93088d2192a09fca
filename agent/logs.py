"""Structured JSON logging: the formatter, its set-up, and the one line logged per check run."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

from failsight.core.configtypes import Model
from failsight.core.redact import redact
from failsight.core.results import Result

RUN_LOGGER = "failsight.run"

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Every attribute a stdlib LogRecord has of its own; anything else on a record came from
# `extra=` and is written out as a field of the JSON object.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_RESERVED_FIELDS = frozenset({"ts", "level", "logger", "msg", "exc", "stack"})


class LogsConfig(Model):
    """`telemetry.logs`: where the agent's logs and its per-run lines go."""

    stdout: bool = True  # JSON lines on stdout; false sends them to stderr instead
    otlp: bool = True  # also export one log record per run to collectors that take `logs`
    level: Literal["debug", "info", "warning", "error"] = "info"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, then the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            out[f"extra.{key}" if key in _RESERVED_FIELDS else key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))
        # Last, on the whole line: whatever put a secret into a message, an extra field or a
        # traceback (an exception quoting a DSN, a target's echo), it does not reach the log.
        return redact(line)


class _FailsightHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so a second call replaces it."""


def configure_logging(level: str, stdout: bool) -> None:
    """Send every log record, as JSON lines, to stdout (or stderr when `stdout` is false).

    Idempotent: a reload may call it again with a new level; the previous handler is replaced.
    """
    try:
        levelno = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}") from None
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _FailsightHandler)]:
        root.removeHandler(handler)
    handler = _FailsightHandler(sys.stdout if stdout else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(levelno)


def result_fields(result: Result) -> dict[str, str | float | bool | None]:
    """The fields that describe one run in logs (stdout and OTLP): ids, outcome, no secrets.

    Results hold no secrets by contract; only the fields below are taken from them, never
    facts, headers or bodies.
    """
    failed = result.failed_step
    outcome = "skipped" if result.skipped else "success" if result.ok else "failure"
    return {
        "check": result.check,
        "kind": result.kind,
        "site": result.site,
        "target": result.target,
        "run_id": result.run_id,
        "trace_id": result.trace_id or None,
        "ok": result.ok,
        "outcome": outcome,
        "reason": result.reason.value if result.reason else None,
        "duration_seconds": round(result.duration, 6),
        "failed_step": failed.name if failed is not None else None,
        "detail": result.message or None,
    }


def log_result(result: Result) -> None:
    """Log one structured line for a run: info when it passed, warning when it failed."""
    fields = result_fields(result)
    level = logging.INFO if result.ok or result.skipped else logging.WARNING
    text = f"{result.check} {fields['outcome']}"
    if result.reason is not None:
        text += f" ({result.reason.value})"
    logging.getLogger(RUN_LOGGER).log(level, text, extra=fields)


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
