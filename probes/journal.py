"""The cleanup journal: what a journey run's cleanup will need, written down before the run
creates anything, so that an agent killed mid-journey (SIGKILL, OOM, a lost node) still cleans
up after itself once it is back.

One JSON file per run whose cleanup is owed, `<state_dir>/cleanup/<run_id>.json` (directory
0700, files 0600): the check, journey, site and run id, when the run started, how many cleanup
attempts failed, and the run's variables that its cleanup uses (the built-ins, and the values
extracted from the target so far). Never the journey's bearer token or header values: a retry
takes those from the config in force when it runs; and an extracted value holding a secret the
process knows (a target echoing our token) is not kept either.

The life of an entry:

- A JourneyCheck run records it as soon as a cleanup could act: before the first step when a
  cleanup step needs only built-ins (`{{run_id}}`), else right after the step that extracted
  the first variable the cleanup uses, before the next step (earlier, a retry would have
  nothing to do: every cleanup step would be skipped as not needed). It rewrites it after each
  step that extracted more of what the cleanup uses, and removes it once every cleanup step
  succeeded (a step skipped as not needed counts). A failed cleanup leaves it, attempts=1.
- `retry_pending` (at start, then every ~30 s) runs the journey's own cleanup steps for each
  entry not in flight, with the stored variables: success removes the entry, failure counts an
  attempt. An entry is given up (logged at ERROR, removed, counted in `abandoned`) after
  `max_attempts`, when its journey/site is no longer configured, when it is older than
  `max_age`, and, oldest first, beyond `max_pending` entries, so that a long outage cannot
  fill the disk.

Usage by the agent runtime::

    journal = CleanupJournal(config.agent.state_dir)        # one per process
    ctx = ProbeContext(..., journal=journal)
    await retry_pending(journal, checks, ctx)               # at start, then every ~30 s
    journal.abandoned      # {(journey, site): n}: a counter
    len(journal.pending()) # cleanups owed: a gauge

File I/O runs in a worker thread (asyncio.to_thread), awaited, so a run's writes keep their
order. Every write goes to a temporary file then os.replace: a crash leaves the previous file
or the new one, never half of one. No fsync: the journal protects against the agent process
dying, and a file written before a process crash survives it (it is in the page cache); what
it does not cover is the machine itself losing power in the seconds after a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from failsight.core.check import TIMEOUT_MARGIN, Check, ProbeContext
from failsight.core.redact import REDACTOR
from failsight.probes.journey import BUILTIN_VARIABLES, JourneyCheck, printable

log = logging.getLogger(__name__)

JOURNAL_DIR = "cleanup"
MAX_ATTEMPTS = 5  # cleanup attempts per run, the run's own included
MAX_AGE = 24 * 3600.0  # seconds: older entries are given up
MAX_PENDING = 1000  # entries kept at most: beyond it the oldest are given up
# The most an entry may take on disk. Larger variables (a target returning a megabyte as an
# order id) are not kept; a retry that needs them gives the entry up.
MAX_ENTRY_BYTES = 64 * 1024
FORMAT_VERSION = 1

_FILE_SUFFIX = ".json"
_CORRUPT_SUFFIX = ".corrupt"
_TMP_PREFIX = ".tmp-"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_MAX_TEXT = 512  # check, journey and site names in an entry


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One run whose cleanup is owed."""

    check: str  # e.g. journey/order-to-invoice/aws-use1
    journey: str
    site: str
    run_id: str
    created_at: float  # Unix time the run started
    attempts: int = 0  # cleanup attempts that failed
    variables: Mapping[str, object] = field(default_factory=dict)
    # Variables not kept, too large (MAX_ENTRY_BYTES) or holding a secret: a retry that
    # needs them gives up.
    dropped: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "version": FORMAT_VERSION,
            "check": self.check,
            "journey": self.journey,
            "site": self.site,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "attempts": self.attempts,
            "variables": dict(self.variables),
            "dropped": list(self.dropped),
        }

    @classmethod
    def from_json(cls, data: object) -> JournalEntry:
        """An entry read back from its file; ValueError when it is not a valid one."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown format version {str(data.get('version'))[:20]!r}")
        text = {}
        for key in ("check", "journey", "site", "run_id"):
            value = data.get(key)
            if not isinstance(value, str) or len(value) > _MAX_TEXT:
                raise ValueError(f"{key} must be a string")
            text[key] = value
        if not _RUN_ID.match(text["run_id"]):
            raise ValueError("run_id is not a run id")
        created_at = data.get("created_at")
        if not isinstance(created_at, int | float) or isinstance(created_at, bool):
            raise ValueError("created_at must be a number")
        if not math.isfinite(created_at):
            raise ValueError("created_at must be finite")
        attempts = data.get("attempts")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
            raise ValueError("attempts must be a non-negative integer")
        variables = data.get("variables")
        if not isinstance(variables, dict):
            raise ValueError("variables must be an object")
        dropped = data.get("dropped", [])
        if not isinstance(dropped, list) or not all(isinstance(d, str) for d in dropped):
            raise ValueError("dropped must be a list of names")
        return cls(
            check=text["check"],
            journey=text["journey"],
            site=text["site"],
            run_id=text["run_id"],
            created_at=float(created_at),
            attempts=attempts,
            variables=variables,
            dropped=tuple(dropped),
        )


@dataclass(frozen=True, slots=True)
class RetryReport:
    """What one retry pass did."""

    cleaned: int = 0  # cleanups that succeeded: entries removed
    failed: int = 0  # cleanups that failed again: kept for a later pass
    abandoned: int = 0  # entries given up in this pass (also counted in journal.abandoned)
    busy: int = 0  # runs still in flight in this process: left to them
    deferred: int = 0  # not reached within the pass's time budget
    pending: int = 0  # entries owed after the pass


class CleanupJournal:
    """The journal of one agent process (one per state dir: two processes must not share
    one). With `state_dir=None` it is disabled: `enabled` is False and every method is a
    no-op.

    Not thread-safe: use it from the event loop only (its file I/O runs in worker threads).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None,
        *,
        max_pending: int = MAX_PENDING,
        max_age: float = MAX_AGE,
    ) -> None:
        self.directory = Path(state_dir) / JOURNAL_DIR if state_dir is not None else None
        self.max_pending = max_pending
        self.max_age = max_age
        # Entries given up, by (journey, site): for a counter metric.
        self.abandoned: dict[tuple[str, str], int] = {}
        # Unreadable files moved aside (as `<name>.corrupt`): for a counter metric.
        self.corrupt = 0
        self._entries: dict[str, JournalEntry] = {}
        # What each entry's file must hold; a run id absent here must have no file. The file
        # writes (in threads) read it when they run, so that whatever the order the threads
        # run in, the last one leaves the file as the event loop last wanted it.
        self._payloads: dict[str, bytes] = {}
        self._active: set[str] = set()  # runs in flight here (a journey run or a retry)
        self._file_lock = threading.Lock()
        self._load_lock = asyncio.Lock()
        self._loaded = False
        self._dir_ready = False
        self._io_failing = False

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def owed(self) -> int:
        """How many cleanups are owed (pending() without building and sorting the list: it is
        read on every scrape)."""
        return sum(1 for run_id in self._entries if run_id not in self._active)

    def pending(self) -> list[JournalEntry]:
        """The cleanups owed, oldest first: entries of runs that are not in flight in this
        process (those written by this process, and, once `load()` or a first
        `retry_pending` ran, those an earlier process left on disk)."""
        entries = [e for e in self._entries.values() if e.run_id not in self._active]
        return sorted(entries, key=lambda e: (e.created_at, e.run_id))

    # --- what a journey run calls (failsight.core.check.RunJournal) -----------------------

    async def record(
        self,
        *,
        check: str,
        journey: str,
        site: str,
        run_id: str,
        variables: Mapping[str, object],
    ) -> None:
        """Note a run whose cleanup could now act (see failsight.core.check.RunJournal)."""
        if self.directory is None:
            return
        entry = JournalEntry(
            check=check,
            journey=journey,
            site=site,
            run_id=run_id,
            created_at=time.time(),
            variables=dict(variables),
        )
        self._active.add(run_id)
        await self._store(entry)
        if len(self._entries) > self.max_pending:
            await self._enforce_cap()

    async def update(self, run_id: str, variables: Mapping[str, object]) -> None:
        """The run extracted variables its cleanup uses: note them."""
        entry = self._entries.get(run_id)
        if self.directory is None or entry is None:
            return
        await self._store(dataclasses.replace(entry, variables=dict(variables), dropped=()))

    async def finish(self, run_id: str, *, cleaned: bool) -> None:
        """The run's cleanup is over: forget the run if it `cleaned`, else keep it (one
        failed attempt) for `retry_pending`."""
        self._active.discard(run_id)
        entry = self._entries.get(run_id)
        if self.directory is None or entry is None:
            return
        if cleaned:
            await self._remove(run_id)
        else:
            await self._store(dataclasses.replace(entry, attempts=entry.attempts + 1))

    # --- loading -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the entries an earlier process left (once; `retry_pending` calls it). Files
        that cannot be read as entries are logged and moved aside as `<name>.corrupt`."""
        if self.directory is None:
            return
        async with self._load_lock:
            if self._loaded:
                return
            found, corrupt = await asyncio.to_thread(self._scan)
            self._loaded = True
            self.corrupt += corrupt
            for entry in found:
                if entry.run_id not in self._entries:
                    entry, payload = _encode(entry)
                    self._entries[entry.run_id] = entry
                    self._payloads[entry.run_id] = payload
            if found:
                log.info(
                    "cleanup journal: %d run(s) of an earlier process to clean up after",
                    len(found),
                )

    def _scan(self) -> tuple[list[JournalEntry], int]:
        assert self.directory is not None
        found: list[JournalEntry] = []
        corrupt = 0
        with self._file_lock:
            try:
                names = sorted(os.listdir(self.directory))
            except FileNotFoundError:
                return [], 0
            except OSError as exc:
                log.error("cleanup journal: cannot read %s: %s", self.directory, exc)
                return [], 0
            for name in names:
                path = self.directory / name
                if name.startswith(_TMP_PREFIX):
                    # A write cut short by a crash (ours are all under this lock).
                    with contextlib.suppress(OSError):
                        path.unlink()
                    continue
                if not name.endswith(_FILE_SUFFIX):
                    continue
                try:
                    found.append(_read_entry(path))
                except (OSError, ValueError, RecursionError) as exc:
                    corrupt += 1
                    aside = path.with_name(name + _CORRUPT_SUFFIX)
                    try:
                        os.replace(path, aside)
                    except OSError as move_error:
                        log.error(
                            "cleanup journal: %s is unreadable (%s) and cannot be moved "
                            "aside (%s); it is ignored",
                            path,
                            exc,
                            move_error,
                        )
                    else:
                        log.error(
                            "cleanup journal: %s is unreadable (%s): moved aside as %s; "
                            "the cleanup of that run will not be retried",
                            path,
                            exc,
                            aside.name,
                        )
        return found, corrupt

    # --- file I/O --------------------------------------------------------------------------------

    async def _store(self, entry: JournalEntry) -> None:
        entry, payload = _encode(entry)
        previous = self._entries.get(entry.run_id)
        if entry.dropped and (previous is None or previous.dropped != entry.dropped):
            log.warning(
                "cleanup journal: run %s of journey %s at site %s: variable(s) %s not kept (too "
                "large, or holding a secret); if the agent stops before this run's cleanup, it "
                "cannot be retried",
                entry.run_id,
                entry.journey,
                entry.site,
                ", ".join(entry.dropped),
            )
        self._entries[entry.run_id] = entry
        self._payloads[entry.run_id] = payload
        await asyncio.to_thread(self._sync_file, entry.run_id)

    async def _remove(self, run_id: str) -> None:
        self._entries.pop(run_id, None)
        self._payloads.pop(run_id, None)
        await asyncio.to_thread(self._sync_file, run_id)

    def _sync_file(self, run_id: str) -> None:
        """Make the run's file what the event loop last wanted (in a worker thread)."""
        assert self.directory is not None
        path = self.directory / (run_id + _FILE_SUFFIX)
        with self._file_lock:
            payload = self._payloads.get(run_id)
            try:
                if payload is None:
                    path.unlink(missing_ok=True)
                else:
                    self._write(path, payload)
            except OSError as exc:
                if not self._io_failing:
                    log.error(
                        "cleanup journal: cannot write %s: %s; runs are kept in memory only "
                        "until it works again (a crash would lose them)",
                        path,
                        exc,
                    )
                self._io_failing = True
            else:
                if self._io_failing:
                    log.info("cleanup journal: writing to %s works again", self.directory)
                self._io_failing = False

    def _write(self, path: Path, payload: bytes) -> None:
        directory = path.parent
        if not self._dir_ready:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(directory, 0o700)  # also when it existed with a looser mode
            self._dir_ready = True
        # mkstemp creates the file 0600. Write then rename: never half a file.
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # --- giving up ---------------------------------------------------------------------------

    async def _give_up(self, entry: JournalEntry, why: str) -> None:
        """Stop trying: log it (no variable values, they may be tokens), count it, forget."""
        log.error(
            "cleanup journal: giving up the cleanup after run %s of journey %s at site %s "
            "(started %s): %s; what the run created may remain on the platform (its requests "
            "carried the run id in X-Failsight-Run-Id)",
            entry.run_id,
            entry.journey,
            entry.site,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.created_at)),
            why,
        )
        key = (entry.journey, entry.site)
        self.abandoned[key] = self.abandoned.get(key, 0) + 1
        await self._remove(entry.run_id)

    async def _enforce_cap(self) -> int:
        """Give up the oldest entries beyond `max_pending`; how many were given up."""
        excess = len(self._entries) - self.max_pending
        if excess <= 0:
            return 0
        oldest = self.pending()[:excess]  # in-flight runs are never given up here
        for entry in oldest:
            await self._give_up(
                entry, f"more than {self.max_pending} cleanups are owed (the oldest go first)"
            )
        return len(oldest)


