"""Business journeys: ordered HTTP steps with assertions, extraction and polling, then cleanup."""

from __future__ import annotations

import array
import asyncio
import itertools
import json
import re
import reprlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import BeforeValidator, Field, field_validator, model_validator
from yarl import URL

from failsight.core.check import (
    Check,
    ProbeContext,
    Run,
    RunJournal,
    idp_check_name,
    new_span_id,
    new_trace_id,
)
from failsight.core.configtypes import Duration, Interval, Model, Name, Secret, Timeout
from failsight.core.http import classify, public_phases, read_bounded, ssl_context
from failsight.core.kind import Env, Kind, Loc, duplicates
from failsight.core.redact import REDACTOR, redact
from failsight.core.results import CheckFailure, DependsOn, Reason, Result, StepResult
from failsight.core.telemetry import MetricSpec, MetricType, Sample, sample
from failsight.probes.templating import (
    JsonPath,
    MissingVariable,
    UnusableVariable,
    find,
    malformed_placeholders,
    render,
    render_text,
    variables_in,
)

SYNTHETIC_HEADER = "X-Failsight-Synthetic"
RUN_ID_HEADER = "X-Failsight-Run-Id"
VANTAGE_HEADER = "X-Failsight-Vantage"

# Variables every run defines before its first step.
BUILTIN_VARIABLES = frozenset({"run_id", "site", "tenant", "vantage", "journey"})

