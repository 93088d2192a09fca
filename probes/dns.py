"""DNS checks: does a global name, asked of one resolver, point at the site it should?"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from failsight.core.check import Check, ProbeContext, Run
from failsight.core.configtypes import Duration, Interval, Model, Name, Placed, Scheduled, Timeout
from failsight.core.kind import Env, Kind, Loc
from failsight.core.redact import excerpt
from failsight.core.results import Measurement, Reason, Remark, Result
from failsight.core.telemetry import MetricSpec, MetricType

if TYPE_CHECKING:
    import dns.message
    import dns.rdatatype

# dnspython (3 MB of RSS, 70 ms) is imported where it is used, so an agent whose config has no
# `dns` section never loads it (tests/agent/test_footprint.py).

DNS_ANSWER_MATCH = MetricSpec(
    "dns_answer_match",
    MetricType.GAUGE,
    "1 if the answers match what is expected now.",
    ("name", "resolver"),
)
DNS_RESOLVED_SITE = MetricSpec(
    "dns_resolved_site",
    MetricType.GAUGE,
    "The site the name resolves to (value 1).",
    ("name", "resolver", "site"),
)
# A resolver may answer with thousands of records (over TCP): facts and messages list this many.
MAX_ANSWERS_SHOWN = 20


def normalise_answer(value: str) -> str:
    """The form answers are compared in: addresses canonical, names lower-case without the root dot.

    Raises ValueError for text that is neither an IP address nor a DNS name.
    """
    text = value.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text or text == ".":
        raise ValueError(f"{value!r} is neither an IP address nor a DNS name")
    import dns.exception
    import dns.name

    try:
        name = dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ValueError(f"{value!r} is neither an IP address nor a DNS name: {exc}") from None
    return name.to_text(omit_final_dot=True).lower()


def _dns_name(value: str) -> str:
    if not value.strip(".") or value != value.strip():
        raise ValueError("must be a DNS name such as orders.example.test")
    import dns.exception
    import dns.name

    try:
        dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ValueError(f"invalid DNS name {value!r}: {exc}") from None
    return value


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address: a resolver is asked directly, by address"
        ) from None


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


DnsName = Annotated[str, AfterValidator(_dns_name)]
RecordType = Annotated[Literal["A", "AAAA", "CNAME"], BeforeValidator(_upper)]


class DnsResolverConfig(Model):
    """One resolver to ask. `recursion: false` clears the RD bit: an authoritative query."""

    name: Name
    address: Annotated[str, AfterValidator(_ip_address)]
    port: int = Field(default=53, ge=1, le=65535)
    recursion: bool = True


class DnsConfig(Scheduled, Placed):
    """One global name, the resolvers to ask, and which answer means which site."""

    name: DnsName
    record_type: RecordType = "A"
    interval: Interval = 30.0
    timeout: Timeout = 2.0
    # A TTL above this still works but slows failover: reported as a warning, not a failure.
    ttl_ceiling: Duration | None = None
    expect_site: Name | None = None
    resolvers: list[DnsResolverConfig] = Field(min_length=1)
    # Per site, the addresses or CNAME targets that mean "the name points at this site".
    answers: dict[Name, list[str]] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DnsConfig:
        seen_resolvers: set[str] = set()
        for resolver in self.resolvers:
            if resolver.name in seen_resolvers:
                raise ValueError(f"resolver {resolver.name!r} is listed twice")
            seen_resolvers.add(resolver.name)
        owner: dict[str, str] = {}
        for site, values in self.answers.items():
            if not values:
                raise ValueError(f"answers.{site}: list at least one address or CNAME target")
            for value in values:
                key = normalise_answer(value)
                if self.record_type == "CNAME" and _is_address(key):
                    raise ValueError(
                        f"answers.{site}: {value!r} is an address, but a CNAME query only "
                        "returns names"
                    )
                if key in owner and owner[key] != site:
                    raise ValueError(
                        f"answer {value!r} is listed for both {owner[key]} and {site}: "
                        "it must mean one site"
                    )
                owner[key] = site
        if self.expect_site is not None and self.expect_site not in self.answers:
            raise ValueError(f"expect_site {self.expect_site!r} has no entry under answers")
        return self

    def site_of(self) -> dict[str, str]:
        """Normalised answer -> site."""
        return {normalise_answer(v): site for site, values in self.answers.items() for v in values}


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _wanted(record_type: str) -> tuple[dns.rdatatype.RdataType, ...]:
    """The record types that answer a query of `record_type`: the CNAME chain with them."""
    import dns.rdatatype

    wanted = {
        "A": (dns.rdatatype.CNAME, dns.rdatatype.A),
        "AAAA": (dns.rdatatype.CNAME, dns.rdatatype.AAAA),
        "CNAME": (dns.rdatatype.CNAME,),
    }
    return wanted[record_type]


class DnsCheck(Check):
    """One global name asked of one resolver."""

    kind = "dns"

    def __init__(
        self, cfg: DnsConfig, resolver: DnsResolverConfig, *, expect_site: str | None
    ) -> None:
        if expect_site is not None and expect_site not in cfg.answers:
            raise ValueError(
                f"dns {cfg.name}: expected site {expect_site!r} has no entry under answers"
            )
        super().__init__(
            name=f"dns/{cfg.name}/{resolver.name}",
            target=cfg.name,
            interval=cfg.interval,
            # The probe bounds itself with cfg.timeout, so a slow resolver ends as this probe's
            # `timeout` result with facts rather than as a cut-off run.
            budget=cfg.timeout,
            site=None,
            placement=cfg.placement,
        )
        self.cfg = cfg
        self.resolver = resolver
        self.expect_site = expect_site
        self._site_of = cfg.site_of()
        self._sites_in_order = list(cfg.answers)

    def _query(self) -> dns.message.Message:
        import dns.flags
        import dns.message
        import dns.rdatatype

        query = dns.message.make_query(self.cfg.name, dns.rdatatype.from_text(self.cfg.record_type))
        if not self.resolver.recursion:
            query.flags &= ~dns.flags.RD
        return query

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        facts: dict[str, object] = {
            "name": self.cfg.name,
            "resolver": self.resolver.name,
            "rcode": None,
            "answers": [],
            "ttl": None,
            "latency_seconds": None,
            "resolved_sites": [],
            "expected_site": self.expect_site,
            "match": False,
            "warnings": [],
        }
        where = f"{self.resolver.name} ({self.resolver.address}#{self.resolver.port})"
        import dns.asyncquery
        import dns.exception

        try:
            # A fresh query to the resolver itself every run: nothing is cached between runs.
            remaining = run.remaining()
            async with asyncio.timeout(remaining):
                response, _used_tcp = await dns.asyncquery.udp_with_fallback(
                    self._query(),
                    self.resolver.address,
                    timeout=remaining,
                    port=self.resolver.port,
                )
        except (TimeoutError, dns.exception.Timeout):
            failure = (
                Reason.TIMEOUT,
                f"{self.cfg.name}: no answer from {where} within {self.cfg.timeout:g}s",
            )
        except OSError as exc:
            failure = (
                Reason.CONNECT,
                f"{self.cfg.name}: cannot reach {where}: {exc.strerror or exc}",
            )
        except EOFError:
            # dnspython's TCP read (after a truncated UDP answer) raises the builtin EOFError
            # when the resolver closes the connection before a whole answer.
            failure = (
                Reason.DNS,
                f"{self.cfg.name}: {where} sent a truncated answer over UDP and closed the TCP "
                "connection before a whole one",
            )
        except dns.exception.DNSException as exc:
            failure = (
                Reason.DNS,
                f"{self.cfg.name}: unusable answer from {where}: {excerpt(str(exc), 200)}",
            )
        else:
            facts["latency_seconds"] = round(run.elapsed(), 6)
            return self._judge(response, run, facts, where)
        return self._result(run, facts, *failure)

    def _judge(
        self,
        response: dns.message.Message,
        run: Run,
        facts: dict[str, object],
        where: str,
    ) -> Result:
        import dns.rcode

        rcode = dns.rcode.to_text(response.rcode())
        facts["rcode"] = rcode
        if response.rcode() != dns.rcode.NOERROR:
            return self._result(
                run,
                facts,
                Reason.DNS,
                f"{self.cfg.name}: {rcode} from {where}",
            )
        answers, ttl = _answers(response, _wanted(self.cfg.record_type))
        facts["answers"] = answers[:MAX_ANSWERS_SHOWN]
        facts["ttl"] = ttl
        warnings: list[str] = []
        if ttl is not None and self.cfg.ttl_ceiling is not None and ttl > self.cfg.ttl_ceiling:
            warnings.append(
                f"TTL {ttl}s is above the ceiling of {self.cfg.ttl_ceiling:g}s: "
                "resolvers keep the old answer that long after a failover"
            )
        facts["warnings"] = warnings
        if not answers:
            return self._result(
                run,
                facts,
                Reason.DNS,
                f"{self.cfg.name}: no {self.cfg.record_type} records from {where} "
                f"(NOERROR, empty answer)",
            )
        found = {self._site_of[a] for a in answers if a in self._site_of}
        sites = [s for s in self._sites_in_order if s in found]
        facts["resolved_sites"] = sites
        if not sites:
            return self._result(
                run,
                facts,
                Reason.ASSERTION,
                f"{self.cfg.name} resolves to {_listed(answers)}, which is no configured site",
                sites=sites,
            )
        if self.expect_site is not None and sites != [self.expect_site]:
            return self._result(
                run,
                facts,
                Reason.ASSERTION,
                f"{self.cfg.name} resolves to {', '.join(sites)}, expected {self.expect_site}",
                sites=sites,
            )
        facts["match"] = True
        return self._result(run, facts, None, "", sites=sites)

    def _result(
        self,
        run: Run,
        facts: dict[str, object],
        reason: Reason | None,
        message: str,
        *,
        sites: Sequence[str] = (),
    ) -> Result:
        labels = {"name": self.cfg.name, "resolver": self.resolver.name}
        measurements = [
            Measurement(DNS_ANSWER_MATCH.name, labels, 1.0 if reason is None else 0.0),
            *(Measurement(DNS_RESOLVED_SITE.name, {**labels, "site": s}, 1.0) for s in sites),
        ]
        return self.result(
            run,
            ok=reason is None,
            reason=reason,
            message=message,
            measurements=tuple(measurements),
            facts=facts,
            evidence=(*self.standing_evidence, *self._remarks(reason is None, message, sites)),
        )

    def _remarks(self, ok: bool, message: str, sites: Sequence[str]) -> Iterator[Remark]:
        """For each site's verdict: where the name points, or that it does not point at the
        site it should."""
        resolver = self.resolver.name
        for site in sites:
            yield Remark(site, f"DNS: {self.cfg.name} resolves to {site} (resolver {resolver})")
        if not ok and self.expect_site is not None and self.expect_site not in sites:
            # The message as the API shows it: with every secret the process holds redacted.
            yield Remark(
                self.expect_site,
                f"DNS: {self.cfg.name} should resolve to {self.expect_site} but "
                f"{message or 'does not'} (resolver {resolver})",
            )


def _answers(
    response: dns.message.Message, wanted: tuple[dns.rdatatype.RdataType, ...]
) -> tuple[list[str], int | None]:
    """The normalised answers of the wanted types (the CNAME chain included) and the lowest
    TTL among them: how long a resolver may keep serving this answer."""
    answers: list[str] = []
    seen: set[str] = set()
    ttls: list[int] = []
    for rrset in response.answer:
        if rrset.rdtype not in wanted:
            continue
        ttls.append(int(rrset.ttl))
        for rdata in rrset:
            text = rdata.to_text()
            try:
                value = normalise_answer(text)
            except ValueError:
                # The resolver's bytes: a CNAME to the root (`.`) is no answer this config
                # could list; keep it, as written, so that it is reported as no site.
                value = text
            if value not in seen:
                seen.add(value)
                answers.append(value)
    return answers, (min(ttls) if ttls else None)


def _listed(answers: Sequence[str]) -> str:
    """Answers for a message: the first MAX_ANSWERS_SHOWN, and how many more."""
    shown = ", ".join(excerpt(a, 255) for a in answers[:MAX_ANSWERS_SHOWN])
    more = len(answers) - MAX_ANSWERS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def plan(section: Sequence[DnsConfig], env: Env) -> list[Check]:
    """One check per name and resolver. A name with no `expect_site` should point at the
    primary site, when the answers say which addresses that is."""
    primaries = [s.name for s in env.sites if s.role == "primary"]
    checks: list[Check] = []
    for name in section:
        expect = name.expect_site
        if expect is None:
            expect = next((p for p in primaries if p in name.answers), None)
        checks.extend(DnsCheck(name, resolver, expect_site=expect) for resolver in name.resolvers)
    return checks


def check_config(section: Sequence[DnsConfig], env: Env) -> Iterator[tuple[Loc, str]]:
    """Every site an `answers` key names must be configured."""
    for index, name in enumerate(section):
        for site in name.answers:
            if site not in env.site_names:
                yield (index, "answers", site), f"unknown site {site!r}"


KIND = Kind(
    name=DnsCheck.kind,
    key="dns",
    model=DnsConfig,
    plan=plan,
    summary="where a global DNS name points, per resolver: the site it should",
    metrics=(DNS_ANSWER_MATCH, DNS_RESOLVED_SITE),
    naming=("dns name", lambda name: name.name),
    check_config=check_config,
    dependency_group="dns",
)
