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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote_plus

import aiohttp
from pydantic import BeforeValidator, Field, field_validator

from agent.configtypes import Duration, Model, Name, Secret, parse_duration
from agent.results import CheckFailure, Measurement, Reason, Result
from probes.base import Check, ProbeContext, new_run_id, wall_now
from probes.http import classify, read_bounded, ssl_context

if TYPE_CHECKING:
    # joserfc (and cryptography under it, ~9 MB) is imported where tokens are handled, so an
    # agent with no IdP configured never loads it.
    from joserfc.jwk import KeySet

    from agent.config import Config

log = logging.getLogger(__name__)

PHASES = ("discovery", "jwks", "token", "validate")
MAX_BODY_BYTES = 1_048_576
# Discovery documents change only when the IdP is reconfigured; the token cache re-reads them
# this often, and at once after any failed token request.
DISCOVERY_TTL = 300.0
# A token response without `expires_in` is trusted for this long (RFC 6749 leaves it optional).
DEFAULT_TOKEN_LIFETIME = 60.0
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

Leeway = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""A duration that may be zero (`0s` means no leeway)."""


class IdpConfig(Model):
    """One OIDC identity provider: what the `idp` check probes and journeys get tokens from."""

    name: Name
    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: Secret
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    audience: str | None = None
    scope: str | None = None
    interval: Duration = 30.0
    timeout: Duration = 5.0
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
    if issuer != cfg.issuer:
        raise CheckFailure(
            Reason.ASSERTION, f"discovery issuer is {issuer!r}, expected {cfg.issuer!r}"
        )
    missing = [
        key
        for key in ("jwks_uri", "token_endpoint")
        if not isinstance(document.get(key), str) or not document[key]
    ]
    if missing:
        raise CheckFailure(Reason.ASSERTION, f"discovery document lacks {', '.join(missing)}")
    for key in ("jwks_uri", "token_endpoint"):
        if not document[key].startswith(("https://", "http://")):
            raise CheckFailure(
                Reason.ASSERTION, f"discovery {key} {document[key]!r} is not an http(s) URL"
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
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise CheckFailure(Reason.ASSERTION, f"JWKS keys are unusable: {exc}") from None


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
    async with http.post(
        endpoint, data=form, headers=headers, ssl=tls, allow_redirects=False
    ) as response:
        body = await read_bounded(response, MAX_BODY_BYTES)
        status = response.status
    if not 200 <= status < 300:
        raise _token_refused(status, body, secret)
    document = _parse_json(body, "token response")
    if not isinstance(document, dict):
        raise CheckFailure(Reason.ASSERTION, "token response is not a JSON object")
    access_token = document.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise CheckFailure(Reason.ASSERTION, "token response has no access_token")
    token_type = document.get("token_type")
    if isinstance(token_type, str) and token_type.lower() != "bearer":
        raise CheckFailure(
            Reason.ASSERTION, f"token_type is {_printable(token_type)!r}, expected Bearer"
        )
    return IssuedToken(access_token, _expires_in(document.get("expires_in")))


def validate_token(cfg: IdpConfig, token: str, keys: KeySet) -> str:
    """Check the token's signature against the JWKS and its claims; return its kid."""
    from joserfc import jws, jwt
    from joserfc.errors import (
        BadSignatureError,
        JoseError,
    )

    try:
        header = jws.extract_compact(token.encode()).headers()
    except (JoseError, ValueError, TypeError):
        raise CheckFailure(Reason.AUTH, "access token is not a signed JWT") from None
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise CheckFailure(Reason.AUTH, "token has no kid header")
    kids = [k.kid for k in keys]
    if kid not in kids:
        raise CheckFailure(
            Reason.AUTH,
            f"token signed with kid {kid}, not in JWKS (kids: {', '.join(map(str, kids))})",
        )
    alg = header.get("alg")
    if alg not in SIGNATURE_ALGORITHMS:
        raise CheckFailure(Reason.AUTH, f"token alg {alg!r} is not an accepted signature algorithm")
    try:
        claims = jwt.decode(token, keys.get_by_kid(kid), algorithms=[alg]).claims
    except BadSignatureError:
        raise CheckFailure(
            Reason.AUTH, f"token signature does not verify with JWKS key {kid}"
        ) from None
    except (JoseError, ValueError, TypeError) as exc:
        raise CheckFailure(Reason.AUTH, f"token rejected: {exc}") from None
    _validate_claims(cfg, claims)
    return kid


