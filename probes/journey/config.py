"""The `journeys:` config: each journey's steps (the request, what its response must be, what
it extracts, how it polls) and cleanup steps, its sites, auth and tenants, and the variables every
run defines before its first step (`BUILTIN_VARIABLES`)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from failsight.core.configtypes import Duration, Interval, Model, Name, Secret, Timeout
from failsight.probes.templating import JsonPath

# Variables every run defines before its first step.
BUILTIN_VARIABLES = frozenset({"run_id", "site", "tenant", "vantage", "journey"})

_STATUS_RANGE = re.compile(r"^\s*([1-5]\d\d)\s*-\s*([1-5]\d\d)\s*$")
_STATUS_CLASS = re.compile(r"^\s*([1-5])xx\s*$", re.IGNORECASE)


def _parse_status(value: Any) -> Any:
    """`200`, `"2xx"`, `"200-299"`, or a list of those, into a tuple of inclusive ranges."""
    items = value if isinstance(value, list | tuple) else [value]
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, list | tuple) and len(item) == 2:  # already parsed (a model dump)
            ranges.extend(_parse_status([f"{item[0]}-{item[1]}"]))
            continue
        if isinstance(item, bool):
            raise ValueError("expected a status code, a range like 200-299, or a class like 2xx")
        if isinstance(item, int):
            if not 100 <= item <= 599:
                raise ValueError(f"{item} is not an HTTP status code")
            ranges.append((item, item))
            continue
        if isinstance(item, str):
            if item.strip().isdigit():
                ranges.extend(_parse_status(int(item)))
                continue
            if m := _STATUS_RANGE.match(item):
                low, high = int(m.group(1)), int(m.group(2))
                if low > high:
                    raise ValueError(f"empty status range {item!r}")
                ranges.append((low, high))
                continue
            if m := _STATUS_CLASS.match(item):
                base = int(m.group(1)) * 100
                ranges.append((base, base + 99))
                continue
        raise ValueError(f"invalid status {item!r}: use 200, 200-299 or 2xx")
    return tuple(ranges)


StatusRanges = Annotated[tuple[tuple[int, int], ...], BeforeValidator(_parse_status)]


class JsonAssertion(Model):
    """One assertion on a JSON path of the response body: exactly one of the checks."""

    path: JsonPath
    equals: Any = None
    one_of: list[Any] | None = None
    regex: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JsonAssertion:
        given = [k for k in ("one_of", "regex", "exists") if getattr(self, k) is not None]
        if "equals" in self.model_fields_set:
            given.append("equals")
        if len(given) != 1:
            raise ValueError("give exactly one of equals, one_of, regex, exists")
        if self.regex is not None:
            _compile_regex(self.regex)
        return self


class HeaderAssertion(Model):
    name: str
    equals: str | None = None
    regex: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HeaderAssertion:
        given = [k for k in ("equals", "regex", "exists") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, regex, exists")
        if self.regex is not None:
            _compile_regex(self.regex)
        return self


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


class Expect(Model):
    status: StatusRanges = ((200, 299),)
    json_: list[JsonAssertion] = Field(default_factory=list, alias="json")
    headers: list[HeaderAssertion] = Field(default_factory=list)
    max_duration: Duration | None = None


class Poll(Model):
    """Repeat the request until `path` equals `until`, within `deadline` (asynchronous states)."""

    path: JsonPath
    until: Any
    interval: Duration = 0.25
    deadline: Duration = 10.0


class Step(Model):
    name: Name
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: str
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, Secret] = Field(default_factory=dict)
    body: Any = Field(default=None, alias="json")
    timeout: Timeout | None = None
    expect: Expect = Field(default_factory=Expect)
    extract: dict[str, JsonPath] = Field(default_factory=dict)
    poll: Poll | None = None

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with / (it is joined to the site's base_url)")
        return value

    @field_validator("extract")
    @classmethod
    def _variable_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"variable name {name!r} must be letters, digits and _")
            if name in BUILTIN_VARIABLES:
                raise ValueError(f"{name!r} is a built-in variable and cannot be extracted")
        return value


class JourneyConfig(Model):
    name: Name
    sites: list[str] | None = None  # default: every configured site
    interval: Interval = 30.0
    # For the steps, and may exceed the interval: a journey is a transaction, and a run still
    # going at its next tick makes that tick a counted skip, never an overlap.
    timeout: Timeout = 20.0
    cleanup_timeout: Timeout = 10.0
    critical: bool = True  # critical journeys drive the site's view
    idp: str | None = None
    bearer_token: Secret | None = None
    tenants: list[Name] = Field(default_factory=lambda: ["synthetic"], min_length=1, max_length=50)
    variables: dict[str, str] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    steps: list[Step] = Field(min_length=1)
    cleanup: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _auth(self) -> JourneyConfig:
        if self.idp is not None and self.bearer_token is not None:
            raise ValueError("give idp or bearer_token, not both")
        return self


def step_templates(step: Step) -> list[Any]:
    """Every template of a step: path, query values, header values, body."""
    return [
        step.path,
        list(step.query.values()),
        [v.get_secret_value() for v in step.headers.values()],
        step.body,
    ]
