"""OIDC identity provider checks, and the client-credentials token cache journeys share."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import logging
import math
import re
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote_plus

import aiohttp
import yarl
from pydantic import AfterValidator, BeforeValidator, Field, field_validator

from failsight.core.check import Check, ProbeContext, Run, idp_check_name
from failsight.core.configtypes import (
    Interval,
    Name,
    Placed,
    Scheduled,
    Secret,
    Timeout,
    human,
    parse_duration,
)
from failsight.core.http import classify, read_bounded, ssl_context
from failsight.core.kind import Endpoint, Env, Kind
from failsight.core.redact import REDACTOR, basic_credentials, excerpt
from failsight.core.results import CheckFailure, Measurement, Reason, Remark, Result
from failsight.core.telemetry import MetricSpec, MetricType
from failsight.probes.templating import json_kind

if TYPE_CHECKING:
    # joserfc (and cryptography under it, ~9 MB) is imported where tokens are handled, so an
    # agent with no IdP configured never loads it.
    from joserfc.jwk import KeySet

log = logging.getLogger(__name__)

IDP_UP = MetricSpec(
    "idp_up", MetricType.GAUGE, "1 if every phase of the identity provider check passed.", ("idp",)
)
IDP_PHASE_DURATION = MetricSpec(
    "idp_phase_duration_seconds",
    MetricType.GAUGE,
    "Duration of each IdP check phase.",
    ("idp", "phase"),
    "s",
)

PHASES = ("discovery", "jwks", "token", "validate")
MAX_BODY_BYTES = 1_048_576
# Discovery documents change only when the IdP is reconfigured; the token cache re-reads them
# this often, and at once after any failed token request.
DISCOVERY_TTL = 300.0
# A token response without `expires_in` is trusted for this long (RFC 6749 leaves it optional).
DEFAULT_TOKEN_LIFETIME = 60.0
# A longer `expires_in` is taken as this: a token is never cached for longer than a day, whatever
# the IdP claims (a target refusing it earlier makes the journey drop it anyway).
MAX_TOKEN_LIFETIME = 86400.0
# Endpoint URLs from a discovery document longer than this are refused (and never echoed whole).
MAX_URL_LENGTH = 2048
# How much of a value the IdP sent a message quotes, and how many JWKS kids the facts list.
SHOWN_CHARS = 200
SHOWN_KIDS = 20
# After a failed refresh while the cached token is still valid, wait this long before retrying,
# so a dead IdP costs one request per interval rather than one per journey.
REFRESH_RETRY_AFTER = 5.0
# Asymmetric signatures only: a token signed with `none` or a shared HMAC secret proves nothing
# about the IdP's published keys.
SIGNATURE_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_ISSUER = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
_OAUTH_ERROR = re.compile(r"^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$")
# RFC 6750 2.1 b64token: what may follow `Bearer ` in an Authorization header. A token outside it
# (CR, LF, NUL, spaces, non-ASCII...) could not be sent, or would be a header injection.
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_TOKEN_TYPE = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
# json.loads refuses deeper documents with RecursionError, ints longer than this with ValueError.
_JSON_ERRORS = (ValueError, RecursionError)

MAX_LEEWAY = 86400.0


def _leeway(value: float) -> float:
    if value < 0:
        raise ValueError("must be zero or more")
    if value > MAX_LEEWAY:
        raise ValueError(f"must be at most {human(MAX_LEEWAY)}")
    return value


Leeway = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_leeway)]
"""A duration that may be zero (`0s` means no leeway), at most a day."""


class IdpConfig(Scheduled, Placed):
    """One OIDC identity provider: what the `idp` check probes and journeys get tokens from."""

    name: Name
    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: Secret
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    audience: str | None = None
    scope: str | None = None
    interval: Interval = 30.0
    timeout: Timeout = 5.0
    clock_skew: Leeway = 30.0
    refresh_before: Leeway = 60.0
    ca_file: str | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        # Kept exactly as written: discovery must echo it byte for byte (OIDC Discovery 4.3).
        if not _ISSUER.match(value):
            raise ValueError("expected an http:// or https:// URL without query or fragment")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


def secret_forms(cfg: IdpConfig) -> tuple[str, ...]:
    """Every form of the client secret this module puts on the wire: the secret as written, as
    form-encoded in a `client_secret_post` body, and the `Authorization: Basic` credentials (the
    RFC 6749 2.3.1 form sent, and the plain `id:secret` one a lax IdP might echo)."""
    secret = cfg.client_secret.get_secret_value()
    return (
        secret,
        quote_plus(secret),
        basic_credentials(cfg.client_id, secret),
        basic_credentials(quote_plus(cfg.client_id), quote_plus(secret)),
    )


def register_secrets(cfg: IdpConfig) -> None:
    """Have the process redact this IdP's client secret, in every form, from what it emits."""
    REDACTOR.add(*secret_forms(cfg))


