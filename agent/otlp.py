"""The OTLP path: results pushed as metrics, traces and logs; one pipeline per collector."""

from __future__ import annotations

import collections
import functools
import logging
import secrets
import struct
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import grpc
import requests
from opentelemetry._logs import SeverityNumber
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
from opentelemetry.metrics import CallbackOptions, Counter, Observation
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

from failsight.agent.logs import result_fields
from failsight.agent.metrics import CATALOGUE, gauges_of, increments_of
from failsight.agent.otlp_config import VANTAGE_ATTRIBUTE, OtlpCollectorConfig, Signal
from failsight.core.redact import redact, scrub_url
from failsight.core.results import Reason, Result, StepResult
from failsight.core.telemetry import MetricSpec, MetricType, Sample

log = logging.getLogger(__name__)


# Results waiting for the next metrics collection, per collector (a stuck reader thread must
# not grow memory without bound).
MAX_PENDING_RESULTS = 10_000
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
    """Bounds what one batch queue holds, in spans or log records.

    The gate counts items queued and items the worker took for export: refusing at
    `capacity` is the queue's bound, and every refusal is counted as dropped.
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
            # Never past what was accepted: drain() may have written these off already.
            self._taken = min(self._taken + n, self._accepted)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._accepted - self._taken

    def drain(self) -> int:
        """Write off what the queue still holds; returns how many items that was."""
        with self._lock:
            lost = self._accepted - self._taken
            self._taken = self._accepted
            return lost


class _Outcome:
    """Counting and the abort switch of one path's exporter."""

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


class _CountingMetricExporter(MetricExporter):
    """Counts metric exports, and adds the histograms the pipeline aggregates itself to what
    the SDK collected (the SDK holds no histogram instrument: see _HistogramSeries)."""

    def __init__(
        self,
        inner: MetricExporter,
        outcome: _Outcome,
        histograms: Callable[[], list[Metric]],
        resource: Resource,
        scope: InstrumentationScope,
    ) -> None:
        # The reader takes temporality and aggregation preferences from its exporter.
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.outcome = outcome
        self.histograms = histograms
        self.resource = resource
        self.scope = scope

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self.outcome.aborted:
            return MetricExportResult.FAILURE
        try:
            result = self.inner.export(
                self._with_histograms(metrics_data), timeout_millis=timeout_millis
            )
        except Exception:
            log.exception("exporting metrics on %s failed", self.outcome.path)
            result = MetricExportResult.FAILURE
        self.outcome.record(result is MetricExportResult.SUCCESS)
        return result

    def _with_histograms(self, data: MetricsData) -> MetricsData:
        histograms = self.histograms()
        if not histograms:
            return data
        resources = list(data.resource_metrics)
        if not resources:
            return MetricsData([ResourceMetrics(self.resource, [self._scoped(histograms)], "")])
        # One provider, one resource, one meter: the histograms join the meter's scope.
        first = resources[0]
        scopes = list(first.scope_metrics)
        for i, scope in enumerate(scopes):
            if scope.scope.name == self.scope.name:
                scopes[i] = ScopeMetrics(
                    scope.scope, [*scope.metrics, *histograms], scope.schema_url
                )
                break
        else:
            scopes.append(self._scoped(histograms))
        resources[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resources)

    def _scoped(self, metrics: list[Metric]) -> ScopeMetrics:
        return ScopeMetrics(self.scope, metrics, "")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.outcome.stop()


