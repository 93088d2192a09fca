"""Vantage groups end to end: real `failsight run` processes of one vantage find each other in
a real dnsmasq's SRV record (or a static list), share the checks by rendezvous hashing, serve
one merged view, hand a dead member's checks over, and survive partitions and hostile members.

The sites are real aiohttp servers on loopback that log each request with the member that sent
it (tests/fixtures/group.py): "each check runs once per interval across the group" is counted
where it matters, at the site. Timings are asserted only as upper bounds with generous margins
(a loaded CI machine); counts get one run of slack at each end of a window.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import pytest
import trustme
from aiohttp import web

from failsight.agent.cli import main
from failsight.agent.view import VantageView
from tests.fixtures.dnsmasq import Dnsmasq, Srv
from tests.fixtures.group import (
    EVERY_MEMBER,
    FAILOVER,
    INTERVAL,
    OTHER_VANTAGES,
    SHARDED,
    SRV_NAME,
    VANTAGE,
    Lab,
    agent_config,
    eventually,
    expected_shards,
    free_ports,
    group_lab,
    owner,
    srv_group,
    static_group,
)
from tests.fixtures.postgres import PgPair

pytestmark = pytest.mark.timeout(300)

MakeDnsmasq = Callable[..., Dnsmasq]
MEMBERS = ("m1", "m2", "m3")
WINDOW = 8  # intervals counted at the sites once the group has settled
SETTLE = 60.0  # processes starting on a loaded machine, then a few refreshes
HANDOVER = 30.0  # refresh (1 s) + request timeout (2 s) + one interval, with a wide margin


def hosts(names: Iterable[str]) -> dict[str, list[str]]:
    return {f"{n}.group.test": ["127.0.0.1"] for n in names}


def srv_records(ports: dict[str, int], names: Iterable[str]) -> list[Srv]:
    return [Srv(SRV_NAME, f"{n}.group.test", ports[n]) for n in names]


def add_srv_members(lab: Lab, ports: dict[str, int], dns: Dnsmasq, names: Iterable[str]) -> None:
    """Members of aws-use1 finding each other through `dns`; peers: the other two vantages."""
    peers = {v: f"http://127.0.0.1:{ports[v]}" for v in OTHER_VANTAGES}
    for n in names:
        add_member(lab, n, ports[n], srv_group(n, dns.port), peers=peers)


def add_other_vantages(lab: Lab, ports: dict[str, int], aws_url: str) -> None:
    """gcp-euw1 and azure-weu, one agent each, no group; their aws-use1 peer is `aws_url`
    (any one member of the group)."""
    for v in OTHER_VANTAGES:
        peers = {VANTAGE: aws_url} | {
            o: f"http://127.0.0.1:{ports[o]}" for o in OTHER_VANTAGES if o != v
        }
        lab.add(
            v,
            ports[v],
            agent_config(name=v, vantage=v, port=ports[v], sites=lab.sites, peers=peers),
        )


def add_member(
    lab: Lab,
    name: str,
    port: int,
    group: dict[str, Any],
    peers: dict[str, str] | None = None,
) -> None:
    """A member of the group under test (vantage aws-use1) against the lab's sites."""
    config = agent_config(
        name=name, vantage=VANTAGE, port=port, sites=lab.sites, peers=peers or {}, group=group
    )
    lab.add(name, port, config)


def members_by_state(view: dict[str, Any]) -> dict[str, str]:
    """name (or url when it never answered) -> state, from a view's `group.members`."""
    return {(m.get("name") or m.get("url")): m.get("state") for m in view["group"]["members"]}


async def settled(
    lab: Lab,
    names: Sequence[str],
    *,
    unreachable: Iterable[str] = (),
    ask: Sequence[str] | None = None,
    timeout: float = SETTLE,
) -> dict[str, set[str]]:
    """Wait until every member in `ask` (default: `names`) sees exactly `names` live (and
    `unreachable` listed but unreachable), says partial only when something is unreachable,
    and runs exactly the sharded checks the rendezvous rule gives it; returns member -> the
    checks each of `names` owns."""
    expected = expected_shards(names)
    down = set(unreachable)

    async def probe() -> str | None:
        for n in ask if ask is not None else names:
            view = await lab.view(n)
            group = view.get("group")
            if not isinstance(group, dict):
                return f"{n}: /v1/view has no group: {json.dumps(view)[:400]}"
            states = members_by_state(view)
            live = {m for m, s in states.items() if s == "live"}
            if live != set(names):
                return f"{n}: live members {sorted(live)}, expected {sorted(names)}: {states}"
            gone = {m for m, s in states.items() if s == "unreachable"}
            if not down <= gone:
                return f"{n}: expected {sorted(down)} unreachable: {states}"
            if group.get("partial") is not bool(down):
                return f"{n}: partial is {group.get('partial')}, expected {bool(down)}: {group}"
            if view.get("missing_sites") != []:
                return f"{n}: missing_sites {view.get('missing_sites')}"
            shard = await lab.shard(n)
            owned = set(shard.get("checks", [])) & SHARDED.keys()
            if owned != expected[n]:
                return (
                    f"{n}: runs {sorted(owned)}, expected by rendezvous over {sorted(names)}: "
                    f"{sorted(expected[n])}"
                )
        return None

    await eventually(probe, timeout=timeout)
    return expected


async def count_window(lab: Lab, seconds: float) -> tuple[float, float]:
    """Let the schedule run `seconds` and return the window [t0, t1) to count requests in."""
    t0 = time.time()
    await asyncio.sleep(seconds)
    return t0, time.time()


def runs_per_check(
    lab: Lab, members: Iterable[str], t0: float, t1: float
) -> dict[str, dict[str, int]]:
    """check -> {member: runs in [t0, t1)}, for every sharded check, counting only `members`."""
    wanted = set(members)
    out: dict[str, dict[str, int]] = {}
    for check, (_, site, _) in SHARDED.items():
        runners = lab.sites[site].runners(check, since=t0, until=t1)
        out[check] = {m: n for m, n in runners.items() if m in wanted}
    return out


def once_per_interval_problems(
    counts: dict[str, dict[str, int]], owners: dict[str, set[str]], intervals: int
) -> list[str]:
    owner_of = {c: m for m, checks in owners.items() for c in checks}
    problems = []
    for check, runners in sorted(counts.items()):
        total = sum(runners.values())
        if not intervals - 1 <= total <= intervals + 1:
            problems.append(f"{check}: {total} runs in {intervals} intervals: {runners}")
        if set(runners) != {owner_of[check]}:
            problems.append(f"{check}: run by {runners}, expected only {owner_of[check]}")
    return problems


