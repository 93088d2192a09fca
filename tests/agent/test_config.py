"""Config: every invalid file is refused with `FILE:LINE: path: message`, secrets stay secret."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from failsight.agent.cli import main
from failsight.agent.config import load_config
from failsight.agent.yamlsource import ConfigInvalid

BASE = """\
agent:
  vantage: aws-use1
sites:
  - name: aws-use1
    role: primary
    base_url: http://127.0.0.1:1
  - name: gcp-euw1
    role: standby
    base_url: http://127.0.0.1:2
"""

JOURNEY = """\
journeys:
  - name: j
    steps:
      - name: submit
        method: POST
        path: /orders
        extract: {order_id: $.id}
      - name: get
        path: /orders/{{order_id}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(path: Path) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        load_config(path)
    return [str(e).replace(str(path), "F") for e in info.value.errors]


def test_the_demo_config_is_valid() -> None:
    config = load_config("deploy/demo.yaml")
    assert [s.name for s in config.sites] == ["aws-use1", "gcp-euw1"]
    assert config.quorum == 2
    assert [p.name for p in config.peers] == ["gcp-euw1", "azure-weu"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "agent: [1\n",
            [
                "F:2: (top): YAML syntax: the [...] list opened at line 1 does not close where "
                "expected: a value in it holding ':', ',', '{', '}', '[' or ']' must be quoted"
            ],
        ),
        (BASE + "bogus: 1\n", ["F:10: bogus: unknown key"]),
        (
            BASE.replace("  vantage: aws-use1\n", "  vantage: aws-use1\n  colour: red\n"),
            ["F:3: agent.colour: unknown key"],
        ),
        (
            BASE.replace("role: standby", "role: backup"),
            ["F:8: sites.1.role: Input should be 'primary' or 'standby'"],
        ),
        (
            BASE + "verdict: {failure_threshold: many}\n",
            [
                "F:10: verdict.failure_threshold: Input should be a valid integer, unable to parse "
                "string as an integer"
            ],
        ),
        (
            BASE + "verdict: {peer_stale_after: soon}\n",
            [
                "F:10: verdict.peer_stale_after: invalid duration 'soon': "
                "write it like 15s, 500ms, 2m or 1m30s (units ms, s, m, h, d, largest first)"
            ],
        ),
        (
            BASE + JOURNEY.replace("  - name: j\n", "  - name: j\n    sites: [azure]\n"),
            ["F:12: journeys.0.sites.0: unknown site 'azure' (sites: aws-use1, gcp-euw1)"],
        ),
        (
            BASE + JOURNEY.replace("/orders/{{order_id}}", "/orders/{{order}}"),
            [
                "F:18: journeys.0.steps.1.path: template uses {{order}}, which no earlier step "
                "extracts"
            ],
        ),
        (
            BASE + JOURNEY.replace("$.id", "'$..['"),
            [
                "F:16: journeys.0.steps.0.extract.order_id: invalid JSON path '$..[': Parse error "
                "near the end of string!"
            ],
        ),
        (
            BASE + JOURNEY.replace("path: /orders\n", "path: orders\n"),
            [
                "F:15: journeys.0.steps.0.path: must start with / (it is joined to the site's "
                "base_url)"
            ],
        ),
        (
            BASE + JOURNEY.replace("/orders/{{order_id}}", "/orders/{{order_id.x}}"),
            [
                "F:18: journeys.0.steps.1.path: invalid template {{order_id.x}}: only {{variable}} "
                "is allowed"
            ],
        ),
        (BASE.replace("    role: standby\n", ""), ["F:7: sites.1.role: required key is missing"]),
        (BASE + "sites: []\n", ["F:10: sites: duplicate key"]),
        (
            BASE.replace("base_url: http://127.0.0.1:2", "base_url: ftp://x"),
            ["F:9: sites.1.base_url: expected an http:// or https:// URL"],
        ),
    ],
    ids=[
        "yaml",
        "top-key",
        "nested-key",
        "enum",
        "type",
        "duration",
        "site-ref",
        "template",
        "jsonpath",
        "path",
        "template-syntax",
        "missing",
        "duplicate-key",
        "url",
    ],
)
def test_invalid_config_names_file_line_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert errors_of(write(tmp_path, text)) == expected


