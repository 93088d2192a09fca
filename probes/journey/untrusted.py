"""What a target sends: parsed and quoted without trusting it.

A response body is parsed as JSON only within a nesting bound (`json_depth_exceeds`), and any
failure to read it or evaluate a JSON path on it is the step's `extraction` failure. What a
failure message quotes of a target is redacted, bounded and made printable (`show`,
`printable`). Values extracted from a target that cannot go into a request fail the step as
`extraction`, naming the variables, never their values. The assertions on a response live here
too: `evaluate` judges the value a JSON path found (for `expect.json` and `poll`) with typed
JSON comparisons, expanding the run's variables in what is expected.
"""

from __future__ import annotations

import array
import functools
import itertools
import json
import operator
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from failsight.core.redact import REDACTOR
from failsight.core.results import CheckFailure, Reason
from failsight.probes.journey.config import (
    ORDER,
    Comparisons,
    HeaderAssertion,
    JsonAssertion,
    Predicate,
    as_number,
)
from failsight.probes.templating import (
    UnusableVariable,
    find,
    json_kind,
    render,
    render_pattern,
    render_text,
    variables_in,
)

T = TypeVar("T")
R = TypeVar("R")

# The deepest nesting of arrays and objects a response may have. Deeper documents are refused
# before parsing: the JSON parser, repr() and json.dumps() recurse once per level, and no API
# nests this deep. Checked on the raw bytes without recursing (see json_depth_exceeds).
MAX_JSON_DEPTH = 256
# Failure messages quote at most this much of what a target sent (values, headers, bodies).
MAX_QUOTED = 200
MAX_MESSAGE = 1000
# What is quoted is redacted (failsight.core.redact) before it is cut, over this much more than is
# kept: a secret the target echoed must be whole to be found, and a cut one would leak.
REDACT_WINDOW = 4096

# Control characters aiohttp refuses in a header value (tab is allowed).
FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# What the depth check keeps of a JSON text: brackets and the quotes that delimit strings.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
# Opening brackets as the signed byte +1, closing ones as -1.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OPEN, _LEAF = b"\x01", b"\x01\xff"


def json_depth_exceeds(data: bytes, limit: int, *, passes: int = 8) -> bool:
    """Whether a UTF-8 JSON text nests arrays and objects deeper than `limit`.

    Without recursion and without a Python loop over the bytes: everything runs in C
    (bytes.replace, translate, split). Escaped backslashes and quotes are dropped, then all
    but brackets and quotes; what lies between quotes (strings) is dropped; brackets become
    +1/-1. Then up to `passes` rounds remove every innermost `[]`/`{}` pair (one level each);
    a run of opening brackets longer than the levels left answers yes, few enough opening
    brackets answer no; failing both, the running sum is computed (itertools.accumulate).
    Exact for valid JSON; on broken JSON the answer may be off, and the parser refuses it
    anyway. Cost (measured): 1 µs for a small response (the first line answers); for
    megabytes, a fifth to a third of json.loads's own time (2.5 MB of objects: ~20 ms against
    ~120 ms); 5-10 ms for 1 MB of hostile nesting, which json.loads would not survive.
    """
    if data.count(b"[") + data.count(b"{") <= limit:  # the usual case, a small document
        return False
    if b"\\" in data:
        # Left to right, `\\` pairs are exactly the escaped backslashes; after them every
        # `\"` is an escaped quote. Other escapes do not matter here.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:  # strings with brackets in them remain: keep what is outside
        structure = b"".join(structure.split(b'"')[::2])
    steps = structure.translate(_DEPTH_STEPS)
    removed = 0  # levels removed so far: the depth is the depth left plus these
    while True:
        if steps.count(_OPEN) + removed <= limit:
            return False
        if _OPEN * (limit + 1 - removed) in steps:
            return True
        if removed == passes:
            break
        shorter = steps.replace(_LEAF, b"")
        if len(shorter) == len(steps):
            break
        steps, removed = shorter, removed + 1
    return max(itertools.accumulate(array.array("b", steps))) + removed > limit