class Sampler:
    """Something that samples in the background while a test acts: `async with x.running():`."""

    async def _run(self) -> None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        task = asyncio.create_task(self._run())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class VerdictSampler(Sampler):
    """Asks `names` for /v1/verdict every 0.2 s and keeps every verdict that a hand-over must
    never produce for a healthy site (unknown, or a failover), and every failure to answer."""

    def __init__(self, lab: Lab, names: Iterable[str]) -> None:
        self.lab = lab
        self.names = list(names)
        self.samples = 0
        self.bad: list[str] = []
        self.seen: dict[str, set[str]] = {}

    async def _run(self) -> None:
        while True:
            for n in self.names:
                started = time.time()
                try:
                    sites = await self.lab.verdicts(n)
                except Exception as exc:  # any failure to answer is a finding
                    self.bad.append(f"{started:.1f} {n}: no verdict: {type(exc).__name__} {exc}")
                    continue
                self.samples += 1
                for site, body in sites.items():
                    self.seen.setdefault(site, set()).add(body["verdict"])
                    if body["verdict"] == "unknown" or body["verdict"] in FAILOVER:
                        self.bad.append(
                            f"{started:.1f} {n}: {site} is {body['verdict']} "
                            f"({body.get('reasons')}, quorum {body.get('quorum')})"
                        )
            await asyncio.sleep(0.2)


async def all_verdicts(
    lab: Lab, names: Iterable[str], want: Callable[[dict[str, Any]], bool], site: str
) -> str | None:
    for n in names:
        body = (await lab.verdicts(n))[site]
        if not want(body):
            return f"{n}: {site} is {body['verdict']} (current {body.get('current')}): {body}"
    return None


async def all_healthy(lab: Lab, names: Sequence[str], timeout: float = 30) -> None:
    def healthy(body: dict[str, Any]) -> bool:
        return bool(body["verdict"] == "healthy")

    for site in ("primary", "standby"):
        await eventually(
            functools.partial(all_verdicts, lab, names, healthy, site), timeout=timeout
        )


# --- a) sharing, the merged view, the verdict ------------------------------------------------


