"""Journeys against a target that answers with hostile bytes: every one of them is a failed
step with a classified reason (mostly `extraction`), never `internal`, never an exception, and
never a control character in a message."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.core.redact import REDACTOR
from failsight.core.results import Reason, Result
from failsight.probes.journey import MAX_JSON_DEPTH, JourneyCheck, JourneyConfig, untrusted
from failsight.probes.templating import UnusableVariable, render, render_text

DEEP = 400_000


@dataclass
class Hostile:
    """A target on loopback that answers each path with what the test set, and records the
    requests it got."""

    url: str = ""
    answers: dict[str, tuple[int, bytes, dict[str, str]]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def answer(
        self,
        path: str,
        body: bytes | Any,
        *,
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = (status, data, {"Content-Type": content_type, **(headers or {})})

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    target = Hostile()

    async def handle(request: web.Request) -> web.Response:
        target.requests.append((request.method, request.path_qs, dict(request.headers)))
        await request.read()
        status, body, headers = target.answers.get(request.path, (404, b"{}", {}))
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    target.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield target
    finally:
        await runner.cleanup()


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    async with new_session() as http:
        yield ProbeContext(vantage="test-vantage", http=http)


def journey(steps: list[dict[str, Any]], cleanup: list[dict[str, Any]] | None = None) -> Any:
    return JourneyConfig.model_validate(
        {"name": "hostile", "timeout": "10s", "steps": steps, "cleanup": cleanup or []}
    )


async def run(
    target: Hostile,
    ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
    steps: list[dict[str, Any]],
    cleanup: list[dict[str, Any]] | None = None,
) -> Result:
    check = JourneyCheck(journey(steps, cleanup), site="hostile-site", base_url=target.url)
    with caplog.at_level(logging.INFO):
        result = await run_check(check, ctx)
    # run_check logs "check ... raised" at ERROR when an exception escaped the probe.
    escaped = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("agent", "probes"))
    ]
    assert not escaped, [r.getMessage() for r in escaped]
    assert result.reason is not Reason.INTERNAL, result.summary()
    for step in (*result.steps, *result.cleanup):
        assert step.reason is not Reason.INTERNAL, step
        assert_printable(step.message)
    assert_printable(result.message)
    return result


def assert_printable(text: str) -> None:
    assert text.isprintable(), repr(text)
    assert len(text) <= 1000


def failed(result: Result) -> tuple[str, Reason | None, str]:
    step = result.failed_step
    assert step is not None, result.summary()
    return step.name, step.reason, step.message


# --- JSON too deep --------------------------------------------------------------------------


async def test_deep_json_under_the_body_limit_is_extraction(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    body = b"[" * DEEP + b"]" * DEEP
    assert len(body) == 800_000 < JourneyConfig.model_fields["max_body_bytes"].default
    hostile.answer("/deep", body)
    steps = [{"name": "get", "path": "/deep", "extract": {"first": "$[0]"}}]
    for _ in range(2):  # every run, not once
        result = await run(hostile, ctx, caplog, steps)
        assert failed(result) == (
            "get",
            Reason.EXTRACTION,
            f"response JSON nests deeper than {MAX_JSON_DEPTH} levels",
        )
        assert result.reason is Reason.EXTRACTION


async def test_deep_but_parseable_json_with_a_descendant_path_is_extraction(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    depth = 600
    body = b'{"x":' * depth + b"1" + b"}" * depth
    json.loads(body)  # Python's parser takes it: only the bound refuses it
    hostile.answer("/deep", body)
    steps = [
        {
            "name": "get",
            "path": "/deep",
            "expect": {"json": [{"path": "$..x", "exists": True}]},
            "extract": {"x": "$..x"},
        }
    ]
    result = await run(hostile, ctx, caplog, steps)
    assert failed(result)[:2] == ("get", Reason.EXTRACTION)
    assert "nests deeper than" in failed(result)[2]


async def test_json_at_the_bound_is_read(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"x":' * MAX_JSON_DEPTH + b'"ok"' + b"}" * MAX_JSON_DEPTH
    hostile.answer("/deep", body)
    steps = [{"name": "get", "path": "/deep", "extract": {"x": "$..x"}}]
    result = await run(hostile, ctx, caplog, steps)
    assert result.ok, result.summary()


async def test_without_the_bound_a_parser_recursion_is_still_extraction(
    hostile: Hostile,
    ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Patched in journey.untrusted, where parse_json looks it up.
    monkeypatch.setattr(untrusted, "MAX_JSON_DEPTH", 10**9)
    hostile.answer("/deep", b"[" * DEEP + b"]" * DEEP)
    steps = [{"name": "get", "path": "/deep", "extract": {"first": "$[0]"}}]
    result = await run(hostile, ctx, caplog, steps)
    assert failed(result) == ("get", Reason.EXTRACTION, "response JSON nests too deep to be read")


async def test_a_json_path_that_recurses_or_raises_on_the_document_is_extraction(
    hostile: Hostile,
    ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # jsonpath-ng's `sorted` raises TypeError on a list mixing numbers and strings: the
    # target chose the list, so this is the target's failure, not ours.
    hostile.answer("/mixed", {"x": [1, "a", None]})
    steps = [{"name": "get", "path": "/mixed", "extract": {"s": "$.x.`sorted`"}}]
    result = await run(hostile, ctx, caplog, steps)
    assert failed(result) == (
        "get",
        Reason.EXTRACTION,
        "$.x.`sorted` cannot be evaluated on the response (TypeError)",
    )

    # A JSON path engine recursing past the stack (older jsonpath-ng on `..`): extraction too.
    def recursing(path: str, document: Any) -> list[Any]:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(untrusted, "find", recursing)
    hostile.answer("/ok", {"x": 1})
    for steps in (
        [{"name": "get", "path": "/ok", "expect": {"json": [{"path": "$..x", "equals": 1}]}}],
        [{"name": "get", "path": "/ok", "extract": {"x": "$..x"}}],
        [{"name": "get", "path": "/ok", "poll": {"path": "$..x", "until": 1}}],
    ):
        result = await run(hostile, ctx, caplog, steps)
        assert failed(result)[:2] == ("get", Reason.EXTRACTION)
        assert "nests too deep to evaluate" in failed(result)[2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"n": ' + b"1" * 5000 + b"}", "a value that cannot be read"),
        (b'{"s": "\xff\xfe\xfd"}', "response is not JSON (application/json, 12 bytes)"),
        (b"\x00\x00\x00", "response is not JSON"),
        (b'{"a": [1, 2}', "response is not JSON"),
        (b"", "response is not JSON (application/json, 0 bytes)"),
    ],
    ids=["long-number", "bad-utf8", "nul-bytes", "broken", "empty"],
)
async def test_unreadable_json_is_extraction(
    hostile: Hostile,
    ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
    body: bytes,
    message: str,
) -> None:
    hostile.answer("/bad", body)
    result = await run(
        hostile, ctx, caplog, [{"name": "get", "path": "/bad", "extract": {"n": "$.n"}}]
    )
    name, reason, text = failed(result)
    assert (name, reason) == ("get", Reason.EXTRACTION)
    assert message in text


async def test_a_content_type_quoted_in_a_message_is_bounded(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.answer("/html", b"<html>", content_type="text/html; " + "x=" + "y" * 3000)
    result = await run(
        hostile, ctx, caplog, [{"name": "get", "path": "/html", "extract": {"n": "$.n"}}]
    )
    name, reason, text = failed(result)
    assert (name, reason) == ("get", Reason.EXTRACTION)
    assert text.startswith("response is not JSON (text/html; x=yyy")
    assert len(text) < 150


# --- extracted values put into later requests ---------------------------------------------


async def test_an_extracted_value_with_crlf_in_a_header_is_extraction_naming_the_variable(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.answer("/login", {"token": "abc\r\nX-Injected: yes"})
    hostile.answer("/next", {"ok": True})
    hostile.answer("/cancel", {"ok": True})
    steps = [
        {"name": "login", "method": "POST", "path": "/login", "extract": {"token": "$.token"}},
        {"name": "next", "path": "/next", "headers": {"X-Session": "Bearer {{token}}"}},
    ]
    cleanup = [{"name": "cancel", "path": "/cancel", "headers": {"X-Session": "{{token}}"}}]
    result = await run(hostile, ctx, caplog, steps, cleanup)
    assert failed(result) == (
        "next",
        Reason.EXTRACTION,
        "header X-Session: variable token contains control characters",
    )
    # The cleanup step fails the same way, as a step, and says why.
    (cancel,) = result.cleanup
    assert (cancel.ok, cancel.reason) == (False, Reason.EXTRACTION)
    assert cancel.message == "header X-Session: variable token contains control characters"
    # Nothing was sent with the value, and the value is in no message.
    assert hostile.paths() == ["/login"]
    assert "abc" not in result.summary() and "Injected" not in result.summary()

    # NUL and other control characters likewise; a tab is allowed.
    hostile.answer("/login", {"nul": "a\x00b", "esc": "\x1b[2J", "tab": "a\tb"})
    for variable in ("nul", "esc", "tab"):
        steps = [
            {"name": "login", "path": "/login", "extract": {variable: f"$.{variable}"}},
            {"name": "next", "path": "/next", "headers": {"X-V": "{{" + variable + "}}"}},
        ]
        result = await run(hostile, ctx, caplog, steps)
        if variable == "tab":
            assert result.ok, result.summary()
            assert hostile.requests[-1][2]["X-V"] == "a\tb"
        else:
            assert failed(result) == (
                "next",
                Reason.EXTRACTION,
                f"header X-V: variable {variable} contains control characters",
            )


@pytest.mark.parametrize(
    ("value", "kind"),
    [({"a": 1}, "an object"), ([1, 2], "an array"), (None, "null")],
    ids=["dict", "list", "null"],
)
async def test_an_extracted_non_text_value_in_a_path_query_or_header_is_extraction(
    hostile: Hostile,
    ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
    value: Any,
    kind: str,
) -> None:
    hostile.answer("/orders", {"id": value}, status=201)
    first = {"name": "submit", "method": "POST", "path": "/orders", "extract": {"id": "$.id"}}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"path": "/orders/{{id}}/pick"}, "the path"),
        ({"path": "/orders", "query": {"order": "{{id}}"}}, "query parameter order"),
        ({"path": "/orders", "headers": {"X-Order": "id={{id}}"}}, "header X-Order"),
        ({"path": "/orders", "method": "POST", "json": {"note": "order {{id}}"}}, "the JSON body"),
    ]
    for fields, where in cases:
        hostile.requests.clear()
        steps = [first, {"name": "use", **fields}]
        cleanup = [{"name": "cancel", "method": "POST", "path": "/orders/{{id}}/cancel"}]
        result = await run(hostile, ctx, caplog, steps, cleanup)
        assert failed(result) == (
            "use",
            Reason.EXTRACTION,
            f"variable id is {kind}, not text and cannot go in {where}",
        )
        (cancel,) = result.cleanup
        assert (cancel.ok, cancel.skipped, cancel.reason) == (False, False, Reason.EXTRACTION)
        assert cancel.message == f"variable id is {kind}, not text and cannot go in the path"
        assert hostile.paths() == ["/orders"]


async def test_an_extracted_object_as_a_whole_json_value_is_sent_as_json(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.answer("/orders", {"lines": [{"sku": "A", "qty": 1}]}, status=201)
    hostile.answer("/copy", {"ok": True})
    steps = [
        {"name": "submit", "method": "POST", "path": "/orders", "extract": {"lines": "$.lines"}},
        {"name": "copy", "method": "POST", "path": "/copy", "json": {"lines": "{{lines}}"}},
    ]
    result = await run(hostile, ctx, caplog, steps)
    assert result.ok, result.summary()


@pytest.mark.parametrize(
    "value",
    [
        "../../admin?x=1#frag",
        "a\r\nb",
        "\x1b[2J\x00",
        "\ud800",
        "é/ü %zz",
        "x" * 5000,
        12345,
        1.5,
        True,
    ],
    ids=["traversal", "crlf", "controls", "surrogate", "unicode", "long", "int", "float", "bool"],
)
async def test_any_text_value_in_a_path_or_query_never_breaks_the_run(
    hostile: Hostile,
    ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
    value: Any,
) -> None:
    hostile.answer("/orders", {"id": value}, status=201)
    steps = [
        {"name": "submit", "method": "POST", "path": "/orders", "extract": {"id": "$.id"}},
        {"name": "use", "path": "/orders/{{id}}", "query": {"id": "{{id}}"}},
    ]
    result = await run(hostile, ctx, caplog, steps)
    # Whatever the target made of it (404 here), the run ended normally.
    assert result.steps[0].ok
    assert result.steps[1].reason in (None, Reason.HTTP_STATUS), result.summary()
    assert result.steps[1].url.isprintable()


# --- what a target sends, quoted in messages ----------------------------------------------


async def test_an_error_body_with_ansi_escapes_and_newlines_is_one_clean_line(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    body = (
        "\x1b[31mdenied\x1b[0m\r\n"
        '2024-01-01T00:00:00Z level=ERROR msg="forged log line"\n'
        "\x1b]0;title\x07\u202eevil\u2028\x85\x9b31m\tend"
    ).encode()
    hostile.answer("/orders", body, status=401, content_type="text/plain")
    result = await run(hostile, ctx, caplog, [{"name": "submit", "path": "/orders"}])
    name, reason, message = failed(result)
    assert (name, reason) == ("submit", Reason.AUTH)
    for bad in ("\x1b", "\r", "\n", "\x07", "\u202e", "\u2028", "\x85", "\x9b", "\t"):
        assert bad not in message
        assert bad not in result.message
    assert message.startswith("HTTP 401: [31mdenied [0m 2024-01-01T00:00:00Z level=ERROR")
    assert len(message) <= len("HTTP 401: ") + 200


async def test_a_long_error_body_is_cut(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.answer("/orders", b"e" * 100_000, status=500, content_type="text/plain")
    result = await run(hostile, ctx, caplog, [{"name": "submit", "path": "/orders"}])
    name, reason, message = failed(result)
    assert (name, reason) == ("submit", Reason.HTTP_STATUS)
    assert message == "HTTP 500: " + "e" * 197 + "..."


async def test_a_secret_echoed_by_the_target_is_redacted_before_anything_is_cut(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "tok-" + secrets.token_hex(16)
    REDACTOR.add(secret)  # as the config loader does for every secret of the config
    # Straddling the 200 characters of the snippet: cut first, it could not be found whole.
    hostile.answer("/denied", ("x" * 180 + secret + "z" * 50).encode(), status=401)
    hostile.answer("/echo", {"state": "Bearer " + secret + "y" * 500})
    for steps in (
        [{"name": "call", "path": "/denied"}],
        [
            {
                "name": "call",
                "path": "/echo",
                "expect": {"json": [{"path": "$.state", "equals": "nothing"}]},
            }
        ],
    ):
        result = await run(hostile, ctx, caplog, steps)
        message = failed(result)[2]
        assert "[redacted]" in message, message
        assert secret[:8] not in message and secret[-8:] not in message
        assert secret[:8] not in result.message and secret[-8:] not in result.message


async def test_hostile_values_in_json_assertions_give_bounded_messages(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    nested: Any = "bottom"
    for _ in range(100):  # 200 levels: under the bound
        nested = {"n": [nested]}
    hostile.answer(
        "/doc",
        {
            "huge": "\x1b[2J" + "x" * 500_000,
            "obj": {"a": list(range(10_000))},
            "nested": nested,
            "num": 10**4000,
        },
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"path": "$.huge", "equals": "x"}, "$.huge is '\\x1b[2Jxxx"),
        ({"path": "$.huge", "regex": "^y"}, "expected to match '^y'"),
        ({"path": "$.huge", "one_of": ["a", "b"]}, "expected one of ['a', 'b']"),
        ({"path": "$.obj", "regex": "a"}, "$.obj is {'a': [0, 1, 2, 3, 4, ...]}"),
        ({"path": "$.obj", "equals": 1}, "expected 1"),
        ({"path": "$.nested", "equals": "x"}, "$.nested is {'n': [{'n': [...]}]}"),
        ({"path": "$.num", "equals": 1}, "$.num is 1000"),
        ({"path": "$.num", "regex": "^2"}, "expected to match '^2'"),
    ]
    for assertion, message in cases:
        steps = [{"name": "get", "path": "/doc", "expect": {"json": [assertion]}}]
        result = await run(hostile, ctx, caplog, steps)
        name, reason, text = failed(result)
        assert (name, reason) == ("get", Reason.ASSERTION)
        assert message in text, text
        assert len(text) < 400


async def test_hostile_values_in_header_assertions_give_bounded_messages(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    # (aiohttp will not send control characters in a header, so none here.)
    hostile.answer("/doc", {}, headers={"X-Big": "v" * 7000})
    for assertion, message in [
        ({"name": "X-Big", "equals": "w"}, "header X-Big is 'vvvv"),
        ({"name": "X-Big", "regex": "^w"}, "expected to match '^w'"),
    ]:
        steps = [{"name": "get", "path": "/doc", "expect": {"headers": [assertion]}}]
        result = await run(hostile, ctx, caplog, steps)
        name, reason, text = failed(result)
        assert (name, reason) == ("get", Reason.ASSERTION)
        assert message in text, text
        assert len(text) < 400


async def test_a_poll_over_hostile_values_gives_a_bounded_message(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    hostile.answer("/state", {"state": "\n" * 10 + "z" * 100_000})
    steps = [
        {
            "name": "wait",
            "path": "/state",
            "poll": {"path": "$.state", "until": "done", "interval": "50ms", "deadline": "120ms"},
        }
    ]
    result = await run(hostile, ctx, caplog, steps)
    name, reason, text = failed(result)
    assert (name, reason) == ("wait", Reason.TIMEOUT)
    assert text.startswith("poll: $.state was '\\n\\n")
    assert len(text) < 400


def test_show_and_printable_take_anything() -> None:
    show: Callable[[Any], str] = untrusted.show
    printable: Callable[[str, int], str] = untrusted.printable

    class Weird:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert show(Weird()).startswith("<Weird")
    assert show(10**5000) == "<int>"
    assert printable("a\r\n\x1b[1mb\u202ec", 100) == "a [1mb c"
    assert printable("ok text", 100) == "ok text"
    assert printable("x" * 50, 10) == "xxxxxxx..."


def test_templating_refuses_non_text_values_as_text_naming_the_variable() -> None:
    values: dict[str, object] = {"o": {"a": 1}, "l": [1], "n": None, "i": 3, "b": False}
    for name, kind in (("o", "an object"), ("l", "an array"), ("n", "null")):
        with pytest.raises(UnusableVariable) as info:
            render_text("/x/{{" + name + "}}", values)
        assert (info.value.name, info.value.kind) == (name, kind)
        assert str(info.value) == f"variable {name} is {kind}, not text"
        with pytest.raises(UnusableVariable):
            render({"note": "x {{" + name + "}}"}, values)
        with pytest.raises(UnusableVariable):
            render({"{{" + name + "}}": 1}, values)  # a key is text, whatever its value
        assert render({"v": "{{" + name + "}}"}, values) == {"v": values[name]}  # whole: kept
    assert render_text("/{{i}}/{{b}}", values) == "/3/false"
    assert render({"{{i}}": "{{i}}"}, values) == {"3": 3}


async def test_a_token_extracted_into_a_query_string_never_reaches_the_result(
    hostile: Hostile, ctx: ProbeContext, caplog: pytest.LogCaptureFixture
) -> None:
    """A session token the target hands out at run time is no configured secret, so no
    redactor knows it: the step's URL (logs, API, spans) is scrubbed where it is recorded."""
    token = "tok-" + secrets.token_hex(8)
    hostile.answer("/login", {"session": token})
    hostile.answer("/orders", {"ok": True})
    result = await run(
        hostile,
        ctx,
        caplog,
        [
            {"name": "login", "method": "POST", "path": "/login", "extract": {"t": "$.session"}},
            {"name": "list", "path": "/orders", "query": {"access_token": "{{t}}", "page": "2"}},
        ],
    )
    assert result.ok, result.summary()
    # The target got the real token...
    assert f"/orders?access_token={token}&page=2" in hostile.paths()
    # ...and the result keeps where the request went, with the token's value scrubbed.
    assert result.steps[1].url == f"{hostile.url}/orders?access_token=REDACTED&page=2"
    assert token not in json.dumps(result.summary(), default=str)
    assert token not in caplog.text
