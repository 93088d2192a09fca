"""Journey assertions and polls: every operator passing and failing with its exact message,
typed JSON comparisons, templates expanded in what is expected (extracted values compared in a
later step, inserted literally in a regex), what validation refuses at load, and secrets
redacted from both sides of a message. Against a real target on loopback."""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from failsight.agent.config import env, load_config
from failsight.agent.scheduler import run_check
from failsight.agent.yamlsource import ConfigInvalid
from failsight.core.check import ProbeContext
from failsight.core.results import Reason, Result
from failsight.probes.journey import KIND, JourneyCheck, JourneyConfig, plan
from failsight.probes.journey.untrusted import same


@dataclass
class Target:
    """A JSON API on loopback: each path answers the bodies the test set, in turn, the last
    one again and again (a state a poll waits on), with the headers set."""

    url: str = ""
    answers: dict[str, list[Any]] = field(default_factory=dict)
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def answer(self, path: str, *bodies: Any, headers: dict[str, str] | None = None) -> None:
        self.answers[path] = list(bodies)
        self.headers[path] = headers or {}


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    state = Target()

    async def handle(request: web.Request) -> web.Response:
        bodies = state.answers.get(request.path)
        if not bodies:
            return web.json_response({"error": "no such path"}, status=404)
        body = bodies.pop(0) if len(bodies) > 1 else bodies[0]
        return web.json_response(body, headers=state.headers[request.path])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield state
    finally:
        await runner.cleanup()


async def run(
    target: Target, ctx: ProbeContext, steps: list[dict[str, Any]], **journey: Any
) -> Result:
    cfg = JourneyConfig.model_validate(
        {"name": "assertions", "timeout": "10s", "steps": steps, **journey}
    )
    return await run_check(JourneyCheck(cfg, site="s1", base_url=target.url), ctx)


def failure(result: Result) -> tuple[str, Reason | None, str]:
    step = result.failed_step
    assert step is not None, result.summary()
    return step.name, step.reason, step.message


DOCUMENT = {
    "qty": 2,
    "allocated_qty": 2,
    "price": 1.0,
    "total": "19.99",
    "five": "5",
    "one": 1,
    "flag": True,
    "pair": [1, 1],
    "status": "held",
    "name": "ord-1",
    "lines": [],
    "obj": {"a": 1},
    "none": None,
}

# Each assertion on DOCUMENT, and the message it fails with (None: it passes).
OPERATORS: list[tuple[dict[str, Any], str | None]] = [
    ({"path": "$.qty", "equals": 2}, None),
    ({"path": "$.price", "equals": 1}, None),
    ({"path": "$.none", "equals": None}, None),
    ({"path": "$.pair", "equals": [1.0, 1]}, None),
    ({"path": "$.obj", "equals": {"a": 1.0}}, None),
    ({"path": "$.qty", "equals": 3}, "$.qty is 2, expected 3"),
    ({"path": "$.flag", "equals": 1}, "$.flag is True (a boolean), expected 1 (a number)"),
    ({"path": "$.one", "equals": True}, "$.one is 1 (a number), expected True (a boolean)"),
    ({"path": "$.five", "equals": 5}, "$.five is '5' (a string), expected 5 (a number)"),
    ({"path": "$.pair", "equals": [1, True]}, "$.pair is [1, 1], expected [1, True]"),
    ({"path": "$.obj", "equals": {"a": "1"}}, "$.obj is {'a': 1}, expected {'a': '1'}"),
    ({"path": "$.status", "not_equals": "cancelled"}, None),
    ({"path": "$.flag", "not_equals": 1}, None),
    (
        {"path": "$.status", "not_equals": "held"},
        "$.status is 'held', expected anything but 'held'",
    ),
    ({"path": "$.status", "one_of": ["held", "picked"]}, None),
    (
        {"path": "$.status", "one_of": ["allocated", "picked"]},
        "$.status is 'held', expected one of ['allocated', 'picked']",
    ),
    ({"path": "$.flag", "one_of": [1, "true"]}, "$.flag is True, expected one of [1, 'true']"),
    ({"path": "$.name", "regex": "^ord-\\d+$"}, None),
    ({"path": "$.qty", "regex": "^2$"}, None),
    ({"path": "$.name", "regex": "^inv-"}, "$.name is 'ord-1', expected to match '^inv-'"),
    ({"path": "$.obj", "regex": "a"}, "$.obj is {'a': 1} (an object), expected to match 'a'"),
    ({"path": "$.qty", "exists": True}, None),
    ({"path": "$.nope", "exists": False}, None),
    ({"path": "$.nope", "exists": True}, "$.nope matched nothing, expected a match"),
    ({"path": "$.qty", "exists": False}, "$.qty is 2, expected no match"),
    ({"path": "$.qty", "gte": 1, "lt": 3}, None),
    ({"path": "$.price", "gt": 0.5, "lte": 1}, None),
    ({"path": "$.allocated_qty", "gte": 3}, "$.allocated_qty is 2, expected >= 3"),
    ({"path": "$.qty", "gt": 2, "lte": 10}, "$.qty is 2, expected > 2 and <= 10"),
    ({"path": "$.qty", "lt": 2}, "$.qty is 2, expected < 2"),
    ({"path": "$.price", "lte": 0.5}, "$.price is 1.0, expected <= 0.5"),
    ({"path": "$.total", "gt": 0}, "$.total is '19.99' (a string), expected a number"),
    ({"path": "$.flag", "gte": 0}, "$.flag is True (a boolean), expected a number"),
    ({"path": "$.nope", "gte": 1}, "$.nope matched nothing, expected >= 1"),
    ({"path": "$.qty", "between": [1, 2]}, None),
    ({"path": "$.qty", "between": [3, 5]}, "$.qty is 2, expected between 3 and 5"),
    ({"path": "$.lines", "length": 0}, None),
    ({"path": "$.obj", "length": {"between": [1, 3]}}, None),
    ({"path": "$.lines", "length": {"gte": 1}}, "$.lines has length 0, expected >= 1"),
    ({"path": "$.name", "length": 2}, "$.name has length 5, expected 2"),
    (
        {"path": "$.qty", "length": 1},
        "$.qty is 2 (a number), expected an array, a string or an object",
    ),
]


