"""The Prometheus path: a sink that keeps the latest results and renders them at scrape time,
in the classic text format or, for a scraper that asks for it, in OpenMetrics with exemplars.

The text is written here, not by prometheus_client: byte for byte what its `generate_latest`
(classic and OpenMetrics) writes for the same state, which the tests check against it. Each
series' text is cached (its `name{labels} ` prefix, and its lines until its value changes), and a
scrape renders in slices of at most `SLICE_SECONDS`, giving the event loop back between slices:
a scrape of tens of thousands of series does not delay a probe's timer by more than a slice.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate

from failsight.agent.metrics import CATALOGUE, gauges_of, increments_of
from failsight.core.results import Result
from failsight.core.telemetry import Exemplar, MetricSpec, MetricType, Sample

Labels = tuple[tuple[str, str], ...]
SeriesKey = tuple[str, Labels]

# The format classic.generate_latest writes (prometheus_client >= 0.21 names it
# CONTENT_TYPE_PLAIN_0_0_4).
CLASSIC_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# The longest a scrape holds the event loop at a time: a probe's timer fires at most this late
# because of a scrape, whatever the number of series (a series is never split across slices).
SLICE_SECONDS = 0.002
# Series rendered between two looks at the clock (a look costs about as much as a cached
# series; a re-rendered histogram with exemplars costs some tens of microseconds).
_CLOCK_EVERY = 8
# The body comes in pieces of about this size (written one by one): a single buffer of several
# megabytes would cost its allocation and copy in one go, on the loop, and again in the
# transport's buffer.
CHUNK_BYTES = 64 * 1024


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    buckets: list[int] = field(init=False)
    # The latest exemplar of each bucket, with the value observed (OpenMetrics allows one per
    # bucket sample): the newest trace is the one worth opening, and its timestamp never goes
    # back, which Prometheus' exemplar storage requires of each series.
    exemplars: list[tuple[Exemplar, float] | None] = field(init=False)
    total: float = 0.0
    # Observations so far: the render cache re-renders the series when this moved.
    version: int = 0

    def __post_init__(self) -> None:
        self.buckets = [0] * (len(self.bounds) + 1)
        self.exemplars = [None] * (len(self.bounds) + 1)

    def observe(self, value: float, exemplar: Exemplar | None = None) -> None:
        index = bisect.bisect_left(self.bounds, value)
        self.buckets[index] += 1
        if exemplar is not None:
            self.exemplars[index] = (exemplar, value)
        self.total += value
        self.version += 1

    def les(self) -> list[str]:
        """The `le` label of each bucket, as the bucket samples carry it."""
        return [*("+Inf" if b == math.inf else repr(b) for b in self.bounds), "+Inf"]


@dataclass(slots=True)
class _GaugeText:
    """A check's gauge lines, rendered from the very result `handle()` stored (a new result
    replaces it, so identity tells whether the text is stale)."""

    result: Result
    lines: list[tuple[str, bytes]]  # (family name, sample line)
    prefixes: dict[SeriesKey, str]


@dataclass(slots=True)
class _HistogramText:
    version: int
    buckets: list[str]  # the prefix of each bucket sample
    count: str
    sum: str
    classic: bytes | None = None  # the series' lines for `version`, rendered on demand
    openmetrics: bytes | None = None


class _RenderCache:
    """The rendered text of the sink's series, for one vantage (every prefix carries it)."""

    def __init__(self, vantage: str) -> None:
        self.vantage = vantage
        self.gauges: dict[str, _GaugeText] = {}  # by check
        self.counters: dict[SeriesKey, tuple[float, str, bytes]] = {}  # (value, prefix, line)
        self.histograms: dict[SeriesKey, _HistogramText] = {}
        self.live: dict[SeriesKey, str] = {}  # the prefixes of the last scrape's live samples