class _GaugeStore:
    """The latest gauge samples, by owner (a check name, or a key of the caller's), read at
    each metrics collection by every collector's observable gauges. A check's result is kept
    as it came and turned into samples at the next collection, once: of the results a check
    has between two collections only the last one's gauges are ever read."""

    def __init__(self, vantage: str) -> None:
        self.vantage = vantage
        self._lock = threading.Lock()
        self._by_owner: dict[str, dict[str, list[Sample]] | Result] = {}

    def replace(self, owner: str, samples: Iterable[Sample]) -> None:
        by_spec = _by_spec(samples)
        with self._lock:
            self._by_owner[owner] = by_spec

    def replace_result(self, owner: str, result: Result) -> None:
        """The gauges of `result` replace the owner's (event loop; costs a dict store)."""
        with self._lock:
            self._by_owner[owner] = result

    def forget(self, owner: str) -> None:
        with self._lock:
            self._by_owner.pop(owner, None)

    def callback(self, spec: MetricSpec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                owners = list(self._by_owner.items())
            samples: list[Sample] = []
            for owner, entry in owners:
                if isinstance(entry, Result):
                    entry = self._settle(owner, entry)
                samples.extend(entry.get(spec.name, ()))
            return [Observation(s.value, _attributes(s.labels, self.vantage)) for s in samples]

        return observe

    def _settle(self, owner: str, result: Result) -> dict[str, list[Sample]]:
        by_spec = _by_spec(gauges_of(result))
        with self._lock:
            # Unless a newer result or a forget() came in the meantime.
            if self._by_owner.get(owner) is result:
                self._by_owner[owner] = by_spec
        return by_spec


def _by_spec(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    by_spec: dict[str, list[Sample]] = {}
    for sample in samples:
        # Only gauges have an observable instrument here; anything else is not ours to show.
        if sample.spec.type is MetricType.GAUGE:
            by_spec.setdefault(sample.spec.name, []).append(sample)
    return by_spec


def _attributes(labels: tuple[tuple[str, str], ...], vantage: str) -> dict[str, str]:
    """A series' OTLP attributes: its labels and the vantage every series carries."""
    return {**dict(labels), "vantage": vantage}


class _Increments:
    """A result whose counter increments and histogram observations are computed once, by
    the first collector's reader thread that needs them, and shared with the others."""

    __slots__ = ("_samples", "result")

    def __init__(self, result: Result) -> None:
        self.result = result
        self._samples: list[Sample] | None = None

    @property
    def samples(self) -> list[Sample]:
        if self._samples is None:
            # Two reader threads may both compute them: the same list, harmlessly.
            self._samples = increments_of(self.result)
        return self._samples


class _HistogramSeries:
    """One histogram series, aggregated as the SDK's explicit-bucket aggregation does
    (count, sum, min, max, a count per bucket, upper bounds inclusive) without its
    per-measurement locking and attribute handling."""

    __slots__ = ("buckets", "count", "max", "min", "start", "sum")

    def __init__(self, bounds: int, start: int) -> None:
        self.buckets = [0] * (bounds + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start = start


class _MetricsPipeline:
    """One collector's metrics: its own MeterProvider, reader thread and exporter.

    The event loop only queues results. At each collection the reader thread turns them into
    increments: counters are summed per series and added to SDK counters (one call per series
    and collection), histograms are aggregated here and handed to the exporter as data points
    next to what the SDK collected (same names, units, attributes, buckets, temporality).
    """

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
        preferred = inner._preferred_temporality or {}
        self._cumulative = (
            preferred.get(SdkHistogram, AggregationTemporality.CUMULATIVE)
            is AggregationTemporality.CUMULATIVE
        )
        self._lock = threading.Lock()
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], _HistogramSeries] = {}
        self._interval_start = time.time_ns()
        reader = PeriodicExportingMetricReader(
            _CountingMetricExporter(
                inner,
                self.outcome,
                self._histograms,
                resource,
                InstrumentationScope("failsight", version),
            ),
            export_interval_millis=config.export_interval * 1000,
            export_timeout_millis=config.timeout * 1000,
        )
        self.provider = MeterProvider(
            metric_readers=[reader], resource=resource, shutdown_on_exit=False
        )
        meter = self.provider.get_meter("failsight", version)
        # Results wait here for the reader thread: turning them into increments and recording
        # those costs more than the event loop should pay per run (see record()).
        self._pending: collections.deque[_Increments] = collections.deque(
            maxlen=MAX_PENDING_RESULTS
        )
        self.counters: dict[str, Counter] = {}
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

    def record(self, run: _Increments) -> None:
        """Queue a result (event loop; cheap). Past MAX_PENDING_RESULTS, the oldest go."""
        self._pending.append(run)

    def _drain(self) -> None:
        """Record what waits (reader thread): counter increments summed per series, one SDK
        call per series and collection; histogram observations into our own series."""
        sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        now = time.time_ns()
        with self._lock:
            series = self._series
            while True:
                try:
                    run = self._pending.popleft()
                except IndexError:
                    break
                for sample in run.samples:
                    spec = sample.spec
                    key = (spec.name, sample.labels)
                    if spec.type is MetricType.HISTOGRAM:
                        agg = series.get(key)
                        if agg is None:
                            start = now if self._cumulative else self._interval_start
                            agg = series[key] = _HistogramSeries(len(spec.buckets), start)
                        value = sample.value
                        agg.buckets[bisect_left(spec.buckets, value)] += 1
                        agg.count += 1
                        agg.sum += value
                        if value < agg.min:
                            agg.min = value
                        if value > agg.max:
                            agg.max = value
                    else:
                        sums[key] = sums.get(key, 0.0) + sample.value
        for (name, labels), value in sums.items():
            self.counters[name].add(value, _attributes(labels, self.vantage))

    def _histograms(self) -> list[Metric]:
        """The histogram series as OTLP data points (reader thread, at each export)."""
        now = time.time_ns()
        by_name: dict[str, list[HistogramDataPoint]] = {}
        with self._lock:
            for (name, labels), agg in self._series.items():
                spec = CATALOGUE[name]
                by_name.setdefault(name, []).append(
                    HistogramDataPoint(
                        attributes=_attributes(labels, self.vantage),
                        start_time_unix_nano=agg.start,
                        time_unix_nano=now,
                        count=agg.count,
                        sum=agg.sum,
                        bucket_counts=list(agg.buckets),
                        explicit_bounds=list(spec.buckets),
                        min=agg.min,
                        max=agg.max,
                    )
                )
            if not self._cumulative:
                # Delta: each interval's points stand alone; a series without observations
                # in an interval has no point, as with the SDK's own aggregation.
                self._series = {}
                self._interval_start = now
        temporality = (
            AggregationTemporality.CUMULATIVE if self._cumulative else AggregationTemporality.DELTA
        )
        return [
            Metric(
                name=CATALOGUE[name].otel_name,
                description=CATALOGUE[name].help,
                unit=CATALOGUE[name].unit,
                data=Histogram(data_points=points, aggregation_temporality=temporality),
            )
            for name, points in by_name.items()
        ]

    def shutdown(self, budget: float) -> None:
        self.provider.shutdown(timeout_millis=budget * 1000)

    def abort(self) -> None:
        self.outcome.abort()


class _Run:
    """What the event loop queues for a run's spans or log record: the result, the ids the
    probe sent in `traceparent` (or fresh ones), when it was handed over, and how many items
    (spans, log records) it makes. The exporter's thread builds the rest, once: the encoded
    items are kept here for the other collectors' pipelines."""

    __slots__ = ("encoded", "items", "observed", "result", "span_id", "trace_id")

    def __init__(
        self, result: Result, trace_id: int, span_id: int, observed: int, items: int
    ) -> None:
        self.result = result
        self.trace_id = trace_id
        self.span_id = span_id
        self.observed = observed  # ns since the epoch
        self.items = items
        self.encoded: bytes | None = None


class _BatchPipeline:
    """One collector's spans or logs: a bounded queue of runs and a worker thread that sends
    them in batches of about MAX_EXPORT_BATCH items, at least every `_batch_delay`.

    The worker encodes each batch straight into the OTLP request (see _span_items,
    _log_items) and hands it to the SDK's exporter (retries, gRPC / HTTP, headers, TLS).
    """

    def __init__(
        self,
        config: OtlpCollectorConfig,
        signal: Signal,
        counts: ExportCounts,
        encode: Callable[[Sequence[_Run]], bytes],
    ) -> None:
        self.path = config.path(signal)
        self.counts = counts
        counts.declare(self.path, ("success", "failure", "dropped"))
        self.inner = _batch_exporter(config, signal)
        self.outcome = _Outcome(self.path, counts, self.inner.shutdown)
        self.gate = _QueueGate(config.max_queue_size)
        self._encode = encode
        self._delay = _batch_delay(config)
        self._batch = min(MAX_EXPORT_BATCH, config.max_queue_size)
        self._queue: collections.deque[_Run] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._work, name=f"failsight-{self.path}", daemon=True
        )
        self._thread.start()

    def offer(self, run: _Run) -> None:
        """Queue a run (event loop; cheap). A run's spans go together or not at all: a trace
        with holes misleads more than none."""
        if self._stopping or not self.gate.try_accept(run.items):
            self.counts.add(self.path, "dropped", run.items)
            return
        self._queue.append(run)
        if len(self._queue) * run.items >= self._batch and not self._wake.is_set():
            self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            stopping = self._stopping
            self._send_queued()
            if stopping:
                return

    def _send_queued(self) -> None:
        # What was queued when woken, in batches; what comes meanwhile waits for the next
        # full batch or the timer (sending it as it trickles in makes many tiny requests).
        left = len(self._queue)
        while left > 0:
            batch: list[_Run] = []
            items = 0
            while left > 0 and items < self._batch:
                run = self._queue.popleft()
                left -= 1
                batch.append(run)
                items += run.items
            self._export(batch, items)

    def _export(self, batch: Sequence[_Run], items: int) -> None:
        self.gate.taken(items)
        if self.outcome.aborted:
            self.counts.add(self.path, "dropped", items)
            return
        try:
            payload: Any = _Payload(self._encode(batch), items)
            ok = self.inner.export(payload) in _SUCCESS
        except Exception:
            log.exception("exporting to %s failed", self.path)
            ok = False
        self.outcome.record(ok)

    def shutdown(self, budget: float) -> None:
        """Send what is queued within `budget` seconds, then stop the exporter; what is left
        then is counted as dropped."""
        self._stopping = True
        self._wake.set()
        self._thread.join(budget)
        if self._thread.is_alive():
            # Stopping the exporter cuts its retries short: the worker then counts what it
            # was sending and what is left, and ends.
            self.abort()
            self._thread.join(budget)
        else:
            self.outcome.stop()

    def abort(self) -> None:
        self.outcome.abort()


