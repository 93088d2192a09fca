"""The `journeys:` config: each journey's steps (the request, what its response must be, what
it extracts, how it polls) and cleanup steps, its sites, auth and tenants, and the variables every
run defines before its first step (`BUILTIN_VARIABLES`)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from failsight.core.configtypes import Duration, Interval, Model, Name, Placed, Secret, Timeout
from failsight.probes.templating import JsonPath, json_kind, render_pattern

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


# A number as text: what a journey variable (always text) holds when it is a bound.
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def as_number(value: object) -> int | float | None:
    """A finite number, from a number (never a boolean) or from text that writes one (`3`,
    `-2.5`, `1e3`); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(text := value.strip()):
        try:
            return int(text)
        except ValueError:  # a decimal point or an exponent, or past int()'s digit limit
            pass
        number = float(text)
        return number if math.isfinite(number) else None
    return None


def _bound(value: Any) -> Any:
    """A bound of a comparison: a finite number, or a template whose value must be one (known
    at run time only)."""
    if isinstance(value, str) and "{{" in value:
        return value
    number = as_number(value)
    if number is not None:
        return number
    if isinstance(value, float):
        raise ValueError(f"expected a finite number, not {value}")
    shown = repr(value) if isinstance(value, str) else json_kind(value)
    raise ValueError(f"expected a number or a {{{{variable}}}}, not {shown}")


Bound = Annotated[int | float | str, BeforeValidator(_bound)]
"""A number, or a `{{variable}}` template whose value is a number or numeric text."""


def _pair(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("expected [low, high]")
    return value


def _ordered(value: tuple[Any, Any]) -> tuple[Any, Any]:
    low, high = value
    if not isinstance(low, str) and not isinstance(high, str) and low > high:
        raise ValueError(f"{low} is above {high}: no value is between them")
    return value


Between = Annotated[tuple[Bound, Bound], BeforeValidator(_pair), AfterValidator(_ordered)]

# The comparisons, in the order a message writes them.
ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_ORDER_GROUP = "gt/gte/lt/lte"
# Keys of an assertion or a poll that hold no template.
_NOT_TEMPLATED = frozenset({"path", "exists", "interval", "deadline"})


class Comparisons(Model):
    """Numeric comparisons: any of `gt`, `gte`, `lt`, `lte` together (`gte: 1, lt: 10`), or
    `between: [low, high]` (inclusive). Subclasses add the other groups of checks; exactly one
    group is given."""

    # The groups of checks, as the message refusing two of them lists them.
    GROUPS: ClassVar[tuple[str, ...]] = (_ORDER_GROUP, "between")
    # Keys whose value may be null, so that being given is being written (`equals: null`).
    NULLABLE: ClassVar[frozenset[str]] = frozenset()

    gt: Bound | None = None
    gte: Bound | None = None
    lt: Bound | None = None
    lte: Bound | None = None
    between: Between | None = None

    def given(self) -> list[str]:
        """The groups of checks given, `gt/gte/lt/lte` counting as one."""
        return [
            group
            for group in self.GROUPS
            if (
                any(getattr(self, key) is not None for key in ORDER)
                if group == _ORDER_GROUP
                else getattr(self, group) is not None
                or (group in self.NULLABLE and group in self.model_fields_set)
            )
        ]

    def group(self) -> str:
        """The one group of checks given (validation saw to it)."""
        return self.given()[0]

    def templates(self) -> list[tuple[str, Any]]:
        """Each key of the checks with its value, templates and all (expanded at run time)."""
        found: list[tuple[str, Any]] = []
        for key in type(self).model_fields:
            value = getattr(self, key)
            if key in _NOT_TEMPLATED or (value is None and key not in self.model_fields_set):
                continue
            if isinstance(value, Comparisons):
                value = [v for _, v in value.templates()]
            found.append((key, value))
        return found

    @model_validator(mode="after")
    def _one_group(self) -> Comparisons:
        given = self.given()
        if len(given) != 1:
            got = f" (got {' and '.join(given)})" if given else ""
            raise ValueError(f"give exactly one of {', '.join(self.GROUPS)}{got}")
        for a, b in (("gt", "gte"), ("lt", "lte")):
            if getattr(self, a) is not None and getattr(self, b) is not None:
                raise ValueError(f"give {a} or {b}, not both")
        low_key = "gt" if self.gt is not None else "gte"
        high_key = "lt" if self.lt is not None else "lte"
        low, high = getattr(self, low_key), getattr(self, high_key)
        if low is None or high is None or isinstance(low, str) or isinstance(high, str):
            return self
        strict = low_key == "gt" or high_key == "lt"
        if low > high or (low == high and strict):
            raise ValueError(f"no value is {ORDER[low_key]} {low} and {ORDER[high_key]} {high}")
        return self


class Length(Comparisons):
    """`length`: an exact length (`length: 3`), or comparisons on it (`length: {gte: 1}`)."""

    GROUPS: ClassVar[tuple[str, ...]] = ("equals", _ORDER_GROUP, "between")

    equals: Bound | None = None


def _exact_length(value: Any) -> Any:
    return value if isinstance(value, dict) else {"equals": value}


class Predicate(Comparisons):
    """What the value a JSON path finds in a response must be: exactly one group of checks.

    `equals`, `not_equals` and `one_of` compare as JSON does (a boolean is never a number, 1
    equals 1.0, text never equals a number); the comparisons need a number; `length` measures
    an array, a string or an object; `exists` asks whether the path matches at all."""

    GROUPS: ClassVar[tuple[str, ...]] = (
        "equals",
        "not_equals",
        "one_of",
        "regex",
        "exists",
        _ORDER_GROUP,
        "between",
        "length",
    )
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"equals", "not_equals"})

    equals: Any = None
    not_equals: Any = None
    one_of: list[Any] | None = None
    regex: str | None = None
    exists: bool | None = None
    length: Annotated[Length, BeforeValidator(_exact_length)] | None = None

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            _compile_regex(value)
        return value


