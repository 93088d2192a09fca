"""The OTLP path: results pushed as metrics, traces and logs; one pipeline per collector."""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
import requests
from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from failsight.agent.logs import result_fields
from failsight.agent.metrics import CATALOGUE, gauges_of, increments_of
from failsight.agent.otlp_config import VANTAGE_ATTRIBUTE, OtlpCollectorConfig, Signal
from failsight.core.redact import redact, scrub_url
from failsight.core.results import Reason, Result, StepResult
from failsight.core.telemetry import MetricSpec, MetricType, Sample

log = logging.getLogger(__name__)


# Increments waiting for the next metrics collection, per collector (a stuck reader thread
# must not grow memory without bound).
MAX_PENDING_SAMPLES = 200_000
# Spans and log records are sent at least this often, whatever the metrics interval.
MAX_BATCH_DELAY = 5.0
MAX_EXPORT_BATCH = 512
# Share of close()'s budget given to a last, orderly flush before exports are cut short.
FLUSH_SHARE = 0.5


_EXPORTS_SPEC = CATALOGUE["telemetry_exports_total"]


class ExportCounts:
    """Exports per (path, result), written from exporter threads and read by /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def declare(self, path: str, results: Iterable[str]) -> None:
        # Series start at zero so a rate() over them exists before the first failure.
        with self._lock:
            for result in results:
                self._counts.setdefault((path, result), 0)

    def add(self, path: str, result: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(path, result)] = self._counts.get((path, result), 0) + n

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


class _QueueGate:
    """Bounds what one batch processor holds, and knows when it would have to drop.

    The SDK's batch processors drop the oldest item silently when their queue is full. The
    gate counts items handed to the processor and items the processor handed to the exporter
    (the exporter wrapper reports them): the difference bounds the processor's queue from
    above, so refusing at `capacity` means the SDK never drops behind our back, and our own
    refusals are counted.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._accepted = 0
        self._taken = 0

    def try_accept(self, n: int) -> bool:
        with self._lock:
            if self._accepted - self._taken + n > self.capacity:
                return False
            self._accepted += n
            return True

    def taken(self, n: int) -> None:
        with self._lock:
            self._taken += n

    @property
    def pending(self) -> int:
        with self._lock:
            return self._accepted - self._taken

    def drain(self) -> int:
        """Write off what the processor still holds; returns how many items that was."""
        with self._lock:
            lost = self._accepted - self._taken
            self._taken = self._accepted
            return lost


