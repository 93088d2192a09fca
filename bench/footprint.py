"""Footprint: the agent's RSS, the code before issue 16 against this one, in the same run.

Run: `.venv/bin/python -m bench.footprint` (about 35 minutes) or `--quick` (about 4 minutes).
Nothing is asserted. Three parts:

(a) the sidecar: 3 five-step journeys on 2 sites against the local target (bench/target.py),
    no OTLP, IdP, replication or DNS, `--sidecar-runs` times (>= 3) per variant, the variants
    alternating: the old code (`--baseline-tree DIR`, e.g. a `git worktree` of the release
    before, run with PYTHONPATH=DIR), this code, this code with MALLOC_ARENA_MAX=2 (glibc's
    malloc arenas, one per thread that allocates, are the usual RSS cost of threads) and this
    code on asyncio's own loop (uvloop, the `fast` extra, hidden). RSS when /readyz first
    answers and after `--sidecar-seconds`; medians with min-max.
(b) the big run: 200 five-step journeys every 2s, 10 replication clusters on a real PostgreSQL
    15 primary + streaming replica (agent/demo/postgres.py), 20 DNS names on a real dnsmasq
    (tests/fixtures/dnsmasq.py), old then new, `--seconds` each; RSS sampled every
    `--sample-every` s, each sample also scraping /metrics (as Prometheus would) to show the
    checks really run. Start, steady state (last sample), peak and the slope of the 2nd half.
(c) the import cost of each dependency in a fresh interpreter (>= 3 per module, median):
    RSS and time of importing it alone, and on top of the agent's floor (aiohttp with its
    server, pydantic, PyYAML), which is what leaving it out of an agent would save.

The agent runs as `python -m failsight run` (JSON logs at info to /dev/null) pinned to CPU 0,
the target on CPU 1; the machine is shared, so the variants alternate and the noise falls on
all of them. RSS is VmRSS from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.blackbox import (
    FAILSIGHT,
    PROBER_CPU,
    SIDE_CPU,
    free_port,
    http_get,
    metric_sum,
    pinned,
    rss_mb,
    stop_process,
    two_cores,
    wait_http,
    write_summary,
)
from bench.journeys import five_step_journey
from bench.target import Target

ROOT = Path(__file__).resolve().parent.parent
PRIMARY_SITE = "aws-use1"
STANDBY_SITE = "gcp-euw1"  # also the replica's cluster_name in tests/fixtures/postgres.py
SIDECAR_GOAL_MB = 45.0
BIG_GOAL_MB = 70.0

# A directory whose `uvloop` refuses to import: on PYTHONPATH after the code, agent/cli.py's
# run_async falls back to asyncio's own loop, as in an install without the `fast` extra.
NO_UVLOOP = Path(tempfile.gettempdir()) / "failsight-bench-no-uvloop"

# variant -> (PYTHONPATH, extra environment)
VARIANTS: dict[str, tuple[list[Path], dict[str, str]]] = {
    "now": ([ROOT], {}),
    "now, MALLOC_ARENA_MAX=2": ([ROOT], {"MALLOC_ARENA_MAX": "2"}),
    "now, asyncio loop (no uvloop)": ([ROOT, NO_UVLOOP], {}),
}


def agent_config(
    *,
    port: int,
    target_url: str,
    journeys: int,
    journey_interval: str,
    journey_sites: Sequence[str] = (PRIMARY_SITE,),
    clusters: int = 0,
    primary_dsn: str = "",
    replica_dsn: str = "",
    replica_name: str = "",
    dns_names: int = 0,
    dns_port: int = 0,
) -> dict[str, Any]:
    journey = five_step_journey("fp").model_dump(by_alias=True, exclude_defaults=True)
    data: dict[str, Any] = {
        "agent": {"vantage": "bench", "listen": f"127.0.0.1:{port}"},
        "sites": [
            {"name": PRIMARY_SITE, "role": "primary", "base_url": target_url},
            {"name": STANDBY_SITE, "role": "standby", "base_url": target_url},
        ],
        "journeys": [
            {
                **journey,
                "name": f"journey{i:03d}",
                "interval": journey_interval,
                "sites": list(journey_sites),
            }
            for i in range(journeys)
        ],
    }
    if clusters:
        data["replication"] = [
            {
                "cluster": f"cluster{c:02d}",
                "rpo": "30s",
                "interval": "5s",
                # One table per cluster: ten clusters sharing one primary must not share rows.
                "heartbeat_table": f"failsight.heartbeat_c{c:02d}",
                "primary": {"site": PRIMARY_SITE, "dsn": primary_dsn},
                "replicas": [
                    {"site": STANDBY_SITE, "dsn": replica_dsn, "application_name": replica_name}
                ],
            }
            for c in range(clusters)
        ]
    if dns_names:
        data["dns"] = [
            {
                "name": f"name{n:02d}.test",
                "interval": "5s",
                "resolvers": [{"name": "dnsmasq", "address": "127.0.0.1", "port": dns_port}],
                "answers": {PRIMARY_SITE: ["127.0.1.1"], STANDBY_SITE: ["127.0.1.2"]},
                "expect_site": PRIMARY_SITE,
            }
            for n in range(dns_names)
        ]
    return data


def check_state(text: str) -> dict[str, float]:
    """What the agent's /metrics says about its checks: runs done and last outcomes."""
    return {
        "journey_runs_ok": metric_sum(text, "failsight_journey_runs_total", result="success"),
        "journey_runs_failed": metric_sum(text, "failsight_journey_runs_total", result="failure"),
        "replication_ok": metric_sum(text, "failsight_check_success", kind="replication"),
        "replication_streaming": metric_sum(text, "failsight_replication_streaming"),
        "dns_ok": metric_sum(text, "failsight_check_success", kind="dns"),
        "dns_match": metric_sum(text, "failsight_dns_answer_match"),
    }