def parse_json(body: bytes, headers: Mapping[str, str]) -> Any:
    """A response body as JSON; any failure is the step's `extraction` failure, with a short
    message that quotes nothing of the body."""
    kind = printable(headers.get("Content-Type", "no content type"), 80)
    try:
        encoding = json.detect_encoding(body)
        # The depth check reads UTF-8: other encodings JSON allows (UTF-16/32) are converted.
        utf8 = (
            body
            if encoding.startswith("utf-8")
            else body.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
        )
    except (UnicodeError, LookupError):
        raise CheckFailure(
            Reason.EXTRACTION, f"response is not JSON ({kind}, {len(body)} bytes)"
        ) from None
    if json_depth_exceeds(utf8, MAX_JSON_DEPTH):
        raise CheckFailure(
            Reason.EXTRACTION, f"response JSON nests deeper than {MAX_JSON_DEPTH} levels"
        )
    try:
        return json.loads(body)
    except (UnicodeError, json.JSONDecodeError):
        raise CheckFailure(
            Reason.EXTRACTION, f"response is not JSON ({kind}, {len(body)} bytes)"
        ) from None
    except RecursionError:  # only with a stack already deep: the depth is bounded above
        raise CheckFailure(Reason.EXTRACTION, "response JSON nests too deep to be read") from None
    except ValueError:  # e.g. an integer of more than 4300 digits (sys.int_info)
        raise CheckFailure(
            Reason.EXTRACTION, "response JSON has a value that cannot be read (a number too long?)"
        ) from None


def find_in_response(path: str, document: Any) -> list[Any]:
    """`find`, with any failure on the target's document an `extraction` failure: too deep
    for the JSON path engine, or values the path's functions cannot take (`sorted` over
    numbers and strings)."""
    try:
        return find(path, document)
    except RecursionError:
        raise CheckFailure(
            Reason.EXTRACTION, f"{path}: the response JSON nests too deep to evaluate it"
        ) from None
    except Exception as exc:  # jsonpath-ng raises what its functions raise
        raise CheckFailure(
            Reason.EXTRACTION,
            f"{path} cannot be evaluated on the response ({type(exc).__name__})",
        ) from None


def printable(text: str, limit: int) -> str:
    """Text a target sent, made safe to put in a message, a log line or a terminal: every
    non-printable character (C0 and C1 controls, so CR, LF and the ESC of ANSI sequences;
    Unicode format characters such as bidi overrides; line separators) becomes a blank, runs
    of blanks one, and the text is cut to `limit` characters."""
    if len(text) <= limit and text.isprintable():
        return text
    text = text[: limit * 4]
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


_quote = reprlib.Repr()
_quote.maxstring = 80
_quote.maxother = 80
_quote.maxlong = 80
_quote.maxlist = _quote.maxtuple = _quote.maxdict = 5
_quote.maxlevel = 3


def show(value: Any) -> str:
    """A value from a target, for a message: repr (so control characters are escaped),
    bounded in size and depth whatever the value, and every secret of the process redacted
    from its strings before anything is cut (the target may echo our token)."""
    try:
        return printable(_quote.repr(REDACTOR.data(value)), MAX_QUOTED)
    except Exception:  # a value repr() cannot take: say what it is, not what it holds
        return f"<{type(value).__name__}>"


def names_in(template: str) -> list[str]:
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def rendered(
    how: Callable[[T, Mapping[str, object]], R],
    template: T,
    variables: Mapping[str, object],
    where: str,
) -> R:
    """`how(template, variables)` (render, render_text, render_pattern); a variable whose value
    cannot go where the template puts it (an object in a path, null in a regex) is the step's
    `extraction` failure, naming the variable and `where`, never the value."""
    try:
        return how(template, variables)
    except UnusableVariable as unusable:
        raise CheckFailure(Reason.EXTRACTION, f"{unusable} and cannot go in {where}") from None


def text_field(template: str, variables: Mapping[str, object], field: str) -> str:
    """A template rendered as text for one field of the request."""
    return rendered(render_text, template, variables, field)