@pytest.mark.parametrize(
    ("assertion", "message"),
    OPERATORS,
    ids=[f"{a['path']}-{'-'.join(k for k in a if k != 'path')}" for a, _ in OPERATORS],
)
async def test_each_operator_passes_or_fails_with_expected_and_actual(
    target: Target, ctx: ProbeContext, assertion: dict[str, Any], message: str | None
) -> None:
    target.answer("/doc", DOCUMENT)
    result = await run(
        target, ctx, [{"name": "get", "path": "/doc", "expect": {"json": [assertion]}}]
    )
    if message is None:
        assert result.ok, result.summary()
    else:
        assert failure(result) == ("get", Reason.ASSERTION, message)


def test_equality_is_json_typed() -> None:
    assert same(1, 1.0) and same("a", "a") and same(None, None)
    assert not same(True, 1) and not same(1, True) and not same(False, 0)
    assert not same("5", 5) and not same(None, False) and not same("", None)
    assert same({"a": [1, {"b": True}]}, {"a": [1.0, {"b": True}]})
    assert not same({"a": [1]}, {"a": [True]}) and not same({"a": 1}, {"a": 1, "b": 2})
    assert not same([1, 2], [1]) and not same([1], {"0": 1})


def order_journey(allocated: int, invoice_total: float) -> tuple[list[dict[str, Any]], Any]:
    """An order of 3 for 19.99 (ids with regex metacharacters), its allocation and invoice."""
    steps = [
        {
            "name": "order",
            "method": "POST",
            "path": "/orders",
            "extract": {"order_id": "$.id", "ordered": "$.qty", "total": "$.total"},
        },
        {
            "name": "allocation",
            "path": "/allocation",
            "expect": {"json": [{"path": "$.allocated_qty", "gte": "{{ordered}}"}]},
        },
        {
            "name": "invoice",
            "path": "/invoice",
            "expect": {
                "json": [
                    {"path": "$.total", "equals": "{{total}}"},
                    {"path": "$.order", "one_of": ["{{order_id}}", "none"]},
                    {"path": "$.ref", "regex": "^INV-{{order_id}}$"},
                    {"path": "$.lines", "length": {"equals": "{{ordered}}"}},
                ],
                "headers": [
                    {"name": "X-Order", "equals": "{{order_id}}"},
                    {"name": "X-Ref", "regex": "^INV-{{order_id}}$"},
                ],
            },
        },
    ]
    answers = {
        "/orders": {"id": "o.1+", "qty": 3, "total": 19.99},
        "/allocation": {"allocated_qty": allocated},
        "/invoice": {
            "total": invoice_total,
            "order": "o.1+",
            "ref": "INV-o.1+",
            "lines": [1, 2, 3],
        },
    }
    return steps, answers


