"""The immutable record of one check run, shared by every probe and every sink."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def _record(cls: type[_T]) -> type[_T]:
    """A dataclass with slots that the type checker holds frozen (assigning a field is a mypy
    error) but the interpreter does not: a frozen dataclass's __init__ sets each field
    through object.__setattr__, several times the cost of a plain slot store, and a StepResult
    and a Result are made for every step and every run. Nothing writes to a record after it
    is made (sinks on other threads share it); `dataclasses.replace` makes a new one."""
    return dataclass(slots=True)(cls)


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

    `name` is one of the kind's declared metric families (its `Kind.metrics`) without the
    `failsight_` prefix; the sinks add the prefix and the `vantage` label.
    """

    name: str
    labels: Mapping[str, str]
    value: float


@_record
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
    # For the step's span (OpenTelemetry HTTP client conventions): the absolute path as
    # configured with each variable written `{name}` (`url.template`, the same for every run),
    # the User-Agent sent, the HTTP version of the last response ("1.1"), and, when the last
    # request ended in an exception rather than a response, its class (`error.type`).
    url_template: str = ""
    user_agent: str = ""
    http_version: str = ""
    error_type: str = ""


# What a result means to the view and the verdict, as typed objects a probe attaches.
#
# The view and the verdict read these and never a kind's name or its free-form `facts` (which
# are for people: the API and the status page). Each type says one thing a kind may know:
#
# - `DependsOn`: the run relied on another check; a failure for `via` is that check's fault
#   while that check fails (a journey's IdP);
# - `Remark`: a line for a site's verdict reasons (where DNS points, an IdP that fails);
# - `ReplicaSafety`: how safe it is to fail over into a standby (lag against the RPO,
#   streaming, split brain);
# - `VantageReach`: whether this vantage reaches the outside world (the self-check), which
#   tells an impaired vantage from a total outage.


@dataclass(frozen=True, slots=True)
class DependsOn:
    check: str  # the check this run relied on, e.g. the IdP's check name
    label: str  # how to name it to a person: "IdP okta"
    via: Reason  # the failure reason the dependency explains
    effect: str  # what its failure did to this run: "journey checkout cannot authenticate"


@dataclass(frozen=True, slots=True)
class Remark:
    site: str | None  # None: bears on every site
    text: str


@dataclass(frozen=True, slots=True)
class ReplicaSafety:
    cluster: str
    primary_site: str
    replica_site: str
    rpo_seconds: float
    lag_seconds: float | None  # None: not measurable now
    streaming: bool
    split_brain: bool


@dataclass(frozen=True, slots=True)
class VantageReach:
    """Attached by a self-check run: the run's `ok` says whether this vantage reaches out."""


Evidence = DependsOn | Remark | ReplicaSafety | VantageReach


@_record
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
    # Kind-specific facts for people: the API and the status page (JSON-serialisable values
    # only). The view and the verdict read `evidence`, never these.
    facts: Mapping[str, object] = field(default_factory=dict)
    evidence: tuple[Evidence, ...] = ()
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
