"""PostgreSQL replication check: lag by three methods, streaming state and split brain."""

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
#
# A run is three phases under one deadline: (1) every server's status, concurrently;
# (2) the heartbeat write on the primary; (3) the heartbeat read on each replica. A server that
# fails in one phase is skipped in the next, and a server whose failures cost real time (a
# black-holed address) is not retried until a backoff ends, so it cannot eat each run's budget.

from __future__ import annotations

import asyncio
import collections
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
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from pydantic import ConfigDict, Field, field_validator, model_validator

from failsight.core.check import Check, ProbeContext, new_run_id, wall_now
from failsight.core.configtypes import Duration, Interval, Model, Name, Scheduled, Secret, Timeout
from failsight.core.redact import REDACTOR
from failsight.core.results import CheckFailure, Measurement, Reason, Result

if TYPE_CHECKING:
    from failsight.agent.config import Config

_IDENTIFIER = r"[a-z_][a-z0-9_]{0,62}"
_TABLE = re.compile(rf"^({_IDENTIFIER})\.({_IDENTIFIER})$")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Config


class ReplicationEndpoint(Model):
    """One PostgreSQL server of a cluster, at a site."""

    site: Name
    dsn: Secret

    @field_validator("dsn")
    @classmethod
    def _postgres_uri(cls, value: Secret) -> Secret:
        # asyncpg only takes URIs; the message must not echo the value, which holds a password.
        scheme = value.get_secret_value().split("://", 1)[0].lower()
        if scheme not in ("postgresql", "postgres") or "://" not in value.get_secret_value():
            raise ValueError("must be a postgresql://user:password@host:port/database URI")
        return value


class ReplicaConfig(ReplicationEndpoint):
    """A standby: `name` labels its series (default: site); `application_name` is the name it
    streams under, as `pg_stat_replication` shows it (default: name)."""

    name: Name
    application_name: Name

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if data.get("name") is None and "site" in data:
                data["name"] = data["site"]
            if data.get("application_name") is None and "name" in data:
                data["application_name"] = data["name"]
        return data


