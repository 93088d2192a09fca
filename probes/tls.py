"""TLS checks: is the certificate an endpoint serves trusted, for its name, and not expiring?"""

from __future__ import annotations

import _ssl
import asyncio
import datetime
import ipaddress
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

from failsight.core.check import Check, ProbeContext, Run, wall_now
from failsight.core.configtypes import Duration, Interval, Name, Placed, Scheduled, Timeout
from failsight.core.kind import Env, Kind
from failsight.core.net import open_tcp
from failsight.core.results import CheckFailure, Measurement, Reason, Result
from failsight.core.telemetry import MetricSpec, MetricType

if TYPE_CHECKING:
    # cryptography (~8 MB) is imported where certificates are parsed, so an agent with no
    # TLS check configured never loads it.
    from cryptography import x509

TLS_CERT_NOT_AFTER = MetricSpec(
    "tls_cert_not_after_timestamp_seconds",
    MetricType.GAUGE,
    "Earliest notAfter in the served certificate chain.",
    ("target",),
    "s",
)
# How long a polite close (TLS close_notify) may take before the connection is just dropped.
_CLOSE_TIMEOUT = 1.0
_DAY = 86400.0
# The subject and issuer shown in facts are cut to this many characters (a CN may be megabytes).
MAX_NAME_CHARS = 256

# OpenSSL X509_V_ERR_* codes, grouped the way an operator acts on them.
_NOT_YET_VALID = 9
_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
_UNKNOWN_CA = frozenset({2, 18, 19, 20, 21})


def _host(value: str) -> str:
    if not value or any(c.isspace() or c in "/?#@[]" for c in value):
        raise ValueError("must be a host name or an IP address, without scheme, port or path")
    return value


Host = Annotated[str, AfterValidator(_host)]


class TlsConfig(Scheduled, Placed):
    """One TLS endpoint; `name` is the `target` label."""

    name: Name
    host: Host
    port: int = Field(default=443, ge=1, le=65535)
    # The name sent in SNI and verified against the certificate; default: host.
    server_name: Host | None = None
    # Extra trust on top of the system store.
    ca_file: str | None = None
    warn_before: Duration = 14 * _DAY
    interval: Interval = 300.0
    timeout: Timeout = 5.0

    @property
    def verify_name(self) -> str:
        return self.server_name or self.host


def tls_targets_for_url(name: str, url: str, ca_file: str | None) -> TlsConfig | None:
    """The TLS check for an https URL (a site endpoint, an IdP issuer); None for http.

    Raises ValueError for a URL that is neither http nor https, or has no host.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "http":
        return None
    if scheme != "https":
        raise ValueError(f"{url!r} is not an http or https URL")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    return TlsConfig(name=name, host=parts.hostname, port=parts.port or 443, ca_file=ca_file)


def _verifying_context(ca_file: str | None, *, check_hostname: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=ca_file)
    context.check_hostname = check_hostname
    return context


def _unverified_context() -> ssl.SSLContext:
    # Only to read what the server serves after verification failed: never to trust it.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _VerifyFailure:
    """One failed certificate verification, in an operator's words."""

    def __init__(self, exc: ssl.SSLCertVerificationError, server_name: str) -> None:
        self.code = exc.verify_code
        detail = exc.verify_message or str(exc)
        if self.code == _EXPIRED:
            self.kind, self.text = "expired", f"certificate expired ({detail})"
        elif self.code == _NOT_YET_VALID:
            self.kind, self.text = "not_yet_valid", f"certificate not yet valid ({detail})"
        elif self.code == _HOSTNAME_MISMATCH:
            self.kind = "hostname_mismatch"
            self.text = f"certificate is not valid for {server_name}"
        elif self.code in _UNKNOWN_CA:
            self.kind, self.text = "unknown_ca", f"certificate issued by an untrusted CA ({detail})"
        else:
            self.kind, self.text = "invalid", f"certificate verification failed ({detail})"


