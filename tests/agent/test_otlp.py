"""The OTLP path against real receivers: metrics, traces and logs arrive; a dead or
black-holing collector costs counted failures and drops, never a slow probe or a hung shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import re
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

from failsight.agent.logs import JsonFormatter, LogsConfig, configure_logging, log_result
from failsight.agent.metrics import CATALOGUE
from failsight.agent.otlp import OtlpSink, url_attributes
from failsight.agent.otlp_config import INSTANCE_ID, OtlpCollectorConfig, build_resource
from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext, new_run_id, new_span_id, new_trace_id
from failsight.core.http import USER_AGENT, new_session
from failsight.core.redact import REDACTOR
from failsight.core.results import Measurement, Reason, Result, StepResult
from failsight.core.telemetry import LATENCY_BUCKETS, MetricType, Sample
from failsight.probes.journey import JourneyCheck, JourneyConfig
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
# opentelemetry.proto.trace.v1.Span.SpanKind
SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
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
            url_template="/api/orders",
            user_agent=USER_AGENT,
            http_version="1.1",
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
            url_template="/api/orders/{order_id}",
            user_agent=USER_AGENT,
            http_version="1.1",
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
    assert resource == {
        "service.name": "failsight",
        "service.version": "0.9.0",
        "service.instance.id": INSTANCE_ID,
        "host.name": socket.gethostname(),
        "failsight.vantage": "gcp-euw1",
        "cloud.provider": "gcp",
        "cloud.region": "europe-west1",
    }
    assert "cloud.region" not in build_resource("v", None, None, "1")


def test_the_instance_id_is_a_uuid_per_process_that_a_reload_keeps() -> None:
    assert uuid.UUID(INSTANCE_ID).version == 4
    # A reload builds the resource again: the same instance.
    assert build_resource("v", None, None, "1")["service.instance.id"] == INSTANCE_ID
    # Another process is another instance.
    code = "from failsight.agent.otlp_config import INSTANCE_ID; print(INSTANCE_ID)"
    others = {
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(others) == 2 and INSTANCE_ID not in others
    assert all(uuid.UUID(other).version == 4 for other in others)


def test_every_family_has_a_ucum_unit() -> None:
    """What each instrument the OTLP path creates declares as its unit: seconds `s`, bytes
    `By`, counts an annotation such as `{run}`, and `1` only for what is dimensionless (a
    0/1 state, an info value)."""
    for spec in CATALOGUE.values():
        if spec.name.endswith("_seconds"):
            assert spec.unit == "s", spec.name
        elif spec.name.endswith("_bytes"):
            assert spec.unit == "By", spec.name
        elif spec.type is MetricType.COUNTER:
            assert re.fullmatch(r"\{[a-z_]+\}", spec.unit), spec.name
        else:
            assert spec.unit == "1" or re.fullmatch(r"\{[a-z_]+\}", spec.unit), spec.name


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
    assert root.kind == SPAN_KIND_INTERNAL
    # The run's own span: our attributes, our reason; error.type belongs to the HTTP spans.
    assert _span_attrs(root) == {
        "failsight.run_id": failed.run_id,
        "failsight.site": "aws-use1",
        "failsight.check": failed.check,
        "failsight.kind": "journey",
        "failsight.target": "order-to-invoice",
        "failsight.critical": True,
        "failsight.journey": "order-to-invoice",
        "failsight.failed_step": "allocate",
        "failsight.reason": "http_status",
    }
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
    assert allocate.name == "GET /api/orders/{order_id}"
    assert allocate.kind == SPAN_KIND_CLIENT
    assert allocate.status.code == 2
    # The status code says it: no description (the conventions' rule).
    assert allocate.status.message == ""
    assert _span_attrs(allocate) == {
        "failsight.run_id": failed.run_id,
        "failsight.site": "aws-use1",
        "failsight.journey": "order-to-invoice",
        "failsight.step": "allocate",
        "failsight.cleanup": False,
        "failsight.attempts": 1,
        "failsight.reason": "http_status",
        "http.request.method": "GET",
        "url.full": "https://REDACTED:REDACTED@orders.example/api/orders/42",
        "url.scheme": "https",
        "url.template": "/api/orders/{order_id}",
        "server.address": "orders.example",
        "server.port": 443,  # required, also when it is the scheme's default
        "http.response.status_code": 503,
        "network.protocol.version": "1.1",
        "user_agent.original": USER_AGENT,
        "user_agent.synthetic.type": "test",
        "error.type": "503",
    }
    # A step result without a template (built by hand) is named by its method alone.
    assert by_id[failed.cleanup[0].span_id].name == "DELETE"
    ok_root = next(s for s in inbox.span_items() if _hex(s.span_id) == passed.span_id)
    assert ok_root.status.code == 0
    resource = inbox.spans()[0].resource
    assert resource == {
        **RESOURCE,
        # Added by the SDK.
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": resource["telemetry.sdk.version"],
    }
    assert resource["service.name"] == "failsight"
    assert resource["failsight.vantage"] == VANTAGE
    assert resource["service.instance.id"] == INSTANCE_ID
    assert resource["cloud.provider"] == "aws"
    assert resource["cloud.region"] == "us-east-1"
    assert resource["service.version"] == "1.2.3"

    # Metrics: names, units and attributes like the Prometheus ones, plus vantage.
    def counted_both_runs() -> bool:
        return sum(point_value(p) for p in _points(inbox, "failsight.journey_runs")) == 2

    await wait_for(counted_both_runs, "journey_runs to reach 2")
    runs = inbox.latest_metric("failsight.journey_runs")
    assert runs is not None and runs.sum.is_monotonic
    # Every instrument carries its family's UCUM unit.
    by_otel_name = {spec.otel_name: spec for spec in CATALOGUE.values()}
    received = {m.item.name: m.item.unit for m in inbox.metrics()}
    assert {"failsight.journey_runs", "failsight.journey_duration"} <= received.keys()
    assert received == {name: by_otel_name[name].unit for name in received}
    assert (received["failsight.journey_runs"], received["failsight.journey_duration"]) == (
        "{run}",
        "s",
    )
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
    assert inbox.metrics()[0].resource["failsight.vantage"] == VANTAGE
    assert inbox.metrics()[0].resource["service.instance.id"] == INSTANCE_ID

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


# -- step spans from real journey runs: the OpenTelemetry HTTP client conventions -------------

# Secrets the process does not hold (nothing registered them): only where they sit in the URL
# (the userinfo, a query parameter named like a credential) gives them away.
QUERY_TOKEN = "q-tok-9f8e7d6c5b4a"
QUERY_SIGNATURE = "sig-0a1b2c3d4e5f"
USERINFO_PASSWORD = "u-pass-1a2b3c4d"


class Shop:
    """A real HTTP server under /platform: an order to submit, an allocation that needs one
    poll, an invoice that fails with 500, an order that is never `shipped`, a DELETE that
    answers 404, and a tracking number whose second poll is cut off without an answer. It
    records the User-Agent and query string of every request."""

    def __init__(self) -> None:
        self.polls = 0
        self.tracking_polls = 0
        self.seen: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _record(self, request: web.Request) -> None:
        self.seen.append((request.headers.get("User-Agent", ""), request.query_string))

    async def submit(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"order_id": "A-17"}, status=201)

    async def allocate(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.polls += 1
        return web.json_response({"state": "allocated" if self.polls > 1 else "pending"})

    async def invoice(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=500, text="boom")

    async def order(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"state": "allocated"})

    async def delete(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=404)

    async def tracking(self, request: web.Request) -> web.Response:
        await self._record(request)
        self.tracking_polls += 1
        if self.tracking_polls > 1 and request.transport is not None:
            request.transport.abort()  # the connection drops: no status line
        return web.json_response({"state": "pending"})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/platform/api/v1/orders", self.submit)
        app.router.add_put("/platform/api/v1/orders/{id}/allocation", self.allocate)
        app.router.add_get("/platform/api/v1/orders/{id}/invoice", self.invoice)
        app.router.add_get("/platform/api/v1/orders/{id}", self.order)
        app.router.add_delete("/platform/api/v1/orders/{id}", self.delete)
        app.router.add_get("/platform/api/v1/orders/{id}/tracking", self.tracking)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    server = Shop()
    await server.start()
    yield server
    await server.stop()


def orders_journey() -> JourneyConfig:
    return JourneyConfig.model_validate(
        {
            "name": "orders",
            "timeout": "5s",
            "steps": [
                {
                    "name": "submit",
                    "method": "POST",
                    "path": "/api/v1/orders",
                    "json": {"sku": "S-1"},
                    "expect": {"status": [201]},
                    "extract": {"order_id": "$.order_id"},
                },
                {
                    "name": "allocate",
                    "method": "PUT",
                    "path": "/api/v1/orders/{{order_id}}/allocation",
                    "query": {
                        "page": "1",
                        "access_token": QUERY_TOKEN,
                        "X-Amz-Signature": QUERY_SIGNATURE,
                    },
                    "poll": {"path": "$.state", "until": "allocated", "interval": "50ms"},
                },
                {"name": "invoice", "path": "/api/v1/orders/{{order_id}}/invoice"},
            ],
            "cleanup": [
                {
                    "name": "verify",
                    "path": "/api/v1/orders/{{order_id}}",
                    "expect": {"json": [{"path": "$.state", "equals": "shipped"}]},
                },
                {
                    "name": "delete",
                    "method": "DELETE",
                    "path": "/api/v1/orders/{{order_id}}",
                    "expect": {"status": [404]},
                },
            ],
        }
    )


async def run_journey(journey: JourneyConfig, base_url: str) -> Result:
    """One real run of the journey against `base_url`, as the agent runs it."""
    async with new_session() as http:
        check = JourneyCheck(journey, site="primary", base_url=base_url)
        return await run_check(check, ProbeContext(vantage=VANTAGE, http=http))


def _without_phases(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if not k.startswith("failsight.phase.")}


async def test_step_spans_follow_the_http_client_conventions(
    shop: Shop, grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    base = f"http://shop:{USERINFO_PASSWORD}@127.0.0.1:{shop.port}/platform"
    result = await run_journey(orders_journey(), base)
    assert [(s.name, s.ok) for s in (*result.steps, *result.cleanup)] == [
        ("submit", True),
        ("allocate", True),
        ("invoice", False),
        ("verify", False),
        ("delete", True),
    ]
    # The secrets did go to the site: the spans must leave them out, not the request.
    assert f"access_token={QUERY_TOKEN}" in shop.seen[1][1]
    sink = make_sink(collector("main", grpc_receiver.endpoint, signals=["traces"]))
    sink.handle(result)
    inbox = grpc_receiver.inbox
    await wait_for(lambda: len(inbox.span_items()) == 6, "the run's six spans")
    by_name = {s.name: s for s in inbox.span_items()}
    origin = f"http://REDACTED:REDACTED@127.0.0.1:{shop.port}"
    common = {
        "failsight.run_id": result.run_id,
        "failsight.site": "primary",
        "failsight.journey": "orders",
        "url.scheme": "http",
        "server.address": "127.0.0.1",
        "server.port": shop.port,
        "network.protocol.version": "1.1",
        # What the site received.
        "user_agent.original": USER_AGENT,
        "user_agent.synthetic.type": "test",
    }
    assert {agent for agent, _ in shop.seen} == {USER_AGENT}

    submit = by_name["POST /platform/api/v1/orders"]
    assert (submit.kind, submit.status.code, submit.status.message) == (SPAN_KIND_CLIENT, 0, "")
    assert {"failsight.phase.ttfb", "failsight.phase.body"} <= set(_span_attrs(submit))
    assert _without_phases(_span_attrs(submit)) == {
        **common,
        "failsight.step": "submit",
        "failsight.cleanup": False,
        "failsight.attempts": 1,
        "http.request.method": "POST",
        "url.full": f"{origin}/platform/api/v1/orders",
        "url.template": "/platform/api/v1/orders",
        "http.response.status_code": 201,
    }

    # Polled once more: one span, the re-send counted; secret query values redacted.
    allocate = by_name["PUT /platform/api/v1/orders/{order_id}/allocation"]
    assert (allocate.kind, allocate.status.code) == (SPAN_KIND_CLIENT, 0)
    assert _without_phases(_span_attrs(allocate)) == {
        **common,
        "failsight.step": "allocate",
        "failsight.cleanup": False,
        "failsight.attempts": 2,
        "http.request.method": "PUT",
        "url.full": (
            f"{origin}/platform/api/v1/orders/A-17/allocation"
            "?page=1&access_token=REDACTED&X-Amz-Signature=REDACTED"
        ),
        "url.template": "/platform/api/v1/orders/{order_id}/allocation",
        "http.response.status_code": 200,
        "http.request.resend_count": 1,
    }

    # HTTP 500: error.type is the status code; our reason has its own attribute.
    invoice = by_name["GET /platform/api/v1/orders/{order_id}/invoice"]
    assert (invoice.kind, invoice.status.code, invoice.status.message) == (
        SPAN_KIND_CLIENT,
        2,
        "",
    )
    assert _without_phases(_span_attrs(invoice)) == {
        **common,
        "failsight.step": "invoice",
        "failsight.cleanup": False,
        "failsight.attempts": 1,
        "failsight.reason": "http_status",
        "http.request.method": "GET",
        "url.full": f"{origin}/platform/api/v1/orders/A-17/invoice",
        "url.template": "/platform/api/v1/orders/{order_id}/invoice",
        "http.response.status_code": 500,
        "error.type": "500",
    }

    # A 200 whose body fails the step's expectation: an error the status does not explain.
    verify = by_name["GET /platform/api/v1/orders/{order_id}"]
    assert (verify.status.code, verify.status.message) == (
        2,
        "$.state is 'allocated', expected 'shipped'",
    )
    verify_attrs = _span_attrs(verify)
    assert (verify_attrs["error.type"], verify_attrs["failsight.reason"]) == ("_OTHER", "assertion")
    assert (verify_attrs["failsight.cleanup"], verify_attrs["http.response.status_code"]) == (
        True,
        200,
    )

    # A 404 the step expected: the step passed, the client span is still an error (the
    # conventions' rule for 4xx), without our reason.
    delete = by_name["DELETE /platform/api/v1/orders/{order_id}"]
    assert (delete.status.code, delete.status.message) == (2, "")
    delete_attrs = _span_attrs(delete)
    assert delete_attrs["error.type"] == "404"
    assert "failsight.reason" not in delete_attrs

    root = by_name["journey orders"]
    assert (root.kind, root.status.code) == (SPAN_KIND_INTERNAL, 2)
    assert "error.type" not in _span_attrs(root)
    assert _span_attrs(root)["failsight.failed_step"] == "invoice"

    everything = str(inbox.span_items())
    for secret in (USERINFO_PASSWORD, QUERY_TOKEN, QUERY_SIGNATURE):
        assert secret not in everything


async def test_a_step_without_a_response_has_the_exception_as_error_type(
    grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens there now: the connection is refused.
    journey = JourneyConfig.model_validate(
        {"name": "refused", "steps": [{"name": "list", "path": "/api/v1/orders/{{run_id}}"}]}
    )
    result = await run_journey(journey, f"http://127.0.0.1:{port}")
    assert result.reason is Reason.CONNECT
    sink = make_sink(collector("main", grpc_receiver.endpoint, signals=["traces"]))
    sink.handle(result)
    await wait_for(lambda: len(grpc_receiver.inbox.span_items()) == 2, "the run's two spans")
    span = next(s for s in grpc_receiver.inbox.span_items() if s.name != "journey refused")
    assert span.name == "GET /api/v1/orders/{run_id}"
    assert (span.kind, span.status.code) == (SPAN_KIND_CLIENT, 2)
    # No status code to infer it from: the step's message describes the error.
    assert span.status.message == result.steps[0].message
    assert span.status.message.startswith(f"cannot connect to 127.0.0.1:{port}: ")
    # No response: no status code, no protocol version.
    assert _without_phases(_span_attrs(span)) == {
        "failsight.run_id": result.run_id,
        "failsight.site": "primary",
        "failsight.journey": "refused",
        "failsight.step": "list",
        "failsight.cleanup": False,
        "failsight.attempts": 1,
        "failsight.reason": "connect",
        "http.request.method": "GET",
        "url.full": f"http://127.0.0.1:{port}/api/v1/orders/{result.run_id}",
        "url.scheme": "http",
        "url.template": "/api/v1/orders/{run_id}",
        "server.address": "127.0.0.1",
        "server.port": port,
        "user_agent.original": USER_AGENT,
        "user_agent.synthetic.type": "test",
        "error.type": "aiohttp.client_exceptions.ClientConnectorError",
    }


async def test_a_poll_whose_last_request_got_no_response_reports_none(
    shop: Shop, grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    journey = JourneyConfig.model_validate(
        {
            "name": "tracking",
            "steps": [
                {
                    "name": "submit",
                    "method": "POST",
                    "path": "/api/v1/orders",
                    "expect": {"status": [201]},
                    "extract": {"order_id": "$.order_id"},
                },
                {
                    "name": "track",
                    "path": "/api/v1/orders/{{order_id}}/tracking",
                    "poll": {"path": "$.state", "until": "shipped", "interval": "50ms"},
                },
            ],
        }
    )
    result = await run_journey(journey, f"http://127.0.0.1:{shop.port}/platform")
    track = result.steps[1]
    # The first poll was answered 200; the second was not answered at all.
    assert (track.reason, track.attempts, track.status) == (Reason.CONNECT, 2, None)
    sink = make_sink(collector("main", grpc_receiver.endpoint, signals=["traces"]))
    sink.handle(result)
    await wait_for(lambda: len(grpc_receiver.inbox.span_items()) == 3, "the run's three spans")
    span = next(
        s
        for s in grpc_receiver.inbox.span_items()
        if s.name == "GET /platform/api/v1/orders/{order_id}/tracking"
    )
    attrs = _span_attrs(span)
    assert span.status.code == 2
    assert attrs["error.type"] == "aiohttp.client_exceptions.ServerDisconnectedError"
    assert attrs["http.request.resend_count"] == 1
    assert "http.response.status_code" not in attrs
    assert "network.protocol.version" not in attrs


# A value this test registers as a secret of the process (unique: harmless to other tests).
HELD_SECRET = f"held-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://orders.example/api/orders",
            {
                "url.full": "https://orders.example/api/orders",
                "url.scheme": "https",
                "server.address": "orders.example",
                "server.port": 443,
            },
        ),
        (
            "http://orders.example",
            {
                "url.full": "http://orders.example",
                "url.scheme": "http",
                "server.address": "orders.example",
                "server.port": 80,
            },
        ),
        (
            "http://[::1]:8080/x",
            {
                "url.full": "http://[::1]:8080/x",
                "url.scheme": "http",
                "server.address": "::1",
                "server.port": 8080,
            },
        ),
        (
            "https://user:pw@h.example:8443/x?a=1",
            {
                "url.full": "https://REDACTED:REDACTED@h.example:8443/x?a=1",
                "url.scheme": "https",
                "server.address": "h.example",
                "server.port": 8443,
            },
        ),
        (
            "https://only-a-token@h.example/x",
            {
                "url.full": "https://REDACTED:REDACTED@h.example/x",
                "url.scheme": "https",
                "server.address": "h.example",
                "server.port": 443,
            },
        ),
        ("", {}),
    ],
)
def test_url_attributes(url: str, expected: dict[str, Any]) -> None:
    assert url_attributes(url) == expected


@pytest.mark.parametrize(
    ("query", "scrubbed"),
    [
        ("page=2&q=hello&flag&a=1&a=2", "page=2&q=hello&flag&a=1&a=2"),
        ("access_token=abc&page=2", "access_token=REDACTED&page=2"),
        ("apiKey=k&api_key=k&x-api-key=k", "apiKey=REDACTED&api_key=REDACTED&x-api-key=REDACTED"),
        (
            "client_secret=s&password=p&id_token=t",
            "client_secret=REDACTED&password=REDACTED&id_token=REDACTED",
        ),
        # The conventions' list: signed cloud-storage URLs.
        (
            "AWSAccessKeyId=A&Signature=S&sig=s&X-Amz-Credential=c&X-Amz-Security-Token=t"
            "&X-Amz-Signature=s&X-Goog-Signature=g",
            "AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&X-Amz-Credential=REDACTED"
            "&X-Amz-Security-Token=REDACTED&X-Amz-Signature=REDACTED&X-Goog-Signature=REDACTED",
        ),
        ("access%5Ftoken=abc&code=c", "access%5Ftoken=REDACTED&code=REDACTED"),
    ],
)
def test_url_full_redacts_secret_looking_query_values(query: str, scrubbed: str) -> None:
    assert url_attributes(f"https://h.example/x?{query}")["url.full"] == (
        f"https://h.example/x?{scrubbed}"
    )


def test_url_full_redacts_every_secret_the_process_holds() -> None:
    REDACTOR.add(HELD_SECRET)
    assert url_attributes(f"https://h.example/orders/{HELD_SECRET}?note={HELD_SECRET}") == {
        "url.full": "https://h.example/orders/[redacted]?note=[redacted]",
        "url.scheme": "https",
        "server.address": "h.example",
        "server.port": 443,
    }


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


# -- what is built off the event loop is what the SDK would have built -------------------------


def _varied_results() -> list[Result]:
    """Results covering the span and log shapes: passed and failed journeys (a skipped step,
    a cleanup step, a URL with credentials), a step that got no response after re-sends with a
    method the conventions do not know, and a kind with one span and no site."""
    odd = journey_result(ok=False)
    first = dataclasses.replace(
        odd.steps[0],
        method="purge",
        status=None,
        ok=False,
        reason=Reason.CONNECT,
        message="connection refused",
        error_type="aiohttp.client_exceptions.ClientConnectorError",
        attempts=3,
        url="http://[::1]:8080/x?token=abc",
    )
    odd = dataclasses.replace(odd, steps=(first, *odd.steps[1:]))
    # Every step with its span id ("ship" has none: it would get a fresh random one).
    journeys = [
        dataclasses.replace(
            r,
            steps=tuple(
                dataclasses.replace(s, span_id=s.span_id or new_span_id()) for s in r.steps
            ),
        )
        for r in (journey_result(), journey_result(ok=False), odd)
    ]
    return [*journeys, replication_result(0.25)]


def _sdk_requests(results: list[Result]) -> tuple[Any, Any]:
    """The trace and log requests the OpenTelemetry SDK's own encoders make of the runs'
    spans and log records (ReadableSpan, SDK LogRecord): the reference for ours."""
    from opentelemetry import trace as trace_api
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, Status, TraceFlags

    from failsight.agent.otlp import _hex_id, _log_parts, _span_parts

    resource = Resource.create(dict(RESOURCE))
    scope = InstrumentationScope("failsight", RESOURCE["service.version"])
    sampled = TraceFlags(TraceFlags.SAMPLED)
    spans = []
    records: list[Any] = []

    class Keep:
        def export(self, batch: Any) -> LogRecordExportResult:
            records.extend(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(Keep()))  # type: ignore[arg-type]
    logger = provider.get_logger("failsight.run", RESOURCE["service.version"])
    for result in results:
        trace_id, root_id = _hex_id(result.trace_id, 32), _hex_id(result.span_id, 16)
        root = SpanContext(trace_id, root_id, False, sampled)
        for part in _span_parts(result, root_id):
            spans.append(
                ReadableSpan(
                    name=part.name,
                    context=SpanContext(trace_id, part.span_id, False, sampled),
                    parent=None if part.parent_id is None else root,
                    resource=resource,
                    attributes=part.attributes,
                    kind=part.kind,
                    status=Status(part.status, part.description),
                    start_time=part.start,
                    end_time=part.end,
                    instrumentation_scope=scope,
                )
            )
        body, attrs = _log_parts(result)
        logger.emit(
            LogRecord(
                timestamp=int((result.started_at + result.duration) * 1e9),
                observed_timestamp=1234,
                context=trace_api.set_span_in_context(trace_api.NonRecordingSpan(root)),
                severity_number=SeverityNumber.INFO if result.ok else SeverityNumber.WARN,
                severity_text="INFO" if result.ok else "WARN",
                body=body,
                attributes=attrs,
            )
        )
    return encode_spans(spans), encode_logs(records)


def test_spans_and_log_records_are_encoded_as_the_sdk_encodes_them() -> None:
    """The exporter threads write the OTLP requests themselves: parsed, each is the message
    the SDK's encoders make of the same spans and log records, field for field."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.resources import Resource

    from failsight.agent.otlp import (
        _encode_resource,
        _Encoder,
        _hex_id,
        _log_items,
        _Run,
        _scope_bytes,
        _span_count,
        _span_items,
    )

    results = _varied_results()
    version = RESOURCE["service.version"]
    resource = _encode_resource(Resource.create(dict(RESOURCE)))
    spans = _Encoder(resource, _scope_bytes("failsight", version), _span_items)
    logs = _Encoder(resource, _scope_bytes("failsight.run", version), _log_items)

    def run(result: Result, items: int) -> _Run:
        ids = _hex_id(result.trace_id, 32), _hex_id(result.span_id, 16)
        return _Run(result, *ids, 1234, items)

    ours_spans = ExportTraceServiceRequest.FromString(
        spans.encode([run(r, _span_count(r)) for r in results])
    )
    ours_logs = ExportLogsServiceRequest.FromString(logs.encode([run(r, 1) for r in results]))
    # The replication run has no trace id: a fresh random one each time, compared apart.
    journeys = results[:3]
    sdk_spans, sdk_logs = _sdk_requests(journeys)
    tail = len(ours_spans.resource_spans[0].scope_spans[0].spans) - 1
    assert _span_count(results[3]) == 1
    lone = ours_spans.resource_spans[0].scope_spans[0].spans[tail]
    assert lone.name == "replication orders-db" and len(lone.trace_id) == 16
    del ours_spans.resource_spans[0].scope_spans[0].spans[tail]
    assert ours_spans == sdk_spans
    del ours_logs.resource_logs[0].scope_logs[0].log_records[3]
    assert ours_logs == sdk_logs
    # A run's spans are encoded once, whichever collector's pipeline asks first: a step
    # without a span id (fresh random) has the same one on every collector.
    shared = run(journey_result(), 5)
    assert spans.encode([shared]) == spans.encode([shared])


