"""The vantage self-check: can this agent reach something outside the watched sites at all?

When a vantage sees every site fail and has no fresh peer to compare with, this settles whether
the fault is its own (no answer from the self-check target either: impaired) or the sites' (the
target answers: a total outage). Any HTTP answer counts, whatever its status: it proves the
path out of this vantage works, which is all the check is for.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import aiohttp
from pydantic import field_validator

from failsight.core.check import Check, ProbeContext, new_run_id, wall_now
from failsight.core.configtypes import Interval, Scheduled, Timeout
from failsight.core.http import classify, ssl_context

if TYPE_CHECKING:
    from failsight.agent.config import Config
    from failsight.core.results import Result

KIND = "self_check"  # agent.view.SELF_CHECK_KIND: its results settle this vantage's impairment
MAX_MESSAGE_CHARS = 300


class SelfCheckConfig(Scheduled):
    """`agent.self_check`: an endpoint outside the sites, e.g. the cloud provider's own API."""

    url: str
    interval: Interval = 10.0
    timeout: Timeout = 5.0
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or len(value) > 2048:
            raise ValueError("expected an http:// or https:// URL")
        return value


class SelfCheck(Check):
    kind = KIND

    def __init__(self, config: SelfCheckConfig) -> None:
        super().__init__(
            name=f"{KIND}/vantage",
            target=config.url,
            interval=config.interval,
            timeout=config.timeout,
        )
        self.config = config

    async def run(self, ctx: ProbeContext) -> Result:
        started_at, start, run_id = wall_now(), time.monotonic(), new_run_id()
        try:
            async with ctx.http.get(
                self.config.url,
                ssl=ssl_context(self.config.ca_file),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason, message = classify(exc)
            return self.failed(
                reason,
                _one_line(message),
                started_at=started_at,
                duration=time.monotonic() - start,
                run_id=run_id,
            )
        return self.result(
            ok=True,
            started_at=started_at,
            duration=time.monotonic() - start,
            run_id=run_id,
            message=f"HTTP {status}",
        )


def _one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """aiohttp's parser errors quote the target's bytes over several lines: one short line."""
    flat = " ".join(text.split())
    return flat[:limit] + "..." if len(flat) > limit else flat


def plan(config: Config) -> list[Check]:
    self_check = config.agent.self_check
    return [SelfCheck(self_check)] if self_check is not None else []
