"""The `failsight` command line: run, validate, once, rules, demo, schema, version."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from agent import __version__
from agent.config import Config, load_config
from agent.yamlsource import ConfigInvalid

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


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    if _load(args.file) is None:
        return EXIT_INVALID
    print(f"{args.file}: ok")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from agent.logs import configure_logging
    from agent.runtime import Agent

    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    if args.log_level is None:
        configure_logging(config.telemetry.logs.level, config.telemetry.logs.stdout)
    run_async(Agent(config, args.config).run())
    return EXIT_OK


def cmd_once(args: argparse.Namespace) -> int:
    from agent.once import run_once

    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
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
    from agent.rules import render_rules, rules_input

    config = _load(args.config)
    if config is None:
        return EXIT_INVALID
    try:
        print(render_rules(rules_input(config)), end="")
    except ValueError as exc:
        print(f"{args.config}: cannot generate rules: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    schema = Config.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "failsight config"
    print(json.dumps(schema, indent=2, sort_keys=True))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo.run import run_demo

    return run_async(run_demo(scenario=args.scenario, duration=args.duration))


def cmd_version(args: argparse.Namespace) -> int:
    print(f"failsight {__version__}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="failsight", description=__doc__)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="default: info (error for the demo, whose status lines say enough)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the agent until SIGTERM/SIGINT; SIGHUP reloads")
    run.add_argument("--config", required=True)
    run.set_defaults(func=cmd_run)
    val = sub.add_parser("validate", help="check a config file; exit 2 listing every error")
    val.add_argument("file")
    val.set_defaults(func=cmd_validate)
    once = sub.add_parser("once", help="run each check once, print results, exit 1 on failure")
    once.add_argument("--config", required=True)
    once.add_argument("--check", help="only checks whose name or target is this")
    once.add_argument("--json", action="store_true", help="one JSON object per result")
    once.set_defaults(func=cmd_once)
    rules = sub.add_parser("rules", help="print the Prometheus rules generated from the config")
    rules.add_argument("--config", required=True)
    rules.set_defaults(func=cmd_rules)
    demo = sub.add_parser("demo", help="the simulated two-cloud platform and an agent on it")
    demo.add_argument(
        "--scenario",
        default="steady",
        choices=["steady", "site-outage", "vantage-partition", "vantage-offline"],
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
    from agent.logs import configure_logging

    default_level = "error" if args.command == "demo" else "info"
    configure_logging(args.log_level or default_level, stdout=True)
    code: int = args.func(args)
    return code
