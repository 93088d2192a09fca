"""The agent's own `/metrics` render (agent/prometheus.py) against prometheus_client's.

Byte for byte what prometheus_client's `generate_latest` (classic and OpenMetrics) writes for
the same sink state (tests/fixtures/prometheus_reference.py, the collector the agent used to
serve): every family type, exemplars, awkward label values, NaN and infinities, live counters,
after a prune, after a rename of the vantage and after values change between two renders (the
cache of rendered series). Real promtool lints a real agent's scrapes; the sliced render gives
the event loop back between slices, and scrapes that overlap each other and new results stay
well-formed. And the 60 s maximum of the event loop lag, from a real agent.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as classic_families

from failsight.agent.demo.simulator import Platform
from failsight.agent.metrics import CATALOGUE
from failsight.agent.prometheus import PrometheusSink
from failsight.core.results import Measurement, Reason, Result, StepResult
from failsight.core.telemetry import Exemplar, Sample
from tests.fixtures.platform import demo_config_data, running_agent, wait_for, write_config
from tests.fixtures.prometheus import require_binary
from tests.fixtures.prometheus_reference import reference_registry, reference_render

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
# Label values the text format must escape (backslash, quote, newline) or carry as UTF-8.
AWKWARD = ("back\\slash", 'say "hi"', "two\nlines", "ünïcödé ✓ 東京", "plain")
STARTED = 1_700_000_000.0


def _journey(
    journey: str,
    site: str,
    *,
    n: int,
    fail: bool = False,
    duration: float | None = None,
    steps: tuple[str, ...] = ("pay", "ship"),
) -> Result:
    """A journey run; its durations vary with `n` so that every run changes the histograms."""
    results = []
    offset = 0.0
    for i, name in enumerate(steps):
        failed = fail and i == len(steps) - 1
        d = 0.013 * (n + 1) * (i + 1) if duration is None else duration
        results.append(
            StepResult(
                name=name,
                ok=not failed,
                duration=d,
                reason=Reason.HTTP_STATUS if failed else None,
                status=503 if failed else 200,
                phases={"dns": d / 10, "connect": d / 5, "body": d / 2},
                start_offset=offset,
                span_id=f"{n * 16 + i:016x}",
            )
        )
        offset += d if not math.isnan(d) else 0.0
    return Result(
        check=f"journey/{journey}/{site}",
        kind="journey",
        target=journey,
        ok=not fail,
        started_at=STARTED + n,
        duration=offset if duration is None else duration,
        run_id=f"{n:016x}",
        site=site,
        reason=Reason.HTTP_STATUS if fail else None,
        trace_id=f"{n:032x}",
        span_id=f"{n:016x}",
        steps=tuple(results),
    )


def _measured(n: int, value: float) -> Result:
    """A result of a kind with no gauges of its own, carrying measurements (gauges)."""
    return Result(
        check=f"replication/db-{n}",
        kind="replication",
        target=f"db-{n}",
        ok=True,
        started_at=STARTED,
        duration=value,
        run_id=f"{n:016x}",
        measurements=(
            Measurement(
                "replication_lag_seconds",
                {"cluster": AWKWARD[n % len(AWKWARD)], "replica": f"r{n}", "method": "lsn"},
                value,
            ),
            Measurement("replication_lag_bytes", {"cluster": f"db-{n}", "replica": "r"}, 1e21),
        ),
    )


class Live:
    """A `sources` entry, as the agent's `_live_samples`: gauges and counters, changeable."""

    def __init__(self) -> None:
        self.errors = 0.0
        self.lag = math.nan

    def __call__(self) -> Iterator[Sample]:
        def s(name: str, value: float, *labels: str) -> Sample:
            spec = CATALOGUE[name]
            return Sample(spec, tuple(zip(spec.labels, labels, strict=True)), value)

        yield s("agent_info", 1.0, 'v"1\\0')
        yield s("event_loop_lag_seconds", self.lag)
        yield s("vantage_impaired", -0.0)
        for i, site in enumerate(AWKWARD):
            yield s("site_verdict", 1.0 if i % 2 else 0.0, site, "up")
            yield s("site_view_down", math.inf if i == 0 else -math.inf, site)
        yield s("sink_errors_total", self.errors, "prometheus")
        yield s("sink_errors_total", 1234567.0, "otlp\nsink")
        yield s("telemetry_exports_total", 1e-7, "prometheus", "success")


