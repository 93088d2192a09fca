"""The cleanup journal against the simulated platform: a journey killed mid-run (a real
SIGKILL of a real process) leaves a note, and the next process cleans up after it; failed
cleanups are retried, then given up and counted; nothing is written without cleanup steps or
without a state dir; damaged files are set aside."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from failsight.agent.config import Config
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.probes.journal import (
    MAX_ENTRY_BYTES,
    CleanupJournal,
    JournalEntry,
    RetryReport,
    retry_pending,
)
from failsight.probes.journey import JourneyCheck
from tests.fixtures.platform import demo_config_data, write_config
from tests.probes.test_journey import journey_checks

REPO = Path(__file__).resolve().parents[2]
SITE = "aws-use1"
JOURNEY = "order-to-invoice"
CHECK = f"journey/{JOURNEY}/{SITE}"
TOKEN = "tok-SECRET-0d9f"  # the journey's bearer token: never on disk, never logged
API_KEY = "key-SECRET-77a1"  # a step header value: likewise

# The agent side of the crash test: one journey run with a journal, in its own process.
CHILD = """
import asyncio
import sys

from failsight.agent.config import load_config
from failsight.agent.scheduler import run_check
from failsight.core.check import ProbeContext
from failsight.core.http import new_session
from failsight.probes.journal import CleanupJournal
from tests.probes.test_journey import journey_checks


async def main(config_path: str, state_dir: str) -> None:
    config = load_config(config_path)
    check = next(c for c in journey_checks(config) if c.site == "aws-use1")
    async with new_session() as http:
        ctx = ProbeContext(vantage="child", http=http, journal=CleanupJournal(state_dir))
        print("running", flush=True)
        result = await run_check(check, ctx)
        print("finished", result.ok, flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
async def http_ctx() -> AsyncIterator[ProbeContext]:
    async with new_session() as http:
        yield ProbeContext(vantage="test-vantage", http=http)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def make(platform: Platform, tmp_path: Path) -> Callable[..., tuple[Config, Path]]:
    """The demo config against `platform`, with a bearer token and a secret step header;
    `journey` updates the journey's keys."""

    def build(**journey: Any) -> tuple[Config, Path]:
        data = demo_config_data(platform)
        spec = data["journeys"][0]
        spec["bearer_token"] = TOKEN
        spec["steps"][0]["headers"] = {"X-Api-Key": API_KEY}
        spec.update(journey)
        path = tmp_path / "failsight.yaml"
        return write_config(path, data), path

    return build


def check_of(config: Config, site: str = SITE) -> JourneyCheck:
    check = next(c for c in journey_checks(config) if c.site == site)
    assert isinstance(check, JourneyCheck)
    return check


def files(state_dir: Path, pattern: str = "*") -> list[Path]:
    directory = state_dir / "cleanup"
    return sorted(directory.glob(pattern)) if directory.exists() else []


def assert_no_secret(text: str) -> None:
    assert TOKEN not in text
    assert API_KEY not in text


def synthetic_orders(platform: Platform, site: str = SITE) -> list[str]:
    return [o.id for o in platform.state(site).orders.values() if o.synthetic]


def waiting_on(platform: Platform, suffix: str) -> bool:
    """Whether a request to a path ending in `suffix` is being held by the platform."""
    return any(r.path.endswith(suffix) and r.status is None for r in platform.state(SITE).requests)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:g}s: {what}")
        await asyncio.sleep(0.02)


# --- (1) a real crash mid-journey -------------------------------------------------------------


