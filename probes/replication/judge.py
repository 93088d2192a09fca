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
from failsight.probes.replication.config import ReplicationConfig
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
        cluster = cfg.cluster
        measurements = [Measurement("replication_rpo_seconds", {"cluster": cluster}, cfg.rpo)]
        facts_replicas: list[dict[str, object]] = []
        evidence: list[ReplicaSafety] = []
        split_brain_problems: list[CheckFailure] = []
        replica_problems: list[CheckFailure] = []

        for rcfg, label, st in zip(cfg.replicas, self.labels, replicas, strict=True):
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
            at_loss = (
                None if primary.written else self._at_primary_loss(rcfg.name, st, written, interval)
            )

            problem: CheckFailure | None = None
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
                    "at_primary_loss": None if at_loss is None else at_loss.facts(),
                    "error": problem.message if problem else None,
                    "reason": problem.reason.value if problem else None,
                }
            )
            # While the primary takes no writes, judge the replica as of the last one it took.
            safe_lag, safe_streaming = (
                (lag, streaming) if at_loss is None else (at_loss.lag_seconds, at_loss.streaming)
            )
            evidence.append(
                ReplicaSafety(
                    cluster=cluster,
                    primary_site=cfg.primary.site,
                    replica_site=rcfg.site,
                    rpo_seconds=float(cfg.rpo),
                    lag_seconds=None if safe_lag is None else float(safe_lag),
                    streaming=safe_streaming,
                    split_brain=split_brain,
                )
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
        return Judgement(
            ok=ok,
            reason=reason,
            message=message,
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
            evidence=tuple(evidence),
        )


def _secs(value: float) -> str:
    return f"{value:g}s"
