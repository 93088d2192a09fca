"""The replication check of one PostgreSQL cluster, `plan`, which makes one per configured
cluster (each run measures every server, writes the heartbeat and judges what it saw), and the
kind's descriptor `KIND`: its metrics and its config cross-checks."""

# A run is three phases under one deadline: (1) every server's status, concurrently;
# (2) the heartbeat write on the primary; (3) the heartbeat read on each replica. A server that
# fails in one phase is skipped in the next, and a server whose failures cost real time (a
# black-holed address) is not retried until a backoff ends, so it cannot eat each run's budget.

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from failsight.core.check import Check, ProbeContext, Run
from failsight.core.kind import Env, Kind, Loc
from failsight.core.results import Result
from failsight.core.telemetry import MetricSpec, MetricType
from failsight.probes.replication.config import ReplicationConfig
from failsight.probes.replication.heartbeat import HeartbeatWriter
from failsight.probes.replication.judge import Judge
from failsight.probes.replication.measure import (
    PrimaryState,
    ReplicaState,
    Server,
    primary_status,
    read_heartbeat,
    replica_status,
)

REPLICATION_LAG_SECONDS = MetricSpec(
    "replication_lag_seconds",
    MetricType.GAUGE,
    "Replication lag seen by one method.",
    ("cluster", "replica", "method"),
    "s",
)
REPLICATION_LAG_BYTES = MetricSpec(
    "replication_lag_bytes",
    MetricType.GAUGE,
    "WAL bytes the replica has not replayed.",
    ("cluster", "replica"),
    "By",
)
REPLICATION_STREAMING = MetricSpec(
    "replication_streaming",
    MetricType.GAUGE,
    "1 if the replica is streaming from the primary.",
    ("cluster", "replica"),
)
REPLICATION_WRITABLE = MetricSpec(
    "replication_writable",
    MetricType.GAUGE,
    "1 if the server accepts writes (not in recovery); two in one pair is split brain.",
    ("cluster", "replica", "role"),
)
REPLICATION_RPO_SECONDS = MetricSpec(
    "replication_rpo_seconds",
    MetricType.GAUGE,
    "Configured recovery point objective.",
    ("cluster",),
    "s",
)


class ReplicationCheck(Check):
    """Lag, streaming state and split brain of one PostgreSQL cluster, seen from one vantage."""

    kind = "replication"

    def __init__(self, cfg: ReplicationConfig, *, vantage: str) -> None:
        super().__init__(
            name=f"replication/{cfg.cluster}",
            target=cfg.cluster,
            interval=cfg.interval,
            budget=cfg.timeout,
            margin=0.0,  # the phases below end the run inside its budget
            site=cfg.primary.site,
            critical=False,
            placement=cfg.placement,
        )
        self.cfg = cfg
        self.vantage = vantage
        # Budget split of one run (see the module comment); the hard limit is cfg.timeout, so
        # the run ends a little before it with a result of its own.
        t = cfg.timeout
        self._phase_ends = (0.45 * t, 0.65 * t, 0.9 * t)
        connect_timeout = 0.4 * t
        statement_timeout = 0.2 * t
        self._primary = Server(
            f"primary {cfg.primary.site}",
            cfg.primary,
            vantage=vantage,
            interval=cfg.interval,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
        )
        self._replicas = [
            Server(
                f"replica {r.name}" if r.name == r.site else f"replica {r.name} ({r.site})",
                r,
                vantage=vantage,
                interval=cfg.interval,
                connect_timeout=connect_timeout,
                statement_timeout=statement_timeout,
            )
            for r in cfg.replicas
        ]
        self._heartbeat = HeartbeatWriter(cfg, vantage=vantage, primary=self._primary)
        self._judge = Judge(cfg, labels=[server.label for server in self._replicas])

    @property
    def ddl(self) -> str:
        """What a DBA runs to create the heartbeat table by hand."""
        return self._heartbeat.ddl

    async def close(self) -> None:
        for server in (self._primary, *self._replicas):
            await server.close()

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        t0 = run.start
        primary = PrimaryState()
        replicas = [ReplicaState() for _ in self._replicas]

        # Phase 1: every server's status at once.
        end = t0 + self._phase_ends[0]
        async with asyncio.TaskGroup() as tg:
            tg.create_task(primary_status(self._primary, primary, end, site=self.cfg.primary.site))
            for server, st in zip(self._replicas, replicas, strict=True):
                tg.create_task(replica_status(server, st, end))
        # Phase 2: the heartbeat, only on a primary that answered and is not in recovery.
        if primary.failure is None and primary.in_recovery is False:
            await self._heartbeat.write(primary, t0 + self._phase_ends[1])
        # Phase 3: the heartbeat as each readable replica sees it.
        end = t0 + self._phase_ends[2]
        async with asyncio.TaskGroup() as tg:
            for server, st in zip(self._replicas, replicas, strict=True):
                if st.failure is None:
                    tg.create_task(
                        read_heartbeat(
                            server,
                            st,
                            end,
                            table=self._heartbeat.table,
                            vantage=self.vantage,
                            written=self._heartbeat.written,
                            interval=self.interval,
                        )
                    )
        duration = run.elapsed()
        judgement = self._judge.judge(
            primary, replicas, written=self._heartbeat.written, interval=self.interval
        )
        return self.result(
            run,
            ok=judgement.ok,
            reason=judgement.reason,
            message=judgement.message,
            duration=duration,
            measurements=judgement.measurements,
            facts=judgement.facts,
            evidence=judgement.evidence,
        )


def plan(section: Sequence[ReplicationConfig], env: Env) -> list[Check]:
    """One check per cluster: heartbeat writer and readers, role and lag checks."""
    return [ReplicationCheck(c, vantage=env.vantage) for c in section]


def check_config(section: Sequence[ReplicationConfig], env: Env) -> Iterator[tuple[Loc, str]]:
    """Each end of each cluster is at a configured site."""
    site_names = env.site_names
    for c, cluster in enumerate(section):
        ends: list[tuple[Loc, str]] = [(("primary", "site"), cluster.primary.site)] + [
            (("replicas", r, "site"), replica.site) for r, replica in enumerate(cluster.replicas)
        ]
        for where, site_name in ends:
            if site_name not in site_names:
                yield (c, *where), f"unknown site {site_name!r}"


KIND = Kind(
    name=ReplicationCheck.kind,
    key="replication",
    model=ReplicationConfig,
    plan=plan,
    summary="PostgreSQL replication of one cluster: heartbeat lag against the RPO, streaming, "
    "split brain",
    metrics=(
        REPLICATION_LAG_SECONDS,
        REPLICATION_LAG_BYTES,
        REPLICATION_STREAMING,
        REPLICATION_WRITABLE,
        REPLICATION_RPO_SECONDS,
    ),
    naming=("cluster", lambda c: c.cluster),
    check_config=check_config,
)