@contextlib.contextmanager
def agent(variant: str, data: dict[str, Any], tmp: Path) -> Iterator[tuple[int, int]]:
    """`failsight run` of the variant's code on `data`, until /readyz answers: (pid, port)."""
    path, extra_env = VARIANTS[variant]
    config = tmp / "footprint.yaml"
    config.write_text(json.dumps(data, indent=1))  # JSON is YAML
    log = tmp / "agent.log"
    # cwd is the temporary directory: with `-m`, the working directory comes first on sys.path
    # and this checkout's own `failsight/` must not shadow the code under PYTHONPATH.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, path)), **extra_env}
    cmd = [sys.executable, "-m", "failsight", "run", "--config", str(config)]
    proc = subprocess.Popen(
        pinned(cmd, PROBER_CPU if two_cores() else None),
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        port = int(data["agent"]["listen"].rpartition(":")[2])
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        yield proc.pid, port
        if proc.poll() is not None:
            raise SystemExit(f"the agent ({variant}) exited {proc.returncode}:\n{log.read_text()}")
    finally:
        stop_process(proc)


def validate(data: dict[str, Any], tmp: Path) -> None:
    config = tmp / "validate.yaml"
    config.write_text(json.dumps(data, indent=1))
    check = subprocess.run(
        [str(FAILSIGHT), "validate", str(config)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise SystemExit(f"the footprint config is refused:\n{check.stderr}")


def spread(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


# -- (a) the sidecar ---------------------------------------------------------------------------


def sidecar(
    runs: int, seconds: float, variants: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    got: dict[str, dict[str, list[float]]] = {v: {"start": [], "steady": []} for v in variants}
    with (
        tempfile.TemporaryDirectory(prefix="failsight-bench-fp-") as tmpdir,
        Target(cpu=SIDE_CPU if two_cores() else None) as url,
    ):
        tmp = Path(tmpdir)
        wait_http(url + "/")
        for run in range(runs):
            for variant in variants:
                data = agent_config(
                    port=free_port(),
                    target_url=url,
                    journeys=3,
                    journey_interval="5s",
                    journey_sites=(PRIMARY_SITE, STANDBY_SITE),
                )
                if run == 0 and variant == variants[0]:
                    validate(data, tmp)
                with agent(variant, data, tmp) as (pid, port):
                    start = rss_mb(pid)
                    time.sleep(seconds)
                    text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=15.0)[1].decode()
                    steady = rss_mb(pid)
                state = check_state(text)
                got[variant]["start"].append(start)
                got[variant]["steady"].append(steady)
                print(
                    f"  sidecar run {run + 1} {variant:30s} RSS at /readyz {start:5.1f} MB, after "
                    f"{seconds:.0f}s {steady:5.1f} MB; journey runs "
                    f"{state['journey_runs_ok']:.0f} ok / "
                    f"{state['journey_runs_failed']:.0f} failed",
                    flush=True,
                )
    return got


# -- (b) the big run ---------------------------------------------------------------------------


def big_run(
    variant: str,
    url: str,
    pair: Any,
    dns_port: int,
    tmp: Path,
    *,
    seconds: float,
    sample_every: float,
    journeys: int,
    journey_interval: str,
    clusters: int,
    dns_names: int,
) -> list[dict[str, float]]:
    from failsight.agent.demo.postgres import MONITOR_ROLE, REPLICA_NAME

    data = agent_config(
        port=free_port(),
        target_url=url,
        journeys=journeys,
        journey_interval=journey_interval,
        clusters=clusters,
        primary_dsn=pair.primary.dsn(MONITOR_ROLE),
        replica_dsn=pair.replica.dsn(MONITOR_ROLE),
        replica_name=REPLICA_NAME,
        dns_names=dns_names,
        dns_port=dns_port,
    )
    validate(data, tmp)
    samples: list[dict[str, float]] = []
    with agent(variant, data, tmp) as (pid, port):
        start = time.monotonic()
        n = 0
        while True:
            due = start + n * sample_every
            time.sleep(max(0.0, due - time.monotonic()))
            sample = {"t": time.monotonic() - start, "rss_mb": rss_mb(pid)}
            scrape_start = time.monotonic()
            try:
                text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=15.0)[1].decode()
            except (OSError, TimeoutError) as exc:
                # A missed scrape is a finding, not the end of the run: RSS still counts.
                print(f"  t={sample['t']:5.0f}s /metrics scrape failed: {exc!r}", flush=True)
                text = ""
            sample["scrape_ms"] = (time.monotonic() - scrape_start) * 1000
            sample.update(check_state(text) if text else dict.fromkeys(check_state(""), 0.0))
            samples.append(sample)
            print(
                f"  {variant:6s} t={sample['t']:5.0f}s RSS {sample['rss_mb']:6.1f} MB (scrape "
                f"{sample['scrape_ms']:.0f} ms); journey runs "
                f"{sample['journey_runs_ok']:.0f} ok / {sample['journey_runs_failed']:.0f} "
                f"failed; replication ok {sample['replication_ok']:.0f}/{clusters} "
                f"(streaming {sample['replication_streaming']:.0f}); dns ok "
                f"{sample['dns_ok']:.0f}/{dns_names} (match {sample['dns_match']:.0f})",
                flush=True,
            )
            n += 1
            if sample["t"] >= seconds - 0.5:
                break
    return samples


def big_runs(
    args: argparse.Namespace, variants: Sequence[str]
) -> dict[str, list[dict[str, float]]]:
    # The builders tests/fixtures/postgres.py re-exports; the dnsmasq fixture module pulls in
    # pytest, which the other benchmarks do not need, hence the late imports.
    from failsight.agent.demo.postgres import running_pair
    from tests.fixtures.dnsmasq import running_dnsmasq

    hosts = {f"name{n:02d}.test": ["127.0.1.1"] for n in range(args.dns_names)}
    out: dict[str, list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="failsight-bench-fp-") as tmpdir,
        Target(cpu=SIDE_CPU if two_cores() else None) as url,
        running_pair() as pair,
        running_dnsmasq(hosts) as dns,
    ):
        wait_http(url + "/")
        for variant in variants:
            out[variant] = big_run(
                variant,
                url,
                pair,
                dns.port,
                Path(tmpdir),
                seconds=args.seconds,
                sample_every=args.sample_every,
                journeys=args.journeys,
                journey_interval=args.journey_interval,
                clusters=args.clusters,
                dns_names=args.dns_names,
            )
    return out


def slope_mb_per_10min(samples: Sequence[dict[str, float]]) -> float:
    """Least-squares RSS slope over the second half of the run (past start-up), MB per 10 min."""
    half = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
    if len(half) < 2:
        return float("nan")
    ts = [s["t"] for s in half]
    rs = [s["rss_mb"] for s in half]
    mt, mr = statistics.fmean(ts), statistics.fmean(rs)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (r - mr) for t, r in zip(ts, rs, strict=True)) / den * 600 if den else 0.0


# -- (c) the import cost of each dependency ----------------------------------------------------

# The agent's floor: what every agent imports whatever its config (the HTTP client and the API
# server, the config models, the config file's parser).
# `import pydantic` alone defers most of pydantic: pydantic.main (BaseModel) is what a model needs.
FLOOR = ("aiohttp", "aiohttp.web", "pydantic", "pydantic.main", "yaml")
# dependency -> the modules the agent imports of it
DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "aiohttp (client + web)": ("aiohttp", "aiohttp.web"),
    "pydantic (BaseModel)": ("pydantic", "pydantic.main"),
    "PyYAML": ("yaml",),
    "prometheus_client": ("prometheus_client",),
    "jsonpath-ng (ext parser)": ("jsonpath_ng.ext.parser",),
    "asyncpg": ("asyncpg",),
    "dnspython (asyncquery)": ("dns.asyncquery", "dns.message", "dns.rdatatype"),
    "uvloop (the `fast` extra)": ("uvloop",),
    "joserfc (jwt, jwk)": ("joserfc.jwt", "joserfc.jwk"),
    "cryptography (x509)": ("cryptography.x509",),
    "OpenTelemetry (agent/otlp.py)": ("failsight.agent.otlp",),
    "failsight.agent.runtime + cli": ("failsight.agent.runtime", "failsight.agent.cli"),
}