class PrometheusSink:
    """Takes results (cheap dict updates on the event loop) and renders them on scrape.

    Gauges are kept per check and replaced as a set by each result, so nothing stale
    survives a replica, step or check going away. Counters and histograms accumulate, and are
    pruned on reload for journeys and sites that are no longer configured. A render does no
    I/O: live values (views, verdicts, export counts) come from in-memory `sources`, rendered
    afresh at every scrape (they are few).
    """

    name = "prometheus"

    def __init__(self, vantage: str) -> None:
        self.vantage = vantage
        # The latest result of each check: its gauges are worked out when a scrape renders
        # them, once per scrape rather than once per run.
        self._gauges: dict[str, Result] = {}
        self._counters: dict[SeriesKey, float] = {}
        self._histograms: dict[SeriesKey, _Histogram] = {}
        self.sources: list[Callable[[], Iterable[Sample]]] = []
        self._cache = _RenderCache(vantage)

    def handle(self, result: Result) -> None:
        # No rendering here: a new gauge list, a new counter value or a histogram's version is
        # what tells the next scrape that a series' text is stale.
        if result.skipped:
            return
        self._gauges[result.check] = result
        for sample in increments_of(result):
            key = (sample.spec.name, sample.labels)
            if sample.spec.type is MetricType.HISTOGRAM:
                hist = self._histograms.get(key)
                if hist is None:
                    hist = self._histograms[key] = _Histogram(sample.spec.buckets)
                hist.observe(sample.value, sample.exemplar)
            else:
                self._counters[key] = self._counters.get(key, 0.0) + sample.value

    def prune(self, checks: set[str], journeys: set[tuple[str, str]]) -> None:
        """Forget checks, and (site, journey) pairs, that a reload removed, and their text."""
        self._gauges = {c: g for c, g in self._gauges.items() if c in checks}

        def live(key: SeriesKey) -> bool:
            labels = dict(key[1])
            return "journey" not in labels or (labels["site"], labels["journey"]) in journeys

        self._counters = {k: v for k, v in self._counters.items() if live(k)}
        self._histograms = {k: v for k, v in self._histograms.items() if live(k)}
        # New dicts, not deletions: a scrape in progress keeps (and fills) the old ones.
        cached = self._cache
        cached.gauges = {c: t for c, t in cached.gauges.items() if c in self._gauges}
        cached.counters = {k: t for k, t in cached.counters.items() if k in self._counters}
        cached.histograms = {k: t for k, t in cached.histograms.items() if k in self._histograms}

    def render(self, openmetrics: bool = False) -> bytes:
        """The whole exposition at once (tests, benches): the loop is held until it is done."""
        steps = self._render(openmetrics, math.inf)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                chunks: list[bytes] = done.value
                return b"".join(chunks)

    async def render_sliced(
        self, openmetrics: bool = False, slice_seconds: float = SLICE_SECONDS
    ) -> list[bytes]:
        """The exposition in pieces of about `CHUNK_BYTES`, rendered in slices of about
        `slice_seconds` with the event loop free between them (results keep arriving; each
        series is rendered whole in one slice, so a histogram's buckets, count and sum always
        agree)."""
        steps = self._render(openmetrics, slice_seconds)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                chunks: list[bytes] = done.value
                return chunks
            await give_way()

    def _render(
        self, openmetrics: bool, slice_seconds: float
    ) -> Generator[None, None, list[bytes]]:
        """Yields whenever a slice is used up; returns the body, in pieces."""
        cached = self._cache
        if cached.vantage != self.vantage:  # a reload renamed the vantage: every prefix changes
            cached = self._cache = _RenderCache(self.vantage)
        vantage = cached.vantage
        gauge_text, counter_text, hist_text = cached.gauges, cached.counters, cached.histograms
        # Snapshots of the series (C-speed copies): results that arrive between slices change
        # the dicts, which an iteration across slices must not see.
        gauges = list(self._gauges.items())
        counters = list(self._counters.items())
        histograms = list(self._histograms.items())
        clock = _Clock(slice_seconds)
        # Sample lines by family, in the order generate_latest over the old collector wrote
        # them: the checks' gauges, then the live samples (gauges after, counters before the
        # sink's own), then the counters and histograms in the order they first appeared.
        # Encoded as they are rendered (and cached so): the body is one join of bytes.
        lines: dict[str, list[bytes]] = {}

        for check, result in gauges:
            text = gauge_text.get(check)
            if text is None or text.result is not result:
                text = gauge_text[check] = _gauge_text(
                    result, text.prefixes if text is not None else {}, vantage
                )
            for family, line in text.lines:
                lines.setdefault(family, []).append(line)
            if clock.due():
                yield
                clock.restart()

        # Taken whole, in this slice: a source reads the agent's live state as it goes. Their
        # prefixes are kept from one scrape to the next, for the series still there.
        live = [s for source in self.sources for s in source()]
        known, used = cached.live, dict[SeriesKey, str]()
        for s in live:
            spec = CATALOGUE.get(s.spec.name)
            if spec is None or spec.type is MetricType.HISTOGRAM:
                continue  # generate_latest had no place for them either
            if (s.spec.type is MetricType.COUNTER) != (spec.type is MetricType.COUNTER):
                continue
            key = (spec.name, s.labels)
            prefix = used.get(key) or known.get(key)
            if prefix is None:
                prefix = _prefix(_sample_name(spec), spec, s.labels, vantage)
            used[key] = prefix
            sample_line = prefix + _go_float(s.value) + "\n"
            lines.setdefault(spec.name, []).append(sample_line.encode())
            if clock.due():
                yield
                clock.restart()
        cached.live = used

        for key, value in counters:
            entry = counter_text.get(key)
            if entry is None or entry[0] != value:
                spec = CATALOGUE.get(key[0])
                if spec is None or spec.type is not MetricType.COUNTER:
                    continue
                prefix = entry[1] if entry else _prefix(_sample_name(spec), spec, key[1], vantage)
                sample_line = prefix + _go_float(value) + "\n"
                entry = counter_text[key] = (value, prefix, sample_line.encode())
            lines.setdefault(key[0], []).append(entry[2])
            if clock.due():
                yield
                clock.restart()

        for key, hist in histograms:
            htext = hist_text.get(key)
            if htext is None or htext.version != hist.version:
                spec = CATALOGUE.get(key[0])
                if spec is None or spec.type is not MetricType.HISTOGRAM:
                    continue
                htext = hist_text[key] = _histogram_text(spec, key[1], hist, htext, vantage)
            if openmetrics:
                if htext.openmetrics is None:
                    htext.openmetrics = _histogram_lines(htext, hist, exemplars=True)
                line = htext.openmetrics
            else:
                if htext.classic is None:
                    htext.classic = _histogram_lines(htext, hist, exemplars=False)
                line = htext.classic
            lines.setdefault(key[0], []).append(line)
            if clock.due():
                yield
                clock.restart()

        # Every family of the catalogue (the agent's and every kind's) is described from the
        # first scrape, samples or not, so a dashboard or rule finds its metric before the
        # first run, and a family left out of a kind's `metrics` cannot go unnoticed.
        headers = _headers(openmetrics)
        chunks: list[bytes] = []
        pending: list[bytes] = []
        size = 0
        for name in CATALOGUE:
            pending.append(headers[name])
            for series_text in lines.get(name, ()):
                pending.append(series_text)
                size += len(series_text)
                if size >= CHUNK_BYTES:
                    chunks.append(b"".join(pending))
                    pending, size = [], 0
                if clock.due():
                    yield
                    clock.restart()
        if openmetrics:
            pending.append(b"# EOF\n")
        chunks.append(b"".join(pending))
        return chunks


