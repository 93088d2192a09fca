"""The wire form of a check `Result` that the members of a group exchange (in their shards,
`GET /v1/view?scope=member`): a member reads the latest results of the checks another member
runs (replication safety, the IdP/DNS/TLS dependencies, the self-check) as if it had run them.

What travels is what the readers of another member's results need: the result's identity, its
outcome, its time, its typed `evidence` (what the view and the verdict read) and its `facts`
(what the verdict's `dependencies` and the status page show). Steps, cleanup steps, measurements
and the root span id stay with the member that ran the check: its own /metrics, OTLP and
/v1/results carry them, and no reader of another member's result looks at them.

The receiving side (`result_from_json`) reads another agent's bytes, so it trusts nothing: a
value that makes the result meaningless refuses it with a one-line ValueError, and everything
else is bounded (strings cut, evidence and facts capped) to what a real result holds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from failsight.agent.view import _shown, _time
from failsight.core.redact import excerpt
from failsight.core.results import (
    DependsOn,
    Evidence,
    Reason,
    Remark,
    ReplicaSafety,
    Result,
    VantageReach,
)

# Times and durations are within 0..MAX_SECONDS (the year 5138), as the view's `_time` says.
MAX_SECONDS = 10**11
# Every string a result carries is cut to this many characters (as `excerpt` cuts: "..." added).
MAX_CHARS = 500
# Evidence items read per result: a real check attaches a handful (a replication check one per
# replica); the rest of a longer list is dropped unread.
MAX_EVIDENCE = 32
# `facts` are nested JSON for people: kept to this depth (a replication result's facts nest
# four deep) and this many values in all (a cluster with ten replicas uses about 200); a deeper
# value becomes null, values beyond the budget are dropped.
MAX_FACTS_DEPTH = 6
MAX_FACTS_VALUES = 1024
# An integer in facts beyond what a JSON double holds exactly is no real fact: it becomes null.
MAX_FACT_INT = 2**53

# The `type` tag of each kind of evidence on the wire.
_DEPENDS_ON = "depends_on"
_REMARK = "remark"
_REPLICA_SAFETY = "replica_safety"
_VANTAGE_REACH = "vantage_reach"

_REASONS = frozenset(r.value for r in Reason)


def result_to_json(result: Result) -> dict[str, object]:
    """The wire form of `result` (JSON-able: `json.dumps` takes it as it is).

    `result_from_json` reads it back into an equal Result but for what is not sent: steps,
    cleanup steps, measurements and the root span id (empty in the rebuilt result). So a
    rebuilt result's `summary()` (/v1/results, the status page) shows no steps, and the
    view's `describe_failure` of it names no failed step (its message still does: a journey's
    message is `step NAME: ...`).
    """
    return {
        "check": result.check,
        "kind": result.kind,
        "target": result.target,
        "site": result.site,
        "ok": result.ok,
        "reason": result.reason.value if result.reason is not None else None,
        "message": result.message,
        "started_at": result.started_at,
        "duration": result.duration,
        "run_id": result.run_id,
        "trace_id": result.trace_id,
        "critical": result.critical,
        "skipped": result.skipped,
        "facts": dict(result.facts),
        "evidence": [_evidence_to_json(e) for e in result.evidence],
    }


def _evidence_to_json(evidence: Evidence) -> dict[str, object]:
    if isinstance(evidence, DependsOn):
        return {
            "type": _DEPENDS_ON,
            "check": evidence.check,
            "label": evidence.label,
            "via": evidence.via.value,
            "effect": evidence.effect,
        }
    if isinstance(evidence, Remark):
        return {"type": _REMARK, "site": evidence.site, "text": evidence.text}
    if isinstance(evidence, ReplicaSafety):
        return {
            "type": _REPLICA_SAFETY,
            "cluster": evidence.cluster,
            "primary_site": evidence.primary_site,
            "replica_site": evidence.replica_site,
            "rpo_seconds": evidence.rpo_seconds,
            "lag_seconds": evidence.lag_seconds,
            "streaming": evidence.streaming,
            "split_brain": evidence.split_brain,
        }
    return {"type": _VANTAGE_REACH}


def result_from_json(data: object) -> Result:
    """A Result from its wire form as another agent sent it; ValueError if it is not one.

    Refused (one short line, quoting at most 64 characters of the input): not an object; a
    missing or mistyped field (`ok`, `critical`, `skipped` must be JSON booleans, times JSON
    numbers); a start time or duration that is not finite or not within 0..1e11 seconds; a
    `reason` (or an evidence's `via`) outside the closed set of reasons; a malformed
    evidence item of a known type. Bounded, not refused: every string is cut to MAX_CHARS
    (unprintable characters shown as spaces, secrets this process holds redacted), at most
    MAX_EVIDENCE evidence items are read, an evidence item of an unknown `type` (a newer
    agent's) is skipped, and `facts` are cut to MAX_FACTS_DEPTH and MAX_FACTS_VALUES.
    Unknown fields are ignored. Fields not sent (see `result_to_json`) are left empty.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"result is {_shown(data)}, not a JSON object")
    check = _text(data, "check")
    if not check:
        raise ValueError("result has an empty check name")
    started_at = _seconds(data.get("started_at"), "started_at")
    duration = _seconds(data.get("duration"), "duration")
    return Result(
        check=check,
        kind=_text(data, "kind"),
        target=_text(data, "target"),
        site=_optional_text(data, "site"),
        ok=_flag(data, "ok", required=True),
        reason=None if data.get("reason") is None else _reason(data.get("reason"), "reason"),
        message=_text(data, "message", default=""),
        started_at=started_at,
        duration=duration,
        run_id=_text(data, "run_id"),
        trace_id=_text(data, "trace_id", default=""),
        critical=_flag(data, "critical"),
        skipped=_flag(data, "skipped"),
        facts=_facts(data.get("facts")),
        evidence=_evidence(data.get("evidence")),
    )


def _text(data: Mapping[object, object], key: str, *, default: str | None = None) -> str:
    """A string field, cut; ValueError if absent (and required) or not a string."""
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} is {_shown(value)}, not a string")
    return _cut(value)