def _rich_sink() -> tuple[PrometheusSink, Live]:
    sink = PrometheusSink('aws "use1"')
    live = Live()
    sink.sources.append(live)
    for n, (journey, site) in enumerate(
        (j, s) for j in AWKWARD for s in ("aws-use1", AWKWARD[2], AWKWARD[3])
    ):
        sink.handle(_journey(journey, site, n=n, fail=n % 4 == 0, steps=("pay", AWKWARD[n % 5])))
    sink.handle(_journey("inf", "aws-use1", n=90, duration=math.inf))
    sink.handle(_journey("nan", "aws-use1", n=91, duration=math.nan))
    sink.handle(_journey("many", "aws-use1", n=92))
    # A count past 10^6, which prints in Go's exponent form.
    sink._counters[("journey_runs_total", (("site", "x"), ("journey", "y"), ("result", "z")))] = (
        1_800_000.0
    )
    for n in range(4):
        sink.handle(_measured(n, [0.5, math.nan, math.inf, 12345678.9][n]))
    # An exemplar whose labels need escaping (a kind's own exemplar labels could).
    key = next(k for k in sink._histograms if k[0] == "journey_duration_seconds")
    sink._histograms[key].observe(0.2, Exemplar((("trace_id", 'a"b\\c\nd'),), STARTED))
    return sink, live


def _assert_identical(sink: PrometheusSink) -> None:
    registry = reference_registry(sink)
    for openmetrics in (False, True):
        ours = sink.render(openmetrics=openmetrics)
        theirs = reference_render(registry, openmetrics)
        assert ours.decode().splitlines() == theirs.decode().splitlines(), openmetrics
        assert ours == theirs, openmetrics


# -- byte for byte as prometheus_client ---------------------------------------------------


def test_an_empty_sink_describes_every_family_as_prometheus_client_does() -> None:
    sink = PrometheusSink("aws-use1")
    _assert_identical(sink)
    text = sink.render(openmetrics=True).decode()
    assert text.count("# TYPE ") == len(CATALOGUE) and text.endswith("# EOF\n")


def test_a_rich_state_renders_byte_for_byte_as_prometheus_client() -> None:
    sink, _ = _rich_sink()
    text = sink.render(openmetrics=True).decode()
    # The state is what it claims to be: every family type, exemplars, escapes, non-finite.
    for needle in (
        "# TYPE failsight_journey_runs counter",
        "# TYPE failsight_step_duration_seconds histogram",
        "# TYPE failsight_replication_lag_seconds gauge",
        ' # {span_id="',
        r'trace_id="a\"b\\c\nd"',
        r'site="two\nlines"',
        "東京",
        "} NaN",
        "} +Inf",
        "} -Inf",
        "} -0.0",
        "} 1e-07",
        "} 1.234567e+06",
        "} 1.8e+06",
        "} 1e+21",
    ):
        assert needle in text, needle
    _assert_identical(sink)


def test_the_cache_re_renders_exactly_the_series_that_changed() -> None:
    sink, live = _rich_sink()
    _assert_identical(sink)  # renders, and caches, every series
    key = next(k for k in sink._histograms if dict(k[1]).get("journey") == AWKWARD[0])
    untouched = next(k for k in sink._histograms if dict(k[1]).get("journey") == "many")
    before, kept = sink._cache.histograms[key], sink._cache.histograms[untouched]
    # New results for some checks, a counter that grows, live values that change.
    site = dict(key[1])["site"]
    sink.handle(_journey(AWKWARD[0], site, n=500, fail=True, steps=("pay", AWKWARD[0])))
    sink.handle(_measured(1, 42.0))
    live.errors, live.lag = 3.0, 0.25
    _assert_identical(sink)
    assert sink._cache.histograms[key] is not before  # stale: rendered again
    assert sink._cache.histograms[untouched] is kept  # unchanged: its text reused
    # And again with nothing new: the cached text is still right.
    _assert_identical(sink)


