"""PostgreSQL replication check: lag by three methods, streaming state and split brain.

`config` holds the `replication:` config models, `measure` what a run observes on each server
(and how the heartbeat lag is computed), `heartbeat` the heartbeat writer, `judge` how the
observations become a result and its evidence, and `check` the check itself, `plan` and the
kind's descriptor `KIND`.
"""

from failsight.probes.replication.check import KIND, ReplicationCheck, check_config, plan
from failsight.probes.replication.config import (
    ReplicaConfig,
    ReplicationConfig,
    ReplicationEndpoint,
    dsn_secrets,
)
from failsight.probes.replication.measure import (
    MAX_ERROR_CHARS,
    Heartbeat,
    VisibleHeartbeat,
    classify,
    heartbeat_lag,
)

__all__ = [
    "KIND",
    "MAX_ERROR_CHARS",
    "Heartbeat",
    "ReplicaConfig",
    "ReplicationCheck",
    "ReplicationConfig",
    "ReplicationEndpoint",
    "VisibleHeartbeat",
    "check_config",
    "classify",
    "dsn_secrets",
    "heartbeat_lag",
    "plan",
]