async def give_way() -> None:
    """Lets everything the loop has waiting run before the next slice. One `sleep(0)` is not
    enough: it queues the render behind what is ready now, but a timer that fell due during
    the slice (a probe's) is queued only after that, so it would wait out a second slice."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class _Clock:
    """Tells a render when its slice is used up, looking at the clock every few series."""

    __slots__ = ("_budget", "_count", "_deadline")

    def __init__(self, budget: float) -> None:
        self._budget = budget
        self._count = 0
        self._deadline = time.perf_counter() + budget

    def due(self) -> bool:
        self._count += 1
        if self._count < _CLOCK_EVERY:
            return False
        self._count = 0
        return time.perf_counter() >= self._deadline

    def restart(self) -> None:
        self._deadline = time.perf_counter() + self._budget


async def exposition(sink: PrometheusSink, accept: str) -> tuple[list[bytes], str]:
    """The body (in pieces, to write one by one) and Content-Type of a scrape, by the
    scraper's Accept header.

    OpenMetrics 1.0.0 when the scraper accepts it at least as much as the classic text format
    (Prometheus asks for it first): only it carries exemplars. Otherwise the classic text
    format 0.0.4, as before. The series are the same in both, so a scraper that switches
    format sees no series end and none begin. Unlike prometheus_client's `choose_encoder`,
    a scraper that names only an older OpenMetrics version gets 1.0.0 (a 0.0.1 parser reads
    it) rather than the classic format, and one that asks for `text/plain; version=1.0.0`
    gets the 0.0.4 format labelled as such: the agent writes no other text format.
    """
    wants = _quality(accept, "application/openmetrics-text")
    if wants > 0 and wants >= _quality(accept, "text/plain"):
        return await sink.render_sliced(openmetrics=True), OPENMETRICS_CONTENT_TYPE
    return await sink.render_sliced(openmetrics=False), CLASSIC_CONTENT_TYPE


def _quality(accept: str, media_type: str) -> float:
    """The highest q the Accept header gives `media_type` by name (wildcards do not count:
    `*/*` is a client that takes anything, and anything means the classic format)."""
    best = 0.0
    for item in accept.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if name.lower() != media_type:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        best = max(best, q)
    return best


# -- the text format, as prometheus_client writes it ------------------------------------------


def _go_float(value: float) -> str:
    """A sample value as Go (and prometheus_client's floatToGoString) writes it."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    s = repr(value)
    dot = s.find(".")
    # Go switches to exponents sooner than Python.
    if value > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def _family_name(spec: MetricSpec) -> str:
    # A counter family is named without `_total`, its samples with it (OpenMetrics).
    name = spec.prometheus_name
    if spec.type is MetricType.COUNTER and name.endswith("_total"):
        return name[: -len("_total")]
    return name


def _sample_name(spec: MetricSpec) -> str:
    family = _family_name(spec)
    return family + "_total" if spec.type is MetricType.COUNTER else family


def _labels(spec: MetricSpec, values: Labels, vantage: str) -> dict[str, str]:
    # By position, as the family's label names: (vantage, *spec.labels).
    return dict(zip(("vantage", *spec.labels), (vantage, *(v for _, v in values)), strict=False))


def _prefix(name: str, spec: MetricSpec, values: Labels, vantage: str) -> str:
    return name + _label_text(_labels(spec, values, vantage)) + " "


def _gauge_text(result: Result, known: dict[SeriesKey, str], vantage: str) -> _GaugeText:
    prefixes: dict[SeriesKey, str] = {}
    lines: list[tuple[str, bytes]] = []
    for s in gauges_of(result):
        spec = CATALOGUE.get(s.spec.name)
        if spec is None or spec.type is not MetricType.GAUGE:
            continue
        key = (spec.name, s.labels)
        prefix = prefixes.get(key) or known.get(key)
        if prefix is None:
            prefix = _prefix(spec.prometheus_name, spec, s.labels, vantage)
        prefixes[key] = prefix
        lines.append((spec.name, (prefix + _go_float(s.value) + "\n").encode()))
    return _GaugeText(result, lines, prefixes)


def _histogram_text(
    spec: MetricSpec, values: Labels, hist: _Histogram, old: _HistogramText | None, vantage: str
) -> _HistogramText:
    if old is not None:
        return _HistogramText(hist.version, old.buckets, old.count, old.sum)
    name = _family_name(spec)
    labels = _labels(spec, values, vantage)
    buckets = [name + "_bucket" + _label_text({**labels, "le": le}) + " " for le in hist.les()]
    rest = _label_text(labels) + " "
    return _HistogramText(hist.version, buckets, name + "_count" + rest, name + "_sum" + rest)


def _histogram_lines(text: _HistogramText, hist: _Histogram, exemplars: bool) -> bytes:
    counts = list(accumulate(hist.buckets))
    total = counts[-1]
    if total < 1_000_000:  # the usual case, in one comprehension: a float's text of a count
        lines = [f"{prefix}{n}.0\n" for prefix, n in zip(text.buckets, counts, strict=True)]
    else:
        lines = [
            prefix + _go_float(n) + "\n" for prefix, n in zip(text.buckets, counts, strict=True)
        ]
    if exemplars:
        for i, seen in enumerate(hist.exemplars):
            if seen is not None:
                ex, value = seen
                labels = _label_text(dict(ex.labels)) or "{}"
                line = f"{text.buckets[i]}{_go_count(counts[i])}"
                lines[i] = f"{line} # {labels} {_go_float(value)} {ex.timestamp}\n"
    # generate_latest leaves out the count and sum of a histogram with negative buckets.
    if not hist.bounds or hist.bounds[0] >= 0:
        lines.append(text.count + _go_count(total) + "\n")
        lines.append(text.sum + _go_float(hist.total) + "\n")
    return "".join(lines).encode()


def _go_count(n: int) -> str:
    """`_go_float(float(n))`, quicker for the small whole numbers a bucket counts."""
    return f"{n}.0" if 0 <= n < 1_000_000 else _go_float(n)


@cache
def _headers(openmetrics: bool) -> dict[str, bytes]:
    """Each catalogue family's HELP and TYPE lines. The classic format names a counter family
    with `_total` and escapes no quotes in HELP; OpenMetrics names it without, and does."""
    out: dict[str, bytes] = {}
    for name, spec in CATALOGUE.items():
        family = _family_name(spec)
        if openmetrics:
            text = spec.help.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
        else:
            text = spec.help.replace("\\", r"\\").replace("\n", r"\n")
            if spec.type is MetricType.COUNTER:
                family += "_total"
        out[name] = f"# HELP {family} {text}\n# TYPE {family} {spec.type.value}\n".encode()
    return out
