"""TCP checks against real loopback servers (plain and TLS, certificates made in the test)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from failsight.core.check import ProbeContext
from failsight.core.kind import Env, SiteRef
from failsight.core.redact import REDACTOR
from failsight.core.results import Reason, Result
from failsight.core.telemetry import MetricType
from failsight.probes import registry, tcp
from failsight.probes.tcp import MAX_RECEIVE_BYTES, TcpCheck, TcpConfig

NAME = "broker.example.test"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Servers:
    """Loopback servers started by a test; each one records how its connections ended."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.writers: set[asyncio.StreamWriter] = set()
        self.received: list[bytes] = []
        # One entry per connection the client closed (or dropped): what the server saw last.
        self.closed = 0

    async def start(self, handler: Handler, context: ssl.SSLContext | None = None) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.writers.add(writer)
            try:
                await handler(reader, writer)
            except (OSError, ssl.SSLError):
                pass
            finally:
                self.writers.discard(writer)
                writer.transport.abort()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def until_closed(self, reader: asyncio.StreamReader) -> None:
        """Read everything until the client closes the connection, then count it."""
        data = bytearray()
        try:
            while chunk := await reader.read(65536):
                data += chunk
        except (OSError, ssl.SSLError):
            pass
        self.received.append(bytes(data))
        self.closed += 1

    async def wait_closed(self, count: int = 1) -> None:
        async with asyncio.timeout(2):
            while self.closed < count:
                await asyncio.sleep(0.01)


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    yield s
    for writer in list(s.writers):
        writer.transport.abort()
    for server in s.servers:
        server.close()
        await server.wait_closed()


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def check_for(port: int, **overrides: Any) -> TcpCheck:
    raw: dict[str, Any] = {"name": "broker", "host": "127.0.0.1", "port": port, "timeout": "2s"}
    raw.update(overrides)
    return TcpCheck(TcpConfig.model_validate(raw))


def series(result: Result) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(m.name, tuple(sorted(m.labels.items()))): m.value for m in result.measurements}


def phases_measured(result: Result) -> list[str]:
    return [
        m.labels["phase"] for m in result.measurements if m.name == "tcp_connect_duration_seconds"
    ]


def up(result: Result) -> float:
    return series(result)[("tcp_up", (("target", "broker"),))]


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- plain TCP ---------------------------------------------------------------------------------


async def test_plain_connect_ok(servers: Servers, ctx: ProbeContext) -> None:
    port = await servers.start(lambda r, w: servers.until_closed(r))
    check = check_for(port)

    result = await check.run(ctx)

    assert result.ok, result.message
    assert (result.check, result.kind, result.target, result.site, result.critical) == (
        "tcp/broker",
        "tcp",
        "broker",
        None,
        False,
    )
    assert result.reason is None and result.message == ""
    facts = result.facts
    assert (facts["host"], facts["port"], facts["tls"]) == ("127.0.0.1", port, False)
    connect = facts["connect_seconds"]
    assert isinstance(connect, float) and 0 <= connect < 2
    assert facts["tls_seconds"] is None
    assert facts["expect_matched"] is None
    assert facts["received_bytes"] == 0
    assert phases_measured(result) == ["connect"]
    assert up(result) == 1.0
    # The client closed its socket: the server saw the end of the stream.
    await servers.wait_closed()
    assert servers.received == [b""]


async def test_connect_refused(ctx: ProbeContext) -> None:
    port = closed_port()

    result = await check_for(port).run(ctx)

    assert not result.ok
    assert result.reason is Reason.CONNECT
    assert result.message == f"127.0.0.1:{port}: cannot connect: Connection refused"
    assert result.facts["connect_seconds"] is None
    assert phases_measured(result) == []
    assert up(result) == 0.0


async def test_unresolvable_host_is_dns(ctx: ProbeContext) -> None:
    result = await check_for(1, host="nonexistent.invalid").run(ctx)

    assert result.reason is Reason.DNS, result.message
    assert result.message.startswith("nonexistent.invalid:1: cannot resolve nonexistent.invalid")
    assert up(result) == 0.0


async def test_send_and_expect_ok(servers: Servers, ctx: ProbeContext) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 broker ready\r\n")
        line = await reader.readline()
        writer.write(b"echo: " + line)
        await writer.drain()
        await servers.until_closed(reader)

    port = await servers.start(echo)
    check = check_for(port, send="PING 42\r\n", expect=r"echo: PING (\d+)\r\n")

    result = await check.run(ctx)

    assert result.ok, result.message
    assert result.facts["expect_matched"] is True
    # The banner and the echo, nothing beyond the match is waited for.
    assert result.facts["received_bytes"] == len(b"220 broker ready\r\necho: PING 42\r\n")
    assert phases_measured(result) == ["connect", "expect"]
    assert up(result) == 1.0
    await servers.wait_closed()
    assert servers.received == [b""]  # the line was read by the handler; nothing more sent