async def test_a_group_found_in_srv_runs_each_check_once_and_serves_one_view(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq
) -> None:
    names = ["m1", "m2", "m3", *OTHER_VANTAGES, "ref"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    dns = dnsmasq_factory(hosts(MEMBERS), srv=srv_records(ports, MEMBERS))
    async with group_lab(tmp_path) as lab:
        add_srv_members(lab, ports, dns, MEMBERS)
        add_other_vantages(lab, ports, aws_url=lab.agents["m2"].url)
        # The reference: what one agent alone in aws-use1 (no group) says, with the same peers.
        lab.add(
            "ref",
            ports["ref"],
            agent_config(
                name="ref",
                vantage=VANTAGE,
                port=ports["ref"],
                sites=lab.sites,
                peers={v: lab.agents[v].url for v in OTHER_VANTAGES},
            ),
        )
        await lab.start(*names)
        owners = await settled(lab, MEMBERS)
        assert all(owners[m] for m in MEMBERS), f"a member owns nothing: {owners}"

        # Counted at the sites, over whole intervals after the group settled.
        await asyncio.sleep(2 * INTERVAL)
        t0, t1 = await count_window(lab, WINDOW * INTERVAL)
        counts = runs_per_check(lab, MEMBERS, t0, t1)
        # The group must still be the same one: a churn in the window would explain a count.
        await settled(lab, MEMBERS, timeout=5)
        problems = once_per_interval_problems(counts, owners, WINDOW)
        assert not problems, "\n".join(problems)
        # A site's critical journeys stay together on the owner of `site/<site>`.
        for site in ("primary", "standby"):
            runners = {m for j in ("core", "login") for m in counts[f"journey/{j}/{site}"]}
            assert len(runners) == 1, f"{site}'s critical journeys ran on {runners}"
        # placement: every_member runs on each member, once per interval.
        for check in EVERY_MEMBER:
            site = check.split("/")[2]
            per_member = lab.sites[site].runners(check, since=t0, until=t1)
            for m in MEMBERS:
                assert WINDOW - 1 <= per_member.get(m, 0) <= WINDOW + 1, (check, per_member)
        # The other vantages run everything themselves (no group): unaffected.
        gcp = runs_per_check(lab, ["gcp-euw1"], t0, t1)
        assert all(WINDOW - 1 <= sum(r.values()) <= WINDOW + 1 for r in gcp.values()), gcp

        # The verdict: what the single-agent deployment says.
        everyone = [*MEMBERS, *OTHER_VANTAGES, "ref"]
        await all_healthy(lab, everyone)

        # Each member serves the group's view: three live members, nothing missing, same sites.
        states: dict[str, dict[str, str]] = {}
        for m in MEMBERS:
            view = await lab.view(m)
            group = view["group"]
            assert group["member"] == m
            assert group["partial"] is False, group
            assert view["missing_sites"] == [], view
            listed = group["members"]
            assert sorted(x["name"] for x in listed) == list(MEMBERS), listed
            assert {x["state"] for x in listed} == {"live"}, listed
            assert [x["name"] for x in listed if x["self"]] == [m], listed
            for x in listed:
                assert x["error"] is None, x
                assert x["url"] == f"http://127.0.0.1:{ports[x['name']]}", x
                assert isinstance(x["checks_owned"], int), x
                assert x["checks_owned"] >= len(owners[x["name"]]), (x, owners)
                assert isinstance(x["age_seconds"], int | float) and x["age_seconds"] >= 0, x
            states[m] = {s: v["state"] for s, v in view["sites"].items()}
            # What a peer does with it: parse it as the aws-use1 vantage's view.
            parsed = VantageView.from_json(view, expected=VANTAGE, received_at=time.time())
            assert parsed.missing == frozenset()
            assert {s: o.state.value for s, o in parsed.sites.items()} == states[m]
        assert all(s == {"primary": "up", "standby": "up"} for s in states.values()), states
        # A member's own shard: only its checks, and its identity.
        for m in MEMBERS:
            shard = await lab.shard(m)
            assert shard["vantage"] == VANTAGE and shard["member"] == m, shard
            assert isinstance(shard["instance"], str) and shard["instance"]
            assert set(shard["checks"]) >= EVERY_MEMBER | owners[m]
            assert not set(shard["checks"]) & (SHARDED.keys() - owners[m])
        # /v1/verdict carries the same group object; null for an agent with no group.
        for m in MEMBERS:
            status, body = await lab.get(m, "/v1/verdict")
            assert status == 200 and body["group"]["member"] == m, body.get("group")
            assert body["group"]["partial"] is False
            assert sorted(x["name"] for x in body["group"]["members"] if x["state"] == "live") == [
                *MEMBERS
            ]
        status, body = await lab.get("gcp-euw1", "/v1/verdict")
        assert body.get("group") is None, body.get("group")
        # An agent with no group serves the view exactly as before: no group key.
        plain = await lab.view("gcp-euw1")
        assert "group" not in plain and "missing_sites" not in plain, sorted(plain)
        # The other clouds get the merged view from the member they poll.
        for v in OTHER_VANTAGES:
            status, body = await lab.get(v, "/v1/verdict")
            assert status == 200
            assert body["peers"][VANTAGE]["error"] is None, body["peers"]
            for site in ("primary", "standby"):
                assert body["sites"][site]["quorum"]["vantages"][VANTAGE] == "up", body["sites"]

        # The primary fails everywhere: a member recommends the failover, as one agent would.
        lab.sites["primary"].failing = True
        await eventually(
            lambda: all_verdicts(
                lab, [*MEMBERS, "ref"], lambda b: b["verdict"] in FAILOVER, "primary"
            ),
            timeout=60,
        )

        async def same_as_ref() -> str | None:
            ref = (await lab.verdicts("ref"))["primary"]
            want = (
                ref["current"],
                ref["failover_target"],
                ref["quorum"]["vantages"],
                ref["quorum"]["down"],
            )
            if ref["current"] != "failover_recommended":
                return f"ref: {ref}"
            for m in MEMBERS:
                got = (await lab.verdicts(m))["primary"]
                have = (
                    got["current"],
                    got["failover_target"],
                    got["quorum"]["vantages"],
                    got["quorum"]["down"],
                )
                if have != want:
                    return f"{m}: {have}, single agent: {want}"
            return None

        await eventually(same_as_ref, timeout=30)
        for m in MEMBERS:
            standby = (await lab.verdicts(m))["standby"]
            assert standby["verdict"] == "healthy", standby


# --- b) a member dies, another joins -----------------------------------------------------------


async def test_a_dead_members_checks_move_and_a_new_member_takes_only_its_share(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq
) -> None:
    names = ["m1", "m2", "m3", "m4", *OTHER_VANTAGES]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    dns = dnsmasq_factory(hosts(["m1", "m2", "m3", "m4"]), srv=srv_records(ports, MEMBERS))
    async with group_lab(tmp_path) as lab:
        add_srv_members(lab, ports, dns, ["m1", "m2", "m3", "m4"])
        # The other clouds poll m1, which stays; m2 is the one that dies.
        add_other_vantages(lab, ports, aws_url=lab.agents["m1"].url)
        await lab.start(*MEMBERS, *OTHER_VANTAGES)
        owners = await settled(lab, MEMBERS)
        victim, survivors = "m2", ["m1", "m3"]
        lost = owners[victim]
        assert lost, f"{victim} owns nothing to hand over: {owners}"
        await all_healthy(lab, [*MEMBERS, *OTHER_VANTAGES])
        after_kill = expected_shards(survivors)
        gaining = [m for m in survivors if after_kill[m] - owners[m]]
        handovers_before = {
            m: await lab.metric(m, "failsight_group_handovers_total", direction="in")
            for m in survivors
        }

        async with VerdictSampler(lab, survivors).running() as sampler:
            killed_at = time.time()
            await lab.agents[victim].kill()

            async def taken_over() -> str | None:
                missing = []
                for check in sorted(lost):
                    site = SHARDED[check][1]
                    if not lab.sites[site].runs(check, members=survivors, since=killed_at):
                        missing.append(check)
                return f"no run since the kill of {missing}" if missing else None

            await eventually(taken_over, timeout=HANDOVER)
            took = time.time() - killed_at

            async def handed_over() -> str | None:
                for m in gaining:
                    now = await lab.metric(m, "failsight_group_handovers_total", direction="in")
                    if now <= handovers_before[m]:
                        return f"{m}: handovers in {handovers_before[m]} -> {now}"
                return None

            await eventually(handed_over, timeout=HANDOVER)
            settled_after_kill = await settled(lab, survivors, unreachable=[victim])
            assert settled_after_kill == after_kill
            # Each check again once per interval, on its new owner.
            await asyncio.sleep(2 * INTERVAL)
            t0, t1 = await count_window(lab, 5 * INTERVAL)
            problems = once_per_interval_problems(
                runs_per_check(lab, survivors, t0, t1), after_kill, 5
            )
            assert not problems, "\n".join(problems)

            # m4 joins (DNS lists it, m2 is gone from DNS): only m4's share changes owner.
            before = {m: set((await lab.shard(m))["checks"]) & SHARDED.keys() for m in survivors}
            given_before = {
                m: await lab.metric(m, "failsight_group_handovers_total", direction="out")
                for m in survivors
            }
            dns.set_srv(srv_records(ports, ["m1", "m3", "m4"]))
            await lab.start("m4")
            joined = ["m1", "m3", "m4"]
            after = await settled(lab, joined)
            now_runs = {m: set((await lab.shard(m))["checks"]) & SHARDED.keys() for m in joined}
            assert now_runs == after
            owner_before = {c: m for m, cs in before.items() for c in cs}
            owner_after = {c: m for m, cs in now_runs.items() for c in cs}
            moved = {c for c in SHARDED if owner_before.get(c) != owner_after.get(c)}
            assert moved == now_runs["m4"], (sorted(moved), sorted(now_runs["m4"]))
            for m in survivors:
                assert now_runs[m] <= before[m], (m, before[m], now_runs[m])
                given = await lab.metric(m, "failsight_group_handovers_total", direction="out")
                if now_runs[m] != before[m]:
                    assert given >= given_before[m] + len(before[m] - now_runs[m]), (m, given)
            # DNS goes away: the last list is kept, nothing moves.
            dns.stop()
            await asyncio.sleep(4 * INTERVAL)
            assert await settled(lab, joined, timeout=5) == after
            dns.start()
            for m in joined:
                owned = await lab.metric(m, "failsight_group_checks_owned")
                assert owned == len(now_runs[m]) + len(EVERY_MEMBER), (m, owned, now_runs[m])
                assert await lab.metric(m, "failsight_group_members") == 3
                assert await lab.metric(m, "failsight_group_partial") == 0
            await asyncio.sleep(2 * INTERVAL)

        assert sampler.samples >= 20, sampler.samples
        assert not sampler.bad, "\n".join(sampler.bad[:40])
        print(f"hand-over of {sorted(lost)} seen at the sites {took:.1f}s after SIGKILL")


# --- c) a member cut off from its group, not from the sites ----------------------------------


async def test_a_partitioned_member_runs_everything_and_says_partial(tmp_path: Path) -> None:
    ports = dict(zip(MEMBERS, free_ports(len(MEMBERS)), strict=True))
    async with group_lab(tmp_path) as lab:
        real = {m: f"http://127.0.0.1:{ports[m]}" for m in MEMBERS}
        # m3 reaches m1 and m2 only through proxies the test can cut; they reach m3 directly.
        cut = {m: await lab.proxy(ports[m]) for m in ("m1", "m2")}
        lists = {
            "m1": list(real.values()),
            "m2": list(real.values()),
            "m3": [cut["m1"].url, cut["m2"].url, real["m3"]],
        }
        for m in MEMBERS:
            add_member(lab, m, ports[m], static_group(m, lists[m]))
        await lab.start(*MEMBERS)
        owners = await settled(lab, MEMBERS)

        async with VerdictSampler(lab, MEMBERS).running() as sampler:
            for proxy in cut.values():
                proxy.cut()

            async def partitioned() -> str | None:
                view = await lab.view("m3")
                group = view["group"]
                by_url = {x["url"]: x for x in group["members"]}
                if group["partial"] is not True:
                    return f"m3 not partial: {group}"
                for m in ("m1", "m2"):
                    entry = by_url.get(cut[m].url)
                    if entry is None or entry["state"] != "unreachable" or not entry["error"]:
                        return f"m3 still sees {m} as {entry}"
                if by_url.get(real["m3"], {}).get("state") != "live":
                    return f"m3 does not see itself live: {group}"
                runs = set((await lab.shard("m3"))["checks"])
                if not SHARDED.keys() <= runs:
                    return f"m3 runs only {sorted(runs)}"
                return None

            await eventually(partitioned, timeout=HANDOVER)
            # The others still reach m3 directly: for them nothing changed.
            await settled(lab, MEMBERS, ask=["m1", "m2"], timeout=5)
            await asyncio.sleep(2 * INTERVAL)
            t0, t1 = await count_window(lab, 5 * INTERVAL)
            m3_runs = runs_per_check(lab, ["m3"], t0, t1)
            short = {c: r for c, r in m3_runs.items() if r.get("m3", 0) < 4}
            assert not short, f"m3, cut off, does not run every check: {short}"
            # m1 and m2 keep running their shares (the partition's duplicate traffic).
            for m in ("m1", "m2"):
                theirs = runs_per_check(lab, [m], t0, t1)
                low = {c: theirs[c] for c in owners[m] if theirs[c].get(m, 0) < 4}
                assert not low, f"{m} stopped running its share: {low}"

            for proxy in cut.values():
                proxy.restore()
            await settled(lab, MEMBERS, timeout=HANDOVER)

        assert sampler.samples >= 20, sampler.samples
        assert not sampler.bad, "\n".join(sampler.bad[:40])
        assert sampler.seen == {"primary": {"healthy"}, "standby": {"healthy"}}, sampler.seen


# --- coverage first, and an unlisted member ------------------------------------------------------


async def test_a_member_with_no_list_runs_everything_an_unlisted_one_only_its_own(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq
) -> None:
    """docs/groups.md § Readiness: with no list ever resolved, or nobody in it answering (not
    even itself), a member runs every check (coverage first): an SRV name with no records, a
    DNS server that does not answer, a static list of members that are all gone. A member the
    list does not name while others in it answer runs only its `every_member` checks and
    shows as `unlisted`; the listed members keep their shares."""
    names = ["m1", "m2", "unlisted", "empty", "nodns", "alone"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    empty_dns = dnsmasq_factory(hosts(["m1"]))  # no SRV record: NXDOMAIN
    dead_dns, gone1, gone2 = free_ports(3)  # nothing listens there
    async with group_lab(tmp_path) as lab:
        listed = [f"http://127.0.0.1:{ports[m]}" for m in ("m1", "m2")]
        groups = {
            "m1": static_group("m1", listed),
            "m2": static_group("m2", listed),
            "unlisted": static_group("unlisted", listed),
            "empty": srv_group("empty", empty_dns.port),
            "nodns": srv_group("nodns", dead_dns),
            "alone": static_group(
                "alone", [f"http://127.0.0.1:{gone1}", f"http://127.0.0.1:{gone2}"]
            ),
        }
        for n in names:
            add_member(lab, n, ports[n], groups[n])
        await lab.start(*names)
        await settled(lab, ["m1", "m2"])
        covering = ("empty", "nodns", "alone")

        async def shares() -> str | None:
            wrong = []
            for n in covering:
                runs = set((await lab.shard(n))["checks"])
                if not SHARDED.keys() <= runs:
                    wrong.append(f"{n} runs only {sorted(runs)}")
            runs = set((await lab.shard("unlisted"))["checks"])
            if runs != EVERY_MEMBER:
                wrong.append(f"unlisted runs {sorted(runs)}")
            return "; ".join(wrong) or None

        await eventually(shares, timeout=HANDOVER)
        await asyncio.sleep(2 * INTERVAL)
        t0, t1 = await count_window(lab, 4 * INTERVAL)
        for n in covering:
            counts = runs_per_check(lab, [n], t0, t1)
            low = {c: r for c, r in counts.items() if r.get(n, 0) < 3}
            assert not low, f"{n} does not run every check: {low}"
        counts = runs_per_check(lab, ["unlisted"], t0, t1)
        assert not any(counts.values()), f"unlisted runs sharded checks: {counts}"
        for check in EVERY_MEMBER:
            ran = lab.sites[check.split("/")[2]].runs(check, members=["unlisted"], since=t0)
            assert ran >= 3, (check, ran)
        # The listed members did not give it anything.
        await settled(lab, ["m1", "m2"], timeout=5)

        view = await lab.view("unlisted")
        me = [x for x in view["group"]["members"] if x["self"]]
        assert len(me) == 1 and me[0]["state"] == "unlisted" and me[0]["name"] == "unlisted", me
        live = {x["name"] for x in view["group"]["members"] if x["state"] == "live"}
        assert live == {"m1", "m2"}, view["group"]
        # Its view is the group's: the sites from the members that run them.
        assert view["missing_sites"] == [], view
        assert {s: v["state"] for s, v in view["sites"].items()} == {
            "primary": "up",
            "standby": "up",
        }
        sites = await lab.verdicts("unlisted")
        assert {s: b["verdict"] for s, b in sites.items()} == {
            "primary": "healthy",
            "standby": "healthy",
        }
        for n in covering:
            view = await lab.view(n)
            states = {x.get("name") or x.get("url"): x["state"] for x in view["group"]["members"]}
            assert [x["state"] for x in view["group"]["members"] if x["self"]] in (
                ["unlisted"],
                ["live"],
            ), states
            assert not any(s == "live" for k, s in states.items() if k != n), states


# --- a hand-over keeps a failing site's evidence ------------------------------------------------


class Watch(Sampler):
    """Runs `probe` every 0.2 s in the background; keeps every anomaly it reports."""

    def __init__(self, probe: Callable[[], Awaitable[list[str]]]) -> None:
        self.probe = probe
        self.samples = 0
        self.bad: list[str] = []

    async def _run(self) -> None:
        while True:
            started = time.time()
            try:
                found = await self.probe()
            except Exception as exc:  # an agent that does not answer is an anomaly too
                found = [f"no answer: {type(exc).__name__} {exc}"]
            self.samples += 1
            self.bad += [f"{started:.1f} {f}" for f in found]
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("change", ["kill", "join", "restart"])
async def test_a_hand_over_keeps_a_down_sites_evidence(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq, change: str
) -> None:
    """The primary fails for aws-use1 only (its path to the site): that vantage sees it down,
    the others up, so the verdict is `degraded`. Then `site/primary` changes hands:

    - kill: its owner dies (SIGKILL) and the next-ranked member takes it;
    - join: m4 joins (DNS lists it) and ranks highest for it;
    - restart: its owner crashes and comes back at once under the same name (a container
      restart in the same pod keeps POD_NAME).

    docs/groups.md: "the new owner starts from the previous owner's last opinion of the site
    ... so the site does not go missing". So aws-use1's view of the primary stays `down`
    throughout on every answering member (never `up`, `degraded` or missing), and the verdict
    stays `degraded` everywhere (a lost down vote would make it `healthy`)."""
    names = [*MEMBERS, "m4", *OTHER_VANTAGES]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    dns = dnsmasq_factory(hosts([*MEMBERS, "m4"]), srv=srv_records(ports, MEMBERS))
    before = owner("site/primary", MEMBERS)
    if change == "kill":
        watched, after = [m for m in MEMBERS if m != before], owner("site/primary", ["m2", "m3"])
    elif change == "join":
        watched, after = [*MEMBERS], owner("site/primary", [*MEMBERS, "m4"])
        assert after == "m4"
    else:
        watched, after = [m for m in MEMBERS if m != before], before
    assert before == "m1"  # the other clouds poll m2, which stays
    async with group_lab(tmp_path) as lab:
        add_srv_members(lab, ports, dns, [*MEMBERS, "m4"])
        add_other_vantages(lab, ports, aws_url=lab.agents["m2"].url)
        await lab.start(*MEMBERS, *OTHER_VANTAGES)
        await settled(lab, MEMBERS)
        await all_healthy(lab, [*MEMBERS, *OTHER_VANTAGES])

        lab.sites["primary"].failing_for = {*MEMBERS, "m4"}

        async def aws_sees_it_down() -> str | None:
            for m in MEMBERS:
                view = await lab.view(m)
                if view["sites"]["primary"]["state"] != "down":
                    return f"{m}: primary is {view['sites']['primary']}"
            for v in OTHER_VANTAGES:  # and the other clouds have polled it since
                quorum = (await lab.verdicts(v))["primary"]["quorum"]
                if quorum["vantages"].get(VANTAGE) != "down":
                    return f"{v}: sees aws-use1 {quorum['vantages']}"
            return await all_verdicts(
                lab, [*MEMBERS, *OTHER_VANTAGES], lambda b: b["verdict"] == "degraded", "primary"
            )

        await eventually(aws_sees_it_down, timeout=30)

        started: list[str] = []  # just started: no evidence and no peers yet, like any agent

        async def gapless() -> list[str]:
            found = []
            for m in [*watched, *started]:
                view = await lab.view(m)
                state = view["sites"]["primary"]["state"]
                missing = view.get("missing_sites", [])
                if m in started:
                    # It may have nothing yet (missing: stale, no vote), but never an `up`.
                    if state != "down" and "primary" not in missing:
                        found.append(f"{m} (new): primary {state}, missing {missing}")
                    continue
                if state != "down" or "primary" in missing:
                    found.append(f"{m}: primary {state}, missing {missing}")
                verdict = (await lab.verdicts(m))["primary"]
                if verdict["verdict"] != "degraded":
                    found.append(f"{m}: verdict {verdict['verdict']} {verdict['quorum']}")
            for v in OTHER_VANTAGES:
                quorum = (await lab.verdicts(v))["primary"]["quorum"]
                if quorum["vantages"].get(VANTAGE) != "down":
                    found.append(f"{v}: sees aws-use1 {quorum['vantages']}")
            return found

        async with Watch(gapless).running() as watch:
            changed_at = time.time()
            if change == "kill":
                await lab.agents[before].kill()
                live, gone = ["m2", "m3"], [before]
            elif change == "join":
                dns.set_srv(srv_records(ports, [*MEMBERS, "m4"]))
                await lab.start("m4")
                started.append("m4")  # from the moment it says it is ready
                live, gone = [*MEMBERS, "m4"], []
            else:
                await lab.agents[before].kill()

                async def noticed() -> str | None:
                    # As a pod's restart does (the kubelet's back-off is 10 s), the restart
                    # comes after the others have seen the member stop answering. A restart
                    # within one refresh is a known gap: docs/groups.md § Failure semantics.
                    for m in watched:
                        states = members_by_state(await lab.view(m))
                        if states.get(before) == "live":
                            return f"{m} still sees {before} live: {states}"
                    return None

                await eventually(noticed, timeout=HANDOVER)
                await lab.start(before)
                started.append(before)
                live, gone = [*MEMBERS], []

            async def after_runs_it() -> str | None:
                hits = lab.sites["primary"].runs(
                    "journey/core/primary", members=[after], since=changed_at
                )
                return None if hits >= 3 else f"{after} ran core/primary {hits} times"

            await eventually(after_runs_it, timeout=HANDOVER)
            await settled(lab, live, unreachable=gone)
            await asyncio.sleep(3 * INTERVAL)

        assert watch.samples >= 10, watch.samples
        assert not watch.bad, "\n".join(watch.bad[:40])


async def test_an_srv_answer_too_large_for_udp_still_lists_the_group(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq
) -> None:
    """40 SRV records (a large group, most of it not answering) do not fit a UDP answer: the
    list comes over TCP, the three members that answer share the checks, the rest are
    unreachable, and the group is partial."""
    ports = dict(zip(MEMBERS, free_ports(len(MEMBERS)), strict=True))
    dead = free_ports(37)
    records = srv_records(ports, MEMBERS) + [
        Srv(SRV_NAME, f"d{i}.group.test", port) for i, port in enumerate(dead)
    ]
    dns = dnsmasq_factory(hosts([*MEMBERS, *(f"d{i}" for i in range(37))]), srv=records)
    async with group_lab(tmp_path) as lab:
        for m in MEMBERS:
            add_member(lab, m, ports[m], srv_group(m, dns.port))
        await lab.start(*MEMBERS)
        await settled(lab, MEMBERS, unreachable=[f"http://127.0.0.1:{p}" for p in dead])
        view = await lab.view("m1")
        assert len(view["group"]["members"]) == 40, view["group"]
        assert await lab.metric("m1", "failsight_group_members_listed") == 40
        assert await lab.metric("m1", "failsight_group_members") == 3


async def test_members_reached_over_https_by_their_srv_names(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq
) -> None:
    """`scheme: https`: members are reached at the SRV target's address and checked against
    the target's name with `ca_file`; a member whose certificate names another host is
    unreachable (a TLS error), not trusted."""
    ports = dict(zip(["m1", "m2"], free_ports(2), strict=True))
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def server_context(*names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        return context

    async with group_lab(tmp_path) as lab:
        front = {m: await lab.proxy(ports[m], tls=server_context(f"{m}.group.test")) for m in ports}
        impostor = await lab.proxy(ports["m1"], tls=server_context("elsewhere.test"))
        records = [Srv(SRV_NAME, f"{m}.group.test", front[m].port) for m in ports]
        records.append(Srv(SRV_NAME, "m1-again.group.test", impostor.port))
        dns = dnsmasq_factory(hosts(["m1", "m2", "m1-again"]), srv=records)
        for m in ports:
            group = srv_group(m, dns.port) | {"scheme": "https", "ca_file": str(ca_file)}
            add_member(lab, m, ports[m], group)
        await lab.start(*ports)
        await settled(lab, ["m1", "m2"], unreachable=[impostor.url])
        view = await lab.view("m2")
        by_url = {x["url"]: x for x in view["group"]["members"]}
        assert set(by_url) == {front["m1"].url, front["m2"].url, impostor.url}, by_url
        error = by_url[impostor.url]["error"] or ""
        assert any(w in error.lower() for w in ("certificate", "tls", "ssl", "hostname")), error


# --- replication safety is judged the same on every member -----------------------------------


async def test_every_member_judges_failover_safety_from_the_one_replication_check(
    tmp_path: Path, pg_pair: PgPair
) -> None:
    """The replication check runs on one member; every member's verdict needs its results
    ("results shared for replication safety"). With the standby beyond its RPO, no member
    may recommend the failover (a member without the results must not take "no evidence" for
    "safe"); once it catches up, every member recommends it."""
    ports = dict(zip(MEMBERS, free_ports(len(MEMBERS)), strict=True))
    urls = [f"http://127.0.0.1:{ports[m]}" for m in MEMBERS]
    check = "replication/orders-db"
    runner = owner(check, MEMBERS)
    async with group_lab(tmp_path) as lab:
        for m in MEMBERS:
            config = agent_config(
                name=m,
                vantage=VANTAGE,
                port=ports[m],
                sites=lab.sites,
                peers={},
                group=static_group(m, urls),
            )
            config["replication"] = [
                {
                    "cluster": "orders-db",
                    "rpo": "2s",
                    "interval": "1s",
                    "timeout": "800ms",
                    "primary": {"site": "primary", "dsn": pg_pair.primary.dsn()},
                    "replicas": [{"site": "standby", "dsn": pg_pair.replica.dsn()}],
                }
            ]
            lab.add(m, ports[m], config)
        await lab.start(*MEMBERS)
        await settled(lab, MEMBERS)
        await eventually(lambda: _only_runner(lab, check, runner), timeout=HANDOVER)

        # Every member knows the owner's latest result (the same run).
        await eventually(lambda: _replication(lab, check, within=True), timeout=30)
        await all_healthy(lab, MEMBERS)

        async def fresh_everywhere() -> list[str]:
            # A shared result is at most a run interval + a refresh (+ margin) old anywhere.
            found = []
            now = time.time()
            for m in MEMBERS:
                _, body = await lab.get(m, "/v1/results")
                age = now - body[check]["started_at"]
                if age > 6.0:
                    found.append(f"{m}: latest {check} is {age:.1f}s old ({body[check]['run_id']})")
            return found

        async with Watch(fresh_everywhere).running() as freshness:
            await asyncio.sleep(10 * INTERVAL)
        assert freshness.samples >= 10 and not freshness.bad, "\n".join(freshness.bad[:40])

        async def never_unsafe_failover() -> list[str]:
            found = []
            for m in MEMBERS:
                body = (await lab.verdicts(m))["primary"]
                repl = body.get("replication") or {}
                if body["verdict"] in FAILOVER and repl.get("within_rpo") is not True:
                    found.append(f"{m}: {body['verdict']} with replication {repl}")
            return found

        async with Watch(never_unsafe_failover).running() as watch:
            await asyncio.to_thread(pg_pair.pause_replay)
            await eventually(lambda: _replication(lab, check, within=False), timeout=30)
            lab.sites["primary"].failing = True
            await eventually(
                lambda: all_verdicts(
                    lab, MEMBERS, lambda b: b["verdict"] == "failover_unsafe", "primary"
                ),
                timeout=30,
            )
            await asyncio.sleep(3 * INTERVAL)
            for m in MEMBERS:
                body = (await lab.verdicts(m))["primary"]
                assert body["verdict"] == "failover_unsafe", (m, body)
        assert watch.samples >= 10 and not watch.bad, "\n".join(watch.bad[:40])

        await asyncio.to_thread(pg_pair.resume_replay)
        await eventually(
            lambda: all_verdicts(
                lab,
                MEMBERS,
                lambda b: b["verdict"] == "failed_over" and b["current"] == "failover_recommended",
                "primary",
            ),
            timeout=60,
        )


async def _replication(lab: Lab, check: str, *, within: bool) -> str | None:
    """Until every member's latest result of `check` (its own or the owner's, shared) says the
    replica is (or is not) within the RPO, from a recent run of the owner's. Not necessarily
    the same run: the owner runs it every second and the others hear of it within a refresh,
    so on a loaded machine the members may each be a run apart for as long as one cares to
    look."""
    runs: dict[str, str] = {}
    now = time.time()
    for m in MEMBERS:
        status, body = await lab.get(m, "/v1/results")
        result = body.get(check) if status == 200 and isinstance(body, dict) else None
        if result is None:
            return f"{m} has no result of {check}"
        replicas = result["facts"]["replicas"]
        if [r["within_rpo"] for r in replicas] != [within]:
            return f"{m}: {result['message']}"
        runs[m] = f"{result['run_id']} started {result['started_at']:.1f}"
        if now - result["started_at"] > 6.0:
            return f"{m}'s latest {check} is {now - result['started_at']:.1f}s old: {runs}"
    return None


async def _only_runner(lab: Lab, check: str, runner: str) -> str | None:
    for m in MEMBERS:
        runs = set((await lab.shard(m))["checks"])
        if (check in runs) != (m == runner):
            return f"{m} runs {sorted(runs)}; {check} belongs to {runner}"
    return None


# --- config reloads and operator actions in a group ---------------------------------------------


async def test_a_check_added_by_a_reload_runs_on_its_owner_only(tmp_path: Path) -> None:
    """SIGHUP with a new journey on every member: each of its checks is shared out like the
    others (one owner, once per interval), the old shares stay where they were."""
    ports = dict(zip(MEMBERS, free_ports(len(MEMBERS)), strict=True))
    urls = [f"http://127.0.0.1:{ports[m]}" for m in MEMBERS]
    async with group_lab(tmp_path) as lab:
        for m in MEMBERS:
            add_member(lab, m, ports[m], static_group(m, urls))
        await lab.start(*MEMBERS)
        owners = await settled(lab, MEMBERS)
        extra = {
            f"journey/extra/{site}": owner(f"journey/extra/{site}", MEMBERS)
            for site in ("primary", "standby")
        }
        for m in MEMBERS:
            config = json.loads(json.dumps(lab.agents[m].config))
            added = json.loads(json.dumps(config["journeys"][2]))  # browse: not critical
            added["name"] = "extra"
            added["steps"][0]["path"] = "/j/extra"
            config["journeys"].append(added)
            await lab.agents[m].reload(config)

        async def shared() -> str | None:
            for m in MEMBERS:
                runs = set((await lab.shard(m))["checks"])
                mine = {c for c, o in extra.items() if o == m}
                theirs = set(extra) - mine
                if not mine <= runs or runs & theirs:
                    return f"{m} runs {sorted(runs)}; owns {sorted(mine)} of the new checks"
            return None

        await eventually(shared, timeout=HANDOVER)
        assert await settled(lab, MEMBERS, timeout=10) == owners
        await asyncio.sleep(2 * INTERVAL)
        t0, t1 = await count_window(lab, 5 * INTERVAL)
        for check, want in extra.items():
            runners = lab.sites[check.split("/")[2]].runners(check, since=t0, until=t1)
            runners = {m: n for m, n in runners.items() if m in MEMBERS}
            assert set(runners) == {want} and 4 <= runners[want] <= 6, (check, want, runners)


ADMIN = "group-admin-token-0123456789"


async def test_a_hold_given_to_any_member_holds_the_site_everywhere(
    tmp_path: Path, dnsmasq_factory: MakeDnsmasq
) -> None:
    """An operator's hold sent to one member travels with the group's view: every member and
    the other vantages hold the site, and the failover waits for the lift."""
    names = [*MEMBERS, *OTHER_VANTAGES]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    dns = dnsmasq_factory(hosts(MEMBERS), srv=srv_records(ports, MEMBERS))
    async with group_lab(tmp_path) as lab:
        add_srv_members(lab, ports, dns, MEMBERS)
        add_other_vantages(lab, ports, aws_url=lab.agents["m1"].url)
        for a in lab.agents.values():
            a.config["agent"]["admin_token"] = ADMIN
        await lab.start(*names)
        await settled(lab, MEMBERS)
        await all_healthy(lab, names)

        async def act(name: str, method: str, body: dict[str, Any] | None) -> tuple[int, Any]:
            async with lab.session.request(
                method,
                lab.agents[name].url + "/v1/sites/primary/hold",
                json=body,
                headers={"Authorization": f"Bearer {ADMIN}"},
            ) as r:
                return r.status, await r.json()

        # m3 is not the member the other clouds poll, nor (here) the primary's owner.
        status, answer = await act("m3", "POST", {"for": "1h", "reason": "db upgrade", "by": "bob"})
        assert status == 200, answer
        await eventually(
            lambda: all_verdicts(lab, names, lambda b: b["verdict"] == "held", "primary"),
            timeout=30,
        )
        lab.sites["primary"].failing = True
        await eventually(
            lambda: all_verdicts(
                lab,
                MEMBERS,
                lambda b: b["verdict"] == "held" and b["current"] == "failover_recommended",
                "primary",
            ),
            timeout=60,
        )
        for _ in range(10):  # and it stays held
            for n in names:
                verdict = (await lab.verdicts(n))["primary"]
                assert verdict["verdict"] == "held", (n, verdict)
            await asyncio.sleep(0.3)
        status, answer = await act("m2", "DELETE", None)
        assert status == 200, answer
        await eventually(
            lambda: all_verdicts(lab, names, lambda b: b["verdict"] in FAILOVER, "primary"),
            timeout=60,
        )


# --- d) hostile members, bad group configs -------------------------------------------------------


class FakeMembers:
    """Listed members that are not members: each a loopback HTTP server answering
    `/v1/view?scope=member` with one kind of bad answer."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.runners: list[web.AppRunner] = []
        self.hits: dict[str, int] = {}
        self.shutdown = asyncio.Event()

    async def serve(self, name: str, handler: Callable[[web.Request], Any]) -> str:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.hits[name] = self.hits.get(name, 0) + 1
            response: web.StreamResponse = await handler(request)
            return response

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", counted)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        self.runners.append(runner)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def close(self) -> None:
        self.shutdown.set()
        for r in self.runners:
            await r.cleanup()


async def test_hostile_listed_members_are_unreachable_not_a_crash(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    async with group_lab(tmp_path) as lab:
        fakes = FakeMembers(lab)
        try:
            await _hostile(lab, fakes, port, tmp_path)
        finally:
            await fakes.close()


async def _hostile(lab: Lab, fakes: FakeMembers, port: int, tmp_path: Path) -> None:
    me = f"http://127.0.0.1:{port}"

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=b"<html>\x00\xff not json {", content_type="application/json")

    async def not_an_object(_: web.Request) -> web.Response:
        return web.json_response([{"vantage": VANTAGE}])

    async def oversized(request: web.Request) -> web.StreamResponse:
        # Valid JSON, far beyond any member's shard: must be cut off unread, not parsed.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write(b'{"vantage": "aws-use1", "pad": "')
            for _ in range(16 * 16):  # 16 MiB
                await response.write(chunk)
            await response.write(b'"}')
        return response

    async def deep(_: web.Request) -> web.Response:
        return web.Response(body=b"[" * 200_000 + b"]" * 200_000, content_type="application/json")

    async def wrong_vantage(_: web.Request) -> web.Response:
        # A real member's answer, of another vantage: a real shape with the one wrong field.
        status, body = await lab.get("m1", "/v1/view?scope=member")
        if status != 200 or not isinstance(body, dict):
            return web.Response(status=500)
        body.update(vantage="gcp-euw1", member="m9", instance="fake-instance-9")
        return web.json_response(body)

    async def no_name(_: web.Request) -> web.Response:
        status, body = await lab.get("m1", "/v1/view?scope=member")
        if status != 200 or not isinstance(body, dict):
            return web.Response(status=500)
        body.update(member=None, instance="fake-instance-10")
        return web.json_response(body)

    async def hang(_: web.Request) -> web.Response:
        await fakes.shutdown.wait()
        return web.Response(status=500)

    async def server_error(_: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def not_ready(_: web.Request) -> web.Response:
        return web.json_response({"status": "starting"}, status=503)

    bad = {
        name: await fakes.serve(name, handler)
        for name, handler in {
            "garbage": garbage,
            "not_an_object": not_an_object,
            "oversized": oversized,
            "deep": deep,
            "wrong_vantage": wrong_vantage,
            "no_name": no_name,
            "hang": hang,
            "server_error": server_error,
            "not_ready": not_ready,
        }.items()
    }
    add_member(lab, "m1", port, static_group("m1", [me, *bad.values()]))
    await lab.start("m1")

    async def all_refused() -> str | None:
        view = await lab.view("m1")
        group = view["group"]
        by_url = {x["url"]: x for x in group["members"]}
        if by_url.get(me, {}).get("state") != "live" or not by_url[me]["self"]:
            return f"m1 is not itself and live: {by_url.get(me)}"
        for name, url in bad.items():
            entry = by_url.get(url)
            want = "not_ready" if name == "not_ready" else "unreachable"
            if entry is None or entry["state"] != want or not entry["error"]:
                return f"{name}: {entry} (expected {want} with an error)"
        if group["partial"] is not True:
            return f"not partial: {group}"
        runs = set((await lab.shard("m1"))["checks"])
        if not SHARDED.keys() <= runs:
            return f"m1, alone, runs only {sorted(runs)}"
        return None

    await eventually(all_refused, timeout=HANDOVER)
    errors_before = await lab.metric("m1", "failsight_group_fetches_total", outcome="error")
    t0, t1 = await count_window(lab, 4 * INTERVAL)
    # Still alive, still asking, still running every check, and no fake's name is live.
    assert lab.agents["m1"].running, lab.agents["m1"].log()
    status, _ = await lab.get("m1", "/healthz")
    assert status == 200
    # The shard is guarded like the view: no token, no shard.
    async with lab.session.get(lab.agents["m1"].url + "/v1/view?scope=member") as r:
        assert r.status == 401, await r.text()
    assert await lab.metric("m1", "failsight_group_fetches_total", outcome="error") > errors_before
    assert await lab.metric("m1", "failsight_group_members") == 1
    assert await lab.metric("m1", "failsight_group_members_listed") == 1 + len(bad)
    assert await lab.metric("m1", "failsight_group_partial") == 1
    view = await lab.view("m1")
    assert [x["name"] for x in view["group"]["members"] if x["state"] == "live"] == ["m1"]
    assert view["missing_sites"] == []
    counts = runs_per_check(lab, ["m1"], t0, t1)
    assert all(r.get("m1", 0) >= 3 for r in counts.values()), counts
    for name in bad:
        assert fakes.hits.get(name, 0) >= 2, (name, fakes.hits)
    # Nothing of the hostile answers is echoed whole into the view.
    text = json.dumps(view)
    assert "x" * 100 not in text and " " * 200 not in text and "[[[[[[[[" not in text
    assert len(text) < 200_000
    sites = await lab.verdicts("m1")
    assert {s: b["verdict"] for s, b in sites.items()} == {
        "primary": "healthy",
        "standby": "healthy",
    }


async def test_a_large_group_is_asked_at_most_ten_times_a_second(tmp_path: Path) -> None:
    """Brief: each member sends the others at most 10 requests a second in all: with 30
    listed and `refresh: 100ms`, a round takes 3 s, not 100 ms."""
    port = free_ports(1)[0]
    async with group_lab(tmp_path) as lab:
        fakes = FakeMembers(lab)
        try:

            async def not_ready(_: web.Request) -> web.Response:
                return web.json_response({"status": "starting"}, status=503)

            urls = [await fakes.serve(f"f{i}", not_ready) for i in range(29)]
            group = static_group("m1", [f"http://127.0.0.1:{port}", *urls]) | {"refresh": "100ms"}
            add_member(lab, "m1", port, group)
            await lab.start("m1")
            await asyncio.sleep(1)
            before, t0 = sum(fakes.hits.values()), time.monotonic()
            await asyncio.sleep(6)
            sent, took = sum(fakes.hits.values()) - before, time.monotonic() - t0
            # One round may straddle the window's start: 30 more at most.
            assert 29 <= sent <= 10 * took + 30, f"{sent} requests in {took:.1f}s"
            assert all(fakes.hits.get(f"f{i}", 0) >= 1 for i in range(29)), fakes.hits
            view = await lab.view("m1")
            states = [x["state"] for x in view["group"]["members"]]
            assert states.count("not_ready") == 29 and states.count("live") == 1, states
        finally:
            await fakes.close()


BASE = """\
agent:
  vantage: aws-use1
  group:
{group}
sites:
  - name: aws-use1
    role: primary
    base_url: http://127.0.0.1:1
  - name: gcp-euw1
    role: standby
    base_url: http://127.0.0.1:2
"""


def group_yaml(*lines: str) -> str:
    return BASE.format(group="\n".join(f"    {line}" for line in lines))


def test_a_good_group_config_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i, lines in enumerate(
        [
            ("member: m1", f"srv: {SRV_NAME}", "nameservers: [10.96.0.10:53, 10.96.0.11]"),
            ("members: [http://10.0.0.5:9747, https://10.0.0.6:9747]", "refresh: 500ms"),
            ("srv: _failsight._tcp.x.svc.cluster.local", "scheme: https", "timeout: 1s"),
        ]
    ):
        path = tmp_path / f"good{i}.yaml"
        path.write_text(group_yaml(*lines))
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    path = tmp_path / "placement.yaml"
    path.write_text(
        group_yaml("members: [http://10.0.0.5:9747]")
        + "journeys:\n  - name: j\n    placement: every_member\n"
        "    steps: [{name: s, path: /x}]\n"
        "tcp:\n  - {name: t, host: 127.0.0.1, port: 1, placement: sharded}\n"
    )
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "key", "words"),
    [
        (
            ("srv: _failsight._tcp.a.b", "members: [http://10.0.0.5:9747]"),
            "agent.group",
            ("srv", "members"),
        ),
        (("member: m1",), "agent.group", ("srv", "members")),
        (("srv: _failsight._tcp.a.b", "refresh: 0s"), "agent.group.refresh", ()),
        (("srv: _failsight._tcp.a.b", "refresh: 0"), "agent.group.refresh", ()),
        (("srv: _failsight._tcp.a.b", "timeout: -1s"), "agent.group.timeout", ()),
        (
            ("srv: _failsight._tcp.a.b", "nameservers: [dns.example]"),
            r"agent\.group\.nameservers(\.0)?",
            (),
        ),
        (
            ("srv: _failsight._tcp.a.b", "nameservers: ['10.0.0.1:99999']"),
            r"agent\.group\.nameservers(\.0)?",
            (),
        ),
        (("srv: 'not a name'",), "agent.group.srv", ()),
        (("members: [ftp://10.0.0.5]",), "agent.group.members", ()),
        (("members: []",), "agent.group.members", ()),
        (("srv: _failsight._tcp.a.b", "scheme: gopher"), "agent.group.scheme", ()),
        (("srv: _failsight._tcp.a.b", "colour: red"), "agent.group.colour", ("unknown key",)),
        (("srv: _failsight._tcp.a.b", "member: ' m1'"), "agent.group.member", ()),
    ],
)
def test_a_bad_group_config_names_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: tuple[str, ...],
    key: str,
    words: tuple[str, ...],
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(group_yaml(*lines))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    # `key` is a pattern: a list's own validator may name the list rather than the item.
    pattern = key if "\\" in key else re.escape(key)
    found = re.search(rf"^{re.escape(str(path))}:(\d+): {pattern}: (.+)$", err, re.M)
    assert found, err
    message = found.group(2)
    for word in words:
        assert word in message, message


def test_a_bad_placement_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        group_yaml("srv: _failsight._tcp.a.b")
        + "journeys:\n  - name: j\n    placement: everywhere\n    steps: [{name: s, path: /x}]\n"
    )
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"^{re.escape(str(path))}:\d+: journeys\.0\.placement: ", err, re.M), err
    assert "sharded" in err and "every_member" in err, err