IMPORT_CHILD = r"""
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
for name in filter(None, sys.argv[2].split(",")):
    __import__(name)
before = rss()
start = time.perf_counter()
for name in sys.argv[1].split(","):
    __import__(name)
print(rss() - before, (time.perf_counter() - start) * 1000, rss())
"""


def import_cost(modules: Sequence[str], first: Sequence[str], code: Path) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_CHILD, ",".join(modules), ",".join(first)],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return [float("nan")] * 3
    return [float(x) for x in done.stdout.split()]


def import_table(reps: int) -> list[dict[str, str]]:
    print(
        f"\n(c) import cost, fresh interpreters, median of {reps} (min-max); 'alone' from a bare "
        f"interpreter, 'on the floor' after {', '.join(FLOOR)}"
    )
    bare = statistics.median(import_cost(["sys"], [], ROOT)[2] for _ in range(reps))
    print(f"  bare interpreter: RSS {bare:.1f} MB")
    header = (
        f"  {'dependency':32s} {'alone: RSS MB':>20s} {'ms':>18s} {'on the floor: RSS MB':>22s}"
    )
    print(header)
    rows = []
    for name, modules in DEPENDENCIES.items():
        alone = [import_cost(modules, [], ROOT) for _ in range(reps)]
        on_floor = [
            import_cost(modules, [m for m in FLOOR if m not in modules], ROOT) for _ in range(reps)
        ]
        rss, ms, floor_rss = (
            spread([a[0] for a in alone]),
            spread([a[1] for a in alone]),
            spread([f[0] for f in on_floor]),
        )
        print(f"  {name:32s} {rss:>20s} {ms:>18s} {floor_rss:>22s}", flush=True)
        rows.append(
            {
                "bench": "footprint",
                "figure": f"import {name}: RSS MB alone / ms alone / RSS MB on the floor",
                "value": f"{rss} / {ms} / {floor_rss}",
                "goal": "",
            }
        )
    floor = [import_cost(FLOOR, [], ROOT)[2] for _ in range(reps)]
    print(f"  the floor ({', '.join(FLOOR)}) in one interpreter: RSS {spread(floor)} MB")
    rows.append(
        {
            "bench": "footprint",
            "figure": f"RSS of a bare interpreter / with the floor ({', '.join(FLOOR)}) MB",
            "value": f"{bare:.1f} / {spread(floor)}",
            "goal": "",
        }
    )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="each big run")
    p.add_argument(
        "--baseline-tree", type=Path, help="a checkout of older code, measured as 'before'"
    )
    p.add_argument("--sample-every", type=float, default=30.0)
    p.add_argument("--journeys", type=int, default=200)
    p.add_argument("--journey-interval", default="2s")
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--dns-names", type=int, default=20)
    p.add_argument("--sidecar-runs", type=int, default=3)
    p.add_argument("--sidecar-seconds", type=float, default=60.0)
    p.add_argument("--import-runs", type=int, default=5)
    p.add_argument("--skip", action="append", choices=["sidecar", "big", "imports"], default=[])
    p.add_argument(
        "--quick",
        action="store_true",
        help="sidecar 3 x 10 s, big runs of 20 s sampled every 5 s, imports 3 times",
    )
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.sample_every = 20.0, 5.0
        args.sidecar_runs, args.sidecar_seconds, args.import_runs = 3, 10.0, 3
    if two_cores():
        os.sched_setaffinity(0, {SIDE_CPU})
    if args.baseline_tree is not None:
        VARIANTS["before"] = ([args.baseline_tree.resolve()], {})
    variants = list(VARIANTS)
    NO_UVLOOP.mkdir(exist_ok=True)
    (NO_UVLOOP / "uvloop.py").write_text('raise ImportError("hidden by bench/footprint.py")\n')
    if "before" in variants and not (VARIANTS["before"][0][0] / "failsight").is_dir():
        raise SystemExit(f"--baseline-tree {args.baseline_tree}: no failsight/ there")
    rows: list[dict[str, str]] = []
    print(f"footprint: variants {', '.join(variants)}; load average {os.getloadavg()[0]:.2f}")
    if "sidecar" not in args.skip:
        print(
            f"\n(a) sidecar: 3 five-step journeys every 5s on 2 sites, nothing else; "
            f"{args.sidecar_runs} runs of {args.sidecar_seconds:.0f}s per variant, alternating",
            flush=True,
        )
        got = sidecar(args.sidecar_runs, args.sidecar_seconds, variants)
        for variant in variants:
            start, steady = spread(got[variant]["start"]), spread(got[variant]["steady"])
            print(f"  {variant:30s} RSS MB at /readyz {start}, steady {steady}")
            rows.append(
                {
                    "bench": "footprint",
                    "figure": (
                        f"sidecar RSS MB at start / after {args.sidecar_seconds:.0f}s, {variant}"
                    ),
                    "value": f"{start} / {steady}",
                    "goal": f"<= {SIDECAR_GOAL_MB:.0f}" if variant == "now" else "",
                    "met": (
                        (
                            "yes"
                            if statistics.median(got[variant]["steady"]) <= SIDECAR_GOAL_MB
                            else "no"
                        )
                        if variant == "now"
                        else ""
                    ),
                }
            )
    if "big" not in args.skip:
        big_variants = [v for v in variants if v in ("before", "now")]
        print(
            f"\n(b) big run: {args.journeys} five-step journeys every {args.journey_interval}, "
            f"{args.clusters} replication clusters, {args.dns_names} DNS names (interval 5s); "
            f"{args.seconds:.0f}s each, {', '.join(big_variants)} in turn, RSS every "
            f"{args.sample_every:.0f}s",
            flush=True,
        )
        runs = big_runs(args, big_variants)
        for variant, samples in runs.items():
            first, last = samples[0], samples[-1]
            peak = max(s["rss_mb"] for s in samples)
            slope = slope_mb_per_10min(samples)
            scrapes = sorted(s["scrape_ms"] for s in samples)
            print(
                f"  {variant:6s} RSS at start {first['rss_mb']:.1f} MB, after {last['t']:.0f}s "
                f"{last['rss_mb']:.1f} MB (peak {peak:.1f}); slope of the 2nd half "
                f"{slope:+.2f} MB per 10 min; /metrics scrape median "
                f"{statistics.median(scrapes):.0f} ms, max {scrapes[-1]:.0f} ms; journey runs "
                f"{last['journey_runs_ok'] + last['journey_runs_failed']:.0f} "
                f"({last['journey_runs_failed']:.0f} failed), replication ok "
                f"{last['replication_ok']:.0f}/{args.clusters}, dns ok "
                f"{last['dns_ok']:.0f}/{args.dns_names}"
            )
            rows.append(
                {
                    "bench": "footprint",
                    "figure": f"big run RSS MB at start / after {last['t']:.0f}s / peak, {variant}",
                    "value": f"{first['rss_mb']:.1f} / {last['rss_mb']:.1f} / {peak:.1f}",
                    "goal": f"<= {BIG_GOAL_MB:.0f}" if variant == "now" else "",
                    "met": ("yes" if peak <= BIG_GOAL_MB else "no") if variant == "now" else "",
                }
            )
            rows.append(
                {
                    "bench": "footprint",
                    "figure": f"big run RSS slope of the 2nd half per 10 min, {variant}",
                    "value": f"{slope:+.2f} MB",
                    "goal": "no growth",
                }
            )
    if "imports" not in args.skip:
        rows += import_table(args.import_runs)
    write_summary(args.summary_json, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
