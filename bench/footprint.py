"""Footprint: RSS over time of a real agent with 200 journeys, 10 replication pairs, 20 DNS names.

Run: `.venv/bin/python -m bench.footprint` (default 600 s; `--seconds 60 --sample-every 10` or
`--quick` for a smoke run). Nothing is asserted. The agent is `failsight run` (JSON logs at info
to /dev/null) pinned to CPU 0; the journey target (bench/target.py) is on CPU 1; a real
PostgreSQL 15 primary + streaming replica (agent/demo/postgres.py, which the test fixtures
re-export) backs all 10 clusters (each with its own heartbeat table) and a real dnsmasq
(tests/fixtures/dnsmasq.py) serves the 20 names. RSS is VmRSS from /proc/<pid>/status, sampled
on a fixed period; each sample also scrapes /metrics (as Prometheus would) to show the checks
are really running.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
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

PRIMARY_SITE = "aws-use1"
STANDBY_SITE = "gcp-euw1"  # also the replica's cluster_name in tests/fixtures/postgres.py
GOAL_MB = 80.0


def agent_config(
    *,
    port: int,
    target_url: str,
    journeys: int,
    journey_interval: str,
    clusters: int,
    primary_dsn: str,
    replica_dsn: str,
    replica_name: str,
    dns_names: int,
    dns_port: int,
) -> dict[str, Any]:
    journey = five_step_journey("fp").model_dump(by_alias=True, exclude_defaults=True)
    return {
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
                "sites": [PRIMARY_SITE],
            }
            for i in range(journeys)
        ],
        "replication": [
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
        ],
        "dns": [
            {
                "name": f"name{n:02d}.test",
                "interval": "5s",
                "resolvers": [{"name": "dnsmasq", "address": "127.0.0.1", "port": dns_port}],
                "answers": {PRIMARY_SITE: ["127.0.1.1"], STANDBY_SITE: ["127.0.1.2"]},
                "expect_site": PRIMARY_SITE,
            }
            for n in range(dns_names)
        ],
    }


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


def run(
    seconds: float,
    sample_every: float,
    journeys: int,
    journey_interval: str,
    clusters: int,
    dns_names: int,
) -> list[dict[str, float]]:
    # The builders tests/fixtures/postgres.py re-exports; the dnsmasq fixture module pulls in
    # pytest, which the other benchmarks do not need, hence the late imports.
    from failsight.agent.demo.postgres import MONITOR_ROLE, REPLICA_NAME, running_pair
    from tests.fixtures.dnsmasq import running_dnsmasq

    hosts = {f"name{n:02d}.test": ["127.0.1.1"] for n in range(dns_names)}
    samples: list[dict[str, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="failsight-bench-fp-") as tmp,
        Target(cpu=SIDE_CPU if two_cores() else None) as url,
        running_pair() as pair,
        running_dnsmasq(hosts) as dns,
    ):
        wait_http(url + "/")
        port = free_port()
        config = Path(tmp) / "footprint.yaml"
        data = agent_config(
            port=port,
            target_url=url,
            journeys=journeys,
            journey_interval=journey_interval,
            clusters=clusters,
            primary_dsn=pair.primary.dsn(MONITOR_ROLE),
            replica_dsn=pair.replica.dsn(MONITOR_ROLE),
            replica_name=REPLICA_NAME,
            dns_names=dns_names,
            dns_port=dns.port,
        )
        config.write_text(json.dumps(data, indent=1))  # JSON is YAML
        check = subprocess.run(
            [str(FAILSIGHT), "validate", str(config)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise SystemExit(f"the footprint config is refused:\n{check.stderr}")
        log = Path(tmp) / "agent.log"
        proc = subprocess.Popen(
            pinned(
                [str(FAILSIGHT), "run", "--config", str(config)],
                PROBER_CPU if two_cores() else None,
            ),
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
            start = time.monotonic()
            n = 0
            while True:
                due = start + n * sample_every
                time.sleep(max(0.0, due - time.monotonic()))
                if proc.poll() is not None:
                    raise SystemExit(f"the agent exited {proc.returncode}:\n{log.read_text()}")
                sample = {"t": time.monotonic() - start, "rss_mb": rss_mb(proc.pid)}
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
                    f"  t={sample['t']:5.0f}s RSS {sample['rss_mb']:6.1f} MB (scrape "
                    f"{sample['scrape_ms']:.0f} ms); journey runs "
                    f"{sample['journey_runs_ok']:.0f} ok / {sample['journey_runs_failed']:.0f} "
                    f"failed; replication checks ok {sample['replication_ok']:.0f}/{clusters} "
                    f"(streaming {sample['replication_streaming']:.0f}); dns ok "
                    f"{sample['dns_ok']:.0f}/{dns_names} (match {sample['dns_match']:.0f})",
                    flush=True,
                )
                n += 1
                if sample["t"] >= seconds - 0.5:
                    break
        finally:
            stop_process(proc)
    return samples


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


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--sample-every", type=float, default=30.0)
    p.add_argument("--journeys", type=int, default=200)
    p.add_argument("--journey-interval", default="2s")
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--dns-names", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="20 s, sampled every 5 s")
    p.add_argument("--summary-json")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.sample_every = 20.0, 5.0
    if two_cores():
        os.sched_setaffinity(0, {SIDE_CPU})
    print(
        f"footprint: {args.journeys} five-step journeys every {args.journey_interval}, "
        f"{args.clusters} replication clusters (interval 5s), {args.dns_names} DNS names "
        f"(interval 5s); {args.seconds:.0f}s, RSS every {args.sample_every:.0f}s",
        flush=True,
    )
    samples = run(
        args.seconds,
        args.sample_every,
        args.journeys,
        args.journey_interval,
        args.clusters,
        args.dns_names,
    )
    first, last = samples[0], samples[-1]
    peak = max(s["rss_mb"] for s in samples)
    settled = next((s for s in samples if s["t"] >= 60), first)
    slope = slope_mb_per_10min(samples)
    print(
        f"\nRSS at start {first['rss_mb']:.1f} MB, after {last['t']:.0f}s {last['rss_mb']:.1f} MB "
        f"(peak {peak:.1f}); growth {last['rss_mb'] - first['rss_mb']:+.1f} MB from start, "
        f"{last['rss_mb'] - settled['rss_mb']:+.1f} MB from t={settled['t']:.0f}s; slope over the "
        f"second half {slope:+.2f} MB per 10 min (goal <= {GOAL_MB:.0f} MB, no growth)"
    )
    scrapes = sorted(s["scrape_ms"] for s in samples)
    print(
        f"/metrics scrape time: median {statistics.median(scrapes):.0f} ms, "
        f"max {scrapes[-1]:.0f} ms"
    )
    runs = last["journey_runs_ok"] + last["journey_runs_failed"]
    print(
        f"journey runs {runs:.0f} ({last['journey_runs_failed']:.0f} failed); "
        f"replication checks ok at the end {last['replication_ok']:.0f}/{args.clusters}; "
        f"dns checks ok {last['dns_ok']:.0f}/{args.dns_names}"
    )
    write_summary(
        args.summary_json,
        [
            {
                "bench": "footprint",
                "figure": f"RSS at start / after {last['t']:.0f}s / peak (MB)",
                "value": f"{first['rss_mb']:.1f} / {last['rss_mb']:.1f} / {peak:.1f}",
                "goal": f"<= {GOAL_MB:.0f}",
                "met": "yes" if peak <= GOAL_MB else "no",
            },
            {
                "bench": "footprint",
                "figure": f"RSS growth from t={settled['t']:.0f}s; slope of 2nd half per 10 min",
                "value": f"{last['rss_mb'] - settled['rss_mb']:+.1f} MB; {slope:+.2f} MB",
                "goal": "no growth",
            },
            {
                "bench": "footprint",
                "figure": "/metrics scrape during the run: median / max (ms)",
                "value": f"{statistics.median(scrapes):.0f} / {scrapes[-1]:.0f}",
                "goal": "",
            },
        ],
    )


if __name__ == "__main__":
    main(sys.argv[1:])
