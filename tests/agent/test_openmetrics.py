"""/metrics in both exposition formats, and the journey's phase and status series.

Content negotiation by `Accept`; OpenMetrics with the run's trace as exemplar on the bucket an
observation fell into, parsed by the strict OpenMetrics parser, with the same series as the
classic format; promtool's lint of the classic format; the per-phase histogram and the last
HTTP status per step, from crafted results and from a real agent scraping over real HTTP.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as classic_families
from prometheus_client.samples import Sample as ParsedSample

from failsight.agent.config import Config
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.metrics import CATALOGUE
from failsight.agent.prometheus import PrometheusSink, exposition
from failsight.core.results import Reason, Result, StepResult
from failsight.core.telemetry import LATENCY_BUCKETS, MAX_EXEMPLAR_LABEL_CHARS, exemplar
from failsight.probes.journey.kind import PHASE_BUCKETS
from tests.fixtures.platform import demo_config_data, running_agent, wait_for, write_config
from tests.fixtures.prometheus import require_binary

MakeConfig = Callable[..., tuple[Config, Path]]

CLASSIC = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus 2.x sends with every scrape.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT_SPAN = "00f067aa0ba902b7"
STARTED = 1_700_000_000.0

Series = tuple[str, tuple[tuple[str, str], ...]]


def _step(
    name: str,
    *,
    status: int | None = 200,
    phases: dict[str, float] | None = None,
    duration: float = 0.07,
    offset: float = 0.0,
    span_id: str = "b7ad6b7169203331",
    skipped: bool = False,
    reason: Reason | None = None,
) -> StepResult:
    return StepResult(
        name=name,
        ok=reason is None,
        duration=duration,
        reason=reason,
        status=status,
        phases=phases or {},
        skipped=skipped,
        start_offset=offset,
        span_id=span_id,
    )


def _result(
    *steps: StepResult,
    trace_id: str = TRACE,
    cleanup: tuple[StepResult, ...] = (),
) -> Result:
    failed = next((s for s in steps if not s.ok and not s.skipped), None)
    return Result(
        check="journey/checkout/aws-use1",
        kind="journey",
        target="checkout",
        ok=failed is None,
        started_at=STARTED,
        duration=sum(s.duration for s in steps),
        run_id="0123456789abcdef",
        site="aws-use1",
        reason=failed.reason if failed else None,
        trace_id=trace_id,
        span_id=ROOT_SPAN,
        steps=steps,
        cleanup=cleanup,
    )


def _scrape(sink: PrometheusSink, accept: str) -> tuple[str, str]:
    chunks, content_type = asyncio.run(exposition(sink, accept))
    return b"".join(chunks).decode(), content_type


def _samples(families: Iterable[Any], name: str) -> list[ParsedSample]:
    return [s for f in families for s in f.samples if s.name == name]


def _labels(sample: ParsedSample, *drop: str) -> dict[str, str]:
    return {k: v for k, v in sample.labels.items() if k not in ("vantage", *drop)}


# -- content negotiation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("", CLASSIC),
        ("*/*", CLASSIC),
        ("text/plain", CLASSIC),
        # prometheus_client's choose_encoder answers this with an escaping header; the
        # agent writes one text format, 0.0.4, and says so.
        ("text/plain; version=1.0.0", CLASSIC),
        ("application/json", CLASSIC),
        (PROMETHEUS_ACCEPT, OPENMETRICS),
        ("application/openmetrics-text", OPENMETRICS),
        ("application/openmetrics-text; version=0.0.1", OPENMETRICS),
        ("Application/OpenMetrics-Text;Q=0.9", OPENMETRICS),
        ("text/plain;q=0.5, application/openmetrics-text;q=0.5", OPENMETRICS),
        ("application/openmetrics-text;q=0.4, text/plain;q=0.5", CLASSIC),
        ("application/openmetrics-text;q=0", CLASSIC),
        ("application/openmetrics-text;q=bogus", CLASSIC),
    ],
)
def test_the_format_follows_the_accept_header(accept: str, content_type: str) -> None:
    sink = PrometheusSink("aws-use1")
    sink.handle(_result(_step("pay")))
    text, got = _scrape(sink, accept)
    assert got == content_type
    assert text.endswith("# EOF\n") == (content_type == OPENMETRICS)


def test_both_formats_hold_the_same_series_and_openmetrics_parses_strictly() -> None:
    sink = PrometheusSink("aws-use1")
    sink.handle(_result(_step("pay", phases={"dns": 0.002, "connect": 0.004, "body": 0.01})))
    sink.handle(_result(_step("pay", status=503, reason=Reason.HTTP_STATUS)))
    classic_text, _ = _scrape(sink, "")
    om_text, _ = _scrape(sink, PROMETHEUS_ACCEPT)
    classic = list(classic_families(classic_text))
    # The OpenMetrics parser refuses anything the format does not allow (a counter sample
    # without _total, a bucket out of order, an exemplar where none may be, no # EOF).
    om = list(openmetrics_families(om_text))

    def series(families: list[Any]) -> dict[Series, float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
        }

    assert series(om) == series(classic)
    # Counters: the family without _total, its one sample with it, and no _created series
    # (which would appear and disappear with the format).
    runs = next(f for f in om if f.name == "failsight_journey_runs")
    assert runs.type == "counter"
    assert {s.name for s in runs.samples} == {"failsight_journey_runs_total"}
    assert "_created" not in om_text
    # Every family of the catalogue is described in both, samples or not.
    assert {f.name for f in om} == {f.name for f in classic}
    assert len(om) == len(CATALOGUE)


def test_a_step_s_duration_carries_the_run_s_trace_on_the_bucket_it_fell_into() -> None:
    sink = PrometheusSink("aws-use1")
    sink.handle(_result(_step("pay", duration=0.07, offset=0.5)))
    text, _ = _scrape(sink, PROMETHEUS_ACCEPT)
    buckets = _samples(openmetrics_families(text), "failsight_step_duration_seconds_bucket")
    with_exemplar = [s for s in buckets if s.exemplar is not None]
    assert [s.labels["le"] for s in with_exemplar] == ["0.1"]  # 0.05 < 0.07 <= 0.1
    (sample,) = with_exemplar
    assert sample.exemplar is not None
    assert sample.exemplar.labels == {"trace_id": TRACE, "span_id": "b7ad6b7169203331"}
    assert sample.exemplar.value == pytest.approx(0.07)
    assert float(sample.exemplar.timestamp) == pytest.approx(STARTED + 0.5 + 0.07)

    # The run's duration links to the run's root span; the classic format has no exemplars.
    runs = _samples(openmetrics_families(text), "failsight_journey_duration_seconds_bucket")
    (run,) = [s for s in runs if s.exemplar is not None]
    assert run.exemplar is not None
    assert run.exemplar.labels == {"trace_id": TRACE, "span_id": ROOT_SPAN}
    classic_text, _ = _scrape(sink, "")
    assert " # {" not in classic_text and TRACE not in classic_text


def test_a_bucket_keeps_its_latest_exemplar_and_other_buckets_their_own() -> None:
    sink = PrometheusSink("aws-use1")
    later = "a" * 32
    sink.handle(_result(_step("pay", duration=0.07)))
    sink.handle(_result(_step("pay", duration=3.0)))  # another bucket, same trace
    sink.handle(_result(_step("pay", duration=0.08), trace_id=later))
    text, _ = _scrape(sink, PROMETHEUS_ACCEPT)
    buckets = _samples(openmetrics_families(text), "failsight_step_duration_seconds_bucket")
    exemplars = {s.labels["le"]: s.exemplar for s in buckets if s.exemplar is not None}
    assert set(exemplars) == {"0.1", "5.0"}
    assert exemplars["0.1"] is not None and exemplars["0.1"].labels["trace_id"] == later
    assert exemplars["5.0"] is not None and exemplars["5.0"].labels["trace_id"] == TRACE


@pytest.mark.parametrize("trace_id", ["", "0" * 32, "not-a-trace-id-of-32-characters!", "ab" * 17])
def test_a_run_without_a_valid_trace_id_counts_without_an_exemplar(trace_id: str) -> None:
    sink = PrometheusSink("aws-use1")
    sink.handle(_result(_step("pay"), trace_id=trace_id))
    text, _ = _scrape(sink, PROMETHEUS_ACCEPT)
    families = list(openmetrics_families(text))
    (count,) = _samples(families, "failsight_step_duration_seconds_count")
    assert count.value == 1
    assert all(s.exemplar is None for f in families for s in f.samples)


def test_an_exemplar_stays_within_the_openmetrics_label_limit() -> None:
    assert exemplar(1.0, trace_id=TRACE, span_id=ROOT_SPAN) is not None
    exact = "x" * (MAX_EXEMPLAR_LABEL_CHARS - len("trace_id"))
    assert exemplar(1.0, trace_id=exact) is not None
    assert exemplar(1.0, trace_id=exact + "x") is None
    assert exemplar(1.0, trace_id="é" * (MAX_EXEMPLAR_LABEL_CHARS - 8)) is not None


# -- the phase histogram and the status gauge, from results ----------------------------------


def test_only_the_phases_a_step_went_through_are_observed_under_their_public_names() -> None:
    new_connection = {"dns": 0.002, "connect": 0.003, "send": 0.0004, "ttfb": 0.03, "body": 0.001}
    reused = {"send": 0.0002, "ttfb": 0.02, "body": 0.001}
    refused: dict[str, float] = {"dns": 0.002}  # resolved, then the connect failed
    sink = PrometheusSink("aws-use1")
    sink.handle(
        _result(
            _step("login", phases=new_connection),
            _step("pay", phases=reused),
            _step("ship", status=None, phases=refused, reason=Reason.CONNECT),
            _step("invoice", status=None, skipped=True, reason=Reason.CONNECT),
            cleanup=(_step("cancel", phases=reused),),
        )
    )
    text, _ = _scrape(sink, "")
    families = list(classic_families(text))
    counts = {
        (s.labels["step"], s.labels["phase"]): s.value
        for s in _samples(families, "failsight_step_phase_duration_seconds_count")
    }
    assert counts == {
        ("login", "resolve"): 1,
        ("login", "connect"): 1,
        ("login", "request"): 1,
        ("login", "first_byte"): 1,
        ("login", "transfer"): 1,
        ("pay", "request"): 1,
        ("pay", "first_byte"): 1,
        ("pay", "transfer"): 1,
        ("ship", "resolve"): 1,
    }
    sums = {
        (s.labels["step"], s.labels["phase"]): s.value
        for s in _samples(families, "failsight_step_phase_duration_seconds_sum")
    }
    assert sums[("login", "first_byte")] == pytest.approx(0.03)
    # The phase buckets, finer than the step buckets at the short end.
    les = {
        s.labels["le"] for s in _samples(families, "failsight_step_phase_duration_seconds_bucket")
    }
    assert les == {repr(b) for b in PHASE_BUCKETS} | {"+Inf"}
    assert min(PHASE_BUCKETS) < min(LATENCY_BUCKETS)

    statuses = {
        s.labels["step"]: s.value for s in _samples(families, "failsight_step_http_status_code")
    }
    # No response is 0; a step the run did not reach, and cleanup, have no series.
    assert statuses == {"login": 200, "pay": 200, "ship": 0}


def test_status_series_of_a_step_not_reached_go_with_the_next_run() -> None:
    sink = PrometheusSink("aws-use1")
    sink.handle(_result(_step("login"), _step("pay", status=201)))
    sink.handle(
        _result(
            _step("login", status=401, reason=Reason.AUTH),
            _step("pay", skipped=True, status=None),
        )
    )
    text, _ = _scrape(sink, "")
    statuses = {
        s.labels["step"]: s.value
        for s in _samples(classic_families(text), "failsight_step_http_status_code")
    }
    assert statuses == {"login": 401}


# -- a real agent, scraped over HTTP ---------------------------------------------------------


async def _get(url: str, accept: str | None) -> tuple[str, str]:
    headers = {"Accept": accept} if accept is not None else {}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        assert r.status == 200
        return await r.text(), r.headers["Content-Type"]


def _promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _traceparents(platform: Platform, site: str) -> set[tuple[str, str]]:
    pairs = set()
    for record in platform.state(site).requests:
        header = record.headers.get("traceparent") or ""
        parts = header.split("-")
        if len(parts) == 4:
            pairs.add((parts[1], parts[2]))
    return pairs


async def test_a_scrape_holds_each_step_s_phases_status_and_trace(
    platform: Platform, tmp_path: Path
) -> None:
    platform.set_fault("gcp-euw1", Fault(kind="fail_step", step="pick", status=503))
    data = demo_config_data(platform)
    # One site by name, so that its first connection resolves one; the other by address.
    aws = next(s for s in data["sites"] if s["name"] == "aws-use1")
    aws["base_url"] = aws["base_url"].replace("127.0.0.1", "localhost")
    config = write_config(tmp_path / "failsight.yaml", data)
    async with running_agent(config) as agent:

        def two_runs_each() -> bool:
            return all(
                len(platform.state(site).requests) >= 12 for site in ("aws-use1", "gcp-euw1")
            )

        await wait_for(two_runs_each)
        url = f"http://127.0.0.1:{agent.port}/metrics"
        classic_text, classic_type = await _get(url, None)
        om_text, om_type = await _get(url, PROMETHEUS_ACCEPT)

    assert classic_type == CLASSIC and om_type == OPENMETRICS
    linted = _promtool_check_metrics(classic_text)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert om_text.endswith("# EOF\n")
    families = list(classic_families(classic_text))

    statuses = {
        (s.labels["site"], s.labels["step"]): s.value
        for s in _samples(families, "failsight_step_http_status_code")
    }
    assert statuses == {
        ("aws-use1", "order_submit"): 201,
        ("aws-use1", "allocation"): 202,
        ("aws-use1", "allocation_done"): 200,
        ("aws-use1", "pick"): 201,
        ("aws-use1", "shipment"): 201,
        ("aws-use1", "invoice"): 201,
        ("gcp-euw1", "order_submit"): 201,
        ("gcp-euw1", "allocation"): 202,
        ("gcp-euw1", "allocation_done"): 200,
        ("gcp-euw1", "pick"): 503,  # and shipment, invoice: not reached, no series
    }

    steps = {
        (s.labels["site"], s.labels["step"]): s.value
        for s in _samples(families, "failsight_step_duration_seconds_count")
    }
    step_sums = {
        (s.labels["site"], s.labels["step"]): s.value
        for s in _samples(families, "failsight_step_duration_seconds_sum")
    }
    phases: dict[tuple[str, str], dict[str, float]] = {}
    phase_sums: dict[tuple[str, str], float] = {}
    for s in _samples(families, "failsight_step_phase_duration_seconds_count"):
        phases.setdefault((s.labels["site"], s.labels["step"]), {})[s.labels["phase"]] = s.value
    for s in _samples(families, "failsight_step_phase_duration_seconds_sum"):
        key = (s.labels["site"], s.labels["step"])
        phase_sums[key] = phase_sums.get(key, 0.0) + s.value
    assert set(phases) == set(steps)
    for key, count in steps.items():
        # Every request is sent, answered and read (the 503 too): once per step observed.
        assert {p: phases[key][p] for p in ("request", "first_byte", "transfer")} == {
            "request": count,
            "first_byte": count,
            "transfer": count,
        }, key
        assert phase_sums[key] <= step_sums[key], key
        assert "tls" not in phases[key]  # plain HTTP
    for site in ("aws-use1", "gcp-euw1"):
        mine = [counts for (s, _), counts in phases.items() if s == site]
        connects = sum(c.get("connect", 0) for c in mine)
        requests = sum(c["request"] for c in mine)
        # Keep-alive: a connection is opened for the first request, then mostly reused.
        assert 1 <= connects < requests, (site, connects, requests)
    resolved = {s for (s, _), counts in phases.items() if "resolve" in counts}
    assert resolved == {"aws-use1"}  # an address needs no lookup

    # The OpenMetrics scrape: each exemplar names a trace and span the site saw in a
    # `traceparent`, on a bucket that holds its value.
    om = list(openmetrics_families(om_text))
    seen = {site: _traceparents(platform, site) for site in ("aws-use1", "gcp-euw1")}
    linked = 0
    for name in ("failsight_step_duration_seconds", "failsight_step_phase_duration_seconds"):
        buckets = _samples(om, name + "_bucket")
        les = sorted({float(b.labels["le"]) for b in buckets})
        for bucket in buckets:
            if bucket.exemplar is None:
                continue
            linked += 1
            ex = bucket.exemplar
            assert re.fullmatch("[0-9a-f]{32}", ex.labels["trace_id"])
            pair = (ex.labels["trace_id"], ex.labels["span_id"])
            assert pair in seen[bucket.labels["site"]], (bucket, pair)
            le = float(bucket.labels["le"])
            below = max((b for b in les if b < le), default=-math.inf)
            assert below < ex.value <= le, bucket
    assert linked > 0