_SUCCESS = (SpanExportResult.SUCCESS, LogRecordExportResult.SUCCESS)


_Pipeline = _MetricsPipeline | _BatchPipeline


class OtlpSink:
    """Takes results on the event loop and pushes them to every configured collector.

    `handle` does only cheap, non-blocking work: appends to bounded queues (the result
    itself, its trace ids); gauges, increments, spans and log records are made on the
    pipelines' threads. Each collector has its own pipelines (metric reader thread, span and
    log batch worker threads, exporters), so a dead, slow or black-holing collector costs
    counted failures and drops on its own paths and nothing anywhere else.
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
        self._counts = ExportCounts()
        self._gauges = _GaugeStore(self.vantage)
        self._closed = False
        self._metrics: list[_MetricsPipeline] = []
        self._traces: list[_BatchPipeline] = []
        self._logs: list[_BatchPipeline] = []
        # The request's resource and scope, encoded once per sink.
        resource_bytes = _encode_resource(self.resource)
        spans = _Encoder(resource_bytes, _scope_bytes("failsight", self.version), _span_items)
        logs = _Encoder(resource_bytes, _scope_bytes("failsight.run", self.version), _log_items)
        for config in collectors:
            if "metrics" in config.signals:
                self._metrics.append(
                    _MetricsPipeline(
                        config, self.resource, self._gauges, self._counts, self.version
                    )
                )
            if "traces" in config.signals:
                self._traces.append(_BatchPipeline(config, "traces", self._counts, spans.encode))
            if "logs" in config.signals and logs_over_otlp:
                self._logs.append(_BatchPipeline(config, "logs", self._counts, logs.encode))

    # -- the event loop side -----------------------------------------------------------------

    def handle(self, result: Result) -> None:
        """Queue `result` for every pipeline: a few appends and no OTLP object; gauges,
        increments, spans and the log record are made on the pipelines' threads."""
        if self._closed or result.skipped:
            return
        self._gauges.replace_result(result.check, result)
        if self._metrics:
            increments = _Increments(result)
            for metrics in self._metrics:
                metrics.record(increments)
        if not (self._traces or self._logs):
            return
        trace_id = _hex_id(result.trace_id, 32)
        span_id = _hex_id(result.span_id, 16)
        observed = time.time_ns()
        if self._traces:
            run = _Run(result, trace_id, span_id, observed, _span_count(result))
            for traces in self._traces:
                traces.offer(run)
        if self._logs:
            run = _Run(result, trace_id, span_id, observed, 1)
            for logs in self._logs:
                logs.offer(run)

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
        return {p.path: p.gate.pending for p in [*self._traces, *self._logs]}

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


