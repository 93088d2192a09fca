"""A group's pure parts, as tables: who owns what, the schedule grid, the merged view, the
verdict's reading of a missing site, a member's shard on the wire and the group's config."""

from __future__ import annotations

import json
import time
from types import MappingProxyType

import pytest

from failsight.agent.group import (
    GroupConfig,
    GroupPoller,
    Member,
    Shard,
    evidence_ages,
    latest_results,
    merge_view,
    owned_checks,
    owner,
    parse_nameserver,
    seed,
    shard_key,
)
from failsight.agent.scheduler import phase_due
from failsight.agent.verdict import Verdict, decide
from failsight.agent.view import SiteOpinion, SiteState, SiteView, VantageView
from failsight.core.check import Check, ProbeContext, Run
from failsight.core.results import ReplicaSafety, Result

UP, DOWN = SiteState.UP, SiteState.DOWN


class _Check(Check):
    kind = "journey"

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:  # pragma: no cover
        raise NotImplementedError


def _checks(n: int = 60) -> list[Check]:
    out: list[Check] = []
    for site in ("aws", "gcp", "azure"):
        for j in range(3):
            out.append(
                _Check(
                    name=f"journey/j{j}/{site}",
                    target=f"j{j}",
                    interval=5,
                    budget=2,
                    site=site,
                    critical=True,
                )
            )
    for i in range(n):
        out.append(_Check(name=f"tcp/t{i}", target="x", interval=5, budget=2))
    out.append(_Check(name="dns/node", target="x", interval=5, budget=2, placement="every_member"))
    return out


def test_every_check_has_exactly_one_owner_and_every_member_checks_run_everywhere() -> None:
    checks = _checks()
    members = {"m1", "m2", "m3"}
    shares = {m: {c.name for c in owned_checks(checks, m, members)} for m in members}
    sharded = {c.name for c in checks if c.placement == "sharded"}
    for name in sharded:
        assert sum(name in s for s in shares.values()) == 1, name
    assert all("dns/node" in s for s in shares.values())
    # Each member gets a share (60 + 3 site keys over 3 members: none empty).
    assert all(len(s) > 10 for s in shares.values())


def test_a_sites_critical_journeys_stay_together() -> None:
    checks = _checks()
    for members in ({"m1", "m2"}, {"m1", "m2", "m3"}, {f"m{i}" for i in range(10)}):
        for site in ("aws", "gcp", "azure"):
            owners = {owner(shard_key(c), members) for c in checks if c.site == site}
            assert len(owners) == 1


def test_losing_a_member_moves_only_its_checks_and_a_new_one_takes_only_its_share() -> None:
    checks = _checks(300)
    three = {"m1", "m2", "m3"}
    before = {c.name: owner(shard_key(c), three) for c in checks if c.placement == "sharded"}
    after = {
        c.name: owner(shard_key(c), three - {"m3"}) for c in checks if c.placement == "sharded"
    }
    moved = {n for n in before if before[n] != after[n]}
    assert moved == {n for n, m in before.items() if m == "m3"}
    four = {c.name: owner(shard_key(c), three | {"m4"}) for c in checks if c.placement == "sharded"}
    moved = {n for n in before if before[n] != four[n]}
    assert moved and all(four[n] == "m4" for n in moved)
    # About a quarter moves to the fourth member, not a reshuffle.
    assert len(moved) < len(before) / 2


def test_no_list_means_run_everything_and_an_unlisted_member_runs_only_every_member_checks() -> (
    None
):
    checks = _checks()
    assert owned_checks(checks, "m1", None) == checks
    assert [c.name for c in owned_checks(checks, "m9", {"m1", "m2"})] == ["dns/node"]


