"""What one run of the replication check observes on each server: the pool and backoff of each
server, its role and streaming state, and the replica's lag by each method (the heartbeat, the
replay timestamp, the primary's `pg_stat_replication`); failures classified into the contract's
reasons, with the DSN scrubbed from every message."""

# How the heartbeat lag is measured, and why it is trusted over the other two methods
# ----------------------------------------------------------------------------------
# Every run writes this vantage's row of a small table on the primary,
# `(vantage, written_at, seq)`, and then reads the same row on each replica. The row's time comes
# from the agent's own clock and is compared with the agent's own clock (monotonic, even), so no
# server clock takes part: clock skew between clouds cannot bend the measurement.
#
# The agent remembers the heartbeats it wrote recently (seq, time). When a replica shows seq S:
# - If a later heartbeat S' was written, the replica's data is at least as old as the moment S'
#   was written, because S' is not there yet. lag = now - time(oldest write not yet visible):
#   a lower bound that is tight within one write interval (the replica may have stopped just
#   after S was written or just before S' was).
# - If the replica shows the newest heartbeat, the lag is somewhere between 0 and the age of that
#   heartbeat. While heartbeats are being written at the configured interval, that age is only
#   the cadence, not lag: report 0. Once the newest heartbeat is older than the cadence explains
#   (the writes have been failing), report its age: nothing proves the replica is fresher.
# - If this vantage's row is absent on the replica but this agent has written it, none of the
#   writes is visible yet: lag = now - time(oldest write).
# - If this vantage has never written (its writes fail, or it just started), fall back to the
#   newest row of any vantage, aged by the replica's own clock. That is exposed to the skew
#   between the other vantage's clock and the replica's, so facts say
#   `"heartbeat_source": "other_vantage"` instead of `"own"`.
#
# `now() - pg_last_xact_replay_timestamp()` on the replica ("replay_timestamp") grows whenever
# the primary is idle, though nothing is lost; `pg_stat_replication.replay_lag` on the primary
# ("primary_stat") is only refreshed when the standby reports, and is NULL when idle. Both are
# reported for comparison, but RPO decisions use the heartbeat. The replay timestamp is read
# before this run's heartbeat is written, so it shows what that method sees without our help.

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import errno
import math
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from failsight.core.check import loop_time
from failsight.core.configtypes import Secret
from failsight.core.redact import REDACTOR
from failsight.core.results import CheckFailure, Reason
from failsight.probes.replication.config import HeartbeatTable, ReplicationEndpoint, dsn_secrets

if TYPE_CHECKING:
    import asyncpg

# asyncpg (3 MB of RSS, 90 ms) is imported in the functions that use it, so an agent whose
# config has no `replication` section never loads it (tests/agent/test_footprint.py).

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Heartbeat maths (pure)


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """A heartbeat this agent wrote: its seq, and when (wall clock and monotonic clock)."""

    seq: int
    wall: float
    mono: float


@dataclasses.dataclass(frozen=True, slots=True)
class VisibleHeartbeat:
    """This vantage's row as a replica shows it."""

    seq: int
    wall: float  # its written_at, from this agent's clock


def heartbeat_lag(
    written: Iterable[Heartbeat],
    visible: VisibleHeartbeat | None,
    *,
    read_mono: float,
    read_wall: float,
    interval: float,
) -> float | None:
    """Lag of a replica from this vantage's own heartbeats, or None without evidence.

    `written` is in write order; `read_*` is when the replica was read. See the module comment.
    """
    before = [h for h in written if h.mono <= read_mono]
    if visible is None:
        return max(0.0, read_mono - before[0].mono) if before else None
    unseen = [h for h in before if h.seq > visible.seq]
    if unseen:
        first = unseen[0]
        if first.seq == visible.seq + 1 or any(h.seq == visible.seq for h in before):
            return max(0.0, read_mono - first.mono)
        # The row is older than everything remembered: its own age is all we can say.
        return max(0.0, read_wall - visible.wall)
    latest = next((h for h in reversed(before) if h.seq == visible.seq), None)
    age = read_mono - latest.mono if latest is not None else read_wall - visible.wall
    return 0.0 if age <= 1.5 * interval else age


# --------------------------------------------------------------------------------------------
# Failure classification


