"""The idp check and the token cache against a real OIDC issuer on loopback, faults injected."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import trustme
from pydantic import ValidationError

from failsight.core.check import ProbeContext, Run, TokenSource, idp_check_name
from failsight.core.http import new_session
from failsight.core.kind import Endpoint, Env
from failsight.core.results import CheckFailure, Reason, Remark, Result
from failsight.probes.idp import KIND, IdpCheck, IdpConfig, TokenCache
from tests.fixtures.oidc import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcIssuer


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[OidcIssuer]:
    async with OidcIssuer() as server:
        yield server


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with new_session() as session:
        yield session


def config(issuer: str, **overrides: Any) -> IdpConfig:
    data: dict[str, Any] = {
        "name": "corp-idp",
        "issuer": issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "audience": AUDIENCE,
        "scope": "orders:write",
    }
    data.update(overrides)
    return IdpConfig.model_validate(data)


async def run_check(cfg: IdpConfig, http: aiohttp.ClientSession) -> Result:
    return await IdpCheck(cfg).run(ProbeContext(vantage="test", http=http))


def gauges(result: Result) -> dict[tuple[str, str], float]:
    return {(m.name, m.labels.get("phase", "")): m.value for m in result.measurements}


def phases_of(result: Result) -> set[str]:
    phases = result.facts["phases"]
    assert isinstance(phases, dict)
    return set(phases)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert CLIENT_SECRET not in str(text)


def assert_failed(result: Result, reason: Reason, phase: str, *fragments: str) -> None:
    assert not result.ok, result.summary()
    assert result.reason is reason, result.summary()
    assert result.facts["phase_failed"] == phase
    assert result.message.startswith(f"{phase}: "), result.message
    for fragment in fragments:
        assert fragment in result.message, result.message
    assert gauges(result)[("idp_up", "")] == 0.0
    assert_no_secret(result.message, json.dumps(result.summary()))


# -- the check: healthy ---------------------------------------------------------------------------


async def test_healthy_issuer_passes_every_phase(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    result = await run_check(config(issuer.issuer), http)

    assert result.ok, result.message
    assert (result.check, result.kind, result.target, result.site) == (
        "idp/corp-idp",
        "idp",
        "corp-idp",
        None,
    )
    assert result.reason is None and result.message == ""
    values = gauges(result)
    assert values[("idp_up", "")] == 1.0
    for phase in ("discovery", "jwks", "token", "validate"):
        assert values[("idp_phase_duration_seconds", phase)] >= 0.0
    assert {m.labels["idp"] for m in result.measurements} == {"corp-idp"}
    facts = result.facts
    assert facts["idp"] == "corp-idp"
    assert facts["phase_failed"] is None
    assert facts["issuer"] == issuer.issuer
    assert facts["kids"] == ["key-2024"]
    assert facts["token_kid"] == "key-2024"
    assert facts["expires_in"] == 300.0
    phases = facts["phases"]
    assert isinstance(phases, dict) and set(phases) == {"discovery", "jwks", "token", "validate"}
    assert 0.0 < result.duration < 10.0
    assert result.evidence == ()  # a healthy IdP bears on no site's verdict
    json.dumps(result.summary())  # facts are JSON-serialisable
    assert issuer.auth_methods == ["client_secret_basic"]


async def test_each_run_requests_a_fresh_token(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    check = IdpCheck(config(issuer.issuer))
    ctx = ProbeContext(vantage="test", http=http)
    assert (await check.run(ctx)).ok
    assert (await check.run(ctx)).ok
    assert issuer.token_requests == 2
    assert len(set(issuer.issued)) == 2


async def test_client_secret_post_sends_credentials_in_the_form(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    result = await run_check(config(issuer.issuer, auth_method="client_secret_post"), http)
    assert result.ok, result.message
    assert issuer.auth_methods == ["client_secret_post"]


async def test_audience_is_optional(issuer: OidcIssuer, http: aiohttp.ClientSession) -> None:
    result = await run_check(config(issuer.issuer, audience=None, scope=None), http)
    assert result.ok, result.message


# -- the check: unreachable and broken endpoints -------------------------------------------------


async def test_unreachable_issuer_is_a_connect_failure(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    result = await run_check(config(issuer.refused_issuer), http)
    assert_failed(result, Reason.CONNECT, "discovery", "cannot connect to 127.0.0.1")
    assert phases_of(result) == {"discovery"}
    assert [k for k in gauges(result) if k[0] == "idp_phase_duration_seconds"] == [
        ("idp_phase_duration_seconds", "discovery")
    ]


async def test_discovery_error_status_is_http_status(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.discovery_status = 503
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.HTTP_STATUS, "discovery", "HTTP 503")


async def test_wrong_issuer_in_discovery_is_an_assertion(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.discovery_issuer = "https://evil.example.test/realms/test"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(
        result,
        Reason.ASSERTION,
        "discovery",
        "'https://evil.example.test/realms/test'",
        f"expected {issuer.issuer!r}",
    )


async def test_issuer_must_match_exactly_even_a_trailing_slash(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    result = await run_check(config(issuer.issuer + "/"), http)
    assert_failed(result, Reason.ASSERTION, "discovery", "discovery issuer is")


async def test_discovery_that_is_not_json_is_an_assertion(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.discovery_raw = b"<html>maintenance</html>"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.ASSERTION, "discovery", "discovery is not JSON")


async def test_discovery_missing_fields_is_an_assertion(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.discovery_patch = {"token_endpoint": None, "jwks_uri": None}
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.ASSERTION, "discovery", "lacks jwks_uri, token_endpoint")


async def test_jwks_not_found_is_http_status(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.jwks = "404"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.HTTP_STATUS, "jwks", "HTTP 404")
    assert phases_of(result) == {"discovery", "jwks"}


async def test_jwks_unreachable_is_a_connect_failure(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.jwks = "refused"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.CONNECT, "jwks", "cannot connect")


async def test_huge_jwks_is_refused_not_read(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.jwks = "huge"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.ASSERTION, "jwks", "exceeds the limit of 1048576")


async def test_token_endpoint_error_is_http_status(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.token_status = 500
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.HTTP_STATUS, "token", "token endpoint: HTTP 500")
    assert result.facts["kids"] == ["key-2024"]
    assert result.facts["token_kid"] is None


async def test_wrong_client_secret_is_auth_and_never_shown(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.client_secret = "the-real-secret"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.AUTH, "token", "HTTP 401 invalid_client")
    assert "the-real-secret" not in json.dumps(result.summary())


async def test_a_failing_idp_tells_every_sites_verdict(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.client_secret = "the-real-secret"
    check = IdpCheck(config(issuer.issuer))

    result = await check.run(ProbeContext(vantage="test", http=http))

    assert result.message == "token: token endpoint refused the client: HTTP 401 invalid_client"
    assert result.evidence == (
        Remark(
            None,
            "IdP corp-idp is failing [auth]: token: token endpoint refused the client: "
            "HTTP 401 invalid_client",
        ),
    )
    # The hard limit's result (and a bug's) says so too.
    cut_off = check.failed(Reason.TIMEOUT, "run exceeded its 6s limit", Run.begin(check.budget))
    assert cut_off.evidence == (
        Remark(None, "IdP corp-idp is failing [timeout]: run exceeded its 6s limit"),
    )


async def test_slow_token_endpoint_times_out_in_the_token_phase(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.token_delay = 5.0
    start = time.monotonic()
    result = await run_check(config(issuer.issuer, timeout="1s"), http)
    elapsed = time.monotonic() - start
    assert_failed(result, Reason.TIMEOUT, "token", "no answer within 1s")
    assert elapsed < 4.0  # bounded by the check's timeout, not by the IdP
    assert phases_of(result) == {"discovery", "jwks", "token"}


async def test_untrusted_tls_is_a_tls_failure_and_ca_file_fixes_it(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with OidcIssuer(tls=context) as server:
        untrusted = await run_check(config(server.issuer), http)
        assert_failed(untrusted, Reason.TLS, "discovery", "certificate verification failed")
        trusted = await run_check(config(server.issuer, ca_file=str(ca_file)), http)
        assert trusted.ok, trusted.message


# -- the check: token validation ------------------------------------------------------------------


async def test_expired_token_is_auth(issuer: OidcIssuer, http: aiohttp.ClientSession) -> None:
    issuer.issue_expired = True
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.AUTH, "validate", "token expired at", "clock skew allowed 30s")


async def test_token_from_a_rotated_key_missing_in_jwks_is_its_own_failure(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.sign_with = "rotated"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.AUTH, "validate")
    assert (
        result.message == "validate: token signed with kid key-2025, not in JWKS (kids: key-2024)"
    )
    assert result.facts["token_kid"] is None


async def test_forged_signature_is_auth(issuer: OidcIssuer, http: aiohttp.ClientSession) -> None:
    issuer.sign_with = "forged"  # same kid as the published key, different private key
    result = await run_check(config(issuer.issuer), http)
    assert_failed(
        result, Reason.AUTH, "validate", "signature does not verify with JWKS key key-2024"
    )


async def test_wrong_audience_is_auth(issuer: OidcIssuer, http: aiohttp.ClientSession) -> None:
    issuer.token_audience = "billing-api"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(
        result, Reason.AUTH, "validate", "token aud is 'billing-api', expected 'order-api'"
    )


async def test_wrong_token_issuer_is_auth(issuer: OidcIssuer, http: aiohttp.ClientSession) -> None:
    issuer.token_issuer = "https://other.example.test"
    result = await run_check(config(issuer.issuer), http)
    assert_failed(result, Reason.AUTH, "validate", "token iss is 'https://other.example.test'")


async def test_clock_skew_is_tolerated_up_to_the_configured_leeway(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.clock_offset = 20.0  # the IdP's clock runs 20 s ahead: nbf and iat are in our future
    assert (await run_check(config(issuer.issuer, clock_skew="30s"), http)).ok
    result = await run_check(config(issuer.issuer, clock_skew="5s"), http)
    assert_failed(result, Reason.AUTH, "validate", "clock skew allowed 5s")


# -- config ---------------------------------------------------------------------------------------


def test_config_defaults_and_durations() -> None:
    cfg = IdpConfig.model_validate(
        {
            "name": "corp-idp",
            "issuer": "https://idp.example.test/realms/ops",
            "client_id": "x",
            "client_secret": "y",
        }
    )
    assert (cfg.interval, cfg.timeout, cfg.clock_skew, cfg.refresh_before) == (30, 5, 30, 60)
    assert cfg.auth_method == "client_secret_basic"
    assert cfg.audience is None and cfg.scope is None and cfg.ca_file is None
    assert cfg.discovery_url == (
        "https://idp.example.test/realms/ops/.well-known/openid-configuration"
    )
    tuned = config("https://idp.example.test/", interval="1m", timeout="500ms", clock_skew="0s")
    assert (tuned.interval, tuned.timeout, tuned.clock_skew) == (60.0, 0.5, 0.0)
    assert tuned.discovery_url == "https://idp.example.test/.well-known/openid-configuration"
    check = IdpCheck(tuned)
    assert (check.name, check.interval, check.site) == ("idp/corp-idp", 60.0, None)
    assert check.name == idp_check_name("corp-idp")
    # The probe bounds itself with its timeout; the hard limit is a second later.
    assert (check.budget, check.timeout) == (0.5, 1.5)


def test_kind_plans_one_check_per_idp_and_lists_their_issuers() -> None:
    corp = config("https://login.example.test/realms/ops")
    partner = config("http://partner.example.test", name="partner")

    checks = KIND.plan([corp, partner], Env(vantage="test", sites=()))

    assert [(c.name, c.target) for c in checks] == [
        ("idp/corp-idp", "corp-idp"),
        ("idp/partner", "partner"),
    ]
    assert list(KIND.endpoints([corp, partner])) == [
        Endpoint("idp/corp-idp", "https://login.example.test/realms/ops"),
        Endpoint("idp/partner", "http://partner.example.test"),
    ]
    assert (KIND.name, KIND.key, KIND.model, KIND.dependency_group) == (
        "idp",
        "idps",
        IdpConfig,
        "idps",
    )
    assert [m.name for m in KIND.metrics] == ["idp_up", "idp_phase_duration_seconds"]
    assert KIND.naming is not None
    noun, name_of = KIND.naming
    assert (noun, name_of(partner)) == ("idp", "partner")


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"issuer": "idp.example.test"}, "issuer", "expected an http:// or https:// URL"),
        ({"issuer": "https://idp/x?y=1"}, "issuer", "without query or fragment"),
        ({"auth_method": "private_key_jwt"}, "auth_method", "Input should be"),
        ({"timeout": "0s"}, "timeout", "must be greater than zero"),
        ({"clock_skew": "-1"}, "clock_skew", "invalid duration"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file", "file not found: /nonexistent/ca.pem"),
        ({"client_id": ""}, "client_id", "at least 1 character"),
        ({"grant": "password"}, "grant", "Extra inputs are not permitted"),
    ],
)
def test_invalid_config_is_refused(overrides: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(**{"issuer": "https://idp.example.test", **overrides})
    errors = info.value.errors()
    assert [e["loc"][0] for e in errors] == [field]
    assert message in errors[0]["msg"]


def test_secret_never_in_config_repr_or_dump() -> None:
    cfg = config("https://idp.example.test")
    assert_no_secret(repr(cfg), str(cfg), cfg.model_dump(), cfg.model_dump_json())
    assert cfg.client_secret.get_secret_value() == CLIENT_SECRET


# -- the token cache ------------------------------------------------------------------------------


def cache_for(http: aiohttp.ClientSession, *idps: IdpConfig) -> TokenCache:
    cache = TokenCache({idp.name: idp for idp in idps}, http)
    source: TokenSource = cache  # the journey's contract
    assert source is cache
    return cache


async def test_cache_reuses_the_token_across_calls(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    cache = cache_for(http, config(issuer.issuer))
    tokens = [await cache.token("corp-idp") for _ in range(5)]
    assert len(set(tokens)) == 1 and tokens[0] == issuer.issued[0]
    assert cache.requests_made == 1 and issuer.token_requests == 1


async def test_cache_refreshes_before_expiry(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.expires_in = 4
    cache = cache_for(http, config(issuer.issuer, refresh_before="2s"))
    first = await cache.token("corp-idp")
    assert await cache.token("corp-idp") == first
    await asyncio.sleep(2.3)  # past expires_in - refresh_before, well before expiry
    second = await cache.token("corp-idp")
    assert second != first
    assert cache.requests_made == 2 and issuer.token_requests == 2
    assert await cache.token("corp-idp") == second
    assert issuer.discovery_requests == 1  # discovery is cached too


async def test_cache_is_single_flight_under_a_burst(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.token_delay = 0.3  # keep the request open while every caller arrives
    cache = cache_for(http, config(issuer.issuer))
    tokens = await asyncio.gather(*(cache.token("corp-idp") for _ in range(100)))
    assert len(set(tokens)) == 1
    assert cache.requests_made == 1 and issuer.token_requests == 1


async def test_cache_shares_a_failure_with_the_callers_waiting_on_it(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.token_status = 503
    issuer.token_delay = 0.3
    cache = cache_for(http, config(issuer.issuer))
    outcomes = await asyncio.gather(
        *(cache.token("corp-idp") for _ in range(50)), return_exceptions=True
    )
    assert all(isinstance(o, CheckFailure) and o.reason is Reason.AUTH for o in outcomes)
    assert issuer.token_requests == 1
    # A later call tries again rather than caching the failure.
    issuer.token_status = None
    issuer.token_delay = 0.0
    assert await cache.token("corp-idp") == issuer.issued[0]


async def test_cache_keeps_the_valid_token_when_a_refresh_fails(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.expires_in = 6
    cache = cache_for(http, config(issuer.issuer, refresh_before="4s"))
    first = await cache.token("corp-idp")
    await asyncio.sleep(3.2)  # due for refresh (at 3 s), valid until 6 s
    issuer.token_status = 500
    assert await cache.token("corp-idp") == first
    assert await cache.token("corp-idp") == first  # no retry storm while it stays valid
    assert issuer.token_requests == 2


async def test_cache_reports_auth_when_the_idp_is_down(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    cache = cache_for(http, config(issuer.refused_issuer))
    with pytest.raises(CheckFailure) as info:
        await cache.token("corp-idp")
    assert info.value.reason is Reason.AUTH
    assert info.value.message.startswith("idp corp-idp: cannot get a token: cannot connect")
    assert_no_secret(info.value.message, repr(info.value), repr(cache))


async def test_cache_reports_auth_for_bad_credentials_without_the_secret(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.client_secret = "rotated-by-someone"
    cache = cache_for(http, config(issuer.issuer, auth_method="client_secret_post"))
    with pytest.raises(CheckFailure) as info:
        await cache.token("corp-idp")
    assert info.value.reason is Reason.AUTH
    assert info.value.message == (
        "idp corp-idp: cannot get a token: token endpoint refused the client: HTTP 401 "
        "invalid_client"
    )
    assert_no_secret(info.value.message, repr(cache))


async def test_cache_reports_a_slow_idp_as_auth_within_its_timeout(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    issuer.token_delay = 5.0
    cache = cache_for(http, config(issuer.issuer, timeout="1s"))
    start = time.monotonic()
    with pytest.raises(CheckFailure) as info:
        await cache.token("corp-idp")
    assert time.monotonic() - start < 4.0
    assert info.value.reason is Reason.AUTH
    assert info.value.message == "idp corp-idp: cannot get a token: no answer within 1s"


async def test_invalidate_drops_the_cached_token(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    cache = cache_for(http, config(issuer.issuer))
    first = await cache.token("corp-idp")
    cache.invalidate("corp-idp", token="not-the-cached-one")
    assert await cache.token("corp-idp") == first
    cache.invalidate("corp-idp")
    second = await cache.token("corp-idp")
    assert second != first and cache.requests_made == 2
    assert first not in repr(cache) and second not in repr(cache)


async def test_cache_serves_each_idp_separately(
    issuer: OidcIssuer, http: aiohttp.ClientSession
) -> None:
    cache = cache_for(
        http,
        config(issuer.issuer),
        config(issuer.issuer, name="partner-idp", audience="partner-api"),
    )
    corp, partner = await cache.token("corp-idp"), await cache.token("partner-idp")
    assert corp != partner and cache.requests_made == 2
    with pytest.raises(CheckFailure) as info:
        await cache.token("nope")
    assert info.value.reason is Reason.INTERNAL
