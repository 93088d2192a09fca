"""TCP checks: does an endpoint accept a connection (a TLS handshake, a banner) in time?

Modelled on blackbox_exporter's `tcp` prober: connect, optionally complete a verified TLS
handshake, optionally send a few bytes, and optionally wait for what the server sends to match
a regular expression. For the endpoints a site depends on that speak no HTTP: a message
broker, an SMTP relay, a database's listener, an SFTP drop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from failsight.core.check import Check, ProbeContext, Run
from failsight.core.configtypes import Interval, Name, Placed, Scheduled, Timeout
from failsight.core.http import ssl_context
from failsight.core.kind import Env, Kind, Loc
from failsight.core.net import open_tcp, os_error
from failsight.core.redact import excerpt
from failsight.core.results import CheckFailure, Measurement, Reason, Result
from failsight.core.telemetry import MetricSpec, MetricType

# What is read while waiting for `expect`: the server's first bytes, never more than this.
MAX_RECEIVE_BYTES = 64 * 1024
# How much of what the server sent a message quotes.
MAX_QUOTED_CHARS = 200
# How long a polite close (TLS close_notify) may take before the connection is just dropped;
# well inside the hard limit's margin, which the run may already be eating into.
_CLOSE_TIMEOUT = 0.5

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


def _host(value: str) -> str:
    """A DNS name or an IP literal (IPv6 without brackets): no scheme, port or path."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError("must be a host name or an IP address, without scheme, port or path")
    return value


def _pattern(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return value


Host = Annotated[str, AfterValidator(_host)]


class TcpConfig(Scheduled, Placed):
    """One TCP endpoint; `name` is the `target` label."""

    name: Name
    host: Host
    port: int = Field(ge=1, le=65535)
    interval: Interval = 30.0
    timeout: Timeout = 5.0
    # After connecting, a TLS handshake that verifies the chain and `server_name` (default:
    # host), with `ca_file` as extra trust on top of the system store.
    tls: bool = False
    server_name: Host | None = None
    ca_file: str | None = None
    # Sent once connected (and handshaken), UTF-8: e.g. "PING\r\n" (YAML's double-quoted
    # escapes; single-quoted and plain scalars keep a backslash as written).
    send: str | None = None
    # A regular expression what the server sends (its first MAX_RECEIVE_BYTES) must match.
    expect: str | None = None
    # The configured site this endpoint belongs to, if any.
    site: Name | None = None

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: str | None) -> str | None:
        return None if value is None else _pattern(value)

    @property
    def verify_name(self) -> str:
        return self.server_name or self.host


TCP_CONNECT_DURATION = MetricSpec(
    "tcp_connect_duration_seconds",
    MetricType.GAUGE,
    "Duration of each TCP check phase: connect, tls, expect.",
    ("target", "phase"),
    "s",
)
TCP_UP = MetricSpec(
    "tcp_up",
    MetricType.GAUGE,
    "1 if every phase of the TCP check passed.",
    ("target",),
)


