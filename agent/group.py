"""A group: the agents of one vantage, sharing its checks (DESIGN.md § Scale).

Membership is what DNS (or a static list) and the members' own answers say, nothing more: every
`refresh`, the member list is resolved again and each listed member is asked for its shard
(`GET /v1/view?scope=member`, conditional on the last ETag). A member is live while that answers;
one that is listed but does not answer is unreachable. There is no election and no agreement
protocol: every member computes the same owners from the same live set (rendezvous hashing), and
while members disagree during churn a check runs twice, or not at all, for about one interval.

The merged view (what `/v1/view` serves for the vantage) takes each site's opinion from the live
member with the newest evidence of it; a site no live member has fresh evidence for is listed as
missing, which the verdict treats as stale for this vantage, never as up.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator, model_validator

from failsight.agent.control import MAX_ACTIONS, Action
from failsight.agent.resultwire import result_from_json, result_to_json
from failsight.agent.view import SiteOpinion, SiteView, VantageView, opinions_from_json
from failsight.core.check import Check
from failsight.core.configtypes import Interval, Model, Name, Timeout
from failsight.core.http import classify, read_bounded, ssl_context
from failsight.core.redact import excerpt
from failsight.core.results import Result

log = logging.getLogger(__name__)

# What one member sends the others, all together, at most: a large group asks each member less
# often than every refresh, so the requests inside a group grow linearly with its size.
MAX_FETCH_RATE = 10.0
FETCH_CONCURRENCY = 16
MAX_MEMBERS = 1024
MAX_SHARD_BYTES = 4 * 1_048_576
MAX_SHARD_CHECKS = 100_000
MAX_SHARD_RESULTS = 10_000
MAX_ERROR_CHARS = 300
# A site's opinion is evidence while its last run is younger than this many of the site's
# critical intervals (plus the refresh): an owner that stopped running it (stuck, or a stale
# opinion carried over a hand-over) does not keep the site `up` or `down` for long.
EVIDENCE_INTERVALS = 3.0
SELF_EVERY = 12  # rounds between the requests a member sends itself once it has found itself
DEPARTED_KEPT = 600.0

MemberStateName = Literal["live", "unreachable", "not_ready"]


def _nameserver(value: str) -> str:
    host, port = parse_nameserver(value)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_nameserver(value: str) -> tuple[str, int]:
    """`10.96.0.10`, `10.96.0.10:53`, `[fd00::a]:53` or `fd00::a` -> (address, port)."""
    text = value.strip()
    port = 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                raise ValueError("expected ADDRESS or ADDRESS:PORT, e.g. 10.96.0.10:53")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, digits = text.partition(":")
        if not digits.isdigit():
            raise ValueError("expected ADDRESS or ADDRESS:PORT, e.g. 10.96.0.10:53")
        port = int(digits)
    else:
        host = text
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(
            "expected an IP address (ADDRESS or ADDRESS:PORT): a nameserver is asked by address"
        ) from None
    if not 1 <= port <= 65535:
        raise ValueError("the port must be from 1 to 65535")
    return address, port


class GroupConfig(Model):
    """`agent.group`: how this agent finds the other agents of its vantage."""

    # This member's name in the group, unique in it (default: the host name, the pod's name
    # in Kubernetes). Checks are shared out by name, so it must not change on a restart
    # unless the member really is another one.
    member: Name | None = None
    # A DNS SRV name listing the members (what a Kubernetes headless Service publishes for a
    # named port), or a static list of the members' base URLs, this member's own included.
    srv: str | None = None
    members: list[str] | None = Field(default=None, min_length=1, max_length=MAX_MEMBERS)
    nameservers: list[str] = Field(default_factory=list, max_length=8)
    scheme: Literal["http", "https"] = "http"
    ca_file: str | None = None
    refresh: Interval = 5.0
    timeout: Timeout = 2.0

    @field_validator("srv")
    @classmethod
    def _srv(cls, value: str | None) -> str | None:
        if value is None:
            return None
        labels = value.rstrip(".").split(".")
        if (
            len(value) > 253
            or len(labels) < 3
            or not all(0 < len(label) <= 63 for label in labels)
            or not all(label.replace("-", "").replace("_", "").isalnum() for label in labels)
            or not value.isascii()
        ):
            raise ValueError(
                "expected a DNS SRV name such as _failsight._tcp.failsight.failsight.svc."
                "cluster.local"
            )
        return value.rstrip(".")

    @field_validator("members")
    @classmethod
    def _members(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        out = []
        for url in value:
            if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
                raise ValueError("expected a list of http:// or https:// URLs")
            out.append(url.rstrip("/"))
        if len(set(out)) != len(out):
            raise ValueError("a member is listed twice")
        return out

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, value: list[str]) -> list[str]:
        return [_nameserver(v) for v in value]

    @model_validator(mode="after")
    def _one_source(self) -> GroupConfig:
        if (self.srv is None) == (self.members is None):
            raise ValueError("set one of `srv` (a DNS SRV name) or `members` (a list of URLs)")
        return self

    @property
    def member_name(self) -> str:
        return self.member or socket.gethostname()


# --- sharing out ------------------------------------------------------------------------------


def shard_key(check: Check) -> str:
    """What a check is shared out by. A site's critical journeys stay together on one member,
    so that the site's view (its hysteresis over every critical run, in order) is exactly what
    one agent alone would have; any other check is shared out on its own."""
    if check.critical and check.site is not None:
        return f"site/{check.site}"
    return check.name


def _rank(member: str, key: str) -> bytes:
    return hashlib.sha256(f"{member}\0{key}".encode("utf-8", "surrogatepass")).digest()


def owner(key: str, members: Iterable[str]) -> str | None:
    """The member that owns `key` (rendezvous hashing): the one ranked highest for it. Losing a
    member moves only its keys; a new member takes only those it now ranks highest for."""
    return max(members, key=lambda m: _rank(m, key), default=None)


def owned_checks(checks: Sequence[Check], me: str, live: Collection[str] | None) -> list[Check]:
    """The checks this member runs: every `every_member` check, and the sharded checks it owns
    among the `live` members (None: no group list is known, so this member runs them all)."""
    if live is None:
        return list(checks)
    members = set(live)
    return [
        c
        for c in checks
        if c.placement == "every_member" or (me in members and owner(shard_key(c), members) == me)
    ]


# --- a member's shard (`/v1/view?scope=member`) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shard:
    """One member's part of the group's view: the sites whose critical journeys it runs, the
    latest results of its checks that other members' verdicts read, and its control actions."""

    vantage: str
    member: str
    instance: str  # this process: tells a member it has reached itself
    generated_at: float
    checks: tuple[str, ...]  # the checks it runs
    sites: Mapping[str, SiteOpinion]
    results: tuple[Result, ...] = ()
    self_check: bool | None = None
    control_clock: int = 0
    actions: tuple[Action, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "scope": "member",
            "vantage": self.vantage,
            "member": self.member,
            "instance": self.instance,
            "generated_at": self.generated_at,
            "checks": list(self.checks),
            "sites": {site: opinion.to_json() for site, opinion in self.sites.items()},
            "results": [result_to_json(r) for r in self.results],
            "self_check": self.self_check,
            "control": {
                "clock": self.control_clock,
                "actions": [a.to_json() for a in self.actions],
            },
        }

    @classmethod
    def from_json(cls, data: object, *, vantage: str, received_at: float) -> Shard:
        """A member's shard as it answered; ValueError if it is not one of this vantage."""
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        if data.get("vantage") != vantage:
            raise ValueError(f"not a member of vantage {vantage!r}")
        member, instance = data.get("member"), data.get("instance")
        if not isinstance(member, str) or not 0 < len(member) <= 128 or not member.isprintable():
            raise ValueError("has no member name")
        if not isinstance(instance, str) or not 0 < len(instance) <= 64:
            raise ValueError("has no instance id")
        checks = data.get("checks")
        if not isinstance(checks, list) or len(checks) > MAX_SHARD_CHECKS:
            raise ValueError("checks is not a list")
        sites = data.get("sites")
        if not isinstance(sites, Mapping):
            raise ValueError("has no sites")
        results = data.get("results")
        if not isinstance(results, list) or len(results) > MAX_SHARD_RESULTS:
            raise ValueError("results is not a list")
        control = data.get("control")
        actions = control.get("actions") if isinstance(control, Mapping) else []
        if not isinstance(actions, list) or len(actions) > MAX_ACTIONS:
            raise ValueError("control.actions is not a list")
        clock = control.get("clock") if isinstance(control, Mapping) else 0
        self_check = data.get("self_check")
        return cls(
            vantage=vantage,
            member=member,
            instance=instance,
            generated_at=received_at,
            checks=tuple(c for c in checks if isinstance(c, str) and len(c) <= 1024),
            sites=MappingProxyType(opinions_from_json(sites)),
            results=tuple(_results(results)),
            self_check=self_check if isinstance(self_check, bool) else None,
            control_clock=clock
            if isinstance(clock, int) and not isinstance(clock, bool) and 0 <= clock < 2**53
            else 0,
            actions=tuple(Action.from_json(a) for a in actions),
        )