def test_every_member_computes_the_same_grid_for_a_check() -> None:
    wall, mono = 1_700_000_000.123, 500.0
    a = phase_due("journey/j0/aws", 30.0, wall=wall, mono=mono)
    # Another member, whose monotonic clock is elsewhere, at the same wall time.
    b = phase_due("journey/j0/aws", 30.0, wall=wall, mono=9000.0)
    assert a - mono == pytest.approx(b - 9000.0)
    assert mono <= a < mono + 30.0
    # One interval later on the wall clock: the same instant of the grid, one interval on.
    later = phase_due("journey/j0/aws", 30.0, wall=wall + 12.0, mono=mono + 12.0)
    assert later == pytest.approx(a) or later == pytest.approx(a + 30.0)
    # Checks are spread over the interval, not all at one instant.
    offsets = {round(phase_due(f"c{i}", 10.0, wall=0.0, mono=0.0), 3) for i in range(50)}
    assert len(offsets) == 50


def _opinion(state: SiteState, last_run_at: float | None, failures: int = 0) -> SiteOpinion:
    return SiteOpinion(state, since=1.0, last_run_at=last_run_at, failures=failures)


def _shard(member: str, sites: dict[str, SiteOpinion], **kw: object) -> Shard:
    return Shard(
        vantage="aws-use1",
        member=member,
        instance=f"i-{member}",
        generated_at=time.time(),
        checks=tuple(kw.pop("checks", ())),  # type: ignore[arg-type]
        sites=MappingProxyType(sites),
        **kw,  # type: ignore[arg-type]
    )


def _poller(*members: Member) -> GroupPoller:
    poller = GroupPoller(
        GroupConfig(members=[m.url for m in members], member="m1"),
        vantage="aws-use1",
        instance="i-m1",
        token=None,
        http=None,
    )
    poller.members = {m.url: m for m in members}
    poller.listed = True
    return poller


def _own(now: float) -> VantageView:
    return VantageView(
        "aws-use1",
        now,
        MappingProxyType({s: SiteOpinion(UP) for s in ("aws", "gcp", "azure")}),
    )


def test_the_merged_view_takes_each_site_from_the_newest_live_evidence() -> None:
    now = time.time()
    own_shard = _shard("m1", {"aws": _opinion(UP, now - 2)})
    m2 = _shard("m2", {"gcp": _opinion(DOWN, now - 1, failures=3), "aws": _opinion(DOWN, now - 50)})
    m3 = _shard("m3", {"azure": _opinion(DOWN, now - 100, failures=3)})
    poller = _poller(
        Member("http://a", "live", "m1", "i-m1", own_shard, now, is_self=True),
        Member("http://b", "live", "m2", "i-m2", m2, now),
        Member("http://c", "unreachable", "m3", "i-m3", m3, now - 30, error="refused"),
    )
    ages = {"aws": 60.0, "gcp": 60.0, "azure": 60.0}
    view = merge_view(_own(now), own_shard, poller, evidence_ages=ages, now=now)
    assert view.sites["aws"].state is UP  # m1's run is newer than m2's old one
    assert view.sites["gcp"].state is DOWN
    # m3 does not answer, and what it last said of azure is too old: azure is missing.
    assert view.missing == {"azure"}
    assert view.group is not None and view.group["partial"] is True
    states = {m["name"]: m["state"] for m in view.group["members"]}  # type: ignore[attr-defined]
    assert states == {"m1": "live", "m2": "live", "m3": "unreachable"}
    body = view.to_json()
    assert body["missing_sites"] == ["azure"]
    assert json.loads(json.dumps(body))["group"]["members"][0]["self"] is True


def test_a_member_that_just_stopped_answering_still_counts_for_its_evidence_age() -> None:
    now = time.time()
    own_shard = _shard("m1", {"aws": _opinion(UP, now - 2), "gcp": _opinion(UP, now - 2)})
    m3 = _shard("m3", {"azure": _opinion(DOWN, now - 3, failures=3)})
    poller = _poller(
        Member("http://a", "live", "m1", "i-m1", own_shard, now, is_self=True),
        Member("http://c", "unreachable", "m3", "i-m3", m3, now - 2, error="refused"),
    )
    ages = {"aws": 60.0, "gcp": 60.0, "azure": 60.0}
    view = merge_view(_own(now), own_shard, poller, evidence_ages=ages, now=now)
    assert view.missing == frozenset() and view.sites["azure"].state is DOWN
    assert view.group is not None and view.group["partial"] is True  # m3 does not answer
    # Once m3 leaves the list, its last words are still kept for the same age.
    poller.departed = {"http://c": poller.members.pop("http://c")}
    view = merge_view(_own(now), own_shard, poller, evidence_ages=ages, now=now)
    assert view.sites["azure"].state is DOWN
    assert view.group is not None and view.group["partial"] is False


