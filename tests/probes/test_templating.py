"""Templating is a closed substitution of names; JSON paths come from jsonpath-ng."""

from __future__ import annotations

import pytest

from failsight.probes.templating import (
    MissingVariable,
    find,
    malformed_placeholders,
    render,
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
