"""Cost of the cleanup journal per journey run: the demo journey (6 steps + 1 cleanup step)
against the simulated platform on loopback, N runs with and without a journal, interleaved.

Run: `.venv/bin/python -m bench.cleanup_journal [--runs N] [--state-root DIR]`. Nothing is
asserted: medians with min, max and p90, the runs without the journal as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from failsight.agent.config import Config, plan
from failsight.agent.demo.simulator import Platform
from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.probes.journal import CleanupJournal
from failsight.probes.journey import JourneyCheck

DEMO = Path(__file__).resolve().parent.parent / "agent" / "demo" / "config.yaml"


def config_for(platform: Platform) -> Config:
    data = yaml.safe_load(DEMO.read_text())
    for site in data["sites"]:
        site["base_url"] = platform.urls[site["name"]]
    data["replication"] = []
    data["peers"] = []
    data["journeys"][0]["steps"][2]["poll"]["interval"] = "1ms"
    return Config.model_validate(data)


def fmt(xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    return (
        f"median {statistics.median(ms):6.2f} ms  min {min(ms):6.2f}  max {max(ms):6.2f}  "
        f"p90 {statistics.quantiles(ms, n=10)[-1]:6.2f}"
    )


async def main(n: int, state_root: str) -> None:
    async with Platform(["aws-use1", "gcp-euw1"], allocation_delay=0.0) as platform:
        check = next(c for c in plan(config_for(platform)) if c.site == "aws-use1")
        assert isinstance(check, JourneyCheck)
        with tempfile.TemporaryDirectory(dir=state_root) as state:
            journal = CleanupJournal(state)
            async with new_session() as http:
                plain = ProbeContext(vantage="bench", http=http)
                journaled = ProbeContext(vantage="bench", http=http, journal=journal)
                wall: dict[str, list[float]] = {"without": [], "with": []}
                reported: dict[str, list[float]] = {"without": [], "with": []}
                for i in range(n + 20):
                    for name, ctx in (("without", plain), ("with", journaled))[
                        :: 1 if i % 2 else -1
                    ]:
                        t0 = time.perf_counter()
                        result = await run_check(check, ctx)
                        elapsed = time.perf_counter() - t0
                        assert result.ok and result.facts["cleanup_ok"], result.summary()
                        if i >= 20:  # warm-up done
                            wall[name].append(elapsed)
                            reported[name].append(result.duration)
                assert journal.pending() == [] and not os.listdir(Path(state) / "cleanup")
    fs = os.popen(f"df -T {state_root} | tail -1").read().split()[1]
    print(
        f"N={n} runs each, interleaved; state dir on {state_root} ({fs}); {sys.version.split()[0]}"
    )
    for name in ("without", "with"):
        print(f"{name:8s} journal  wall per run (steps+cleanup): {fmt(wall[name])}")
    for name in ("without", "with"):
        print(f"{name:8s} journal  result.duration (steps only):  {fmt(reported[name])}")
    extra = statistics.median(wall["with"]) - statistics.median(wall["without"])
    print(
        f"median extra per run: {extra * 1000:.2f} ms (2 journal file operations: the note "
        "written after order_submit, its removal after the cleanup)"
    )


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--state-root", default=tempfile.gettempdir())
    args = p.parse_args()
    asyncio.run(main(args.runs, args.state_root))


if __name__ == "__main__":
    cli()