def classify(exc: BaseException) -> Reason:
    """The contract's reason for an exception raised while talking to a server."""
    # Order matters: QueryCanceledError is an operator intervention, gaierror and SSLError are
    # OSErrors, InvalidPasswordError is an authorization error.
    import asyncpg

    if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
        return Reason.TIMEOUT
    if isinstance(exc, socket.gaierror):
        return Reason.DNS
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return Reason.TLS
    if isinstance(
        exc,
        asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InsufficientPrivilegeError,
    ):
        return Reason.AUTH
    if isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError
        | asyncpg.OperatorInterventionError
        | asyncpg.TooManyConnectionsError
        | asyncpg.InvalidCatalogNameError
        | asyncpg.InterfaceError,
    ):
        return Reason.CONNECT
    if isinstance(exc, asyncpg.PostgresError):
        # The server answered, but not what a healthy primary or replica answers.
        return Reason.ASSERTION
    return Reason.INTERNAL


def _describe(exc: BaseException) -> str:
    import asyncpg

    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and exc.errno == errno.ECONNREFUSED
    ):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, asyncpg.PostgresError) and exc.sqlstate:
        return f"{text} (SQLSTATE {exc.sqlstate})"
    return text


_URI = re.compile(r"postgres(?:ql)?://\S+", re.IGNORECASE)
# A server's error text quoted in a message is cut to this (a fake server may send megabytes).
MAX_ERROR_CHARS = 300


def _scrub(text: str, dsn: Secret) -> str:
    # Driver messages may quote connection details; the DSN and its password never leave here.
    raw, *passwords = dsn_secrets(dsn)
    text = text.replace(raw, "<dsn>")
    for password in sorted(passwords, key=len, reverse=True):
        text = text.replace(password, "***")
    text = _URI.sub("<dsn>", text)
    # One line, bounded: the text may be a server's (or a fake server's) free text.
    text = " ".join(text.split())
    return text[:MAX_ERROR_CHARS] + "..." if len(text) > MAX_ERROR_CHARS else text


def _raised_by_driver(exc: BaseException) -> bool:
    """Whether asyncpg itself raised `exc` (not a PostgresError): it choked on what the server
    sent (a KeyError on a missing startup parameter, a failed SASL exchange), which is the
    server's fault, never a bug of this probe."""
    import asyncpg

    if isinstance(exc, asyncpg.InternalClientError):
        return True
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.split(".")[0] == "asyncpg"


