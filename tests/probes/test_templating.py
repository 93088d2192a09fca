"""Templating is a closed substitution of names; JSON paths come from jsonpath-ng."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter, ValidationError

from failsight.probes.templating import (
    JsonPath,
    MissingVariable,
    UnusableVariable,
    find,
    json_kind,
    malformed_placeholders,
    render,
    render_pattern,
    render_text,
    variables_in,
)


def test_render_substitutes_names_and_keeps_types_for_whole_values() -> None:
    values = {"order_id": "ord-1", "qty": 3, "flag": True}
    assert render("/orders/{{order_id}}/pick", values) == "/orders/ord-1/pick"
    assert render({"qty": "{{qty}}", "note": "x{{ qty }}y"}, values) == {"qty": 3, "note": "x3y"}
    assert render(["{{flag}}", "{{flag}}!"], values) == [True, "true!"]
    assert render(7, values) == 7


def test_render_never_evaluates_expressions() -> None:
    assert render("{{__import__('os')}}", {}) == "{{__import__('os')}}"
    assert malformed_placeholders({"a": ["{{ 1+1 }}", "{{ok}}"]}) == [" 1+1 "]


def test_missing_variable_is_reported_by_name() -> None:
    with pytest.raises(MissingVariable) as info:
        render_text("/o/{{order_id}}", {})
    assert info.value.name == "order_id"


def test_variables_in_walks_nested_values() -> None:
    assert variables_in({"a": ["{{x}}", {"{{k}}": "{{y}} {{x}}"}]}) == {"x", "y", "k"}


def test_jsonpath_filters_and_order() -> None:
    doc = {"lines": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}, {"sku": "A", "qty": 5}]}
    assert find("$.lines[?(@.sku == 'A')].qty", doc) == [1, 5]
    assert find("$.lines[*].sku", doc) == ["A", "B", "A"]
    assert find("$.missing", doc) == []


def test_a_regex_takes_values_as_literal_groups() -> None:
    values = {"id": "o.1+(", "n": 3, "o": {"a": 1}}
    assert render_pattern("^INV-{{id}}$", values) == "^INV-(?:o\\.1\\+\\()$"
    assert re.fullmatch(render_pattern("{{id}}{{ n }}", values), "o.1+(3")
    assert not re.fullmatch(render_pattern("{{id}}", values), "oX11(")
    assert render_pattern("^a{2}$", values) == "^a{2}$"
    # The shape validation compiles at load: every placeholder an empty group.
    assert render_pattern("\\d+-{{id}}", None) == "\\d+-(?:)"
    with pytest.raises(UnusableVariable):
        render_pattern("{{o}}", values)
    with pytest.raises(MissingVariable):
        render_pattern("{{nope}}", values)


def test_json_kind_names_what_a_value_is() -> None:
    kinds = [json_kind(v) for v in ("a", 1, 1.5, True, None, {}, [], (), b"")]
    assert kinds == [
        "a string",
        "a number",
        "a number",
        "a boolean",
        "null",
        "an object",
        "an array",
        "an array",
        "a bytes",
    ]


def test_a_json_path_is_never_a_template() -> None:
    paths = TypeAdapter(JsonPath)
    assert paths.validate_python("$.lines[0].qty") == "$.lines[0].qty"
    with pytest.raises(ValidationError, match="templates are not expanded in JSON paths"):
        paths.validate_python("$.orders[?(@.id == '{{order_id}}')]")
