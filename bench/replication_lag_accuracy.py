"""Replication lag accuracy: each method's error against a known replay pause (issue 3 figures).

Run: `.venv/bin/python -m bench.replication_lag_accuracy`. Starts a real PostgreSQL 15 primary and
streaming replica (the test fixture's builder), runs the replication check at its interval the
whole time, pauses WAL replay on the replica for known durations, and prints, per method, the
error of the reported lag against the truth (time since the pause). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import aiohttp

from failsight.agent.demo.postgres import PgPair, running_pair
from failsight.core.check import ProbeContext
from failsight.core.results import Result
from failsight.probes.replication import ReplicationCheck, ReplicationConfig

METHODS = ("heartbeat", "replay_timestamp", "primary_stat")


def lag_of(result: Result, method: str) -> float | None:
    for m in result.measurements:
        if m.name == "replication_lag_seconds" and m.labels.get("method") == method:
            return m.value
    return None


class Cadence:
    """Runs the check every interval, as the scheduler would, and keeps every result."""

    def __init__(self, check: ReplicationCheck, ctx: ProbeContext, interval: float) -> None:
        self.check, self.ctx, self.interval = check, ctx, interval
        self.results: list[Result] = []
        self.new = asyncio.Event()

    async def run(self) -> None:
        next_at = time.monotonic()
        while True:
            self.results.append(await self.check.run(self.ctx))
            self.new.set()
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def first_after(self, wall: float) -> Result:
        """The first result of a run that started at or after `wall` (epoch seconds)."""
        while True:
            for result in reversed(self.results):
                if result.started_at >= wall:
                    return result
            self.new.clear()
            await self.new.wait()


async def measure(
    pair: PgPair, durations: list[float], reps: int, interval: float
) -> dict[tuple[str, float], list[float]]:
    cfg = ReplicationConfig.model_validate(
        {
            "cluster": "bench",
            "rpo": "30s",
            "interval": interval,
            "timeout": "5s",
            "primary": {"site": "primary", "dsn": pair.primary.dsn()},
            "replicas": [{"site": pair.replica_name, "dsn": pair.replica.dsn()}],
        }
    )
    errors: dict[tuple[str, float], list[float]] = {(m, d): [] for m in METHODS for d in durations}
    check = ReplicationCheck(cfg, vantage="bench")
    async with aiohttp.ClientSession() as http:
        cadence = Cadence(check, ProbeContext(vantage="bench", http=http), interval)
        runner = asyncio.create_task(cadence.run())
        try:
            await asyncio.sleep(3 * interval)  # heartbeats flowing, table made
            for duration in durations:
                for _ in range(reps):
                    # A random phase against the write cadence: the heartbeat's error depends on it.
                    await asyncio.sleep(random.uniform(0, interval))
                    before = time.time()
                    await asyncio.to_thread(pair.pause_replay)
                    paused_at = (before + time.time()) / 2
                    result = await cadence.first_after(paused_at + duration)
                    # The phases of one run are milliseconds apart on loopback: its middle.
                    truth = result.started_at + result.duration / 2 - paused_at
                    for method in METHODS:
                        value = lag_of(result, method)
                        if value is not None:
                            errors[(method, duration)].append(value - truth)
                    await asyncio.to_thread(pair.resume_replay)
                    await asyncio.to_thread(pair.wait_replayed)
                    await asyncio.sleep(2 * interval)
        finally:
            runner.cancel()
            # Waits for the runner's end; a cancellation of this task itself still propagates.
            await asyncio.gather(runner, return_exceptions=True)
            await check.close()
    return errors


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--durations", default="2,5,10", help="pause lengths in seconds")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--interval", type=float, default=1.0, help="heartbeat interval, seconds")
    args = p.parse_args()
    durations = [float(d) for d in args.durations.split(",")]
    with running_pair() as pair:
        version = pair.primary.sql("SHOW server_version")
        errors = asyncio.run(measure(pair, durations, args.reps, args.interval))
    print(
        f"PostgreSQL {version}, heartbeat interval {args.interval:g}s, {args.reps} pauses per "
        "duration; error = reported lag - true lag (time since the pause), seconds"
    )
    print(f"{'method':<18}{'pause':>7}{'n':>4}{'median err':>12}{'max |err|':>11}")
    for method in METHODS:
        for duration in durations:
            errs = errors[(method, duration)]
            if errs:
                med = statistics.median(errs)
                worst = max(abs(e) for e in errs)
                print(f"{method:<18}{duration:>6g}s{len(errs):>4}{med:>+12.3f}{worst:>11.3f}")
            else:
                print(f"{method:<18}{duration:>6g}s{0:>4}{'no value':>12}{'':>11}")


if __name__ == "__main__":
    main()