def _seconds(value: object) -> float | None:
    """A lag in seconds as PostgreSQL returned it: None for NULL or a value that is no finite
    number; never negative (clock skew between the servers makes small negative values)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(0.0, float(value))
    return None


# --------------------------------------------------------------------------------------------
# One server: its pool, its backoff


class Server:
    """A server the check talks to: a small pool, created lazily, dropped after errors."""

    def __init__(
        self,
        label: str,
        endpoint: ReplicationEndpoint,
        *,
        vantage: str,
        interval: float,
        connect_timeout: float,
        statement_timeout: float,
    ) -> None:
        self.label = label  # "primary <site>", "replica <name>": how messages name it
        self.endpoint = endpoint
        # The process redacts the DSN and its password from everything it emits, whatever
        # quotes them (asyncpg's own messages included).
        REDACTOR.add(*dsn_secrets(endpoint.dsn))
        self.vantage = vantage
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.pool: asyncpg.Pool | None = None
        self.slow_failures = 0
        self.retry_at = 0.0
        self.last_failure: CheckFailure | None = None

    def failure(self, exc: BaseException) -> CheckFailure:
        if isinstance(exc, CheckFailure):
            return exc
        text = _scrub(_describe(exc), self.endpoint.dsn)
        reason = classify(exc)
        if reason is Reason.INTERNAL and _raised_by_driver(exc):
            reason = Reason.CONNECT
            text = f"unexpected answer from the server ({type(exc).__name__}: {text})"
        return CheckFailure(reason, f"{self.label}: {text}")

    async def _new_pool(self) -> asyncpg.Pool:
        import asyncpg

        ms = max(1, int(self.statement_timeout * 1000))
        # min_size=0: the pool connects on acquire, inside our deadline. With a floor, asyncpg
        # would keep reconnecting to a dead server in a background task nobody awaits.
        return await asyncpg.create_pool(
            dsn=self.endpoint.dsn.get_secret_value(),
            min_size=0,
            max_size=2,
            timeout=self.connect_timeout,
            command_timeout=self.statement_timeout,
            max_inactive_connection_lifetime=max(60.0, 3 * self.interval),
            server_settings={
                "application_name": f"failsight/{self.vantage}"[:63],
                # Server-side too, so a query stuck in the server stops there as well.
                "statement_timeout": str(ms),
                "lock_timeout": str(ms),
                "idle_in_transaction_session_timeout": str(max(ms * 4, 10_000)),
            },
        )

    def drop_pool(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None

    async def call(
        self, work: Callable[[Any], Awaitable[T]], deadline: float
    ) -> tuple[T | None, CheckFailure | None]:
        """Run `work(connection)` by the deadline (monotonic); a failure of the server (a
        timeout included) is returned, classified, never raised."""
        now = time.monotonic()
        if now < self.retry_at and self.last_failure is not None:
            last = self.last_failure
            return None, CheckFailure(
                last.reason,
                f"{last.message} (not retried for another {self.retry_at - now:.1f}s)",
            )
        try:
            async with asyncio.timeout_at(loop_time(deadline)):
                result = await self._use(work)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = self.failure(exc)
            if _connection_suspect(exc):
                self.drop_pool()
            self.note_failure(failure, time.monotonic() - now)
            return None, failure
        self.slow_failures = 0
        self.retry_at = 0.0
        self.last_failure = None
        return result, None

    async def _use(self, work: Callable[[Any], Awaitable[T]]) -> T:
        # A pooled connection made in an earlier run may have died with the server since: retry
        # once on a fresh pool before calling the server down.
        for attempt in (1, 2):
            fresh = self.pool is None
            if self.pool is None:
                self.pool = await self._new_pool()
            conn = await self.pool.acquire(timeout=self.connect_timeout)
            try:
                result = await work(conn)
            except BaseException as exc:
                # A connection interrupted mid-query is not worth resetting: close it.
                if _connection_suspect(exc):
                    conn.terminate()
                await self.pool.release(conn)
                if _is_connection_error(exc) and not fresh and attempt == 1:
                    self.drop_pool()
                    continue
                raise
            await self.pool.release(conn)
            return result
        raise AssertionError("unreachable")

    def note_failure(self, failure: CheckFailure, cost: float) -> None:
        self.last_failure = failure
        # Fast failures (refused, bad password) are retried every run: they cost nothing and
        # recovery is seen at once. Failures that waited (timeouts, slow DNS) back off.
        if cost < 0.5 * self.connect_timeout:
            self.slow_failures = 0
            self.retry_at = 0.0
            return
        self.slow_failures += 1
        delay = min(self.interval * 2 ** (self.slow_failures - 1), 60.0)
        self.retry_at = time.monotonic() + delay

    async def close(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(2.0):
                await pool.close()
        except TimeoutError:
            pool.terminate()


def _connection_suspect(exc: BaseException) -> bool:
    # An SQL error (or our own verdict on an answer) leaves the connection usable; anything
    # else (I/O, timeout, cancellation) may leave it mid-protocol.
    import asyncpg

    if isinstance(exc, asyncpg.PostgresError | CheckFailure):
        return _is_connection_error(exc)
    return True


def _is_connection_error(exc: BaseException) -> bool:
    import asyncpg

    return isinstance(
        exc,
        OSError
        | TimeoutError
        | asyncpg.PostgresConnectionError
        | asyncpg.OperatorInterventionError
        | asyncpg.InterfaceError,
    ) and not isinstance(exc, asyncpg.QueryCanceledError)


# --------------------------------------------------------------------------------------------
# What one run observes


@dataclasses.dataclass
class PrimaryState:
    failure: CheckFailure | None = None
    in_recovery: bool | None = None
    role: str = ""
    database: str = ""
    # application_name -> (state, replay_lag seconds, lag bytes)
    senders: dict[str, tuple[str | None, float | None, int | None]] = dataclasses.field(
        default_factory=dict
    )
    stats_hidden: bool = False  # rows without values: the role lacks pg_monitor
    writable: bool | None = None
    written: bool = False


@dataclasses.dataclass
class ReplicaState:
    failure: CheckFailure | None = None
    in_recovery: bool | None = None
    replay_timestamp_lag: float | None = None
    receiver_status: str | None = None
    receiver_present: bool = False
    heartbeat_lag: float | None = None
    heartbeat_source: str | None = None
    visible: VisibleHeartbeat | None = None  # this vantage's newest row on the replica


_PRIMARY_STATUS = """
SELECT pg_is_in_recovery() AS in_recovery,
       quote_ident(current_user) AS role,
       quote_ident(current_database()) AS database
"""

_SENDERS = """
SELECT application_name, state,
       extract(epoch FROM replay_lag)::float8 AS replay_lag,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes
FROM pg_stat_replication
ORDER BY (state = 'streaming') DESC NULLS LAST
"""

_REPLICA_STATUS = """
SELECT pg_is_in_recovery() AS in_recovery,
       extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8
           AS replay_age,
       (SELECT status FROM pg_stat_wal_receiver LIMIT 1) AS receiver_status,
       EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS receiver_present
