"""The one list of check kinds: each entry turns the config into that kind's checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from probes import dns, idp, journey, replication, selfcheck, tls
from probes.base import Check

if TYPE_CHECKING:
    from agent.config import Config

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