async def test_an_extracted_number_is_compared_in_a_later_step(
    target: Target, ctx: ProbeContext
) -> None:
    headers = {"X-Order": "o.1+", "X-Ref": "INV-o.1+"}
    steps, answers = order_journey(allocated=3, invoice_total=19.99)
    for path, body in answers.items():
        target.answer(path, body, headers=headers if path == "/invoice" else None)
    result = await run(target, ctx, steps)
    assert result.ok, result.summary()

    # Allocated quantity >= ordered quantity.
    steps, answers = order_journey(allocated=2, invoice_total=19.99)
    target.answer("/allocation", answers["/allocation"])
    result = await run(target, ctx, steps)
    assert failure(result) == (
        "allocation",
        Reason.ASSERTION,
        "$.allocated_qty is 2, expected >= 3",
    )

    # Invoice total equals order total: a number kept a number, 19.99 != 20.
    steps, answers = order_journey(allocated=3, invoice_total=20)
    target.answer("/allocation", answers["/allocation"])
    target.answer("/invoice", answers["/invoice"], headers=headers)
    result = await run(target, ctx, steps)
    assert failure(result) == ("invoice", Reason.ASSERTION, "$.total is 20, expected 19.99")

    target.answer(
        "/invoice", {**answers["/invoice"], "total": 19.99}, headers={**headers, "X-Order": "o.2"}
    )
    result = await run(target, ctx, steps)
    assert failure(result) == (
        "invoice",
        Reason.ASSERTION,
        "header X-Order is 'o.2', expected 'o.1+'",
    )


async def test_a_value_in_a_regex_is_literal_text_never_pattern(
    target: Target, ctx: ProbeContext
) -> None:
    # Unescaped, `o.1+` would match `oX11`, and `(` would not even compile.
    target.answer("/order", {"id": "o.1+", "paren": "a(b"})
    target.answer("/ref", {"ref": "INV-oX11", "note": "see a(b", "twice": "a(ba(b"})
    steps: list[dict[str, Any]] = [
        {"name": "order", "path": "/order", "extract": {"id": "$.id", "paren": "$.paren"}},
        {
            "name": "ref",
            "path": "/ref",
            "expect": {
                "json": [
                    {"path": "$.note", "regex": "{{paren}}$"},
                    # The quantifier after a placeholder repeats the whole value.
                    {"path": "$.twice", "regex": "^(?:{{paren}}){2}$"},
                    {"path": "$.twice", "regex": "^{{paren}}+$"},
                    {"path": "$.ref", "regex": "^INV-{{id}}$"},
                ]
            },
        },
    ]
    result = await run(target, ctx, steps)
    assert failure(result) == (
        "ref",
        Reason.ASSERTION,
        "$.ref is 'INV-oX11', expected to match '^INV-(?:o\\\\.1\\\\+)$'",
    )


async def test_a_bound_that_is_no_number_is_extraction_naming_the_variable(
    target: Target, ctx: ProbeContext
) -> None:
    target.answer("/doc", {"qty": 3, "obj": {"secret-ish": 1}, "flag": True})
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"path": "$.qty", "gte": "{{min}}"}, None),  # journey variables are text: "3"
        ({"path": "$.qty", "between": ["{{min}}", "{{min}}.5"]}, None),
        (
            {"path": "$.qty", "lt": "{{word}}"},
            "$.qty lt: variable word is text that is not a number",
        ),
        ({"path": "$.qty", "gt": "{{obj}}"}, "$.qty gt: variable obj is an object, not a number"),
        ({"path": "$.qty", "gt": "{{flag}}"}, "$.qty gt: variable flag is a boolean, not a number"),
        (
            {"path": "$.qty", "length": {"lte": "{{min}}{{word}}"}},
            "$.qty length lte: variables min, word make text that is not a number",
        ),
        (
            {"path": "$.qty", "equals": "x{{obj}}"},
            "variable obj is an object, not text and cannot go in $.qty equals",
        ),
    ]
    for assertion, message in cases:
        steps = [
            {"name": "read", "path": "/doc", "extract": {"obj": "$.obj", "flag": "$.flag"}},
            {"name": "check", "path": "/doc", "expect": {"json": [assertion]}},
        ]
        result = await run(target, ctx, steps, variables={"min": "3", "word": "three"})
        if message is None:
            assert result.ok, result.summary()
        else:
            assert failure(result) == ("check", Reason.EXTRACTION, message)
            assert "three" not in message and "secret-ish" not in message


