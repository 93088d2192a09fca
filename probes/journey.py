"""Business journeys: ordered HTTP steps with assertions, extraction and polling, then cleanup."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import aiohttp
from pydantic import BeforeValidator, Field, field_validator, model_validator

from agent.configtypes import Duration, Model, Name, Secret
from agent.results import CheckFailure, Reason, Result, StepResult
from probes.base import Check, ProbeContext, new_run_id, new_span_id, new_trace_id, wall_now
from probes.http import classify, public_phases, read_bounded, ssl_context
from probes.templating import JsonPath, MissingVariable, find, render, render_text

if TYPE_CHECKING:
    from agent.config import Config

SYNTHETIC_HEADER = "X-Failsight-Synthetic"
RUN_ID_HEADER = "X-Failsight-Run-Id"
VANTAGE_HEADER = "X-Failsight-Vantage"

# Variables every run defines before its first step.
BUILTIN_VARIABLES = frozenset({"run_id", "site", "tenant", "vantage", "journey"})

_STATUS_RANGE = re.compile(r"^\s*([1-5]\d\d)\s*-\s*([1-5]\d\d)\s*$")
_STATUS_CLASS = re.compile(r"^\s*([1-5])xx\s*$", re.IGNORECASE)


def _parse_status(value: Any) -> Any:
    """`200`, `"2xx"`, `"200-299"`, or a list of those, into a tuple of inclusive ranges."""
    items = value if isinstance(value, list | tuple) else [value]
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, list | tuple) and len(item) == 2:  # already parsed (a model dump)
            ranges.extend(_parse_status([f"{item[0]}-{item[1]}"]))
            continue
        if isinstance(item, bool):
            raise ValueError("expected a status code, a range like 200-299, or a class like 2xx")
        if isinstance(item, int):
            if not 100 <= item <= 599:
                raise ValueError(f"{item} is not an HTTP status code")
            ranges.append((item, item))
            continue
        if isinstance(item, str):
            if item.strip().isdigit():
                ranges.extend(_parse_status(int(item)))
                continue
            if m := _STATUS_RANGE.match(item):
                low, high = int(m.group(1)), int(m.group(2))
                if low > high:
                    raise ValueError(f"empty status range {item!r}")
                ranges.append((low, high))
                continue
            if m := _STATUS_CLASS.match(item):
                base = int(m.group(1)) * 100
                ranges.append((base, base + 99))
                continue
        raise ValueError(f"invalid status {item!r}: use 200, 200-299 or 2xx")
    return tuple(ranges)


StatusRanges = Annotated[tuple[tuple[int, int], ...], BeforeValidator(_parse_status)]


class JsonAssertion(Model):
    """One assertion on a JSON path of the response body: exactly one of the checks."""

    path: JsonPath
    equals: Any = None
    one_of: list[Any] | None = None
    regex: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> JsonAssertion:
        given = [k for k in ("one_of", "regex", "exists") if getattr(self, k) is not None]
        if "equals" in self.model_fields_set:
            given.append("equals")
        if len(given) != 1:
            raise ValueError("give exactly one of equals, one_of, regex, exists")
        if self.regex is not None:
            _compile_regex(self.regex)
        return self


class HeaderAssertion(Model):
    name: str
    equals: str | None = None
    regex: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HeaderAssertion:
        given = [k for k in ("equals", "regex", "exists") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of equals, regex, exists")
        if self.regex is not None:
            _compile_regex(self.regex)
        return self


def _compile_regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from None


class Expect(Model):
    status: StatusRanges = ((200, 299),)
    json_: list[JsonAssertion] = Field(default_factory=list, alias="json")
    headers: list[HeaderAssertion] = Field(default_factory=list)
    max_duration: Duration | None = None


class Poll(Model):
    """Repeat the request until `path` equals `until`, within `deadline` (asynchronous states)."""

    path: JsonPath
    until: Any
    interval: Duration = 0.25
    deadline: Duration = 10.0


class Step(Model):
    name: Name
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: str
    query: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, Secret] = Field(default_factory=dict)
    body: Any = Field(default=None, alias="json")
    timeout: Duration | None = None
    expect: Expect = Field(default_factory=Expect)
    extract: dict[str, JsonPath] = Field(default_factory=dict)
    poll: Poll | None = None

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with / (it is joined to the site's base_url)")
        return value

    @field_validator("extract")
    @classmethod
    def _variable_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"variable name {name!r} must be letters, digits and _")
            if name in BUILTIN_VARIABLES:
                raise ValueError(f"{name!r} is a built-in variable and cannot be extracted")
        return value


class JourneyConfig(Model):
    name: Name
    sites: list[str] | None = None  # default: every configured site
    interval: Duration = 30.0
    timeout: Duration = 20.0  # for the steps; cleanup has its own budget
    cleanup_timeout: Duration = 10.0
    critical: bool = True  # critical journeys drive the site's view
    idp: str | None = None
    bearer_token: Secret | None = None
    tenants: list[Name] = Field(default_factory=lambda: ["synthetic"], min_length=1, max_length=50)
    variables: dict[str, str] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    steps: list[Step] = Field(min_length=1)
    cleanup: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _auth(self) -> JourneyConfig:
        if self.idp is not None and self.bearer_token is not None:
            raise ValueError("give idp or bearer_token, not both")
        return self


class JourneyCheck(Check):
    """One journey against one site."""

    kind = "journey"

    def __init__(
        self,
        cfg: JourneyConfig,
        *,
        site: str,
        base_url: str,
        site_headers: Mapping[str, Secret] | None = None,
        ca_file: str | None = None,
        tls_verify: bool = True,
    ) -> None:
        super().__init__(
            name=f"journey/{cfg.name}/{site}",
            target=cfg.name,
            interval=cfg.interval,
            # The scheduler's hard limit leaves room for the cleanup, which the journey
            # bounds itself: a run that hits the step timeout still cleans up.
            timeout=cfg.timeout + cfg.cleanup_timeout + 1.0,
            site=site,
            critical=cfg.critical,
        )
        self.cfg = cfg
        self.base_url = base_url.rstrip("/")
        self.site_headers = dict(site_headers or {})
        self.ssl = ssl_context(ca_file, tls_verify)
        self._tenants = itertools.cycle(cfg.tenants)

    async def run(self, ctx: ProbeContext) -> Result:
        run_id = new_run_id()
        trace_id = new_trace_id()
        variables: dict[str, object] = {
            **self.cfg.variables,
            "run_id": run_id,
            "site": self.site or "",
            "tenant": next(self._tenants),
            "vantage": ctx.vantage,
            "journey": self.cfg.name,
        }
        started_at = wall_now()
        start = time.monotonic()
        run = _Run(self, ctx, run_id, trace_id, variables, start)
        steps: list[StepResult] = []
        try:
            steps = await run.steps(start + self.cfg.timeout)
        finally:
            duration = time.monotonic() - start
            cleanup = await run.cleanup()
        failed = next((s for s in steps if not s.ok and not s.skipped), None)
        return self.result(
            ok=failed is None,
            reason=failed.reason if failed else None,
            message=f"step {failed.name}: {failed.message}" if failed else "",
            started_at=started_at,
            duration=duration,
            run_id=run_id,
            trace_id=trace_id,
            span_id=new_span_id(),
            steps=tuple(steps),
            cleanup=cleanup,
            facts={
                "tenant": variables["tenant"],
                "cleanup_ok": all(c.ok for c in cleanup),
                "idp": self.cfg.idp,
            },
        )


class _Run:
    """The state of one journey run: variables extracted so far and the token."""

    def __init__(
        self,
        check: JourneyCheck,
        ctx: ProbeContext,
        run_id: str,
        trace_id: str,
        variables: dict[str, object],
        start: float,
    ) -> None:
        self.check = check
        self.cfg = check.cfg
        self.ctx = ctx
        self.run_id = run_id
        self.trace_id = trace_id
        self.variables = variables
        self.start = start
        self.token: str | None = None

    async def steps(self, deadline: float) -> list[StepResult]:
        results: list[StepResult] = []
        for index, step in enumerate(self.cfg.steps):
            result = await self.step(step, deadline)
            results.append(result)
            if not result.ok:
                results.extend(
                    StepResult(
                        name=s.name,
                        ok=False,
                        duration=0.0,
                        skipped=True,
                        message=f"not run: step {step.name} failed",
                    )
                    for s in self.cfg.steps[index + 1 :]
                )
                break
        return results

    async def cleanup(self) -> tuple[StepResult, ...]:
        """Run every cleanup step with whatever was extracted so far, whatever happened."""
        deadline = time.monotonic() + self.cfg.cleanup_timeout
        results: list[StepResult] = []
        for step in self.cfg.cleanup:
            try:
                render(step.path, self.variables)
                render(step.body, self.variables)
            except MissingVariable as missing:
                results.append(
                    StepResult(
                        name=step.name,
                        ok=True,
                        duration=0.0,
                        skipped=True,
                        message=f"not needed: the run extracted no {missing.name}",
                    )
                )
                continue
            results.append(await self.step(step, deadline))
        return tuple(results)

    async def bearer(self) -> str | None:
        if self.token is not None:
            return self.token
        if self.cfg.bearer_token is not None:
            self.token = self.cfg.bearer_token.get_secret_value()
        elif self.cfg.idp is not None:
            if self.ctx.tokens is None:
                raise CheckFailure(Reason.INTERNAL, f"no token source for idp {self.cfg.idp}")
            self.token = await self.ctx.tokens.token(self.cfg.idp)
        return self.token

    async def step(self, step: Step, deadline: float) -> StepResult:
        span_id = new_span_id()
        offset = time.monotonic() - self.start
        t0 = time.perf_counter()
        phases: dict[str, float] = {}
        attempts = 0
        status: int | None = None
        url = ""

        def result(ok: bool, reason: Reason | None = None, message: str = "") -> StepResult:
            return StepResult(
                name=step.name,
                ok=ok,
                duration=time.perf_counter() - t0,
                reason=reason,
                message=message,
                status=status,
                phases=public_phases(phases),
                attempts=attempts,
                method=step.method,
                url=url,
                start_offset=offset,
                span_id=span_id,
            )

        try:
            url = self.check.base_url + render_text(step.path, self.variables)
            budget = deadline - time.monotonic()
            if step.timeout is not None:
                budget = min(budget, step.timeout)
            if budget <= 0:
                raise CheckFailure(Reason.TIMEOUT, "the journey's time budget ran out")
            async with asyncio.timeout(budget):
                headers = await self.headers(step, span_id)
                poll_deadline = time.monotonic() + (step.poll.deadline if step.poll else 0.0)
                while True:
                    attempts += 1
                    phases = {}
                    status, response_headers, body = await self.request(step, url, headers, phases)
                    self.check_status(step, status, body)
                    document = None
                    if step.poll is not None:
                        document = _json(body, response_headers)
                        seen = find(step.poll.path, document)
                        if seen and seen[0] == step.poll.until:
                            break
                        if time.monotonic() + step.poll.interval > poll_deadline:
                            raise CheckFailure(
                                Reason.TIMEOUT,
                                f"poll: {step.poll.path} was {_show(seen)} after "
                                f"{step.poll.deadline:g}s, wanted {step.poll.until!r}",
                            )
                        await asyncio.sleep(step.poll.interval)
                        continue
                    break
            self.assert_response(step, response_headers, body, document)
            elapsed = time.perf_counter() - t0
            if step.expect.max_duration is not None and elapsed > step.expect.max_duration:
                raise CheckFailure(
                    Reason.ASSERTION,
                    f"took {elapsed:.3f}s, more than max_duration {step.expect.max_duration:g}s",
                )
        except CheckFailure as failure:
            return result(False, failure.reason, failure.message)
        except MissingVariable as missing:
            return result(False, Reason.EXTRACTION, f"variable {missing.name} has no value")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason, message = classify(exc)
            return result(False, reason, message)
        return result(True)

    async def headers(self, step: Step, span_id: str) -> dict[str, str]:
        headers = {
            name: render_text(value.get_secret_value(), self.variables)
            for name, value in {**self.check.site_headers, **step.headers}.items()
        }
        headers.update(
            {
                "Idempotency-Key": f"{self.run_id}-{step.name}",
                SYNTHETIC_HEADER: "1",
                RUN_ID_HEADER: self.run_id,
                VANTAGE_HEADER: self.ctx.vantage,
                "traceparent": f"00-{self.trace_id}-{span_id}-01",
            }
        )
        token = await self.bearer()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def request(
        self, step: Step, url: str, headers: dict[str, str], phases: dict[str, float]
    ) -> tuple[int, Mapping[str, str], bytes]:
        body = render(step.body, self.variables) if step.body is not None else None
        params = {k: render_text(v, self.variables) for k, v in step.query.items()}
        async with self.ctx.http.request(
            step.method,
            url,
            params=params or None,
            headers=headers,
            json=body,
            ssl=self.check.ssl,
            allow_redirects=False,
            trace_request_ctx=phases,
        ) as response:
            t_body = time.perf_counter()
            data = await read_bounded(response, self.cfg.max_body_bytes)
            phases["body"] = time.perf_counter() - t_body
            return response.status, response.headers, data

    def check_status(self, step: Step, status: int, body: bytes) -> None:
        """Fail the step on an unexpected status: 401/403 as `auth`, anything else as
        `http_status`, with the start of the body for context."""
        if any(low <= status <= high for low, high in step.expect.status):
            return
        reason = Reason.AUTH if status in (401, 403) else Reason.HTTP_STATUS
        if reason is Reason.AUTH and self.cfg.idp and self.ctx.tokens and self.token:
            # The next run asks the IdP again instead of reusing a token the site refused.
            self.ctx.tokens.invalidate(self.cfg.idp, self.token)
        snippet = body[:200].decode("utf-8", "replace").strip()
        raise CheckFailure(reason, f"HTTP {status}" + (f": {snippet}" if snippet else ""))

    def assert_response(
        self, step: Step, headers: Mapping[str, str], body: bytes, document: Any
    ) -> None:
        expect = step.expect
        if expect.json_ or step.extract:
            if document is None:
                document = _json(body, headers)
            for check in expect.json_:
                _assert_json(check, document)
        for header in expect.headers:
            _assert_header(header, headers)
        for variable, path in step.extract.items():
            found = find(path, document)
            if not found:
                raise CheckFailure(Reason.EXTRACTION, f"{path} matched nothing for {variable}")
            self.variables[variable] = found[0]


def _json(body: bytes, headers: Mapping[str, str]) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        kind = headers.get("Content-Type", "no content type")
        raise CheckFailure(
            Reason.EXTRACTION, f"response is not JSON ({kind}, {len(body)} bytes)"
        ) from None


def _show(values: Sequence[Any]) -> str:
    return "missing" if not values else repr(values[0])


def _assert_json(check: JsonAssertion, document: Any) -> None:
    found = find(check.path, document)
    if check.exists is not None:
        if bool(found) != check.exists:
            wanted = "to exist" if check.exists else "to be absent"
            raise CheckFailure(Reason.ASSERTION, f"expected {check.path} {wanted}")
        return
    if not found:
        raise CheckFailure(Reason.ASSERTION, f"{check.path} matched nothing")
    value = found[0]
    if check.one_of is not None:
        if value not in check.one_of:
            raise CheckFailure(
                Reason.ASSERTION, f"{check.path} is {value!r}, expected one of {check.one_of!r}"
            )
    elif check.regex is not None:
        if not isinstance(value, str | int | float) or not re.search(check.regex, str(value)):
            raise CheckFailure(
                Reason.ASSERTION, f"{check.path} is {value!r}, expected to match {check.regex!r}"
            )
    elif value != check.equals:
        raise CheckFailure(
            Reason.ASSERTION, f"{check.path} is {value!r}, expected {check.equals!r}"
        )


def _assert_header(check: HeaderAssertion, headers: Mapping[str, str]) -> None:
    value = headers.get(check.name)
    if check.exists is not None:
        if (value is not None) != check.exists:
            wanted = "present" if check.exists else "absent"
            raise CheckFailure(Reason.ASSERTION, f"expected header {check.name} {wanted}")
        return
    if value is None:
        raise CheckFailure(Reason.ASSERTION, f"header {check.name} is missing")
    if check.equals is not None and value != check.equals:
        raise CheckFailure(
            Reason.ASSERTION, f"header {check.name} is {value!r}, expected {check.equals!r}"
        )
    if check.regex is not None and not re.search(check.regex, value):
        raise CheckFailure(
            Reason.ASSERTION, f"header {check.name} is {value!r}, expected to match {check.regex!r}"
        )


def plan(config: Config) -> list[Check]:
    """One check per journey and site it runs against."""
    return [
        JourneyCheck(
            journey,
            site=site.name,
            base_url=site.base_url,
            site_headers=site.headers,
            ca_file=site.ca_file,
            tls_verify=site.tls_verify,
        )
        for journey in config.journeys
        for site in config.journey_sites(journey)
    ]