async def test_metrics_are_aggregated_as_the_sdk_aggregates_them(
    grpc_receiver: GrpcReceiver, make_sink: SinkFactory
) -> None:
    """Histograms and counters over several results, as a real collector receives them: the
    same points (count, sum, min, max, buckets and their bounds, temporality, attributes) as
    the SDK's own aggregation of the same observations; counters summed per series."""
    from opentelemetry.sdk.metrics import Histogram as SdkHistogram
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    from failsight.agent.metrics import increments_of

    results = [journey_result() for _ in range(4)] + [journey_result(ok=False) for _ in range(3)]
    results += [journey_result(site="gcp-euw1")]
    sink = make_sink(collector("main", grpc_receiver.endpoint, export_interval="1h"))
    for result in results:
        sink.handle(result)
    await asyncio.to_thread(sink.close, 5.0)  # the last collection: one metrics request

    reader = InMemoryMetricReader()
    histograms = [s for s in CATALOGUE.values() if s.type is MetricType.HISTOGRAM]
    views = [
        View(
            instrument_type=SdkHistogram,
            instrument_name=s.otel_name,
            aggregation=ExplicitBucketHistogramAggregation(boundaries=s.buckets),
        )
        for s in histograms
    ]
    meter = MeterProvider(metric_readers=[reader], views=views).get_meter("reference")
    instruments: dict[str, Any] = {}
    for sample in (s for r in results for s in increments_of(r)):
        spec = sample.spec
        if spec.name not in instruments:
            make = (
                meter.create_histogram
                if spec.type is MetricType.HISTOGRAM
                else (meter.create_counter)
            )
            instruments[spec.name] = make(spec.otel_name, unit=spec.unit)
        record = getattr(instruments[spec.name], "record", None) or instruments[spec.name].add
        record(sample.value, {**dict(sample.labels), "vantage": VANTAGE})
    reference = reader.get_metrics_data()
    assert reference is not None
    expected: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    for metric in reference.resource_metrics[0].scope_metrics[0].metrics:
        points: list[Any] = list(metric.data.data_points)
        for p in points:
            attrs = tuple(sorted(dict(p.attributes or {}).items()))
            if metric.name in {s.otel_name for s in histograms}:
                value: Any = (
                    p.count,
                    p.sum,
                    p.min,
                    p.max,
                    list(p.bucket_counts),
                    list(p.explicit_bounds),
                )
            else:
                value = p.value
            expected[(metric.name, attrs)] = value

    assert len(grpc_receiver.inbox.metric_requests) == 1
    got: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    for received in grpc_receiver.inbox.metrics():
        metric = received.item
        kind = metric.WhichOneof("data")
        if metric.name not in {
            s.otel_name for s in CATALOGUE.values() if s.type is not MetricType.GAUGE
        }:
            continue
        if metric.name == "failsight.telemetry_exports":
            continue
        spec = next(s for s in CATALOGUE.values() if s.otel_name == metric.name)
        assert metric.unit == spec.unit and metric.description == spec.help
        data = getattr(metric, kind)
        assert data.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
        for p in data.data_points:
            attrs = tuple(sorted(_point_attrs(p).items()))
            assert p.exemplars == []  # none before either: nothing recorded in a span's context
            if kind == "histogram":
                got[(metric.name, attrs)] = (
                    p.count,
                    p.sum,
                    p.min,
                    p.max,
                    list(p.bucket_counts),
                    list(p.explicit_bounds),
                )
            else:
                assert data.is_monotonic
                got[(metric.name, attrs)] = point_value(p)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_runs") or key[0].endswith("_failures"):
            assert got[key] == value, key
        else:  # float sums: the same observations, added in the same order
            assert got[key][0] == value[0] and got[key][2:] == value[2:], key
            assert got[key][1] == pytest.approx(value[1]), key
    runs = {k[1]: v for k, v in got.items() if k[0] == "failsight.journey_runs"}
    assert sorted(runs.values()) == [1.0, 3.0, 4.0]


async def test_delta_temporality_sends_each_interval_alone(
    grpc_receiver: GrpcReceiver, make_sink: SinkFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the OTLP exporter's delta preference (its standard environment variable), each
    histogram point holds only its interval's observations, as the SDK's would."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    sink = make_sink(collector("main", grpc_receiver.endpoint))
    inbox = grpc_receiver.inbox

    def counts() -> list[int]:
        return [
            int(p.count)
            for m in inbox.metrics("failsight.journey_duration")
            for p in m.item.histogram.data_points
            if m.item.histogram.aggregation_temporality == 1  # DELTA
        ]

    for _ in range(3):
        sink.handle(journey_result())
    await wait_for(lambda: 3 in counts(), "the first interval's three runs")
    sink.handle(journey_result())
    await wait_for(lambda: 1 in counts(), "the next interval's one run")
    assert 4 not in counts()