class _Payload:
    """An OTLP request already encoded, and how many spans or log records it carries (the
    SDK exporters count len() of what they send)."""

    __slots__ = ("data", "items")

    def __init__(self, data: bytes, items: int) -> None:
        self.data = data
        self.items = items

    def __len__(self) -> int:
        return self.items


# The SDK's exporters, given a _Payload in place of SDK spans or log records: they send our
# request as it is (their retries, back-off, headers, TLS and shutdown unchanged).
class _RawStub:
    """A gRPC stub whose Export takes the request already serialised: the generated stub
    would want a message object, parsed from our bytes only to be serialised again."""

    def __init__(self, channel: grpc.Channel, method: str, response: Any) -> None:
        self.Export = channel.unary_unary(method, response_deserializer=response.FromString)


class _GrpcSpans(GrpcSpanExporter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # The SDK makes its client from _stub again when it reconnects.
        self._stub = functools.partial(
            _RawStub,
            method="/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            response=ExportTraceServiceResponse,
        )
        self._client = self._stub(self._channel)

    def _translate_data(self, data: Any) -> Any:
        return data.data


class _GrpcLogs(GrpcLogExporter):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stub = functools.partial(
            _RawStub,
            method="/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            response=ExportLogsServiceResponse,
        )
        self._client = self._stub(self._channel)

    def _translate_data(self, data: Any) -> Any:
        return data.data


class _HttpSpans(HttpSpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        ok = self._client.export(spans.data).success
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class _HttpLogs(HttpLogExporter):
    def export(self, batch: Any) -> LogRecordExportResult:
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        ok = self._client.export(batch.data).success
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE


def _batch_exporter(
    config: OtlpCollectorConfig, signal: Signal
) -> SpanExporter | LogRecordExporter:
    if signal == "traces":
        if config.protocol == "grpc":
            return _GrpcSpans(**_grpc_kwargs(config))
        return _HttpSpans(**_http_kwargs(config, "traces"))
    if config.protocol == "grpc":
        return _GrpcLogs(**_grpc_kwargs(config))
    return _HttpLogs(**_http_kwargs(config, "logs"))


# -- results as spans and log records --------------------------------------------------------


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


class _SpanPart(NamedTuple):
    """One span of a run, as the SDK's ReadableSpan would hold it (what _span_items encodes)."""

    name: str
    kind: SpanKind
    span_id: int
    parent_id: int | None  # None: the run's root
    attributes: Mapping[str, str | bool | int | float]
    status: StatusCode
    description: str | None
    start: int  # ns since the epoch
    end: int


def _span_count(result: Result) -> int:
    """How many spans `_span_parts` makes of a run (the queue bound counts spans)."""
    return 1 + sum(1 for s in (*result.steps, *result.cleanup) if not s.skipped)


def _span_parts(result: Result, root_id: int) -> list[_SpanPart]:
    """The spans of one run, root first, the root's span id `root_id`: the exact ids the
    probe sent to the target in `traceparent` (the trace id is the run's, see _Run).

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
    status, description = StatusCode.UNSET, None
    if not result.ok:
        reason = result.reason.value if result.reason else "internal"
        attributes["failsight.reason"] = reason
        status, description = StatusCode.ERROR, result.message or reason
    spans = [
        _SpanPart(
            name,
            SpanKind.INTERNAL,
            root_id,
            None,
            attributes,
            status,
            description,
            _ns(result.started_at),
            _ns(result.started_at + result.duration),
        )
    ]
    for cleanup, steps in ((False, result.steps), (True, result.cleanup)):
        for step in steps:
            if not step.skipped:
                spans.append(_step_span(step, cleanup, result, root_id, common))
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
    root_id: int,
    common: Mapping[str, str | bool],
) -> _SpanPart:
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
    status, description = StatusCode.UNSET, None
    error = _error_type(step)
    if error is not None:
        attributes["error.type"] = error
        described = not step.ok and not (
            step.reason in _STATUS_REASONS and error == str(step.status)
        )
        status, description = StatusCode.ERROR, step.message if described else None
    if not step.ok:
        attributes["failsight.reason"] = step.reason.value if step.reason else "internal"
    start = result.started_at + step.start_offset
    # `{method} {url.template}`, or `{method}` alone without a template; `HTTP` for a method
    # the conventions do not know.
    label = method if method in _KNOWN_METHODS else "HTTP"
    return _SpanPart(
        f"{label} {step.url_template}" if step.url_template else label,
        SpanKind.CLIENT,
        _hex_id(step.span_id, 16),
        root_id,
        attributes,
        status,
        description,
        _ns(start),
        _ns(start + step.duration),
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
    parsed = _URLS.get(url)
    if parsed is None:
        parsed = _parse_url(url)
        if len(_URLS) >= _URLS_MAX:
            _URLS.clear()
        _URLS[url] = parsed
    scrubbed, rest = parsed
    # Redacted at each use: the secrets the process holds change (tokens fetched at run time).
    return {"url.full": redact(scrubbed), **rest}


# URL -> what url_attributes takes from it before redaction: a journey sends the same URLs
# run after run. Cleared when full (URLs with per-run ids in them do not pile up).
_URLS: dict[str, tuple[str, dict[str, str | int]]] = {}
_URLS_MAX = 4096


def _parse_url(url: str) -> tuple[str, dict[str, str | int]]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL we can take apart: only what redaction by value leaves
        return url, {}
    rest: dict[str, str | int] = {}
    if parts.scheme:
        rest["url.scheme"] = parts.scheme
    if parts.hostname:
        rest["server.address"] = parts.hostname
    port = port if port is not None else _DEFAULT_PORTS.get(parts.scheme)
    if port is not None:
        rest["server.port"] = port
    return scrub_url(url), rest


def _log_parts(result: Result) -> tuple[str, dict[str, str | float | bool]]:
    """A run's log record: its body and attributes (the stdout line's fields)."""
    fields = result_fields(result)
    attributes = {
        f"failsight.{key}": value
        for key, value in fields.items()
        if value is not None and key != "trace_id"
    }
    body = f"{result.check} {fields['outcome']}"
    if result.reason is not None:
        body += f" ({result.reason.value})"
    return body, attributes


# -- the OTLP wire format ----------------------------------------------------------------------
#
# Spans and log records are encoded straight into protobuf bytes (field numbers of the
# opentelemetry-proto messages): building them as SDK objects, then as protobuf message
# objects, cost ~100 us per span, more than the probe itself. The request's resource and scope
# are encoded once; a (key, value) attribute that repeats (a check, a step, a URL) is encoded
# once and kept. tests/agent/test_otlp.py checks the bytes against the SDK's own encoder.

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack


_SMALL = tuple(bytes((n,)) for n in range(0x80))  # one-byte varints


def _varint(n: int) -> bytes:
    if 0 <= n < 0x80:
        return _SMALL[n]
    if n < 0:
        n += 1 << 64  # int64 as protobuf writes it: ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: `tag` is the encoded (field number << 3 | 2)."""
    n = len(payload)
    return tag + (_SMALL[n] if n < 0x80 else _varint(n)) + payload


def _any_value(value: str | bool | int | float) -> bytes:
    """An AnyValue message, as the SDK encodes attribute and body values."""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    return _field(b"\x0a", value.encode())


# A KeyValue field, tag included, per (tag, key, type, value); cleared when full, so values
# that never repeat (run ids) cost memory only until then.
_KV_CACHE: dict[tuple[bytes, str, type, object], bytes] = {}
_KV_CACHE_MAX = 8192


def _attributes_bytes(tag: bytes, attributes: Mapping[str, str | bool | int | float]) -> bytes:
    """The repeated KeyValue field `tag` of a message, in the mapping's order."""
    cache = _KV_CACHE
    parts = []
    for key, value in attributes.items():
        kind = type(value)
        if kind is float:
            # Durations: never the same twice, not worth keeping; their key is.
            head = _KEYS.get(key)
            if head is None:
                head = _KEYS[key] = _field(b"\x0a", key.encode())
            parts.append(_field(tag, head + b"\x12\x09\x21" + _pack_double(value)))
            continue
        cached = cache.get((tag, key, kind, value))
        if cached is None:
            kv = _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))
            cached = _field(tag, kv)
            if len(cache) >= _KV_CACHE_MAX:
                cache.clear()
            cache[(tag, key, kind, value)] = cached
        parts.append(cached)
    return b"".join(parts)