class TlsCheck(Check):
    """One TLS endpoint."""

    kind = "tls"

    def __init__(self, cfg: TlsConfig) -> None:
        super().__init__(
            name=f"tls/{cfg.name}",
            target=cfg.name,
            interval=cfg.interval,
            # The run's deadline covers every handshake of a run, so a hung endpoint ends as
            # this probe's `timeout` result before the hard limit.
            budget=cfg.timeout,
            site=None,
            placement=cfg.placement,
        )
        self.cfg = cfg
        self.server_name = cfg.verify_name
        # Built once: loading the system store on every run would cost more than the probe.
        self._verified = _verifying_context(cfg.ca_file, check_hostname=True)
        self._chain_only = _verifying_context(cfg.ca_file, check_hostname=False)
        self._unverified = _unverified_context()

    @property
    def _where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        deadline = run.loop_deadline()
        facts: dict[str, object] = {
            "target": self.cfg.name,
            "host": self.cfg.host,
            "port": self.cfg.port,
            "server_name": self.server_name,
            "not_after": None,
            "not_after_timestamp": None,
            "days_left": None,
            "hostname_ok": None,
            "chain_ok": None,
            "subject": None,
            "issuer": None,
            "error": None,
            "error_kind": None,
            "warnings": [],
        }
        failure: _VerifyFailure | None = None
        try:
            served = await self._served_chain(self._verified, deadline)
            facts["chain_ok"] = facts["hostname_ok"] = True
        except CheckFailure as exc:
            facts["error"] = exc.message
            facts["error_kind"] = "handshake" if exc.reason is Reason.TLS else exc.reason.value
            return self._result(run, facts, exc.reason, exc.message, None)
        except ssl.SSLCertVerificationError as exc:
            failure = _VerifyFailure(exc, self.server_name)
            served = await self._after_failure(failure, deadline, facts)

        # The certificates are the server's bytes: whatever cryptography cannot read in them
        # (a field it refuses lazily, a date it cannot represent) is left unknown, never raised.
        certificates = _parse(served)
        leaf = certificates[0] if certificates else None
        expiries = [(e, c) for c in certificates if (e := _not_after(c)) is not None]
        earliest = min(expiries, key=lambda pair: pair[0], default=None)
        if leaf is not None:
            facts["subject"] = _common_name(leaf, "subject")
            facts["issuer"] = _common_name(leaf, "issuer")
            if facts["hostname_ok"] is None:
                # OpenSSL stops at the first error: when the chain failed, the name is checked
                # here, so an expired but correctly named certificate says so.
                facts["hostname_ok"] = _hostname_matches(leaf, self.server_name)
        not_after: float | None = None
        if earliest is not None:
            expiry, earliest_cert = earliest
            not_after = expiry.timestamp()
            days_left = (not_after - wall_now()) / _DAY
            facts["not_after"] = expiry.isoformat()
            facts["not_after_timestamp"] = not_after
            facts["days_left"] = round(days_left, 3)
            if 0 <= days_left * _DAY < self.cfg.warn_before:
                which = (
                    "certificate"
                    if earliest_cert is leaf
                    else f"chain certificate {_common_name(earliest_cert, 'subject')!r}"
                )
                facts["warnings"] = [
                    f"{which} expires in {days_left:.1f} days ({expiry.isoformat()}), "
                    f"within warn_before of {self.cfg.warn_before / _DAY:g} days"
                ]
        if failure is not None:
            message = f"{self._where}: {facts['error']}"
            return self._result(run, facts, Reason.TLS, message, not_after)
        return self._result(run, facts, None, "", not_after)

    async def _after_failure(
        self, failure: _VerifyFailure, deadline: float, facts: dict[str, object]
    ) -> list[bytes]:
        """Tell chain and name apart after a failed verification, and read the certificates
        anyway so that their expiry is still reported."""
        errors = [failure.text]
        kinds = [failure.kind]
        served: list[bytes] = []
        if failure.code == _HOSTNAME_MISMATCH:
            facts["hostname_ok"] = False
            try:
                served = await self._served_chain(self._chain_only, deadline)
                facts["chain_ok"] = True
            except ssl.SSLCertVerificationError as exc:
                chain_failure = _VerifyFailure(exc, self.server_name)
                errors.append(chain_failure.text)
                kinds.append(chain_failure.kind)
                facts["chain_ok"] = False
            except CheckFailure as exc:
                errors.append(f"chain not checked: {exc.message}")
        else:
            facts["chain_ok"] = False
        if not served:
            try:
                served = await self._served_chain(self._unverified, deadline)
            except (CheckFailure, ssl.SSLError) as exc:
                errors.append(f"certificate not read: {exc}")
        facts["error"] = "; ".join(errors)
        facts["error_kind"] = ",".join(kinds)
        return served

    async def _served_chain(self, context: ssl.SSLContext, deadline: float) -> list[bytes]:
        """Connect, handshake with `context`, and return the chain the server sent (DER, leaf
        first). Transport failures become CheckFailure; a failed certificate verification is
        left as SSLCertVerificationError for the caller to classify."""
        where = self._where
        _reader, writer = await open_tcp(
            self.cfg.host, self.cfg.port, deadline, within=self.cfg.timeout, where=f"{where}: "
        )
        handshaken = False
        try:
            async with asyncio.timeout_at(deadline):
                await writer.start_tls(context, server_hostname=self.server_name)
            handshaken = True
            ssl_object = writer.get_extra_info("ssl_object")
            return _chain_of(ssl_object) if isinstance(ssl_object, ssl.SSLObject) else []
        except TimeoutError:
            raise CheckFailure(
                Reason.TIMEOUT, f"{where}: no TLS handshake within {self.cfg.timeout:g}s"
            ) from None
        except ssl.SSLCertVerificationError:
            raise
        except ssl.SSLError as exc:
            raise CheckFailure(
                Reason.TLS, f"{where}: TLS handshake failed: {exc.reason or exc}"
            ) from None
        except (OSError, EOFError) as exc:
            raise CheckFailure(
                Reason.TLS,
                f"{where}: connection closed during the TLS handshake: {type(exc).__name__}",
            ) from None
        finally:
            if handshaken:
                await _close(writer)
            elif not writer.transport.is_closing():
                writer.transport.abort()

    def _result(
        self,
        run: Run,
        facts: dict[str, object],
        reason: Reason | None,
        message: str,
        not_after: float | None,
    ) -> Result:
        measurements = (
            (Measurement(TLS_CERT_NOT_AFTER.name, {"target": self.cfg.name}, not_after),)
            if not_after is not None
            else ()
        )
        return self.result(
            run,
            ok=reason is None,
            reason=reason,
            message=message,
            measurements=measurements,
            facts=facts,
        )


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close with close_notify, but never wait long on a peer that does not answer it."""
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()


def _chain_of(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent, leaf first, DER.

    Python 3.13 has `get_unverified_chain()`; 3.11 and 3.12 have it only on the private
    `_sslobj`, so that is used when present, and the leaf alone otherwise.
    """
    public = getattr(ssl_object, "get_unverified_chain", None)
    if public is not None:
        return [bytes(c) for c in public()]
    private = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        chain = private()
        if chain:
            der = getattr(_ssl, "ENCODING_DER", 2)
            return [bytes(c.public_bytes(der)) for c in chain]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _parse(served: list[bytes]) -> list[x509.Certificate]:
    from cryptography import x509

    certificates = []
    for der in served:
        try:
            certificates.append(x509.load_der_x509_certificate(der))
        except (ValueError, x509.InvalidVersion):
            continue  # the server's bytes, not a certificate cryptography can read
    return certificates


