"""One journey run: its steps in order (each request with its polling and assertions, the
variables it extracts), then its cleanup steps whatever happened, the bearer token, and what
the cleanup journal is told of the run as it goes."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp.http import SERVER_SOFTWARE
from yarl import URL

from failsight.core.check import ProbeContext, RunJournal, new_span_id
from failsight.core.configtypes import Secret
from failsight.core.http import classify, public_phases, read_bounded, timed_request
from failsight.core.redact import redact, scrub_url
from failsight.core.results import CheckFailure, Reason, StepResult
from failsight.probes.journey.config import JourneyConfig, Step, step_templates
from failsight.probes.journey.untrusted import (
    FORBIDDEN_HEADER_CHARS,
    MAX_MESSAGE,
    MAX_QUOTED,
    REDACT_WINDOW,
    assert_header,
    assert_json,
    evaluate,
    find_in_response,
    names_in,
    parse_json,
    printable,
    rendered,
    text_field,
    unsendable,
)
from failsight.probes.templating import MissingVariable, UnusableVariable, render

# The step's own timeout (the asyncio.timeout around its requests) bounds each request, so no
# total timeout of aiohttp's (the session's default: 5 minutes), which costs a timer and its
# bookkeeping per request. Connecting keeps aiohttp's 30 s bound. Every timeout is a
# TimeoutError: reason `timeout`, "no answer in time" (core.http.classify).
REQUEST_TIMEOUT = aiohttp.ClientTimeout(
    total=None, sock_connect=aiohttp.client.DEFAULT_TIMEOUT.sock_connect
)

SYNTHETIC_HEADER = "X-Failsight-Synthetic"
RUN_ID_HEADER = "X-Failsight-Run-Id"
VANTAGE_HEADER = "X-Failsight-Vantage"


class JourneyAtSite(Protocol):
    """What a run needs of its check (check.JourneyCheck, which imports this module): the
    journey, the site it runs against, and what the cleanup journal keeps of a run."""

    @property
    def name(self) -> str: ...
    @property
    def site(self) -> str | None: ...
    @property
    def cfg(self) -> JourneyConfig: ...
    @property
    def base_url(self) -> str: ...
    @property
    def site_headers(self) -> Mapping[str, Secret]: ...
    @property
    def ssl(self) -> ssl.SSLContext: ...
    @property
    def url_templates(self) -> Mapping[str, str]: ...
    @property
    def journaled(self) -> frozenset[str]: ...
    @property
    def cleanup_needs(self) -> list[set[str]]: ...


class JourneyRun:
    """The state of one journey run: variables extracted so far and the token."""

    def __init__(
        self,
        check: JourneyAtSite,
        ctx: ProbeContext,
        run_id: str,
        trace_id: str,
        variables: dict[str, object],
        start: float,
        journal: RunJournal | None = None,
    ) -> None:
        self.check = check
        self.cfg = check.cfg
        self.ctx = ctx
        self.run_id = run_id
        self.trace_id = trace_id
        self.variables = variables
        self.start = start
        self.token: str | None = None
        self.journal = journal
        self.noted: dict[str, object] | None = None  # what the journal holds of the run

    def journaled(self) -> dict[str, object]:
        """The variables a journal keeps of this run (see JourneyCheck.journaled)."""
        return {k: v for k, v in self.variables.items() if k in self.check.journaled}

    async def note(self) -> None:
        """Tell the journal what a cleanup of this run would need, if it changed: before the
        first step, and after each step that extracted variables (before the next step).

        A run is noted from the moment its cleanup could act, i.e. some cleanup step would not
        be skipped as not needed: before the first step when a cleanup step uses only
        built-ins (`{{run_id}}`), else once the first variable it uses is extracted. Before
        that, a retry would have nothing to do, and the file write would be wasted.
        """
        if self.journal is None:
            return
        kept = self.journaled()
        if self.noted is None:
            if not any(needs <= self.variables.keys() for needs in self.check.cleanup_needs):
                return
            self.noted = kept
            await self.journal.record(
                check=self.check.name,
                journey=self.cfg.name,
                site=self.check.site or "",
                run_id=self.run_id,
                variables=kept,
            )
        elif kept != self.noted:
            self.noted = kept
            await self.journal.update(self.run_id, kept)

    async def steps(self, deadline: float) -> list[StepResult]:
        results: list[StepResult] = []
        for index, step in enumerate(self.cfg.steps):
            result = await self.step(step, deadline)
            results.append(result)
            if step.extract:
                await self.note()  # before the next step: what undoing this one needs
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
            except UnusableVariable:
                pass  # needed, but cannot be sent: the step itself reports it as `extraction`
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
        http_version = ""
        error_type = ""
        user_agent = ""
        url = ""

        def result(ok: bool, reason: Reason | None = None, message: str = "") -> StepResult:
            return StepResult(
                name=step.name,
                ok=ok,
                duration=time.perf_counter() - t0,
                reason=reason,
                # Messages quote what a target sent: one line, printable, bounded (redacted
                # first, so that the cut cannot split a secret the target echoed).
                message=printable(redact(message[: MAX_MESSAGE + REDACT_WINDOW]), MAX_MESSAGE),
                status=status,
                phases=public_phases(phases),
                attempts=attempts,
                method=step.method,
                url=url,
                start_offset=offset,
                span_id=span_id,
                url_template=self.check.url_templates[step.path],
                user_agent=user_agent,
                http_version=http_version,
                error_type=error_type,
            )

        try:
            target = self.url(step)
            url = str(target)
            budget = deadline - time.monotonic()
            if step.timeout is not None:
                budget = min(budget, step.timeout)
            if budget <= 0:
                raise CheckFailure(Reason.TIMEOUT, "the journey's time budget ran out")
            async with asyncio.timeout(budget):
                headers = await self.headers(step, span_id)
                user_agent = self.user_agent(headers)
                target = self.with_query(step, target)
                url = scrub_url(str(target))
                poll_deadline = time.monotonic() + (step.poll.deadline if step.poll else 0.0)
                while True:
                    attempts += 1
                    phases = {}
                    # The result describes the last attempt's response: none until it comes
                    # (a poll whose next request fails must not report the previous answer).
                    status, http_version = None, ""
                    status, http_version, response_headers, body = await self.request(
                        step, target, headers, phases
                    )
                    self.check_status(step, status, body)
                    document = None
                    if (poll := step.poll) is not None:
                        document = parse_json(body, response_headers)
                        seen = find_in_response(poll.path, document)
                        mismatch = evaluate(poll, seen, self.variables, poll.path)
                        if mismatch is None:
                            break
                        if time.monotonic() + poll.interval > poll_deadline:
                            raise CheckFailure(
                                Reason.TIMEOUT, mismatch.poll(poll.path, poll.deadline)
                            )
                        await asyncio.sleep(poll.interval)
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
        except UnusableVariable as unusable:  # raised outside a field (the cleanup check)
            return result(False, Reason.EXTRACTION, str(unusable))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason, message = classify(exc)
            error_type = qualified_name(type(exc))
            return result(False, reason, message)
        return result(True)

    def url(self, step: Step) -> URL:
        """The step's URL. Extracted values in the path are inserted as text (yarl quotes
        what a URL cannot hold); one that cannot be fails the step as `extraction`."""
        path = text_field(step.path, self.variables, "the path")
        try:
            return URL(self.check.base_url + path)
        except (ValueError, TypeError) as exc:
            failure = unsendable("the path", step.path, self.variables, exc)
            if failure is None:
                raise
            raise failure from None

    def with_query(self, step: Step, url: URL) -> URL:
        """The step's URL with its query parameters, as aiohttp would add them (so that the
        result's URL is the one sent). One that cannot be sent fails the step as
        `extraction`, naming the variables."""
        params = {
            k: text_field(v, self.variables, f"query parameter {k}") for k, v in step.query.items()
        }
        if not params:
            return url
        try:
            return url.extend_query(params)
        except (ValueError, TypeError) as exc:
            failure = unsendable("the query", list(step.query.values()), self.variables, exc)
            if failure is None:
                raise
            raise failure from None

    def user_agent(self, headers: Mapping[str, str]) -> str:
        """The User-Agent the request carries: the step's or site's header, else the
        session's, else aiohttp's own."""
        for name, value in headers.items():
            if name.lower() == "user-agent":
                return value
        return self.ctx.http.headers.get("User-Agent", SERVER_SOFTWARE)

    async def headers(self, step: Step, span_id: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in {**self.check.site_headers, **step.headers}.items():
            template = value.get_secret_value()
            text = text_field(template, self.variables, f"header {name}")
            if FORBIDDEN_HEADER_CHARS.search(text):
                # aiohttp would refuse to send it (CR/LF would split the request): name the
                # variable that brought the control character, never the value.
                culprits = [
                    v
                    for v in names_in(template)
                    if isinstance(self.variables.get(v), str)
                    and FORBIDDEN_HEADER_CHARS.search(str(self.variables[v]))
                ]
                raise CheckFailure(
                    Reason.EXTRACTION,
                    f"header {name}: "
                    + (
                        f"variable {', '.join(culprits)} contains control characters"
                        if culprits
                        else "the value contains control characters"
                    ),
                )
            headers[name] = text
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
        self, step: Step, url: URL, headers: dict[str, str], phases: dict[str, float]
    ) -> tuple[int, str, Mapping[str, str], bytes]:
        """Send the step's request to `url` (its query included): the status, the HTTP
        version ("1.1"), the headers and the body of the response."""
        body = (
            rendered(render, step.body, self.variables, "the JSON body")
            if step.body is not None
            else None
        )
        try:
            response = await timed_request(
                self.ctx.http,
                step.method,
                url,
                phases,
                headers=headers,
                json=body,
                ssl=self.check.ssl,
                allow_redirects=False,
                timeout=REQUEST_TIMEOUT,
            )
        except (aiohttp.InvalidURL, ValueError, TypeError, RecursionError) as exc:
            # aiohttp or yarl refused to build or send the request. When values from the
            # target went into it, that is the target's doing: `extraction`, naming the
            # variables (their values may be anything). Otherwise it is a bug: re-raised.
            templates = [
                step_templates(step),
                [v.get_secret_value() for v in self.check.site_headers.values()],
            ]
            failure = unsendable("the request", templates, self.variables, exc)
            if failure is None:
                raise
            raise failure from None
        async with response:
            t_body = time.perf_counter()
            data = await read_bounded(response, self.cfg.max_body_bytes)
            phases["body"] = time.perf_counter() - t_body
            version = response.version
            http_version = f"{version.major}.{version.minor}" if version else ""
            return response.status, http_version, response.headers, data

    def check_status(self, step: Step, status: int, body: bytes) -> None:
        """Fail the step on an unexpected status: 401/403 as `auth`, anything else as
        `http_status`, with the start of the body for context."""
        if any(low <= status <= high for low, high in step.expect.status):
            return
        reason = Reason.AUTH if status in (401, 403) else Reason.HTTP_STATUS
        if reason is Reason.AUTH and self.cfg.idp and self.ctx.tokens and self.token:
            # The next run asks the IdP again instead of reusing a token the site refused.
            self.ctx.tokens.invalidate(self.cfg.idp, self.token)
        # The start of the body, for context: redacted while whole (the target may echo our
        # token), then made one printable line so that a target cannot forge log lines or
        # terminal escapes in our output, and cut.
        start = body[: MAX_QUOTED + REDACT_WINDOW].decode("utf-8", "replace")
        snippet = printable(redact(start), MAX_QUOTED)
        raise CheckFailure(reason, f"HTTP {status}" + (f": {snippet}" if snippet else ""))

    def assert_response(
        self, step: Step, headers: Mapping[str, str], body: bytes, document: Any
    ) -> None:
        expect = step.expect
        if expect.json_ or step.extract:
            if document is None:
                document = parse_json(body, headers)
            for check in expect.json_:
                assert_json(check, document, self.variables)
        for header in expect.headers:
            assert_header(header, headers, self.variables)
        for variable, path in step.extract.items():
            found = find_in_response(path, document)
            if not found:
                raise CheckFailure(Reason.EXTRACTION, f"{path} matched nothing for {variable}")
            self.variables[variable] = found[0]


def qualified_name(cls: type) -> str:
    """A class's fully qualified name, builtins bare (`TimeoutError`): what OpenTelemetry's
    `error.type` holds for an exception."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
