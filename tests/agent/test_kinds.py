"""What the agent derives from the kinds: each kind's config section, metric families from the
first scrape, and its place in the catalogue. Adding a kind must need nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from failsight.agent.config import Config
from failsight.agent.metrics import CATALOGUE
from failsight.core.telemetry import MetricType
from failsight.probes.registry import KINDS
from tests.fixtures.platform import running_agent

MakeConfig = Callable[..., tuple[Config, Path]]


def _family(name: str, kind: MetricType) -> str:
    # The text format names a counter's family without its _total suffix.
    return name.removesuffix("_total") if kind is MetricType.COUNTER else name


async def test_every_kind_s_metric_families_are_in_metrics_from_the_start(
    make_config: MakeConfig,
) -> None:
    config, _ = make_config()
    # Straight away: before a single run of most checks has finished.
    async with (
        running_agent(config) as agent,
        aiohttp.ClientSession() as s,
        s.get(f"http://127.0.0.1:{agent.port}/metrics") as r,
    ):
        assert r.status == 200
        text = await r.text()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    expected = {
        _family(spec.prometheus_name, spec.type): spec.type.value
        for kind in KINDS
        for spec in kind.metrics
    }
    assert expected, "no kind declares a metric family"
    missing = {name: t for name, t in expected.items() if families.get(name) != t}
    assert missing == {}


def test_the_catalogue_holds_every_kind_s_families_once() -> None:
    for kind in KINDS:
        for spec in kind.metrics:
            assert CATALOGUE[spec.name] is spec, (kind.name, spec.name)
            assert spec.name.startswith(kind.name.split("_")[0]) or kind.name == "journey", (
                kind.name,
                spec.name,
            )
    names = [spec.name for kind in KINDS for spec in kind.metrics]
    assert len(names) == len(set(names))


def test_the_config_model_has_a_section_per_kind() -> None:
    fields = Config.model_fields
    for kind in KINDS:
        if kind.top_level:
            assert kind.key in fields, kind.key
            assert fields[kind.key].default_factory is list
