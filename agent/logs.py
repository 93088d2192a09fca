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
        out = _head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_"):
                continue
            out[f"extra.{key}" if key in _RESERVED_FIELDS else key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _json_line(out)


def _head(created: float, level: str, logger: str, msg: str) -> dict[str, object]:
    """The fields every line begins with, in this order: the line's shape is the contract."""
    return {"ts": _rfc3339(created), "level": level.lower(), "logger": logger, "msg": msg}


# What `json.dumps(out, default=str, ensure_ascii=False, separators=(",", ":"))` builds, made
# once: json.dumps builds a new encoder on every call with these arguments (a third of the
# encoding time of a run line). The stdlib encoder, not a faster third-party one: a run line
# costs it about 5 µs (bench/log_line.py) and its output is the contract (`NaN`, `1e+16`).
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))


def _json_line(out: dict[str, object]) -> str:
    # Last, on the whole line: whatever put a secret into a message, an extra field or a
    # traceback (an exception quoting a DSN, a target's echo), it does not reach the log.
    return redact(_ENCODER.encode(out))


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


_run_log = logging.getLogger(RUN_LOGGER)


def log_result(result: Result) -> None:
    """Log one structured line for a run: info when it passed, warning when it failed.

    Nothing is built for a line the level drops. When the line would go to the one handler
    configure_logging installs and nowhere else (the agent's case), it is written straight to
    that handler's stream: the same line JsonFormatter makes of the record, redacted the same
    way, without the stdlib's LogRecord and caller lookup (two thirds of the line's cost).
    Anything else (another handler, a filter, a record factory) takes the stdlib path.
    """
    level = logging.INFO if result.ok or result.skipped else logging.WARNING
    if not _run_log.isEnabledFor(level):
        return
    fields = result_fields(result)
    text = f"{result.check} {fields['outcome']}"
    if result.reason is not None:
        text += f" ({result.reason.value})"
    handler = _sole_json_handler(_run_log, level)
    if handler is None:
        _run_log.log(level, text, extra=fields)
        return
    out = _head(time.time(), logging.getLevelName(level), _run_log.name, text)
    out.update(fields)
    # As Handler.handle and StreamHandler.emit do it: under the handler's lock, one write and
    # a flush, a failure reported by the handler's handleError.
    handler.acquire()
    try:
        handler.stream.write(_json_line(out) + handler.terminator)
        handler.flush()
    except RecursionError:
        raise
    except Exception:
        handler.handleError(_run_log.makeRecord(_run_log.name, level, "", 0, text, (), None))
    finally:
        handler.release()


def _sole_json_handler(logger: logging.Logger, level: int) -> _FailsightHandler | None:
    """The handler a record of `logger` at `level` would reach, when it is the only one, is
    configure_logging's, and nothing could see or change the record on its way (a filter, a
    record factory or a logger class that adds attributes, which JsonFormatter would write)."""
    if (
        logger.filters
        or logger.disabled
        or type(logger) is not logging.Logger
        or logging.getLogRecordFactory() is not logging.LogRecord
    ):
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (
        type(found) is not _FailsightHandler
        or found.filters
        or level < found.level
        or type(found.formatter) is not JsonFormatter
    ):
        return None
    return found


# The formatted second of the last timestamp: lines come many per second, strftime once each.
_last_second: tuple[int, str] = (-1, "")


def _rfc3339(created: float) -> str:
    global _last_second
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    cached = _last_second
    if cached[0] != seconds:
        cached = _last_second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return "%s.%03dZ" % (cached[1], millis)  # noqa: UP031 (a third of the f-string's time)