async def test_a_poll_waits_for_a_predicate_and_says_what_it_saw_and_wanted(
    target: Target, ctx: ProbeContext
) -> None:
    fast = {"interval": "10ms", "deadline": "5s"}
    target.answer("/remaining", *({"remaining": n} for n in (3, 2, 1, 0)))
    result = await run(
        target,
        ctx,
        [
            {
                "name": "drain",
                "path": "/remaining",
                "poll": {"path": "$.remaining", "lte": 0, **fast},
            }
        ],
    )
    assert result.ok, result.summary()
    assert result.steps[0].attempts == 4

    target.answer("/state", {"state": "allocated"}, {"state": "held"}, {"state": "picked"})
    poll = {"path": "$.state", "one_of": ["picked", "shipped"], **fast}
    result = await run(target, ctx, [{"name": "pick", "path": "/state", "poll": poll}])
    assert result.ok and result.steps[0].attempts == 3, result.summary()

    # `until` is templated and typed: the extracted 7 is no "7".
    target.answer("/order", {"id": 7})
    target.answer("/shipment", {"order": "7"}, {"order": 7.0})
    steps = [
        {"name": "order", "path": "/order", "extract": {"order_id": "$.id"}},
        {
            "name": "ship",
            "path": "/shipment",
            "poll": {"path": "$.order", "until": "{{order_id}}", **fast},
        },
    ]
    result = await run(target, ctx, steps)
    assert result.ok and result.steps[1].attempts == 2, result.summary()

    short = {"interval": "20ms", "deadline": "100ms"}
    target.answer("/remaining", {"remaining": 5})
    for poll, message in [
        ({"path": "$.remaining", "lte": 0}, "poll: $.remaining was 5 after 0.1s, wanted <= 0"),
        (
            {"path": "$.tracking", "exists": True},
            "poll: $.tracking was missing after 0.1s, wanted a match",
        ),
        (
            {"path": "$.remaining", "until": "5"},
            "poll: $.remaining was 5 (a number) after 0.1s, wanted '5' (a string)",
        ),
        (
            {"path": "$.remaining", "length": {"gt": 0}},
            "poll: $.remaining was 5 (a number) after 0.1s, wanted an array, a string or an object",
        ),
    ]:
        step = {"name": "wait", "path": "/remaining", "poll": {**poll, **short}}
        result = await run(target, ctx, [step])
        assert failure(result) == ("wait", Reason.TIMEOUT, message)


# --- validation at load ---------------------------------------------------------------------

BASE = """\
agent:
  vantage: aws-use1
sites:
  - name: aws-use1
    role: primary
    base_url: BASE_URL
"""


def write(tmp_path: Path, journeys: str, base_url: str = "http://127.0.0.1:1") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BASE.replace("BASE_URL", base_url) + textwrap.dedent(journeys))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    return [str(e).replace(str(path), "F") for e in info.value.errors]