def test_evidence_older_than_its_age_is_missing_not_up() -> None:
    now = time.time()
    own_shard = _shard(
        "m1",
        {
            "aws": _opinion(UP, now - 500),
            "gcp": _opinion(UP, now - 1),
            "azure": _opinion(UP, now - 1),
        },
    )
    poller = _poller(Member("http://a", "live", "m1", "i-m1", own_shard, now, is_self=True))
    view = merge_view(
        _own(now),
        own_shard,
        poller,
        evidence_ages={"aws": 60.0, "gcp": 60.0, "azure": 60.0},
        now=now,
    )
    assert view.missing == {"aws"}
    assert view.group is not None and view.group["partial"] is True


def test_a_site_without_critical_checks_is_never_missing() -> None:
    now = time.time()
    own_shard = _shard("m1", {})
    poller = _poller(Member("http://a", "live", "m1", "i-m1", own_shard, now, is_self=True))
    view = merge_view(_own(now), own_shard, poller, evidence_ages={}, now=now)
    assert view.missing == frozenset()
    assert view.group is not None and view.group["partial"] is False


def test_evidence_ages_follow_the_sites_critical_intervals() -> None:
    ages = evidence_ages(_checks(), refresh=5.0)
    assert ages == {
        "aws": pytest.approx(3 * 8.0 + 5.0),
        "gcp": pytest.approx(29.0),
        "azure": pytest.approx(29.0),
    }


def _view(
    vantage: str,
    aws: SiteState,
    gcp: SiteState,
    *,
    missing: frozenset[str] = frozenset(),
    now: float = 1000.0,
) -> VantageView:
    return VantageView(
        vantage,
        now,
        MappingProxyType(
            {
                "aws": SiteOpinion(aws, since=900.0, last_run_at=990.0),
                "gcp": SiteOpinion(gcp, since=900.0, last_run_at=995.0),
            }
        ),
        missing=missing,
    )


SITES = [("aws", "primary"), ("gcp", "standby")]


def test_a_missing_site_is_stale_for_that_vantage_never_up() -> None:
    views = [
        _view("v1", DOWN, UP),
        _view("v2", DOWN, UP, missing=frozenset({"gcp"})),
        _view("v3", UP, UP, missing=frozenset({"aws", "gcp"})),
    ]
    out = decide(SITES, views, quorum=2, stale_after=60, now=1000.0)
    assert out["gcp"].quorum.vantages == {"v1": "up", "v2": "stale", "v3": "stale"}
    assert out["gcp"].quorum.fresh == 1
    assert out["gcp"].verdict is Verdict.UNKNOWN
    # aws is down in two views, but the standby is up in only one: no failover into it.
    assert out["aws"].quorum.vantages["v3"] == "stale"
    assert out["aws"].verdict is Verdict.FAILOVER_UNSAFE
    assert any("standby gcp is up in only 1 views" in r for r in out["aws"].reasons)


def test_without_missing_sites_the_verdict_is_unchanged() -> None:
    views = [_view("v1", DOWN, UP), _view("v2", DOWN, UP), _view("v3", UP, UP)]
    out = decide(SITES, views, quorum=2, stale_after=60, now=1000.0)
    # Failing over is possible (first judgement: it waits for a run to fail again).
    assert "down votes predate it" in out["aws"].reasons[0]


def test_a_new_owner_starts_from_the_last_owners_opinion() -> None:
    old = SiteOpinion(SiteState.DEGRADED, since=10.0, last_run_at=100.0, failures=2)
    seeded = seed(SiteView(), old, flap_threshold=3.0)
    assert (seeded.state, seeded.failures, seeded.last_run_at) == (SiteState.DEGRADED, 2, 100.0)
    newer = SiteView(state=UP, last_run_at=200.0)
    assert seed(newer, old, flap_threshold=3.0) is newer


