"""Renders docs/limits.md from the constants the code enforces, so the page cannot drift:
tests/agent/test_limits_doc.py fails when the file differs from `render()`.

Regenerate: `.venv/bin/python -m failsight.agent.limitsdoc > docs/limits.md`
"""

from __future__ import annotations

from failsight.agent import api, group, peers, resultwire, server, view, yamlsource
from failsight.core import configtypes, redact
from failsight.core.configtypes import human
from failsight.probes import idp, journal, journey

HEADER = """\
# Limits and bounds

Every bound failsight enforces on what it reads (its config, targets' answers, peers' views,
clients of its API) and on what it keeps (the cleanup journal). Generated from the code by
`python -m failsight.agent.limitsdoc`; a test fails when this page and the code disagree.
"""


def _size(n: int) -> str:
    if n % 1_048_576 == 0:
        return f"{n // 1_048_576} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def _table(rows: list[tuple[str, str, str]]) -> str:
    out = ["| what | bound | beyond it |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out) + "\n"


def _config_file() -> str:
    """The config file: what `validate`, `run`, `once` and SIGHUP refuse."""
    ct = configtypes
    return (
        "## The config file (`failsight validate`, `run`, `once`, SIGHUP)\n\n"
        "Each refusal is one `FILE:LINE: key: message` line, exit status 2; never a traceback.\n\n"
        + _table(
            [
                ("file size", _size(yamlsource.MAX_CONFIG_BYTES), "refused before parsing"),
                ("nesting of mappings and sequences", f"{yamlsource.MAX_DEPTH} levels", "refused"),
                (
                    "values after expanding YAML aliases",
                    f"{yamlsource.MAX_VALUES:,}",
                    "refused (an alias bomb stops here)",
                ),
                (
                    "explicit YAML tags",
                    "`!!str !!int !!float !!bool !!null !!map !!seq !!timestamp`",
                    "any other tag is refused at its line",
                ),
                (
                    "a `${file:…}` secret",
                    f"a regular file of at most {_size(yamlsource.MAX_SECRET_FILE_BYTES)}",
                    "refused (a FIFO or a device is never read)",
                ),
                (
                    "any duration",
                    f"finite, {human(ct.MIN_DURATION)} to {human(ct.MAX_DURATION)}",
                    "refused (`.nan`, `.inf`, `1e300` included)",
                ),
                (
                    "a check's `interval`",
                    f"{human(ct.MIN_INTERVAL)} to {human(ct.MAX_INTERVAL)}",
                    "refused",
                ),
                ("a `timeout`", f"{human(ct.MIN_DURATION)} to {human(ct.MAX_TIMEOUT)}", "refused"),
                (
                    "an idp's `clock_skew` and `refresh_before`",
                    f"0s to {human(idp.MAX_LEEWAY)}",
                    "refused",
                ),
                (
                    "`timeout` of an idp, dns, tls, replication or self check",
                    "at most its `interval`",
                    "refused when given; a default longer than the interval becomes the interval",
                ),
                (
                    "header names and values (sites, steps, OTLP)",
                    "names are HTTP tokens; values have no CR, LF, NUL or other control "
                    "character but tab",
                    "refused at the header's line",
                ),
            ]
        )
        + "\nA journey's `timeout` budgets a whole transaction and may exceed its interval: a run "
        "still going at its next tick makes that tick a counted skip "
        "(`failsight_check_runs_skipped_total`), never an overlap.\n"
    )


def _secrets() -> str:
    """Secrets: what is redacted, where, and what is too short to redact."""
    return (
        "## Secrets\n\n"
        "Every secret the agent holds is replaced by `[redacted]` in any text that leaves the "
        "process, whatever put it there (a target echoing our headers, an IdP quoting the "
        "client secret, a driver's error quoting a DSN): log lines, `/v1/*`, the status page, "
        "OTLP spans and logs, and config errors. Redaction is by value: the `Secret` fields "
        "(tokens, client secrets, DSNs and their passwords, header values except "
        "`Accept`, `Content-Type` and the like), every token fetched from an IdP (the newest "
        f"{redact.MAX_REMEMBERED}), and, in config errors, every value a `${{env:…}}` or "
        f"`${{file:…}}` reference resolved to. Values shorter than {redact.MIN_SECRET_LENGTH} "
        "characters are not redacted. Text quoted from a target is redacted before it is cut "
        "short, so a truncated message never carries half a token.\n"
    )


def _target_answers() -> str:
    """What a target may send: the bounds on journey responses and messages."""
    return "## What a target may send\n\n" + _table(
        [
            (
                "a journey response body",
                "`max_body_bytes` (default 1 MiB, at most 64 MiB)",
                "`assertion`",
            ),
            (
                "JSON nesting in a journey response",
                f"{journey.MAX_JSON_DEPTH} levels",
                "`extraction`",
            ),
            (
                "a value quoted in a step message",
                f"{journey.MAX_QUOTED} characters",
                "cut (after redaction)",
            ),
            (
                "a step message",
                f"{journey.MAX_MESSAGE} characters, one printable line",
                "cut; control characters become spaces",
            ),
            (
                "an extracted value put in a header",
                "no control characters",
                "`extraction` naming the variable",
            ),
            (
                "an extracted object, list or null used as text",
                "not allowed",
                "`extraction` naming the variable",
            ),
        ]
    )


def _peer_views() -> str:
    """What a peer may send: the bounds on `/v1/view` bodies."""
    return "## What a peer may send (`/v1/view`)\n\n" + _table(
        [
            ("view body", _size(peers.MAX_VIEW_BYTES), "a peer error; the view is stale"),
            ("sites in a view", str(view.MAX_SITES), "a peer error"),
            (
                "evidence per site",
                f"{view.MAX_EVIDENCE} lines of {view.MAX_EVIDENCE_CHARS} characters",
                "cut",
            ),
            (
                "a wrong-typed field",
                "-",
                "ignored field by field; missing evidence is `unknown`",
            ),
        ]
    )


def _group_shards() -> str:
    """What a member of a group may send: the bounds on `/v1/view?scope=member` bodies."""
    return "## What a group member may send (`/v1/view?scope=member`)\n\n" + _table(
        [
            ("members listed", str(group.MAX_MEMBERS), "the rest ignored"),
            (
                "requests to the members, all together",
                f"{group.MAX_FETCH_RATE:g} a second",
                "rounds longer than `refresh`",
            ),
            (
                "shard body",
                _size(group.MAX_SHARD_BYTES),
                "that member is unreachable (its checks move)",
            ),
            (
                "checks / results in a shard",
                f"{group.MAX_SHARD_CHECKS} / {group.MAX_SHARD_RESULTS}",
                "that member is unreachable",
            ),
            ("a result that is not one", "-", "that result skipped"),
            (
                "evidence per shared result",
                f"{resultwire.MAX_EVIDENCE} items",
                "the rest dropped",
            ),
        ]
    )


def _api_server() -> str:
    """The API server: timeouts, connection and request bounds."""
    return (
        "## The API server\n\n"
        + _table(
            [
                (
                    "from connect (or the previous response) to a complete request head",
                    human(server.HEADER_TIMEOUT),
                    "connection closed",
                ),
                (
                    "keep-alive connection with no request",
                    human(server.IDLE_TIMEOUT),
                    "connection closed",
                ),
                (
                    "one request, head to last byte of the response",
                    human(server.REQUEST_TIMEOUT),
                    "connection reset",
                ),
                (
                    "open connections",
                    "`agent.max_connections` (256), at most (fd soft limit - "
                    f"{server.FD_RESERVE}) / 2, at least {server.MIN_CONNECTIONS}",
                    "the oldest idle connection is closed to make room; with none idle, "
                    "the new one is refused",
                ),
                ("request line", f"{server.MAX_LINE_SIZE} bytes", "400"),
                ("one header field", f"{server.MAX_FIELD_SIZE} bytes", "400"),
                ("headers per request", str(server.MAX_HEADERS), "400"),
                ("operator (control) request body", _size(api.MAX_CONTROL_BODY), "413"),
                ("`Authorization`", "exactly `Bearer <token>` (scheme in any case)", "401"),
            ]
        )
        + f"\nAt start the fd soft limit is raised to the hard limit (at most "
        f"{server.FD_LIMIT_CAP:,}). Idle sockets can never starve `/healthz`: each new "
        "connection evicts an idle one before the fd limit is near.\n"
    )


def _cleanup_journal() -> str:
    """The cleanup journal: what is kept for crashed cleanups, and for how long."""
    return (
        "## The cleanup journal (`agent.state_dir`)\n\n"
        f"With `agent.state_dir` set, a journey with cleanup steps writes what its cleanup will "
        f"need to `<state_dir>/{journal.JOURNAL_DIR}/<run_id>.json` (directory 0700, files "
        "0600) as soon as a cleanup could act, and removes it when the cleanup succeeded. On "
        "start, and every 30 s, the agent runs the cleanups left by a crash or by a failed "
        "cleanup, with the config in force (tokens and headers are never written). Without a "
        "state dir the agent says so at start when journeys have cleanup steps.\n\n"
        + _table(
            [
                (
                    "cleanup attempts per run (its own included)",
                    str(journal.MAX_ATTEMPTS),
                    "given up: logged, `failsight_cleanup_abandoned_total`",
                ),
                ("age of an entry", human(journal.MAX_AGE), "given up"),
                ("entries kept", f"{journal.MAX_PENDING:,}", "the oldest are given up"),
                (
                    "one entry",
                    _size(journal.MAX_ENTRY_BYTES),
                    "the largest values are dropped; a cleanup that needs them is given up",
                ),
                ("an unreadable entry", "-", "moved aside as `*.corrupt`, never retried"),
            ]
        )
        + "\nThe same `state_dir` holds `control.json` (holds, failbacks, latches). It must be "
        "writable at start (else `failsight run` exits 1 naming it) and must not be shared by "
        "two agents.\n"
    )


def render() -> str:
    """docs/limits.md: the header, then one section per boundary, in reading order."""
    sections = [
        HEADER,
        _config_file(),
        _secrets(),
        _target_answers(),
        _peer_views(),
        _group_shards(),
        _api_server(),
        _cleanup_journal(),
    ]
    return "\n".join(sections)


if __name__ == "__main__":
    print(render(), end="")