def test_templates_in_assertions_and_polls_use_only_variables_known_before_the_step(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        """\
        journeys:
          - name: j
            variables: {min: "1"}
            steps:
              - name: order
                path: /orders
                extract: {order_id: $.id}
                expect:
                  json:
                    - {path: $.id, equals: "{{order_id}}"}
              - name: allocation
                path: /orders/{{order_id}}
                extract: {qty: $.qty}
                expect:
                  json:
                    - {path: $.qty, gte: "{{min}}", lt: "{{max}}"}
                    - {path: $.state, one_of: ["{{order_id}}", "{{state}}"]}
                    - {path: $.ref, regex: "^{{ref}}$"}
                    - {path: $.lines, length: {gte: "{{qty}}"}}
                    - {path: $.n, between: ["{{min}}", "{{a.b}}"]}
                  headers:
                    - {name: X-Order, equals: "{{order}}"}
                poll: {path: $.state, until: "{{done}}"}
              - name: pick
                path: /pick
                poll: {path: $.left, lte: "{{qty}}{{left}}"}
            cleanup:
              - name: cancel
                path: /orders/{{order_id}}
                expect:
                  json:
                    - {path: $.state, not_equals: "{{gone}}"}
        """,
    )
    assert errors_of(path) == [
        "F:16: journeys.0.steps.0.expect.json.0.equals: template uses {{order_id}}, which "
        "this step extracts only after checking its response",
        "F:22: journeys.0.steps.1.expect.json.0.lt: template uses {{max}}, which no earlier "
        "step extracts",
        "F:23: journeys.0.steps.1.expect.json.1.one_of: template uses {{state}}, which no "
        "earlier step extracts",
        "F:24: journeys.0.steps.1.expect.json.2.regex: template uses {{ref}}, which no earlier "
        "step extracts",
        "F:25: journeys.0.steps.1.expect.json.3.length: template uses {{qty}}, which this step "
        "extracts only after checking its response",
        "F:26: journeys.0.steps.1.expect.json.4.between: invalid template {{a.b}}: only "
        "{{variable}} is allowed",
        "F:28: journeys.0.steps.1.expect.headers.0.equals: template uses {{order}}, which no "
        "earlier step extracts",
        "F:29: journeys.0.steps.1.poll.until: template uses {{done}}, which no earlier step "
        "extracts",
        "F:32: journeys.0.steps.2.poll.lte: template uses {{left}}, which no earlier step extracts",
        "F:38: journeys.0.cleanup.0.expect.json.0.not_equals: template uses {{gone}}, which no "
        "step extracts",
    ]


def test_json_paths_are_never_templated(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        journeys:
          - name: j
            steps:
              - name: order
                path: /orders
                extract: {id: "$.lines[?(@.sku == '{{sku}}')].id"}
                expect:
                  json:
                    - {path: "$.{{field}}", exists: true}
                poll: {path: "$.x{{y}}", until: 1}
        """,
    )
    refused = ": templates are not expanded in JSON paths"
    assert errors_of(path) == [
        "F:12: journeys.0.steps.0.extract.id: JSON path \"$.lines[?(@.sku == '{{sku}}')].id\" "
        "holds {{" + refused,
        "F:15: journeys.0.steps.0.expect.json.0.path: JSON path '$.{{field}}' holds {{" + refused,
        "F:16: journeys.0.steps.0.poll.path: JSON path '$.x{{y}}' holds {{" + refused,
    ]


@pytest.mark.parametrize(
    ("assertion", "error"),
    [
        ("{path: $.a, gt: abc}", "json.0.gt: expected a number or a {{variable}}, not 'abc'"),
        (
            "{path: $.a, gte: true}",
            "json.0.gte: expected a number or a {{variable}}, not a boolean",
        ),
        ("{path: $.a, lt: .nan}", "json.0.lt: expected a finite number, not nan"),
        ("{path: $.a, lte: .inf}", "json.0.lte: expected a finite number, not inf"),
        (
            "{path: $.a, lte: '1e999'}",
            "json.0.lte: expected a number or a {{variable}}, not '1e999'",
        ),
        ("{path: $.a, between: [5, 1]}", "json.0.between: 5 is above 1: no value is between them"),
        ("{path: $.a, between: [1]}", "json.0.between: expected [low, high]"),
        (
            "{path: $.a, between: [1, null]}",
            "json.0.between.1: expected a number or a {{variable}}, not null",
        ),
        ("{path: $.a, gt: 5, lte: 5}", "json.0: no value is > 5 and <= 5"),
        ("{path: $.a, gt: 1, gte: 2}", "json.0: give gt or gte, not both"),
        (
            "{path: $.a, length: {}}",
            "json.0.length: give exactly one of equals, gt/gte/lt/lte, between",
        ),
        (
            "{path: $.a, length: [1]}",
            "json.0.length.equals: expected a number or a {{variable}}, not an array",
        ),
        (
            "{path: $.a, equals: 1, gte: 0}",
            "json.0: give exactly one of equals, not_equals, one_of, regex, exists, "
            "gt/gte/lt/lte, between, length (got equals and gt/gte/lt/lte)",
        ),
        (
            "{path: $.a}",
            "json.0: give exactly one of equals, not_equals, one_of, regex, exists, "
            "gt/gte/lt/lte, between, length",
        ),
        (
            "{path: $.a, regex: '\\{{x}}'}",
            "json.0.regex: invalid regex '\\\\{{x}}' (each {{variable}} in it a group of "
            "literal text): unbalanced parenthesis at position 4",
        ),
    ],
)
def test_bad_assertions_are_refused_with_their_key(
    tmp_path: Path, assertion: str, error: str
) -> None:
    path = write(
        tmp_path,
        f"""\
        journeys:
          - name: j
            steps:
              - name: s
                path: /
                expect:
                  json:
                    - {assertion}
        """,
    )
    assert errors_of(path) == [f"F:14: journeys.0.steps.0.expect.{error}"]


def test_a_poll_takes_until_or_one_group_of_checks(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        journeys:
          - name: j
            steps:
              - name: a
                path: /
                poll: {path: $.state, until: done, one_of: [done]}
              - name: b
                path: /
                poll: {path: $.state, deadline: 1s}
              - name: c
                path: /
                poll: {path: $.left, lte: 0, interval: 50ms}
        """,
    )
    groups = "until, equals, not_equals, one_of, regex, exists, gt/gte/lt/lte, between, length"
    assert errors_of(path) == [
        f"F:12: journeys.0.steps.0.poll: give exactly one of {groups} (got until and one_of)",
        f"F:15: journeys.0.steps.1.poll: give exactly one of {groups}",
    ]