def _optional_text(data: Mapping[object, object], key: str) -> str | None:
    value = data.get(key)
    return None if value is None else _text(data, key)


def _cut(value: str) -> str:
    return excerpt(value, MAX_CHARS, unprintable=" ")


def _flag(data: Mapping[object, object], key: str, *, required: bool = False) -> bool:
    """A JSON boolean: never 0/1 or "true", which would turn a typo into a verdict input."""
    value = data.get(key, None if required else False)
    if not isinstance(value, bool):
        raise ValueError(f"{key} is {_shown(value)}, not a boolean")
    return value


def _reason(value: object, key: str) -> Reason:
    if not isinstance(value, str) or value not in _REASONS:
        raise ValueError(f"{key} is {_shown(value)}, not a known failure reason")
    return Reason(value)


def _seconds(value: object, key: str) -> float:
    """A time or a duration: a JSON number (not a boolean), finite, within 0..1e11 seconds
    (as the view's `_time` bounds it)."""
    # An integer of hundreds of digits (valid JSON) makes `_time`'s math.isfinite raise
    # OverflowError: such a number is out of range, whatever its size, so it is refused first.
    huge = isinstance(value, int) and not 0 <= value < MAX_SECONDS
    seconds = None if huge else _time(value)
    if seconds is None:
        raise ValueError(f"{key} is {_shown(value)}, not a number of seconds")
    return seconds


def _evidence(value: object) -> tuple[Evidence, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"evidence is {_shown(value)}, not a list")
    out: list[Evidence] = []
    for item in itertools.islice(value, MAX_EVIDENCE):
        if not isinstance(item, Mapping):
            raise ValueError(f"an evidence item is {_shown(item)}, not a JSON object")
        evidence = _evidence_item(item)
        if evidence is not None:
            out.append(evidence)
    return tuple(out)


def _evidence_item(item: Mapping[object, object]) -> Evidence | None:
    """One evidence item; None for a type this agent does not know (a newer agent's)."""
    kind = item.get("type")
    if kind == _DEPENDS_ON:
        return DependsOn(
            check=_text(item, "check"),
            label=_text(item, "label"),
            via=_reason(item.get("via"), "via"),
            effect=_text(item, "effect"),
        )
    if kind == _REMARK:
        return Remark(site=_optional_text(item, "site"), text=_text(item, "text"))
    if kind == _REPLICA_SAFETY:
        lag = item.get("lag_seconds")
        return ReplicaSafety(
            cluster=_text(item, "cluster"),
            primary_site=_text(item, "primary_site"),
            replica_site=_text(item, "replica_site"),
            rpo_seconds=_seconds(item.get("rpo_seconds"), "rpo_seconds"),
            lag_seconds=None if lag is None else _seconds(lag, "lag_seconds"),
            streaming=_flag(item, "streaming", required=True),
            split_brain=_flag(item, "split_brain", required=True),
        )
    if kind == _VANTAGE_REACH:
        return VantageReach()
    return None


def _facts(value: object) -> dict[str, object]:
    """The result's facts: a JSON object, bounded in depth, size and string length."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"facts is {_shown(value)}, not a JSON object")
    return _fields(value, 1, _Budget())


class _Budget:
    """How many more values of the facts may be read: every value read (or skipped) spends
    one, so a list of a million items costs MAX_FACTS_VALUES steps, not a million."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_FACTS_VALUES


def _fact(value: object, depth: int, budget: _Budget) -> object:
    """One JSON value of the facts, `depth` containers down."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if -MAX_FACT_INT < value < MAX_FACT_INT else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _cut(value)
    if depth >= MAX_FACTS_DEPTH:
        return None
    if isinstance(value, list | tuple):
        items: list[object] = []
        for item in value:
            if budget.left <= 0:
                break
            budget.left -= 1
            items.append(_fact(item, depth + 1, budget))
        return items
    if isinstance(value, Mapping):
        return _fields(value, depth + 1, budget)
    return None  # not a JSON value: nothing a person could be shown


def _fields(value: Mapping[object, object], depth: int, budget: _Budget) -> dict[str, object]:
    fields: dict[str, object] = {}
    for key, item in value.items():
        if budget.left <= 0:
            break
        budget.left -= 1
        if isinstance(key, str):
            fields[_cut(key)] = _fact(item, depth, budget)
    return fields
