"""The fan-out of every Result to independent sinks (Prometheus, OTLP, view, logs)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from failsight.core.results import Result

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Takes results. `handle` runs on the event loop and must return at once: a sink that
    has slow work (network export) queues it, bounded, and does it elsewhere."""

    name: str

    def handle(self, result: Result) -> None: ...


class FanOut:
    """Hands each result to every sink; one sink's bug never reaches the others or the probe."""

    name = "fanout"

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks: list[Sink] = list(sinks)
        self.errors: dict[str, int] = {}

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def handle(self, result: Result) -> None:
        for sink in self.sinks:
            try:
                sink.handle(result)
            except Exception:
                self.errors[sink.name] = self.errors.get(sink.name, 0) + 1
                log.exception("sink %s failed to take a result of %s", sink.name, result.check)
