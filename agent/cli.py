"""The `failsight` command line: run, validate, once, rules, hold, failback, demo, schema,
version."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
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


def _duration_arg(value: str) -> float:
    from failsight.core.configtypes import parse_duration

    try:
        seconds = float(parse_duration(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 <= seconds < 86400 * 365:
        raise argparse.ArgumentTypeError("expected a duration such as 0s, 30s or 2m")
    return seconds


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


def cmd_version(args: argparse.Namespace) -> int:
    print(f"failsight {__version__}")
    return EXIT_OK


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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="failsight", description=__doc__)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: info (error for the demo, whose status lines say enough)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT; SIGHUP reloads")
    _config_option(run)
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="check a config file; exit 2 listing every error")
    val.add_argument(
        "file", nargs="+", help="the config; several files are merged in order, as --config does"
    )
    val.set_defaults(func=cmd_validate)
    once = sub.add_parser("once", help="run each check once, print results, exit 1 on failure")
    _config_option(once)
    once.add_argument("--check", help="only checks whose name or target is this")
    once.add_argument("--json", action="store_true", help="one JSON object per result")
    once.set_defaults(func=cmd_once)
    rules = sub.add_parser("rules", help="print the Prometheus rules generated from the config")
    _config_option(rules)
    rules.add_argument(
        "--failover-for",
        type=_duration_arg,
        default=0.0,
        metavar="DURATION",
        help="`for:` of FailsightFailoverRecommended (default 0s: the agents' own hysteresis "
        "already confirmed the outage)",
    )
    from failsight.agent.rules import RUNBOOK_BASE

    rules.add_argument(
        "--runbook-base",
        default=RUNBOOK_BASE,
        metavar="URL",
        help="where the alert docs are hosted: each alert's runbook_url is URL#<alert name in "
        "lower case> (default: %(default)s)",
    )
    from failsight.agent.rules import FORMATS

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
        control = sub.add_parser(name, help=text, description=text)
        control.add_argument("site")
        control.add_argument(
            "--agent", help="the agent's API base URL (default: --config's listen, or :9747)"
        )
        _config_option(
            control, required=False, help="take the agent URL and admin token from this config"
        )
        control.add_argument(
            "--token-file", help="file holding agent.admin_token (or FAILSIGHT_ADMIN_TOKEN)"
        )
        control.add_argument("--ca-file", help="extra trust for an https agent")
        control.add_argument("--by", help="who is acting (default: $USER)")
        control.add_argument("--reason", help="why (required for a hold)")
        if name == "hold":
            when = control.add_mutually_exclusive_group()
            when.add_argument("--for", dest="for_", metavar="DURATION", help="e.g. 2h")
            when.add_argument("--until", metavar="TIME", help="RFC 3339, e.g. 2026-12-05T04:00Z")
            when.add_argument("--lift", action="store_true", help="end the hold now")
        control.set_defaults(func=cmd_control)
    demo = sub.add_parser("demo", help="the simulated two-cloud platform and an agent on it")
    demo.add_argument(
        "--scenario",
        default="steady",
        choices=[
            "steady",
            "site-outage",
            "flapping",
            "total-outage",
            "vantage-partition",
            "vantage-offline",
        ],
    )
    demo.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    demo.set_defaults(func=cmd_demo)
    schema = sub.add_parser("schema", help="print the config's JSON Schema")
    schema.set_defaults(func=cmd_schema)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(func=cmd_version)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from failsight.agent.logs import configure_logging

    default_level = "error" if args.command == "demo" else "info"
    configure_logging(args.log_level or default_level, stdout=True)
    code: int = args.func(args)
    return code