def unsendable(
    field: str, templates: Any, variables: Mapping[str, object], exc: BaseException
) -> CheckFailure | None:
    """The failure for a request aiohttp or yarl refused: `extraction` naming the variables
    used in `field` when there are any (never their values); None when the request used no
    variable, and the refusal is a bug to report as such."""
    used = sorted(name for name in variables_in(templates) if name in variables)
    if not used:
        return None
    return CheckFailure(
        Reason.EXTRACTION,
        f"{field} cannot be sent with the values of {', '.join(used)} ({type(exc).__name__})",
    )


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why the value a JSON path found failed its checks, as a message says it: what was seen,
    in the present (an assertion) and in the past (a poll that gave up), and what was wanted.
    Both sides are quoted through `show`: an expected value may hold a secret or a value
    extracted from the target."""

    now: str
    then: str
    wanted: str

    def assertion(self, path: str) -> str:
        return f"{path} {self.now}, expected {self.wanted}"

    def poll(self, path: str, deadline: float) -> str:
        return f"poll: {path} {self.then} after {deadline:g}s, wanted {self.wanted}"


def _seen(value: Any, wanted: str, *, typed: bool = False) -> Mismatch:
    shown = show(value) + (f" ({json_kind(value)})" if typed else "")
    return Mismatch(f"is {shown}", f"was {shown}", wanted)


def same(a: Any, b: Any) -> bool:
    """Equality as JSON has it: a boolean is never a number (in Python True == 1), text never
    a number ("5" != 5), 1 equals 1.0; arrays and objects element by element, by this rule."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(v, b[k]) for k, v in a.items())
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a is None and b is None


_ORDERING = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _number(bound: float | str, variables: Mapping[str, object], where: str) -> float:
    """A bound as a number: a literal one, or what its template gives, a number or numeric
    text; anything else is the step's `extraction` failure, naming the variables."""
    if not isinstance(bound, str):
        return bound
    value = rendered(render, bound, variables, where)
    number = as_number(value)
    if number is not None:
        return number
    names = names_in(bound)
    if len(names) > 1:
        raise CheckFailure(
            Reason.EXTRACTION,
            f"{where}: variables {', '.join(names)} make text that is not a number",
        )
    if isinstance(value, str):
        what = "text that is not a number"
    elif isinstance(value, float):
        what = "a number that is not finite"
    else:
        what = f"{json_kind(value)}, not a number"
    raise CheckFailure(Reason.EXTRACTION, f"{where}: variable {''.join(names)} is {what}")


def _comparison(
    checks: Comparisons, group: str, variables: Mapping[str, object], where: str
) -> tuple[str, Callable[[float], bool]]:
    """What a comparison group wants, in words (`>= 3 and < 10`), and its test."""
    if group == "between" and checks.between is not None:
        low, high = (_number(b, variables, f"{where} between") for b in checks.between)
        return f"between {show(low)} and {show(high)}", lambda x: low <= x <= high
    if group == "equals":  # a length's exact value
        exact = _number(getattr(checks, group), variables, f"{where} equals")
        return show(exact), lambda x: x == exact
    bounds = [
        (key, _number(bound, variables, f"{where} {key}"))
        for key in _ORDERING
        if (bound := getattr(checks, key)) is not None
    ]
    return (
        " and ".join(f"{ORDER[key]} {show(n)}" for key, n in bounds),
        lambda x: all(_ORDERING[key](x, n) for key, n in bounds),
    )


def _regex(template: str, variables: Mapping[str, object], where: str) -> re.Pattern[str]:
    """A regex with the run's variables in it as literal text (render_pattern)."""
    pattern = rendered(render_pattern, template, variables, where)
    try:
        return re.compile(pattern)
    except re.error:  # cannot happen: the shape compiled at load, and values are literals
        names = ", ".join(names_in(template))
        raise CheckFailure(
            Reason.EXTRACTION, f"{where} cannot be compiled with the values of {names}"
        ) from None