def _mentions_secret(text: str, cfg: IdpConfig) -> bool:
    return any(form and form in text for form in secret_forms(cfg))


@dataclass(frozen=True, slots=True)
class Discovery:
    """The parts of an OpenID Provider's discovery document the agent uses."""

    issuer: str
    jwks_uri: str
    token_endpoint: str


@dataclass(frozen=True, slots=True, repr=False)
class IssuedToken:
    """A successful client-credentials response; the token itself never shows in a repr."""

    access_token: str
    expires_in: float | None

    def __repr__(self) -> str:
        return f"<IssuedToken expires_in={self.expires_in}>"


# ---------------------------------------------------------------------------------------------
# The IdP conversation, shared by the check and the token cache. Each step raises CheckFailure
# with the reason the `idp` check reports; transport errors propagate for the caller to classify.


async def discover(
    http: aiohttp.ClientSession, cfg: IdpConfig, tls: ssl.SSLContext | bool
) -> Discovery:
    document = await _get_json(http, cfg.discovery_url, tls, "discovery")
    if not isinstance(document, dict):
        raise CheckFailure(Reason.ASSERTION, "discovery document is not a JSON object")
    issuer = document.get("issuer")
    if not isinstance(issuer, str) or issuer != cfg.issuer:
        raise CheckFailure(
            Reason.ASSERTION, f"discovery issuer is {_shown(issuer)}, expected {cfg.issuer!r}"
        )
    missing = [
        key
        for key in ("jwks_uri", "token_endpoint")
        if not isinstance(document.get(key), str) or not document[key]
    ]
    if missing:
        raise CheckFailure(Reason.ASSERTION, f"discovery document lacks {', '.join(missing)}")
    for key in ("jwks_uri", "token_endpoint"):
        if not _usable_url(document[key]):
            raise CheckFailure(
                Reason.ASSERTION,
                f"discovery {key} {_shown(document[key])} is not a usable http(s) URL",
            )
    return Discovery(issuer, document["jwks_uri"], document["token_endpoint"])


async def fetch_jwks(http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool) -> KeySet:
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    document = await _get_json(http, url, tls, "JWKS")
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise CheckFailure(Reason.ASSERTION, "JWKS has no `keys` list")
    for index, key in enumerate(keys):
        # joserfc would invent a thumbprint kid; a key the IdP did not name cannot be chosen
        # by a token's `kid` header, so it is a broken key set.
        if not isinstance(key, dict) or not isinstance(key.get("kid"), str):
            raise CheckFailure(Reason.ASSERTION, f"JWKS key #{index} has no kid")
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckFailure(
            Reason.ASSERTION, f"JWKS keys are unusable: {excerpt(str(exc), SHOWN_CHARS)}"
        ) from None


