"""End to end: a real HAProxy wired as deploy/haproxy/haproxy.example.cfg follows three agents'
verdict, with client traffic through it and the primary taken down for real (agents and clients
alike reach each site through a fault-injecting TCP proxy).

What a failover controller needs from failsight: one failover per incident, however the primary
flaps; no failback when the primary answers again; failback when an operator releases it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest

from failsight.agent.demo.simulator import Platform
from failsight.agent.runtime import Agent
from tests.fixtures.faultproxy import FaultProxy, agents_behind, site_proxies
from tests.fixtures.haproxy import (
    EXAMPLE,
    Answer,
    ClientTraffic,
    HAProxy,
    failures,
    require_haproxy,
    running_haproxy,
    switches,
)
from tests.fixtures.platform import wait_for

PRIMARY, STANDBY = "aws-use1", "gcp-euw1"
SITES = (PRIMARY, STANDBY)
ADMIN_TOKEN = "failback-s3cret-token"
FLAP_SECONDS = 20.0
# Long enough for HAProxy (checks every 1 s, rise 2, then rise 2 again behind the quorum) to
# have moved clients back several times over, had any agent answered 200.
HOLD_SECONDS = 8.0
# Every agent learns of a failback sent to one of them through the peer view exchange (200 ms).
FAILBACK_SPREADS_WITHIN = 2.0

T = TypeVar("T")


@dataclass
class Rig:
    proxies: dict[str, FaultProxy]
    agents: list[Agent]
    haproxy: HAProxy
    traffic: ClientTraffic
    session: aiohttp.ClientSession

    @property
    def primary(self) -> FaultProxy:
        return self.proxies[PRIMARY]

    async def health(self) -> list[tuple[int, str]]:
        return await primary_health(self.session, self.agents)

    async def failback(self, agent: Agent, headers: dict[str, str]) -> tuple[int, Any]:
        url = f"http://127.0.0.1:{agent.port}/v1/sites/{PRIMARY}/failback"
        body = {"by": "alice", "reason": "primary verified"}
        async with self.session.post(url, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    async def primary_serves(self) -> bool:
        """Whether the primary answers directly (through its proxy, bypassing HAProxy)."""
        with contextlib.suppress(aiohttp.ClientError):
            async with self.session.get(self.primary.url + "/healthz") as response:
                return response.status == 200
        return False


async def primary_health(
    session: aiohttp.ClientSession, agents: list[Agent]
) -> list[tuple[int, str]]:
    """(HTTP status, verdict) of the primary's health on every agent, as HAProxy sees it."""

    async def one(agent: Agent) -> tuple[int, str]:
        url = f"http://127.0.0.1:{agent.port}/v1/sites/{PRIMARY}/health"
        async with session.get(url) as response:
            body = await response.json()
            return response.status, str(body.get("verdict"))

    return list(await asyncio.gather(*(one(a) for a in agents)))


async def poll_until(
    fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str, timeout: float
) -> T:
    """Call `fetch` until `ok(value)`; fails with the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not ok(value := await fetch()):
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s; last: {value}")
        await asyncio.sleep(0.05)
    return value


async def assert_stays_failed_over(rig: Rig, seconds: float) -> None:
    """Every agent keeps the primary failed over (503) for `seconds`, polled every half second,
    and clients stay on the standby. This watches for something that must not happen, so it
    runs for the whole time rather than waiting on a condition."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + seconds
    while (now := loop.time()) < end:
        assert await rig.health() == [(503, "failed_over")] * len(rig.agents), (
            f"{now - start:.1f}s after the primary came back"
        )
        await asyncio.sleep(min(0.5, max(0.0, end - loop.time())))
    back = [a for a in rig.traffic.since(start) if a.site == PRIMARY]
    assert not back, f"clients went back to the primary: {back[:3]}"


@contextlib.asynccontextmanager
async def failover_rig(platform: Platform, **agent: Any) -> AsyncIterator[Rig]:
    """Proxies in front of both sites, three agents watching through them, HAProxy from the
    example, and clients on the primary through HAProxy, every piece ready."""
    async with (
        site_proxies(platform) as proxies,
        agents_behind(platform, proxies, **agent) as agents,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
    ):
        await poll_until(
            lambda: primary_health(session, agents),
            lambda h: h == [(200, "healthy")] * len(agents),
            "every agent seeing the primary healthy",
            timeout=15,
        )
        async with (
            running_haproxy(
                agents=[f"127.0.0.1:{a.port}" for a in agents],
                primary=proxies[PRIMARY].address,
                standby=proxies[STANDBY].address,
            ) as haproxy,
            ClientTraffic(haproxy.url) as traffic,
        ):
            await wait_for(lambda: traffic.settled_on(PRIMARY), timeout=10)
            yield Rig(proxies, agents, haproxy, traffic, session)


