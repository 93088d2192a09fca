"""Service level objectives on journeys: the config model the burn-rate alert rules come from."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from failsight.core.configtypes import Duration, Model, Name
from failsight.core.telemetry import LATENCY_BUCKETS

__all__ = ["SloConfig"]

_THIRTY_DAYS = 30 * 86400.0


class SloConfig(Model):
    """One SLO: a journey's success ratio (`availability`) or its share of runs no slower than
    `latency_threshold` (`latency`), as a percentage over a rolling `window`."""

    name: Name
    journey: Name
    kind: Literal["availability", "latency"]
    objective: float
    window: Duration = _THIRTY_DAYS
    # validate_default: a latency SLO without a threshold must be refused at this key's line.
    latency_threshold: Duration | None = Field(default=None, validate_default=True)

    @field_validator("objective")
    @classmethod
    def _objective_is_a_percentage(cls, value: float) -> float:
        # 100 leaves no error budget (every burn rate is infinite), 0 makes the SLO vacuous.
        if math.isnan(value) or not 0 < value < 100:
            raise ValueError("must be a percentage greater than 0 and less than 100, e.g. 99.5")
        return value

    @field_validator("latency_threshold")
    @classmethod
    def _threshold_matches_kind(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("kind")
        if kind is None:  # kind itself was invalid; its own error says so
            return value
        if kind == "availability":
            if value is not None:
                raise ValueError("only allowed when kind is latency")
            return value
        if value is None:
            raise ValueError("required when kind is latency")
        # The share of slow runs is read from one histogram bucket, so the threshold must be
        # a bucket boundary: any other value would need interpolation and be silently wrong.
        if value not in LATENCY_BUCKETS:
            allowed = ", ".join(f"{b:g}s" for b in LATENCY_BUCKETS)
            raise ValueError(
                f"{value:g}s is not a bucket of failsight_journey_duration_seconds; "
                f"use one of {allowed}"
            )
        return value

    @property
    def error_budget(self) -> float:
        """The allowed failure ratio, e.g. 0.005 for 99.5 (rounded to hide float noise)."""
        return round((100.0 - self.objective) / 100.0, 12)