def test_every_error_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = BASE.replace("vantage: aws-use1", "vantage: aws-use1\n  listen: nowhere") + "x: 1\n"
    assert errors_of(write(tmp_path, text)) == [
        "F:3: agent.listen: expected HOST:PORT, e.g. 127.0.0.1:9747",
        "F:11: x: unknown key",
    ]


def test_secrets_resolve_and_never_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_TOKEN", "s3cr3t-token")
    secret_file = tmp_path / "key"
    secret_file.write_text("file-secret\n")
    text = BASE + JOURNEY.replace(
        "  - name: j\n",
        "  - name: j\n    bearer_token: ${env:ORDER_TOKEN}\n",
    ).replace(
        "        path: /orders\n",
        f"        path: /orders\n        headers: {{X-Key: '${{file:{secret_file}}}'}}\n",
    )
    config = load_config(write(tmp_path, text))
    journey = config.journeys[0]
    assert journey.bearer_token is not None
    assert journey.bearer_token.get_secret_value() == "s3cr3t-token"
    assert journey.steps[0].headers["X-Key"].get_secret_value() == "file-secret"
    dumped = repr(config) + str(config.model_dump()) + config.model_dump_json()
    assert "s3cr3t-token" not in dumped and "file-secret" not in dumped


def test_missing_secret_names_the_reference_not_a_value(tmp_path: Path) -> None:
    text = BASE.replace(
        "base_url: http://127.0.0.1:1",
        "base_url: http://127.0.0.1:1\n    headers: {X-Key: '${env:NOPE_X}'}",
    )
    assert errors_of(write(tmp_path, text)) == [
        "F:7: sites.0.headers.X-Key: environment variable NOPE_X is not set"
    ]


def test_validate_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, BASE)
    assert main(["validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "nope: 1\n")
    assert main(["validate", str(bad)]) == 2
    assert f"{bad}:10: nope: unknown key" in capsys.readouterr().err


def test_schema_command_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["properties"]) >= {"agent", "sites", "journeys", "verdict", "telemetry"}
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + "maintenance:\n  - {name: w, sites: [azure], start: 2026-12-05T02:00:00Z,"
            " end: 2026-12-05T04:00:00Z}\n",
            ["F:11: maintenance.0.sites.0: unknown site 'azure'"],
        ),
        (
            BASE + "maintenance:\n  - {name: w, sites: [aws-use1], start: 2026-12-05T04:00:00Z,"
            " end: 2026-12-05T02:00:00Z}\n",
            ["F:11: maintenance.0: end must be after start"],
        ),
        (
            BASE + "maintenance:\n  - {name: w, sites: [aws-use1], start: 2026-12-05T02:00:00,"
            " end: 2026-12-05T04:00:00}\n",
            ["F:11: maintenance.0: start and end need a time zone, e.g. 2026-12-05T02:00:00Z"],
        ),
        (
            BASE + "maintenance:\n  - {name: w, sites: [aws-use1]}\n",
            ["F:11: maintenance.0: give either start and end, or weekly"],
        ),
        (
            BASE + "maintenance:\n  - name: w\n    sites: [aws-use1]\n    weekly:"
            " {days: [sun], at: '25:00', duration: 2h}\n",
            ["F:13: maintenance.0.weekly.at: expected a time of day as HH:MM, e.g. 02:30"],
        ),
        (
            BASE + "maintenance:\n  - name: w\n    sites: [aws-use1]\n    weekly:"
            " {days: [sun], at: '02:00', duration: 2h, timezone: Mars/Olympus}\n",
            [
                "F:13: maintenance.0.weekly.timezone: unknown time zone 'Mars/Olympus' (use an "
                "IANA name such as UTC)"
            ],
        ),
        (
            BASE.replace(
                "  vantage: aws-use1\n",
                "  vantage: aws-use1\n  admin_token: same\n  view_token: same\n",
            ),
            [
                "F:3: agent.admin_token: must differ from agent.view_token: every peer holds the "
                "view token"
            ],
        ),
        (
            BASE + "verdict: {failback: {policy: sometimes}}\n",
            ["F:10: verdict.failback.policy: Input should be 'manual' or 'auto'"],
        ),
    ],
    ids=[
        "window-site",
        "window-order",
        "window-naive",
        "window-none",
        "weekly-at",
        "weekly-tz",
        "tokens",
        "failback",
    ],
)
def test_invalid_controls_config_names_file_line_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert errors_of(write(tmp_path, text)) == expected