class TcpCheck(Check):
    """One TCP endpoint."""

    kind = "tcp"

    def __init__(self, cfg: TcpConfig) -> None:
        super().__init__(
            name=f"{self.kind}/{cfg.name}",
            target=cfg.name,
            interval=cfg.interval,
            budget=cfg.timeout,
            site=cfg.site,
            critical=False,
            placement=cfg.placement,
        )
        self.cfg = cfg
        self._expect = re.compile(cfg.expect) if cfg.expect is not None else None
        self._send = cfg.send.encode() if cfg.send else b""
        self._ssl: ssl.SSLContext | None = None
        if cfg.tls:
            # Built once: loading a CA file on every run would cost more than the probe.
            self._ssl = ssl_context(cfg.ca_file)

    @property
    def _where(self) -> str:
        host = self.cfg.host
        return f"[{host}]:{self.cfg.port}" if ":" in host else f"{host}:{self.cfg.port}"

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        deadline = run.loop_deadline()
        phases: dict[str, float] = {}
        facts: dict[str, object] = {
            "host": self.cfg.host,
            "port": self.cfg.port,
            "tls": self.cfg.tls,
            "connect_seconds": None,
            "tls_seconds": None,
            "expect_matched": None,
            "received_bytes": 0,
        }
        writer: asyncio.StreamWriter | None = None
        done = False
        try:
            reader, writer = await self._connect(deadline, phases, facts)
            if self._ssl is not None:
                await self._handshake(writer, self._ssl, deadline, phases, facts)
            if self._send or self._expect is not None:
                await self._exchange(reader, writer, deadline, phases, facts)
            done = True
        except CheckFailure as exc:
            return self._result(run, facts, phases, exc.reason, f"{self._where}: {exc.message}")
        finally:
            if writer is not None:
                await _close(writer, graceful=done)
        return self._result(run, facts, phases, None, "")

    async def _connect(
        self, deadline: float, phases: dict[str, float], facts: dict[str, object]
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        start = time.monotonic()
        reader, writer = await open_tcp(
            self.cfg.host, self.cfg.port, deadline, within=self.cfg.timeout, phase="connect"
        )
        phases["connect"] = time.monotonic() - start
        facts["connect_seconds"] = round(phases["connect"], 6)
        return reader, writer

    async def _handshake(
        self,
        writer: asyncio.StreamWriter,
        context: ssl.SSLContext,
        deadline: float,
        phases: dict[str, float],
        facts: dict[str, object],
    ) -> None:
        start = time.monotonic()
        server_name = self.cfg.verify_name
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context, server_hostname=server_name)
        except TimeoutError:
            raise CheckFailure(
                Reason.TIMEOUT, f"no TLS handshake within {self.cfg.timeout:g}s (phase tls)"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            detail = exc.verify_message or exc.reason or str(exc)
            raise CheckFailure(
                Reason.TLS, f"certificate verification failed for {server_name}: {detail}"
            ) from None
        except ssl.SSLError as exc:
            raise CheckFailure(Reason.TLS, f"TLS handshake failed: {exc.reason or exc}") from None
        except (OSError, EOFError) as exc:
            raise CheckFailure(
                Reason.TLS,
                f"connection closed during the TLS handshake: {type(exc).__name__}",
            ) from None
        phases["tls"] = time.monotonic() - start
        facts["tls_seconds"] = round(phases["tls"], 6)

    async def _exchange(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        deadline: float,
        phases: dict[str, float],
        facts: dict[str, object],
    ) -> None:
        """Send `send`, then read until `expect` matches: the `expect` phase."""
        start = time.monotonic()
        received = bytearray()
        step = "sending"
        try:
            async with asyncio.timeout_at(deadline):
                if self._send:
                    writer.write(self._send)
                    await writer.drain()
                step = "waiting for expect"
                if self._expect is not None:
                    facts["expect_matched"] = False
                    await self._receive(reader, received, facts)
                    facts["expect_matched"] = True
                    phases["expect"] = time.monotonic() - start
        except TimeoutError:
            if step == "sending":
                what = f"could not send within {self.cfg.timeout:g}s (phase send)"
            else:
                what = f"no match for expect within {self.cfg.timeout:g}s (phase expect)"
            raise CheckFailure(Reason.TIMEOUT, what + self._quoted(received)) from None
        except ssl.SSLError as exc:
            raise CheckFailure(
                Reason.TLS, f"TLS error while {step}: {exc.reason or exc}" + self._quoted(received)
            ) from None
        except OSError as exc:
            raise CheckFailure(
                Reason.ASSERTION,
                f"connection closed by the server while {step}: {os_error(exc)}"
                + self._quoted(received),
            ) from None

    async def _receive(
        self, reader: asyncio.StreamReader, received: bytearray, facts: dict[str, object]
    ) -> None:
        """Read until `expect` matches what was received; a CheckFailure when the server
        closes first or sends MAX_RECEIVE_BYTES without a match."""
        assert self._expect is not None
        while True:
            chunk = await reader.read(MAX_RECEIVE_BYTES - len(received))
            if not chunk:
                raise CheckFailure(
                    Reason.ASSERTION,
                    f"connection closed by the server after {len(received)} bytes "
                    f"with no match for expect {self._shown_pattern}" + self._quoted(received),
                )
            received += chunk
            facts["received_bytes"] = len(received)
            if self._expect.search(_text(received)):
                return
            if len(received) >= MAX_RECEIVE_BYTES:
                raise CheckFailure(
                    Reason.ASSERTION,
                    f"no match for expect {self._shown_pattern} in the first "
                    f"{MAX_RECEIVE_BYTES} bytes" + self._quoted(received),
                )

    @property
    def _shown_pattern(self) -> str:
        return repr(excerpt(self.cfg.expect or "", 100))

    @staticmethod
    def _quoted(received: bytearray) -> str:
        """What the server sent, for a message: printable, redacted, cut."""
        if not received:
            return "; received nothing"
        return f'; received "{excerpt(_text(received), MAX_QUOTED_CHARS)}"'

    def _result(
        self,
        run: Run,
        facts: dict[str, object],
        phases: dict[str, float],
        reason: Reason | None,
        message: str,
    ) -> Result:
        target = self.cfg.name
        measurements = (
            *(
                Measurement(TCP_CONNECT_DURATION.name, {"target": target, "phase": p}, seconds)
                for p, seconds in phases.items()
            ),
            Measurement(TCP_UP.name, {"target": target}, 1.0 if reason is None else 0.0),
        )
        return self.result(
            run,
            ok=reason is None,
            reason=reason,
            message=message,
            measurements=measurements,
            facts=facts,
        )


def _text(received: bytes | bytearray) -> str:
    # Undecodable bytes become U+FFFD: a pattern still matches the text around them.
    return bytes(received).decode("utf-8", "replace")


async def _close(writer: asyncio.StreamWriter, *, graceful: bool) -> None:
    """Close the connection: politely (TLS close_notify) after a run that went through, but
    never wait long on a peer that does not answer; drop it at once after a failure."""
    if not graceful:
        writer.transport.abort()
        return
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()


def plan(section: Sequence[TcpConfig], env: Env) -> list[Check]:
    return [TcpCheck(cfg) for cfg in section]


def check_config(section: Sequence[TcpConfig], env: Env) -> Iterator[tuple[Loc, str]]:
    sites = env.site_names
    for index, cfg in enumerate(section):
        if cfg.site is not None and cfg.site not in sites:
            yield (index, "site"), f"unknown site {cfg.site!r}"
        if cfg.ca_file is not None and not Path(cfg.ca_file).is_file():
            yield (index, "ca_file"), f"file not found: {cfg.ca_file}"


def _name_of(cfg: TcpConfig) -> str:
    return cfg.name


KIND = Kind(
    name=TcpCheck.kind,
    key="tcp",
    model=TcpConfig,
    plan=plan,
    summary="a TCP endpoint accepts connections (TLS handshake, send/expect) in time",
    metrics=(TCP_CONNECT_DURATION, TCP_UP),
    naming=("tcp target", _name_of),
    check_config=check_config,
    dependency_group="tcp",
)
