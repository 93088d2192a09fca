"""The vantage self-check: can this agent reach something outside the watched sites at all?

When a vantage sees every site fail and has no fresh peer to compare with, this settles whether
the fault is its own (no answer from the self-check target either: impaired) or the sites' (the
target answers: a total outage). Any HTTP answer counts, whatever its status: it proves the
path out of this vantage works, which is all the check is for.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
from pydantic import field_validator

from failsight.core.check import Check, ProbeContext, Run
from failsight.core.configtypes import Interval, Scheduled, Timeout
from failsight.core.http import classify, ssl_context
from failsight.core.kind import Env, Kind
from failsight.core.results import Result, VantageReach

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
    kind = "self_check"
    # Whatever a run ends in, it says whether this vantage reaches out: impairment's input.
    standing_evidence = (VantageReach(),)

    def __init__(self, config: SelfCheckConfig) -> None:
        super().__init__(
            name=f"{self.kind}/vantage",
            target=config.url,
            interval=config.interval,
            budget=config.timeout,
            margin=0.0,  # aiohttp's total timeout below is the budget
            # Whether this member reaches out: each member of a group asks for itself.
            placement="every_member",
        )
        self.config = config

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        try:
            async with ctx.http.get(
                self.config.url,
                ssl=ssl_context(self.config.ca_file),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.budget),
            ) as response:
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason, message = classify(exc)
            return self.failed(reason, _one_line(message), run)
        return self.result(run, ok=True, message=f"HTTP {status}")


def _one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """aiohttp's parser errors quote the target's bytes over several lines: one short line."""
    flat = " ".join(text.split())
    return flat[:limit] + "..." if len(flat) > limit else flat


def plan(section: Sequence[SelfCheckConfig], env: Env) -> list[Check]:
    return [SelfCheck(config) for config in section]


KIND = Kind(
    name=SelfCheck.kind,
    key="agent.self_check",
    model=SelfCheckConfig,
    plan=plan,
    summary="this vantage's own reach to an endpoint outside the sites (impairment)",
)