def test_weekly_maintenance_windows_open_and_close_on_their_days() -> None:
    import datetime as dt

    from failsight.agent.control import MaintenanceConfig, maintenance_holds

    window = MaintenanceConfig.model_validate(
        {
            "name": "patching",
            "sites": ["aws-use1"],
            "reason": "OS patches",
            "weekly": {"days": ["sun"], "at": "23:00", "duration": "2h", "timezone": "UTC"},
        }
    )

    def at(text: str) -> float:
        return dt.datetime.fromisoformat(text).timestamp()

    # 2026-12-06 is a Sunday: open 23:00 Sunday to 01:00 Monday.
    assert window.open_until(at("2026-12-06T22:59:59+00:00")) is None
    assert window.open_until(at("2026-12-06T23:00:00+00:00")) == at("2026-12-07T01:00:00+00:00")
    assert window.open_until(at("2026-12-07T00:30:00+00:00")) == at("2026-12-07T01:00:00+00:00")
    assert window.open_until(at("2026-12-07T01:00:00+00:00")) is None
    assert window.open_until(at("2026-12-09T23:30:00+00:00")) is None  # a Wednesday
    holds = maintenance_holds([window], at("2026-12-06T23:30:00+00:00"))
    assert holds["aws-use1"].by == "maintenance patching"
    assert holds["aws-use1"].source == "maintenance"


# --------------------------------------------------------------------------------------------
# Several files: `--config A --config B` (one shared config, one file per cloud)

# BASE with a listen address to keep and peers to replace: sites.1.base_url stays on line 10.
SHARED = (
    BASE.replace("  vantage: aws-use1\n", "  vantage: placeholder\n  listen: 127.0.0.1:9747\n")
    + "peers:\n"
    + "  - {name: gcp-euw1, url: http://127.0.0.1:3}\n"
    + "  - {name: azure-weu, url: http://127.0.0.1:4}\n"
)

VANTAGE = """\
agent:
  vantage: gcp-euw1
  cloud_provider: gcp
peers:
  - {name: aws-use1, url: http://127.0.0.1:5}
"""


def two_files(tmp_path: Path, over: str, shared: str = SHARED) -> tuple[Path, Path]:
    a, b = tmp_path / "shared.yaml", tmp_path / "vantage.yaml"
    a.write_text(shared)
    b.write_text(textwrap.dedent(over))
    return a, b


def test_later_files_merge_mappings_and_replace_lists(tmp_path: Path) -> None:
    config = load_config(*two_files(tmp_path, VANTAGE))
    # Mappings merge key by key: listen survives from the shared file.
    assert config.agent.vantage == "gcp-euw1"
    assert config.agent.cloud_provider == "gcp"
    assert str(config.agent.listen) == "127.0.0.1:9747"
    # A list is replaced whole, never merged item by item: the shared file's gcp-euw1 peer
    # (this agent's own vantage here) is gone, not kept beside the new one.
    assert [(p.name, str(p.url)) for p in config.peers] == [("aws-use1", "http://127.0.0.1:5")]
    assert [s.name for s in config.sites] == ["aws-use1", "gcp-euw1"]
    # The order matters: the same files the other way round give the shared file's values.
    a, b = two_files(tmp_path, VANTAGE)
    assert load_config(b, a).agent.vantage == "placeholder"


def test_errors_name_the_file_and_line_each_key_came_from(tmp_path: Path) -> None:
    over = """\
    agent:
      vantage: gcp-euw1
      interval_typo: 1
    """
    shared = SHARED.replace("base_url: http://127.0.0.1:2", "base_url: ftp://x")
    a, b = two_files(tmp_path, over, shared)
    with pytest.raises(ConfigInvalid) as info:
        load_config(a, b)
    got = [str(e).replace(str(a), "A").replace(str(b), "B") for e in info.value.errors]
    assert got[0].startswith("A:10: sites.1.base_url: ")  # the shared file's own key
    assert "B:3: agent.interval_typo: unknown key" in got  # the second file's key, its line
    # The cross-checks run in the same answer: B makes this agent gcp-euw1, which A lists
    # as a peer.
    assert "A:12: peers.0.name: a peer cannot have this agent's own vantage name" in got
    # The shared file's errors are listed first: the order the files were given.
    assert [e[0] for e in got] == ["A", "A", "B"]
    # Cross-checks (after the model) point into the right file too.
    a, b = two_files(tmp_path, VANTAGE + "  - {name: aws-use1, url: http://127.0.0.1:6}\n")
    with pytest.raises(ConfigInvalid) as info:
        load_config(a, b)
    assert [(e.file, e.line, e.loc) for e in info.value.errors] == [
        (str(b), 6, ("peers", 1, "name"))
    ]


