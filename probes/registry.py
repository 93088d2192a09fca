"""The one list of check kinds: each entry turns the config into that kind's checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from failsight.core.check import Check
from failsight.probes import dns, idp, journey, replication, selfcheck, tls

if TYPE_CHECKING:
    from failsight.agent.config import Config

PLANNERS: tuple[Callable[[Config], list[Check]], ...] = (
    journey.plan,
    replication.plan,
    idp.plan,
    dns.plan,
    tls.plan,
    selfcheck.plan,
)


def plan(config: Config) -> list[Check]:
    """Every check the config asks for, each name unique."""
    return [check for planner in PLANNERS for check in planner(config)]