async def test_a_journey_killed_mid_run_is_cleaned_up_by_the_next_process(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    tmp_path: Path,
    http_ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, config_path = make(timeout="60s", interval="120s")
    # The order is created and allocated, then `pick` takes two minutes: the child is
    # mid-journey, with an order on the platform, when it is killed.
    platform.set_fault(SITE, Fault(kind="latency", step="pick", latency_ms=120_000))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(config_path),
        str(state_dir),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        def mid_journey() -> bool:
            if child.returncode is not None:
                raise AssertionError(f"the child exited early ({child.returncode})")
            return waiting_on(platform, "/pick")

        await until(mid_journey, "the child waiting on the pick step")
    finally:
        child.send_signal(signal.SIGKILL)
        out, err = await child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert b"finished" not in out

    # The crash left the order behind, and a note of it.
    (order_id,) = synthetic_orders(platform)
    (note,) = files(state_dir, "*.json")
    assert stat.S_IMODE(note.stat().st_mode) == 0o600
    assert stat.S_IMODE(note.parent.stat().st_mode) == 0o700
    text = note.read_text()
    assert_no_secret(text)
    stored = json.loads(text)
    assert stored["variables"]["order_id"] == order_id
    assert stored["variables"]["vantage"] == "child"
    assert (stored["check"], stored["site"], stored["attempts"]) == (CHECK, SITE, 0)
    assert note.name == stored["run_id"] + ".json"
    assert "allocation_id" not in stored["variables"]  # the cleanup does not use it

    # The next process: a fresh journal on the same state dir, one retry pass.
    platform.recover(SITE)
    journal = CleanupJournal(state_dir)
    assert journal.pending() == []  # nothing read before the first pass
    with caplog.at_level(logging.INFO, logger="failsight.probes.journal"):
        report = await retry_pending(journal, journey_checks(config), http_ctx)
    assert report == RetryReport(cleaned=1, pending=0)
    assert synthetic_orders(platform) == []
    assert journal.pending() == [] and files(state_dir) == []
    assert journal.abandoned == {}
    # The cleanup carried the original run's id, as the run itself would have.
    cancel = [r for r in platform.state(SITE).requests if r.path.endswith("/cancel")]
    assert [r.headers["X-Failsight-Run-Id"] for r in cancel] == [stored["run_id"]]
    assert f"cleaned up after run {stored['run_id']}" in caplog.text
    assert_no_secret(caplog.text)


# --- (2) cleanup failing ----------------------------------------------------------------------


async def test_a_failed_cleanup_is_retried_then_given_up_and_counted(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, _ = make()
    journal = CleanupJournal(state_dir)
    ctx = dataclasses.replace(http_ctx, journal=journal)
    platform.set_fault(SITE, Fault(kind="fail_step", step="cancel", status=503))
    caplog.set_level(logging.INFO)

    result = await run_check(check_of(config), ctx)
    assert result.ok, result.summary()
    assert not result.cleanup[0].ok and result.facts["cleanup_ok"] is False
    (entry,) = journal.pending()
    assert (entry.run_id, entry.check, entry.attempts) == (result.run_id, CHECK, 1)
    (order_id,) = synthetic_orders(platform)
    assert entry.variables["order_id"] == order_id
    (note,) = files(state_dir, "*.json")
    assert_no_secret(note.read_text())
    assert json.loads(note.read_text())["attempts"] == 1

    report = await retry_pending(journal, journey_checks(config), http_ctx, max_attempts=3)
    assert report == RetryReport(failed=1, pending=1)
    assert [e.attempts for e in journal.pending()] == [2]
    assert json.loads(note.read_text())["attempts"] == 2
    assert "failed (attempt 2 of 3): step cancel_order: HTTP 503" in caplog.text

    report = await retry_pending(journal, journey_checks(config), http_ctx, max_attempts=3)
    assert report == RetryReport(abandoned=1, pending=0)
    assert journal.abandoned == {(JOURNEY, SITE): 1}
    assert journal.pending() == [] and files(state_dir) == []
    (given_up,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = given_up.getMessage()
    for part in (result.run_id, JOURNEY, SITE, "3 cleanup attempts failed"):
        assert part in message
    assert_no_secret(caplog.text)
    # Given up, not cleaned: the order is still there (what the counter is for).
    assert synthetic_orders(platform) == [order_id]

    # Nothing more happens on later passes.
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport()


async def test_a_failed_cleanup_is_done_by_a_retry_once_the_platform_is_back(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
) -> None:
    config, _ = make()
    journal = CleanupJournal(state_dir)
    ctx = dataclasses.replace(http_ctx, journal=journal)
    platform.set_fault(SITE, Fault(kind="outage", step="cancel"))
    await run_check(check_of(config), ctx)
    assert len(journal.pending()) == 1 and len(synthetic_orders(platform)) == 1
    assert (await retry_pending(journal, journey_checks(config), http_ctx)).failed == 1

    platform.recover(SITE)
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport(cleaned=1)
    assert synthetic_orders(platform) == [] and files(state_dir) == []


# --- the entry's life during a run -------------------------------------------------------------


async def test_a_run_is_noted_as_soon_as_its_cleanup_could_act_and_left_alone_in_flight(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
) -> None:
    journal = CleanupJournal(state_dir)
    ctx = dataclasses.replace(http_ctx, journal=journal)

    # The demo's cleanup needs the order id: while order_submit is unanswered there is
    # nothing a retry could do, and nothing is written.
    config, _ = make(timeout="1s")
    check = check_of(config)
    platform.set_fault(SITE, Fault(kind="hang", step="order_submit"))
    run = asyncio.create_task(run_check(check, ctx))
    await until(lambda: waiting_on(platform, "/orders"), "order_submit held")
    assert files(state_dir) == []
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport()
    result = await run
    assert result.failed_step is not None and result.failed_step.name == "order_submit"
    assert result.cleanup[0].skipped

    # A cleanup step that needs only built-ins can act at once: noted before the first step.
    by_run_id = {
        "name": "purge_run",
        "method": "POST",
        "path": "/api/v1/orders/{{run_id}}/cancel",
        "expect": {"status": [200, 404]},
    }
    demo = demo_config_data(platform)["journeys"][0]
    config, _ = make(timeout="1s", cleanup=[*demo["cleanup"], by_run_id])
    check = check_of(config)
    run = asyncio.create_task(run_check(check, ctx))
    await until(lambda: len(files(state_dir, "*.json")) == 1, "the note")
    (note,) = files(state_dir, "*.json")
    stored = json.loads(note.read_text())
    assert set(stored["variables"]) == {"run_id", "site", "tenant", "vantage", "journey"}
    assert journal.pending() == []  # in flight: not owed yet
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport(busy=1)
    result = await run
    assert result.failed_step is not None and result.failed_step.name == "order_submit"
    assert [(c.name, c.ok, c.skipped) for c in result.cleanup] == [
        ("cancel_order", True, True),
        ("purge_run", True, False),
    ]
    assert files(state_dir) == []

    # Mid-journey with an order: noted with its id, and a retry pass does not cancel it under
    # the running journey.
    config, _ = make(timeout="1500ms")
    check = check_of(config)
    platform.recover(SITE)
    platform.set_fault(SITE, Fault(kind="hang", step="pick"))
    run = asyncio.create_task(run_check(check, ctx))
    await until(lambda: waiting_on(platform, "/pick"), "pick held")
    (order_id,) = synthetic_orders(platform)
    (note,) = files(state_dir, "*.json")
    assert json.loads(note.read_text())["variables"]["order_id"] == order_id
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport(busy=1)
    assert synthetic_orders(platform) == [order_id]
    result = await run
    assert result.failed_step is not None and result.failed_step.name == "pick"
    assert result.cleanup[0].ok and not result.cleanup[0].skipped
    assert synthetic_orders(platform) == [] and files(state_dir) == []


async def test_a_successful_run_leaves_no_entry(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
) -> None:
    config, _ = make()
    journal = CleanupJournal(state_dir)
    ctx = dataclasses.replace(http_ctx, journal=journal)
    for _ in range(3):
        result = await run_check(check_of(config), ctx)
        assert result.ok and result.facts["cleanup_ok"] is True, result.summary()
    assert journal.pending() == [] and files(state_dir) == []
    assert synthetic_orders(platform) == []


# --- (3) no cleanup steps, (4) no state dir ------------------------------------------------------


async def test_a_journey_without_cleanup_steps_writes_nothing(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
) -> None:
    config, _ = make(cleanup=[])
    journal = CleanupJournal(state_dir)
    ctx = dataclasses.replace(http_ctx, journal=journal)
    result = await run_check(check_of(config), ctx)
    assert result.ok, result.summary()
    assert not state_dir.exists()
    assert journal.pending() == []


async def test_a_journal_without_a_state_dir_is_a_no_op(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    tmp_path: Path,
    http_ctx: ProbeContext,
) -> None:
    config, _ = make()
    journal = CleanupJournal(None)
    assert not journal.enabled
    await journal.record(check=CHECK, journey=JOURNEY, site=SITE, run_id="ab", variables={})
    await journal.update("ab", {"order_id": "x"})
    await journal.finish("ab", cleaned=False)
    await journal.load()
    assert journal.pending() == [] and journal.abandoned == {}

    before = sorted(tmp_path.rglob("*"))
    platform.set_fault(SITE, Fault(kind="fail_step", step="cancel", status=503))
    ctx = dataclasses.replace(http_ctx, journal=journal)
    result = await run_check(check_of(config), ctx)
    assert result.ok and not result.cleanup[0].ok
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport()
    assert journal.pending() == []
    assert sorted(tmp_path.rglob("*")) == before


# --- (5) damaged files; giving up -----------------------------------------------------------------


async def test_corrupt_files_are_moved_aside_once_and_never_retried(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, _ = make()
    directory = state_dir / "cleanup"
    directory.mkdir(parents=True)
    good = JournalEntry(
        check=CHECK,
        journey=JOURNEY,
        site=SITE,
        run_id="00000000000000aa",
        created_at=time.time(),
        attempts=1,
        variables={"order_id": "ord-gone", "run_id": "00000000000000aa"},
    )
    (directory / "00000000000000aa.json").write_text(json.dumps(good.to_json()))
    (directory / "0123456789abcdef.json").write_bytes(b'{"check": "journey/x/y", "run')
    (directory / "fedcba9876543210.json").write_text(json.dumps({"version": 1, "check": 3}))
    other = {**good.to_json(), "run_id": "1111111111111111"}
    (directory / "2222222222222222.json").write_text(json.dumps(other))  # name mismatch
    (directory / "3333333333333333.json").write_bytes(b"[" * 100_000)
    (directory / ".tmp-abc123").write_bytes(b"half a fi")  # a write cut short by a crash
    (directory / "README").write_text("not ours")

    journal = CleanupJournal(state_dir)
    with caplog.at_level(logging.ERROR, logger="failsight.probes.journal"):
        report = await retry_pending(journal, journey_checks(config), http_ctx)
    # The good entry was cleaned (its order is long gone: 404 is a success for cancel).
    assert report == RetryReport(cleaned=1, pending=0)
    assert journal.corrupt == 4
    names = sorted(p.name for p in directory.iterdir())
    assert names == [
        "0123456789abcdef.json.corrupt",
        "2222222222222222.json.corrupt",
        "3333333333333333.json.corrupt",
        "README",
        "fedcba9876543210.json.corrupt",
    ]
    unreadable = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(unreadable) == 4
    assert all("moved aside" in m for m in unreadable)

    # Never again: not by this journal, not by the next process's.
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport()
    fresh = CleanupJournal(state_dir)
    assert await retry_pending(fresh, journey_checks(config), http_ctx) == RetryReport()
    assert fresh.corrupt == 0


async def test_entries_of_unconfigured_journeys_old_entries_and_the_excess_are_given_up(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, _ = make()
    journal = CleanupJournal(state_dir, max_pending=3)

    async def owed(check: str, journey: str, run_id: str, **variables: object) -> None:
        await journal.record(
            check=check,
            journey=journey,
            site=SITE,
            run_id=run_id,
            variables={"run_id": run_id, **variables},
        )
        await journal.finish(run_id, cleaned=False)

    await owed("journey/retired/aws-use1", "retired", "00000000000000a1", order_id="ord-x")
    for n in range(2, 6):
        await owed(CHECK, JOURNEY, f"00000000000000a{n}", order_id=f"ord-{n}")
    # The cap (3) gave up the oldest as the fifth came in.
    assert [e.run_id for e in journal.pending()] == [f"00000000000000a{n}" for n in (3, 4, 5)]
    assert journal.abandoned == {("retired", SITE): 1, (JOURNEY, SITE): 1}
    assert "more than 3 cleanups are owed" in caplog.text

    # An old entry (its file rewritten as a day and a half old) is given up at the next pass.
    old = journal.pending()[0]
    stale = dataclasses.replace(old, created_at=time.time() - 36 * 3600)
    note = state_dir / "cleanup" / f"{old.run_id}.json"
    note.write_text(json.dumps(stale.to_json()))
    fresh = CleanupJournal(state_dir)
    # ...and an entry of a journey no longer in the config.
    await fresh.record(
        check="journey/retired/aws-use1", journey="retired", site=SITE, run_id="b1", variables={}
    )
    await fresh.finish("b1", cleaned=False)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="failsight.probes.journal"):
        report = await retry_pending(fresh, journey_checks(config), http_ctx)
    assert report == RetryReport(cleaned=2, abandoned=2, pending=0)
    assert fresh.abandoned == {("retired", SITE): 1, (JOURNEY, SITE): 1}
    messages = [r.getMessage() for r in caplog.records]
    assert any("journey retired at site aws-use1 is no longer configured" in m for m in messages)
    assert any(f"run {old.run_id}" in m and "older than 24 h" in m for m in messages)
    assert files(state_dir) == []


async def test_variables_too_large_to_keep_are_dropped_and_the_entry_given_up(
    platform: Platform,
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, _ = make()
    journal = CleanupJournal(state_dir)
    await journal.record(
        check=CHECK, journey=JOURNEY, site=SITE, run_id="c1", variables={"run_id": "c1"}
    )
    await journal.update("c1", {"run_id": "c1", "order_id": "o" * 200_000})
    await journal.finish("c1", cleaned=False)
    (note,) = files(state_dir, "*.json")
    assert note.stat().st_size <= MAX_ENTRY_BYTES
    (entry,) = journal.pending()
    assert entry.dropped == ("order_id",) and "order_id" not in entry.variables
    assert "order_id not kept (too large, or holding a secret)" in caplog.text
    report = await retry_pending(journal, journey_checks(config), http_ctx)
    assert report == RetryReport(abandoned=1)
    assert journal.abandoned == {(JOURNEY, SITE): 1}
    assert "variable(s) order_id could not be kept" in caplog.text


async def test_an_extracted_value_holding_a_secret_is_not_written(
    make: Callable[..., tuple[Config, Path]],
    state_dir: Path,
    http_ctx: ProbeContext,
) -> None:
    config, _ = make()  # loading the config registers its secrets for redaction
    journal = CleanupJournal(state_dir)
    await journal.record(
        check=CHECK, journey=JOURNEY, site=SITE, run_id="d1", variables={"run_id": "d1"}
    )
    # A target echoing our token into a field the journey extracts.
    await journal.update("d1", {"run_id": "d1", "order_id": f"ord-1 Bearer {TOKEN}"})
    await journal.finish("d1", cleaned=False)
    (note,) = files(state_dir, "*.json")
    assert_no_secret(note.read_text())
    (entry,) = journal.pending()
    assert entry.dropped == ("order_id",)
    assert await retry_pending(journal, journey_checks(config), http_ctx) == RetryReport(
        abandoned=1
    )
