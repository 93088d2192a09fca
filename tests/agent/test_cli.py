"""The `failsight` command line: options anywhere on the line, help for everything, durations
as the config writes them, and `failsight init`'s starter config run against the simulated
platform."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from pathlib import Path

import pytest

from failsight.agent.cli import main, parser
from failsight.agent.config import load_config
from failsight.agent.demo.run import SCENARIOS
from failsight.agent.demo.simulator import Platform
from failsight.core.version import __version__

VALID = """\
agent: {vantage: laptop}
sites:
  - {name: aws-use1, role: primary, base_url: "http://127.0.0.1:1"}
"""


def _commands(top: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _words(text: str) -> str:
    return " ".join(text.split())


# --- options anywhere on the line ---------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "warning", "once", "--config", "c.yaml"],
        ["once", "--log-level", "warning", "--config", "c.yaml"],
        ["once", "--config", "c.yaml", "--log-level", "warning"],
    ],
)
def test_log_level_means_the_same_before_or_after_the_command(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    assert (args.command, args.log_level, args.config) == ("once", "warning", ["c.yaml"])


def test_a_command_without_log_level_keeps_the_one_given_before_it() -> None:
    assert parser().parse_args(["--log-level", "error", "validate", "c.yaml"]).log_level == "error"
    assert parser().parse_args(["validate", "c.yaml"]).log_level is None
    # Given twice, the later one wins, as with any repeated option.
    argv = ["--log-level", "error", "validate", "c.yaml", "--log-level", "debug"]
    assert parser().parse_args(argv).log_level == "debug"


@pytest.mark.parametrize(
    ("argv", "level"),
    [
        (["validate", "{path}", "--log-level", "warning"], logging.WARNING),
        (["--log-level", "error", "validate", "{path}"], logging.ERROR),
        (["validate", "{path}", "--log-level", "debug"], logging.DEBUG),
        (["validate", "{path}"], logging.INFO),
    ],
)
def test_log_level_after_the_command_sets_the_level(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], level: int
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(VALID)
    assert main([a.format(path=path) for a in argv]) == 0
    assert logging.getLogger().level == level
    assert capsys.readouterr().out == f"{path}: ok\n"


def test_version_flag_prints_what_the_version_command_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["version"]) == 0
    command = capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == command == f"failsight {__version__}\n"


# --- help -----------------------------------------------------------------------------------


def test_every_command_option_and_positional_has_help() -> None:
    top = parser()
    missing = []
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    missing += [
        f"{c.dest}: no line in the command list" for c in sub._choices_actions if not c.help
    ]
    for name, command in [("failsight", top), *_commands(top).items()]:
        if not command.description:
            missing.append(f"{name}: no description")
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []
    assert set(_commands(top)) >= {"init", "validate", "once", "run", "hold", "demo", "version"}


def test_run_help_documents_the_signals_and_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--help"])
    assert exited.value.code == 0
    text = _words(capsys.readouterr().out)
    for needle in (
        "SIGTERM, SIGINT stop gracefully",
        "agent.shutdown_grace to finish (their cleanup steps included), then exit 0",
        "SIGHUP re-read every --config file; an invalid new config is refused",
        "0 stopped by SIGTERM or SIGINT",
        '1 it cannot start: one "failsight: ..." line on stderr',
        "2 the config is invalid",
    ):
        assert needle in text


def test_demo_help_lists_every_scenario_with_its_meaning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = _words(capsys.readouterr().out)
    for name, meaning in SCENARIOS.items():
        assert f" {name} {_words(meaning)}" in text


def test_demo_refuses_an_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["demo", "--scenario", "meteor"])
    assert exited.value.code == 2
    assert "unknown scenario 'meteor': choose one of steady, site-outage" in capsys.readouterr().err
    assert parser().parse_args(["demo"]).scenario == "steady"


# --- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("1m30s", 90.0), ("120", 120.0), ("1.5", 1.5)]
)
def test_demo_duration_is_written_as_in_the_config(text: str, seconds: float) -> None:
    assert parser().parse_args(["demo", "--duration", text]).duration == seconds


def test_demo_runs_until_stopped_without_a_duration() -> None:
    assert parser().parse_args(["demo"]).duration is None


@pytest.mark.parametrize("text", ["soon", "0s", "0", "-5", "1m30"])
def test_demo_refuses_a_duration_that_is_none(
    capsys: pytest.CaptureFixture[str], text: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["demo", "--duration", text])
    assert exited.value.code == 2
    assert "argument --duration: " in capsys.readouterr().err


def test_rules_failover_for_takes_compound_durations_and_zero() -> None:
    argv = ["rules", "--config", "c.yaml", "--failover-for"]
    assert parser().parse_args([*argv, "1m30s"]).failover_for == 90.0
    assert parser().parse_args([*argv, "0s"]).failover_for == 0.0


# --- failsight init ---------------------------------------------------------------------------


def test_init_prints_a_valid_config_with_the_sites_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _init(
        capsys,
        "--site",
        "aws-use1=https://orders.aws.example.com",
        "--site",
        "gcp-euw1=https://orders.gcp.example.com/base/",
        "--site",
        "azure-weu=http://10.0.0.7:8080",
        "--vantage",
        "aws-use1",
        "--listen",
        "0.0.0.0:9747",
    )
    assert (code, err) == (0, "")
    path = tmp_path / "config.yaml"
    path.write_text(out)
    config = load_config(path)
    assert [(s.name, s.role, s.base_url) for s in config.sites] == [
        ("aws-use1", "primary", "https://orders.aws.example.com"),
        ("gcp-euw1", "standby", "https://orders.gcp.example.com/base"),
        ("azure-weu", "standby", "http://10.0.0.7:8080"),
    ]
    assert (config.agent.vantage, config.agent.listen) == ("aws-use1", "0.0.0.0:9747")
    assert config.verdict.quorum == 1
    assert [j.name for j in config.journeys] == ["order-submit"]
    # What to change for a real platform is said where it applies.
    for needle in ("docs/configuration.md", "admin_token: ${file:", "${env:", "peers:", "quorum"):
        assert needle in out
    assert main(["validate", str(path)]) == 0


def test_init_defaults_to_a_lone_agent_on_the_usual_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _init(capsys, "--site", "only=http://127.0.0.1:18081")
    assert code == 0
    path = tmp_path / "config.yaml"
    path.write_text(out)
    config = load_config(path)
    assert (config.agent.vantage, config.agent.listen) == ("laptop", "127.0.0.1:9750")
    assert [(s.name, s.role) for s in config.sites] == [("only", "primary")]


@pytest.mark.parametrize(
    "name",
    [
        'say "hi"',
        "back\\slash",
        "colon: and # hash",
        "{{tenant}}",
        "- dash",
        "café 東京 🚀",
        "line\u2028sep",
        "next\x85line",
        "yes",
        "123",
    ],
)
def test_init_quotes_names_so_they_read_back_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    code, out, err = _init(capsys, "--site", f"{name}=http://127.0.0.1:1", "--vantage", name)
    assert (code, err) == (0, "")
    path = tmp_path / "config.yaml"
    path.write_text(out, encoding="utf-8")
    config = load_config(path)
    assert (config.sites[0].name, config.agent.vantage) == (name, name)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give at least one --site NAME=URL (the first one is the primary)"),
        (
            ["--site", "aws-use1"],
            "--site aws-use1: expected NAME=URL, e.g. aws-use1=https://orders.example.com",
        ),
        (
            ["--site", "=http://127.0.0.1:1"],
            "--site =http://127.0.0.1:1: expected NAME=URL, e.g. aws-use1=https://orders.example.com",
        ),
        (
            ["--site", "a=ftp://user:hunter2@files.example.com"],
            "--site a: expected an http:// or https:// URL, e.g. https://orders.example.com",
        ),
        (
            ["--site", "a=orders.example.com"],
            "--site a: expected an http:// or https:// URL, e.g. https://orders.example.com",
        ),
        (
            ["--site", "a=http://x", "--site", "b=http://y", "--site", "a=http://z"],
            "--site a is given twice: site names must be unique",
        ),
        (
            ["--site", "a=http://x", "--listen", "localhost"],
            "--listen: expected HOST:PORT, e.g. 127.0.0.1:9747",
        ),
        (
            ["--site", "a=http://x", "--vantage", " laptop"],
            "--vantage: must be non-empty with no leading or trailing blanks",
        ),
        (
            ["--site", "a\x07b=http://x"],
            "--site 'a?b': must not contain control characters",
        ),
        (["--site", "a=http://has space"], "--site a: expected an http:// or https:// URL"),
        (
            ["--site", "a=http://[not-ipv6"],
            "--site a: expected an http:// or https:// URL, e.g. https://orders.example.com",
        ),
        (
            ["--site", "a=http://127.0.0.1:99999"],
            "--site a: expected an http:// or https:// URL, e.g. https://orders.example.com",
        ),
        (["--site", "a=http://${env:HOST}"], "--site a: must not contain '${'"),
    ],
)
def test_init_refuses_bad_input_in_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _init(capsys, *argv)
    assert (code, out, err) == (2, "", f"failsight init: {message}\n")
    assert "hunter2" not in err


async def test_init_output_runs_once_against_the_simulated_platform(tmp_path: Path) -> None:
    # Exactly what a user types: `failsight init ... > c.yaml && failsight once --config c.yaml`,
    # as real processes, so nothing but the config may reach the redirected stdout.
    async with Platform(["aws-use1", "gcp-euw1"], allocation_delay=0.05) as platform:
        path = tmp_path / "c.yaml"
        with path.open("w") as out:
            init = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "failsight",
                "init",
                *(a for site, url in platform.urls.items() for a in ("--site", f"{site}={url}")),
                stdout=out,
            )
            assert await init.wait() == 0
        once = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "failsight",
            "once",
            "--config",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await once.communicate()
        assert once.returncode == 0, stdout.decode() + stderr.decode()
        lines = stdout.decode().splitlines()
        for site in ("aws-use1", "gcp-euw1"):
            assert re.match(rf"ok +journey/order-submit/{site} \d+ms$", lines.pop(0))
            for step, status in (("order_submit", 201), ("order_get", 200), ("cancel_order", 200)):
                assert re.match(rf" +ok +{step} \d+ms HTTP {status}$", lines.pop(0))
            state = platform.state(site)
            # The cleanup removed the order; the agent marked every request as synthetic.
            assert (state.orders, state.requests_total) == ({}, 3)
            assert {r.headers["X-Failsight-Synthetic"] for r in state.requests} == {"1"}
        assert lines == []