def test_a_prune_and_a_renamed_vantage_leave_no_stale_text() -> None:
    sink, _ = _rich_sink()
    _assert_identical(sink)
    keep_checks = {c for c in sink._gauges if AWKWARD[0] not in c}
    journeys = {
        (dict(k[1])["site"], dict(k[1])["journey"])
        for k in sink._histograms
        if dict(k[1])["journey"] != AWKWARD[0]
    }
    sink.prune(keep_checks, journeys)
    assert all(AWKWARD[0] not in c for c in sink._cache.gauges)
    assert all(dict(k[1]).get("journey") != AWKWARD[0] for k in sink._cache.histograms)
    assert set(sink._cache.counters) <= set(sink._counters)
    _assert_identical(sink)
    sink.vantage = "gcp-euw1"  # a reload renamed the vantage: every prefix carries it
    _assert_identical(sink)


# -- the sliced render ------------------------------------------------------------------------


def _big_sink(journeys: int) -> PrometheusSink:
    sink = PrometheusSink("aws-use1")
    for j in range(journeys):
        for n, site in enumerate(("aws-use1", "gcp-euw1")):
            sink.handle(_journey(f"journey-{j}", site, n=j + n))
    return sink


def _well_formed(body: bytes, openmetrics: bool) -> int:
    """Parses the scrape (strictly, for OpenMetrics) and checks that each histogram series is
    whole and consistent: cumulative buckets ending at +Inf, equal to its count. Returns the
    number of histogram series."""
    text = body.decode()
    families = list((openmetrics_families if openmetrics else classic_families)(text))
    assert len(families) == len(CATALOGUE)
    series = 0
    for family in families:
        if family.type != "histogram":
            continue
        by_series: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            entry = by_series.setdefault(labels, {"buckets": []})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))
            else:
                entry[s.name.rsplit("_", 1)[1]] = s.value
        for labels, entry in by_series.items():
            counts = [c for _, c in entry["buckets"]]
            assert counts == sorted(counts), labels
            assert entry["buckets"][-1][0] == math.inf, labels
            assert counts[-1] == entry["count"], labels
            series += 1
    return series


async def test_a_sliced_render_gives_the_loop_back_between_slices() -> None:
    sink = _big_sink(60)
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        start = ticks
        # One look at the clock every few series, a zero budget: it yields at each look.
        body = await sink.render_sliced(openmetrics=True, slice_seconds=0.0)
        sliced = ticks - start
        start = ticks
        whole = await sink.render_sliced(openmetrics=True, slice_seconds=math.inf)
        unsliced = ticks - start
    finally:
        stop = True
        await task
    assert sliced >= 20  # the ticker ran between the slices...
    assert unsliced == 0  # ...and cannot run at all in a render that never yields
    assert b"".join(body) == b"".join(whole) == sink.render(openmetrics=True)
    assert len(body) > 1  # in pieces, to be written one by one


async def test_results_arriving_between_slices_and_overlapping_scrapes_stay_well_formed() -> None:
    sink = _big_sink(40)
    stop = False
    fed = 0

    async def feeder() -> None:
        # Results as the scheduler delivers them, between the scrapes' slices: runs of the
        # journeys being rendered, and of journeys that appear mid-scrape.
        nonlocal fed
        while not stop:
            fed += 1
            sink.handle(_journey(f"journey-{fed % 40}", "aws-use1", n=fed, fail=fed % 3 == 0))
            sink.handle(_journey(f"new-{fed}", "gcp-euw1", n=fed))
            await asyncio.sleep(0)

    task = asyncio.create_task(feeder())
    try:
        bodies = await asyncio.gather(
            sink.render_sliced(openmetrics=True, slice_seconds=0.0),
            sink.render_sliced(openmetrics=False, slice_seconds=0.0),
            sink.render_sliced(openmetrics=True, slice_seconds=0.0),
        )
    finally:
        stop = True
        await task
    assert fed >= 10  # results did arrive while the scrapes were under way
    for chunks, openmetrics in zip(bodies, (True, False, True), strict=True):
        assert _well_formed(b"".join(chunks), openmetrics) >= 40 * 2 * 4
    # What the overlapping scrapes cached is right for the next one.
    _assert_identical(sink)


# -- a real agent --------------------------------------------------------------------------


def _promtool(*args: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# A sample line: name, labels (quoted values may hold anything escaped), value; then, in
# OpenMetrics, an optional exemplar.
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? \S+)(.*)$')