def _results(items: list[object]) -> Iterable[Result]:
    """The results a shard shares; one that is not a result is skipped, not the shard."""
    for item in items:
        try:
            yield result_from_json(item)
        except ValueError:
            continue


@dataclass(frozen=True, slots=True)
class Member:
    """A listed member, as this member last heard from it."""

    url: str
    state: MemberStateName = "unreachable"
    name: str | None = None
    instance: str | None = None
    shard: Shard | None = None
    fetched_at: float | None = None  # local wall clock of the last answer
    etag: str | None = None
    error: str | None = None
    is_self: bool = False
    server_hostname: str | None = None  # the SRV target, for TLS to a member reached by IP


@dataclass
class GroupStats:
    fetches: dict[str, int] = field(
        default_factory=lambda: {"changed": 0, "unchanged": 0, "error": 0}
    )
    handovers: dict[str, int] = field(default_factory=lambda: {"in": 0, "out": 0})


# --- the poller -------------------------------------------------------------------------------


class GroupPoller:
    """Resolves the member list and asks each member for its shard, every `refresh`."""

    def __init__(
        self,
        config: GroupConfig,
        *,
        vantage: str,
        instance: str,
        token: SecretStr | None,
        http: aiohttp.ClientSession | None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.vantage = vantage
        self.instance = instance
        self.token = token
        self.http = http
        self.on_change = on_change
        self.me = config.member_name
        self.members: dict[str, Member] = {}
        # Members no longer listed, kept for what they last said (within its evidence age).
        self.departed: dict[str, Member] = {}
        self.listed = False  # a member list has been resolved at least once
        self.stats = GroupStats()
        self._resolve_error: str | None = None
        self._rounds = 0
        # Whether this member is ready (answers its own shard request with 200), once it has
        # found itself in the list: then it no longer sends itself a request every round.
        self.ready: Callable[[], bool] | None = None
        self._warned_duplicate: set[str] = set()

    # -- what the rest of the agent reads -------------------------------------------------------

    def live(self) -> set[str] | None:
        """The live members' names, this one's included when it is listed and answers; None
        when no list was ever resolved (then this member runs everything: coverage first)."""
        if not self.listed:
            return None
        return {m.name for m in self.members.values() if m.state == "live" and m.name}

    def others(self) -> list[Member]:
        return [m for m in self.members.values() if not m.is_self]

    def last_words(self) -> list[Shard]:
        """The last shard of every other member, answering or not (a member that stopped
        answering, or left the list, a moment ago): what it said still counts while younger
        than the evidence age, so a hand-over leaves no gap in the view."""
        members = [*self.others(), *self.departed.values()]
        return [m.shard for m in members if m.shard is not None and not m.is_self]

    @property
    def partial(self) -> bool:
        return any(m.state != "live" for m in self.members.values())

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("refreshing the group of %s failed", self.vantage)
            if self.on_change is not None:
                self.on_change()
            # Each member is asked at most MAX_FETCH_RATE times a second in all: a group too
            # large for one round per refresh is asked less often (linear traffic).
            period = max(self.config.refresh, len(self.others()) / MAX_FETCH_RATE)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def refresh(self) -> None:
        """One round: resolve the list (keeping the last one when that fails), then ask every
        listed member for its shard."""
        listed = await self.resolve()
        if listed is not None:
            self.listed = True
            kept = {url: self.members.get(url, Member(url)) for url, _ in listed}
            now = time.time()
            for url, member in self.members.items():
                if url not in kept and member.shard is not None:
                    self.departed[url] = member
            self.departed = {
                url: m
                for url, m in self.departed.items()
                if url not in kept and now - (m.fetched_at or 0.0) < DEPARTED_KEPT
            }
            self.members = {url: replace(kept[url], server_hostname=host) for url, host in listed}
        if not self.members:
            return
        semaphore = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(member: Member) -> None:
            async with semaphore:
                self.members[member.url] = await self.fetch(member)

        self._rounds += 1
        async with asyncio.TaskGroup() as tg:
            for member in list(self.members.values()):
                if member.is_self and self._rounds % SELF_EVERY and self.ready is not None:
                    # Found already: this member knows its own readiness without asking
                    # itself. Asked again now and then, in case the address changed hands.
                    self.members[member.url] = replace(
                        member,
                        state="live" if self.ready() else "not_ready",
                        fetched_at=time.time(),
                    )
                    continue
                tg.create_task(one(member))
        self._check_duplicates()

    async def resolve(self) -> list[tuple[str, str | None]] | None:
        """The listed members as (base URL, TLS server name); None when the list cannot be
        had now (the last one stays)."""
        if self.config.members is not None:
            return [(url, None) for url in self.config.members]
        assert self.config.srv is not None
        try:
            found = await resolve_srv(
                self.config.srv,
                self.config.nameservers,
                scheme=self.config.scheme,
                budget=self.config.timeout,
            )
        except Exception as exc:  # dnspython raises many kinds; none may stop the group
            error = excerpt(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS, unprintable=" ")
            if self._resolve_error is None:
                log.warning(
                    "cannot resolve the group's SRV name %s (keeping the last list): %s",
                    self.config.srv,
                    error,
                )
            self._resolve_error = error
            return None
        if self._resolve_error is not None:
            log.info("the group's SRV name %s resolves again", self.config.srv)
            self._resolve_error = None
        return found[:MAX_MEMBERS]

    async def fetch(self, member: Member) -> Member:
        assert self.http is not None, "the poller needs a session to fetch"
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        if member.etag is not None and member.shard is not None:
            headers["If-None-Match"] = member.etag
        ssl = ssl_context(self.config.ca_file) if member.url.startswith("https://") else None
        try:
            async with (
                asyncio.timeout(self.config.timeout),
                self.http.get(
                    member.url + "/v1/view",
                    params={"scope": "member"},
                    headers=headers,
                    ssl=ssl if ssl is not None else True,
                    server_hostname=member.server_hostname if ssl is not None else None,
                    allow_redirects=False,
                ) as response,
            ):
                now = time.time()
                if response.status == 304 and member.shard is not None:
                    self._count("unchanged", member)
                    return replace(member, state="live", fetched_at=now, error=None)
                if response.status == 503:
                    self._count("error", member)
                    return replace(member, state="not_ready", error="not ready (HTTP 503)")
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await read_bounded(response, MAX_SHARD_BYTES)
                etag = response.headers.get("ETag")
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                raise ValueError(f"not JSON ({len(body)} bytes)") from None
            shard = Shard.from_json(data, vantage=self.vantage, received_at=now)
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = classify(exc)[1]
        except Exception as exc:  # a bad answer is that member's fault: it is unreachable
            error = f"bad shard: {exc}"
        else:
            self._count("changed", member)
            if member.state != "live" and member.fetched_at is not None:
                log.info("group member %s (%s) answers again", shard.member, member.url)
            return Member(
                url=member.url,
                state="live",
                name=shard.member,
                instance=shard.instance,
                shard=shard,
                fetched_at=now,
                etag=etag if etag is not None and len(etag) <= 128 else None,
                is_self=shard.instance == self.instance,
                server_hostname=member.server_hostname,
            )
        self._count("error", member)
        error = excerpt(" ".join(error.split()), MAX_ERROR_CHARS, unprintable=" ")
        if member.state == "live":
            log.warning("group member %s (%s) does not answer: %s", member.name, member.url, error)
        # Its last shard is kept (a new owner of its sites starts from it), not used.
        return replace(member, state="unreachable", error=error, etag=None)

    def _count(self, outcome: str, member: Member) -> None:
        # The requests to the others: what the group's traffic is (a member asks itself only
        # to find itself in the list, and then once every SELF_EVERY rounds).
        if not member.is_self:
            self.stats.fetches[outcome] += 1

    def _check_duplicates(self) -> None:
        by_name: dict[str, set[str]] = {}
        for m in self.members.values():
            if m.state == "live" and m.name is not None and m.instance is not None:
                by_name.setdefault(m.name, set()).add(m.instance)
        for name, instances in by_name.items():
            if len(instances) > 1 and name not in self._warned_duplicate:
                self._warned_duplicate.add(name)
                log.warning(
                    "%d group members call themselves %r: they run the same checks (set a "
                    "unique agent.group.member)",
                    len(instances),
                    name,
                )


async def resolve_srv(
    name: str, nameservers: Sequence[str], *, scheme: str, budget: float
) -> list[tuple[str, str | None]]:
    """The members an SRV name lists, as (base URL by address, target name), in a stable order.
    A target's addresses are resolved with the same resolver: the agent's own host resolver
    may not know the names the group's DNS publishes."""
    import dns.asyncresolver
    import dns.rdatatype
    import dns.resolver

    resolver = dns.asyncresolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [parse_nameserver(n)[0] for n in nameservers]
        resolver.nameserver_ports = {
            parse_nameserver(n)[0]: parse_nameserver(n)[1] for n in nameservers
        }
    deadline = time.monotonic() + budget

    def left() -> float:
        return max(0.01, deadline - time.monotonic())

    try:
        answer = await resolver.resolve(name, "SRV", lifetime=left())
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []  # no member published (yet): an empty group, not an error
    # The targets' addresses usually come with the answer (CoreDNS adds them): one query a
    # round rather than one per member.
    given: dict[str, list[str]] = {}
    for rrset in answer.response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            name_ = rrset.name.to_text(omit_final_dot=True).lower()
            given.setdefault(name_, []).extend(sorted(r.to_text() for r in rrset))
    out: list[tuple[str, str | None]] = []
    for record in sorted(answer, key=lambda r: (str(r.target), r.port)):
        target = record.target.to_text(omit_final_dot=True)
        addresses: list[str] = given.get(target.lower(), [])
        for rdtype in () if addresses else ("A", "AAAA"):
            try:
                found = await resolver.resolve(target, rdtype, lifetime=left())
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            addresses += sorted(r.to_text() for r in found)
            if addresses:
                break
        for address in addresses[:1]:
            host = f"[{address}]" if ":" in address else address
            out.append((f"{scheme}://{host}:{record.port}", target))
    return out


# --- the merged view --------------------------------------------------------------------------


def merge_view(
    own: VantageView,
    own_shard: Shard,
    poller: GroupPoller,
    *,
    evidence_ages: Mapping[str, float],
    now: float,
) -> VantageView:
    """The group's view: each site from the member with its newest evidence (this member's own
    shard included, and what a member that stopped answering last said); a site with critical
    checks that no member has evidence younger than its evidence age for is missing.
    `evidence_ages`: for each site with critical checks, how old its newest run may be and
    still count."""
    shards = [own_shard] + [s for s in poller.last_words() if s.instance != own_shard.instance]
    live = [m.shard for m in poller.others() if m.state == "live" and m.shard is not None]
    sites: dict[str, SiteOpinion] = {}
    missing: set[str] = set()
    for site in own.sites:
        max_age = evidence_ages.get(site)
        best: SiteOpinion | None = None
        for shard in shards:
            opinion = shard.sites.get(site)
            if opinion is None or opinion.last_run_at is None:
                continue
            if best is None or (best.last_run_at or 0.0) < opinion.last_run_at:
                best = opinion
        fresh = (
            best is not None
            and best.last_run_at is not None
            and (max_age is None or now - best.last_run_at <= max_age)
        )
        if best is not None and fresh:
            sites[site] = best
        elif max_age is None:
            sites[site] = own.sites[site]  # no critical check: nothing to be missing
        else:
            # Shown as last seen (or as this member's own when nobody saw it): the verdict
            # reads `missing`, and what a person or an older peer reads is no made-up `up`.
            missing.add(site)
            sites[site] = best if best is not None else own.sites[site]
    checks = [len(s.checks) for s in (own_shard, *live)]
    opinions = [o for site, o in sites.items() if site not in missing]
    every_failing = (
        len(own.sites) >= 2
        and not missing
        and all(o.failures > 0 and o.last_run_at is not None for o in opinions)
    )
    self_checks = [s.self_check for s in (own_shard, *live) if s.self_check is not None]
    members = []
    for m in sorted(poller.members.values(), key=lambda m: (m.name or "", m.url)):
        # This member's own entry is what it is now, not what it answered itself last.
        part = own_shard if m.is_self else m.shard if m.state == "live" else None
        members.append(
            {
                "name": m.name,
                "url": m.url,
                "self": m.is_self,
                "state": m.state,
                "age_seconds": None
                if m.fetched_at is None
                else round(max(0.0, now - m.fetched_at), 3),
                "checks_owned": len(part.checks) if part is not None else None,
                "sites": sorted(s for s, o in part.sites.items() if o.last_run_at is not None)
                if part is not None
                else [],
                "error": m.error,
            }
        )
    if not any(m.is_self for m in poller.members.values()):
        # Not in the list (yet): this member still contributes its own shard.
        members.insert(
            0,
            {
                "name": own_shard.member,
                "url": None,
                "self": True,
                "state": "unlisted",
                "age_seconds": 0.0,
                "checks_owned": len(own_shard.checks),
                "sites": sorted(s for s, o in own_shard.sites.items() if o.last_run_at),
                "error": None,
            },
        )
    group: dict[str, object] = {
        "member": own_shard.member,
        "partial": bool(missing) or poller.partial,
        "live_members": sum(1 for m in members if m["state"] == "live"),
        "checks": sum(checks),
        "members": members,
    }
    return replace(
        own,
        sites=MappingProxyType(sites),
        every_site_failing=every_failing,
        self_check=None if not self_checks else any(self_checks),
        missing=frozenset(missing),
        group=MappingProxyType(group),
    )


def evidence_ages(checks: Iterable[Check], refresh: float) -> dict[str, float]:
    """For each site with critical checks: how old its newest run may be and still count."""
    longest: dict[str, float] = {}
    for c in checks:
        if c.critical and c.site is not None:
            longest[c.site] = max(longest.get(c.site, 0.0), c.interval + c.timeout)
    return {site: EVIDENCE_INTERVALS * t + refresh for site, t in longest.items()}


def seed(view: SiteView, opinion: SiteOpinion, *, flap_threshold: float) -> SiteView:
    """A site's view for a member taking it over, from the previous owner's last opinion: its
    failures keep counting from where they were rather than from zero."""
    if view.last_run_at is not None and (opinion.last_run_at or 0.0) <= view.last_run_at:
        return view
    return SiteView(
        state=opinion.state,
        since=opinion.since,
        failures=opinion.failures,
        successes=opinion.successes,
        evidence=opinion.evidence,
        last_run_at=opinion.last_run_at,
        penalty=flap_threshold if opinion.flapping else 0.0,
        penalty_at=opinion.last_run_at or 0.0,
        flapping=opinion.flapping,
        episode_since=opinion.episode_since,
    )


def latest_results(local: Mapping[str, Result], poller: GroupPoller | None) -> dict[str, Result]:
    """Every check's latest result known to this member: its own, and the live members'
    shared ones; the newest wins where both exist (a check that changed owner)."""
    out = dict(local)
    if poller is None:
        return out
    for m in poller.others():
        if m.state != "live" or m.shard is None:
            continue
        for r in m.shard.results:
            mine = out.get(r.check)
            if mine is None or mine.started_at < r.started_at:
                out[r.check] = r
    return out