async def request_token(
    http: aiohttp.ClientSession, cfg: IdpConfig, endpoint: str, tls: ssl.SSLContext | bool
) -> IssuedToken:
    """One client-credentials grant (RFC 6749 4.4)."""
    secret = cfg.client_secret.get_secret_value()
    form = {"grant_type": "client_credentials"}
    if cfg.scope is not None:
        form["scope"] = cfg.scope
    if cfg.audience is not None:
        form["audience"] = cfg.audience
    headers = {"Accept": "application/json"}
    if cfg.auth_method == "client_secret_basic":
        # RFC 6749 2.3.1: both parts are form-encoded before Basic encoding, so a `:` or `%`
        # in a secret survives.
        # Encoded here rather than with aiohttp.BasicAuth, deprecated in aiohttp 3.14.
        credentials = f"{quote_plus(cfg.client_id)}:{quote_plus(secret)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    else:
        form["client_id"] = cfg.client_id
        form["client_secret"] = secret
    try:
        async with http.post(
            endpoint, data=form, headers=headers, ssl=tls, allow_redirects=False
        ) as response:
            body = await read_bounded(response, MAX_BODY_BYTES)
            status = response.status
    except (aiohttp.InvalidURL, UnicodeError):
        raise _unusable_url("token endpoint", endpoint) from None
    if not 200 <= status < 300:
        raise _token_refused(status, body, cfg)
    document = _parse_json(body, "token response")
    if not isinstance(document, dict):
        raise CheckFailure(Reason.ASSERTION, "token response is not a JSON object")
    access_token = _access_token(document.get("access_token"))
    token_type = document.get("token_type")
    if isinstance(token_type, str) and token_type.lower() != "bearer":
        shown = (
            f" {token_type!r}"
            if _TOKEN_TYPE.match(token_type) and not _mentions_secret(token_type, cfg)
            else ""
        )
        raise CheckFailure(Reason.ASSERTION, f"token_type{shown} is not Bearer")
    return IssuedToken(access_token, _expires_in(document.get("expires_in")))


def _access_token(value: object) -> str:
    """The token, if it can be sent as `Authorization: Bearer <token>`; AUTH failure if not.

    Refused here rather than where it is used: aiohttp raises ValueError on a header value with
    CR or LF, and a space or a non-ASCII byte would make a header the target cannot parse.
    The token itself is never quoted: it is a credential, however broken.
    """
    if not isinstance(value, str):
        what = "no access_token" if value is None else f"an access_token of type {_kind(value)}"
        raise CheckFailure(Reason.AUTH, f"token response has {what}")
    if not value:
        raise CheckFailure(Reason.AUTH, "token response has an empty access_token")
    if not _B64TOKEN.match(value):
        raise CheckFailure(
            Reason.AUTH,
            f"access_token ({len(value)} characters) has characters a bearer token cannot "
            "carry (RFC 6750 b64token: letters, digits, -._~+/ and trailing =)",
        )
    return value


