"""Replication checks against a real PostgreSQL primary and streaming replica on loopback."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from pydantic import ValidationError

from failsight.core.check import ProbeContext
from failsight.core.kind import Env, SiteRef
from failsight.core.results import Reason, ReplicaSafety, Result
from failsight.probes.replication import (
    KIND,
    Heartbeat,
    ReplicationCheck,
    ReplicationConfig,
    VisibleHeartbeat,
    classify,
    heartbeat_lag,
)
from tests.fixtures.postgres import (
    APP_DATABASE,
    NO_CREATE_ROLE,
    PASSWORD,
    PASSWORD_ROLE,
    PgPair,
    free_port,
)

VANTAGE = "aws-use1"
REPLICA = "gcp-euw1"
FACT_KEYS = {
    "cluster",
    "rpo_seconds",
    "primary_site",
    "primary_writable",
    "primary_error",
    "heartbeat_written",
    "replicas",
}
REPLICA_FACT_KEYS = {
    "replica",
    "site",
    "lag_seconds",
    "replay_timestamp_lag_seconds",
    "primary_stat_lag_seconds",
    "lag_bytes",
    "streaming",
    "in_recovery",
    "split_brain",
    "within_rpo",
    "heartbeat_source",
    "at_primary_loss",
    "error",
    "reason",
}

MakeCheck = Callable[..., ReplicationCheck]


def config(primary_dsn: str, replica_dsn: str, **overrides: Any) -> ReplicationConfig:
    data: dict[str, Any] = {
        "cluster": "orders-db",
        "rpo": "30s",
        "interval": "1s",
        "timeout": "3s",
        "primary": {"site": "aws-use1", "dsn": primary_dsn},
        "replicas": [{"site": REPLICA, "dsn": replica_dsn}],
    }
    data.update(overrides)
    return ReplicationConfig.model_validate(data)


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    async with aiohttp.ClientSession() as http:
        yield ProbeContext(vantage=VANTAGE, http=http)


@pytest.fixture
async def make_check() -> AsyncIterator[MakeCheck]:
    """Checks built by a test, closed (pools and all) when it ends."""
    checks: list[ReplicationCheck] = []

    def make(cfg: ReplicationConfig, vantage: str = VANTAGE) -> ReplicationCheck:
        check = ReplicationCheck(cfg, vantage=vantage)
        checks.append(check)
        return check

    yield make
    for check in checks:
        await check.close()


@pytest.fixture
def pair_check(pg_pair: PgPair, make_check: MakeCheck) -> Callable[..., ReplicationCheck]:
    def make(**overrides: Any) -> ReplicationCheck:
        return make_check(config(pg_pair.primary.dsn(), pg_pair.replica.dsn(), **overrides))

    return make


def replica_facts(result: Result) -> dict[str, Any]:
    replicas = result.facts["replicas"]
    assert isinstance(replicas, list)
    assert len(replicas) == 1
    facts: dict[str, Any] = replicas[0]
    return facts


def safety_from_facts(result: Result) -> list[ReplicaSafety]:
    """What the verdict read from a result's facts before it read evidence: each replica's
    safety, as of the primary's last write while the primary takes none."""
    facts = result.facts
    replicas = facts["replicas"]
    assert isinstance(replicas, list)
    out = []
    for replica in replicas:
        lag, streaming = replica["lag_seconds"], replica["streaming"]
        if replica["at_primary_loss"] is not None:
            lag, streaming = (
                replica["at_primary_loss"]["lag_seconds"],
                replica["at_primary_loss"]["streaming"],
            )
        rpo = facts["rpo_seconds"]
        assert isinstance(rpo, float)
        out.append(
            ReplicaSafety(
                cluster=str(facts["cluster"]),
                primary_site=str(facts["primary_site"]),
                replica_site=str(replica["site"]),
                rpo_seconds=rpo,
                lag_seconds=float(lag) if isinstance(lag, int | float) else None,
                streaming=bool(streaming),
                split_brain=bool(replica["split_brain"]),
            )
        )
    return out