def evaluate(
    predicate: Predicate, found: Sequence[Any], variables: Mapping[str, object], path: str
) -> Mismatch | None:
    """Whether the first value a JSON path found passes the predicate's checks, with the run's
    variables expanded in what they expect: None, or the Mismatch to report. A template that
    cannot give what its check needs (a bound that is no number) is `extraction`."""
    group = predicate.group()
    if group == "exists":
        if bool(found) == predicate.exists:
            return None
        if found:
            return _seen(found[0], "no match")
        return Mismatch("matched nothing", "was missing", "a match")
    where = f"{path} {group}"
    test: Callable[[Any], Mismatch | None]
    if group in ("equals", "until"):
        expected = rendered(render, getattr(predicate, group), variables, where)
        test = functools.partial(_equal, expected)
        wanted = show(expected)
    elif group == "not_equals":
        expected = rendered(render, predicate.not_equals, variables, where)
        wanted = f"anything but {show(expected)}"
        test = functools.partial(_differs, expected, wanted)
    elif group == "one_of":
        options = rendered(render, predicate.one_of, variables, where)
        wanted = f"one of {show(options)}"
        test = functools.partial(_among, options, wanted)
    elif group == "regex" and predicate.regex is not None:
        pattern = _regex(predicate.regex, variables, where)
        wanted = f"to match {show(pattern.pattern)}"
        test = functools.partial(_matches, pattern, wanted)
    elif group == "length" and predicate.length is not None:
        wanted, fits = _comparison(
            predicate.length, predicate.length.group(), variables, f"{path} length"
        )
        test = functools.partial(_measures, fits, wanted)
    else:
        wanted, fits = _comparison(predicate, group, variables, path)
        test = functools.partial(_compares, fits, wanted)
    if not found:
        return Mismatch("matched nothing", "was missing", wanted)
    return test(found[0])


def _equal(expected: Any, value: Any) -> Mismatch | None:
    if same(value, expected):
        return None
    # Equal to Python, maybe, but not to JSON (`'5'` and 5, True and 1): say what each is.
    typed = json_kind(value) != json_kind(expected)
    wanted = show(expected) + (f" ({json_kind(expected)})" if typed else "")
    return _seen(value, wanted, typed=typed)


def _differs(expected: Any, wanted: str, value: Any) -> Mismatch | None:
    return _seen(value, wanted) if same(value, expected) else None


def _among(options: list[Any], wanted: str, value: Any) -> Mismatch | None:
    return None if any(same(value, option) for option in options) else _seen(value, wanted)


def _matches(pattern: re.Pattern[str], wanted: str, value: Any) -> Mismatch | None:
    """A string, or a number as its JSON text, must match."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            text = str(value)
        except ValueError:  # an int past str()'s digit limit
            return _seen(value, wanted)
    else:
        return _seen(value, wanted, typed=True)
    return None if pattern.search(text) else _seen(value, wanted)


def _measures(fits: Callable[[float], bool], wanted: str, value: Any) -> Mismatch | None:
    """Arrays, strings and objects have a length; nothing else."""
    if not isinstance(value, str | list | dict):
        return _seen(value, "an array, a string or an object", typed=True)
    size = len(value)
    if fits(size):
        return None
    return Mismatch(f"has length {size}", f"had length {size}", wanted)


def _compares(fits: Callable[[float], bool], wanted: str, value: Any) -> Mismatch | None:
    """Only a JSON number is ordered: text that writes one is not."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _seen(value, "a number", typed=True)
    return None if fits(value) else _seen(value, wanted)


def assert_json(check: JsonAssertion, document: Any, variables: Mapping[str, object]) -> None:
    found = find_in_response(check.path, document)
    mismatch = evaluate(check, found, variables, check.path)
    if mismatch is not None:
        raise CheckFailure(Reason.ASSERTION, mismatch.assertion(check.path))


def assert_header(
    check: HeaderAssertion, headers: Mapping[str, str], variables: Mapping[str, object]
) -> None:
    value = headers.get(check.name)
    if check.exists is not None:
        if (value is not None) != check.exists:
            wanted = "present" if check.exists else "absent"
            raise CheckFailure(Reason.ASSERTION, f"expected header {check.name} {wanted}")
        return
    if value is None:
        raise CheckFailure(Reason.ASSERTION, f"header {check.name} is missing")
    if check.equals is not None:
        expected = text_field(check.equals, variables, f"header {check.name} equals")
        if value != expected:
            raise CheckFailure(
                Reason.ASSERTION,
                f"header {check.name} is {show(value)}, expected {show(expected)}",
            )
    if check.regex is not None:
        pattern = _regex(check.regex, variables, f"header {check.name} regex")
        if not pattern.search(value):
            raise CheckFailure(
                Reason.ASSERTION,
                f"header {check.name} is {show(value)}, expected to match {show(pattern.pattern)}",
            )