def _validate_claims(cfg: IdpConfig, claims: dict[str, Any]) -> None:
    from joserfc import jwt
    from joserfc.errors import ExpiredTokenError, InvalidClaimError, MissingClaimError

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
        raise CheckFailure(Reason.AUTH, f"token lacks claim {exc.claim}") from None
    except InvalidClaimError as exc:
        value = claims.get(exc.claim)
        if exc.claim == "iss":
            message = f"token iss is {value!r}, expected {cfg.issuer!r}"
        elif exc.claim == "aud":
            message = f"token aud is {value!r}, expected {cfg.audience!r}"
        elif exc.claim == "nbf":
            message = f"token not valid before {_when(value)} ({skew})"
        elif exc.claim == "iat":
            message = f"token issued in the future, at {_when(value)} ({skew})"
        else:
            message = f"token claim {exc.claim} is invalid"
        raise CheckFailure(Reason.AUTH, message) from None


async def _get_json(
    http: aiohttp.ClientSession, url: str, tls: ssl.SSLContext | bool, what: str
) -> Any:
    async with http.get(
        url, headers={"Accept": "application/json"}, ssl=tls, allow_redirects=False
    ) as response:
        body = await read_bounded(response, MAX_BODY_BYTES)
        status = response.status
    if not 200 <= status < 300:
        raise CheckFailure(Reason.HTTP_STATUS, f"{what} {url}: HTTP {status}")
    return _parse_json(body, what)


def _parse_json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckFailure(Reason.ASSERTION, f"{what} is not JSON ({len(body)} bytes)") from None


def _token_refused(status: int, body: bytes, secret: str) -> CheckFailure:
    error: str | None = None
    with contextlib.suppress(UnicodeDecodeError, json.JSONDecodeError):
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            error = document["error"]
    # Only the registered error code is shown, and only if it looks like one: the rest of an
    # error body is the IdP's free text and could echo what the client sent.
    shown = (
        error if error is not None and _OAUTH_ERROR.match(error) and secret not in error else None
    )
    if status in (401, 403) or (status == 400 and error is not None):
        return CheckFailure(
            Reason.AUTH,
            f"token endpoint refused the client: HTTP {status}" + (f" {shown}" if shown else ""),
        )
    return CheckFailure(Reason.HTTP_STATUS, f"token endpoint: HTTP {status}")


def _expires_in(value: object) -> float | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return None


def _when(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            moment = datetime.datetime.fromtimestamp(value, datetime.UTC)
            return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    return repr(value)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:64])


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
            name=f"idp/{cfg.name}",
            target=cfg.name,
            interval=cfg.interval,
            # The check bounds itself with cfg.timeout so a slow IdP still yields the phase
            # it was stuck in; the scheduler's hard limit is only the backstop.
            timeout=cfg.timeout + 1.0,
        )
        self.cfg = cfg
        self.tls = ssl_context(cfg.ca_file)

    async def run(self, ctx: ProbeContext) -> Result:
        started_at = wall_now()
        start = time.monotonic()
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
            async with asyncio.timeout(self.cfg.timeout):
                with clock.phase("discovery"):
                    discovery = await discover(ctx.http, self.cfg, self.tls)
                with clock.phase("jwks"):
                    keys = await fetch_jwks(ctx.http, discovery.jwks_uri, self.tls)
                facts["kids"] = [k.kid for k in keys]
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
        duration = time.monotonic() - start

        facts["phases"] = {name: round(seconds, 6) for name, seconds in clock.durations.items()}
        measurements = [Measurement("idp_up", {"idp": self.cfg.name}, 0.0 if failure else 1.0)]
        measurements.extend(
            Measurement(
                "idp_phase_duration_seconds", {"idp": self.cfg.name, "phase": name}, seconds
            )
            for name, seconds in clock.durations.items()
        )
        message = ""
        if failure is not None:
            facts["phase_failed"] = clock.current
            message = f"{clock.current}: {failure[1]}"
        return self.result(
            ok=failure is None,
            reason=failure[0] if failure else None,
            message=message,
            started_at=started_at,
            duration=duration,
            run_id=new_run_id(),
            measurements=tuple(measurements),
            facts=facts,
        )


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
            lifetime = issued.expires_in or DEFAULT_TOKEN_LIFETIME
            slot.token = issued.access_token
            # Lifetimes shorter than refresh_before would otherwise be stale on arrival.
            slot.refresh_at = requested + max(lifetime - cfg.refresh_before, lifetime / 2)
            slot.expires_at = requested + lifetime
            return issued.access_token
        # The endpoint may have moved: discover again next time.
        slot.discovery = None
        raise CheckFailure(Reason.AUTH, f"idp {cfg.name}: cannot get a token: {problem}")


def plan(config: Config) -> list[Check]:
    """One check per identity provider."""
    return [IdpCheck(idp) for idp in config.idps]
