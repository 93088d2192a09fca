"""The `failsight` command line: init, validate, once, run, rules, hold, failback, demo,
schema, version."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from failsight.agent.config import Config, load_config
from failsight.agent.yamlsource import ConfigInvalid, ConfigUnreadable
from failsight.core.version import __version__

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when it is installed (the `fast` extra)."""
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _load(paths: Sequence[str]) -> Config | None:
    try:
        return load_config(*paths)
    except ConfigInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def _load_for_start(paths: Sequence[str]) -> Config | int:
    """The config for a command that starts work (`run`, `once`), or its exit code: 1 when
    a file cannot be read at all (a start-up failure, one line), 2 when it is invalid."""
    try:
        return load_config(*paths)
    except ConfigUnreadable as exc:
        print(f"failsight: {exc.errors[0]}", file=sys.stderr)
        return EXIT_FAILED
    except ConfigInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return EXIT_INVALID


def cmd_validate(args: argparse.Namespace) -> int:
    if _load(args.file) is None:
        return EXIT_INVALID
    print(f"{' + '.join(args.file)}: ok")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from failsight.agent.logs import configure_logging
    from failsight.agent.runtime import Agent
    from failsight.agent.startup import StartupError, startup_problem

    config = _load_for_start(args.config)
    if isinstance(config, int):
        return config
    if args.log_level is None:
        configure_logging(config.telemetry.logs.level, config.telemetry.logs.stdout)
    problem = startup_problem(config)
    if problem is None:
        try:
            run_async(Agent(config, args.config).run())
        except StartupError as exc:
            problem = str(exc)
    if problem is not None:
        # One line and exit 1, no traceback: a second agent on a busy port, a privileged
        # port, an unwritable state dir are the operator's to fix, not a bug to debug.
        print(f"failsight: {problem}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_once(args: argparse.Namespace) -> int:
    from failsight.agent.once import run_once

    config = _load_for_start(args.config)
    if isinstance(config, int):
        return config
    results = run_async(run_once(config, args.check))
    if not results:
        print(f"no check matches {args.check!r}", file=sys.stderr)
        return EXIT_INVALID
    for result in results:
        if args.json:
            print(json.dumps(result.summary(), default=str))
            continue
        outcome = "ok    " if result.ok else "FAILED"
        print(
            f"{outcome} {result.check} {result.duration * 1000:.0f}ms"
            + ("" if result.ok else f" [{result.reason}] {result.message}")
        )
        for step in (*result.steps, *result.cleanup):
            mark = "skip" if step.skipped else ("ok" if step.ok else "FAIL")
            print(
                f"    {mark:4} {step.name} {step.duration * 1000:.0f}ms"
                + (f" HTTP {step.status}" if step.status else "")
                + (f" {step.message}" if step.message else "")
            )
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def cmd_rules(args: argparse.Namespace) -> int:
    from failsight.agent.rules import render_rules, rules_input

    if args.label and args.format != "prometheusrule":
        print("failsight rules: --label needs --format prometheusrule", file=sys.stderr)
        return EXIT_INVALID
    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    try:
        inp = rules_input(config, failover_for=args.failover_for, runbook_base=args.runbook_base)
        print(render_rules(inp, args.format, dict(args.label or ())), end="")
    except ValueError as exc:
        print(f"{' + '.join(args.config)}: cannot generate rules: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _seconds(value: str, example: str, *, zero: bool) -> float:
    """A duration argument, written as in the config (`90s`, `1m30s`, or a number of
    seconds), in seconds."""
    from failsight.core.configtypes import parse_duration

    try:
        seconds = float(parse_duration(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    in_range = seconds >= 0 if zero else seconds > 0
    if not in_range or seconds >= 86400 * 365:
        raise argparse.ArgumentTypeError(f"expected a duration such as {example}")
    return seconds


def _duration_arg(value: str) -> float:
    return _seconds(value, "0s, 30s or 2m", zero=True)


def _positive_duration_arg(value: str) -> float:
    return _seconds(value, "90s, 1m30s or 120", zero=False)


def _label_arg(value: str) -> tuple[str, str]:
    key, sep, label = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return key, label


def cmd_control(args: argparse.Namespace) -> int:
    """`hold` and `failback`: one call to an agent's operator API (any agent: the others
    learn the action from it)."""
    import os

    url, token = args.agent, os.environ.get("FAILSIGHT_ADMIN_TOKEN")
    if args.config is not None:
        config = _load(args.config)
        if config is None:
            return EXIT_INVALID
        url = url or f"http://{config.agent.listen}"
        if token is None and config.agent.admin_token is not None:
            token = config.agent.admin_token.get_secret_value()
    if args.token_file is not None:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            print(f"cannot read --token-file {args.token_file}: {exc.strerror}", file=sys.stderr)
            return EXIT_INVALID
    if not token:
        print(
            "no admin token: set FAILSIGHT_ADMIN_TOKEN, or give --token-file or --config",
            file=sys.stderr,
        )
        return EXIT_INVALID
    url = (url or "http://127.0.0.1:9747").rstrip("/")
    body: dict[str, object] = {"by": args.by or os.environ.get("USER") or "operator"}
    if getattr(args, "reason", None):
        body["reason"] = args.reason
    method, path = "POST", f"/v1/sites/{args.site}/failback"
    if args.command == "hold":
        path = f"/v1/sites/{args.site}/hold"
        if args.lift:
            method = "DELETE"
        elif args.until is not None:
            body["until"] = args.until
        elif args.for_ is not None:
            body["for"] = args.for_
        else:
            print("hold: give --for DURATION or --until TIME (or --lift)", file=sys.stderr)
            return EXIT_INVALID
    status, answer = run_async(_call_agent(method, url + path, token, body, args.ca_file))
    if status is None or status >= 300:
        error = answer.get("error") if isinstance(answer, dict) else answer
        print(f"{url}: {f'HTTP {status}: ' if status else ''}{error}", file=sys.stderr)
        return EXIT_FAILED
    verdict = answer.get("verdict", {}) if isinstance(answer, dict) else {}
    action = answer.get("action", {}) if isinstance(answer, dict) else {}
    print(
        f"{action.get('kind')} {args.site} recorded by {action.get('origin')} "
        f"(id {action.get('id')}); verdict now {verdict.get('verdict')}"
    )
    return EXIT_OK


async def _call_agent(
    method: str, url: str, token: str, body: dict[str, object], ca_file: str | None
) -> tuple[int | None, Any]:
    import aiohttp

    from failsight.core.http import ssl_context

    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.request(
                method, url, json=body, headers=headers, ssl=ssl_context(ca_file)
            ) as response,
        ):
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text[:200]
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        from failsight.core.http import classify

        return None, f"cannot reach the agent: {classify(exc)[1]}"


def cmd_schema(args: argparse.Namespace) -> int:
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "failsight config"
    print(json.dumps(schema, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from failsight.agent.demo.run import run_demo

    return run_async(run_demo(scenario=args.scenario, duration=args.duration))


def cmd_init(args: argparse.Namespace) -> int:
    from failsight.agent.init import InitRefused, parse_site, starter_config

    try:
        sites = [parse_site(text) for text in args.site or ()]
        print(starter_config(sites, args.vantage, args.listen), end="")
    except InitRefused as exc:
        print(f"failsight init: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"failsight {__version__}")
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be written only when its help is printed."""

    epilog_from: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.epilog_from is not None:
            self.epilog = self.epilog_from()
        return super().format_help()


def _global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """The options every command takes, before or after its name. Each command's copy
    defaults to SUPPRESS: a command parser's values overwrite the top level's, and an unset
    option there must not undo `failsight --log-level warning once ...`."""
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=default,
        help="the least severe log lines written (JSON lines); default: info, for `run` the "
        "config's telemetry.logs.level, for `demo` error (its status lines say enough)",
    )


def _config_option(
    command: argparse.ArgumentParser, *, required: bool = True, help: str = "the config file"
) -> None:
    command.add_argument(
        "--config",
        action="append",
        required=required,
        metavar="FILE",
        help=f"{help}; give it again to merge more files in order: mappings merge key by key, "
        "a later file's list or value replaces the earlier one (docs/configuration.md)",
    )


_RUN_EPILOG = """signals:
  SIGTERM, SIGINT  stop gracefully: no new runs start, runs in flight get
                   agent.shutdown_grace to finish (their cleanup steps included),
                   then exit 0
  SIGHUP           re-read every --config file; an invalid new config is refused
                   (logged, listing every problem) and the running one stays

exit status:
  0  stopped by SIGTERM or SIGINT
  1  it cannot start: one "failsight: ..." line on stderr (a busy or privileged
     port, an unwritable agent.state_dir, a config file that cannot be read)
  2  the config is invalid: every problem listed as FILE:LINE: key: message
"""


def _scenarios_epilog() -> str:
    # Read from the demo itself, and only for `demo --help`: importing it loads the whole
    # runtime, which no other command line should pay for.
    from failsight.agent.demo.run import SCENARIOS

    width = max(map(len, SCENARIOS)) + 4
    lines = [
        textwrap.fill(
            text, 79, initial_indent=f"  {name:{width - 2}}", subsequent_indent=" " * width
        )
        for name, text in SCENARIOS.items()
    ]
    return "scenarios (--scenario):\n" + "\n".join(lines) + "\n"


def _scenario_arg(value: str) -> str:
    from failsight.agent.demo.run import SCENARIOS

    if value not in SCENARIOS:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {value!r}: choose one of {', '.join(SCENARIOS)}"
        )
    return value


def parser() -> argparse.ArgumentParser:
    from failsight.agent.init import DEFAULT_LISTEN, DEFAULT_VANTAGE
    from failsight.agent.rules import FORMATS, RUNBOOK_BASE

    p = _Parser(
        prog="failsight",
        description="Synthetic journeys, replication lag and dependency checks across clouds, "
        "and the failover verdict they add up to.",
        epilog="Options may come before or after the command: `failsight once --config c.yaml "
        "--log-level warning` is `failsight --log-level warning once --config c.yaml`. "
        "docs/configuration.md describes every command and config key.",
    )
    _global_options(p, default=None)
    p.add_argument(
        "--version",
        action="version",
        version=f"failsight {__version__}",
        help="print the version and exit (as `failsight version` does)",
    )
    sub = p.add_subparsers(
        dest="command",
        required=True,
        title="commands",
        metavar="COMMAND",
        help="`failsight COMMAND --help` describes each one",
    )
    common = _Parser(add_help=False)
    _global_options(common, default=argparse.SUPPRESS)

    def command(name: str, help: str, description: str, **kwargs: Any) -> _Parser:
        # Wrapped here for the commands whose raw formatter keeps an epilog's layout.
        text = textwrap.fill(description, 79)
        return sub.add_parser(name, help=help, description=text, parents=[common], **kwargs)

    init = command(
        "init",
        "print a commented starter config for the sites given",
        "Print a commented starter config to stdout: this agent, the sites given, one "
        "journey, a quorum of 1. It validates and runs as is against the demo platform "
        "(`make demo`); its comments say what to change for a real one. Exit 2 with one line "
        "on stderr when the options cannot make a valid config.",
    )
    init.add_argument(
        "--site",
        action="append",
        metavar="NAME=URL",
        help="a site to watch: its name and base URL (http:// or https://); once per site, "
        "the first is the primary, the others are its standbys",
    )
    init.add_argument(
        "--vantage",
        default=DEFAULT_VANTAGE,
        metavar="NAME",
        help="where this agent looks from, one vote in the quorum: in production the cloud or "
        "region it runs in (default: %(default)s)",
    )
    init.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="the address of the agent's HTTP API (default: %(default)s)",
    )
    init.set_defaults(func=cmd_init)

    val = command(
        "validate",
        "check a config file; exit 2 listing every error",
        "Check a config without starting anything: exit 0 printing `FILE: ok`, or exit 2 "
        "listing every problem as FILE:LINE: key: message.",
    )
    val.add_argument(
        "file", nargs="+", help="the config; several files are merged in order, as --config does"
    )
    val.set_defaults(func=cmd_validate)

    once = command(
        "once",
        "run each check once, print results, exit 1 on failure",
        "Run every check (or those --check names) once, without the server or the schedule, "
        "and print each result with its steps. Exit 0 when all passed, 1 when one failed, "
        "2 when the config is invalid or no check matches --check.",
    )
    _config_option(once)
    once.add_argument(
        "--check", metavar="NAME", help="only the checks whose name or target is NAME"
    )
    once.add_argument("--json", action="store_true", help="one JSON object per result")
    once.set_defaults(func=cmd_once)

    run = command(
        "run",
        "run the agent until SIGTERM/SIGINT; SIGHUP reloads",
        "Run the agent: every check on its schedule, the views and verdicts, and the HTTP API "
        "(status page, /metrics, /v1/...) on agent.listen, until it is stopped.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_option(run)
    run.set_defaults(func=cmd_run)

    rules = command(
        "rules",
        "print the Prometheus rules generated from the config",
        "Print the Prometheus rule file for this config: SLO recording rules and burn-rate "
        "alerts, the failover, dependency and agent alerts. Exit 2 when the config is invalid.",
    )
    _config_option(rules)
    rules.add_argument(
        "--failover-for",
        type=_duration_arg,
        default=0.0,
        metavar="DURATION",
        help="`for:` of FailsightFailoverRecommended (default 0s: the agents' own hysteresis "
        "already confirmed the outage)",
    )
    rules.add_argument(
        "--runbook-base",
        default=RUNBOOK_BASE,
        metavar="URL",
        help="where the alert docs are hosted: each alert's runbook_url is URL#<alert name in "
        "lower case> (default: %(default)s)",
    )
    rules.add_argument(
        "--format",
        choices=FORMATS,
        default="rules",
        help="`rules`: a Prometheus rule file (the default); `prometheusrule`: the same groups "
        "in a Prometheus Operator PrometheusRule object",
    )
    rules.add_argument(
        "--label",
        type=_label_arg,
        action="append",
        metavar="KEY=VALUE",
        help="with --format prometheusrule: a label for the object's metadata, e.g. the one your "
        "Prometheus resource's ruleSelector matches (release=kube-prometheus-stack)",
    )
    rules.set_defaults(func=cmd_rules)

    for name, text in (
        ("hold", "hold a site: it is never failed over until the hold ends (or --lift it)"),
        ("failback", "release a latched failover: the site's health answers 200 again"),
    ):
        control = command(
            name,
            text,
            f"{text[0].upper()}{text[1:]}. One call to any agent's operator API (the others "
            "learn it from that one), with agent.admin_token. Exit 1 when the agent refuses or "
            "cannot be reached, 2 when no token or an invalid config is given.",
        )
        control.add_argument("site", help="the site's name, as in the config's sites")
        control.add_argument(
            "--agent",
            metavar="URL",
            help="the agent's API base URL (default: --config's listen, or :9747)",
        )
        _config_option(
            control, required=False, help="take the agent URL and admin token from this config"
        )
        control.add_argument(
            "--token-file",
            metavar="FILE",
            help="file holding agent.admin_token (or FAILSIGHT_ADMIN_TOKEN)",
        )
        control.add_argument("--ca-file", metavar="FILE", help="extra trust for an https agent")
        control.add_argument("--by", metavar="NAME", help="who is acting (default: $USER)")
        control.add_argument("--reason", metavar="TEXT", help="why (required for a hold)")
        if name == "hold":
            when = control.add_mutually_exclusive_group()
            when.add_argument(
                "--for", dest="for_", metavar="DURATION", help="how long, e.g. 2h or 1h30m"
            )
            when.add_argument("--until", metavar="TIME", help="RFC 3339, e.g. 2026-12-05T04:00Z")
            when.add_argument("--lift", action="store_true", help="end the hold now")
        control.set_defaults(func=cmd_control)

    demo = command(
        "demo",
        "the simulated two-cloud platform and an agent on it",
        "Start the simulated two-site platform and one agent per cloud watching it (status "
        "page on http://127.0.0.1:9747/), print a status line as views and verdicts change, "
        "and inject the faults of --scenario.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.epilog_from = _scenarios_epilog
    demo.add_argument(
        "--scenario",
        default="steady",
        type=_scenario_arg,
        metavar="NAME",
        help="the faults to inject, listed below (default: %(default)s)",
    )
    demo.add_argument(
        "--duration",
        type=_positive_duration_arg,
        default=None,
        metavar="DURATION",
        help="stop after this long, e.g. 90s, 1m30s or a number of seconds (default: until Ctrl-C)",
    )
    demo.set_defaults(func=cmd_demo)

    schema = command(
        "schema",
        "print the config's JSON Schema",
        "Print the config's JSON Schema (draft 2020-12), for editor completion and checks.",
    )
    schema.set_defaults(func=cmd_schema)
    version = command("version", "print the version", "Print failsight's version.")
    version.set_defaults(func=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from failsight.agent.logs import configure_logging

    default_level = "error" if args.command == "demo" else "info"
    # What these print is a file to redirect (`failsight init > config.yaml`): logs go to
    # stderr, so that no log line can end up inside it.
    stdout = args.command not in {"init", "rules", "schema"}
    configure_logging(args.log_level or default_level, stdout=stdout)
    code: int = args.func(args)
    return code