def safety(result: Result) -> list[ReplicaSafety]:
    """The result's ReplicaSafety evidence, checked against its facts: one per replica."""
    evidence = [e for e in result.evidence if isinstance(e, ReplicaSafety)]
    assert evidence == safety_from_facts(result)
    assert len(evidence) == len(result.evidence)
    return evidence


def lag(result: Result, method: str) -> float | None:
    for m in result.measurements:
        if m.name == "replication_lag_seconds" and m.labels["method"] == method:
            return m.value
    return None


def gauge(result: Result, name: str) -> float | None:
    return next((m.value for m in result.measurements if m.name == name), None)


def read_time(result: Result) -> float:
    return result.started_at + result.duration


async def run_until(
    check: ReplicationCheck, ctx: ProbeContext, done: Callable[[Result], bool], within: float
) -> Result:
    deadline = time.monotonic() + within
    while True:
        result = await check.run(ctx)
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.3)


# --- the heartbeat maths ----------------------------------------------------------------------


def _written(*pairs: tuple[int, float]) -> list[Heartbeat]:
    # (seq, time): wall and monotonic clocks 1000 s apart, to catch a mix-up between them.
    return [Heartbeat(seq, 1000.0 + t, t) for seq, t in pairs]


@pytest.mark.parametrize(
    ("written", "visible", "read_at", "expected"),
    [
        pytest.param([], None, 10.0, None, id="nothing written, nothing visible: no evidence"),
        pytest.param(_written((1, 9.0)), None, 10.0, 1.0, id="own row absent: age of first"),
        pytest.param(
            _written((1, 8.0), (2, 9.0)), (2, 9.0), 10.0, 0.0, id="latest visible: caught up"
        ),
        pytest.param(
            _written((1, 5.0), (2, 6.0)), (2, 6.0), 10.0, 4.0, id="latest visible but stale"
        ),
        pytest.param(
            _written((1, 5.0), (2, 6.0), (3, 7.0), (4, 8.0)),
            (2, 6.0),
            10.0,
            3.0,
            id="lag counts from the oldest unseen write",
        ),
        pytest.param(
            _written((7, 6.0), (8, 7.0)), (3, 2.0), 10.0, 8.0, id="gap: visible row's own age"
        ),
        pytest.param(
            _written((4, 5.0), (5, 7.0)), (3, 2.0), 10.0, 5.0, id="next after visible is known"
        ),
        pytest.param(
            _written((1, 5.0), (2, 11.0)), (1, 5.0), 6.0, 0.0, id="writes after the read ignored"
        ),
    ],
)
def test_heartbeat_lag(
    written: list[Heartbeat],
    visible: tuple[int, float] | None,
    read_at: float,
    expected: float | None,
) -> None:
    seen = VisibleHeartbeat(visible[0], 1000.0 + visible[1]) if visible else None
    got = heartbeat_lag(written, seen, read_mono=read_at, read_wall=1000.0 + read_at, interval=1.0)
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (TimeoutError(), Reason.TIMEOUT),
        (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), "timeout"),
        (socket.gaierror(-2, "Name or service not known"), Reason.DNS),
        (ConnectionRefusedError(111, "Connection refused"), Reason.CONNECT),
        (ssl.SSLCertVerificationError("certificate verify failed"), Reason.TLS),
        (asyncpg.InvalidPasswordError("password authentication failed"), Reason.AUTH),
        (asyncpg.InvalidAuthorizationSpecificationError('role "x" does not exist'), "auth"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), "connect"),
        (asyncpg.InvalidCatalogNameError('database "x" does not exist'), "connect"),
        (asyncpg.ReadOnlySQLTransactionError("read-only transaction"), "assertion"),
        (KeyError("a bug"), Reason.INTERNAL),
    ],
)
def test_failures_are_classified(exc: BaseException, reason: str) -> None:
    assert classify(exc) == reason


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_and_replica_names() -> None:
    cfg = ReplicationConfig.model_validate(
        {
            "cluster": "orders-db",
            "rpo": "30s",
            "primary": {"site": "aws-use1", "dsn": "postgresql://a:pw@db1:5432/app"},
            "replicas": [
                {"site": "gcp-euw1", "dsn": "postgresql://a:pw@db2/app"},
                {"site": "gcp-euw1", "name": "gcp-euw1-b", "dsn": "postgres://a:pw@db3/app"},
                {
                    "site": "azure-weu",
                    "name": "weu",
                    "application_name": "weu_walreceiver",
                    "dsn": "postgresql://a@db4/app",
                },
            ],
        }
    )
    assert (cfg.rpo, cfg.interval, cfg.timeout, cfg.heartbeat_table) == (
        30.0,
        5.0,
        5.0,
        "failsight.heartbeat",
    )
    assert [(r.name, r.application_name) for r in cfg.replicas] == [
        ("gcp-euw1", "gcp-euw1"),
        ("gcp-euw1-b", "gcp-euw1-b"),
        ("weu", "weu_walreceiver"),
    ]
    assert "pw" not in repr(cfg)
    check = ReplicationCheck(cfg, vantage="aws-use1")
    assert (check.name, check.kind, check.target, check.site, check.critical) == (
        "replication/orders-db",
        "replication",
        "orders-db",
        "aws-use1",
        False,
    )
    assert (check.interval, check.timeout) == (5.0, 5.0)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"heartbeat_table": "heartbeat"}, "must be schema.table in lower-case letters"),
        ({"heartbeat_table": 'failsight."x; drop"'}, "must be schema.table in lower-case"),
        ({"rpo": "0s"}, "must be greater than zero"),
        ({"replicas": []}, "at least 1 item"),
        ({"primary": {"site": "a", "dsn": "host=db1 password=hunter2"}}, "postgresql://"),
        ({"standby": "x"}, "Extra inputs are not permitted"),
        (
            {
                "replicas": [
                    {"site": "gcp-euw1", "dsn": "postgresql://db2/app"},
                    {"site": "gcp-euw1", "dsn": "postgresql://db3/app"},
                ]
            },
            "replicas: name 'gcp-euw1' is used twice",
        ),
    ],
)
def test_config_errors(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as info:
        config("postgresql://a:pw@db1/app", "postgresql://a:pw@db2/app", **change)
    assert error in str(info.value)
    assert "hunter2" not in str(info.value)


def test_kind_plans_one_check_per_cluster_and_checks_its_sites() -> None:
    env = Env(
        vantage="gcp-euw1",
        sites=(
            SiteRef("aws-use1", "primary", "https://use1.example"),
            SiteRef(REPLICA, "standby", "https://euw1.example"),
        ),
    )
    good = config("postgresql://a@db1/app", "postgresql://a@db2/app")
    bad = config(
        "postgresql://a@db1/app",
        "postgresql://a@db2/app",
        cluster="billing-db",
        primary={"site": "nowhere", "dsn": "postgresql://a@db3/app"},
        replicas=[
            {"site": REPLICA, "dsn": "postgresql://a@db4/app"},
            {"site": "elsewhere", "dsn": "postgresql://a@db5/app"},
        ],
    )
    checks = KIND.plan([good, bad], env)
    assert [(c.name, c.site, c.timeout) for c in checks] == [
        ("replication/orders-db", "aws-use1", 3.0),
        ("replication/billing-db", "nowhere", 3.0),
    ]
    assert all(isinstance(c, ReplicationCheck) and c.vantage == "gcp-euw1" for c in checks)
    assert list(KIND.check_config([good, bad], env)) == [
        ((1, "primary", "site"), "unknown site 'nowhere'"),
        ((1, "replicas", 1, "site"), "unknown site 'elsewhere'"),
    ]
    assert (KIND.name, KIND.key, KIND.model) == ("replication", "replication", ReplicationConfig)
    assert KIND.naming is not None and KIND.naming[0] == "cluster"
    assert KIND.naming[1](bad) == "billing-db"
    assert [m.name for m in KIND.metrics] == [
        "replication_lag_seconds",
        "replication_lag_bytes",
        "replication_streaming",
        "replication_writable",
        "replication_rpo_seconds",
    ]


# --- against real servers ---------------------------------------------------------------------


async def test_steady_state_all_methods_near_zero(
    pair_check: Callable[..., ReplicationCheck], ctx: ProbeContext
) -> None:
    check = pair_check()
    for _ in range(3):
        result = await check.run(ctx)
        await asyncio.sleep(0.2)
    assert result.ok, result.message
    assert result.reason is None
    assert set(result.facts) == FACT_KEYS
    facts = replica_facts(result)
    assert set(facts) == REPLICA_FACT_KEYS
    assert facts["streaming"] is True
    assert facts["in_recovery"] is True
    assert facts["within_rpo"] is True
    assert facts["heartbeat_source"] == "own"
    assert result.facts["primary_writable"] is True
    assert result.facts["heartbeat_written"] is True
    for method in ("heartbeat", "replay_timestamp", "primary_stat"):
        value = lag(result, method)
        assert value is not None, method
        assert 0.0 <= value < 1.5, (method, value)
    assert gauge(result, "replication_streaming") == 1.0
    assert gauge(result, "replication_rpo_seconds") == 30.0
    lag_bytes = gauge(result, "replication_lag_bytes")
    assert lag_bytes is not None
    assert 0 <= lag_bytes < 1_000_000
    assert {m.labels["replica"] for m in result.measurements if "replica" in m.labels} == {REPLICA}
    assert safety(result) == [
        ReplicaSafety(
            cluster="orders-db",
            primary_site="aws-use1",
            replica_site=REPLICA,
            rpo_seconds=30.0,
            lag_seconds=facts["lag_seconds"],
            streaming=True,
            split_brain=False,
        )
    ]


async def test_idle_primary_grows_replay_timestamp_lag_but_not_heartbeat_lag(
    pair_check: Callable[..., ReplicationCheck], ctx: ProbeContext
) -> None:
    # Nothing but the check writes to this primary; between runs it is idle.
    check = pair_check()
    await check.run(ctx)
    seen = []
    for idle in (2.0, 4.0):
        await asyncio.sleep(idle)
        result = await check.run(ctx)
        assert result.ok, result.message
        replay = lag(result, "replay_timestamp")
        heartbeat = lag(result, "heartbeat")
        assert replay is not None
        assert heartbeat is not None
        assert replay >= idle - 0.5, (idle, replay)
        assert heartbeat < 0.5, (idle, heartbeat)
        seen.append(replay)
    assert seen[1] > seen[0] + 1.0


async def test_paused_replay_is_measured_and_judged_against_the_rpo(
    pg_pair: PgPair,
    pair_check: Callable[..., ReplicationCheck],
    ctx: ProbeContext,
) -> None:
    interval = 1.0
    check = pair_check(rpo="2s", interval=f"{interval}s")
    assert (await check.run(ctx)).ok
    await asyncio.to_thread(pg_pair.pause_replay)
    paused_at = time.time()
    results = []
    for k in range(5):
        await asyncio.sleep(max(0.0, paused_at + 0.5 + k * interval - time.time()))
        results.append(await check.run(ctx))
    for result in results:
        truth = read_time(result) - paused_at
        measured = replica_facts(result)["lag_seconds"]
        assert measured is not None
        # A lower bound, tight within one write interval.
        assert truth - interval - 0.5 <= measured <= truth + 0.5, (truth, measured)
    first, last = replica_facts(results[0]), replica_facts(results[-1])
    assert first["within_rpo"] is True
    assert results[0].ok
    assert last["within_rpo"] is False
    assert last["streaming"] is True
    assert not results[-1].ok
    assert results[-1].reason == Reason.ASSERTION
    assert "exceeds the RPO of 2s" in results[-1].message
    await asyncio.to_thread(pg_pair.resume_replay)
    recovered = await run_until(check, ctx, lambda r: r.ok, within=10)
    assert recovered.ok, recovered.message
    assert replica_facts(recovered)["within_rpo"] is True


async def test_stopped_replica_is_reported_and_recovered_by_the_same_check(
    pg_pair: PgPair,
    pair_check: Callable[..., ReplicationCheck],
    ctx: ProbeContext,
) -> None:
    check = pair_check()
    assert (await check.run(ctx)).ok
    await asyncio.to_thread(pg_pair.stop_replica)
    for _ in range(2):  # and the run after keeps working
        result = await check.run(ctx)
        facts = replica_facts(result)
        assert not result.ok
        assert result.reason == Reason.CONNECT
        assert facts["streaming"] is False
        assert facts["reason"] == "connect"
        assert facts["error"] == f"replica {REPLICA}: connection refused"
        assert facts["lag_seconds"] is None
        assert facts["within_rpo"] is False
        assert gauge(result, "replication_streaming") == 0.0
        assert result.facts["heartbeat_written"] is True
        [evidence] = safety(result)
        assert (evidence.lag_seconds, evidence.streaming) == (None, False)
    await asyncio.to_thread(pg_pair.start_replica)
    recovered = await run_until(check, ctx, lambda r: r.ok, within=20)
    assert recovered.ok, recovered.message
    assert replica_facts(recovered)["streaming"] is True
    assert gauge(recovered, "replication_streaming") == 1.0


async def test_stopped_primary_fails_the_write_but_the_replica_is_still_read(
    pg_pair: PgPair,
    pair_check: Callable[..., ReplicationCheck],
    ctx: ProbeContext,
) -> None:
    check = pair_check()
    last_write = time.monotonic()
    assert (await check.run(ctx)).ok
    await asyncio.to_thread(pg_pair.stop_primary)
    for _ in range(2):
        result = await check.run(ctx)
        since_last_write = time.monotonic() - last_write
        assert not result.ok
        assert result.reason == Reason.CONNECT
        assert result.facts["heartbeat_written"] is False
        assert result.facts["primary_writable"] is None
        assert result.facts["primary_error"] == "primary aws-use1: connection refused"
        facts = replica_facts(result)
        assert facts["in_recovery"] is True
        assert facts["split_brain"] is False
        assert facts["heartbeat_source"] == "own"
        # The replica shows the last heartbeat written: its lag is 0 while the write cadence
        # explains the heartbeat's age, and that age at most once it no longer does.
        assert facts["lag_seconds"] is not None
        assert 0.0 <= facts["lag_seconds"] <= since_last_write
        assert facts["replay_timestamp_lag_seconds"] is not None
        assert facts["primary_stat_lag_seconds"] is None
        assert facts["lag_bytes"] is None
    streaming = await run_until(
        check, ctx, lambda r: replica_facts(r)["streaming"] is False, within=10
    )
    assert replica_facts(streaming)["streaming"] is False
    # What the verdict reads while the primary takes no writes: the replica as of the last
    # write the primary took. It had everything and was streaming then: safe to promote,
    # however long the primary stays down.
    await asyncio.sleep(1.0)
    result = await check.run(ctx)
    at_loss = replica_facts(result)["at_primary_loss"]
    assert at_loss == {"lag_seconds": 0.0, "streaming": True, "as_of": at_loss["as_of"]}
    assert isinstance(at_loss["as_of"], float) and at_loss["as_of"] <= time.time() - 1.0
    # The evidence the verdict reads is the replica at the primary's loss, not its live state.
    assert replica_facts(result)["streaming"] is False
    [evidence] = safety(result)
    assert (evidence.lag_seconds, evidence.streaming) == (0.0, True)


async def test_replica_behind_when_the_primary_is_lost_keeps_that_lag(
    pg_pair: PgPair,
    pair_check: Callable[..., ReplicationCheck],
    ctx: ProbeContext,
) -> None:
    check = pair_check()
    assert (await check.run(ctx)).ok
    await asyncio.to_thread(pg_pair.pause_replay)
    paused_at = time.monotonic()
    while time.monotonic() - paused_at < 2.5:  # heartbeats keep being written meanwhile
        await check.run(ctx)
        await asyncio.sleep(0.3)
    lost_at = time.monotonic()
    await asyncio.to_thread(pg_pair.stop_primary)
    await asyncio.sleep(1.0)
    result = await check.run(ctx)
    at_loss = replica_facts(result)["at_primary_loss"]
    [evidence] = safety(result)
    assert (evidence.lag_seconds, evidence.streaming) == (at_loss["lag_seconds"], True)
    # Missing on the replica: the writes of the last ~2.5 s before the primary went away,
    # not the whole time since the pause kept growing after the loss.
    assert at_loss["streaming"] is True
    assert 1.0 <= at_loss["lag_seconds"] <= lost_at - paused_at + 0.5


async def test_promoted_replica_is_a_split_brain(
    pg_pair: PgPair,
    pair_check: Callable[..., ReplicationCheck],
    ctx: ProbeContext,
) -> None:
    check = pair_check()
    assert (await check.run(ctx)).ok
    await asyncio.to_thread(pg_pair.promote_replica)
    result = await check.run(ctx)
    facts = replica_facts(result)
    assert not result.ok
    assert result.reason == Reason.ASSERTION
    assert facts["split_brain"] is True
    assert facts["in_recovery"] is False
    assert facts["streaming"] is False
    assert result.facts["primary_writable"] is True
    assert result.message.startswith("SPLIT BRAIN: replica gcp-euw1")
    [evidence] = safety(result)
    assert evidence.split_brain is True


async def test_every_result_carries_each_replicas_safety_as_its_facts_say(
    pg_pair: PgPair,
    make_check: MakeCheck,
    ctx: ProbeContext,
) -> None:
    # Two replicas (the second a name the primary does not stream to), in config order.
    check = make_check(
        config(
            pg_pair.primary.dsn(),
            pg_pair.replica.dsn(),
            rpo="45s",
            replicas=[
                {"site": REPLICA, "dsn": pg_pair.replica.dsn()},
                {"site": "azure-weu", "name": "weu", "dsn": pg_pair.replica.dsn()},
            ],
        )
    )
    for _ in range(2):
        result = await check.run(ctx)
        evidence = safety(result)
        assert [(e.cluster, e.primary_site, e.replica_site, e.rpo_seconds) for e in evidence] == [
            ("orders-db", "aws-use1", REPLICA, 45.0),
            ("orders-db", "aws-use1", "azure-weu", 45.0),
        ]
    await asyncio.to_thread(pg_pair.stop_primary)

    def at_primary_loss(result: Result) -> bool:
        replicas = result.facts["replicas"]
        assert isinstance(replicas, list)
        return all(replica["at_primary_loss"] is not None for replica in replicas)

    lost = await run_until(check, ctx, at_primary_loss, within=5)
    assert at_primary_loss(lost)
    assert [e.replica_site for e in safety(lost)] == [REPLICA, "azure-weu"]


async def test_primary_dsn_that_is_a_standby_is_not_writable(
    pg_pair: PgPair,
    make_check: MakeCheck,
    ctx: ProbeContext,
) -> None:
    check = make_check(config(pg_pair.replica.dsn(), pg_pair.replica.dsn()))
    result = await check.run(ctx)
    assert not result.ok
    assert result.reason == Reason.ASSERTION
    assert result.facts["primary_writable"] is False
    assert result.facts["heartbeat_written"] is False
    assert "is in recovery" in str(result.facts["primary_error"])


async def test_vantage_that_cannot_write_uses_another_vantages_heartbeat(
    pg_pair: PgPair,
    make_check: MakeCheck,
    ctx: ProbeContext,
) -> None:
    writer = make_check(config(pg_pair.primary.dsn(), pg_pair.replica.dsn()), vantage="aws-use1")
    assert (await writer.run(ctx)).ok
    # This vantage cannot reach the primary, but it can read the replica.
    unreachable = f"postgresql://failsight@127.0.0.1:{free_port()}/postgres"
    reader = make_check(config(unreachable, pg_pair.replica.dsn()), vantage="azure-weu")
    result = await reader.run(ctx)
    facts = replica_facts(result)
    assert facts["heartbeat_source"] == "other_vantage"
    assert facts["lag_seconds"] is not None
    assert facts["lag_seconds"] < 3.0
    assert result.reason == Reason.CONNECT


async def test_nothing_listening_is_connect(make_check: MakeCheck, ctx: ProbeContext) -> None:
    dsn = f"postgresql://failsight:hunter2-secret@127.0.0.1:{free_port()}/postgres"
    check = make_check(config(dsn, dsn))
    result = await check.run(ctx)
    assert not result.ok
    assert result.reason == Reason.CONNECT
    assert result.facts["primary_error"] == "primary aws-use1: connection refused"
    assert replica_facts(result)["reason"] == "connect"
    assert "hunter2" not in repr(result)


async def test_wrong_password_is_auth_and_never_shown(
    pg_pair: PgPair,
    make_check: MakeCheck,
    ctx: ProbeContext,
) -> None:
    wrong = make_check(
        config(
            pg_pair.primary.dsn(PASSWORD_ROLE, password="wrong-password-xyzzy"),
            pg_pair.replica.dsn(PASSWORD_ROLE, password="wrong-password-xyzzy"),
        )
    )
    result = await wrong.run(ctx)
    assert not result.ok
    assert result.reason == Reason.AUTH
    assert result.facts["primary_error"] == (
        f'primary aws-use1: password authentication failed for user "{PASSWORD_ROLE}" '
        "(SQLSTATE 28P01)"
    )
    assert replica_facts(result)["reason"] == "auth"
    assert "xyzzy" not in repr(result)
    # The same role with its password is let in: the failure was the password, nothing else.
    right = make_check(
        config(
            pg_pair.primary.dsn(PASSWORD_ROLE, password=PASSWORD),
            pg_pair.replica.dsn(PASSWORD_ROLE, password=PASSWORD),
        )
    )
    result = await run_until(right, ctx, lambda r: r.ok, within=5)
    assert result.ok, result.message
    assert PASSWORD not in repr(result)


async def test_role_without_create_right_gets_the_privilege_to_grant(
    pg_pair: PgPair,
    make_check: MakeCheck,
    ctx: ProbeContext,
) -> None:
    check = make_check(
        config(
            pg_pair.primary.dsn(NO_CREATE_ROLE, database=APP_DATABASE),
            pg_pair.replica.dsn(NO_CREATE_ROLE, database=APP_DATABASE),
        )
    )
    for _ in range(2):
        result = await check.run(ctx)
        assert not result.ok
        assert result.reason == Reason.AUTH
        assert result.facts["primary_writable"] is True
        assert result.facts["heartbeat_written"] is False
        assert result.facts["primary_error"] == (
            "primary aws-use1: permission denied to create schema failsight: "
            f"grant CREATE on database {APP_DATABASE} to {NO_CREATE_ROLE}, "
            "or create the table yourself: "
            'CREATE SCHEMA IF NOT EXISTS "failsight"; CREATE TABLE IF NOT EXISTS '
            '"failsight"."heartbeat" (vantage text PRIMARY KEY, written_at timestamptz '
            "NOT NULL, seq bigint NOT NULL)"
        )
        facts = replica_facts(result)
        assert facts["streaming"] is True
        assert facts["lag_seconds"] is None
        assert facts["error"] == f"replica {REPLICA}: no heartbeat visible yet"


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose kernel accepts connections that nothing ever answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


async def test_hanging_server_times_out_then_backs_off(
    blackhole: int, make_check: MakeCheck, ctx: ProbeContext
) -> None:
    dsn = f"postgresql://failsight@127.0.0.1:{blackhole}/postgres"
    check = make_check(config(dsn, dsn, timeout="1s", interval="1s"))
    first = await check.run(ctx)
    assert first.reason == Reason.TIMEOUT
    assert first.facts["primary_error"] == "primary aws-use1: timed out"
    assert 0.3 <= first.duration < 1.0  # the connect timeout, inside the run's budget
    # The next run does not wait on the dead server again until the backoff ends.
    second = await check.run(ctx)
    assert second.reason == Reason.TIMEOUT
    assert "not retried for another" in str(second.facts["primary_error"])
    assert second.duration < 0.25
    await asyncio.sleep(1.1)
    third = await check.run(ctx)
    assert third.reason == Reason.TIMEOUT
    assert third.duration >= 0.3  # retried