class JsonAssertion(Predicate):
    """One assertion on a JSON path of the response body."""

    path: JsonPath


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
    # Compiled with every placeholder an empty group: the shape every run's pattern has.
    try:
        return re.compile(render_pattern(pattern, None))
    except re.error as exc:
        how = " (each {{variable}} in it a group of literal text)" if "{{" in pattern else ""
        raise ValueError(f"invalid regex {pattern!r}{how}: {exc}") from None


class Expect(Model):
    status: StatusRanges = ((200, 299),)
    json_: list[JsonAssertion] = Field(default_factory=list, alias="json")
    headers: list[HeaderAssertion] = Field(default_factory=list)
    max_duration: Duration | None = None


class Poll(Predicate):
    """Repeat the request until the value at `path` equals `until` (or passes the checks a JSON
    assertion takes instead), within `deadline`: asynchronous states."""

    GROUPS: ClassVar[tuple[str, ...]] = ("until", *Predicate.GROUPS)
    NULLABLE: ClassVar[frozenset[str]] = frozenset({"until", *Predicate.NULLABLE})

    path: JsonPath
    until: Any = None
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


class JourneyConfig(Placed):
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
    """Every template of a step's request: path, query values, header values, body."""
    return [
        step.path,
        list(step.query.values()),
        [v.get_secret_value() for v in step.headers.values()],
        step.body,
    ]


def expectation_templates(step: Step) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every value of a step's assertions and poll that is expanded at run time, with its key
    under the step (`expect.json.0.equals`, `poll.until`). JSON paths are never expanded."""
    found: list[tuple[tuple[str | int, ...], Any]] = [
        (("expect", "json", index, key), value)
        for index, check in enumerate(step.expect.json_)
        for key, value in check.templates()
    ]
    found += [
        (("expect", "headers", index, key), value)
        for index, header in enumerate(step.expect.headers)
        for key in ("equals", "regex")
        if (value := getattr(header, key)) is not None
    ]
    if step.poll is not None:
        found += [(("poll", key), value) for key, value in step.poll.templates()]
    return found