# The encoded key field of attributes with float values (a bounded set: phase names).
_KEYS: dict[str, bytes] = {}


def _encode_resource(resource: Resource) -> bytes:
    """A Resource message (attributes 1)."""
    return _attributes_bytes(b"\x0a", resource.attributes)  # type: ignore[arg-type]


def _scope_bytes(name: str, version: str) -> bytes:
    """An InstrumentationScope message (name 1, version 2)."""
    out = _field(b"\x0a", name.encode()) if name else b""
    return out + (_field(b"\x12", version.encode()) if version else b"")


def _request(resource: bytes, scope: bytes, items: bytes) -> bytes:
    """Export{Trace,Logs}ServiceRequest: one Resource{Spans,Logs} (resource 1, scope_* 2) with
    one Scope{Spans,Logs} (scope 1, items 2, already tagged): the two have the same shape."""
    scoped = _field(b"\x0a", scope) + items
    return _field(b"\x0a", _field(b"\x0a", resource) + _field(b"\x12", scoped))


class _Encoder:
    """A batch of runs as one request; each run's items are encoded once (see _Run)."""

    def __init__(self, resource: bytes, scope: bytes, items: Callable[[_Run], bytes]) -> None:
        self.resource = resource
        self.scope = scope
        self.items = items

    def encode(self, batch: Sequence[_Run]) -> bytes:
        parts = []
        for run in batch:
            encoded = run.encoded
            if encoded is None:
                encoded = run.encoded = self.items(run)
            parts.append(encoded)
        return _request(self.resource, self.scope, b"".join(parts))