# --- secrets --------------------------------------------------------------------------------


async def test_a_secret_on_either_side_of_a_message_is_redacted(
    target: Target, ctx: ProbeContext, tmp_path: Path
) -> None:
    token = "tok-" + secrets.token_hex(12)
    key = "key-" + secrets.token_hex(12)
    # Where a message cuts a long value, the secret would be cut too, and no longer found:
    # redacted before the cut, nothing of it shows.
    pad, tail = "x" * 12, "y" * 60
    path = write(
        tmp_path,
        f"""\
        journeys:
          - name: j
            bearer_token: {token}
            steps:
              - name: expected
                path: /echo
                expect:
                  json:
                    - {{path: $.state, equals: "{pad}Bearer {token}{tail}"}}
              - name: echoed
                path: /echo
                expect:
                  json:
                    - {{path: $.key, equals: other}}
                  headers:
                    - {{name: X-Echo, equals: "{key}"}}
        """,
        target.url,
    )
    path.write_text(
        path.read_text().replace(
            "    base_url:", f"    headers: {{X-Api-Key: {key}}}\n    base_url:"
        )
    )
    config = load_config(path)  # the loader registers the config's secrets with the REDACTOR
    check = plan(config.section(KIND), env(config))[0]
    assert isinstance(check, JourneyCheck)

    expected = f"{pad}Bearer {token}{tail}"
    target.answer("/echo", {"state": "open", "key": f"my key is {key}"})
    result = await run_check(check, ctx)
    assert failure(result) == (
        "expected",
        Reason.ASSERTION,
        f"$.state is 'open', expected '{pad}Bearer [redacted]{tail[:8]}...{tail[:38]}'",
    )

    target.answer("/echo", {"state": expected, "key": f"{pad}{key}{tail}"})
    result = await run_check(check, ctx)
    assert failure(result) == (
        "echoed",
        Reason.ASSERTION,
        f"$.key is '{pad}[redacted]{tail[:15]}...{tail[:38]}', expected 'other'",
    )

    target.answer("/echo", {"state": expected, "key": "other"}, headers={"X-Echo": token})
    result = await run_check(check, ctx)
    assert failure(result) == (
        "echoed",
        Reason.ASSERTION,
        "header X-Echo is '[redacted]', expected '[redacted]'",
    )
    text = json.dumps(result.summary(), default=str)
    assert token not in text and key not in text


def test_the_journal_keeps_what_a_cleanup_step_asserts_on() -> None:
    """A cleanup retried after a crash expands its assertions too: what they use is kept."""
    cfg = JourneyConfig.model_validate(
        {
            "name": "j",
            "steps": [
                {"name": "order", "path": "/o", "extract": {"order_id": "$.id", "qty": "$.q"}}
            ],
            "cleanup": [
                {
                    "name": "cancel",
                    "path": "/cancel",
                    "expect": {"json": [{"path": "$.id", "equals": "{{order_id}}"}]},
                }
            ],
        }
    )
    check = JourneyCheck(cfg, site="s1", base_url="http://127.0.0.1:1")
    assert "order_id" in check.journaled and "qty" not in check.journaled
