"""The `telemetry.otlp` config model, kept apart from the OTLP sink so that loading a config
does not import the OpenTelemetry SDK and gRPC (tens of MB) for agents that configure no
collector."""

from __future__ import annotations

import os
import re
import socket
import uuid
from typing import Literal

from pydantic import Field, field_validator, model_validator

from failsight.core.configtypes import Interval, Model, Name, Secret, Timeout

Signal = Literal["metrics", "traces", "logs"]
SIGNALS: tuple[Signal, ...] = ("metrics", "traces", "logs")

_GRPC_TARGET = re.compile(
    r"^(?:(?P<scheme>https?)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})/?$"
)
_HTTP_BASE = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~\-]+$")


class OtlpCollectorConfig(Model):
    """One entry of `telemetry.otlp`: a collector and which signals it takes."""

    name: Name
    # grpc: `host:port` or `http(s)://host:port`; http/protobuf: the base URL (`/v1/<signal>`
    # is appended).
    endpoint: str
    protocol: Literal["grpc", "http/protobuf"] = "grpc"
    headers: dict[str, Secret] = Field(default_factory=dict)
    timeout: Timeout = 5.0  # per export, retries included
    # gRPC plaintext; by default inferred from an http:// scheme (TLS otherwise).
    insecure: bool | None = None
    # A CA bundle (PEM) that verifies the collector's certificate, in place of the system's.
    ca_file: str | None = None
    signals: tuple[Signal, ...] = SIGNALS
    export_interval: Interval = 10.0  # metrics; spans and logs go at least every 5 s
    max_queue_size: int = Field(default=2048, ge=1, le=1_000_000)

    @field_validator("signals")
    @classmethod
    def _signals(cls, value: tuple[Signal, ...]) -> tuple[Signal, ...]:
        if not value:
            raise ValueError("list at least one of metrics, traces, logs")
        if len(set(value)) != len(value):
            raise ValueError("each signal may be listed once")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, Secret]) -> dict[str, Secret]:
        for key in value:
            if not _HEADER_NAME.match(key):
                raise ValueError(f"invalid header name {key!r}")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _endpoint(self) -> OtlpCollectorConfig:
        if self.protocol == "grpc":
            match = _GRPC_TARGET.match(self.endpoint)
            if not match or not 0 < int(match.group("port")) <= 65535:
                raise ValueError(
                    "endpoint: a grpc endpoint is HOST:PORT or http(s)://HOST:PORT, "
                    "e.g. 127.0.0.1:4317"
                )
            if match.group("scheme") == "https" and self.insecure:
                raise ValueError("insecure: true contradicts the https:// endpoint")
        else:
            if not _HTTP_BASE.match(self.endpoint):
                raise ValueError(
                    "endpoint: an http/protobuf endpoint is a base URL, e.g. http://127.0.0.1:4318"
                )
            if self.insecure is not None:
                raise ValueError(
                    "insecure: only for grpc; an http/protobuf endpoint's scheme decides"
                )
        if self.ca_file is not None and self.plaintext:
            raise ValueError("ca_file: needs a TLS endpoint, this one is plaintext")
        return self

    @property
    def plaintext(self) -> bool:
        if self.protocol == "http/protobuf":
            return self.endpoint.startswith("http://")
        if self.insecure is not None:
            return self.insecure
        return self.endpoint.startswith("http://")

    @property
    def grpc_target(self) -> str:
        match = _GRPC_TARGET.match(self.endpoint)
        if match is None:
            raise ValueError(f"not a grpc endpoint: {self.endpoint}")
        return f"{match.group('host')}:{match.group('port')}"

    def signal_url(self, signal: Signal) -> str:
        return f"{self.endpoint.rstrip('/')}/v1/{signal}"

    def path(self, signal: Signal) -> str:
        """The telemetry path name, as in `failsight_telemetry_exports_total{path}`."""
        return f"otlp:{self.name}:{signal}"


# The resource attribute naming this agent's vantage: ours, so under our namespace (a bare
# `vantage` could collide with anyone else's attribute on a shared collector).
VANTAGE_ATTRIBUTE = "failsight.vantage"

# `service.instance.id`: a random UUID (version 4) made once per process, as the resource
# conventions recommend. Per process, not per config: a SIGHUP reload builds a new OTLP sink
# but the same agent goes on, and its cumulative counters with it. Random, not derived from
# the pod or host name: a restarted container starts its counters from zero, so it is a new
# instance to the backend, and the conventions count pod names as data a user may not want
# exported (`host.name` is there for finding the machine).
INSTANCE_ID = str(uuid.uuid4())


def build_resource(
    vantage: str,
    cloud_provider: str | None,
    cloud_region: str | None,
    version: str,
) -> dict[str, str]:
    """The OTLP resource attributes of this agent: semantic-convention names, plus the
    vantage under `failsight.`."""
    out = {
        "service.name": "failsight",
        "service.version": version,
        "service.instance.id": INSTANCE_ID,
        "host.name": socket.gethostname(),
        VANTAGE_ATTRIBUTE: vantage,
    }
    if cloud_provider:
        out["cloud.provider"] = cloud_provider
    if cloud_region:
        out["cloud.region"] = cloud_region
    return out