def test_every_files_syntax_errors_are_reported_in_one_answer(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("agent: [unclosed\n")
    b.write_text("- a list\n")
    with pytest.raises(ConfigInvalid) as info:
        load_config(a, b)
    files = [e.file for e in info.value.errors]
    assert files == [str(a), str(b)]
    assert "the config must be a mapping" in info.value.errors[1].message


def test_a_secret_from_one_file_is_redacted_in_errors_about_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAILSIGHT_TEST_SECRET", "s3cr3t-in-shared")
    shared = SHARED + "verdict:\n  peer_stale_after: ${env:FAILSIGHT_TEST_SECRET}\n"
    a, b = two_files(tmp_path, VANTAGE, shared)
    with pytest.raises(ConfigInvalid) as info:
        load_config(a, b)
    text = str(info.value)
    assert "s3cr3t-in-shared" not in text
    assert "verdict.peer_stale_after" in text


def test_validate_and_rules_take_several_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = two_files(tmp_path, VANTAGE)
    assert main(["validate", str(a), str(b)]) == 0
    assert capsys.readouterr().out == f"{a} + {b}: ok\n"
    assert main(["rules", "--config", str(a), "--config", str(b)]) == 0
    rules = capsys.readouterr().out
    # The vantages the rules count are the merged config's: this one and its only peer.
    assert 'vantage=~"aws-use1|gcp-euw1"' in rules
    b.write_text("agent: {vantage: [not, a, name]}\n")
    assert main(["validate", str(a), str(b)]) == 2
    assert f"{b}:1: agent.vantage: " in capsys.readouterr().err


# One pass: what the loader, the model and the cross-checks each find, in one answer


def test_every_problem_is_reported_in_one_pass_sorted_by_line(tmp_path: Path) -> None:
    # The case users measured: a missing ${env:} variable, an unknown key, an ftp:// URL and
    # status 999 came out in two rounds (the secrets first). A template error and a reference
    # error (found only by the cross-checks) come out in the same answer now.
    text = """\
    agent:
      vantage: aws-use1
      admin_token: ${env:FAILSIGHT_TEST_UNSET_A}
    sites:
      - {name: aws-use1, role: primary, base_url: http://127.0.0.1:1}
      - {name: gcp-euw1, role: standby, base_url: ftp://127.0.0.1:2}
    journeys:
      - name: j
        bearer_token: ${env:FAILSIGHT_TEST_UNSET_B}
        sites: [aws-use1, azure-weu]
        stepz: []
        steps:
          - {name: submit, method: POST, path: /orders, expect: {status: 999}}
          - {name: get, path: "/orders/{{order_id}}"}
    """
    assert errors_of(write(tmp_path, text)) == [
        "F:3: agent.admin_token: environment variable FAILSIGHT_TEST_UNSET_A is not set",
        "F:6: sites.1.base_url: expected an http:// or https:// URL",
        "F:9: journeys.0.bearer_token: environment variable FAILSIGHT_TEST_UNSET_B is not set",
        "F:10: journeys.0.sites.1: unknown site 'azure-weu' (sites: aws-use1)",
        "F:11: journeys.0.stepz: unknown key",
        "F:13: journeys.0.steps.0.expect.status: 999 is not an HTTP status code",
        "F:14: journeys.0.steps.1.path: template uses {{order_id}}, which no earlier step extracts",
    ]


def test_what_a_refused_item_would_have_defined_is_not_reported_missing(tmp_path: Path) -> None:
    # gcp-euw1 is refused (its URL), so the journey naming it must not also say "unknown site
    # 'gcp-euw1'"; the refused extract must not make the next step's template "undefined"; and
    # the only primary's refusal must not add "at least one site must have role: primary".
    text = """\
    agent: {vantage: aws-use1}
    sites:
      - {name: aws-use1, role: primary, base_url: ftp://127.0.0.1:1}
      - {name: gcp-euw1, role: standby, base_url: http://127.0.0.1:2}
    journeys:
      - name: j
        sites: [aws-use1, gcp-euw1]
        steps:
          - {name: submit, path: /orders, extract: {order_id: "$..["}}
          - {name: get, path: "/orders/{{order_id}}"}
    """
    errors = errors_of(write(tmp_path, text))
    assert len(errors) == 2, errors
    assert errors[0] == "F:3: sites.0.base_url: expected an http:// or https:// URL"
    assert errors[1].startswith("F:9: journeys.0.steps.0.extract.order_id: invalid JSON path")


def test_fixing_what_was_reported_leaves_nothing_new(tmp_path: Path) -> None:
    broken = BASE.replace("base_url: http://127.0.0.1:2", "base_url: ftp://127.0.0.1:2")
    broken += JOURNEY.replace("path: /orders\n", "path: orders\n")
    assert [e.split(": ")[1] for e in errors_of(write(tmp_path, broken))] == [
        "sites.1.base_url",
        "journeys.0.steps.0.path",
    ]
    load_config(write(tmp_path, BASE + JOURNEY))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "agent:\n  vantage: a\n   listen: x\n",
            "F:3: (top): YAML syntax: a ':' where no key can start: quote a value that holds "
            "': ', indent a key exactly like the keys above it, or give the line above its ':'",
        ),
        (
            "agent:\n    vantage: a\n  listen: x\n",
            "F:3: (top): YAML syntax: this line is not indented like the keys of the mapping at "
            "line 1: line it up with them, or indent it under the key it belongs to",
        ),
        (
            "sites:\n  - name: a\n  role: primary\n",
            "F:3: (top): YAML syntax: this line does not continue the list that starts at line "
            "2: begin an item with '- ', or indent the line under the item it belongs to",
        ),
        (
            "agent:\n\tvantage: a\n",
            "F:2: (top): YAML syntax: a tab character: YAML indents with spaces only",
        ),
        (
            'agent:\n  vantage: "abc\n',
            "F:3: (top): YAML syntax: the quoted text opened at line 2 is never closed",
        ),
        (
            "sites:\n  - {name: a, path: /x/{{id}}}\n",
            "F:2: (top): YAML syntax: the {...} mapping opened at line 2 does not close where "
            "expected: a value in it holding ':', ',', '{', '}', '[' or ']' must be quoted "
            "(path: '/orders/{{order_id}}')",
        ),
        (
            "journeys:\n  - name: j\n    steps:\n      - name: s\n        path: {{order_id}}\n",
            "F:5: journeys.0.steps.0.path: an unquoted {{template}} is read as YAML: quote it, "
            "e.g. path: '/orders/{{order_id}}'",
        ),
        (
            'agent: "\\d"\n',
            "F:1: (top): YAML syntax: an unknown backslash escape in a "
            "double-quoted string: write the value in single quotes (a regex: '^ord-\\d+$'), or "
            "double the backslash",
        ),
    ],
    ids=["indent", "dedent", "list", "tab", "quote", "flow-template", "template", "escape"],
)
def test_yaml_syntax_errors_say_what_is_wrong_in_plain_words(
    tmp_path: Path, text: str, expected: str
) -> None:
    errors = errors_of(write(tmp_path, text))
    assert expected in errors, errors


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("1m30s", 90.0), ("1h30m", 5400.0), ("1d12h", 129600.0), ("2s500ms", 2.5), ("45", 45.0)],
)
def test_compound_durations(tmp_path: Path, written: str, seconds: float) -> None:
    config = load_config(write(tmp_path, BASE + f"verdict: {{flap_half_life: {written}}}\n"))
    assert config.verdict.flap_half_life == seconds


@pytest.mark.parametrize("written", ["30s1m", "1m1m", "1m30", "1 m 30", "ms"])
def test_a_duration_out_of_order_or_without_units_is_refused(tmp_path: Path, written: str) -> None:
    assert errors_of(write(tmp_path, BASE + f"verdict: {{flap_half_life: '{written}'}}\n")) == [
        f"F:10: verdict.flap_half_life: invalid duration '{written}': write it like 15s, "
        "500ms, 2m or 1m30s (units ms, s, m, h, d, largest first)"
    ]


def test_a_site_url_with_an_impossible_port_is_refused(tmp_path: Path) -> None:
    text = BASE.replace("http://127.0.0.1:2", "http://127.0.0.1:99999")
    assert errors_of(write(tmp_path, text)) == [
        "F:9: sites.1.base_url: the URL's port must be a number from 0 to 65535"
    ]