def summary(answers: list[Answer]) -> str:
    moves = switches(answers, SITES)
    first = moves[0].at if moves else float("inf")
    before = [a for a in failures(answers) if a.sent_at < first]
    return (
        f"{len(answers)} requests, switches {[(m.from_site, m.to_site) for m in moves]}, "
        f"failures before the first switch {len(before)}, after it "
        f"{len(failures(answers, after=first))}"
    )


def test_the_example_config_is_valid() -> None:
    result = subprocess.run(
        [require_haproxy(), "-c", "-f", str(EXAMPLE)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("period", [1.5, 4.0], ids=["1.5s-up-1.5s-down", "4s-up-4s-down"])
async def test_a_flapping_primary_fails_over_once_and_never_back_by_itself(
    platform: Platform, period: float
) -> None:
    async with failover_rig(platform) as rig:
        began = asyncio.get_running_loop().time()
        await rig.primary.flap(period, period, duration=FLAP_SECONDS)
        assert await rig.primary_serves()
        # The primary has served for a while, it flapped, and failback is manual: no way back.
        await assert_stays_failed_over(rig, HOLD_SECONDS)
        # All of it: the rig starts once clients are served by the primary, the site switched from.
        answers = rig.traffic.answers
        print(f"flap {period}s/{period}s: {summary(answers)}; proxy refused {rig.primary.refused}")
        moves = switches(answers, SITES)
        assert [(m.from_site, m.to_site) for m in moves] == [(PRIMARY, STANDBY)], summary(answers)
        # Clients did see the primary fail (the fault reached them), and only until the switch.
        assert failures(answers, after=began), "the flapping primary never failed a request"
        assert failures(answers, after=moves[0].at) == [], summary(answers)


async def test_an_outage_that_heals_stays_failed_over_until_an_operator_fails_back(
    platform: Platform,
) -> None:
    async with failover_rig(platform, admin_token=ADMIN_TOKEN) as rig:
        loop = asyncio.get_running_loop()
        began = loop.time()
        rig.primary.set_mode("down")
        await wait_for(lambda: rig.traffic.settled_on(STANDBY), timeout=20)
        switched_in = loop.time() - began
        rig.primary.set_mode("up")
        assert await rig.primary_serves()
        await assert_stays_failed_over(rig, HOLD_SECONDS)

        # Failback calls without the token, or with a wrong one, change nothing anywhere.
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            status, body = await rig.failback(rig.agents[1], headers)
            assert status == 401, body
            assert ADMIN_TOKEN not in str(body)
        await assert_stays_failed_over(rig, 1.0)  # five peer polls: time to spread, had it

        # The operator releases the failover on one agent; all of them learn it from the peers.
        status, body = await rig.failback(rig.agents[2], {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 200, body
        assert isinstance(body.get("action"), dict), body
        released = loop.time()
        await poll_until(
            rig.health,
            lambda h: all(status == 200 for status, _ in h),
            "every agent answering 200 after the failback",
            timeout=FAILBACK_SPREADS_WITHIN,
        )
        spread_in = loop.time() - released
        await wait_for(lambda: rig.traffic.settled_on(PRIMARY), timeout=15)
        back_in = loop.time() - released

        answers = rig.traffic.answers
        print(
            f"outage: switched in {switched_in:.1f}s; failback reached every agent in "
            f"{spread_in:.2f}s, clients back in {back_in:.1f}s; {summary(answers)}; "
            f"action {body['action']}"
        )
        moves = switches(answers, SITES)
        assert [(m.from_site, m.to_site) for m in moves] == [
            (PRIMARY, STANDBY),
            (STANDBY, PRIMARY),
        ], summary(answers)
        assert moves[1].at > released
        assert failures(answers, after=began), "the outage never failed a client request"
        assert failures(answers, after=moves[0].at) == [], summary(answers)

        # Nothing is failed over any more: a second release is refused.
        status, body = await rig.failback(rig.agents[0], {"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert status == 409, body


A, S = PRIMARY, STANDBY


@pytest.mark.parametrize(
    ("served", "switched"),
    [
        ([], []),
        ([A, A, A], []),
        ([A, A, S, S], [(A, S)]),
        ([A, A, S, A, A, S, S], [(A, S)]),  # a lone answer at the boundary is not a switch
        ([A, A, None, "<NOSRV>", A, S, S], [(A, S)]),  # no answer, no server: no routing news
        ([A, A, "fail:" + S, "fail:" + S, A], []),  # failed answers do not serve anyone
        ([A, A, S, S, A, A], [(A, S), (S, A)]),
    ],
)
def test_switches_count_changes_of_the_site_that_serves(
    served: list[str | None], switched: list[tuple[str, str]]
) -> None:
    # Sent in the reverse order: only the order in which answers came back counts.
    answers = [
        Answer(
            sent_at=-float(i),
            answered_at=float(i),
            ok=not (site or "").startswith("fail:"),
            site=(site or "").removeprefix("fail:") or None,
        )
        for i, site in enumerate(served)
    ]
    found = switches(answers, SITES, settle=2)
    assert [(m.from_site, m.to_site) for m in found] == switched
