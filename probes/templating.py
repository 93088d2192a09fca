"""`{{var}}` substitution (closed: names only, never expressions) into values, text and regular
expressions, and compiled JSON paths (never templated)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any

from jsonpath_ng import JSONPath
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as _parse_jsonpath
from pydantic import AfterValidator

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ONLY_VAR = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")
_BRACES = re.compile(r"\{\{(.*?)\}\}")


class MissingVariable(KeyError):
    """A template names a variable that has no value in this run."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class UnusableVariable(ValueError):
    """A variable's value cannot be put where the template puts it as text (an object, an
    array or null in a path, a query value, a header, or inside a longer string).

    The message names the variable and the kind of value, never the value itself: values are
    extracted from a target's responses and may be anything.
    """

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(f"variable {name} is {kind}, not text")
        self.name = name
        self.kind = kind


def variables_in(value: Any) -> set[str]:
    """Every variable a template value (string, list or mapping, nested) refers to."""
    if isinstance(value, str):
        return set(_VAR.findall(value))
    if isinstance(value, Mapping):
        return set().union(*(variables_in(k) | variables_in(v) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return set().union(*(variables_in(v) for v in value))
    return set()


def malformed_placeholders(value: Any) -> list[str]:
    """Placeholders that look like templates but are not a bare variable name, e.g. `{{a.b}}`."""
    if isinstance(value, str):
        return [m for m in _BRACES.findall(value) if not _VAR.fullmatch("{{" + m + "}}")]
    if isinstance(value, Mapping):
        return [
            p
            for k, v in value.items()
            for p in malformed_placeholders(k) + malformed_placeholders(v)
        ]
    if isinstance(value, list | tuple):
        return [p for v in value for p in malformed_placeholders(v)]
    return []


def render(value: Any, variables: Mapping[str, object]) -> Any:
    """Substitute variables into a template value.

    A string that is exactly one placeholder takes the variable's own value (so an extracted
    number stays a number in a JSON body); anywhere else the value is inserted as text, and so
    are mapping keys (JSON object keys are strings). Raises MissingVariable, or
    UnusableVariable for an object, array or null inserted as text.
    """
    if isinstance(value, str):
        whole = _ONLY_VAR.match(value)
        if whole:
            return _lookup(variables, whole.group(1))
        if "{{" not in value:
            return value
        return render_text(value, variables)
    if isinstance(value, Mapping):
        return {
            render_text(k, variables) if isinstance(k, str) else k: render(v, variables)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [render(v, variables) for v in value]
    return value


def render_text(value: str, variables: Mapping[str, object]) -> str:
    """Like render, but always text (URLs, headers, query values).

    Strings, numbers and booleans (as `true`/`false`) are inserted as text; an object, an array
    or null raises UnusableVariable naming the variable (a dict in a URL path is a broken
    request, not `{'a': 1}`).
    """
    if "{{" not in value:
        return value
    return _VAR.sub(lambda m: _as_text(m.group(1), _lookup(variables, m.group(1))), value)


def render_pattern(pattern: str, variables: Mapping[str, object] | None) -> str:
    """A regular expression with each variable's text (as render_text makes it) inserted as a
    literal in a group of its own, `(?:` re.escape(text) `)`: a value extracted from a target can
    never change the pattern, and a quantifier after a placeholder applies to the whole value.

    With `variables` None every placeholder becomes the empty group: the pattern's shape, which
    validation compiles at load (a placeholder after a backslash does not compile).
    """
    if "{{" not in pattern:
        return pattern
    if variables is None:
        return _VAR.sub("(?:)", pattern)
    return _VAR.sub(
        lambda m: "(?:" + re.escape(_as_text(m.group(1), _lookup(variables, m.group(1)))) + ")",
        pattern,
    )


def json_kind(value: object) -> str:
    """What a (JSON) value is, for a message that must not quote it: `a string`, `a number`,
    `a boolean`, `null`, `an object`, `an array`."""
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return f"a {type(value).__name__}"


def _lookup(variables: Mapping[str, object], name: str) -> object:
    try:
        return variables[name]
    except KeyError:
        raise MissingVariable(name) from None


def _as_text(name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        try:
            return str(value)
        except ValueError:  # an int past Python's digit limit for str()
            raise UnusableVariable(name, "a number too long to write out") from None
    raise UnusableVariable(name, json_kind(value))


@functools.lru_cache(maxsize=1024)
def compile_jsonpath(expression: str) -> JSONPath:
    """Compile (once) a JSONPath with jsonpath-ng's extended grammar (filters, arithmetic)."""
    return _parse_jsonpath(expression)


def find(expression: str, document: Any) -> list[Any]:
    """Every value the path matches in the document, in document order."""
    return [match.value for match in compile_jsonpath(expression).find(document)]


def _valid_jsonpath(expression: str) -> str:
    if "{{" in expression:
        # A JSON path is fixed: expanding values from a target into it would let a response
        # choose what the next assertion or extraction reads.
        raise ValueError(
            f"JSON path {expression!r} holds {{{{: templates are not expanded in JSON paths"
        )
    try:
        compile_jsonpath(expression)
    except (JSONPathError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"invalid JSON path {expression!r}: {exc}") from None
    return expression


JsonPath = Annotated[str, AfterValidator(_valid_jsonpath)]
"""A JSONPath expression, compiled at config validation so typos fail early; never templated."""
