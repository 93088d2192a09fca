"""Judging one run of the replication check: its observations become the result's verdict
(ok, reason, message), its measurements (lag by each method, streaming, writability), its facts
(for the API and the status page) and its evidence, which the verdict reads: one
`ReplicaSafety` per replica (RPO, lag, streaming, split brain; as of the primary's last write
while the primary takes none)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from failsight.core.results import CheckFailure, Measurement, Reason, ReplicaSafety
from failsight.probes.replication.config import ReplicaConfig, ReplicationConfig
from failsight.probes.replication.measure import (
    Heartbeat,
    PrimaryState,
    ReplicaState,
    heartbeat_lag,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Judgement:
    """What a run's result says, beside its identity and timing."""

    ok: bool
    reason: Reason | None
    message: str
    measurements: tuple[Measurement, ...]
    facts: dict[str, object]
    evidence: tuple[ReplicaSafety, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class AtPrimaryLoss:
    """How a replica stands against the primary's last known state (see `_at_primary_loss`)."""

    lag_seconds: float | None
    streaming: bool
    as_of: float  # wall clock of the primary's last heartbeat

    def facts(self) -> dict[str, object]:
        return {"lag_seconds": self.lag_seconds, "streaming": self.streaming, "as_of": self.as_of}


class Judge:
    """Judges the runs of one cluster's check; remembers, per replica, what the primary's loss
    will be judged by."""

    def __init__(self, cfg: ReplicationConfig, *, labels: Sequence[str]) -> None:
        self.cfg = cfg
        self.labels = labels  # per replica, as messages name it
        # Per replica: was it streaming in the last run whose heartbeat reached the primary?
        self._streaming_while_primary_up: dict[str, bool] = {}

    def _at_primary_loss(
        self, replica: str, st: ReplicaState, written: Sequence[Heartbeat], interval: float
    ) -> AtPrimaryLoss | None:
        """How the replica stands against the primary's last known state, while the primary
        takes no heartbeat (down, unreachable, or no longer writable).

        The live heartbeat lag then grows by the second however complete the replica is, and
        the replica stops streaming because its primary is gone: neither says whether
        promoting it loses data. What does: the writes the primary took (our last successful
        heartbeat) that the replica has not replayed. This shrinks to 0 if the replica
        replays WAL it had received, and is what the verdict compares with the RPO.
        """
        if not written:
            return None
        last = written[-1]
        lag = None
        if st.visible is not None:
            lag = heartbeat_lag(
                written,
                st.visible,
                read_mono=last.mono,
                read_wall=last.wall,
                interval=interval,
            )
        return AtPrimaryLoss(
            lag_seconds=lag,
            streaming=self._streaming_while_primary_up.get(replica, False),
            as_of=last.wall,
        )

    def judge(
        self,
        primary: PrimaryState,
        replicas: list[ReplicaState],
        *,
        written: Sequence[Heartbeat],
        interval: float,
    ) -> Judgement:
        """The judgement of one run: `written` is the heartbeats written so far, oldest first."""
        cfg = self.cfg
        parts = [
            self._judge_replica(rcfg, label, st, primary, written=written, interval=interval)
            for rcfg, label, st in zip(cfg.replicas, self.labels, replicas, strict=True)
        ]
        # Split brains come first, then the primary's failure, then the replicas' other problems.
        problems = [p.split_brain_problem for p in parts if p.split_brain_problem is not None]
        if primary.failure is not None:
            problems.append(primary.failure)
        problems.extend(p.replica_problem for p in parts if p.replica_problem is not None)
        facts_replicas = [p.facts for p in parts]
        ok, reason, message = self._verdict(primary, problems, facts_replicas)
        return Judgement(
            ok=ok,
            reason=reason,
            message=message,
            measurements=(
                Measurement("replication_rpo_seconds", {"cluster": cfg.cluster}, cfg.rpo),
                *(m for p in parts for m in p.measurements),
            ),
            facts={
                "cluster": cfg.cluster,
                "rpo_seconds": cfg.rpo,
                "primary_site": cfg.primary.site,
                "primary_writable": primary.writable,
                "primary_error": primary.failure.message if primary.failure else None,
                "heartbeat_written": primary.written,
                "replicas": facts_replicas,
            },
            evidence=tuple(p.evidence for p in parts),
        )

    def _verdict(
        self,
        primary: PrimaryState,
        problems: list[CheckFailure],
        facts_replicas: list[dict[str, object]],
    ) -> tuple[bool, Reason | None, str]:
        """The run's ok, reason and message: ok only with no problem and a heartbeat written to
        a writable primary; the message names every problem, the first one gives the reason."""
        ok = not problems and primary.writable is True and primary.written
        if ok:
            worst = max(
                (f["lag_seconds"] for f in facts_replicas if isinstance(f["lag_seconds"], float)),
                default=0.0,
            )
            message = (
                f"{len(facts_replicas)} replica(s) streaming, heartbeat lag at most "
                f"{worst:.2f}s (RPO {_secs(self.cfg.rpo)})"
            )
        else:
            message = "; ".join(p.message for p in problems) or "heartbeat not written"
        if primary.stats_hidden:
            message += (
                f"; pg_stat_replication hides its values from role {primary.role}: "
                f"grant pg_monitor to {primary.role}"
            )
        reason = None if ok else (problems[0].reason if problems else Reason.ASSERTION)
        return ok, reason, message

    def _judge_replica(
        self,
        rcfg: ReplicaConfig,
        label: str,
        st: ReplicaState,
        primary: PrimaryState,
        *,
        written: Sequence[Heartbeat],
        interval: float,
    ) -> _ReplicaPart:
        """One replica's share of the judgement: its problem, measurements, facts and the
        `ReplicaSafety` evidence the verdict reads."""
        cfg = self.cfg
        r = self._read_replica(rcfg, st, primary, written=written, interval=interval)
        problem = self._replica_problem(label, st, r)
        # While the primary takes no writes, judge the replica as of the last one it took.
        safe_lag, safe_streaming = (
            (r.lag, r.streaming)
            if r.at_loss is None
            else (r.at_loss.lag_seconds, r.at_loss.streaming)
        )
        return _ReplicaPart(
            split_brain_problem=problem if r.split_brain and st.failure is None else None,
            replica_problem=None if r.split_brain else problem,
            measurements=_replica_measurements(cfg.cluster, rcfg.name, st, primary, r),
            facts=_replica_facts(rcfg, st, r, problem),
            evidence=ReplicaSafety(
                cluster=cfg.cluster,
                primary_site=cfg.primary.site,
                replica_site=rcfg.site,
                rpo_seconds=float(cfg.rpo),
                lag_seconds=None if safe_lag is None else float(safe_lag),
                streaming=safe_streaming,
                split_brain=r.split_brain,
            ),
        )

    def _read_replica(
        self,
        rcfg: ReplicaConfig,
        st: ReplicaState,
        primary: PrimaryState,
        *,
        written: Sequence[Heartbeat],
        interval: float,
    ) -> _Reading:
        """What the replica's and the primary's answers say of the replica; while the primary
        takes heartbeats, remembers whether the replica streams, for when it takes none."""
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
        lag = st.heartbeat_lag
        if primary.written:
            self._streaming_while_primary_up[rcfg.name] = streaming
        at_loss = (
            None if primary.written else self._at_primary_loss(rcfg.name, st, written, interval)
        )
        return _Reading(
            streaming=streaming,
            primary_stat_lag=primary_stat_lag,
            lag_bytes=lag_bytes,
            split_brain=st.in_recovery is False and primary.writable is True,
            lag=lag,
            within_rpo=lag is not None and lag <= self.cfg.rpo,
            at_loss=at_loss,
        )

    def _replica_problem(self, label: str, st: ReplicaState, r: _Reading) -> CheckFailure | None:
        """What is wrong with the replica, the first of: unreadable, split brain, promoted, not
        streaming, no heartbeat visible, heartbeat lag beyond the RPO; None if nothing."""
        cfg = self.cfg
        if st.failure is not None:
            return st.failure
        if r.split_brain:
            return CheckFailure(
                Reason.ASSERTION,
                f"SPLIT BRAIN: {label} is not in recovery (promoted) while "
                f"primary {cfg.primary.site} is writable",
            )
        if st.in_recovery is False:
            return CheckFailure(Reason.ASSERTION, f"{label} is not in recovery: it was promoted")
        if not r.streaming:
            status = st.receiver_status or "no WAL receiver"
            return CheckFailure(Reason.ASSERTION, f"{label} is not streaming ({status})")
        if r.lag is None:
            return CheckFailure(Reason.ASSERTION, f"{label}: no heartbeat visible yet")
        if not r.within_rpo:
            return CheckFailure(
                Reason.ASSERTION,
                f"{label}: heartbeat lag {r.lag:.2f}s exceeds the RPO of {_secs(cfg.rpo)}",
            )
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class _Reading:
    """What one run's answers say of one replica, before judging it."""

    streaming: bool
    primary_stat_lag: float | None  # the primary's replay_lag for it (0 if caught up)
    lag_bytes: int | None  # WAL the primary has and it has not replayed
    split_brain: bool  # promoted while the primary is writable
    lag: float | None  # heartbeat lag
    within_rpo: bool
    at_loss: AtPrimaryLoss | None  # only while the primary takes no heartbeat


@dataclasses.dataclass(frozen=True, slots=True)
class _ReplicaPart:
    """One replica's share of a run's judgement."""

    # Where its problem counts in the message: a split brain before the primary's failure,
    # any other problem after it. A replica in split brain that could not be read counts in
    # neither; its facts report the problem all the same.
    split_brain_problem: CheckFailure | None
    replica_problem: CheckFailure | None
    measurements: list[Measurement]
    facts: dict[str, object]
    evidence: ReplicaSafety


def _replica_measurements(
    cluster: str, replica: str, st: ReplicaState, primary: PrimaryState, r: _Reading
) -> list[Measurement]:
    """The replica's series: streaming, both ends' writability, its lag by each method that
    measured one, and its lag in bytes."""
    labels = {"cluster": cluster, "replica": replica}
    measurements = [Measurement("replication_streaming", labels, 1.0 if r.streaming else 0.0)]
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
        ("heartbeat", r.lag),
        ("replay_timestamp", st.replay_timestamp_lag),
        ("primary_stat", r.primary_stat_lag),
    ):
        if value is not None and math.isfinite(value):
            measurements.append(
                Measurement("replication_lag_seconds", {**labels, "method": method}, value)
            )
    if r.lag_bytes is not None:
        measurements.append(
            Measurement("replication_lag_bytes", labels, float(max(0, r.lag_bytes)))
        )
    return measurements


def _replica_facts(
    rcfg: ReplicaConfig, st: ReplicaState, r: _Reading, problem: CheckFailure | None
) -> dict[str, object]:
    """The replica's entry in the result's facts (for the API and the status page)."""
    return {
        "replica": rcfg.name,
        "site": rcfg.site,
        "lag_seconds": r.lag,
        "replay_timestamp_lag_seconds": st.replay_timestamp_lag,
        "primary_stat_lag_seconds": r.primary_stat_lag,
        "lag_bytes": None if r.lag_bytes is None else max(0, int(r.lag_bytes)),
        "streaming": r.streaming,
        "in_recovery": st.in_recovery,
        "split_brain": r.split_brain,
        "within_rpo": r.within_rpo,
        "heartbeat_source": st.heartbeat_source,
        "at_primary_loss": None if r.at_loss is None else r.at_loss.facts(),
        "error": problem.message if problem else None,
        "reason": problem.reason.value if problem else None,
    }


def _secs(value: float) -> str:
    return f"{value:g}s"
