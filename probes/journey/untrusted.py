"""What a target sends: parsed and quoted without trusting it.

A response body is parsed as JSON only within a nesting bound (`json_depth_exceeds`), and any
failure to read it or evaluate a JSON path on it is the step's `extraction` failure. What a
failure message quotes of a target is redacted, bounded and made printable (`show`,
`printable`). Values extracted from a target that cannot go into a request fail the step as
`extraction`, naming the variables, never their values. The assertions on a response live here
too.
"""

from __future__ import annotations

import array
import itertools
import json
import re
import reprlib
from collections.abc import Mapping, Sequence
from typing import Any

from failsight.core.redact import REDACTOR
from failsight.core.results import CheckFailure, Reason
from failsight.probes.journey.config import HeaderAssertion, JsonAssertion
from failsight.probes.templating import UnusableVariable, find, render_text, variables_in

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


def show_found(values: Sequence[Any]) -> str:
    return "missing" if not values else show(values[0])


def names_in(template: str) -> list[str]:
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def text_field(template: str, variables: Mapping[str, object], field: str) -> str:
    """A template rendered as text for one field of the request; an object, array or null
    is the step's `extraction` failure, naming the variable and the field."""
    try:
        return render_text(template, variables)
    except UnusableVariable as unusable:
        raise CheckFailure(Reason.EXTRACTION, f"{unusable} and cannot go in {field}") from None


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


def assert_json(check: JsonAssertion, document: Any) -> None:
    found = find_in_response(check.path, document)
    if check.exists is not None:
        if bool(found) != check.exists:
            wanted = "to exist" if check.exists else "to be absent"
            raise CheckFailure(Reason.ASSERTION, f"expected {check.path} {wanted}")
        return
    if not found:
        raise CheckFailure(Reason.ASSERTION, f"{check.path} matched nothing")
    value = found[0]
    if check.one_of is not None:
        if value not in check.one_of:
            raise CheckFailure(
                Reason.ASSERTION,
                f"{check.path} is {show(value)}, expected one of {check.one_of!r}",
            )
    elif check.regex is not None:
        if not isinstance(value, str | int | float) or not re.search(check.regex, str(value)):
            raise CheckFailure(
                Reason.ASSERTION,
                f"{check.path} is {show(value)}, expected to match {check.regex!r}",
            )
    elif value != check.equals:
        raise CheckFailure(
            Reason.ASSERTION, f"{check.path} is {show(value)}, expected {check.equals!r}"
        )


def assert_header(check: HeaderAssertion, headers: Mapping[str, str]) -> None:
    value = headers.get(check.name)
    if check.exists is not None:
        if (value is not None) != check.exists:
            wanted = "present" if check.exists else "absent"
            raise CheckFailure(Reason.ASSERTION, f"expected header {check.name} {wanted}")
        return
    if value is None:
        raise CheckFailure(Reason.ASSERTION, f"header {check.name} is missing")
    if check.equals is not None and value != check.equals:
        raise CheckFailure(
            Reason.ASSERTION, f"header {check.name} is {show(value)}, expected {check.equals!r}"
        )
    if check.regex is not None and not re.search(check.regex, value):
        raise CheckFailure(
            Reason.ASSERTION,
            f"header {check.name} is {show(value)}, expected to match {check.regex!r}",
        )