def _encode(entry: JournalEntry) -> tuple[JournalEntry, bytes]:
    """The entry's file content, within MAX_ENTRY_BYTES, with no secret: variables holding a
    secret the process knows are dropped, then the largest ones until it fits (all named in
    `dropped`)."""
    variables = dict(entry.variables)
    dropped = list(entry.dropped)
    if REDACTOR:
        for name, value in entry.variables.items():
            try:
                text = json.dumps(value)
            except (ValueError, TypeError, RecursionError):
                continue  # dropped below, as unwritable
            if REDACTOR.text(text) != text:
                del variables[name]
                dropped.append(name)
    while True:
        candidate = dataclasses.replace(entry, variables=variables, dropped=tuple(dropped))
        try:
            payload = json.dumps(candidate.to_json(), separators=(",", ":")).encode()
        except (ValueError, TypeError, RecursionError):
            payload = b""
        # Built-ins are short text from the config and are dropped last.
        droppable = [k for k in variables if k not in BUILTIN_VARIABLES] or list(variables)
        if (payload and len(payload) <= MAX_ENTRY_BYTES) or not droppable:
            return candidate, payload
        largest = max(droppable, key=lambda k: _size(variables[k]))
        del variables[largest]
        dropped.append(largest)


def _size(value: object) -> int:
    try:
        return len(json.dumps(value))
    except (ValueError, TypeError, RecursionError):
        return MAX_ENTRY_BYTES + 1  # cannot be written at all: the first to go