async def test_expect_stops_reading_at_the_first_match(servers: Servers, ctx: ProbeContext) -> None:
    async def banner_then_stream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"+OK ready\r\n")
        await w.drain()
        await asyncio.sleep(0.2)
        # Sent after the match: the check must have been over already.
        w.write(b"x" * 100_000)
        await servers.until_closed(r)

    port = await servers.start(banner_then_stream)

    result = await check_for(port, expect=r"^\+OK").run(ctx)

    assert result.ok, result.message
    # Had it read on, the 100 kB sent 0.2s later would be counted (or the run would time out).
    assert result.facts["received_bytes"] == len(b"+OK ready\r\n")


async def test_expect_mismatch_is_an_assertion_quoting_what_was_received(
    servers: Servers, ctx: ProbeContext
) -> None:
    secret = "s3cret-token-value"
    REDACTOR.add(secret)

    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"-ERR auth {secret}\r\n".encode() + b"y" * 500)
        await writer.drain()
        writer.close()

    port = await servers.start(wrong)

    result = await check_for(port, expect="^\\+OK").run(ctx)

    assert result.reason is Reason.ASSERTION, result.message
    sent = len(f"-ERR auth {secret}\r\n") + 500
    assert result.message.startswith(
        f"127.0.0.1:{port}: connection closed by the server after {sent} bytes with no match "
        "for expect '^\\\\+OK'; received \"-ERR auth [redacted]??yyy"
    )
    assert secret not in result.message
    quoted = result.message.split('received "', 1)[1]
    assert quoted.endswith('..."') and len(quoted) == 200 + len('..."')
    assert result.facts["expect_matched"] is False
    assert result.facts["received_bytes"] == sent
    assert phases_measured(result) == ["connect"]
    assert up(result) == 0.0


async def test_expect_not_found_in_the_first_64_kib(servers: Servers, ctx: ProbeContext) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"z" * (MAX_RECEIVE_BYTES * 4))
        await writer.drain()
        await servers.until_closed(reader)

    port = await servers.start(flood)

    result = await check_for(port, expect="OK").run(ctx)

    assert result.reason is Reason.ASSERTION
    assert f"no match for expect 'OK' in the first {MAX_RECEIVE_BYTES} bytes" in result.message
    assert result.facts["received_bytes"] == MAX_RECEIVE_BYTES


