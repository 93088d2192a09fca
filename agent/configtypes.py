"""Config building blocks shared by agent/config.py and every probe's own config model."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, SecretStr

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """Accept `250ms`, `15s`, `2m`, `1h`, `3d` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15s, 500ms or 2m")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h or d")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError("expected a duration such as 15s, 500ms or 2m")


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


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


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
"""Seconds, written in YAML as `15s`, `500ms`, `2m`, or a number."""

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