def _read_entry(path: Path) -> JournalEntry:
    with path.open("rb") as source:
        data = source.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
    entry = JournalEntry.from_json(json.loads(data))
    if entry.run_id + _FILE_SUFFIX != path.name:
        raise ValueError("the file name is not the entry's run id")
    return entry


# --- the retry pass ----------------------------------------------------------------------------


async def retry_pending(
    journal: CleanupJournal,
    checks: Iterable[Check],
    ctx: ProbeContext,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    concurrency: int = 4,
    budget: float | None = None,
) -> RetryReport:
    """One pass over the cleanups owed: run each one's journey cleanup steps again.

    `checks` are the configured checks (the scheduler's, or the journey kind's `plan`): an
    entry's journey is found by check name, and its cleanup runs with the config in force now
    (token, IdP, site headers) and the variables the journal kept. Success removes the entry;
    failure counts an attempt, and after `max_attempts` (the run's own attempt included) the
    entry is given up. Entries whose journey/site is no longer configured, or that are older
    than `journal.max_age`, are given up without a try; so are the oldest beyond
    `journal.max_pending`. Runs in flight in this process are left to themselves.

    At most `concurrency` cleanups run at once; each is bounded by its journey's
    cleanup_timeout. With `budget` (seconds), no cleanup starts after it is spent: the rest
    wait for the next pass (`deferred`). Never raises for a failure of a target or of a
    cleanup; the first pass also loads what an earlier process left (`journal.load()`).
    """
    if not journal.enabled:
        return RetryReport()
    await journal.load()
    abandoned = await journal._enforce_cap()
    journeys = {c.name: c for c in checks if isinstance(c, JourneyCheck)}
    now = time.time()
    busy = cleaned = failed = deferred = 0
    todo: list[tuple[JournalEntry, JourneyCheck]] = []
    for entry in sorted(journal._entries.values(), key=lambda e: (e.created_at, e.run_id)):
        if entry.run_id in journal._active:
            busy += 1
            continue
        check = journeys.get(entry.check)
        if check is None:
            why = f"journey {entry.journey} at site {entry.site} is no longer configured"
        elif not check.cfg.cleanup:
            why = f"journey {entry.journey} has no cleanup steps any more"
        elif now - entry.created_at > journal.max_age:
            why = f"the run is older than {journal.max_age / 3600:g} h"
        elif set(entry.dropped) & check.journaled:
            why = f"variable(s) {', '.join(entry.dropped)} could not be kept"
        else:
            todo.append((entry, check))
            continue
        await journal._give_up(entry, why)
        abandoned += 1

    deadline = None if budget is None else time.monotonic() + budget
    slots = asyncio.Semaphore(max(1, concurrency))

    async def retry(entry: JournalEntry, check: JourneyCheck) -> None:
        nonlocal cleaned, failed, abandoned, deferred
        async with slots:
            if deadline is not None and time.monotonic() >= deadline:
                deferred += 1
                return
            # Another pass, or a newer state, may have taken care of it meanwhile.
            if journal._entries.get(entry.run_id) is not entry or entry.run_id in journal._active:
                return
            journal._active.add(entry.run_id)
            try:
                outcome = await _attempt(journal, entry, check, ctx, max_attempts)
            finally:
                journal._active.discard(entry.run_id)
        if outcome == "cleaned":
            cleaned += 1
        elif outcome == "failed":
            failed += 1
        else:
            abandoned += 1

    async with asyncio.TaskGroup() as group:
        for entry, check in todo:
            group.create_task(retry(entry, check))
    return RetryReport(
        cleaned=cleaned,
        failed=failed,
        abandoned=abandoned,
        busy=busy,
        deferred=deferred,
        pending=len(journal.pending()),
    )