def _replication(started: float) -> Result:
    return Result(
        check="replication/orders",
        kind="replication",
        target="orders",
        ok=True,
        started_at=started,
        duration=0.1,
        run_id="r1",
        evidence=(ReplicaSafety("orders", "aws", "gcp", 30.0, 1.0, True, False),),
    )


def test_a_shard_round_trips_and_other_members_results_are_read() -> None:
    now = time.time()
    shard = _shard(
        "m2",
        {"gcp": _opinion(DOWN, now - 1, failures=3)},
        checks=("replication/orders",),
        results=(_replication(now - 1),),
        self_check=True,
    )
    back = Shard.from_json(
        json.loads(json.dumps(shard.to_json())), vantage="aws-use1", received_at=now
    )
    assert back.member == "m2" and back.instance == "i-m2"
    assert back.sites["gcp"].state is DOWN and back.self_check is True
    assert back.results[0].evidence == shard.results[0].evidence
    poller = _poller(Member("http://b", "live", "m2", "i-m2", back, now))
    mine = {"replication/orders": _replication(now - 100)}
    assert latest_results(mine, poller)["replication/orders"].started_at == now - 1


@pytest.mark.parametrize(
    "body",
    [
        [],
        {
            "vantage": "gcp-euw1",
            "member": "m2",
            "instance": "i",
            "checks": [],
            "sites": {},
            "results": [],
        },
        {
            "vantage": "aws-use1",
            "member": "",
            "instance": "i",
            "checks": [],
            "sites": {},
            "results": [],
        },
        {"vantage": "aws-use1", "member": "m2", "checks": [], "sites": {}, "results": []},
        {
            "vantage": "aws-use1",
            "member": "m2",
            "instance": "i",
            "checks": "x",
            "sites": {},
            "results": [],
        },
        {
            "vantage": "aws-use1",
            "member": "m2",
            "instance": "i",
            "checks": [],
            "sites": [],
            "results": [],
        },
        {
            "vantage": "aws-use1",
            "member": "m2",
            "instance": "i",
            "checks": [],
            "sites": {"aws": {"state": "sideways"}},
            "results": [],
        },
        {
            "vantage": "aws-use1",
            "member": "m2",
            "instance": "i",
            "checks": [],
            "sites": {},
            "results": [],
            "control": {"actions": "x"},
        },
        {
            "vantage": "aws-use1",
            "member": "m\x00",
            "instance": "i",
            "checks": [],
            "sites": {},
            "results": [],
        },
    ],
)
def test_a_bad_shard_is_refused(body: object) -> None:
    with pytest.raises(ValueError):
        Shard.from_json(body, vantage="aws-use1", received_at=1.0)


def test_a_bad_result_in_a_shard_is_skipped_not_the_shard() -> None:
    now = time.time()
    body = _shard("m2", {}, results=(_replication(now),)).to_json()
    body["results"] = [{"check": 1}, *body["results"]]  # type: ignore[misc]
    back = Shard.from_json(body, vantage="aws-use1", received_at=now)
    assert [r.check for r in back.results] == ["replication/orders"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.96.0.10", ("10.96.0.10", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:53", ("::1", 53)),
        ("fd00::a", ("fd00::a", 53)),
    ],
)
def test_nameservers(value: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(value) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "set one of `srv`"),
        ({"srv": "_f._tcp.x.test", "members": ["http://a:1"]}, "set one of `srv`"),
        ({"members": ["ftp://a"]}, "http:// or https://"),
        ({"members": ["http://a:1", "http://a:1/"]}, "listed twice"),
        ({"srv": "not a name"}, "SRV name"),
        ({"srv": "_f._tcp.x.test", "nameservers": ["dns.example"]}, "IP address"),
        ({"srv": "_f._tcp.x.test", "nameservers": ["10.0.0.1:99999"]}, "port"),
        ({"srv": "_f._tcp.x.test", "refresh": 0}, "refresh"),
    ],
)
def test_bad_group_config(data: dict[str, object], message: str) -> None:
    with pytest.raises(Exception) as raised:
        GroupConfig.model_validate(data)
    assert message in str(raised.value)