class _Outcome:
    """Counting and the abort switch shared by the three exporter wrappers."""

    def __init__(self, path: str, counts: ExportCounts, stop: Callable[[], None]) -> None:
        self.path = path
        self.counts = counts
        self.aborted = False
        self._stop = stop
        self._stopped = False
        self._lock = threading.Lock()

    def record(self, ok: bool) -> None:
        self.counts.add(self.path, "success" if ok else "failure")

    def stop(self) -> None:
        """Shut the SDK exporter down once: interrupts retry back-off, closes gRPC channels."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        try:
            self._stop()
        except Exception:
            log.exception("shutting down the exporter of %s failed", self.path)

    def abort(self) -> None:
        self.aborted = True
        self.stop()


class _CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, outcome: _Outcome, gate: _QueueGate) -> None:
        self.inner = inner
        self.outcome = outcome
        self.gate = gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.gate.taken(len(spans))
        if self.outcome.aborted:
            self.outcome.counts.add(self.outcome.path, "dropped", len(spans))
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception:
            log.exception("exporting spans on %s failed", self.outcome.path)
            result = SpanExportResult.FAILURE
        self.outcome.record(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.outcome.stop()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _CountingLogExporter(LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, outcome: _Outcome, gate: _QueueGate) -> None:
        self.inner = inner
        self.outcome = outcome
        self.gate = gate

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.gate.taken(len(batch))
        if self.outcome.aborted:
            self.outcome.counts.add(self.outcome.path, "dropped", len(batch))
            return LogRecordExportResult.FAILURE
        try:
            result = self.inner.export(batch)
        except Exception:
            log.exception("exporting log records on %s failed", self.outcome.path)
            result = LogRecordExportResult.FAILURE
        self.outcome.record(result is LogRecordExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self.outcome.stop()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _CountingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, outcome: _Outcome) -> None:
        # The reader takes temporality and aggregation preferences from its exporter.
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.outcome = outcome

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self.outcome.aborted:
            return MetricExportResult.FAILURE
        try:
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis)
        except Exception:
            log.exception("exporting metrics on %s failed", self.outcome.path)
            result = MetricExportResult.FAILURE
        self.outcome.record(result is MetricExportResult.SUCCESS)
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.outcome.stop()


class _GaugeStore:
    """The latest gauge samples, by owner (a check name, or a key of the caller's), read at
    each metrics collection by every collector's observable gauges."""

    def __init__(self, vantage: str) -> None:
        self.vantage = vantage
        self._lock = threading.Lock()
        self._by_owner: dict[str, dict[str, list[Sample]]] = {}

    def replace(self, owner: str, samples: Iterable[Sample]) -> None:
        by_spec: dict[str, list[Sample]] = {}
        for sample in samples:
            # Only gauges have an observable instrument here; anything else is not ours to show.
            if sample.spec.type is MetricType.GAUGE:
                by_spec.setdefault(sample.spec.name, []).append(sample)
        with self._lock:
            self._by_owner[owner] = by_spec

    def forget(self, owner: str) -> None:
        with self._lock:
            self._by_owner.pop(owner, None)

    def callback(self, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                samples = [s for by in self._by_owner.values() for s in by.get(spec.name, ())]
            return [Observation(s.value, _attributes(s, self.vantage)) for s in samples]

        return observe


def _attributes(sample: Sample, vantage: str) -> dict[str, str]:
    return {**dict(sample.labels), "vantage": vantage}


class _MetricsPipeline:
    """One collector's metrics: its own MeterProvider, reader thread and exporter."""

    def __init__(
        self,
        config: OtlpCollectorConfig,
        resource: Resource,
        gauges: _GaugeStore,
        counts: ExportCounts,
        version: str,
    ) -> None:
        self.path = config.path("metrics")
        self.vantage = gauges.vantage
        counts.declare(self.path, ("success", "failure"))
        inner = _metric_exporter(config)
        self.outcome = _Outcome(self.path, counts, lambda: inner.shutdown(timeout_millis=0))
        reader = PeriodicExportingMetricReader(
            _CountingMetricExporter(inner, self.outcome),
            export_interval_millis=config.export_interval * 1000,
            export_timeout_millis=config.timeout * 1000,
        )
        self.provider = MeterProvider(
            metric_readers=[reader],
            resource=resource,
            shutdown_on_exit=False,
            # Each histogram with the buckets its family declares, as /metrics has them.
            views=[
                View(
                    instrument_type=SdkHistogram,
                    instrument_name=spec.otel_name,
                    aggregation=ExplicitBucketHistogramAggregation(boundaries=spec.buckets),
                )
                for spec in CATALOGUE.values()
                if spec.type is MetricType.HISTOGRAM
            ],
        )
        meter = self.provider.get_meter("failsight", version)
        # Increments wait here for the reader thread: recording into SDK instruments hashes
        # and cleans attributes per measurement, too costly for the event loop (see record()).
        self._pending: collections.deque[Sample] = collections.deque(maxlen=MAX_PENDING_SAMPLES)
        self.counters: dict[str, Counter] = {}
        self.histograms: dict[str, Histogram] = {}
        for spec in CATALOGUE.values():
            if spec is _EXPORTS_SPEC:
                meter.create_observable_counter(
                    spec.otel_name,
                    callbacks=[self._observe_exports(counts)],
                    unit=spec.unit,
                    description=spec.help,
                )
            elif spec.type is MetricType.GAUGE:
                meter.create_observable_gauge(
                    spec.otel_name,
                    callbacks=[gauges.callback(spec)],
                    unit=spec.unit,
                    description=spec.help,
                )
            elif spec.type is MetricType.COUNTER:
                self.counters[spec.name] = meter.create_counter(
                    spec.otel_name, unit=spec.unit, description=spec.help
                )
            else:
                self.histograms[spec.name] = meter.create_histogram(
                    spec.otel_name, unit=spec.unit, description=spec.help
                )

    def _observe_exports(
        self, counts: ExportCounts
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            # The SDK runs observable callbacks at each collection, on the reader thread,
            # before it reads the synchronous instruments: the moment to record what waits.
            self._drain()
            return [
                Observation(n, {"path": path, "result": result, "vantage": self.vantage})
                for (path, result), n in counts.snapshot().items()
            ]

        return observe

    def record(self, increments: Iterable[Sample]) -> None:
        """Queue increments (event loop; cheap). Past MAX_PENDING_SAMPLES, the oldest go."""
        self._pending.extend(increments)

    def _drain(self) -> None:
        """Record what waits into the SDK instruments (reader thread). Counter increments are
        summed per series first: one SDK call per series and collection, not per run."""
        sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        while True:
            try:
                sample = self._pending.popleft()
            except IndexError:
                break
            if sample.spec.type is MetricType.HISTOGRAM:
                self.histograms[sample.spec.name].record(
                    sample.value, _attributes(sample, self.vantage)
                )
            else:
                key = (sample.spec.name, sample.labels)
                sums[key] = sums.get(key, 0.0) + sample.value
        for (name, labels), value in sums.items():
            self.counters[name].add(value, {**dict(labels), "vantage": self.vantage})

    def shutdown(self, budget: float) -> None:
        self.provider.shutdown(timeout_millis=budget * 1000)

    def abort(self) -> None:
        self.outcome.abort()


class _SpanPipeline:
    """One collector's traces: a bounded BatchSpanProcessor (its own worker thread)."""

    def __init__(self, config: OtlpCollectorConfig, counts: ExportCounts) -> None:
        self.path = config.path("traces")
        self.counts = counts
        counts.declare(self.path, ("success", "failure", "dropped"))
        inner = _span_exporter(config)
        self.outcome = _Outcome(self.path, counts, inner.shutdown)
        self.gate = _QueueGate(config.max_queue_size)
        self.processor = BatchSpanProcessor(
            _CountingSpanExporter(inner, self.outcome, self.gate),
            max_queue_size=config.max_queue_size,
            schedule_delay_millis=_batch_delay(config) * 1000,
            max_export_batch_size=min(MAX_EXPORT_BATCH, config.max_queue_size),
            export_timeout_millis=config.timeout * 1000,
        )

    def offer(self, spans: Sequence[ReadableSpan]) -> None:
        # A run's spans go together or not at all: a trace with holes misleads more than none.
        if not self.gate.try_accept(len(spans)):
            self.counts.add(self.path, "dropped", len(spans))
            return
        for span in spans:
            self.processor.on_end(span)

    def shutdown(self, budget: float) -> None:
        self.processor.shutdown()  # type: ignore[no-untyped-call]

    def abort(self) -> None:
        self.outcome.abort()


class _LogPipeline:
    """One collector's run logs: its own LoggerProvider with a bounded batch processor."""

    def __init__(
        self, config: OtlpCollectorConfig, resource: Resource, counts: ExportCounts, version: str
    ) -> None:
        self.path = config.path("logs")
        self.counts = counts
        counts.declare(self.path, ("success", "failure", "dropped"))
        inner = _log_exporter(config)
        self.outcome = _Outcome(self.path, counts, inner.shutdown)
        self.gate = _QueueGate(config.max_queue_size)
        self.provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _CountingLogExporter(inner, self.outcome, self.gate),
                schedule_delay_millis=_batch_delay(config) * 1000,
                max_export_batch_size=min(MAX_EXPORT_BATCH, config.max_queue_size),
                export_timeout_millis=config.timeout * 1000,
                max_queue_size=config.max_queue_size,
            )
        )
        self.logger = self.provider.get_logger("failsight.run", version)

    def offer(self, make: Callable[[], LogRecord]) -> None:
        if not self.gate.try_accept(1):
            self.counts.add(self.path, "dropped")
            return
        self.logger.emit(make())

    def shutdown(self, budget: float) -> None:
        self.provider.shutdown()

    def abort(self) -> None:
        self.outcome.abort()


_Pipeline = _MetricsPipeline | _SpanPipeline | _LogPipeline


class OtlpSink:
    """Takes results on the event loop and pushes them to every configured collector.

    `handle` does only cheap, non-blocking work: instrument updates and appends to bounded
    queues. Each collector has its own pipelines (metric reader thread, span and log batch
    worker threads, exporters), so a dead, slow or black-holing collector costs counted
    failures and drops on its own paths and nothing anywhere else.
    """

    name = "otlp"

    def __init__(
        self,
        collectors: Sequence[OtlpCollectorConfig],
        *,
        resource: Mapping[str, str],
        logs_over_otlp: bool,
    ) -> None:
        names = [c.name for c in collectors]
        if len(set(names)) != len(names):
            raise ValueError("OTLP collector names must be unique")
        if VANTAGE_ATTRIBUTE not in resource:
            raise ValueError(f"the resource must carry {VANTAGE_ATTRIBUTE}")
        self.vantage = resource[VANTAGE_ATTRIBUTE]
        self.version = resource.get("service.version", "")
        self.resource = Resource.create(dict(resource))
        self._scope = InstrumentationScope("failsight", self.version)
        self._counts = ExportCounts()
        self._gauges = _GaugeStore(self.vantage)
        self._closed = False
        self._metrics: list[_MetricsPipeline] = []
        self._traces: list[_SpanPipeline] = []
        self._logs: list[_LogPipeline] = []
        for config in collectors:
            if "metrics" in config.signals:
                self._metrics.append(
                    _MetricsPipeline(
                        config, self.resource, self._gauges, self._counts, self.version
                    )
                )
            if "traces" in config.signals:
                self._traces.append(_SpanPipeline(config, self._counts))
            if "logs" in config.signals and logs_over_otlp:
                self._logs.append(_LogPipeline(config, self.resource, self._counts, self.version))

    # -- the event loop side -----------------------------------------------------------------

    def handle(self, result: Result) -> None:
        if self._closed or result.skipped:
            return
        self._gauges.replace(result.check, gauges_of(result))
        if self._metrics:
            increments = increments_of(result)
            for metrics in self._metrics:
                metrics.record(increments)
        if not (self._traces or self._logs):
            return
        root = SpanContext(
            _hex_id(result.trace_id, 32), _hex_id(result.span_id, 16), False, _SAMPLED
        )
        if self._traces:
            spans = spans_of(result, root, self.resource, self._scope)
            for traces in self._traces:
                traces.offer(spans)
        for logs in self._logs:
            logs.offer(lambda: _log_record(result, root))

    def replace_gauges(self, owner: str, samples: Iterable[Sample]) -> None:
        """Set gauges that do not come from results (views, verdicts, agent info): `samples`
        replace, as a set, those given before under the same `owner`."""
        samples = list(samples)
        for sample in samples:
            if sample.spec.type is not MetricType.GAUGE:
                raise ValueError(f"{sample.spec.name} is a {sample.spec.type}, not a gauge")
        self._gauges.replace(owner, samples)

    def forget_check(self, check_name: str) -> None:
        """Drop a check's gauges (the check was removed by a reload)."""
        self._gauges.forget(check_name)

    def export_counts(self) -> dict[tuple[str, str], int]:
        """(path, result) -> exports so far; result is success, failure or dropped (items)."""
        return self._counts.snapshot()

    def queued(self) -> dict[str, int]:
        """Spans or log records waiting to be exported, per path (each ≤ max_queue_size)."""
        batched: list[_SpanPipeline | _LogPipeline] = [*self._traces, *self._logs]
        return {p.path: p.gate.pending for p in batched}

    # -- shutdown ------------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Flush and stop every pipeline; blocking, and returns within about `timeout` seconds.

        All pipelines shut down in parallel. For the first half of the budget they flush in
        order; then any still busy (a dead or black-holing collector) has its exporter shut
        down, which interrupts retry back-off and cancels gRPC calls, and what is left is
        counted as dropped. An OTLP/HTTP request already on the wire cannot be interrupted:
        its thread is a daemon and ends at its own export timeout, after close() returned.
        """
        if self._closed:
            return
        self._closed = True
        start = time.monotonic()
        deadline = start + timeout
        flush_by = start + timeout * FLUSH_SHARE
        pipelines: list[_Pipeline] = [*self._metrics, *self._traces, *self._logs]
        threads = []
        for pipeline in pipelines:
            thread = threading.Thread(
                target=_shutdown_quietly,
                args=(pipeline, timeout * FLUSH_SHARE),
                name=f"failsight-close-{pipeline.path}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(max(0.0, flush_by - time.monotonic()))
        for pipeline, thread in zip(pipelines, threads, strict=True):
            if thread.is_alive():
                log.warning("%s did not flush in time; cutting its exports short", pipeline.path)
                pipeline.abort()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for pipeline, thread in zip(pipelines, threads, strict=True):
            if thread.is_alive():
                log.warning("%s still exporting at shutdown; left to time out", pipeline.path)
            elif not isinstance(pipeline, _MetricsPipeline) and (lost := pipeline.gate.drain()):
                # What the processor still held when its worker stopped is lost.
                self._counts.add(pipeline.path, "dropped", lost)


def _shutdown_quietly(pipeline: _Pipeline, budget: float) -> None:
    try:
        pipeline.shutdown(budget)
    except Exception:
        log.exception("shutting down %s failed", pipeline.path)


def _batch_delay(config: OtlpCollectorConfig) -> float:
    return min(config.export_interval, MAX_BATCH_DELAY)


# -- exporters -------------------------------------------------------------------------------

# A restarted collector is reached again within seconds, not gRPC's default two minutes.
_GRPC_CHANNEL_OPTIONS: Any = (
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 5000),
)


def _headers(config: OtlpCollectorConfig) -> dict[str, str]:
    # gRPC metadata keys must be lower case; HTTP header names are case-insensitive.
    return {k.lower(): v.get_secret_value() for k, v in config.headers.items()}


def _grpc_kwargs(config: OtlpCollectorConfig) -> dict[str, Any]:
    credentials = None
    if not config.plaintext:
        root = None
        if config.ca_file is not None:
            with open(config.ca_file, "rb") as f:
                root = f.read()
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
    return {
        "endpoint": config.grpc_target,
        "insecure": config.plaintext,
        "credentials": credentials,
        "headers": tuple(_headers(config).items()),
        "timeout": config.timeout,
        "channel_options": _GRPC_CHANNEL_OPTIONS,
    }


class _CaFileSession(requests.Session):
    """A requests session that keeps the CA file it was given.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment override a session's
    `verify` (psf/requests#3829), which would silently replace the configured `ca_file`.
    """

    def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        settings: dict[str, Any] = super().merge_environment_settings(*args, **kwargs)
        settings["verify"] = self.verify
        return settings


def _http_kwargs(config: OtlpCollectorConfig, signal: Signal) -> dict[str, Any]:
    return {
        "endpoint": config.signal_url(signal),
        "certificate_file": config.ca_file,
        "session": _CaFileSession() if config.ca_file is not None else None,
        "headers": _headers(config),
        "timeout": config.timeout,
    }


def _metric_exporter(config: OtlpCollectorConfig) -> MetricExporter:
    if config.protocol == "grpc":
        return GrpcMetricExporter(**_grpc_kwargs(config))
    return HttpMetricExporter(**_http_kwargs(config, "metrics"))


def _span_exporter(config: OtlpCollectorConfig) -> SpanExporter:
    if config.protocol == "grpc":
        return GrpcSpanExporter(**_grpc_kwargs(config))
    return HttpSpanExporter(**_http_kwargs(config, "traces"))


def _log_exporter(config: OtlpCollectorConfig) -> LogRecordExporter:
    if config.protocol == "grpc":
        return GrpcLogExporter(**_grpc_kwargs(config))
    return HttpLogExporter(**_http_kwargs(config, "logs"))


# -- results as spans and log records --------------------------------------------------------

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _hex_id(value: str, digits: int) -> int:
    """The id a probe put in `traceparent`; a fresh random one when the run has none."""
    if len(value) == digits:
        try:
            parsed = int(value, 16)
        except ValueError:
            parsed = 0
        if parsed:
            return parsed
    return int(secrets.token_hex(digits // 2), 16) or 1


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def spans_of(
    result: Result, root: SpanContext, resource: Resource, scope: InstrumentationScope
) -> list[ReadableSpan]:
    """The spans of one run, root first, under the run's `root` context: the exact ids the
    probe sent to the target in `traceparent`.

    A journey run is an INTERNAL root span `journey <journey>` with one CLIENT child per step
    and per cleanup step (`_step_span`); any other kind is a single INTERNAL span
    `<kind> <target>`. The root's attributes are ours, under `failsight.`; a failed run's
    reason is `failsight.reason` (`error.type` is for the HTTP spans, where the conventions
    define it).
    """
    common: dict[str, str | bool] = {"failsight.run_id": result.run_id}
    if result.site is not None:
        common["failsight.site"] = result.site
    attributes: dict[str, str | bool | float] = {
        **common,
        "failsight.check": result.check,
        "failsight.kind": result.kind,
        "failsight.target": result.target,
        "failsight.critical": result.critical,
    }
    if result.kind == "journey":
        common["failsight.journey"] = result.target
        attributes["failsight.journey"] = result.target
        name = f"journey {result.target}"
    else:
        name = f"{result.kind} {result.target}"
    failed = result.failed_step
    if failed is not None:
        attributes["failsight.failed_step"] = failed.name
    status = Status(StatusCode.UNSET)
    if not result.ok:
        reason = result.reason.value if result.reason else "internal"
        attributes["failsight.reason"] = reason
        status = Status(StatusCode.ERROR, result.message or reason)
    spans = [
        ReadableSpan(
            name=name,
            context=root,
            resource=resource,
            attributes=attributes,
            kind=SpanKind.INTERNAL,
            status=status,
            start_time=_ns(result.started_at),
            end_time=_ns(result.started_at + result.duration),
            instrumentation_scope=scope,
        )
    ]
    for cleanup, steps in ((False, result.steps), (True, result.cleanup)):
        for step in steps:
            if not step.skipped:
                spans.append(_step_span(step, cleanup, result, root, common, resource, scope))
    return spans


# The methods the HTTP conventions know; any other is reported as `_OTHER` (the config only
# allows known ones, this keeps the span name's cardinality bounded whatever comes).
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
# Failures that are the response's status itself: the span's status code says it all, and the
# conventions ask for no status description then.
_STATUS_REASONS = frozenset({Reason.HTTP_STATUS, Reason.AUTH})


def _step_span(
    step: StepResult,
    cleanup: bool,
    result: Result,
    root: SpanContext,
    common: Mapping[str, str | bool],
    resource: Resource,
    scope: InstrumentationScope,
) -> ReadableSpan:
    """A step as an HTTP client span, per the stable OpenTelemetry HTTP client conventions:
    named `{http.request.method} {url.template}`, kind CLIENT, the request's attributes as
    the last attempt sent it (a polled step is one span, `http.request.resend_count` its
    re-sends), `user_agent.synthetic.type=test`, and `error.type`: the status code for a
    4xx/5xx response (span status ERROR even when the step expected it, as the conventions
    require of client spans), the exception's class when no response came, `_OTHER` for a
    step that failed otherwise (an assertion, an extraction, a poll that never saw its
    state); `failsight.reason` says which."""
    method = step.method.upper()
    attributes: dict[str, str | bool | int | float] = {
        **common,
        "failsight.step": step.name,
        "failsight.cleanup": cleanup,
        "failsight.attempts": step.attempts,
        "user_agent.synthetic.type": "test",
    }
    if method:
        attributes["http.request.method"] = method if method in _KNOWN_METHODS else "_OTHER"
        if method not in _KNOWN_METHODS:
            attributes["http.request.method_original"] = step.method
    attributes.update(url_attributes(step.url))
    if step.url_template:
        attributes["url.template"] = step.url_template
    if step.status is not None:
        attributes["http.response.status_code"] = step.status
    if step.attempts > 1:
        attributes["http.request.resend_count"] = step.attempts - 1
    if step.http_version:
        attributes["network.protocol.version"] = step.http_version
    if step.user_agent:
        attributes["user_agent.original"] = redact(step.user_agent)
    for phase, seconds in step.phases.items():
        attributes[f"failsight.phase.{phase}"] = seconds
    status = Status(StatusCode.UNSET)
    error = _error_type(step)
    if error is not None:
        attributes["error.type"] = error
        described = not step.ok and not (
            step.reason in _STATUS_REASONS and error == str(step.status)
        )
        status = Status(StatusCode.ERROR, step.message if described else None)
    if not step.ok:
        attributes["failsight.reason"] = step.reason.value if step.reason else "internal"
    start = result.started_at + step.start_offset
    # `{method} {url.template}`, or `{method}` alone without a template; `HTTP` for a method
    # the conventions do not know.
    label = method if method in _KNOWN_METHODS else "HTTP"
    return ReadableSpan(
        name=f"{label} {step.url_template}" if step.url_template else label,
        context=SpanContext(root.trace_id, _hex_id(step.span_id, 16), False, _SAMPLED),
        parent=root,
        resource=resource,
        attributes=attributes,
        kind=SpanKind.CLIENT,
        status=status,
        start_time=_ns(start),
        end_time=_ns(start + step.duration),
        instrumentation_scope=scope,
    )


def _error_type(step: StepResult) -> str | None:
    """`error.type` of a step's span; None when the request succeeded."""
    if step.error_type:
        return step.error_type  # the last attempt ended in an exception, not a response
    if step.status is not None and step.status >= 400:
        return str(step.status)
    return None if step.ok else "_OTHER"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_attributes(url: str) -> dict[str, str | int]:
    """`url.full`, `url.scheme`, `server.address` and `server.port` of a step's URL.

    `url.full` is scrubbed as the conventions ask: user and password become
    `REDACTED:REDACTED`, the values of secret-looking query parameters `REDACTED`, and any
    secret the process holds (a token pasted into a path) `[redacted]`. `server.port` is
    always set (the conventions require it), the scheme's default when the URL names none.
    """
    if not url:
        return {}
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL we can take apart: only what redaction by value leaves
        return {"url.full": redact(url)}
    out: dict[str, str | int] = {"url.full": redact(scrub_url(url))}
    if parts.scheme:
        out["url.scheme"] = parts.scheme
    if parts.hostname:
        out["server.address"] = parts.hostname
    port = port if port is not None else _DEFAULT_PORTS.get(parts.scheme)
    if port is not None:
        out["server.port"] = port
    return out


def _log_record(result: Result, root: SpanContext) -> LogRecord:
    fields = result_fields(result)
    attributes = {
        f"failsight.{key}": value
        for key, value in fields.items()
        if value is not None and key != "trace_id"
    }
    body = f"{result.check} {fields['outcome']}"
    if result.reason is not None:
        body += f" ({result.reason.value})"
    context = trace_api.set_span_in_context(trace_api.NonRecordingSpan(root))
    return LogRecord(
        timestamp=_ns(result.started_at + result.duration),
        context=context,
        severity_number=SeverityNumber.INFO if result.ok else SeverityNumber.WARN,
        severity_text="INFO" if result.ok else "WARN",
        body=body,
        attributes=attributes,
    )
