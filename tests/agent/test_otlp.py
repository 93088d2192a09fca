"""The OTLP path against real receivers: metrics, traces and logs arrive; a dead or
black-holing collector costs counted failures and drops, never a slow probe or a hung shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from failsight.agent.logs import JsonFormatter, LogsConfig, configure_logging, log_result
from failsight.agent.metrics import CATALOGUE, LATENCY_BUCKETS
from failsight.agent.otlp import OtlpSink
from failsight.agent.otlp_config import OtlpCollectorConfig, build_resource
from failsight.core.check import new_run_id, new_span_id, new_trace_id
from failsight.core.results import Measurement, Reason, Result, StepResult
from failsight.core.telemetry import Sample
from tests.fixtures.otlp_receiver import (
    BlackHole,
    GrpcReceiver,
    HttpReceiver,
    Inbox,
    attributes,
    point_value,
    wait_for,
)

VANTAGE = "aws-use1"
RESOURCE = build_resource(VANTAGE, "aws", "us-east-1", "1.2.3")
SECRET_TOKEN = "Bearer s3cr3t-token-value"


# -- results built by hand ---------------------------------------------------------------------


def journey_result(
    *, ok: bool = True, site: str = "aws-use1", journey: str = "order-to-invoice"
) -> Result:
    started = time.time() - 2.0
    steps = (
        StepResult(
            name="submit-order",
            ok=True,
            duration=0.120,
            status=201,
            method="POST",
            url="https://orders.example/api/orders",
            start_offset=0.0,
            span_id=new_span_id(),
            phases={"connect": 0.01, "ttfb": 0.1},
        ),
        StepResult(
            name="allocate",
            ok=ok,
            duration=0.300,
            status=200 if ok else 503,
            reason=None if ok else Reason.HTTP_STATUS,
            message="" if ok else "expected status 200, got 503",
            method="GET",
            url="https://user:pw@orders.example/api/orders/42",
            start_offset=0.130,
            span_id=new_span_id(),
        ),
        StepResult(name="ship", ok=True, duration=0.0, skipped=not ok, start_offset=0.5),
    )
    cleanup = (
        StepResult(
            name="delete-order",
            ok=True,
            duration=0.050,
            status=204,
            method="DELETE",
            url="https://orders.example/api/orders/42",
            start_offset=0.6,
            span_id=new_span_id(),
        ),
    )
    return Result(
        check=f"journey/{journey}/{site}",
        kind="journey",
        target=journey,
        site=site,
        ok=ok,
        reason=None if ok else Reason.HTTP_STATUS,
        message="" if ok else "step allocate: expected status 200, got 503",
        started_at=started,
        duration=0.7,
        run_id=new_run_id(),
        trace_id=new_trace_id(),
        span_id=new_span_id(),
        critical=True,
        steps=steps,
        cleanup=cleanup,
        facts={"order_id": "42", "api_key": SECRET_TOKEN},
    )


def replication_result(lag: float, replicas: tuple[str, ...] = ("replica-a",)) -> Result:
    return Result(
        check="replication/orders-db",
        kind="replication",
        target="orders-db",
        ok=True,
        started_at=time.time(),
        duration=0.05,
        run_id=new_run_id(),
        measurements=tuple(
            Measurement(
                "replication_lag_seconds",
                {"cluster": "orders-db", "replica": r, "method": "heartbeat"},
                lag,
            )
            for r in replicas
        ),
    )


def collector(
    name: str, endpoint: str, protocol: str = "grpc", **extra: Any
) -> OtlpCollectorConfig:
    data: dict[str, Any] = {
        "name": name,
        "endpoint": endpoint,
        "protocol": protocol,
        "timeout": "1s",
        "export_interval": "300ms",
        "headers": {"authorization": SECRET_TOKEN},
    }
    data.update(extra)
    return OtlpCollectorConfig.model_validate(data)


# -- fixtures: real receivers, sinks always closed -----------------------------------------------


@pytest.fixture
def grpc_receiver() -> Iterator[GrpcReceiver]:
    receiver = GrpcReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
async def http_receiver() -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def black_hole() -> AsyncIterator[BlackHole]:
    hole = BlackHole()
    await hole.start()
    yield hole
    await hole.stop()


SinkFactory = Callable[..., OtlpSink]


@pytest.fixture
async def make_sink() -> AsyncIterator[SinkFactory]:
    sinks: list[OtlpSink] = []

    def make(*collectors: OtlpCollectorConfig, logs_over_otlp: bool = True) -> OtlpSink:
        sink = OtlpSink(collectors, resource=RESOURCE, logs_over_otlp=logs_over_otlp)
        sinks.append(sink)
        return sink

    yield make
    # close() blocks: run it off the loop so loop-hosted receivers keep answering.
    for sink in sinks:
        await asyncio.to_thread(sink.close, 2.0)


@contextlib.asynccontextmanager
async def serve(protocol: str, port: int = 0) -> AsyncIterator[tuple[str, Inbox]]:
    """A receiver for the protocol on the port, running for the block: (endpoint, inbox)."""
    if protocol == "grpc":
        grpc_rx = GrpcReceiver(port)
        grpc_rx.start()
        try:
            yield grpc_rx.endpoint, grpc_rx.inbox
        finally:
            await asyncio.to_thread(grpc_rx.stop)
    else:
        http_rx = HttpReceiver(port)
        await http_rx.start()
        try:
            yield http_rx.endpoint, http_rx.inbox
        finally:
            await http_rx.stop()


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str, Inbox]]:
    """A running receiver for the parametrized protocol: (protocol, endpoint, inbox)."""
    async with serve(request.param) as (endpoint, inbox):
        yield request.param, endpoint, inbox


def _hex(b: bytes) -> str:
    return b.hex()


def _span_attrs(span: Any) -> dict[str, Any]:
    return attributes(span.attributes)


def _points(inbox: Inbox, name: str) -> list[Any]:
    """The data points of the newest export of a metric."""
    metric = inbox.latest_metric(name)
    if metric is None:
        return []
    kind = metric.WhichOneof("data")
    return list(getattr(metric, kind).data_points) if kind else []


def _point_attrs(point: Any) -> dict[str, Any]:
    return attributes(point.attributes)


# -- config ------------------------------------------------------------------------------------


def test_config_defaults_and_the_documented_shape() -> None:
    config = OtlpCollectorConfig.model_validate(
        {
            "name": "aws-collector",
            "endpoint": "http://127.0.0.1:4317",
            "protocol": "grpc",
            "headers": {"authorization": "Bearer abc"},
            "timeout": "5s",
            "signals": ["metrics", "traces"],
            "export_interval": "10s",
            "max_queue_size": 100,
        }
    )
    assert config.plaintext is True
    assert config.grpc_target == "127.0.0.1:4317"
    assert config.signals == ("metrics", "traces")
    assert config.timeout == 5.0
    assert "abc" not in repr(config)
    defaults = OtlpCollectorConfig.model_validate({"name": "c", "endpoint": "otel.internal:4317"})
    assert defaults.plaintext is False  # TLS unless told otherwise
    assert defaults.signals == ("metrics", "traces", "logs")
    assert defaults.max_queue_size == 2048
    http = OtlpCollectorConfig.model_validate(
        {"name": "h", "endpoint": "https://otel.example/base/", "protocol": "http/protobuf"}
    )
    assert http.signal_url("traces") == "https://otel.example/base/v1/traces"
    assert http.plaintext is False
    assert http.path("logs") == "otlp:h:logs"
    assert LogsConfig.model_validate({}).model_dump() == {
        "stdout": True,
        "otlp": True,
        "level": "info",
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"endpoint": "127.0.0.1"},
            "endpoint: a grpc endpoint is HOST:PORT or http(s)://HOST:PORT, e.g. 127.0.0.1:4317",
        ),
        (
            {"endpoint": "127.0.0.1:4318", "protocol": "http/protobuf"},
            "endpoint: an http/protobuf endpoint is a base URL, e.g. http://127.0.0.1:4318",
        ),
        (
            {"endpoint": "https://otel.example:4317", "insecure": True},
            "insecure: true contradicts the https:// endpoint",
        ),
        (
            {"endpoint": "http://h:4318", "protocol": "http/protobuf", "insecure": True},
            "insecure: only for grpc; an http/protobuf endpoint's scheme decides",
        ),
        ({"endpoint": "h:4317", "signals": []}, "list at least one of metrics, traces, logs"),
        ({"endpoint": "h:4317", "signals": ["traces", "traces"]}, "each signal may be listed once"),
        ({"endpoint": "h:4317", "ca_file": "/nonexistent/ca.pem"}, "no such file: /nonexistent"),
        ({"endpoint": "h:4317", "max_queue_size": 0}, "greater than or equal to 1"),
        ({"endpoint": "h:4317", "timeout": "0s"}, "must be greater than zero"),
        ({"endpoint": "h:4317", "headers": {"bad header": "x"}}, "invalid header name"),
        ({"endpoint": "h:4317", "compression": "gzip"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        OtlpCollectorConfig.model_validate({"name": "c", **data})
    assert message in str(err.value)


def test_ca_file_needs_tls(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    with pytest.raises(ValidationError, match="ca_file: needs a TLS endpoint"):
        OtlpCollectorConfig.model_validate(
            {"name": "c", "endpoint": "http://h:4317", "ca_file": str(ca)}
        )


def test_build_resource() -> None:
    resource = build_resource("gcp-euw1", "gcp", "europe-west1", "0.9.0")
    assert resource["service.name"] == "failsight"
    assert resource["service.version"] == "0.9.0"
    assert resource["vantage"] == "gcp-euw1"
    assert resource["cloud.provider"] == "gcp"
    assert resource["cloud.region"] == "europe-west1"
    assert resource["host.name"]
    assert "cloud.region" not in build_resource("v", None, None, "1")


def test_collector_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        OtlpSink(
            [collector("a", "127.0.0.1:1", signals=["traces"])] * 2,
            resource=RESOURCE,
            logs_over_otlp=False,
        )


# -- signals arrive, over gRPC and over HTTP ---------------------------------------------------


@pytest.mark.parametrize("receiver", ["grpc", "http/protobuf"], indirect=True)
async def test_metrics_spans_and_logs_arrive(
    receiver: tuple[str, str, Inbox], make_sink: SinkFactory
) -> None:
    protocol, endpoint, inbox = receiver
    sink = make_sink(collector("main", endpoint, protocol))
    passed, failed = journey_result(), journey_result(ok=False)
    sink.handle(passed)
    sink.handle(failed)

    # Traces: exact ids from the results, steps as children of the run's root span.
    def both_traces_in() -> bool:
        trace_ids = {_hex(s.trace_id) for s in inbox.span_items()}
        return {passed.trace_id, failed.trace_id} <= trace_ids and len(inbox.span_items()) >= 8

    await wait_for(both_traces_in, "the spans of both runs")
    spans = [s for s in inbox.span_items() if _hex(s.trace_id) == failed.trace_id]
    by_id = {_hex(s.span_id): s for s in spans}
    root = by_id[failed.span_id]
    assert root.name == "journey order-to-invoice"
    assert root.parent_span_id == b""
    assert root.start_time_unix_nano == int(failed.started_at * 1e9)
    assert root.end_time_unix_nano == int((failed.started_at + failed.duration) * 1e9)
    assert root.status.code == 2  # STATUS_CODE_ERROR
    assert root.status.message == failed.message
    root_attrs = _span_attrs(root)
    assert root_attrs["failsight.site"] == "aws-use1"
    assert root_attrs["failsight.journey"] == "order-to-invoice"
    assert root_attrs["failsight.run_id"] == failed.run_id
    assert root_attrs["failsight.reason"] == "http_status"
    # The skipped step never ran: no span. Two steps and one cleanup step did.
    assert len(spans) == 4
    for step in (*failed.steps[:2], *failed.cleanup):
        span = by_id[step.span_id]
        assert span.parent_span_id.hex() == failed.span_id
        assert span.start_time_unix_nano == int((failed.started_at + step.start_offset) * 1e9)
        attrs = _span_attrs(span)
        assert attrs["failsight.step"] == step.name
        assert attrs["http.request.method"] == step.method
        assert attrs["http.response.status_code"] == step.status
        assert attrs["failsight.cleanup"] is (step in failed.cleanup)
        assert attrs["failsight.run_id"] == failed.run_id
    allocate = by_id[failed.steps[1].span_id]
    assert allocate.status.code == 2
    assert allocate.status.message == "expected status 200, got 503"
    assert _span_attrs(allocate)["failsight.reason"] == "http_status"
    assert (
        _span_attrs(allocate)["url.full"]
        == "https://REDACTED:REDACTED@orders.example/api/orders/42"
    )
    ok_root = next(s for s in inbox.span_items() if _hex(s.span_id) == passed.span_id)
    assert ok_root.status.code == 0
    resource = inbox.spans()[0].resource
    assert resource["service.name"] == "failsight"
    assert resource["vantage"] == VANTAGE
    assert resource["cloud.provider"] == "aws"
    assert resource["cloud.region"] == "us-east-1"
    assert resource["service.version"] == "1.2.3"

    # Metrics: names, units and attributes like the Prometheus ones, plus vantage.
    def counted_both_runs() -> bool:
        return sum(point_value(p) for p in _points(inbox, "failsight.journey_runs")) == 2

    await wait_for(counted_both_runs, "journey_runs to reach 2")
    runs = inbox.latest_metric("failsight.journey_runs")
    assert runs is not None and runs.unit == "1" and runs.sum.is_monotonic
    assert {_point_attrs(p)["result"] for p in runs.sum.data_points} == {"success", "failure"}
    assert _point_attrs(runs.sum.data_points[0]) | {"result": "x"} == {
        "site": "aws-use1",
        "journey": "order-to-invoice",
        "result": "x",
        "vantage": VANTAGE,
    }
    duration = inbox.latest_metric("failsight.journey_duration")
    assert duration is not None and duration.unit == "s"
    point = duration.histogram.data_points[0]
    assert list(point.explicit_bounds) == list(LATENCY_BUCKETS)
    assert point.count == 2
    steps = _points(inbox, "failsight.step_duration")
    # The passed run reached "ship"; the failed one skipped it.
    assert {_point_attrs(p)["step"] for p in steps} == {"submit-order", "allocate", "ship"}
    failures = _points(inbox, "failsight.step_failures")
    assert [(_point_attrs(p)["step"], _point_attrs(p)["reason"]) for p in failures] == [
        ("allocate", "http_status")
    ]
    # The gauge set is the last result's: the failed run, 0.0 (read from the oneof).
    success = _points(inbox, "failsight.journey_success")
    assert [point_value(p) for p in success] == [0.0]
    assert _point_attrs(success[0]) == {
        "site": "aws-use1",
        "journey": "order-to-invoice",
        "vantage": VANTAGE,
    }
    check_duration = inbox.latest_metric("failsight.check_duration")
    assert check_duration is not None and check_duration.unit == "s"
    assert inbox.metrics()[0].resource["vantage"] == VANTAGE

    # Logs: one record per run, with the trace id and the run's fields; no secret anywhere.
    await wait_for(lambda: len(inbox.log_items()) >= 2, "two run log records")
    record = next(r for r in inbox.log_items() if r.trace_id.hex() == failed.trace_id)
    assert record.span_id.hex() == failed.span_id
    assert record.severity_text == "WARN"
    assert record.body.string_value == f"{failed.check} failure (http_status)"
    log_attrs = _span_attrs(record)
    assert log_attrs["failsight.check"] == failed.check
    assert log_attrs["failsight.run_id"] == failed.run_id
    assert log_attrs["failsight.failed_step"] == "allocate"
    assert log_attrs["failsight.ok"] is False
    assert SECRET_TOKEN not in str(inbox.log_items()) + str(inbox.span_items())

    # The configured header reached the collector on every request.
    assert all(h.get("authorization") == SECRET_TOKEN for h in inbox.headers)
    await wait_for(
        lambda: all(
            sink.export_counts()[(f"otlp:main:{s}", "success")] > 0
            for s in ("metrics", "traces", "logs")
        ),
        "successful exports counted on every path",
    )
    counts = sink.export_counts()
    assert counts[("otlp:main:traces", "failure")] == 0
    assert counts[("otlp:main:traces", "dropped")] == 0


async def test_other_kinds_are_one_span_and_gauges_follow_the_latest_result(
    grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    inbox = grpc_receiver.inbox
    sink = make_sink(collector("main", grpc_receiver.endpoint), logs_over_otlp=False)
    first = replication_result(3.5, ("replica-a", "replica-b"))
    sink.handle(first)
    await wait_for(lambda: len(_points(inbox, "failsight.replication_lag")) == 2, "two lag series")
    lag = inbox.latest_metric("failsight.replication_lag")
    assert lag is not None and lag.unit == "s"
    assert {point_value(p) for p in lag.gauge.data_points} == {3.5}
    assert {_point_attrs(p)["replica"] for p in lag.gauge.data_points} == {
        "replica-a",
        "replica-b",
    }
    await wait_for(lambda: len(inbox.span_items()) == 1, "the run's span")
    span = inbox.span_items()[0]
    assert span.name == "replication orders-db"
    assert _span_attrs(span)["failsight.kind"] == "replication"
    assert span.parent_span_id == b""

    # A replica that disappears from the next result leaves no stale series behind.
    sink.handle(replication_result(0.0, ("replica-a",)))

    def one_series_at_zero() -> bool:
        points = _points(inbox, "failsight.replication_lag")
        return len(points) == 1 and point_value(points[0]) == 0.0

    await wait_for(one_series_at_zero, "replica-b's series to go and replica-a's at 0.0")

    # Gauges the lead pushes (views, verdicts) and a check forgotten on reload.
    view = Sample(CATALOGUE["site_view_down"], (("site", "gcp-euw1"),), 1.0)
    sink.replace_gauges("views", [view])
    await wait_for(lambda: bool(_points(inbox, "failsight.site_view_down")), "the pushed gauge")
    sink.forget_check(first.check)

    def only_the_pushed_gauge_left() -> bool:
        names = inbox.newest_metric_names()
        return "failsight.site_view_down" in names and not names & {
            "failsight.replication_lag",
            "failsight.check_success",
            "failsight.check_duration",
        }

    await wait_for(only_the_pushed_gauge_left, "the forgotten check's gauges to go")
    # Exports counted by the sink are exported too.
    await wait_for(
        lambda: any(
            _point_attrs(p)["path"] == "otlp:main:traces"
            for p in _points(inbox, "failsight.telemetry_exports")
        ),
        "telemetry_exports over OTLP",
    )
    counter = Sample(CATALOGUE["journey_runs_total"], (("site", "s"),), 1.0)
    with pytest.raises(ValueError, match="journey_runs_total is a counter, not a gauge"):
        sink.replace_gauges("x", [counter])


# -- independence: a dead collector costs nothing elsewhere ----------------------------------------


async def test_a_stopped_collector_does_not_starve_the_other(
    grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    dead = GrpcReceiver()
    dead.start()
    dead.stop()  # its port now refuses connections
    sink = make_sink(
        collector("dead", dead.endpoint),
        collector("alive", grpc_receiver.endpoint),
    )
    results = [journey_result() for _ in range(20)]
    for result in results:
        sink.handle(result)
        await asyncio.sleep(0.01)
    inbox = grpc_receiver.inbox
    wanted = {r.trace_id for r in results}
    await wait_for(
        lambda: wanted <= {_hex(s.trace_id) for s in inbox.span_items()}, "all 20 traces"
    )
    await wait_for(
        lambda: sum(point_value(p) for p in _points(inbox, "failsight.journey_runs")) == 20,
        "all 20 runs counted",
    )
    await wait_for(lambda: len(inbox.log_items()) >= 20, "all 20 run logs")
    await wait_for(
        lambda: all(
            sink.export_counts()[(f"otlp:dead:{s}", "failure")] > 0
            for s in ("metrics", "traces", "logs")
        ),
        "failures counted on the dead collector's paths",
    )
    counts = sink.export_counts()
    for signal in ("metrics", "traces", "logs"):
        assert counts[(f"otlp:alive:{signal}", "failure")] == 0
        assert counts[(f"otlp:dead:{signal}", "success")] == 0


def _time_handles(sink: OtlpSink, results: list[Result]) -> tuple[float, float]:
    """Total and longest single handle() time over the results, in seconds; stops at the
    first call that took longer than a second (it waited on the network)."""
    longest = 0.0
    start = time.perf_counter()
    for result in results:
        t0 = time.perf_counter()
        sink.handle(result)
        longest = max(longest, time.perf_counter() - t0)
        if longest > 1.0:
            break
    return time.perf_counter() - start, longest


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_a_black_hole_collector_costs_drops_not_time(
    protocol: str,
    black_hole: BlackHole,
    grpc_receiver: GrpcReceiver,
    make_sink: SinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    results = [journey_result() for _ in range(1000)]
    baseline_total, _ = _time_handles(make_sink(), results)
    healthy_total, _ = _time_handles(
        make_sink(collector("healthy", grpc_receiver.endpoint, max_queue_size=5000)), results
    )
    sink = make_sink(collector("hole", black_hole.endpoint, protocol, max_queue_size=50))
    await asyncio.sleep(0.5)  # the first exports are on the wire and hanging
    hole_total, hole_longest = _time_handles(sink, results)
    # Generous bounds on a shared machine: a handle() that waited on an export would take the
    # 1 s export timeout, and 1,000 of them would take minutes.
    assert hole_longest < 0.5, f"one handle() took {hole_longest:.3f}s"
    # Seen here: baseline 5 ms, healthy 160-300 ms, black hole 100 ms for the 1,000 calls.
    assert hole_total < 5 * healthy_total + 0.2, (hole_total, healthy_total)
    assert hole_total < max(100 * baseline_total, 0.5), (hole_total, baseline_total)

    # Memory stays bounded while results keep coming: never more than max_queue_size queued.
    for result in results[:200]:
        sink.handle(result)
        assert max(sink.queued().values()) <= 50
    counts = sink.export_counts()
    spans_offered = 5 * (len(results) + 200)  # a root, three steps and a cleanup step per run
    # At most the queue plus one batch on the wire got through; the rest is counted.
    assert counts[("otlp:hole:traces", "dropped")] >= spans_offered - 2 * 50
    assert counts[("otlp:hole:logs", "dropped")] >= len(results) + 200 - 2 * 50
    assert black_hole.connections > 0
    # The SDK's own queue never overflowed: every drop is one we counted.
    assert "Queue full" not in caplog.text
    await wait_for(
        lambda: sink.export_counts()[("otlp:hole:traces", "failure")] > 0,
        "a timed-out span export counted as failure",
    )

    start = time.monotonic()
    await asyncio.to_thread(sink.close, 1.5)
    assert time.monotonic() - start < 4.0
    # Whatever the queues held is counted as dropped, at the latest when the one export still
    # on the wire times out.
    await wait_for(lambda: not any(sink.queued().values()), "the queues to be accounted for")
    sink.handle(journey_result())  # after close: ignored, no error


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_exports_resume_when_the_collector_comes_back(
    protocol: str, black_hole: BlackHole, make_sink: SinkFactory
) -> None:
    sink = make_sink(collector("flaky", black_hole.endpoint, protocol, max_queue_size=100))
    sink.handle(journey_result())
    await wait_for(
        lambda: all(
            sink.export_counts()[(f"otlp:flaky:{signal}", "failure")] > 0
            for signal in ("metrics", "traces", "logs")
        ),
        "exports on every path to time out against the black hole",
        timeout=20,
    )
    assert sink.export_counts()[("otlp:flaky:traces", "success")] == 0
    await black_hole.stop()
    async with serve(protocol, black_hole.port) as (_, inbox):  # back, on the same port
        # The agent keeps producing results; the first exports after the switch may still meet
        # the closed port (the gRPC channel's reconnect back-off) and fail, later ones go through.
        later: list[Result] = []

        def resumed() -> bool:
            sent = {r.trace_id for r in later}
            return (
                bool(sent & {_hex(s.trace_id) for s in inbox.span_items()})
                and bool(sent & {r.trace_id.hex() for r in inbox.log_items()})
                and bool(inbox.metrics())
            )

        deadline = time.monotonic() + 20
        while not resumed():
            assert time.monotonic() < deadline, "exports did not resume within 20 s"
            later.append(journey_result())
            sink.handle(later[-1])
            await asyncio.sleep(0.25)
        # The receiver has the data a moment before the exporter thread counts its success.
        await wait_for(
            lambda: all(
                sink.export_counts()[(f"otlp:flaky:{signal}", "success")] > 0
                for signal in ("metrics", "traces", "logs")
            ),
            "a counted success on every path",
            timeout=10,
        )
        counts = sink.export_counts()
        for signal in ("metrics", "traces", "logs"):
            assert counts[(f"otlp:flaky:{signal}", "failure")] > 0
        await asyncio.to_thread(sink.close, 2.0)


async def test_close_is_bounded_with_a_dead_collector(make_sink: SinkFactory) -> None:
    dead = GrpcReceiver()
    dead.start()
    dead.stop()
    # A long export timeout: left alone, the SDK would retry with back-off for 30 s.
    sink = make_sink(collector("dead", dead.endpoint, timeout="30s"))
    for _ in range(5):
        sink.handle(journey_result())
    await asyncio.sleep(1.0)
    start = time.monotonic()
    await asyncio.to_thread(sink.close, 2.0)
    assert time.monotonic() - start < 4.0
    counts = sink.export_counts()
    # Whatever never reached the collector is accounted for, as failure or dropped.
    assert counts[("otlp:dead:traces", "success")] == 0
    assert counts[("otlp:dead:traces", "dropped")] + counts[("otlp:dead:traces", "failure")] > 0


@pytest.fixture(scope="module")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_tls_collectors_are_verified_and_ca_file_trusts_them(
    protocol: str, tls_ca: trustme.CA, tmp_path: Any, make_sink: SinkFactory
) -> None:
    cert = tls_ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    async with contextlib.AsyncExitStack() as stack:
        if protocol == "grpc":
            grpc_rx = GrpcReceiver(
                tls=(cert.private_key_and_cert_chain_pem.bytes(), cert.private_key_pem.bytes())
            )
            grpc_rx.start()
            stack.push_async_callback(asyncio.to_thread, grpc_rx.stop)
            endpoint, inbox = grpc_rx.endpoint, grpc_rx.inbox
        else:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            http_rx = HttpReceiver(ssl_context=context)
            await http_rx.start()
            stack.push_async_callback(http_rx.stop)
            endpoint, inbox = http_rx.endpoint, http_rx.inbox
        # Not trusted by default: the system's roots do not know this CA.
        untrusting = make_sink(collector("strict", endpoint, protocol, signals=["traces"]))
        trusting = make_sink(
            collector("ours", endpoint, protocol, signals=["traces"], ca_file=str(ca_file))
        )
        result = journey_result()
        untrusting.handle(result)
        trusting.handle(result)
        await wait_for(
            lambda: len(inbox.span_items()) == 5, "the spans over TLS from the trusting sink"
        )
        await wait_for(
            lambda: untrusting.export_counts()[("otlp:strict:traces", "failure")] > 0,
            "the untrusted export to fail",
        )
        assert untrusting.export_counts()[("otlp:strict:traces", "success")] == 0
        assert trusting.export_counts()[("otlp:ours:traces", "success")] > 0
        assert len(inbox.span_items()) == 5


async def test_logs_over_otlp_can_be_turned_off(
    grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    sink = make_sink(collector("main", grpc_receiver.endpoint), logs_over_otlp=False)
    result = journey_result()
    sink.handle(result)
    await wait_for(lambda: len(grpc_receiver.inbox.span_items()) == 5, "the run's five spans")
    assert not any(path.endswith(":logs") for path, _ in sink.export_counts())
    assert grpc_receiver.inbox.log_items() == []


# -- stdout logs -----------------------------------------------------------------------------


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord(
        "failsight.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None
    )
    record.check = "journey/a/b"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "warning"
    assert data["logger"] == "failsight.x"
    assert data["msg"] == "hello you"
    assert data["check"] == "journey/a/b"
    assert data["ts"].endswith("Z")


def test_log_result_writes_the_run_and_no_secret() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    run_log = logging.getLogger("failsight.run")
    run_log.addHandler(handler)
    old_level = run_log.level
    run_log.setLevel(logging.INFO)
    try:
        failed = journey_result(ok=False)
        log_result(failed)
        log_result(journey_result())
    finally:
        run_log.removeHandler(handler)
        run_log.setLevel(old_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert first["level"] == "warning"
    assert first["msg"] == f"{failed.check} failure (http_status)"
    assert {k: first[k] for k in ("check", "kind", "site", "target", "run_id", "trace_id")} == {
        "check": failed.check,
        "kind": "journey",
        "site": "aws-use1",
        "target": "order-to-invoice",
        "run_id": failed.run_id,
        "trace_id": failed.trace_id,
    }
    assert first["ok"] is False
    assert first["outcome"] == "failure"
    assert first["reason"] == "http_status"
    assert first["failed_step"] == "allocate"
    assert first["duration_seconds"] == 0.7
    assert lines[1]["level"] == "info"
    assert SECRET_TOKEN not in stream.getvalue()


def test_configure_logging_replaces_its_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        configure_logging("debug", stdout=True)
        configure_logging("info", stdout=True)
        ours = [h for h in root.handlers if h not in before[0]]
        assert len(ours) == 1
        assert root.level == logging.INFO
        logging.getLogger("failsight.test").info("to stdout", extra={"site": "s1"})
        out = capsys.readouterr().out.strip().splitlines()
        assert json.loads(out[-1])["site"] == "s1"
        with pytest.raises(ValueError, match="unknown log level 'loud'"):
            configure_logging("loud", stdout=True)
    finally:
        for h in list(root.handlers):
            if h not in before[0]:
                root.removeHandler(h)
        root.setLevel(before[1])
