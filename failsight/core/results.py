"""The immutable record of one check run, shared by every probe and every sink."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Reason(enum.StrEnum):
    """Why a check or step failed: the contract's closed set, used as a metric label."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    DNS = "dns"
    TLS = "tls"
    HTTP_STATUS = "http_status"
    ASSERTION = "assertion"
    EXTRACTION = "extraction"
    AUTH = "auth"
    INTERNAL = "internal"


class CheckFailure(Exception):
    """Raised inside a probe to end a step or check with a classified reason.

    Probes catch it themselves and turn it into a failed Result; it never escapes a probe.
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class Measurement:
    """One gauge sample a probe reports, rendered alike by the Prometheus and OTLP sinks.

    `name` is a key of agent.metrics.CATALOGUE without the `failsight_` prefix; the sinks add
    the prefix and the `vantage` label, so probes never know about telemetry.
    """

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class StepResult:
    """One HTTP step of a journey (or one cleanup step)."""

    name: str
    ok: bool
    duration: float
    reason: Reason | None = None
    message: str = ""
    status: int | None = None
    # HTTP phases in seconds where aiohttp can measure them: dns, connect, send, ttfb, body.
    phases: Mapping[str, float] = field(default_factory=dict)
    attempts: int = 1
    skipped: bool = False
    method: str = ""
    url: str = ""
    # Offset of the step's start from the run's start, in seconds (for spans).
    start_offset: float = 0.0
    # The span id sent to the target in this step's `traceparent` (16 hex digits).
    span_id: str = ""


@dataclass(frozen=True, slots=True)
class Result:
    """One run of one check.

    `check` is unique among configured checks (e.g. `journey/order-to-invoice/aws-use1`);
    `kind` names the probe module; `target` is the configured object the check is about (journey,
    cluster, idp, dns name, tls target); `site` is set for checks that judge a site.
    """

    check: str
    kind: str
    target: str
    ok: bool
    started_at: float  # wall clock, seconds since the epoch
    duration: float  # monotonic, seconds
    run_id: str
    site: str | None = None
    reason: Reason | None = None
    message: str = ""
    trace_id: str = ""  # 32 hex digits; the journey's requests carry it in `traceparent`
    span_id: str = ""  # the run's root span
    critical: bool = False
    steps: tuple[StepResult, ...] = ()
    cleanup: tuple[StepResult, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    # Kind-specific facts for the view, the verdict and the API (JSON-serialisable values only).
    facts: Mapping[str, object] = field(default_factory=dict)
    skipped: bool = False

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok and not s.skipped), None)

    def summary(self) -> dict[str, object]:
        """A JSON-safe summary for logs and the API. Never contains secrets: results hold none."""
        out: dict[str, object] = {
            "check": self.check,
            "kind": self.kind,
            "target": self.target,
            "site": self.site,
            "ok": self.ok,
            "reason": self.reason.value if self.reason else None,
            "message": self.message,
            "run_id": self.run_id,
            "trace_id": self.trace_id,
            "started_at": self.started_at,
            "duration_seconds": round(self.duration, 6),
        }
        if self.steps:
            out["steps"] = [_step_summary(s) for s in self.steps]
        if self.cleanup:
            out["cleanup"] = [_step_summary(s) for s in self.cleanup]
        if self.facts:
            out["facts"] = dict(self.facts)
        return out


def _step_summary(step: StepResult) -> dict[str, object]:
    return {
        "name": step.name,
        "ok": step.ok,
        "skipped": step.skipped,
        "reason": step.reason.value if step.reason else None,
        "message": step.message,
        "status": step.status,
        "duration_seconds": round(step.duration, 6),
        "attempts": step.attempts,
        "phases": {k: round(v, 6) for k, v in step.phases.items()},
    }