"""


async def primary_status(server: Server, st: PrimaryState, deadline: float, *, site: str) -> None:
    """Phase 1 on the primary: its role, and its WAL senders unless it is in recovery."""

    async def work(conn: Any) -> None:
        row = await conn.fetchrow(_PRIMARY_STATUS)
        st.in_recovery, st.role, st.database = row["in_recovery"], row["role"], row["database"]
        if st.in_recovery:
            return
        for sender in await conn.fetch(_SENDERS):
            name = sender["application_name"]
            if sender["state"] is None:
                st.stats_hidden = True
            lag_bytes = sender["lag_bytes"]
            st.senders.setdefault(
                name,
                (
                    sender["state"],
                    _seconds(sender["replay_lag"]),
                    lag_bytes if isinstance(lag_bytes, int) else None,
                ),
            )

    _, st.failure = await server.call(work, deadline)
    if st.failure is None:
        st.writable = not st.in_recovery
        if st.in_recovery:
            st.failure = CheckFailure(
                Reason.ASSERTION,
                f"primary {site} is in recovery: it is a standby, not a writable primary",
            )


async def replica_status(server: Server, st: ReplicaState, deadline: float) -> None:
    """Phase 1 on a replica: its role, replay timestamp lag and WAL receiver."""

    async def work(conn: Any) -> None:
        row = await conn.fetchrow(_REPLICA_STATUS)
        st.in_recovery = row["in_recovery"]
        # The replay timestamp comes from the primary's clock and now() from the replica's:
        # skew can make it slightly negative, which is no lag at all.
        st.replay_timestamp_lag = _seconds(row["replay_age"])
        st.receiver_status = row["receiver_status"]
        st.receiver_present = row["receiver_present"]

    _, st.failure = await server.call(work, deadline)


async def read_heartbeat(
    server: Server,
    st: ReplicaState,
    deadline: float,
    *,
    table: HeartbeatTable,
    vantage: str,
    written: Iterable[Heartbeat],
    interval: float,
) -> None:
    """Phase 3 on a replica: the heartbeat it shows, timed against the heartbeats `written`
    (in write order) by this vantage."""

    import asyncpg

    async def work(conn: Any) -> tuple[Any, float, float]:
        sent_mono, sent_wall = time.monotonic(), time.time()
        try:
            row = await conn.fetchrow(
                # The table name is a validated, quoted identifier (see ReplicationConfig).
                "SELECT vantage, seq, written_at, "  # noqa: S608
                "extract(epoch FROM clock_timestamp() - written_at)::float8 AS replica_age "
                f"FROM {table.qualified} ORDER BY (vantage = $1) DESC, written_at DESC "
                "LIMIT 1",
                vantage,
            )
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            row = None  # not created yet, or not replayed yet: no heartbeat visible
        except asyncpg.InsufficientPrivilegeError:
            raise CheckFailure(
                Reason.AUTH,
                f"{server.label}: permission denied to read "
                f"{table.name}: grant USAGE on schema {table.schema} and "
                f"SELECT on {table.name} to the agent's role (on the primary)",
            ) from None
        # The replica's snapshot was taken somewhere during the round trip: its middle.
        half_rtt_mono = (time.monotonic() - sent_mono) / 2
        return (
            _heartbeat_row(row, vantage, server.label),
            sent_mono + half_rtt_mono,
            sent_wall + half_rtt_mono,
        )

    answer, st.failure = await server.call(work, deadline)
    if answer is None:
        return
    (visible, other_age), read_mono, read_wall = answer
    lag = heartbeat_lag(
        written,
        visible,
        read_mono=read_mono,
        read_wall=read_wall,
        interval=interval,
    )
    st.visible = visible
    if lag is not None:
        st.heartbeat_lag, st.heartbeat_source = lag, "own"
    elif other_age is not None:
        # Another vantage's clock against the replica's: skew included, hence the label.
        st.heartbeat_lag = other_age
        st.heartbeat_source = "other_vantage"


def _heartbeat_row(
    row: Any, vantage: str, label: str
) -> tuple[VisibleHeartbeat | None, float | None]:
    """This vantage's heartbeat as a replica shows it, or else the age of another vantage's
    newest row (by the replica's clock); (None, None) without a row. A row of other types
    than the table's (a table made by hand, a server that is not PostgreSQL) is an assertion
    failure, not a crash."""
    if row is None:
        return None, None
    try:
        if row["vantage"] == vantage:
            seq, written_at = row["seq"], row["written_at"]
            if not isinstance(seq, int) or not isinstance(written_at, dt.datetime):
                raise TypeError
            return VisibleHeartbeat(seq, written_at.timestamp()), None
        return None, _seconds(row["replica_age"])
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, OSError):
        raise CheckFailure(
            Reason.ASSERTION, f"{label}: the heartbeat row has unexpected columns or values"
        ) from None