async def test_server_closing_without_sending_is_an_assertion(
    servers: Servers, ctx: ProbeContext
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    port = await servers.start(hang_up)

    result = await check_for(port, expect="^SSH-2.0").run(ctx)

    assert result.reason is Reason.ASSERTION
    assert result.message == (
        f"127.0.0.1:{port}: connection closed by the server after 0 bytes with no match for "
        "expect '^SSH-2.0'; received nothing"
    )
    assert result.facts["received_bytes"] == 0
    assert result.facts["expect_matched"] is False


async def test_silent_server_times_out_in_the_expect_phase_within_budget(
    servers: Servers, ctx: ProbeContext
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")  # something, but never what is expected
        await writer.drain()
        await servers.until_closed(reader)

    port = await servers.start(silent)
    check = check_for(port, timeout="500ms", send="QUIT\r\n", expect="^bye")
    assert check.timeout == 1.5  # the hard limit: budget plus the default margin

    started = time.monotonic()
    result = await check.run(ctx)
    took = time.monotonic() - started

    assert result.reason is Reason.TIMEOUT
    assert result.message == (
        f'127.0.0.1:{port}: no match for expect within 0.5s (phase expect); received "hello"'
    )
    assert 0.45 <= took < 1.4  # the probe's own deadline, not the hard limit (1.5s)
    assert result.facts["received_bytes"] == 5
    assert result.facts["expect_matched"] is False
    assert phases_measured(result) == ["connect"]
    assert up(result) == 0.0
    # The socket was dropped: the server saw the end, after what the check sent.
    await servers.wait_closed()
    assert servers.received == [b"QUIT\r\n"]


# --- TLS ---------------------------------------------------------------------------------------


async def test_tls_ok_with_ca_file(
    ca: trustme.CA, ca_file: str, servers: Servers, ctx: ProbeContext
) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"AMQP ready\n")
        await writer.drain()
        await servers.until_closed(reader)

    port = await servers.start(banner, server_context(ca.issue_cert(NAME)))
    check = check_for(port, tls=True, server_name=NAME, ca_file=ca_file, expect="ready")

    result = await check.run(ctx)

    assert result.ok, result.message
    facts = result.facts
    assert facts["tls"] is True
    tls_seconds = facts["tls_seconds"]
    assert isinstance(tls_seconds, float) and 0 < tls_seconds < 2
    assert facts["expect_matched"] is True
    assert facts["received_bytes"] == len(b"AMQP ready\n")
    assert phases_measured(result) == ["connect", "tls", "expect"]
    assert up(result) == 1.0
    await servers.wait_closed()


async def test_tls_server_name_defaults_to_host(
    ca: trustme.CA, ca_file: str, servers: Servers, ctx: ProbeContext
) -> None:
    port = await servers.start(
        lambda r, w: servers.until_closed(r), server_context(ca.issue_cert("127.0.0.1"))
    )

    assert (await check_for(port, tls=True, ca_file=ca_file).run(ctx)).ok
    # The same server checked against a name it has no certificate for.
    other = await check_for(port, tls=True, ca_file=ca_file, server_name=NAME).run(ctx)
    assert other.reason is Reason.TLS


async def test_tls_untrusted_certificate(ca_file: str, servers: Servers, ctx: ProbeContext) -> None:
    stranger = trustme.CA()
    port = await servers.start(
        lambda r, w: servers.until_closed(r), server_context(stranger.issue_cert(NAME))
    )

    result = await check_for(port, tls=True, server_name=NAME, ca_file=ca_file).run(ctx)

    assert result.reason is Reason.TLS
    assert result.message.startswith(
        f"127.0.0.1:{port}: certificate verification failed for {NAME}: "
    )
    assert "issuer" in result.message
    assert result.facts["connect_seconds"] is not None
    assert result.facts["tls_seconds"] is None
    assert phases_measured(result) == ["connect"]
    assert up(result) == 0.0
    # Without the CA file, the system store does not trust the test CA either.
    assert (await check_for(port, tls=True, server_name=NAME).run(ctx)).reason is Reason.TLS


async def test_tls_hostname_mismatch(
    ca: trustme.CA, ca_file: str, servers: Servers, ctx: ProbeContext
) -> None:
    port = await servers.start(
        lambda r, w: servers.until_closed(r),
        server_context(ca.issue_cert("other.example.test")),
    )

    result = await check_for(port, tls=True, server_name=NAME, ca_file=ca_file).run(ctx)

    assert result.reason is Reason.TLS
    assert result.message.startswith(
        f"127.0.0.1:{port}: certificate verification failed for {NAME}: Hostname mismatch"
    )


async def test_tls_against_a_plain_server_that_never_answers_times_out_in_tls(
    servers: Servers, ctx: ProbeContext
) -> None:
    port = await servers.start(lambda r, w: servers.until_closed(r))

    result = await check_for(port, tls=True, timeout="300ms").run(ctx)

    assert result.reason is Reason.TIMEOUT
    assert result.message == f"127.0.0.1:{port}: no TLS handshake within 0.3s (phase tls)"
    assert result.duration < 1.2  # the probe's own deadline, not the hard limit (1.3s)
    await servers.wait_closed()


# --- config and planning -----------------------------------------------------------------------


def test_kind_descriptor() -> None:
    assert tcp.KIND in registry.KINDS
    assert (tcp.KIND.name, tcp.KIND.key, tcp.KIND.model) == ("tcp", "tcp", TcpConfig)
    assert tcp.KIND.dependency_group == "tcp"
    assert tcp.KIND.naming is not None and tcp.KIND.naming[0] == "tcp target"
    specs = {(s.name, s.type, s.labels, s.unit) for s in tcp.KIND.metrics}
    assert specs == {
        ("tcp_connect_duration_seconds", MetricType.GAUGE, ("target", "phase"), "s"),
        ("tcp_up", MetricType.GAUGE, ("target",), "1"),
    }


def test_config_defaults_and_derived_values() -> None:
    cfg = TcpConfig.model_validate({"name": "smtp", "host": "smtp.example.test", "port": 25})
    assert (cfg.interval, cfg.timeout, cfg.tls) == (30.0, 5.0, False)
    assert (cfg.server_name, cfg.ca_file, cfg.send, cfg.expect, cfg.site) == (None,) * 5
    check = TcpCheck(cfg)
    assert (check.name, check.target, check.interval, check.budget, check.timeout) == (
        "tcp/smtp",
        "smtp",
        30.0,
        5.0,
        6.0,
    )
    # A default timeout longer than the interval becomes the interval.
    short = TcpConfig.model_validate({"name": "a", "host": "::1", "port": 1, "interval": "2s"})
    assert short.timeout == 2.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", 0),
        ("port", 65536),
        ("host", "tcp://broker"),
        ("host", "broker:5672"),
        ("host", "bro ker"),
        ("expect", "([unclosed"),
        ("colour", "blue"),
    ],
)
def test_model_refuses_bad_values_at_their_key(key: str, value: object) -> None:
    raw: dict[str, Any] = {"name": "a", "host": "broker", "port": 5672, key: value}
    with pytest.raises(ValidationError) as info:
        TcpConfig.model_validate(raw)
    assert [e["loc"] for e in info.value.errors()] == [(key,)]


