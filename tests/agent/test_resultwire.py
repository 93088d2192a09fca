"""The wire form of a Result that group members exchange: real results (an IdP against a real
OIDC issuer, DNS against a real dnsmasq, the self-check against a real server, replication as its
judge decides) survive the trip with every answer the view and the verdict read from them, and
another agent's hostile bytes end in a ValueError or a bounded result, never anything else."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from failsight.agent.resultwire import (
    MAX_CHARS,
    MAX_EVIDENCE,
    MAX_FACTS_DEPTH,
    MAX_FACTS_VALUES,
    result_from_json,
    result_to_json,
)
from failsight.agent.verdict import dependencies_json, dependency_reasons, replication_states
from failsight.agent.view import SiteState, ViewTracker
from failsight.core.check import ProbeContext
from failsight.core.results import (
    CheckFailure,
    DependsOn,
    Evidence,
    Measurement,
    Reason,
    Remark,
    ReplicaSafety,
    Result,
    StepResult,
    VantageReach,
)
from failsight.probes.dns import DnsCheck, DnsConfig
from failsight.probes.idp import IdpCheck, IdpConfig
from failsight.probes.replication.config import ReplicationConfig
from failsight.probes.replication.judge import Judge
from failsight.probes.replication.measure import (
    Heartbeat,
    PrimaryState,
    ReplicaState,
    VisibleHeartbeat,
)
from failsight.probes.selfcheck import SelfCheck, SelfCheckConfig
from tests.factories import journey_result
from tests.fixtures.oidc import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcIssuer

if TYPE_CHECKING:
    from tests.fixtures.dnsmasq import Dnsmasq

NOW = 1_780_000_000.0
SITES = ("aws-use1", "gcp-euw1")


def over_the_wire(result: Result) -> Result:
    """What a member rebuilds from another member's shard: through real JSON text, which must
    be strict JSON (no NaN) as any JSON parser reads it."""
    return result_from_json(json.loads(json.dumps(result_to_json(result), allow_nan=False)))


def kept(result: Result) -> Result:
    """`result` as the wire keeps it: steps, cleanup, measurements and span id stay behind."""
    return replace(result, steps=(), cleanup=(), measurements=(), span_id="")


def assert_round_trip(result: Result) -> Result:
    rebuilt = over_the_wire(result)
    assert rebuilt == kept(result)
    assert over_the_wire(rebuilt) == rebuilt
    summary = result.summary()
    summary.pop("steps", None)
    summary.pop("cleanup", None)
    assert rebuilt.summary() == summary
    return rebuilt


def a_result(**fields: Any) -> Result:
    base: dict[str, Any] = {
        "check": "idp/corp-idp",
        "kind": "idp",
        "target": "corp-idp",
        "ok": False,
        "reason": Reason.HTTP_STATUS,
        "message": "token: HTTP 500",
        "started_at": NOW,
        "duration": 0.25,
        "run_id": "run-1",
    }
    base.update(fields)
    return Result(**base)


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evidence",
    [
        DependsOn("idp/corp-idp", "IdP corp-idp", Reason.AUTH, "journey checkout cannot log in"),
        Remark(None, "IdP corp-idp is failing [http_status]: token: HTTP 500"),
        Remark("aws-use1", "DNS: orders.example.test resolves to aws-use1 (resolver local)"),
        ReplicaSafety("orders-db", "aws-use1", "gcp-euw1", 2.0, 0.0, True, False),
        ReplicaSafety("orders-db", "aws-use1", "gcp-euw1", 30.0, 41.25, False, True),
        ReplicaSafety("orders-db", "aws-use1", "gcp-euw1", 30.0, None, False, False),
        VantageReach(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_each_evidence_type_round_trips(evidence: Evidence) -> None:
    rebuilt = assert_round_trip(a_result(evidence=(evidence,)))
    assert rebuilt.evidence == (evidence,)
    assert type(rebuilt.evidence[0]) is type(evidence)


def test_every_field_kept_round_trips() -> None:
    result = a_result(
        site="aws-use1",
        ok=True,
        reason=None,
        message="",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        critical=True,
        skipped=True,
        started_at=0.0,
        duration=12.5,
        facts={"nested": {"list": [1, 2.5, None, True, "x"], "empty": {}}, "n": -3},
        evidence=(
            VantageReach(),
            Remark(None, "a"),
            DependsOn("idp/x", "IdP x", Reason.TIMEOUT, "e"),
        ),
        steps=(StepResult(name="login", ok=True, duration=0.1),),
        cleanup=(StepResult(name="delete", ok=True, duration=0.1),),
        measurements=(Measurement("idp_up", {"idp": "x"}, 1.0),),
    )
    rebuilt = assert_round_trip(result)
    assert rebuilt.steps == rebuilt.cleanup == ()
    assert rebuilt.measurements == ()
    assert rebuilt.span_id == ""


@pytest.mark.parametrize("ok", [True, False])
def test_factory_journey_results_round_trip(ok: bool) -> None:
    assert_round_trip(journey_result("aws-use1", ok, NOW))


def test_every_reason_round_trips() -> None:
    for reason in Reason:
        assert over_the_wire(a_result(reason=reason)).reason is reason


def test_the_wire_form_is_plain_json() -> None:
    wire = result_to_json(
        a_result(
            evidence=(
                DependsOn("idp/x", "IdP x", Reason.AUTH, "e"),
                ReplicaSafety("c", "a", "b", 2.0, None, True, False),
                VantageReach(),
            )
        )
    )
    assert json.loads(json.dumps(wire, allow_nan=False)) == wire
    assert [e["type"] for e in wire["evidence"]] == [  # type: ignore[attr-defined]
        "depends_on",
        "replica_safety",
        "vantage_reach",
    ]
    assert wire["reason"] == "http_status"
    assert not {"steps", "cleanup", "measurements", "span_id"} & set(wire)


# --- real results: IdP, DNS, self-check, replication -------------------------------------------


def idp_config(issuer: str) -> IdpConfig:
    return IdpConfig.model_validate(
        {
            "name": "corp-idp",
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "audience": AUDIENCE,
        }
    )


async def idp_results() -> tuple[Result, Result]:
    """A passing and a failing run of a real IdP check (the issuer answers 500 for tokens)."""
    async with OidcIssuer() as issuer, aiohttp.ClientSession() as http:
        check = IdpCheck(idp_config(issuer.issuer))
        ctx = ProbeContext(vantage="test", http=http)
        passing = await check.run(ctx)
        issuer.token_status = 500
        failing = await check.run(ctx)
        await check.close()
    assert passing.ok and not failing.ok, (passing.summary(), failing.summary())
    return passing, failing


def auth_failure(site: str, at: float = NOW) -> Result:
    """A critical journey run refused at auth, relying on the IdP (as the journey kind says)."""
    run = journey_result(site, False, at)
    return replace(
        run,
        reason=Reason.AUTH,
        message="step login: HTTP 401",
        evidence=(
            DependsOn("idp/corp-idp", "IdP corp-idp", Reason.AUTH, "journey order cannot log in"),
        ),
    )


async def test_real_idp_results_round_trip_with_the_verdicts_answers() -> None:
    passing, failing = await idp_results()
    for result in (passing, failing):
        rebuilt = assert_round_trip(result)
        assert rebuilt.facts == result.facts and "phases" in rebuilt.facts
        assert dependencies_json([rebuilt]) == dependencies_json([result])
        for site in SITES:
            assert dependency_reasons(site, [rebuilt]) == dependency_reasons(site, [result])
    assert dependency_reasons("aws-use1", [over_the_wire(failing)])  # the failing IdP's remark


async def test_blame_dependency_is_the_same_on_rebuilt_results() -> None:
    passing, failing = await idp_results()
    for idp in (passing, failing):
        here, there = ViewTracker(SITES), ViewTracker(SITES)
        here.handle(idp)
        there.handle(over_the_wire(idp))
        for run in (auth_failure("aws-use1"), journey_result("aws-use1", False, NOW)):
            assert there.blame_dependency(over_the_wire(run)) == here.blame_dependency(run)
    # The failing IdP is blamed: the site is degraded, never down, on the rebuilt results too.
    tracker = ViewTracker(SITES)
    tracker.handle(over_the_wire(failing))
    for i in range(5):
        tracker.handle(over_the_wire(auth_failure("aws-use1", NOW + i)))
    view = tracker.views["aws-use1"]
    assert view.state is SiteState.DEGRADED and view.failures == 0
    assert "IdP corp-idp is failing [http_status]" in view.evidence[0]


async def test_real_dns_results_round_trip_with_their_remarks(
    dnsmasq_factory: Callable[..., Dnsmasq],
) -> None:
    name = "orders.example.test"
    server = dnsmasq_factory({name: ["10.2.0.10"]})
    cfg = DnsConfig.model_validate(
        {
            "name": name,
            "timeout": "1s",
            "resolvers": [
                {"name": "local", "address": server.address, "port": server.port, "recursion": True}
            ],
            "answers": {"aws-use1": ["10.1.0.10"], "gcp-euw1": ["10.2.0.10"]},
        }
    )
    check = DnsCheck(cfg, cfg.resolvers[0], expect_site="aws-use1")
    async with aiohttp.ClientSession() as http:
        misrouted = await check.run(ProbeContext(vantage="test", http=http))
        server.write_hosts({name: ["10.1.0.10"]})
        server.reload()
        resolving = await check.run(ProbeContext(vantage="test", http=http))
        await check.close()
    assert not misrouted.ok and resolving.ok, (misrouted.summary(), resolving.summary())
    for result in (misrouted, resolving):
        rebuilt = assert_round_trip(result)
        assert rebuilt.evidence and all(isinstance(e, Remark) for e in rebuilt.evidence)
        assert dependencies_json([rebuilt]) == dependencies_json([result])
        for site in SITES:
            assert dependency_reasons(site, [rebuilt]) == dependency_reasons(site, [result])
    assert any(
        "should resolve to aws-use1" in r
        for r in dependency_reasons("aws-use1", [over_the_wire(misrouted)])
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_real_self_check_results_say_the_same_reach() -> None:
    async with OidcIssuer() as server, aiohttp.ClientSession() as http:
        ctx = ProbeContext(vantage="test", http=http)
        reaching = await SelfCheck(SelfCheckConfig(url=server.issuer)).run(ctx)
        cut_off = await SelfCheck(SelfCheckConfig(url=f"http://127.0.0.1:{closed_port()}/")).run(
            ctx
        )
    assert reaching.ok and not cut_off.ok
    for result in (reaching, cut_off):
        assert_round_trip(result)
        here, there = ViewTracker(SITES), ViewTracker(SITES)
        here.handle(result)
        there.handle(over_the_wire(result))
        assert there.self_check_ok is here.self_check_ok is result.ok


def replication_config() -> ReplicationConfig:
    return ReplicationConfig.model_validate(
        {
            "cluster": "orders-db",
            "rpo": "2s",
            "primary": {"site": "aws-use1", "dsn": "postgresql://u:p@127.0.0.1:5432/orders"},
            "replicas": [
                {"site": "gcp-euw1", "dsn": "postgresql://u:p@127.0.0.2:5432/orders"},
                {"site": "azure-eun1", "dsn": "postgresql://u:p@127.0.0.3:5432/orders"},
            ],
        }
    )


def replication_results() -> list[Result]:
    """Runs of one cluster as its judge decides them: healthy, one replica beyond the RPO and
    the other promoted (split brain), then the primary lost (lag as of its last write)."""
    cfg = replication_config()
    judge = Judge(cfg, labels=["gcp-euw1", "azure-eun1"])
    written = [Heartbeat(seq=i, wall=NOW + i, mono=100.0 + i) for i in range(1, 6)]
    senders: dict[str, tuple[str | None, float | None, int | None]] = {
        "gcp-euw1": ("streaming", 0.01, 0),
        "azure-eun1": ("streaming", None, 123_456_789_012),
    }

    def replica(lag: float | None, *, in_recovery: bool = True, seq: int = 5) -> ReplicaState:
        return ReplicaState(
            in_recovery=in_recovery,
            replay_timestamp_lag=0.5,
            receiver_status="streaming" if in_recovery else None,
            receiver_present=in_recovery,
            heartbeat_lag=lag,
            heartbeat_source="own",
            visible=VisibleHeartbeat(seq=seq, wall=NOW + seq),
        )

    def up() -> PrimaryState:
        return PrimaryState(
            in_recovery=False, role="failsight", writable=True, written=True, senders=senders
        )

    runs = [
        judge.judge(up(), [replica(0.0), replica(0.0)], written=written, interval=1.0),
        judge.judge(
            up(),
            [replica(7.25, seq=2), replica(0.0, in_recovery=False)],
            written=written,
            interval=1.0,
        ),
        judge.judge(
            PrimaryState(failure=CheckFailure(Reason.CONNECT, "primary: connection refused")),
            [replica(None, seq=3), replica(None)],
            written=written,
            interval=1.0,
        ),
    ]
    return [
        Result(
            check="replication/orders-db",
            kind="replication",
            target="orders-db",
            ok=j.ok,
            reason=j.reason,
            message=j.message,
            started_at=NOW + 10 * i,
            duration=0.042,
            run_id=f"run-{i}",
            measurements=j.measurements,
            facts=j.facts,
            evidence=j.evidence,
        )
        for i, j in enumerate(runs)
    ]


def test_replication_results_give_the_same_replication_states() -> None:
    results = replication_results()
    assert [r.ok for r in results] == [True, False, False]
    rebuilt = [assert_round_trip(r) for r in results]
    assert replication_states(rebuilt) == replication_states(results)
    # Healthy; beyond the RPO beside a split brain; as of the lost primary's last write.
    states = [(s.lag_seconds, s.streaming, s.split_brain) for s in replication_states(rebuilt)]
    assert states == [
        (0.0, True, False),
        (0.0, True, False),
        (7.25, True, False),
        (0.0, False, True),
        (1.0, True, False),
        (0.0, False, False),
    ]
    assert dependencies_json(rebuilt) == dependencies_json(results)


# --- hostile input ------------------------------------------------------------------------------

MEGABYTE = "Z" * 1_048_576
CUT = "Z" * MAX_CHARS + "..."  # a megabyte as a result keeps it


def valid(**changes: object) -> dict[str, object]:
    """A valid wire result with `changes` applied (a value of `...` removes the field)."""
    wire = result_to_json(
        a_result(
            evidence=(
                DependsOn("idp/x", "IdP x", Reason.AUTH, "e"),
                ReplicaSafety("c", "a", "b", 2.0, 1.0, True, False),
            ),
            facts={"phases": {"token": 0.1}},
        )
    )
    for key, value in changes.items():
        if value is ...:
            wire.pop(key)
        else:
            wire[key] = value
    return wire


def evidence_of(**item: object) -> dict[str, object]:
    return valid(evidence=[item])


SAFETY = {
    "type": "replica_safety",
    "cluster": "c",
    "primary_site": "a",
    "replica_site": "b",
    "rpo_seconds": 2.0,
    "lag_seconds": 1.0,
    "streaming": True,
    "split_brain": False,
}
DEPENDS = {"type": "depends_on", "check": "idp/x", "label": "IdP x", "via": "auth", "effect": "e"}
NAN, INF = float("nan"), float("inf")
HUGE_INT = 10**400  # valid JSON: `json.loads` reads a 401-digit integer as an int

REFUSED: list[tuple[str, object]] = [
    ("null", None),
    ("a list", [valid()]),
    ("a string", MEGABYTE),
    ("a number", 1.5),
    ("a boolean", True),
    ("no check", valid(check=...)),
    ("empty check", valid(check="")),
    ("check a number", valid(check=1)),
    ("check an object", valid(check={"a": MEGABYTE})),
    ("kind null", valid(kind=None)),
    ("no target", valid(target=...)),
    ("run_id a list", valid(run_id=["r"])),
    ("site a number", valid(site=3)),
    ("message a list", valid(message=[MEGABYTE])),
    ("trace_id a number", valid(trace_id=7)),
    ("no ok", valid(ok=...)),
    ("ok 1", valid(ok=1)),
    ("ok 'true'", valid(ok="true")),
    ("ok null", valid(ok=None)),
    ("critical 1", valid(critical=1)),
    ("critical null", valid(critical=None)),
    ("skipped 'yes'", valid(skipped="yes")),
    ("unknown reason", valid(reason="meltdown")),
    ("reason megabyte", valid(reason=MEGABYTE)),
    ("reason a number", valid(reason=3)),
    ("reason an object", valid(reason={"value": "auth"})),
    ("no started_at", valid(started_at=...)),
    ("started_at NaN", valid(started_at=NAN)),
    ("started_at inf", valid(started_at=INF)),
    ("started_at -inf", valid(started_at=-INF)),
    ("started_at negative", valid(started_at=-1.0)),
    ("started_at 1e11", valid(started_at=1e11)),
    ("started_at 1e300", valid(started_at=1e300)),
    ("started_at huge int", valid(started_at=HUGE_INT)),
    ("started_at -huge int", valid(started_at=-HUGE_INT)),
    ("started_at true", valid(started_at=True)),
    ("started_at a string", valid(started_at="1780000000")),
    ("duration NaN", valid(duration=NAN)),
    ("duration negative", valid(duration=-0.5)),
    ("duration huge int", valid(duration=HUGE_INT)),
    ("duration false", valid(duration=False)),
    ("evidence an object", valid(evidence={"type": "vantage_reach"})),
    ("evidence a string", valid(evidence=MEGABYTE)),
    ("evidence item a string", valid(evidence=[MEGABYTE])),
    ("evidence item a list", valid(evidence=[[DEPENDS]])),
    ("evidence item null", valid(evidence=[None])),
    ("depends_on unknown via", evidence_of(**{**DEPENDS, "via": "meltdown"})),
    ("depends_on via null", evidence_of(**{**DEPENDS, "via": None})),
    ("depends_on no check", evidence_of(**{k: v for k, v in DEPENDS.items() if k != "check"})),
    ("depends_on label a number", evidence_of(**{**DEPENDS, "label": 1})),
    ("remark text null", evidence_of(type="remark", site=None, text=None)),
    ("remark site a list", evidence_of(type="remark", site=["a"], text="t")),
    ("safety rpo NaN", evidence_of(**{**SAFETY, "rpo_seconds": NAN})),
    ("safety rpo a string", evidence_of(**{**SAFETY, "rpo_seconds": "2"})),
    ("safety lag inf", evidence_of(**{**SAFETY, "lag_seconds": INF})),
    ("safety lag negative", evidence_of(**{**SAFETY, "lag_seconds": -1.0})),
    ("safety lag huge int", evidence_of(**{**SAFETY, "lag_seconds": HUGE_INT})),
    ("safety lag true", evidence_of(**{**SAFETY, "lag_seconds": True})),
    ("safety streaming 1", evidence_of(**{**SAFETY, "streaming": 1})),
    (
        "safety no split_brain",
        evidence_of(**{k: v for k, v in SAFETY.items() if k != "split_brain"}),
    ),
    ("facts a list", valid(facts=[1, 2])),
    ("facts a string", valid(facts=MEGABYTE)),
]


@pytest.mark.parametrize(("case", "data"), REFUSED, ids=[c for c, _ in REFUSED])
def test_hostile_input_is_refused_in_one_short_line(case: str, data: object) -> None:
    with pytest.raises(ValueError) as caught:
        result_from_json(data)
    message = str(caught.value)
    assert message and "\n" not in message and len(message) <= 160, message
    assert "Z" * 65 not in message  # never quotes more than 64 characters of the input


def deep(levels: int) -> object:
    value: object = "bottom"
    for _ in range(levels):
        value = {"down": [value]}
    return value


def facts_values(value: object) -> int:
    if isinstance(value, dict):
        return sum(1 + facts_values(v) for v in value.values())
    if isinstance(value, list):
        return sum(1 + facts_values(v) for v in value)
    return 0


def facts_depth(value: object) -> int:
    if isinstance(value, dict | list):
        items = value.values() if isinstance(value, dict) else value
        return 1 + max((facts_depth(v) for v in items), default=0)
    return 0


BOUNDED: list[tuple[str, object, Callable[[Result], bool]]] = [
    ("1 MB message", valid(message=MEGABYTE), lambda r: r.message == CUT),
    ("1 MB check", valid(check=MEGABYTE), lambda r: r.check == CUT),
    ("1 MB site", valid(site=MEGABYTE), lambda r: r.site == CUT),
    (
        "1 MB evidence texts",
        evidence_of(type="remark", site=MEGABYTE, text=MEGABYTE),
        lambda r: r.evidence == (Remark(CUT, CUT),),
    ),
    (
        "control characters",
        valid(message="line one\nline two\x1b[31m\x00", target="a\tb"),
        lambda r: r.message == "line one line two [31m " and r.target == "a b",
    ),
    (
        "10,000 evidence items",
        valid(evidence=[{"type": "vantage_reach"}] * 10_000),
        lambda r: len(r.evidence) == MAX_EVIDENCE,
    ),
    (
        "10,000 bad evidence items after 32 good",
        valid(evidence=[{"type": "vantage_reach"}] * 32 + [None] * 10_000),
        lambda r: len(r.evidence) == MAX_EVIDENCE,
    ),
    (
        "unknown evidence types",
        valid(
            evidence=[{"type": "gossip"}, {"no": "type"}, {"type": 7}, {"type": "vantage_reach"}]
        ),
        lambda r: r.evidence == (VantageReach(),),
    ),
    (
        "known evidence with extra junk",
        evidence_of(**{**DEPENDS, "junk": {"x": [MEGABYTE] * 10}}),
        lambda r: r.evidence == (DependsOn("idp/x", "IdP x", Reason.AUTH, "e"),),
    ),
    (
        "unknown fields",
        valid(steps=[{"name": MEGABYTE}] * 1000, future={"a": [1]}, span_id=MEGABYTE),
        lambda r: r.steps == () and r.span_id == "",
    ),
    (
        "optional fields absent",
        valid(
            site=...,
            reason=...,
            message=...,
            trace_id=...,
            critical=...,
            skipped=...,
            facts=...,
            evidence=...,
        ),
        lambda r: (
            (r.site, r.reason, r.message, r.facts, r.evidence, r.critical)
            == (None, None, "", {}, (), False)
        ),
    ),
    (
        "nulls for optional lists",
        valid(facts=None, evidence=None),
        lambda r: r.facts == {} and r.evidence == (),
    ),
    (
        "lag null",
        evidence_of(**{**SAFETY, "lag_seconds": None}),
        lambda r: r.evidence[0] == ReplicaSafety("c", "a", "b", 2.0, None, True, False),
    ),
    (
        "integer times",
        valid(started_at=1_780_000_000, duration=0),
        lambda r: r.started_at == 1.78e9 and r.duration == 0.0,
    ),
    ("time just below 1e11", valid(started_at=1e11 - 1), lambda r: r.started_at == 1e11 - 1),
    (
        "facts: NaN, inf, huge numbers",
        valid(facts={"a": NAN, "b": [INF, -INF], "c": HUGE_INT, "d": 1e300, "e": 2**53 - 1}),
        lambda r: r.facts == {"a": None, "b": [None, None], "c": None, "d": 1e300, "e": 2**53 - 1},
    ),
    (
        "facts: 1 MB strings and keys",
        valid(facts={MEGABYTE: MEGABYTE, "l": [MEGABYTE] * 3}),
        lambda r: r.facts == {CUT: CUT, "l": [CUT] * 3},
    ),
    (
        "facts: 1,000,000 items",
        valid(facts={"many": list(range(1_000_000))}),
        lambda r: facts_values(r.facts) <= MAX_FACTS_VALUES,
    ),
    (
        "facts: 100,000 keys",
        valid(facts={f"k{i}": {"v": i} for i in range(100_000)}),
        lambda r: facts_values(r.facts) <= MAX_FACTS_VALUES,
    ),
    (
        "facts: nested 10,000 deep",
        valid(facts={"deep": deep(10_000)}),
        lambda r: facts_depth(r.facts) <= MAX_FACTS_DEPTH,
    ),
    (
        "facts: not JSON values",
        valid(facts={"set": {1, 2}, "bytes": b"x", "obj": object()}),
        lambda r: r.facts == {"set": None, "bytes": None, "obj": None},
    ),
]


@pytest.mark.parametrize(("case", "data", "holds"), BOUNDED, ids=[c for c, _, _ in BOUNDED])
def test_hostile_input_is_bounded(case: str, data: object, holds: Callable[[Result], bool]) -> None:
    started = time.monotonic()
    result = result_from_json(data)
    assert time.monotonic() - started < 2.0, "hostile input must not cost seconds"
    assert holds(result), result
    # Whatever was read is a result this agent can serve and send on: strict JSON, bounded.
    text = json.dumps(result_to_json(result), allow_nan=False)
    assert len(text) < 64_000
    assert over_the_wire(result) == result  # what is cut stays so


def test_huge_json_numbers_from_real_json_text_are_refused() -> None:
    for text in ('"started_at": 1' + "0" * 400, '"started_at": 1e999', '"started_at": NaN'):
        body = json.dumps(valid(started_at=...))[:-1] + ", " + text + "}"
        with pytest.raises(ValueError, match="started_at"):
            result_from_json(json.loads(body))
