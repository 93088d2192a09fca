"""Config building blocks shared by agent/config.py and every probe's own config model."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    model_validator,
)

# A duration is a bare number of seconds, or one or more number-and-unit parts, largest unit
# first and each unit at most once, as Prometheus and Go write them: `90s`, `1m30s`, `1h30m`,
# `1d12h`, `1.5s`, `250ms`. Each part is bounded in digits so that no input can make the
# parser or the float conversion slow.
_NUMBER = r"\d{1,12}(?:\.\d{1,9})?"
_BARE = re.compile(rf"^\s*({_NUMBER})\s*$")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# One optional group per unit, in this order; `(?![a-z])` keeps the `m` of `ms` from being read
# as minutes.
_COMPOUND = re.compile(
    r"^\s*"
    + "".join(rf"(?:(?P<{unit}>{_NUMBER})\s*{unit}(?![a-z])\s*)?" for unit in _UNIT_SECONDS)
    + r"$"
)

# The bounds every duration in the config keeps (docs/limits.md lists them). Finite, and
# within what a monitoring agent can mean: a NaN or infinite interval would run a check once
# and never again, or crash the scheduler's arithmetic.
MIN_DURATION = 0.001
MAX_DURATION = 366 * 86400.0
MIN_INTERVAL = 0.1
MAX_INTERVAL = 86400.0
MAX_TIMEOUT = 3600.0


def human(seconds: float) -> str:
    """`0.1` -> `100ms`, `90` -> `90s`, `86400` -> `1d`: durations as the config writes them."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _quoted(value: str) -> str:
    # Long values are cut: an error message is for finding the mistake, not for echoing input.
    return repr(value if len(value) <= 40 else value[:37] + "...")


def parse_duration(value: Any) -> Any:
    """Accept `250ms`, `15s`, `2m`, `1h`, `3d`, compounds such as `1m30s` or `1h30m`, or a
    bare number of seconds; finite only."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 500ms or 2m")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError("expected a duration such as 15s, 500ms or 2m")
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration such as 15s, 500ms or 2m")
    return seconds


def _parse_text(value: str) -> float:
    if bare := _BARE.match(value):
        return float(bare.group(1))
    match = _COMPOUND.match(value) if len(value) <= 100 else None
    if match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"invalid duration {_quoted(value)}: write it like 15s, 500ms, 2m or 1m30s "
            "(units ms, s, m, h, d, largest first)"
        )
    return sum(
        float(number) * _UNIT_SECONDS[unit]
        for unit, number in match.groupdict().items()
        if number is not None
    )


def _bounded(low: float, high: float) -> Callable[[float], float]:
    def check(value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        if value < low:
            raise ValueError(f"must be at least {human(low)}")
        if value > high:
            raise ValueError(f"must be at most {human(high)}")
        return value

    return check


def _name(value: str) -> str:
    # Names end up in metric labels, URLs and HTML: any printable text is allowed (the
    # renderers escape it), but control characters and surrounding blanks are refused.
    if not value or value != value.strip():
        raise ValueError("must be non-empty with no leading or trailing blanks")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    if len(value) > 128:
        raise ValueError("must be at most 128 characters")
    return value


Duration = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_bounded(MIN_DURATION, MAX_DURATION))
]
"""Seconds, written in YAML as `15s`, `500ms`, `2m`, or a number; 1ms to 366d."""

Interval = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_bounded(MIN_INTERVAL, MAX_INTERVAL))
]
"""How often a check runs: 100ms to 1d."""

Timeout = Annotated[
    float, BeforeValidator(parse_duration), AfterValidator(_bounded(MIN_DURATION, MAX_TIMEOUT))
]
"""How long one run (or step) may take: 1ms to 1h, and never more than its check's interval."""

Name = Annotated[str, AfterValidator(_name)]
"""A configured object's name (site, journey, cluster...)."""

Secret = SecretStr
"""A value that may come from `${env:NAME}` or `${file:/path}`; never printed."""


class Model(BaseModel):
    """Base of every config model: unknown keys are errors and loaded config is immutable."""

    # hide_input_in_errors: a refused value may be a resolved secret (a DSN with its password).
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True
    )


class Scheduled(Model):
    """A config with an `interval` and a `timeout`, under Prometheus's rule for scrapes: a
    timeout given explicitly must not exceed the interval (config.py reports it at the key),
    and a default timeout longer than the interval becomes the interval."""

    interval: float
    timeout: float

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Scheduled:
        if self.timeout > self.interval and "timeout" not in self.model_fields_set:
            # Frozen model: set the derived default the way pydantic itself would have.
            object.__setattr__(self, "timeout", self.interval)
        return self

    def timeout_error(self) -> str | None:
        if self.timeout > self.interval:
            return (
                f"{human(self.timeout)} is longer than the interval ({human(self.interval)}): "
                "a run would overlap the next one"
            )
        return None


# Where a check runs in a group of agents (agent.group): on exactly one live member (the
# default, so synthetic traffic does not grow with the number of members), or on every member
# (a check of each member's own surroundings, such as the node's DNS resolver).
Placement = Literal["sharded", "every_member"]


class Placed(Model):
    """A config of a check that a group of agents shares out (`placement`)."""

    placement: Placement = "sharded"