def _not_after(cert: x509.Certificate) -> datetime.datetime | None:
    try:
        return cert.not_valid_after_utc
    except (ValueError, OverflowError):
        return None


def _common_name(cert: x509.Certificate, which: str) -> str | None:
    """The subject's (or issuer's) CN, else the whole name; printable and cut to MAX_NAME_CHARS;
    None when cryptography cannot read the name (a string type with bytes it refuses)."""
    from cryptography.x509.oid import NameOID

    try:
        name: x509.Name = cert.subject if which == "subject" else cert.issuer
        values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        if values:
            value = values[0].value
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        else:
            text = name.rfc4514_string()
    except ValueError:
        return None
    shown = "".join(c if c.isprintable() else "?" for c in text[:MAX_NAME_CHARS])
    return shown + "..." if len(text) > MAX_NAME_CHARS else shown


def _hostname_matches(cert: x509.Certificate, server_name: str) -> bool:
    """RFC 6125 matching of the subjectAltName (the subject CN only when there is no DNS name),
    left-most label wildcards only: what OpenSSL does for Python's default context."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        san: x509.SubjectAlternativeName | None = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    except ValueError:
        # Extensions cryptography cannot parse (a SAN with bytes no DNS name has, a duplicate
        # extension): nothing here can be matched.
        return False
    try:
        address = ipaddress.ip_address(server_name)
    except ValueError:
        address = None
    if address is not None:
        return san is not None and address in san.get_values_for_type(x509.IPAddress)
    host = server_name.rstrip(".").lower()
    patterns = san.get_values_for_type(x509.DNSName) if san is not None else []
    if not patterns:
        try:
            patterns = [
                v.value if isinstance(v.value, str) else v.value.decode("utf-8", "replace")
                for v in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            ]
        except ValueError:
            return False
    return any(_dns_name_matches(p, host) for p in patterns)


def _dns_name_matches(pattern: str, host: str) -> bool:
    pattern = pattern.rstrip(".").lower()
    if not pattern.startswith("*."):
        return pattern == host
    suffix = pattern[1:]
    label = host[: -len(suffix)] if host.endswith(suffix) else ""
    # The wildcard stands for exactly one whole label, and never for a public suffix alone.
    return bool(label) and "." not in label and suffix.count(".") >= 2


def plan(section: Sequence[TlsConfig], env: Env) -> list[Check]:
    """The configured TLS targets, plus one per https endpoint the config points at (the
    sites', when they verify TLS, then the IdPs' issuers...)."""
    targets = list(section)
    for endpoint in env.endpoints:
        if endpoint.verify and (
            t := tls_targets_for_url(endpoint.name, endpoint.url, endpoint.ca_file)
        ):
            targets.append(t)
    return [TlsCheck(t) for t in targets]


KIND = Kind(
    name=TlsCheck.kind,
    key="tls",
    model=TlsConfig,
    plan=plan,
    summary="the certificate an endpoint serves: trusted, for its name, and not expiring",
    metrics=(TLS_CERT_NOT_AFTER,),
    naming=("tls target", lambda target: target.name),
    dependency_group="tls",
)