def env_with(*sites: str) -> Env:
    return Env("test", tuple(SiteRef(s, "primary", f"http://{s}.test") for s in sites))


def test_check_config_unknown_site_and_missing_ca_file(tmp_path: Path) -> None:
    section = [
        TcpConfig.model_validate({"name": "a", "host": "h", "port": 1, "site": "aws-use1"}),
        TcpConfig.model_validate({"name": "b", "host": "h", "port": 1, "site": "gcp-euw1"}),
        TcpConfig.model_validate(
            {"name": "c", "host": "h", "port": 1, "tls": True, "ca_file": str(tmp_path / "no")}
        ),
    ]

    errors = list(tcp.KIND.check_config(section, env_with("aws-use1")))

    assert errors == [
        ((1, "site"), "unknown site 'gcp-euw1'"),
        ((2, "ca_file"), f"file not found: {tmp_path / 'no'}"),
    ]


def test_plan_sets_the_site() -> None:
    section = [
        TcpConfig.model_validate({"name": "a", "host": "h", "port": 1, "site": "aws-use1"}),
        TcpConfig.model_validate({"name": "b", "host": "h", "port": 2}),
    ]

    checks = tcp.KIND.plan(section, env_with("aws-use1"))

    assert [(type(c), c.name, c.site, c.critical) for c in checks] == [
        (TcpCheck, "tcp/a", "aws-use1", False),
        (TcpCheck, "tcp/b", None, False),
    ]


# Through the agent's config assembly.

BASE = """\
agent: {vantage: x}
sites: [{name: a, role: primary, base_url: "http://127.0.0.1:1"}]
"""


def write(tmp_path: Path, tcp_section: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(BASE + "tcp:\n" + tcp_section)
    return path


def config_errors(tmp_path: Path, tcp_section: str) -> list[tuple[tuple[str | int, ...], str]]:
    from failsight.agent.config import load_config
    from failsight.agent.yamlsource import ConfigInvalid

    with pytest.raises(ConfigInvalid) as info:
        load_config(write(tmp_path, tcp_section))
    return [(e.loc, e.message) for e in info.value.errors]


@pytest.mark.parametrize(
    ("item", "loc", "message"),
    [
        ('  - {name: b, host: h, port: 1, expect: "([x"}\n', "expect", "invalid regular"),
        ("  - {name: b, host: h, port: 0}\n", "port", "greater than or equal to 1"),
        ("  - {name: b, host: h, port: 1, colour: blue}\n", "colour", "unknown key"),
        ("  - {name: b, host: h, port: 1, site: nowhere}\n", "site", "unknown site 'nowhere'"),
        ("  - {name: b, host: h, port: 1, interval: 1s, timeout: 2s}\n", "timeout", "longer"),
    ],
)
def test_load_config_refuses_at_the_key(tmp_path: Path, item: str, loc: str, message: str) -> None:
    good = "  - {name: a, host: h, port: 1, site: a}\n"

    errors = config_errors(tmp_path, good + item)

    assert len(errors) == 1, errors
    assert errors[0][0] == ("tcp", 1, loc)
    assert message in errors[0][1]


def test_load_config_refuses_duplicate_names(tmp_path: Path) -> None:
    errors = config_errors(
        tmp_path, "  - {name: a, host: h, port: 1}\n  - {name: a, host: g, port: 2}\n"
    )

    assert errors == [(("tcp", 1, "name"), "duplicate tcp target name 'a'")]


def test_load_config_and_plan_make_one_tcp_check(tmp_path: Path) -> None:
    from failsight.agent.config import load_config, plan

    config = load_config(
        write(
            tmp_path,
            "  - {name: mq, host: mq.example.test, port: 5671, tls: true, site: a,\n"
            '     interval: 10s, send: "PING\\r\\n", expect: "^PONG"}\n',
        )
    )

    checks = [c for c in plan(config) if c.kind == "tcp"]

    assert len(checks) == 1
    check = checks[0]
    assert isinstance(check, TcpCheck)
    assert (check.name, check.target, check.site, check.interval, check.budget) == (
        "tcp/mq",
        "mq",
        "a",
        10.0,
        5.0,
    )
    assert check.cfg.send == "PING\r\n"  # YAML's double-quoted escapes
    assert check.cfg.expect == "^PONG"