def _promtool_openmetrics(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Prometheus' own OpenMetrics parser, as promtool runs it to import a file into blocks.

    `promtool check metrics` parses the classic format only (an exemplar is a syntax error to
    it); `tsdb create-blocks-from openmetrics` parses OpenMetrics, `# EOF` and exemplars
    included, but wants a timestamp on every sample: one is added, nothing else changes."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match, line
            line = f"{match.group(1)} 1700000000{match.group(2)}"
        lines.append(line)
    source = tmp_path / "scrape.om"
    source.write_text("\n".join(lines) + "\n")
    return _promtool(
        "tsdb", "create-blocks-from", "openmetrics", str(source), str(tmp_path / "blocks")
    )


async def _get(session: aiohttp.ClientSession, url: str, accept: str) -> tuple[str, str]:
    async with session.get(url, headers={"Accept": accept}) as r:
        assert r.status == 200
        assert r.headers["Vary"] == "Accept"
        body = await r.read()
        # Written in pieces, but announced whole: no chunked encoding for a scraper to undo.
        assert int(r.headers["Content-Length"]) == len(body)
        return body.decode(), r.headers["Content-Type"]


async def test_promtool_accepts_a_real_agent_s_scrapes_in_both_formats(
    platform: Platform, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "failsight.yaml", demo_config_data(platform))
    async with running_agent(config) as agent:
        await wait_for(lambda: len(platform.state("aws-use1").requests) >= 12)
        url = f"http://127.0.0.1:{agent.port}/metrics"
        async with aiohttp.ClientSession() as session:
            # Two scrapes at once (one per format), as two HA Prometheus servers make them.
            (classic, classic_type), (om, om_type) = await asyncio.gather(
                _get(session, url, "text/plain"), _get(session, url, PROMETHEUS_ACCEPT)
            )
            async with session.head(url) as head:
                assert head.status == 200 and await head.read() == b""
                assert head.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert classic_type.startswith("text/plain; version=0.0.4")
    assert om_type.startswith("application/openmetrics-text; version=1.0.0")
    linted = _promtool("check", "metrics", text=classic)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert ' # {trace_id="' in om or ' # {span_id="' in om  # exemplars, for the parser
    imported = _promtool_openmetrics(om, tmp_path)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    samples = sum(1 for line in om.splitlines() if not line.startswith("#"))
    assert re.search(rf"\s{samples}\s+{samples}\s+{samples}\s", imported.stdout), imported.stdout
    _well_formed(om.encode(), openmetrics=True)
    _well_formed(classic.encode(), openmetrics=False)


def _gauge(text: str, name: str, openmetrics: bool) -> float:
    families = (openmetrics_families if openmetrics else classic_families)(text)
    values = [s.value for f in families for s in f.samples if s.name == name]
    assert len(values) == 1, name
    return float(values[0])


@pytest.mark.parametrize("accept", ["text/plain", PROMETHEUS_ACCEPT])
async def test_the_lag_maximum_holds_a_stall_for_its_window_whoever_scrapes(
    platform: Platform, tmp_path: Path, accept: str
) -> None:
    config = write_config(tmp_path / "failsight.yaml", demo_config_data(platform))
    async with running_agent(config) as agent, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{agent.port}/metrics"

        async def lag_max() -> float:
            text, _ = await _get(session, url, accept)
            return _gauge(text, "failsight_event_loop_lag_max_seconds", "openmetrics" in accept)

        seen = len(agent._loop_lags)
        await wait_for(lambda: len(agent._loop_lags) > seen)  # the monitor's timer is set
        # Block the loop longer than the monitor's period: whatever its phase, a timer of the
        # monitor falls due during the block, at least 0.8 - 0.5 s before the block ends.
        time.sleep(0.8)
        await wait_for(lambda: agent.loop_lag >= 0.3)
        first = await lag_max()
        # More wake-ups and another scrape (a second Prometheus): the maximum is still there.
        seen = len(agent._loop_lags)
        await wait_for(lambda: len(agent._loop_lags) >= seen + 2)
        second = await lag_max()
        assert first >= 0.3 and second >= 0.3
        # Past the window, the stall no longer counts.
        agent.loop_lag_window = 0.0
        assert await lag_max() == 0.0


def test_the_agent_runs_without_prometheus_client() -> None:
    """prometheus_client is the tests' oracle (and the benches' baseline), no longer the
    agent's: the agent, its API and its CLI import without it."""
    script = """
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "prometheus_client":
            raise ImportError(name)

sys.meta_path.insert(0, Refuse())
import failsight.agent.api, failsight.agent.cli, failsight.agent.runtime
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
