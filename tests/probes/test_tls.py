"""TLS checks against real loopback TLS servers serving certificates made in the test."""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError

from failsight.core.check import ProbeContext
from failsight.core.kind import Endpoint, Env
from failsight.core.results import Reason
from failsight.probes.tls import KIND, TlsCheck, TlsConfig, tls_targets_for_url

NAME = "orders.example.test"
DAY = datetime.timedelta(days=1)

Serve = Callable[[ssl.SSLContext | None], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start loopback servers: with an SSLContext they speak TLS; with None they accept TCP
    and never answer, so a client's handshake hangs."""
    servers: list[asyncio.Server] = []
    writers: set[asyncio.StreamWriter] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            await reader.read()
        except OSError:
            pass
        finally:
            writers.discard(writer)
            writer.close()

    async def start(context: ssl.SSLContext | None) -> int:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for writer in list(writers):
        writer.transport.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def check_for(port: int, ca_file: str | None, **overrides: Any) -> TlsCheck:
    raw: dict[str, Any] = {
        "name": "aws-use1-api",
        "host": "127.0.0.1",
        "port": port,
        "server_name": NAME,
        "ca_file": ca_file,
        "timeout": "2s",
    }
    raw.update(overrides)
    return TlsCheck(TlsConfig.model_validate(raw))


def not_after_series(result: Any) -> list[tuple[str, dict[str, str], float]]:
    return [(m.name, dict(m.labels), m.value) for m in result.measurements]


async def test_valid_certificate(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    expiry = now() + 400 * DAY
    port = await serve(server_context(ca.issue_cert(NAME, common_name=NAME, not_after=expiry)))
    check = check_for(port, ca_file)

    result = await check.run(ctx)

    assert result.ok, result.message
    assert (result.check, result.kind, result.target, result.site) == (
        "tls/aws-use1-api",
        "tls",
        "aws-use1-api",
        None,
    )
    facts = result.facts
    assert facts["hostname_ok"] is True
    assert facts["chain_ok"] is True
    assert facts["error"] is None
    assert facts["warnings"] == []
    assert facts["subject"] == NAME
    assert isinstance(facts["issuer"], str) and facts["issuer"] != NAME
    assert facts["not_after"] == expiry.isoformat()
    assert facts["not_after_timestamp"] == expiry.timestamp()
    days_left = facts["days_left"]
    assert isinstance(days_left, float) and 399 < days_left <= 400
    assert (facts["host"], facts["port"], facts["server_name"]) == ("127.0.0.1", port, NAME)
    assert not_after_series(result) == [
        ("tls_cert_not_after_timestamp_seconds", {"target": "aws-use1-api"}, expiry.timestamp())
    ]


async def test_server_name_defaults_to_host(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    port = await serve(server_context(ca.issue_cert("127.0.0.1")))

    result = await check_for(port, ca_file, server_name=None).run(ctx)

    assert result.ok, result.message
    assert result.facts["server_name"] == "127.0.0.1"


async def test_certificate_expiring_soon_is_ok_with_a_warning(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    expiry = now() + 3 * DAY
    port = await serve(server_context(ca.issue_cert(NAME, not_after=expiry)))

    result = await check_for(port, ca_file, warn_before="14d").run(ctx)

    assert result.ok, result.message
    assert result.facts["warnings"] == [
        f"certificate expires in 3.0 days ({expiry.isoformat()}), within warn_before of 14 days"
    ]
    assert not_after_series(result)[0][2] == expiry.timestamp()
    # Outside a shorter warning window, no warning.
    relaxed = await check_for(port, ca_file, warn_before="2d").run(ctx)
    assert relaxed.ok and relaxed.facts["warnings"] == []


async def test_expired_certificate_fails_and_still_reports_its_expiry(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    expiry = now() - 2 * DAY
    cert = ca.issue_cert(NAME, common_name=NAME, not_before=now() - 90 * DAY, not_after=expiry)
    port = await serve(server_context(cert))

    result = await check_for(port, ca_file).run(ctx)

    assert not result.ok
    assert result.reason is Reason.TLS
    assert result.message == f"127.0.0.1:{port}: certificate expired (certificate has expired)"
    facts = result.facts
    assert facts["chain_ok"] is False
    assert facts["hostname_ok"] is True  # right name, wrong date: told apart
    assert facts["error_kind"] == "expired"
    assert facts["not_after"] == expiry.isoformat()
    days_left = facts["days_left"]
    assert isinstance(days_left, float) and -2.1 < days_left < -1.9
    assert facts["subject"] == NAME
    assert facts["warnings"] == []
    assert not_after_series(result)[0][2] == expiry.timestamp()


async def test_wrong_hostname_fails_with_hostname_not_ok(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    expiry = now() + 100 * DAY
    port = await serve(server_context(ca.issue_cert("other.example.test", not_after=expiry)))

    result = await check_for(port, ca_file).run(ctx)

    assert result.reason is Reason.TLS
    assert result.message == f"127.0.0.1:{port}: certificate is not valid for {NAME}"
    assert result.facts["hostname_ok"] is False
    assert result.facts["chain_ok"] is True
    assert result.facts["error_kind"] == "hostname_mismatch"
    assert result.facts["not_after"] == expiry.isoformat()


async def test_wildcard_certificate_matches_one_label(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    port = await serve(server_context(ca.issue_cert("*.example.test")))

    assert (await check_for(port, ca_file).run(ctx)).ok
    deeper = await check_for(port, ca_file, server_name="a.orders.example.test").run(ctx)
    assert deeper.reason is Reason.TLS
    assert deeper.facts["hostname_ok"] is False


async def test_unknown_ca_fails_and_still_reports_the_certificate(
    ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    stranger = trustme.CA()
    expiry = now() + 50 * DAY
    port = await serve(server_context(stranger.issue_cert(NAME, not_after=expiry)))

    result = await check_for(port, ca_file).run(ctx)

    assert result.reason is Reason.TLS
    assert result.message.startswith(f"127.0.0.1:{port}: certificate issued by an untrusted CA (")
    assert result.facts["chain_ok"] is False
    assert result.facts["hostname_ok"] is True
    assert result.facts["error_kind"] == "unknown_ca"
    assert result.facts["not_after"] == expiry.isoformat()
    # The system store alone does not trust a test CA either.
    assert (await check_for(port, None).run(ctx)).facts["error_kind"] == "unknown_ca"


async def test_expired_certificate_with_wrong_name_reports_both(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    cert = ca.issue_cert("other.example.test", not_before=now() - 9 * DAY, not_after=now() - DAY)
    port = await serve(server_context(cert))

    result = await check_for(port, ca_file).run(ctx)

    assert result.reason is Reason.TLS
    assert result.facts["hostname_ok"] is False
    assert result.facts["chain_ok"] is False
    assert result.facts["error_kind"] == "hostname_mismatch,expired"
    assert result.message == (
        f"127.0.0.1:{port}: certificate is not valid for {NAME}; "
        "certificate expired (certificate has expired)"
    )


def intermediate_chain(
    root: trustme.CA, tmp_path: Path, *, intermediate_expiry: datetime.datetime
) -> ssl.SSLContext:
    """A server context serving leaf + intermediate, the intermediate expiring first."""
    root_key = serialization.load_pem_private_key(root.private_key_pem.bytes(), password=None)
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    root_cert = x509.load_pem_x509_certificate(root.cert_pem.bytes())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    inter_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Failsight Intermediate")])
    inter = (
        x509.CertificateBuilder()
        .subject_name(inter_name)
        .issuer_name(root_cert.subject)
        .public_key(inter_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - DAY)
        .not_valid_after(intermediate_expiry)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(inter_key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
        .issuer_name(inter_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - DAY)
        .not_valid_after(now() + 300 * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()), False
        )
        .sign(inter_key, hashes.SHA256())
    )
    chain = tmp_path / "chain.pem"
    key = tmp_path / "leaf.key"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + inter.public_bytes(serialization.Encoding.PEM)
    )
    key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain, key)
    return context


async def test_earliest_expiry_in_the_served_chain_is_reported(
    ca: trustme.CA, ca_file: str, serve: Serve, ctx: ProbeContext, tmp_path: Path
) -> None:
    inter_expiry = now() + 5 * DAY
    port = await serve(intermediate_chain(ca, tmp_path, intermediate_expiry=inter_expiry))

    result = await check_for(port, ca_file).run(ctx)

    assert result.ok, result.message
    assert result.facts["subject"] == NAME
    assert result.facts["issuer"] == "Failsight Intermediate"
    assert result.facts["not_after"] == inter_expiry.isoformat()
    assert result.facts["warnings"] == [
        f"chain certificate 'Failsight Intermediate' expires in 5.0 days "
        f"({inter_expiry.isoformat()}), within warn_before of 14 days"
    ]


async def test_refused_port_is_a_connect_failure(ca_file: str, ctx: ProbeContext) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    # Nothing listens there now.

    result = await check_for(port, ca_file).run(ctx)

    assert result.reason is Reason.CONNECT
    assert result.message.startswith(f"127.0.0.1:{port}: cannot connect: ")
    assert result.facts["not_after"] is None
    assert result.facts["chain_ok"] is None and result.facts["hostname_ok"] is None
    assert result.measurements == ()


async def test_server_that_never_handshakes_times_out(
    ca_file: str, serve: Serve, ctx: ProbeContext
) -> None:
    port = await serve(None)

    result = await check_for(port, ca_file, timeout="0.5s").run(ctx)

    assert result.reason is Reason.TIMEOUT
    assert result.message == f"127.0.0.1:{port}: no TLS handshake within 0.5s"
    assert 0.4 < result.duration < 5
    assert result.measurements == ()


async def test_plaintext_server_is_a_tls_failure(ca_file: str, ctx: ProbeContext) -> None:
    async def reply_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(reply_http, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        result = await check_for(port, ca_file).run(ctx)
    finally:
        server.close()
        await server.wait_closed()

    assert result.reason is Reason.TLS
    assert result.message.startswith(f"127.0.0.1:{port}: ")
    assert result.facts["error_kind"] == "handshake"


def test_config_defaults_and_check_timeout() -> None:
    cfg = TlsConfig.model_validate({"name": "aws-use1-api", "host": "orders.aws.example.test"})
    assert (cfg.port, cfg.server_name, cfg.ca_file) == (443, None, None)
    assert (cfg.warn_before, cfg.interval, cfg.timeout) == (14 * 86400.0, 300.0, 5.0)
    check = TlsCheck(cfg)
    assert (check.name, check.target, check.interval, check.timeout) == (
        "tls/aws-use1-api",
        "aws-use1-api",
        300.0,
        6.0,
    )
    assert check.server_name == "orders.aws.example.test"


@pytest.mark.parametrize(
    ("change", "location", "message"),
    [
        ({"colour": "blue"}, ("colour",), "Extra inputs are not permitted"),
        ({"port": 0}, ("port",), "Input should be greater than or equal to 1"),
        (
            {"host": "https://orders.example.test"},
            ("host",),
            "Value error, must be a host name or an IP address, without scheme, port or path",
        ),
        ({"warn_before": "-1d"}, ("warn_before",), "Value error, invalid duration '-1d'"),
    ],
)
def test_config_rejects(change: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TlsConfig.model_validate({"name": "api", "host": "orders.example.test"} | change)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == location
    assert errors[0]["msg"].startswith(message), errors[0]["msg"]


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = TlsConfig(name="api", host="127.0.0.1", ca_file=str(tmp_path / "absent.pem"))
    with pytest.raises(FileNotFoundError):
        TlsCheck(cfg)


def test_tls_targets_for_url() -> None:
    cfg = tls_targets_for_url("idp", "https://Login.Example.test:8443/realms/ops", "/ca.pem")
    assert cfg == TlsConfig(name="idp", host="login.example.test", port=8443, ca_file="/ca.pem")
    default_port = tls_targets_for_url("api", "https://orders.example.test/", None)
    assert default_port is not None
    assert (default_port.host, default_port.port, default_port.ca_file) == (
        "orders.example.test",
        443,
        None,
    )
    assert tls_targets_for_url("api", "http://orders.example.test/", None) is None
    with pytest.raises(ValueError, match="is not an http or https URL"):
        tls_targets_for_url("api", "ftp://orders.example.test/", None)
    with pytest.raises(ValueError, match="has no host"):
        tls_targets_for_url("api", "https:///path", None)


def test_plan_adds_one_target_per_verified_https_endpoint() -> None:
    configured = TlsConfig(name="edge", host="edge.example.test")
    env = Env(
        vantage="test",
        sites=(),
        endpoints=(
            Endpoint("site/aws-use1", "https://orders.aws.example.test/api"),
            # A site that does not verify TLS (a lab): no TLS check of it.
            Endpoint("site/lab", "https://lab.example.test", verify=False),
            # Plain http: nothing to check.
            Endpoint("site/gcp-euw1", "http://orders.gcp.example.test"),
            Endpoint("idp/corp", "https://login.example.test:8443/realms/ops"),
        ),
    )

    checks = KIND.plan([configured], env)

    assert [(c.name, c.cfg.host, c.cfg.port) for c in checks if isinstance(c, TlsCheck)] == [
        ("tls/edge", "edge.example.test", 443),
        ("tls/site/aws-use1", "orders.aws.example.test", 443),
        ("tls/idp/corp", "login.example.test", 8443),
    ]
    assert len(checks) == 3


def test_kind_describes_the_tls_section() -> None:
    assert (KIND.name, KIND.key, KIND.model, KIND.dependency_group) == (
        "tls",
        "tls",
        TlsConfig,
        "tls",
    )
    assert [(m.name, m.labels, m.unit) for m in KIND.metrics] == [
        ("tls_cert_not_after_timestamp_seconds", ("target",), "s")
    ]
    assert KIND.naming is not None
    noun, name_of = KIND.naming
    assert (noun, name_of(TlsConfig(name="edge", host="edge.example.test"))) == (
        "tls target",
        "edge",
    )
