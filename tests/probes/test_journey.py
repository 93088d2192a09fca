"""The journey probe against the real simulated platform: success, each fault, bad responses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from failsight.agent.config import Config, env
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.scheduler import run_check
from failsight.core.check import Check, ProbeContext
from failsight.core.http import new_session
from failsight.core.kind import Env, SiteRef
from failsight.core.results import DependsOn, Reason, Result, StepResult
from failsight.core.telemetry import Exemplar
from failsight.probes.journey import KIND, JourneyCheck, JourneyConfig, plan


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    async with new_session() as http:
        yield ProbeContext(vantage="test-vantage", http=http)


@pytest.fixture
def config(make_config: Callable[..., tuple[Config, Path]]) -> Config:
    return make_config()[0]


def journey_checks(config: Config) -> list[Check]:
    """The journey checks the config asks for, as the agent plans them."""
    return plan(config.section(KIND), env(config))


def check_for(config: Config, site: str = "aws-use1") -> JourneyCheck:
    check = next(c for c in journey_checks(config) if c.site == site)
    assert isinstance(check, JourneyCheck)
    return check


async def test_whole_journey_succeeds_on_both_sites_and_cleans_up(
    config: Config, ctx: ProbeContext, platform: Platform
) -> None:
    results = [await run_check(c, ctx) for c in journey_checks(config)]
    assert [r.site for r in results] == ["aws-use1", "gcp-euw1"]
    for result in results:
        assert result.ok, result.summary()
        assert [s.name for s in result.steps] == [
            "order_submit",
            "allocation",
            "allocation_done",
            "pick",
            "shipment",
            "invoice",
        ]
        assert all(s.ok and s.status and s.duration > 0 for s in result.steps)
        assert result.steps[2].attempts >= 1
        assert [(c.name, c.ok) for c in result.cleanup] == [("cancel_order", True)]
        assert len(result.trace_id) == 32
        assert platform.state(result.site or "").synthetic_orders == 0
    phases = results[0].steps[0].phases
    assert {"ttfb", "body"} <= set(phases)


async def test_every_request_carries_run_id_key_marker_and_traceparent(
    config: Config, ctx: ProbeContext, platform: Platform
) -> None:
    result = await run_check(check_for(config), ctx)
    async with (
        aiohttp.ClientSession() as s,
        s.get(platform.urls["aws-use1"] + "/admin/requests?limit=100") as r,
    ):
        records = await r.json()
    records = records if isinstance(records, list) else records["requests"]
    assert records, "the simulator recorded no request"
    step_spans = {s.span_id for s in (*result.steps, *result.cleanup)}
    for rec in records:
        headers = {
            k.lower(): v for k, v in (rec.get("headers") or rec).items() if isinstance(v, str)
        }
        assert headers["x-failsight-synthetic"] == "1"
        assert headers["x-failsight-run-id"] == result.run_id
        assert headers["idempotency-key"].startswith(result.run_id + "-")
        version, trace_id, span_id, flags = headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", result.trace_id, "01")
        assert span_id in step_spans


async def test_a_replayed_submit_with_the_same_key_creates_no_duplicate(
    config: Config, ctx: ProbeContext, platform: Platform
) -> None:
    journey = config.section(KIND)[0].model_copy(update={"cleanup": []})
    check = JourneyCheck(journey, site="aws-use1", base_url=platform.urls["aws-use1"])
    result = await run_check(check, ctx)
    assert result.ok
    state = platform.state("aws-use1")
    assert state.synthetic_orders == 1
    key = f"{result.run_id}-order_submit"
    body = {"sku": "SKU-1001", "qty": 2, "tenant": str(result.facts["tenant"])}
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            platform.urls["aws-use1"] + "/api/v1/orders",
            json=body,
            headers={"Idempotency-Key": key, "X-Failsight-Synthetic": "1"},
        ) as r,
    ):
        assert r.status == 200
        assert r.headers["Idempotent-Replayed"] == "true"
    assert state.synthetic_orders == 1


@pytest.mark.parametrize(
    ("fault", "step", "reason", "message"),
    [
        (Fault(kind="outage"), "order_submit", Reason.HTTP_STATUS, "HTTP 503"),
        (Fault(kind="fail_step", step="pick"), "pick", Reason.HTTP_STATUS, "HTTP 500"),
        (Fault(kind="fail_step", step="invoice", status=401), "invoice", Reason.AUTH, "HTTP 401"),
        (
            Fault(kind="html", step="shipment"),
            "shipment",
            Reason.EXTRACTION,
            "response is not JSON (text/html",
        ),
        (Fault(kind="truncate", step="allocation"), "allocation", Reason.CONNECT, "truncated"),
        (
            Fault(kind="huge", step="order_submit"),
            "order_submit",
            Reason.ASSERTION,
            "exceeds the limit",
        ),
        (Fault(kind="hang", step="pick"), "pick", Reason.TIMEOUT, "no answer in time"),
        (
            Fault(kind="latency", step="shipment", latency_ms=4000),
            "shipment",
            Reason.TIMEOUT,
            "no answer in time",
        ),
    ],
    ids=["outage", "fail-step", "auth", "html", "truncate", "huge", "hang", "latency"],
)
async def test_each_fault_gives_its_reason_and_step_and_cleanup_runs(
    config: Config,
    ctx: ProbeContext,
    platform: Platform,
    fault: Fault,
    step: str,
    reason: Reason,
    message: str,
) -> None:
    platform.set_fault("aws-use1", fault)
    result: Result = await asyncio.wait_for(run_check(check_for(config), ctx), 30)
    assert not result.ok
    failed = result.failed_step
    assert failed is not None
    assert (failed.name, failed.reason, result.reason) == (step, reason, reason)
    assert message in failed.message
    names = [s.name for s in result.steps]
    assert all(s.skipped for s in result.steps[names.index(step) + 1 :])
    # Cleanup always runs with what was extracted; nothing synthetic is left behind.
    platform.recover("aws-use1")
    if step != "order_submit":
        assert result.cleanup[0].ok and not result.cleanup[0].skipped
    else:
        assert result.cleanup[0].skipped
    await asyncio.sleep(0.1)
    if fault.kind != "hang":
        assert platform.state("aws-use1").synthetic_orders == 0
    assert platform.state("gcp-euw1").synthetic_orders == 0


async def test_poll_deadline_is_a_timeout_with_the_last_value(
    make_config: Callable[..., tuple[Config, Path]], ctx: ProbeContext, platform: Platform
) -> None:
    config = make_config()[0]
    journey = config.section(KIND)[0]
    steps = list(journey.steps)
    poll = steps[2].poll
    assert poll is not None
    steps[2] = steps[2].model_copy(
        update={"poll": poll.model_copy(update={"until": "never", "deadline": 0.5})}
    )
    check = JourneyCheck(
        journey.model_copy(update={"steps": steps}),
        site="aws-use1",
        base_url=platform.urls["aws-use1"],
    )
    result = await run_check(check, ctx)
    failed = result.failed_step
    assert failed is not None and failed.name == "allocation_done"
    assert failed.reason is Reason.TIMEOUT
    assert failed.message == "poll: $.state was 'allocated' after 0.5s, wanted 'never'"
    assert failed.attempts >= 2


async def test_connection_refused_is_connect(config: Config, ctx: ProbeContext) -> None:
    check = JourneyCheck(config.section(KIND)[0], site="aws-use1", base_url="http://127.0.0.1:9")
    result = await run_check(check, ctx)
    assert result.reason is Reason.CONNECT
    assert result.cleanup[0].skipped


def _journey(**fields: object) -> JourneyConfig:
    return JourneyConfig.model_validate(
        {"name": "checkout", "steps": [{"name": "submit", "path": "/orders"}], **fields}
    )


_SITES = Env(
    vantage="v1",
    sites=(
        SiteRef("aws-use1", "primary", "https://a.example/", tls_verify=False),
        SiteRef("gcp-euw1", "standby", "https://g.example"),
    ),
    names={"idps": frozenset({"okta"})},
)


def test_plan_runs_each_journey_at_its_sites_with_room_for_the_cleanup() -> None:
    everywhere = _journey(timeout="20s", cleanup_timeout="10s")
    one = _journey(name="refund", sites=["gcp-euw1"])
    checks = plan([everywhere, one], _SITES)
    assert [(c.name, c.site, c.target) for c in checks] == [
        ("journey/checkout/aws-use1", "aws-use1", "checkout"),
        ("journey/checkout/gcp-euw1", "gcp-euw1", "checkout"),
        ("journey/refund/gcp-euw1", "gcp-euw1", "refund"),
    ]
    first = checks[0]
    assert isinstance(first, JourneyCheck)
    assert first.base_url == "https://a.example"
    # The steps' own 20 s, the cleanup's 10 s, and the hard limit's margin past both.
    assert (first.budget, first.timeout) == (30.0, 31.0)
    assert first.critical and first.interval == 30.0


async def test_a_journey_through_an_idp_carries_it_as_evidence_in_every_result(
    ctx: ProbeContext,
) -> None:
    check = JourneyCheck(_journey(idp="okta"), site="aws-use1", base_url="http://127.0.0.1:9")
    expected = DependsOn(
        check="idp/okta",
        label="IdP okta",
        via=Reason.AUTH,
        effect="journey checkout cannot authenticate",
    )
    assert check.standing_evidence == (expected,)
    result = await check.run(ctx)  # no token source: the step fails, the evidence stays
    assert not result.ok and result.evidence == (expected,)
    assert result.facts["idp"] == "okta"
    plain = JourneyCheck(_journey(), site="aws-use1", base_url="http://127.0.0.1:9")
    assert plain.standing_evidence == ()
    assert (await plain.run(ctx)).evidence == ()


def test_check_config_names_unknown_references_and_templates_relative_to_the_section() -> None:
    good = _journey(idp="okta", sites=["aws-use1"])
    bad = _journey(
        sites=["aws-use1", "azure"],
        idp="auth0",
        steps=[
            {"name": "a", "path": "/x/{{order_id}}", "extract": {"order_id": "$.id"}},
            {"name": "a", "path": "/y/{{order_id}}", "query": {"q": "{{a.b}}"}},
        ],
        cleanup=[{"name": "c", "path": "/z/{{nope}}"}],
    )
    assert list(KIND.check_config([good, bad], _SITES)) == [
        ((1, "sites", 1), "unknown site 'azure' (sites: aws-use1, gcp-euw1)"),
        ((1, "idp"), "unknown idp 'auth0'"),
        ((1, "steps", 1, "name"), "duplicate step name 'a'"),
        ((1, "steps", 0, "path"), "template uses {{order_id}}, which no earlier step extracts"),
        ((1, "steps", 1, "query"), "invalid template {{a.b}}: only {{variable}} is allowed"),
        ((1, "cleanup", 0, "path"), "template uses {{nope}}, which no step extracts"),
    ]
    assert KIND.naming is not None and KIND.naming[1](good) == "checkout"


def test_a_result_counts_its_run_and_each_step_that_ran() -> None:
    result = Result(
        check="journey/checkout/aws-use1",
        kind="journey",
        target="checkout",
        site="aws-use1",
        ok=False,
        started_at=0.0,
        duration=1.5,
        run_id="r1",
        steps=(
            StepResult(
                name="submit",
                ok=True,
                duration=0.5,
                status=201,
                phases={"dns": 0.01, "connect": 0.02, "send": 0.001, "ttfb": 0.4, "body": 0.05},
            ),
            StepResult(
                name="pay",
                ok=False,
                duration=1.0,
                reason=Reason.HTTP_STATUS,
                status=503,
                phases={"send": 0.001, "ttfb": 0.9, "body": 0.01},  # a reused connection
            ),
            StepResult(name="ship", ok=False, duration=0.0, skipped=True),
        ),
    )
    site = {"site": "aws-use1", "journey": "checkout"}
    assert [(s.spec.name, dict(s.labels), s.value) for s in KIND.gauges(result)] == [
        ("journey_success", site, 0.0),
        ("step_http_status_code", {**site, "step": "submit"}, 201.0),
        ("step_http_status_code", {**site, "step": "pay"}, 503.0),
    ]

    def phase(step: str, name: str, seconds: float) -> tuple[str, dict[str, str], float]:
        return ("step_phase_duration_seconds", {**site, "step": step, "phase": name}, seconds)

    assert [(s.spec.name, dict(s.labels), s.value) for s in KIND.increments(result)] == [
        ("journey_runs_total", {**site, "result": "failure"}, 1.0),
        ("journey_duration_seconds", site, 1.5),
        ("step_duration_seconds", {**site, "step": "submit"}, 0.5),
        phase("submit", "resolve", 0.01),
        phase("submit", "connect", 0.02),
        phase("submit", "request", 0.001),
        phase("submit", "first_byte", 0.4),
        phase("submit", "transfer", 0.05),
        ("step_duration_seconds", {**site, "step": "pay"}, 1.0),
        phase("pay", "request", 0.001),
        phase("pay", "first_byte", 0.9),
        phase("pay", "transfer", 0.01),
        ("step_failures_total", {**site, "step": "pay", "reason": "http_status"}, 1.0),
    ]
    # No trace id on this result: no exemplars.
    assert all(s.exemplar is None for s in KIND.increments(result))
    assert {m.name for m in KIND.metrics} == {
        "journey_runs_total",
        "journey_success",
        "journey_duration_seconds",
        "step_duration_seconds",
        "step_failures_total",
        "step_phase_duration_seconds",
        "step_http_status_code",
    }


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("trace_id", "span_id", "labels"),
    [
        (TRACE, SPAN, (("trace_id", TRACE), ("span_id", SPAN))),
        # The span id is left out when it is not one; no exemplar without a trace id.
        (TRACE, "", (("trace_id", TRACE),)),
        (TRACE, "0" * 16, (("trace_id", TRACE),)),
        (TRACE, SPAN.upper(), (("trace_id", TRACE),)),
        (TRACE, SPAN + "0", (("trace_id", TRACE),)),
        (TRACE, "00f067aa-ba902b7", (("trace_id", TRACE),)),
        ("", SPAN, None),
        ("0" * 32, SPAN, None),
        (TRACE[:-1], SPAN, None),
        (TRACE.upper(), SPAN, None),
        (TRACE[:16] + "g" + TRACE[17:], SPAN, None),
        (" " + TRACE[1:], SPAN, None),
    ],
)
def test_a_result_s_samples_carry_their_labels_in_the_family_s_order_and_its_trace(
    trace_id: str, span_id: str, labels: tuple[tuple[str, str], ...] | None
) -> None:
    # `increments` builds its label tuples and exemplars directly: the same as `sample()`
    # would (each family's label order) and each observation's exemplar, or none.
    result = Result(
        check="journey/checkout/aws-use1",
        kind="journey",
        target="checkout",
        site="aws-use1",
        ok=False,
        started_at=1000.0,
        duration=1.5,
        run_id="r1",
        reason=Reason.TIMEOUT,
        trace_id=trace_id,
        span_id=span_id,
        steps=(
            StepResult(
                name="submit",
                ok=False,
                duration=0.5,
                reason=Reason.TIMEOUT,
                start_offset=0.25,
                span_id=span_id,
                phases={"tls": 0.03, "send": 0.001},
            ),
        ),
    )
    samples = list(KIND.increments(result))
    for s in samples:
        assert tuple(k for k, _ in s.labels) == s.spec.labels
    observed = [s for s in samples if s.spec.type == "histogram"]
    assert [(s.spec.name, s.exemplar) for s in observed] == [
        ("journey_duration_seconds", labels and Exemplar(labels, 1001.5)),
        ("step_duration_seconds", labels and Exemplar(labels, 1000.75)),
        ("step_phase_duration_seconds", labels and Exemplar(labels, 1000.75)),
        ("step_phase_duration_seconds", labels and Exemplar(labels, 1000.75)),
    ]
    assert all(s.exemplar is None for s in samples if s.spec.type != "histogram")