class ReplicationConfig(Scheduled):
    """One `replication:` entry: a primary, its replicas and the RPO their lag is judged by."""

    # A refused DSN must not be echoed in errors: it holds a password. Pydantic takes this
    # setting from the outermost model, so the agent's top-level config needs it as well.
    model_config = ConfigDict(hide_input_in_errors=True)

    cluster: Name
    rpo: Duration
    interval: Interval = 5.0
    timeout: Timeout = 5.0
    heartbeat_table: str = "failsight.heartbeat"
    primary: ReplicationEndpoint
    replicas: tuple[ReplicaConfig, ...] = Field(min_length=1)

    @field_validator("heartbeat_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        if not _TABLE.match(value):
            raise ValueError(
                "must be schema.table in lower-case letters, digits and underscores "
                "(each part at most 63 characters, not starting with a digit)"
            )
        return value

    @model_validator(mode="after")
    def _unique_replicas(self) -> ReplicationConfig:
        for attr in ("name", "application_name"):
            seen: set[str] = set()
            for replica in self.replicas:
                value = getattr(replica, attr)
                if value in seen:
                    raise ValueError(f"replicas: {attr} {value!r} is used twice")
                seen.add(value)
        return self


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


def dsn_secrets(dsn: Secret) -> list[str]:
    """The DSN and every form of its password: in the userinfo (as written and decoded) and in
    a `?password=` query parameter, which asyncpg also takes."""
    raw = dsn.get_secret_value()
    values = [raw]
    try:
        parts = urlsplit(raw)
        password = parts.password
        query = parse_qs(parts.query)
    except ValueError:  # an invalid port or IPv6 literal: asyncpg refuses it too
        return values
    if password:
        values += [password, unquote(password)]
    values += [p for p in query.get("password", []) if p]
    return values


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


class _Server:
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
            async with asyncio.timeout_at(_loop_time_of(deadline)):
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
    if isinstance(exc, asyncpg.PostgresError | CheckFailure):
        return _is_connection_error(exc)
    return True


def _is_connection_error(exc: BaseException) -> bool:
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
class _PrimaryState:
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
class _ReplicaState:
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

_TABLE_STATE = """
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS has_schema,
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')) AS has_table
"""


class ReplicationCheck(Check):
    """Lag, streaming state and split brain of one PostgreSQL cluster, seen from one vantage."""

    kind = "replication"

    def __init__(self, cfg: ReplicationConfig, *, vantage: str) -> None:
        super().__init__(
            name=f"replication/{cfg.cluster}",
            target=cfg.cluster,
            interval=cfg.interval,
            timeout=cfg.timeout,
            site=cfg.primary.site,
            critical=False,
        )
        self.cfg = cfg
        self.vantage = vantage
        schema, table = cfg.heartbeat_table.split(".")
        self._schema, self._table = schema, table
        self._qualified = f'"{schema}"."{table}"'
        # Budget split of one run (see the module comment); the scheduler's own timeout is
        # cfg.timeout, so the run ends a little before it with a result of its own.
        t = cfg.timeout
        self._phase_ends = (0.45 * t, 0.65 * t, 0.9 * t)
        connect_timeout = 0.4 * t
        statement_timeout = 0.2 * t
        self._primary = _Server(
            f"primary {cfg.primary.site}",
            cfg.primary,
            vantage=vantage,
            interval=cfg.interval,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
        self._replicas = [
            _Server(
                f"replica {r.name}" if r.name == r.site else f"replica {r.name} ({r.site})",
                r,
                vantage=vantage,
                interval=cfg.interval,
                connect_timeout=connect_timeout,
                statement_timeout=statement_timeout,
            )
            for r in cfg.replicas
        ]
        self._table_ready = False
        # Per replica: was it streaming in the last run whose heartbeat reached the primary?
        self._streaming_while_primary_up: dict[str, bool] = {}
        # Heartbeats written, oldest first; kept long enough to time a replica far behind.
        self._written: collections.deque[Heartbeat] = collections.deque(maxlen=100_000)
        self._retain = max(600.0, 20 * cfg.rpo)

    @property
    def _create_schema_sql(self) -> str:
        return f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"'

    @property
    def _create_table_sql(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self._qualified} "
            "(vantage text PRIMARY KEY, written_at timestamptz NOT NULL, seq bigint NOT NULL)"
        )

    @property
    def ddl(self) -> str:
        """What a DBA runs to create the heartbeat table by hand."""
        return f"{self._create_schema_sql}; {self._create_table_sql}"

    async def close(self) -> None:
        for server in (self._primary, *self._replicas):
            await server.close()

    # ---------------------------------------------------------------------------------------

    async def run(self, ctx: ProbeContext) -> Result:
        started_at = wall_now()
        t0 = time.monotonic()
        primary = _PrimaryState()
        replicas = [_ReplicaState() for _ in self._replicas]

        # Phase 1: every server's status at once.
        end = t0 + self._phase_ends[0]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._primary_status(primary, end))
            for server, st in zip(self._replicas, replicas, strict=True):
                tg.create_task(self._replica_status(server, st, end))
        # Phase 2: the heartbeat, only on a primary that answered and is not in recovery.
        if primary.failure is None and primary.in_recovery is False:
            await self._write_heartbeat(primary, t0 + self._phase_ends[1])
        # Phase 3: the heartbeat as each readable replica sees it.
        end = t0 + self._phase_ends[2]
        async with asyncio.TaskGroup() as tg:
            for server, st in zip(self._replicas, replicas, strict=True):
                if st.failure is None:
                    tg.create_task(self._read_heartbeat(server, st, end))
        return self._result(primary, replicas, started_at, time.monotonic() - t0)

    # Phase 1 --------------------------------------------------------------------------------

    async def _primary_status(self, st: _PrimaryState, deadline: float) -> None:
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

        _, st.failure = await self._primary.call(work, deadline)
        if st.failure is None:
            st.writable = not st.in_recovery
            if st.in_recovery:
                st.failure = CheckFailure(
                    Reason.ASSERTION,
                    f"primary {self.cfg.primary.site} is in recovery: it is a standby, "
                    "not a writable primary",
                )

    async def _replica_status(self, server: _Server, st: _ReplicaState, deadline: float) -> None:
        async def work(conn: Any) -> None:
            row = await conn.fetchrow(_REPLICA_STATUS)
            st.in_recovery = row["in_recovery"]
            # The replay timestamp comes from the primary's clock and now() from the replica's:
            # skew can make it slightly negative, which is no lag at all.
            st.replay_timestamp_lag = _seconds(row["replay_age"])
            st.receiver_status = row["receiver_status"]
            st.receiver_present = row["receiver_present"]

        _, st.failure = await server.call(work, deadline)

    # Phase 2 --------------------------------------------------------------------------------

    async def _write_heartbeat(self, st: _PrimaryState, deadline: float) -> None:
        async def work(conn: Any) -> Heartbeat:
            if not self._table_ready:
                await self._ensure_table(conn, st)
            try:
                return await self._upsert(conn)
            except asyncpg.UndefinedTableError:
                # Dropped since we made it: make it again, once.
                self._table_ready = False
                await self._ensure_table(conn, st)
                return await self._upsert(conn)
            except asyncpg.InsufficientPrivilegeError as exc:
                raise CheckFailure(
                    Reason.AUTH,
                    f"primary {self.cfg.primary.site}: permission denied to write "
                    f"{self.cfg.heartbeat_table} ({exc}): grant USAGE on schema {self._schema} "
                    f"and SELECT, INSERT, UPDATE on {self.cfg.heartbeat_table} to {st.role}",
                ) from None
            except asyncpg.ReadOnlySQLTransactionError:
                st.writable = False
                raise CheckFailure(
                    Reason.ASSERTION,
                    f"primary {self.cfg.primary.site} refused the heartbeat write: it is read-only",
                ) from None

        heartbeat, st.failure = await self._primary.call(work, deadline)
        if heartbeat is not None:
            st.written = True
            self._written.append(heartbeat)
            while self._written and heartbeat.mono - self._written[0].mono > self._retain:
                self._written.popleft()

    async def _ensure_table(self, conn: Any, st: _PrimaryState) -> None:
        # Checked in the catalog first: a role that may write the table but not create a schema
        # must not fail on CREATE SCHEMA IF NOT EXISTS, which checks the privilege first.
        row = await conn.fetchrow(_TABLE_STATE, self._schema, self._table)
        site = self.cfg.primary.site
        if not row["has_schema"]:
            try:
                await conn.execute(self._create_schema_sql)
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
                pass  # another vantage created it at the same moment
            except asyncpg.InsufficientPrivilegeError:
                raise CheckFailure(
                    Reason.AUTH,
                    f"primary {site}: permission denied to create schema {self._schema}: "
                    f"grant CREATE on database {st.database} to {st.role}, "
                    f"or create the table yourself: {self.ddl}",
                ) from None
        if not row["has_table"]:
            try:
                await conn.execute(self._create_table_sql)
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateTableError):
                pass
            except asyncpg.InsufficientPrivilegeError:
                raise CheckFailure(
                    Reason.AUTH,
                    f"primary {site}: permission denied to create table "
                    f"{self.cfg.heartbeat_table}: grant CREATE on schema {self._schema} "
                    f"to {st.role}, or create the table yourself: {self.ddl}",
                ) from None
        self._table_ready = True

    async def _upsert(self, conn: Any) -> Heartbeat:
        wall = time.time()
        mono = time.monotonic()
        async with conn.transaction():
            # With synchronous replication and the standby gone, a commit would wait for it
            # forever; the heartbeat only needs to reach the WAL, which streams either way.
            await conn.execute("SET LOCAL synchronous_commit = local")
            # The table name is a validated, quoted identifier (see ReplicationConfig).
            seq = await conn.fetchval(
                f"INSERT INTO {self._qualified} AS h (vantage, written_at, seq) "  # noqa: S608
                "VALUES ($1, $2, 1) ON CONFLICT (vantage) DO UPDATE "
                "SET written_at = EXCLUDED.written_at, seq = h.seq + 1 RETURNING seq",
                self.vantage,
                dt.datetime.fromtimestamp(wall, dt.UTC),
            )
        return Heartbeat(int(seq), wall, mono)

    # Phase 3 --------------------------------------------------------------------------------

    async def _read_heartbeat(self, server: _Server, st: _ReplicaState, deadline: float) -> None:
        async def work(conn: Any) -> tuple[Any, float, float]:
            sent_mono, sent_wall = time.monotonic(), time.time()
            try:
                row = await conn.fetchrow(
                    # The table name is a validated, quoted identifier (see ReplicationConfig).
                    "SELECT vantage, seq, written_at, "  # noqa: S608
                    "extract(epoch FROM clock_timestamp() - written_at)::float8 AS replica_age "
                    f"FROM {self._qualified} ORDER BY (vantage = $1) DESC, written_at DESC "
                    "LIMIT 1",
                    self.vantage,
                )
            except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
                row = None  # not created yet, or not replayed yet: no heartbeat visible
            except asyncpg.InsufficientPrivilegeError:
                raise CheckFailure(
                    Reason.AUTH,
                    f"{server.label}: permission denied to read "
                    f"{self.cfg.heartbeat_table}: grant USAGE on schema {self._schema} and "
                    f"SELECT on {self.cfg.heartbeat_table} to the agent's role (on the primary)",
                ) from None
            # The replica's snapshot was taken somewhere during the round trip: its middle.
            half_rtt_mono = (time.monotonic() - sent_mono) / 2
            return (
                _heartbeat_row(row, self.vantage, server.label),
                sent_mono + half_rtt_mono,
                sent_wall + half_rtt_mono,
            )

        answer, st.failure = await server.call(work, deadline)
        if answer is None:
            return
        (visible, other_age), read_mono, read_wall = answer
        lag = heartbeat_lag(
            self._written,
            visible,
            read_mono=read_mono,
            read_wall=read_wall,
            interval=self.interval,
        )
        st.visible = visible
        if lag is not None:
            st.heartbeat_lag, st.heartbeat_source = lag, "own"
        elif other_age is not None:
            # Another vantage's clock against the replica's: skew included, hence the label.
            st.heartbeat_lag = other_age
            st.heartbeat_source = "other_vantage"

    # Result ---------------------------------------------------------------------------------

    def _at_primary_loss(self, replica: str, st: _ReplicaState) -> dict[str, object] | None:
        """How the replica stands against the primary's last known state, while the primary
        takes no heartbeat (down, unreachable, or no longer writable).

        The live heartbeat lag then grows by the second however complete the replica is, and
        the replica stops streaming because its primary is gone: neither says whether
        promoting it loses data. What does: the writes the primary took (our last successful
        heartbeat) that the replica has not replayed. This shrinks to 0 if the replica
        replays WAL it had received, and is what the verdict compares with the RPO.
        """
        if not self._written:
            return None
        last = self._written[-1]
        lag = None
        if st.visible is not None:
            lag = heartbeat_lag(
                self._written,
                st.visible,
                read_mono=last.mono,
                read_wall=last.wall,
                interval=self.interval,
            )
        return {
            "lag_seconds": lag,
            "streaming": self._streaming_while_primary_up.get(replica, False),
            "as_of": last.wall,
        }

    def _result(
        self,
        primary: _PrimaryState,
        replicas: list[_ReplicaState],
        started_at: float,
        duration: float,
    ) -> Result:
        cfg = self.cfg
        cluster = cfg.cluster
        measurements = [Measurement("replication_rpo_seconds", {"cluster": cluster}, cfg.rpo)]
        facts_replicas: list[dict[str, object]] = []
        split_brain_problems: list[CheckFailure] = []
        replica_problems: list[CheckFailure] = []

        for rcfg, server, st in zip(cfg.replicas, self._replicas, replicas, strict=True):
            sender = primary.senders.get(rcfg.application_name)
            sender_state, sender_lag, lag_bytes = sender if sender else (None, None, None)
            if st.receiver_status is not None:
                streaming = st.receiver_status == "streaming"
            elif st.failure is None and not st.receiver_present:
                streaming = False
            else:
                # The replica could not be read, or hides its receiver (no pg_monitor): the
                # primary's word is the evidence left.
                streaming = sender_state == "streaming"
            # NULL replay_lag on a streaming standby means PostgreSQL saw it caught up and idle.
            primary_stat_lag = sender_lag
            if primary_stat_lag is None and sender_state == "streaming":
                primary_stat_lag = 0.0
            split_brain = st.in_recovery is False and primary.writable is True
            lag = st.heartbeat_lag
            within_rpo = lag is not None and lag <= cfg.rpo
            if primary.written:
                self._streaming_while_primary_up[rcfg.name] = streaming
            at_loss = None if primary.written else self._at_primary_loss(rcfg.name, st)

            problem: CheckFailure | None = None
            label = server.label
            if st.failure is not None:
                problem = st.failure
            elif split_brain:
                problem = CheckFailure(
                    Reason.ASSERTION,
                    f"SPLIT BRAIN: {label} is not in recovery (promoted) while "
                    f"primary {cfg.primary.site} is writable",
                )
                split_brain_problems.append(problem)
            elif st.in_recovery is False:
                problem = CheckFailure(
                    Reason.ASSERTION, f"{label} is not in recovery: it was promoted"
                )
            elif not streaming:
                status = st.receiver_status or "no WAL receiver"
                problem = CheckFailure(Reason.ASSERTION, f"{label} is not streaming ({status})")
            elif lag is None:
                problem = CheckFailure(Reason.ASSERTION, f"{label}: no heartbeat visible yet")
            elif not within_rpo:
                problem = CheckFailure(
                    Reason.ASSERTION,
                    f"{label}: heartbeat lag {lag:.2f}s exceeds the RPO of {_secs(cfg.rpo)}",
                )
            if problem is not None and not split_brain:
                replica_problems.append(problem)

            labels = {"cluster": cluster, "replica": rcfg.name}
            measurements.append(
                Measurement("replication_streaming", labels, 1.0 if streaming else 0.0)
            )
            # Per pair, both ends' writability (omitted when a server could not be asked):
            # the split-brain alert compares them in PromQL.
            for role, in_recovery in (
                ("replica", st.in_recovery),
                ("primary", primary.in_recovery),
            ):
                if in_recovery is not None:
                    measurements.append(
                        Measurement(
                            "replication_writable",
                            {**labels, "role": role},
                            0.0 if in_recovery else 1.0,
                        )
                    )
            for method, value in (
                ("heartbeat", lag),
                ("replay_timestamp", st.replay_timestamp_lag),
                ("primary_stat", primary_stat_lag),
            ):
                if value is not None and math.isfinite(value):
                    measurements.append(
                        Measurement("replication_lag_seconds", {**labels, "method": method}, value)
                    )
            if lag_bytes is not None:
                measurements.append(
                    Measurement("replication_lag_bytes", labels, float(max(0, lag_bytes)))
                )
            facts_replicas.append(
                {
                    "replica": rcfg.name,
                    "site": rcfg.site,
                    "lag_seconds": lag,
                    "replay_timestamp_lag_seconds": st.replay_timestamp_lag,
                    "primary_stat_lag_seconds": primary_stat_lag,
                    "lag_bytes": None if lag_bytes is None else max(0, int(lag_bytes)),
                    "streaming": streaming,
                    "in_recovery": st.in_recovery,
                    "split_brain": split_brain,
                    "within_rpo": within_rpo,
                    "heartbeat_source": st.heartbeat_source,
                    "at_primary_loss": at_loss,
                    "error": problem.message if problem else None,
                    "reason": problem.reason.value if problem else None,
                }
            )

        problems = split_brain_problems
        if primary.failure is not None:
            problems.append(primary.failure)
        problems.extend(replica_problems)
        ok = not problems and primary.writable is True and primary.written
        if ok:
            worst = max(
                (f["lag_seconds"] for f in facts_replicas if isinstance(f["lag_seconds"], float)),
                default=0.0,
            )
            message = (
                f"{len(facts_replicas)} replica(s) streaming, heartbeat lag at most "
                f"{worst:.2f}s (RPO {_secs(cfg.rpo)})"
            )
        else:
            message = "; ".join(p.message for p in problems) or "heartbeat not written"
        if primary.stats_hidden:
            message += (
                f"; pg_stat_replication hides its values from role {primary.role}: "
                f"grant pg_monitor to {primary.role}"
            )
        reason = None if ok else (problems[0].reason if problems else Reason.ASSERTION)
        return self.result(
            ok=ok,
            reason=reason,
            message=message,
            started_at=started_at,
            duration=duration,
            run_id=new_run_id(),
            measurements=tuple(measurements),
            facts={
                "cluster": cluster,
                "rpo_seconds": cfg.rpo,
                "primary_site": cfg.primary.site,
                "primary_writable": primary.writable,
                "primary_error": primary.failure.message if primary.failure else None,
                "heartbeat_written": primary.written,
                "replicas": facts_replicas,
            },
        )


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


def _secs(value: float) -> str:
    return f"{value:g}s"


def _loop_time_of(mono_deadline: float) -> float:
    # asyncio.timeout_at wants the loop's clock; the loop's default clock is time.monotonic,
    # but an installed loop (uvloop) may differ, so translate.
    loop = asyncio.get_running_loop()
    return loop.time() + (mono_deadline - time.monotonic())


def plan(config: Config) -> list[Check]:
    """One check per cluster: heartbeat writer and readers, role and lag checks."""
    return [ReplicationCheck(c, vantage=config.agent.vantage) for c in config.replication]