def validate_token(cfg: IdpConfig, token: str, keys: KeySet) -> str:
    """Check the token's signature against the JWKS and its claims; return its kid."""
    from joserfc import jws, jwt
    from joserfc.errors import (
        BadSignatureError,
        JoseError,
    )

    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, TypeError, RecursionError):
        raise CheckFailure(Reason.AUTH, "access token is not a signed JWT") from None
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise CheckFailure(Reason.AUTH, "token has no kid header")
    kids = key_ids(keys)
    if kid not in kids:
        raise CheckFailure(
            Reason.AUTH,
            f"token signed with kid {excerpt(kid)}, not in JWKS (kids: "
            f"{', '.join(excerpt(k) for k in kids[:SHOWN_KIDS])}"
            f"{', ...' if len(kids) > SHOWN_KIDS else ''})",
        )
    alg = header.get("alg")
    if alg not in SIGNATURE_ALGORITHMS:
        raise CheckFailure(
            Reason.AUTH, f"token alg {_shown(alg)} is not an accepted signature algorithm"
        )
    try:
        claims = jwt.decode(token, keys.get_by_kid(kid), algorithms=[alg]).claims
    except BadSignatureError:
        raise CheckFailure(
            Reason.AUTH, f"token signature does not verify with JWKS key {excerpt(kid)}"
        ) from None
    except (JoseError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise CheckFailure(
            Reason.AUTH, f"token rejected: {excerpt(str(exc), SHOWN_CHARS)}"
        ) from None
    if not isinstance(claims, dict):
        raise CheckFailure(Reason.AUTH, "token claims are not a JSON object")
    _validate_claims(cfg, claims)
    return kid


def key_ids(keys: KeySet) -> list[str]:
    """The kids of a key set (fetch_jwks refuses keys without one)."""
    return [k.kid for k in keys if isinstance(k.kid, str)]


def _validate_claims(cfg: IdpConfig, claims: dict[str, Any]) -> None:
    from joserfc import jwt
    from joserfc.errors import (
        ExpiredTokenError,
        InvalidClaimError,
        JoseError,
        MissingClaimError,
    )

    options: dict[str, jwt.ClaimsOption] = {
        "iss": {"essential": True, "value": cfg.issuer},
        "exp": {"essential": True},
    }
    if cfg.audience is not None:
        options["aud"] = {"essential": True, "value": cfg.audience}
    registry = jwt.JWTClaimsRegistry(None, math.ceil(cfg.clock_skew), **options)
    skew = f"clock skew allowed {cfg.clock_skew:g}s"
    try:
        registry.validate(claims)
    except ExpiredTokenError:
        raise CheckFailure(
            Reason.AUTH, f"token expired at {_when(claims.get('exp'))} ({skew})"
        ) from None
    except MissingClaimError as exc:
        raise CheckFailure(Reason.AUTH, f"token lacks claim {excerpt(str(exc.claim))}") from None
    except InvalidClaimError as exc:
        value = claims.get(exc.claim)
        if exc.claim == "iss":
            message = f"token iss is {_shown(value)}, expected {cfg.issuer!r}"
        elif exc.claim == "aud":
            message = f"token aud is {_shown(value)}, expected {cfg.audience!r}"
        elif exc.claim == "nbf":
            message = f"token not valid before {_when(value)} ({skew})"
        elif exc.claim == "iat":
            message = f"token issued in the future, at {_when(value)} ({skew})"
        else:
            message = f"token claim {excerpt(str(exc.claim))} is invalid"
        raise CheckFailure(Reason.AUTH, message) from None
    except (JoseError, ValueError, TypeError, OverflowError) as exc:
        # A claim of a type the registry cannot compare (an `exp` that is a list...).
        raise CheckFailure(
            Reason.AUTH, f"token claims rejected: {excerpt(str(exc), SHOWN_CHARS)}"
        ) from None


async def _get_json(
    http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool, what: str
) -> Any:
    try:
        async with http.get(
            url, headers={"Accept": "application/json"}, ssl=tls, allow_redirects=False
        ) as response:
            body = await read_bounded(response, MAX_BODY_BYTES)
            status = response.status
    except (aiohttp.InvalidURL, UnicodeError):
        # A host aiohttp cannot encode (an empty label, a label over 63 characters...).
        raise _unusable_url(what, url) from None
    if not 200 <= status < 300:
        raise CheckFailure(Reason.HTTP_STATUS, f"{what} {excerpt(url, SHOWN_CHARS)}: HTTP {status}")
    return _parse_json(body, what)


def _unusable_url(what: str, url: str) -> CheckFailure:
    return CheckFailure(Reason.ASSERTION, f"{what} URL {_shown(url)} is not usable")


def _usable_url(value: str) -> bool:
    """An absolute http(s) URL with a host aiohttp can connect to: a discovery document's URLs
    are the IdP's bytes, and aiohttp raises ValueError (or UnicodeError) on some."""
    if (
        len(value) > MAX_URL_LENGTH
        or not value.startswith(("https://", "http://"))
        or any(not c.isprintable() or c.isspace() for c in value)
    ):
        return False
    try:
        url = yarl.URL(value)
        host = url.raw_host
        if not host or url.port is None:
            return False
        # What the resolver does with the host (socket.getaddrinfo encodes it so).
        host.encode("idna")
    except (ValueError, UnicodeError):
        return False
    return True


def _parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except _JSON_ERRORS:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; so is an integer literal too
        # long to convert; RecursionError is a document nested too deep.
        raise CheckFailure(Reason.ASSERTION, f"{what} is not JSON ({len(body)} bytes)") from None


def _token_refused(status: int, body: bytes, cfg: IdpConfig) -> CheckFailure:
    error: str | None = None
    with contextlib.suppress(*_JSON_ERRORS):
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            error = document["error"]
    # Only the registered error code is shown, and only if it looks like one and carries no
    # form of the credentials sent: the rest of an error body is the IdP's free text and could
    # echo what the client sent (the secret, the Basic credentials).
    shown = (
        error
        if error is not None and _OAUTH_ERROR.match(error) and not _mentions_secret(error, cfg)
        else None
    )
    if status in (401, 403) or (status == 400 and error is not None):
        return CheckFailure(
            Reason.AUTH,
            f"token endpoint refused the client: HTTP {status}" + (f" {shown}" if shown else ""),
        )
    return CheckFailure(Reason.HTTP_STATUS, f"token endpoint: HTTP {status}")


def _expires_in(value: object) -> float | None:
    """`expires_in` in seconds, at most MAX_TOKEN_LIFETIME; None when absent or unusable
    (not a number, NaN, infinite, zero or negative, a boolean)."""
    if isinstance(value, str) and len(value) <= 64:
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an integer too large for a float
            return MAX_TOKEN_LIFETIME if value > 0 else None
        if math.isfinite(seconds) and seconds > 0:
            return min(seconds, MAX_TOKEN_LIFETIME)
    return None


def _when(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
            return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return _shown(value)


def _kind(value: object) -> str:
    """The JSON type of a decoded value, for messages: `string`, `null`, `object`..."""
    return json_kind(value).split(" ", 1)[-1]  # without the article: "an object" -> "object"


def _shown(value: object) -> str:
    """A value the IdP sent, as a message may quote it: strings quoted (printable, cut short),
    numbers as written, anything else by its JSON type (never a repr of a structure that may be
    nested a thousand deep or a megabyte long)."""
    if isinstance(value, str):
        return repr(excerpt(value, SHOWN_CHARS))
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float) or (isinstance(value, int) and abs(value) < 10**30):
        return repr(value)
    if isinstance(value, list) and len(value) <= 10 and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(repr(excerpt(v)) for v in value) + "]"
    return f"a JSON {_kind(value)}"


# ---------------------------------------------------------------------------------------------
# The check: measures the IdP end to end, with a fresh token every run.


class _PhaseClock:
    """Monotonic durations of the phases reached, and which one was running last."""

    def __init__(self) -> None:
        self.durations: dict[str, float] = {}
        self.current: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.current = name
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations[name] = time.monotonic() - start


class IdpCheck(Check):
    """One OIDC identity provider: discovery, JWKS, a client-credentials token, its validation."""

    kind = "idp"

    def __init__(self, cfg: IdpConfig) -> None:
        super().__init__(
            name=idp_check_name(cfg.name),
            target=cfg.name,
            interval=cfg.interval,
            # The check bounds itself with its budget so a slow IdP still yields the phase it
            # was stuck in; the hard limit (budget + margin) is only the backstop.
            budget=cfg.timeout,
            placement=cfg.placement,
        )
        self.cfg = cfg
        self.tls = ssl_context(cfg.ca_file)
        register_secrets(cfg)

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        clock = _PhaseClock()
        facts: dict[str, object] = {
            "idp": self.cfg.name,
            "phase_failed": None,
            "phases": {},
            "issuer": self.cfg.issuer,
            "kids": [],
            "token_kid": None,
            "expires_in": None,
        }
        failure: tuple[Reason, str] | None = None
        try:
            async with asyncio.timeout(run.remaining()):
                with clock.phase("discovery"):
                    discovery = await discover(ctx.http, self.cfg, self.tls)
                with clock.phase("jwks"):
                    keys = await fetch_jwks(ctx.http, discovery.jwks_uri, self.tls)
                facts["kids"] = [excerpt(k) for k in key_ids(keys)[:SHOWN_KIDS]]
                with clock.phase("token"):
                    issued = await request_token(
                        ctx.http, self.cfg, discovery.token_endpoint, self.tls
                    )
                facts["expires_in"] = issued.expires_in
                with clock.phase("validate"):
                    facts["token_kid"] = validate_token(self.cfg, issued.access_token, keys)
        except CheckFailure as exc:
            failure = exc.reason, exc.message
        except TimeoutError:
            # Before OSError: TimeoutError is one.
            failure = Reason.TIMEOUT, f"no answer within {self.cfg.timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            failure = classify(exc)
        duration = run.elapsed()

        facts["phases"] = {name: round(seconds, 6) for name, seconds in clock.durations.items()}
        measurements = [Measurement(IDP_UP.name, {"idp": self.cfg.name}, 0.0 if failure else 1.0)]
        measurements.extend(
            Measurement(IDP_PHASE_DURATION.name, {"idp": self.cfg.name, "phase": name}, seconds)
            for name, seconds in clock.durations.items()
        )
        if failure is not None:
            facts["phase_failed"] = clock.current
            return self.failed(
                failure[0],
                f"{clock.current}: {failure[1]}",
                run,
                duration=duration,
                measurements=tuple(measurements),
                facts=facts,
            )
        return self.result(
            run,
            ok=True,
            reason=None,
            message="",
            duration=duration,
            measurements=tuple(measurements),
            facts=facts,
        )

    def failed(self, reason: Reason, message: str, run: Run, **fields: Any) -> Result:
        """A failed run, the hard limit's included, tells every site's verdict that the IdP
        is failing: journeys that authenticate through it fail for that, not the site."""
        remark = Remark(None, f"IdP {self.target} is failing [{reason}]: {message}")
        fields.setdefault("evidence", (*self.standing_evidence, remark))
        return super().failed(reason, message, run, **fields)


# ---------------------------------------------------------------------------------------------
# The token cache: one token per IdP, shared by every journey run of the agent.


@dataclass(slots=True)
class _Slot:
    cfg: IdpConfig
    tls: ssl.SSLContext | bool
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    token: str | None = field(default=None, repr=False)
    refresh_at: float = 0.0  # monotonic
    expires_at: float = 0.0  # monotonic
    finished: int = 0  # token requests finished, whatever their outcome
    last_failure: CheckFailure | None = None
    discovery: Discovery | None = None
    discovery_until: float = 0.0

    def fresh(self, now: float) -> bool:
        return self.token is not None and now < self.refresh_at

    def usable(self, now: float) -> bool:
        return self.token is not None and now < self.expires_at


class TokenCache:
    """Client-credentials tokens per IdP: cached until `refresh_before` ahead of expiry, then
    refreshed by one caller while the others keep using the still-valid token.

    Concurrent callers share one request (single flight). A failed request is shared too:
    callers that queued behind it get its failure instead of each retrying a dead IdP.
    """

    def __init__(self, idps: Mapping[str, IdpConfig], http: aiohttp.ClientSession) -> None:
        self.http = http
        self.requests_made = 0
        self._slots = {name: _Slot(cfg, ssl_context(cfg.ca_file)) for name, cfg in idps.items()}
        for cfg in idps.values():
            register_secrets(cfg)

    def __repr__(self) -> str:
        return f"<TokenCache idps={sorted(self._slots)} requests_made={self.requests_made}>"

    async def token(self, idp: str) -> str:
        slot = self._slots.get(idp)
        if slot is None:
            raise CheckFailure(Reason.INTERNAL, f"no idp named {idp!r} is configured")
        now = time.monotonic()
        if slot.token is not None and (
            slot.fresh(now) or (slot.usable(now) and slot.lock.locked())
        ):
            # Either fresh, or a refresh is under way and the current token is still valid.
            return slot.token
        finished_seen = slot.finished
        async with slot.lock:
            now = time.monotonic()
            if slot.token is not None and slot.fresh(now):
                return slot.token
            if slot.finished != finished_seen and slot.last_failure is not None:
                # A request that finished while this caller waited failed: share its outcome
                # rather than queue one more request at a failing IdP.
                if slot.token is not None and slot.usable(now):
                    return slot.token
                raise CheckFailure(slot.last_failure.reason, slot.last_failure.message)
            slot.last_failure = None
            try:
                return await self._fetch(slot)
            except CheckFailure as failure:
                slot.last_failure = failure
                now = time.monotonic()
                if slot.token is None or not slot.usable(now):
                    raise
                slot.refresh_at = now + min(REFRESH_RETRY_AFTER, (slot.expires_at - now) / 2)
                log.warning("%s; the current token stays in use until it expires", failure)
                return slot.token
            finally:
                # Also on cancellation, with no failure recorded: the next waiter then
                # makes its own request.
                slot.finished += 1

    def invalidate(self, idp: str, token: str | None = None) -> None:
        """Drop the cached token (e.g. after a 401), or only `token` if it is still the one
        cached, so that many journeys rejecting one token cause one new request."""
        slot = self._slots.get(idp)
        if slot is None or (token is not None and token != slot.token):
            return
        slot.token = None
        slot.refresh_at = slot.expires_at = 0.0

    async def _fetch(self, slot: _Slot) -> str:
        cfg = slot.cfg
        try:
            async with asyncio.timeout(cfg.timeout):
                if slot.discovery is None or time.monotonic() >= slot.discovery_until:
                    slot.discovery = await discover(self.http, cfg, slot.tls)
                    slot.discovery_until = time.monotonic() + DISCOVERY_TTL
                requested = time.monotonic()
                self.requests_made += 1
                issued = await request_token(
                    self.http, cfg, slot.discovery.token_endpoint, slot.tls
                )
        except CheckFailure as exc:
            problem = exc.message
        except TimeoutError:
            problem = f"no answer within {cfg.timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            problem = classify(exc)[1]
        else:
            # Redacted by value from here on, wherever a target or a log might echo it.
            REDACTOR.remember(issued.access_token)
            lifetime = issued.expires_in or DEFAULT_TOKEN_LIFETIME
            slot.token = issued.access_token
            # Lifetimes shorter than refresh_before would otherwise be stale on arrival.
            slot.refresh_at = requested + max(lifetime - cfg.refresh_before, lifetime / 2)
            slot.expires_at = requested + lifetime
            return issued.access_token
        # The endpoint may have moved: discover again next time.
        slot.discovery = None
        raise CheckFailure(Reason.AUTH, f"idp {cfg.name}: cannot get a token: {problem}")


def plan(section: Sequence[IdpConfig], env: Env) -> list[Check]:
    """One check per identity provider."""
    return [IdpCheck(idp) for idp in section]


def endpoints(section: Sequence[IdpConfig]) -> Iterator[Endpoint]:
    """Each IdP's issuer: the TLS kind checks its certificate."""
    for idp in section:
        yield Endpoint(f"idp/{idp.name}", idp.issuer, idp.ca_file)


KIND = Kind(
    name=IdpCheck.kind,
    key="idps",
    model=IdpConfig,
    plan=plan,
    summary="an OIDC identity provider end to end: discovery, JWKS, a token, its validation",
    metrics=(IDP_UP, IDP_PHASE_DURATION),
    naming=("idp", lambda idp: idp.name),
    endpoints=endpoints,
    dependency_group="idps",
)
