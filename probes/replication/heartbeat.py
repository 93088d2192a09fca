"""The heartbeat writer: once a run, this vantage's row of the heartbeat table on the primary
(created on first use), and the recent writes remembered so that a replica's lag can be timed
against them (see the module comment of `measure`)."""

from __future__ import annotations

import collections
import datetime as dt
import time
from typing import Any

from failsight.core.results import CheckFailure, Reason
from failsight.probes.replication.config import HeartbeatTable, ReplicationConfig
from failsight.probes.replication.measure import Heartbeat, PrimaryState, Server

_TABLE_STATE = """
SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1) AS has_schema,
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')) AS has_table
"""


class HeartbeatWriter:
    """Writes this vantage's heartbeat on the cluster's primary and remembers what it wrote."""

    def __init__(self, cfg: ReplicationConfig, *, vantage: str, primary: Server) -> None:
        self.cfg = cfg
        self.vantage = vantage
        self.primary = primary
        self.table = HeartbeatTable.of(cfg.heartbeat_table)
        self._table_ready = False
        # Heartbeats written, oldest first; kept long enough to time a replica far behind.
        self.written: collections.deque[Heartbeat] = collections.deque(maxlen=100_000)
        self._retain = max(600.0, 20 * cfg.rpo)

    @property
    def _create_schema_sql(self) -> str:
        return f'CREATE SCHEMA IF NOT EXISTS "{self.table.schema}"'

    @property
    def _create_table_sql(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table.qualified} "
            "(vantage text PRIMARY KEY, written_at timestamptz NOT NULL, seq bigint NOT NULL)"
        )

    @property
    def ddl(self) -> str:
        """What a DBA runs to create the heartbeat table by hand."""
        return f"{self._create_schema_sql}; {self._create_table_sql}"

    async def write(self, st: PrimaryState, deadline: float) -> None:
        """Phase 2: the heartbeat on the primary `st` describes, by the deadline (monotonic)."""
        import asyncpg

        schema = self.table.schema

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
                    f"{self.cfg.heartbeat_table} ({exc}): grant USAGE on schema {schema} "
                    f"and SELECT, INSERT, UPDATE on {self.cfg.heartbeat_table} to {st.role}",
                ) from None
            except asyncpg.ReadOnlySQLTransactionError:
                st.writable = False
                raise CheckFailure(
                    Reason.ASSERTION,
                    f"primary {self.cfg.primary.site} refused the heartbeat write: it is read-only",
                ) from None

        heartbeat, st.failure = await self.primary.call(work, deadline)
        if heartbeat is not None:
            st.written = True
            self.written.append(heartbeat)
            while self.written and heartbeat.mono - self.written[0].mono > self._retain:
                self.written.popleft()

    async def _ensure_table(self, conn: Any, st: PrimaryState) -> None:
        # Checked in the catalog first: a role that may write the table but not create a schema
        # must not fail on CREATE SCHEMA IF NOT EXISTS, which checks the privilege first.
        import asyncpg

        row = await conn.fetchrow(_TABLE_STATE, self.table.schema, self.table.table)
        site = self.cfg.primary.site
        if not row["has_schema"]:
            try:
                await conn.execute(self._create_schema_sql)
            except (asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
                pass  # another vantage created it at the same moment
            except asyncpg.InsufficientPrivilegeError:
                raise CheckFailure(
                    Reason.AUTH,
                    f"primary {site}: permission denied to create schema {self.table.schema}: "
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
                    f"{self.cfg.heartbeat_table}: grant CREATE on schema {self.table.schema} "
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
                f"INSERT INTO {self.table.qualified} AS h (vantage, written_at, seq) "  # noqa: S608
                "VALUES ($1, $2, 1) ON CONFLICT (vantage) DO UPDATE "
                "SET written_at = EXCLUDED.written_at, seq = h.seq + 1 RETURNING seq",
                self.vantage,
                dt.datetime.fromtimestamp(wall, dt.UTC),
            )
        return Heartbeat(int(seq), wall, mono)