# The deepest nesting of arrays and objects a response may have. Deeper documents are refused
# before parsing: the JSON parser, repr() and json.dumps() recurse once per level, and no API
# nests this deep. Checked on the raw bytes without recursing (see json_depth_exceeds).
MAX_JSON_DEPTH = 256
# Failure messages quote at most this much of what a target sent (values, headers, bodies).
MAX_QUOTED = 200
MAX_MESSAGE = 1000
# What is quoted is redacted (failsight.core.redact) before it is cut, over this much more than is
# kept: a secret the target echoed must be whole to be found, and a cut one would leak.
REDACT_WINDOW = 4096

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
    timeout: Timeout | None = None
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
    interval: Interval = 30.0
    # For the steps, and may exceed the interval: a journey is a transaction, and a run still
    # going at its next tick makes that tick a counted skip, never an overlap.
    timeout: Timeout = 20.0
    cleanup_timeout: Timeout = 10.0
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
            # The run's time covers the steps (cfg.timeout, which the journey enforces itself)
            # and then the cleanup (cfg.cleanup_timeout, likewise): the hard limit leaves room
            # for the cleanup, so a run that hits the step timeout still cleans up.
            budget=cfg.timeout + cfg.cleanup_timeout,
            site=site,
            critical=cfg.critical,
        )
        self.cfg = cfg
        if cfg.idp is not None:
            # Every run relies on the IdP for its token: when the IdP's own check fails too,
            # that explains this journey's `auth` failures.
            self.standing_evidence = (
                DependsOn(
                    check=idp_check_name(cfg.idp),
                    label=f"IdP {cfg.idp}",
                    via=Reason.AUTH,
                    effect=f"journey {cfg.name} cannot authenticate",
                ),
            )
        self.base_url = base_url.rstrip("/")
        self.site_headers = dict(site_headers or {})
        self.ssl = ssl_context(ca_file, tls_verify)
        self._tenants = itertools.cycle(cfg.tenants)
        # What a crash-recovery journal keeps of a run: the built-ins and the extracted
        # variables the cleanup steps (or the site's headers) use; nothing else (config
        # variables and secrets come from the config in force when the cleanup is retried).
        used = variables_in([_templates(step) for step in cfg.cleanup])
        used |= variables_in([v.get_secret_value() for v in self.site_headers.values()])
        extracted = {name for step in cfg.steps for name in step.extract}
        self.journaled = frozenset(BUILTIN_VARIABLES | (extracted & used))
        # What each cleanup step must have not to be skipped as not needed (see _Run.cleanup).
        self.cleanup_needs = [variables_in([step.path, step.body]) for step in cfg.cleanup]

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        trace_id = new_trace_id()
        variables: dict[str, object] = {
            **self.cfg.variables,
            "run_id": run.id,
            "site": self.site or "",
            "tenant": next(self._tenants),
            "vantage": ctx.vantage,
            "journey": self.cfg.name,
        }
        journal = ctx.journal if self.cfg.cleanup else None
        if journal is not None and not journal.enabled:
            journal = None
        state = _Run(self, ctx, run.id, trace_id, variables, run.start, journal)
        steps: list[StepResult] = []
        try:
            await state.note()  # before the first step
            # The steps have cfg.timeout from the start; the rest of the budget is the
            # cleanup's.
            steps = await state.steps(run.start + self.cfg.timeout)
        finally:
            duration = run.elapsed()  # the steps only
            cleaned = False
            try:
                cleanup = await state.cleanup()
                cleaned = all(c.ok for c in cleanup)
            finally:
                if journal is not None and state.noted is not None:
                    await journal.finish(run.id, cleaned=cleaned)
        failed = next((s for s in steps if not s.ok and not s.skipped), None)
        return self.result(
            run,
            ok=failed is None,
            reason=failed.reason if failed else None,
            message=f"step {failed.name}: {failed.message}" if failed else "",
            duration=duration,
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

    async def cleanup_for(
        self, ctx: ProbeContext, run_id: str, variables: Mapping[str, object]
    ) -> tuple[StepResult, ...]:
        """Run the cleanup steps for an earlier run of this journey, as that run would have:
        its run id, the variables a journal kept of it (over the config's own variables), and
        the token and headers of the config in force now. For crash recovery
        (probes/journal.py); never raises for a failure of the target."""
        run = _Run(
            self,
            ctx,
            run_id,
            new_trace_id(),
            {**self.cfg.variables, **variables},
            time.monotonic(),
        )
        return await run.cleanup()


def _templates(step: Step) -> list[Any]:
    """Every template of a step: path, query values, header values, body."""
    return [
        step.path,
        list(step.query.values()),
        [v.get_secret_value() for v in step.headers.values()],
        step.body,
    ]


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
                poll_deadline = time.monotonic() + (step.poll.deadline if step.poll else 0.0)
                while True:
                    attempts += 1
                    phases = {}
                    status, response_headers, body = await self.request(
                        step, target, headers, phases
                    )
                    self.check_status(step, status, body)
                    document = None
                    if step.poll is not None:
                        document = parse_json(body, response_headers)
                        seen = _find(step.poll.path, document)
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
        except UnusableVariable as unusable:  # raised outside a field (the cleanup check)
            return result(False, Reason.EXTRACTION, str(unusable))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason, message = classify(exc)
            return result(False, reason, message)
        return result(True)

    def url(self, step: Step) -> URL:
        """The step's URL. Extracted values in the path are inserted as text (yarl quotes
        what a URL cannot hold); one that cannot be fails the step as `extraction`."""
        path = _text_field(step.path, self.variables, "the path")
        try:
            return URL(self.check.base_url + path)
        except (ValueError, TypeError) as exc:
            failure = _unsendable("the path", step.path, self.variables, exc)
            if failure is None:
                raise
            raise failure from None

    async def headers(self, step: Step, span_id: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in {**self.check.site_headers, **step.headers}.items():
            template = value.get_secret_value()
            text = _text_field(template, self.variables, f"header {name}")
            if _FORBIDDEN_HEADER_CHARS.search(text):
                # aiohttp would refuse to send it (CR/LF would split the request): name the
                # variable that brought the control character, never the value.
                culprits = [
                    v
                    for v in _names_in(template)
                    if isinstance(self.variables.get(v), str)
                    and _FORBIDDEN_HEADER_CHARS.search(str(self.variables[v]))
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
    ) -> tuple[int, Mapping[str, str], bytes]:
        try:
            body = render(step.body, self.variables) if step.body is not None else None
        except UnusableVariable as unusable:
            raise CheckFailure(
                Reason.EXTRACTION, f"{unusable} and cannot go in the JSON body"
            ) from None
        params = {
            k: _text_field(v, self.variables, f"query parameter {k}") for k, v in step.query.items()
        }
        try:
            response = await self.ctx.http.request(
                step.method,
                url,
                params=params or None,
                headers=headers,
                json=body,
                ssl=self.check.ssl,
                allow_redirects=False,
                trace_request_ctx=phases,
            )
        except (aiohttp.InvalidURL, ValueError, TypeError, RecursionError) as exc:
            # aiohttp or yarl refused to build or send the request. When values from the
            # target went into it, that is the target's doing: `extraction`, naming the
            # variables (their values may be anything). Otherwise it is a bug: re-raised.
            templates = [
                _templates(step),
                [v.get_secret_value() for v in self.check.site_headers.values()],
            ]
            failure = _unsendable("the request", templates, self.variables, exc)
            if failure is None:
                raise
            raise failure from None
        async with response:
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
                _assert_json(check, document)
        for header in expect.headers:
            _assert_header(header, headers)
        for variable, path in step.extract.items():
            found = _find(path, document)
            if not found:
                raise CheckFailure(Reason.EXTRACTION, f"{path} matched nothing for {variable}")
            self.variables[variable] = found[0]


# --- what a target sends: parsed and quoted without trusting it ------------------------------

# Control characters aiohttp refuses in a header value (tab is allowed).
_FORBIDDEN_HEADER_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# What the depth check keeps of a JSON text: brackets and the quotes that delimit strings.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
# Opening brackets as the signed byte +1, closing ones as -1.
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_OPEN, _LEAF = b"\x01", b"\x01\xff"


def json_depth_exceeds(data: bytes, limit: int, *, passes: int = 8) -> bool:
    """Whether a UTF-8 JSON text nests arrays and objects deeper than `limit`.

    Without recursion and without a Python loop over the bytes: everything runs in C
    (bytes.replace, translate, split). Escaped backslashes and quotes are dropped, then all
    but brackets and quotes; what lies between quotes (strings) is dropped; brackets become
    +1/-1. Then up to `passes` rounds remove every innermost `[]`/`{}` pair (one level each);
    a run of opening brackets longer than the levels left answers yes, few enough opening
    brackets answer no; failing both, the running sum is computed (itertools.accumulate).
    Exact for valid JSON; on broken JSON the answer may be off, and the parser refuses it
    anyway. Cost (measured): 1 µs for a small response (the first line answers); for
    megabytes, a fifth to a third of json.loads's own time (2.5 MB of objects: ~20 ms against
    ~120 ms); 5-10 ms for 1 MB of hostile nesting, which json.loads would not survive.
    """
    if data.count(b"[") + data.count(b"{") <= limit:  # the usual case, a small document
        return False
    if b"\\" in data:
        # Left to right, `\\` pairs are exactly the escaped backslashes; after them every
        # `\"` is an escaped quote. Other escapes do not matter here.
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = data.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:  # strings with brackets in them remain: keep what is outside
        structure = b"".join(structure.split(b'"')[::2])
    steps = structure.translate(_DEPTH_STEPS)
    removed = 0  # levels removed so far: the depth is the depth left plus these
    while True:
        if steps.count(_OPEN) + removed <= limit:
            return False
        if _OPEN * (limit + 1 - removed) in steps:
            return True
        if removed == passes:
            break
        shorter = steps.replace(_LEAF, b"")
        if len(shorter) == len(steps):
            break
        steps, removed = shorter, removed + 1
    return max(itertools.accumulate(array.array("b", steps))) + removed > limit


def parse_json(body: bytes, headers: Mapping[str, str]) -> Any:
    """A response body as JSON; any failure is the step's `extraction` failure, with a short
    message that quotes nothing of the body."""
    kind = printable(headers.get("Content-Type", "no content type"), 80)
    try:
        encoding = json.detect_encoding(body)
        # The depth check reads UTF-8: other encodings JSON allows (UTF-16/32) are converted.
        utf8 = (
            body
            if encoding.startswith("utf-8")
            else body.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
        )
    except (UnicodeError, LookupError):
        raise CheckFailure(
            Reason.EXTRACTION, f"response is not JSON ({kind}, {len(body)} bytes)"
        ) from None
    if json_depth_exceeds(utf8, MAX_JSON_DEPTH):
        raise CheckFailure(
            Reason.EXTRACTION, f"response JSON nests deeper than {MAX_JSON_DEPTH} levels"
        )
    try:
        return json.loads(body)
    except (UnicodeError, json.JSONDecodeError):
        raise CheckFailure(
            Reason.EXTRACTION, f"response is not JSON ({kind}, {len(body)} bytes)"
        ) from None
    except RecursionError:  # only with a stack already deep: the depth is bounded above
        raise CheckFailure(Reason.EXTRACTION, "response JSON nests too deep to be read") from None
    except ValueError:  # e.g. an integer of more than 4300 digits (sys.int_info)
        raise CheckFailure(
            Reason.EXTRACTION, "response JSON has a value that cannot be read (a number too long?)"
        ) from None


def _find(path: str, document: Any) -> list[Any]:
    """`find`, with any failure on the target's document an `extraction` failure: too deep
    for the JSON path engine, or values the path's functions cannot take (`sorted` over
    numbers and strings)."""
    try:
        return find(path, document)
    except RecursionError:
        raise CheckFailure(
            Reason.EXTRACTION, f"{path}: the response JSON nests too deep to evaluate it"
        ) from None
    except Exception as exc:  # jsonpath-ng raises what its functions raise
        raise CheckFailure(
            Reason.EXTRACTION,
            f"{path} cannot be evaluated on the response ({type(exc).__name__})",
        ) from None


def printable(text: str, limit: int) -> str:
    """Text a target sent, made safe to put in a message, a log line or a terminal: every
    non-printable character (C0 and C1 controls, so CR, LF and the ESC of ANSI sequences;
    Unicode format characters such as bidi overrides; line separators) becomes a blank, runs
    of blanks one, and the text is cut to `limit` characters."""
    if len(text) <= limit and text.isprintable():
        return text
    text = text[: limit * 4]
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


_quote = reprlib.Repr()
_quote.maxstring = 80
_quote.maxother = 80
_quote.maxlong = 80
_quote.maxlist = _quote.maxtuple = _quote.maxdict = 5
_quote.maxlevel = 3


def show(value: Any) -> str:
    """A value from a target, for a message: repr (so control characters are escaped),
    bounded in size and depth whatever the value, and every secret of the process redacted
    from its strings before anything is cut (the target may echo our token)."""
    try:
        return printable(_quote.repr(REDACTOR.data(value)), MAX_QUOTED)
    except Exception:  # a value repr() cannot take: say what it is, not what it holds
        return f"<{type(value).__name__}>"


def _show(values: Sequence[Any]) -> str:
    return "missing" if not values else show(values[0])


def _names_in(template: str) -> list[str]:
    return list(dict.fromkeys(_PLACEHOLDER.findall(template)))


def _text_field(template: str, variables: Mapping[str, object], field: str) -> str:
    """A template rendered as text for one field of the request; an object, array or null
    is the step's `extraction` failure, naming the variable and the field."""
    try:
        return render_text(template, variables)
    except UnusableVariable as unusable:
        raise CheckFailure(Reason.EXTRACTION, f"{unusable} and cannot go in {field}") from None


def _unsendable(
    field: str, templates: Any, variables: Mapping[str, object], exc: BaseException
) -> CheckFailure | None:
    """The failure for a request aiohttp or yarl refused: `extraction` naming the variables
    used in `field` when there are any (never their values); None when the request used no
    variable, and the refusal is a bug to report as such."""
    used = sorted(name for name in variables_in(templates) if name in variables)
    if not used:
        return None
    return CheckFailure(
        Reason.EXTRACTION,
        f"{field} cannot be sent with the values of {', '.join(used)} ({type(exc).__name__})",
    )


def _assert_json(check: JsonAssertion, document: Any) -> None:
    found = _find(check.path, document)
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
                Reason.ASSERTION,
                f"{check.path} is {show(value)}, expected one of {check.one_of!r}",
            )
    elif check.regex is not None:
        if not isinstance(value, str | int | float) or not re.search(check.regex, str(value)):
            raise CheckFailure(
                Reason.ASSERTION,
                f"{check.path} is {show(value)}, expected to match {check.regex!r}",
            )
    elif value != check.equals:
        raise CheckFailure(
            Reason.ASSERTION, f"{check.path} is {show(value)}, expected {check.equals!r}"
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
            Reason.ASSERTION, f"header {check.name} is {show(value)}, expected {check.equals!r}"
        )
    if check.regex is not None and not re.search(check.regex, value):
        raise CheckFailure(
            Reason.ASSERTION,
            f"header {check.name} is {show(value)}, expected to match {check.regex!r}",
        )


# --- the kind ---------------------------------------------------------------------------------


def plan(section: Sequence[JourneyConfig], env: Env) -> list[Check]:
    """One check per journey and site it runs against (`sites`, by default every site)."""
    return [
        JourneyCheck(
            journey,
            site=site.name,
            base_url=site.base_url,
            site_headers=site.headers,
            ca_file=site.ca_file,
            tls_verify=site.tls_verify,
        )
        for journey in section
        for site in env.sites
        if journey.sites is None or site.name in journey.sites
    ]


def check_config(section: Sequence[JourneyConfig], env: Env) -> Iterator[tuple[Loc, str]]:
    """References to sites and IdPs, unique step names, and every template's variables
    defined before use (built-ins, the journey's `variables`, what an earlier step extracts)."""
    site_names = env.site_names
    idp_names = env.names.get("idps", frozenset())
    for j, journey in enumerate(section):
        for s, site_name in enumerate(journey.sites or []):
            if site_name not in site_names:
                yield (
                    (j, "sites", s),
                    f"unknown site {site_name!r} (sites: {_names(site_names)})",
                )
        if journey.idp is not None and journey.idp not in idp_names:
            yield (j, "idp"), f"unknown idp {journey.idp!r}"
        yield from duplicates((j, "steps"), [s.name for s in journey.steps], "step")
        known = set(BUILTIN_VARIABLES) | set(journey.variables)
        for s, step in enumerate(journey.steps):
            yield from _template_errors((j, "steps", s), step, known, "no earlier step")
            known |= set(step.extract)
        for s, step in enumerate(journey.cleanup):
            yield from _template_errors((j, "cleanup", s), step, known, "no step")


def _template_errors(loc: Loc, step: Step, known: set[str], who: str) -> Iterator[tuple[Loc, str]]:
    fields: dict[str, Any] = {
        "path": step.path,
        "query": step.query,
        "json": step.body,
        "headers": {k: v.get_secret_value() for k, v in step.headers.items()},
    }
    for key, value in fields.items():
        for bad in malformed_placeholders(value):
            yield (*loc, key), f"invalid template {{{{{bad}}}}}: only {{{{variable}}}} is allowed"
        for name in sorted(variables_in(value) - known):
            yield (*loc, key), f"template uses {{{{{name}}}}}, which {who} extracts"


def _names(names: frozenset[str]) -> str:
    return ", ".join(sorted(names)) or "none"


JOURNEY_RUNS = MetricSpec(
    "journey_runs_total",
    MetricType.COUNTER,
    "Journey runs by outcome.",
    ("site", "journey", "result"),
)
JOURNEY_SUCCESS = MetricSpec(
    "journey_success",
    MetricType.GAUGE,
    "1 if the last run of the journey succeeded.",
    ("site", "journey"),
)
JOURNEY_DURATION = MetricSpec(
    "journey_duration_seconds",
    MetricType.HISTOGRAM,
    "Journey run duration, steps only.",
    ("site", "journey"),
    "s",
)
STEP_DURATION = MetricSpec(
    "step_duration_seconds",
    MetricType.HISTOGRAM,
    "Journey step duration (polls included).",
    ("site", "journey", "step"),
    "s",
)
STEP_FAILURES = MetricSpec(
    "step_failures_total",
    MetricType.COUNTER,
    "Journey step failures by reason.",
    ("site", "journey", "step", "reason"),
)


def gauges(result: Result) -> Iterator[Sample]:
    """Whether the journey's last run at its site succeeded."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return
    yield sample(
        JOURNEY_SUCCESS, 1.0 if result.ok else 0.0, site=result.site, journey=result.target
    )


def increments(result: Result) -> Iterator[Sample]:
    """The run by outcome and its duration (steps only), and each step that ran: its duration
    and, failed, its reason."""
    if result.kind != JourneyCheck.kind or result.site is None:
        return
    site, journey = result.site, result.target
    yield sample(
        JOURNEY_RUNS, 1.0, site=site, journey=journey, result="success" if result.ok else "failure"
    )
    yield sample(JOURNEY_DURATION, result.duration, site=site, journey=journey)
    for step in result.steps:
        if step.skipped:
            continue
        yield sample(STEP_DURATION, step.duration, site=site, journey=journey, step=step.name)
        if not step.ok and step.reason is not None:
            yield sample(
                STEP_FAILURES,
                1.0,
                site=site,
                journey=journey,
                step=step.name,
                reason=step.reason.value,
            )


KIND = Kind(
    name=JourneyCheck.kind,
    key="journeys",
    model=JourneyConfig,
    plan=plan,
    summary="business journeys: ordered HTTP steps with assertions at each site, then cleanup",
    metrics=(JOURNEY_RUNS, JOURNEY_SUCCESS, JOURNEY_DURATION, STEP_DURATION, STEP_FAILURES),
    naming=("journey", lambda journey: journey.name),
    check_config=check_config,
    gauges=gauges,
    increments=increments,
)
