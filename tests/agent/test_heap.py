"""The agent keeps its long-lived objects out of the cyclic collector's reach (settle_heap), so
a full collection walks only what runs create, and a reload does not leak the old config."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from failsight.agent import runtime
from failsight.agent.demo.simulator import Platform
from tests.fixtures.platform import demo_config_data, running_agent, wait_for, write_config


class _Node:
    """Something with a cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def _tracked(obj: object) -> bool:
    """Whether `obj` is in a generation the collector walks (frozen objects are in none)."""
    return any(o is obj for o in gc.get_objects())


async def test_the_heap_is_frozen_after_start_up_and_warm_up_and_a_reload_frees_old_cycles(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "SETTLE_AFTER_RELOAD", 0.2)
    monkeypatch.setattr(runtime, "WARM_UP_CAP", 0.5)
    monkeypatch.setattr(runtime, "WARM_UP_POLL", 0.1)
    path = tmp_path / "c.yaml"
    config = write_config(path, demo_config_data(platform))
    cycle = _Node()
    gone = weakref.ref(cycle)
    assert _tracked(config)
    async with running_agent(config, path) as agent:
        # Start-up froze what was alive: the config and the cycle made before it.
        assert gc.get_freeze_count() > 0
        assert not _tracked(agent.config)
        # And what lives on from the first runs is frozen once every check has run.
        late = _Node()
        assert _tracked(late)
        await wait_for(lambda: not _tracked(late), timeout=5)
        del cycle
        gc.collect()
        assert gone() is not None, "a frozen cycle is not collected until a thaw"
        assert agent.reload()
        new_config = agent.config
        assert new_config is not config
        # Once the reloads stop: thawed, collected (the old cycle is freed), frozen again.
        await wait_for(lambda: gone() is None, timeout=5)
        await wait_for(lambda: not _tracked(new_config), timeout=5)