_SPAN_TIMES = struct.Struct("<BQBQ").pack  # start_time_unix_nano 7, end_time_unix_nano 8
# The SDK always sends a status, an empty one when unset; then the span's flags (field 16,
# fixed32): what the SDK sets for a span whose parent is local or absent (HAS_IS_REMOTE).
_UNSET_STATUS_AND_FLAGS = b"\x7a\x00" + b"\x85\x01" + _pack_fixed32(0x100)
_SPAN_FLAGS = b"\x85\x01" + _pack_fixed32(0x100)
_SPAN_KINDS = {SpanKind.INTERNAL: b"\x30\x01", SpanKind.CLIENT: b"\x30\x03"}


def _span_items(run: _Run) -> bytes:
    """A run's spans, each as ScopeSpans' field 2."""
    ids = b"\x0a\x10" + run.trace_id.to_bytes(16, "big") + b"\x12\x08"
    out = []
    for span in _span_parts(run.result, run.span_id):
        body = [ids, span.span_id.to_bytes(8, "big")]
        if span.parent_id is not None:
            body.append(b"\x22\x08" + span.parent_id.to_bytes(8, "big"))
        body.append(_field(b"\x2a", span.name.encode()))
        body.append(_SPAN_KINDS[span.kind])
        body.append(_SPAN_TIMES(0x39, span.start, 0x41, span.end))
        body.append(_attributes_bytes(b"\x4a", span.attributes))
        if span.status is StatusCode.UNSET and not span.description:
            body.append(_UNSET_STATUS_AND_FLAGS)
        else:
            status = _field(b"\x12", span.description.encode()) if span.description else b""
            if span.status.value:
                status += b"\x18" + _varint(span.status.value)
            body.append(_field(b"\x7a", status))
            body.append(_SPAN_FLAGS)
        out.append(_field(b"\x12", b"".join(body)))
    return b"".join(out)


def _log_items(run: _Run) -> bytes:
    """A run's LogRecord, as ScopeLogs' field 2, carrying the run's trace and root span."""
    result = run.result
    body, attributes = _log_parts(result)
    severity = SeverityNumber.INFO if result.ok else SeverityNumber.WARN
    record = b"".join(
        (
            b"\x09" + _pack_fixed64(_ns(result.started_at + result.duration)),
            b"\x10" + _varint(severity.value),
            _field(b"\x1a", severity.name.encode()),
            _field(b"\x2a", _any_value(body)),
            _attributes_bytes(b"\x32", attributes),
            b"\x45" + _pack_fixed32(1),  # flags: the trace flags, sampled
            _field(b"\x4a", run.trace_id.to_bytes(16, "big")),
            _field(b"\x52", run.span_id.to_bytes(8, "big")),
            b"\x59" + _pack_fixed64(run.observed),
        )
    )
    return _field(b"\x12", record)
