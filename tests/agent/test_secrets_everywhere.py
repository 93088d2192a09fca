"""A target that echoes our request back (headers in a 401 body, a token in a JSON field, a
secret in a response header) never gets our secrets into anything the agent emits: the log
lines, /metrics, every /v1 endpoint, the status page, and the OTLP collector's payloads."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from failsight.agent.logs import JsonFormatter
from failsight.core.redact import REDACTED, basic_credentials
from tests.fixtures.oidc import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcIssuer
from tests.fixtures.otlp_receiver import GrpcReceiver
from tests.fixtures.platform import running_agent, wait_for, write_config

TOKEN = "tok-9f8e7d6c5b4a-bearer-secret"
SITE_SECRET = "site-3d2c1b0a-header-secret"


class EchoingSite:
    """Answers every request by quoting it back, the way a debugging endpoint or a misconfigured
    gateway does: /orders → 401 with the request headers first in the body; /status → 200 with
    the bearer token in a field an assertion reads; /header → the site secret in a header."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _echo(self, request: web.Request) -> web.Response:
        headers = dict(request.headers)
        self.seen.append(headers)
        if request.path == "/status":
            return web.json_response({"state": headers.get("Authorization", "")})
        if request.path == "/header":
            return web.json_response({}, headers={"X-Echo": headers.get("X-Site-Secret", "")})
        body = json.dumps(
            {"auth": headers.get("Authorization"), "site": headers.get("X-Site-Secret")}
        )
        return web.Response(status=401, text=body, content_type="application/json")

    async def __aenter__(self) -> EchoingSite:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@pytest.fixture
def receiver() -> AsyncIterator[GrpcReceiver]:
    r = GrpcReceiver()
    r.start()
    yield r  # type: ignore[misc]
    r.stop()


def journey(name: str, path: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "interval": "300ms",
        "timeout": "2s",
        "sites": ["echo"],
        "steps": [{"name": "call", "method": "POST", "path": path, **extra}],
    }


async def test_no_secret_reaches_any_output(
    tmp_path: Path, receiver: GrpcReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FS_ECHO_TOKEN", TOKEN)
    secret_file = tmp_path / "site-secret"
    secret_file.write_text(SITE_SECRET + "\n")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        async with EchoingSite() as site, OidcIssuer() as issuer:
            data = {
                "agent": {"vantage": "aws-use1", "listen": "127.0.0.1:0", "shutdown_grace": "2s"},
                "sites": [
                    {
                        "name": "echo",
                        "role": "primary",
                        "base_url": site.url,
                        "headers": {"X-Site-Secret": f"${{file:{secret_file}}}"},
                    },
                    {"name": "standby", "role": "standby", "base_url": site.url + "/s"},
                ],
                "idps": [
                    {
                        "name": "corp",
                        "issuer": issuer.issuer,
                        "client_id": CLIENT_ID,
                        "client_secret": CLIENT_SECRET,
                        "audience": AUDIENCE,
                        "interval": "1s",
                    }
                ],
                "journeys": [
                    journey("echo-401", "/orders", headers={"X-Tenant": "t1"})
                    | {"bearer_token": "${env:FS_ECHO_TOKEN}"},
                    journey("echo-idp", "/orders") | {"idp": "corp"},
                    journey(
                        "echo-field",
                        "/status",
                        expect={"json": [{"path": "$.state", "equals": "nothing"}]},
                    )
                    | {"bearer_token": "${env:FS_ECHO_TOKEN}"},
                    journey(
                        "echo-idp-field",
                        "/status",
                        expect={"json": [{"path": "$.state", "equals": "nothing"}]},
                    )
                    | {"idp": "corp"},
                    journey(
                        "echo-header",
                        "/header",
                        expect={"headers": [{"name": "X-Echo", "equals": "nothing"}]},
                    ),
                ],
                "telemetry": {
                    "otlp": [
                        {
                            "name": "live",
                            "endpoint": receiver.endpoint,
                            "protocol": "grpc",
                            "timeout": "500ms",
                            "export_interval": "300ms",
                        }
                    ]
                },
            }
            config = write_config(tmp_path / "c.yaml", data)
            async with running_agent(config) as agent:
                base = f"http://127.0.0.1:{agent.port}"

                def failed(reason: str, journey: str) -> bool:
                    r = agent.latest_results().get(f"journey/{journey}/echo")
                    return r is not None and not r.ok and r.reason == reason

                await wait_for(
                    lambda: (
                        failed("auth", "echo-401")
                        and failed("auth", "echo-idp")
                        and failed("assertion", "echo-field")
                        and failed("assertion", "echo-idp-field")
                        and failed("assertion", "echo-header")
                        and bool(issuer.issued)
                    ),
                    timeout=20,
                )
                # The site really did receive (and echo) every secret we guard.
                sent = {h.get("Authorization", "") for h in site.seen}
                assert f"Bearer {TOKEN}" in sent
                assert any(t in s for t in issuer.issued for s in sent)
                assert any(h.get("X-Site-Secret") == SITE_SECRET for h in site.seen)
                await wait_for(lambda: len(receiver.inbox.log_records()) > 4, timeout=15)
                async with aiohttp.ClientSession() as http:
                    bodies: dict[str, str] = {}
                    for path in (
                        "/",
                        "/status.js",
                        "/metrics",
                        "/v1/results",
                        "/v1/verdict",
                        "/v1/view",
                        "/v1/timeline",
                        "/v1/sites/echo/health",
                    ):
                        async with http.get(base + path) as response:
                            bodies[path] = await response.text()
                results = json.loads(bodies["/v1/results"])
                messages = json.dumps(results)
                # Not vacuous: the echoes are in the results, with the secrets cut out.
                assert REDACTED in results["journey/echo-401/echo"]["message"], messages
                assert REDACTED in results["journey/echo-field/echo"]["message"], messages
                assert REDACTED in results["journey/echo-idp-field/echo"]["message"], messages
                assert REDACTED in results["journey/echo-header/echo"]["message"], messages
    finally:
        logging.getLogger().removeHandler(handler)
    secrets = [
        TOKEN,
        SITE_SECRET,
        CLIENT_SECRET,
        # Past the base64 of "failsight:" (the client id is public and in every JWT).
        basic_credentials(CLIENT_ID, CLIENT_SECRET)[16:],
        *issuer.issued,
    ]
    inbox = receiver.inbox
    otlp = b"".join(
        r.SerializeToString()
        for r in (*inbox.trace_requests, *inbox.log_requests, *inbox.metric_requests)
    )
    assert inbox.trace_requests and inbox.log_requests
    logs = stream.getvalue()
    assert "echo-401" in logs
    surfaces = {"log": logs, "otlp": otlp.decode("utf-8", "replace"), **bodies}
    for secret in secrets:
        for fragment in fragments(secret):
            for surface, text in surfaces.items():
                assert fragment not in text, f"{surface} holds part of a secret"


def fragments(secret: str) -> list[str]:
    """Pieces of a secret that must not appear either: a message cut at 200 bytes must not
    carry the first half of a token. For a JWT, the signature is what makes it a credential."""
    if secret.count(".") == 2:
        secret = secret.rsplit(".", 1)[1]
    return [secret[i : i + 12] for i in range(0, max(1, len(secret) - 11), 6)]