async def _attempt(
    journal: CleanupJournal,
    entry: JournalEntry,
    check: JourneyCheck,
    ctx: ProbeContext,
    max_attempts: int,
) -> str:
    """One cleanup attempt for an entry: "cleaned", "failed" or "abandoned"."""
    attempt = entry.attempts + 1
    problem = ""
    try:
        # The cleanup bounds itself (cleanup_timeout); the hard limit is a margin past it.
        async with asyncio.timeout(check.cfg.cleanup_timeout + TIMEOUT_MARGIN):
            results = await check.cleanup_for(ctx, entry.run_id, entry.variables)
    except TimeoutError:
        problem = f"no answer within {check.cfg.cleanup_timeout:g}s"
    except Exception as exc:  # a bug: reported, and the pass goes on with the others
        log.exception("cleanup journal: retrying the cleanup after run %s raised", entry.run_id)
        problem = f"internal error: {type(exc).__name__}"
    else:
        bad = next((r for r in results if not r.ok), None)
        if bad is None:
            log.info(
                "cleanup journal: cleaned up after run %s of journey %s at site %s (attempt %d)",
                entry.run_id,
                entry.journey,
                entry.site,
                attempt,
            )
            await journal._remove(entry.run_id)
            return "cleaned"
        problem = f"step {bad.name}: {printable(bad.message, 300)}"
    if attempt >= max_attempts:
        await journal._give_up(entry, f"{attempt} cleanup attempts failed (last: {problem})")
        return "abandoned"
    log.warning(
        "cleanup journal: the cleanup after run %s of journey %s at site %s failed (attempt %d "
        "of %d): %s",
        entry.run_id,
        entry.journey,
        entry.site,
        attempt,
        max_attempts,
        problem,
    )
    await journal._store(dataclasses.replace(entry, attempts=attempt))
    return "failed"
