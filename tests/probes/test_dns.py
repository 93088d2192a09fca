"""DNS checks against a real dnsmasq on loopback: site mapping, rcodes, timeouts, TTL ceiling."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from pydantic import ValidationError

from failsight.core.check import ProbeContext
from failsight.core.kind import Env, SiteRef
from failsight.core.results import Measurement, Reason, Remark, Result
from failsight.probes.dns import KIND, DnsCheck, DnsConfig, DnsResolverConfig

if TYPE_CHECKING:
    from tests.fixtures.dnsmasq import Dnsmasq

# Imported by pytest itself, after this module, so that its asserts are rewritten.

NAME = "orders.example.test"
AWS = "10.1.0.10"
GCP = "10.2.0.10"

MakeDnsmasq = Callable[..., "Dnsmasq"]


@pytest.fixture
async def ctx() -> Any:
    async with aiohttp.ClientSession() as http:
        yield ProbeContext(vantage="test", http=http)


def config(server: Dnsmasq, **overrides: Any) -> DnsConfig:
    raw: dict[str, Any] = {
        "name": NAME,
        "timeout": "1s",
        "resolvers": [
            {"name": "local", "address": server.address, "port": server.port, "recursion": True}
        ],
        "answers": {"aws-use1": [AWS], "gcp-euw1": [GCP]},
    }
    raw.update(overrides)
    return DnsConfig.model_validate(raw)


def check_for(cfg: DnsConfig, expect_site: str | None = "aws-use1") -> DnsCheck:
    return DnsCheck(cfg, cfg.resolvers[0], expect_site=expect_site)


def env(**roles: str) -> Env:
    return Env(
        vantage="test",
        sites=tuple(
            SiteRef(name, role, f"https://{name}.example.test") for name, role in roles.items()
        ),
    )


def measurements(result: Result) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def key(m: Measurement) -> tuple[str, tuple[tuple[str, str], ...]]:
        return m.name, tuple(sorted(m.labels.items()))

    return {key(m): m.value for m in result.measurements}


def match_series(value: float) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {("dns_answer_match", (("name", NAME), ("resolver", "local"))): value}


def site_series(site: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {("dns_resolved_site", (("name", NAME), ("resolver", "local"), ("site", site))): 1.0}


async def test_answer_for_expected_site_is_a_match(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS]})
    check = check_for(config(server))

    result = await check.run(ctx)

    assert result.ok, result.message
    assert (result.check, result.kind, result.target, result.site) == (
        f"dns/{NAME}/local",
        "dns",
        NAME,
        None,
    )
    assert result.facts["rcode"] == "NOERROR"
    assert result.facts["answers"] == [AWS]
    assert result.facts["resolved_sites"] == ["aws-use1"]
    assert result.facts["expected_site"] == "aws-use1"
    assert result.facts["match"] is True
    assert result.facts["ttl"] == 0  # dnsmasq's default for local names
    latency = result.facts["latency_seconds"]
    assert isinstance(latency, float) and 0 < latency < 1
    assert result.facts["warnings"] == []
    assert measurements(result) == match_series(1.0) | site_series("aws-use1")


async def test_results_carry_remarks_for_the_sites_verdicts(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS]})
    check = check_for(config(server, timeout="0.5s"))

    resolving = await check.run(ctx)
    assert resolving.ok, resolving.message
    assert resolving.evidence == (
        Remark("aws-use1", f"DNS: {NAME} resolves to aws-use1 (resolver local)"),
    )

    # Pointing elsewhere: where it points, and that the expected site is not where.
    server.write_hosts({NAME: [GCP]})
    server.reload()
    misrouted = await check.run(ctx)
    assert not misrouted.ok
    assert misrouted.evidence == (
        Remark("gcp-euw1", f"DNS: {NAME} resolves to gcp-euw1 (resolver local)"),
        Remark(
            "aws-use1",
            f"DNS: {NAME} should resolve to aws-use1 but {NAME} resolves to gcp-euw1, expected "
            "aws-use1 (resolver local)",
        ),
    )

    # Both sites' answers: the expected site is among them, so it gets no "should resolve".
    server.write_hosts({NAME: [AWS, GCP]})
    server.reload()
    both = await check.run(ctx)
    assert not both.ok
    assert both.evidence == (
        Remark("aws-use1", f"DNS: {NAME} resolves to aws-use1 (resolver local)"),
        Remark("gcp-euw1", f"DNS: {NAME} resolves to gcp-euw1 (resolver local)"),
    )

    # No answer at all: only the expected site hears of it.
    server.stop()
    stopped = await check.run(ctx)
    assert stopped.reason is Reason.TIMEOUT
    assert stopped.evidence == (
        Remark(
            "aws-use1",
            f"DNS: {NAME} should resolve to aws-use1 but {stopped.message} (resolver local)",
        ),
    )
    # With no expected site, a failure bears on no site.
    assert (
        await check_for(config(server, timeout="0.5s"), expect_site=None).run(ctx)
    ).evidence == ()


async def test_record_changed_and_reloaded_flips_the_resolved_site(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS]})
    check = check_for(config(server))
    assert (await check.run(ctx)).ok

    server.write_hosts({NAME: [GCP]})
    server.reload()
    result = await check.run(ctx)

    assert not result.ok
    assert result.reason is Reason.ASSERTION
    assert result.message == f"{NAME} resolves to gcp-euw1, expected aws-use1"
    assert result.facts["answers"] == [GCP]
    assert result.facts["resolved_sites"] == ["gcp-euw1"]
    assert result.facts["match"] is False
    assert measurements(result) == match_series(0.0) | site_series("gcp-euw1")

    # The same answer is a match for a check that expects the failover target.
    flipped = await check_for(config(server), expect_site="gcp-euw1").run(ctx)
    assert flipped.ok, flipped.message
    assert measurements(flipped) == match_series(1.0) | site_series("gcp-euw1")


async def test_answers_of_two_sites_do_not_match_one_expected_site(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS, GCP]})

    result = await check_for(config(server)).run(ctx)

    assert result.reason is Reason.ASSERTION
    assert result.message == f"{NAME} resolves to aws-use1, gcp-euw1, expected aws-use1"
    assert measurements(result) == (
        match_series(0.0) | site_series("aws-use1") | site_series("gcp-euw1")
    )
    # With no expected site, any configured site is a match.
    assert (await check_for(config(server), expect_site=None).run(ctx)).ok


async def test_answer_mapping_to_no_site_is_an_assertion_failure(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: ["10.9.9.9"]})

    result = await check_for(config(server), expect_site=None).run(ctx)

    assert result.reason is Reason.ASSERTION
    assert result.message == f"{NAME} resolves to 10.9.9.9, which is no configured site"
    assert result.facts["resolved_sites"] == []
    assert measurements(result) == match_series(0.0)


async def test_stopped_resolver_times_out_and_recovers(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS]})
    check = check_for(config(server, timeout="0.5s"))
    assert (await check.run(ctx)).ok

    server.stop()
    stopped = await check.run(ctx)

    assert not stopped.ok
    assert stopped.reason is Reason.TIMEOUT
    assert stopped.message == (
        f"{NAME}: no answer from local (127.0.0.1#{server.port}) within 0.5s"
    )
    assert stopped.facts["rcode"] is None
    assert stopped.facts["latency_seconds"] is None
    assert measurements(stopped) == match_series(0.0)

    server.start()
    assert (await check.run(ctx)).ok


async def test_paused_resolver_times_out(dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext) -> None:
    server = dnsmasq_factory({NAME: [AWS]})
    check = check_for(config(server, timeout="0.5s"))
    server.pause()
    try:
        result = await check.run(ctx)
    finally:
        server.resume()

    assert result.reason is Reason.TIMEOUT
    assert 0.4 < result.duration < 5


async def test_nxdomain(dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext) -> None:
    server = dnsmasq_factory({NAME: [AWS]})
    check = check_for(config(server, name="missing.example.test"))

    result = await check.run(ctx)

    assert result.reason is Reason.DNS
    assert result.facts["rcode"] == "NXDOMAIN"
    assert result.message == f"missing.example.test: NXDOMAIN from local (127.0.0.1#{server.port})"
    assert result.facts["answers"] == []


@pytest.mark.parametrize("recursion", [True, False])
async def test_refused_for_a_name_dnsmasq_does_not_serve(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext, recursion: bool
) -> None:
    # Outside --local=/test/ and with --no-resolv there is no upstream: dnsmasq says REFUSED,
    # with or without the RD bit (checked against dnsmasq 2.90).
    server = dnsmasq_factory({NAME: [AWS]})
    resolver = {"name": "local", "address": server.address, "port": server.port}
    cfg = config(server, name="orders.example.com", resolvers=[resolver | {"recursion": recursion}])

    result = await check_for(cfg).run(ctx)

    assert result.reason is Reason.DNS
    assert result.facts["rcode"] == "REFUSED"
    assert "REFUSED" in result.message


async def test_empty_answer_is_a_dns_failure(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS]})

    result = await check_for(
        config(server, record_type="AAAA", answers={"aws-use1": ["fd00::10"]})
    ).run(ctx)

    assert result.reason is Reason.DNS
    assert result.facts["rcode"] == "NOERROR"
    assert result.message == (
        f"{NAME}: no AAAA records from local (127.0.0.1#{server.port}) (NOERROR, empty answer)"
    )


async def test_aaaa_answers_compare_in_canonical_form(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: ["fd00:0:0::10"]})
    cfg = config(server, record_type="aaaa", answers={"aws-use1": ["FD00::0010"]})

    result = await check_for(cfg).run(ctx)

    assert result.ok, result.message
    assert result.facts["answers"] == ["fd00::10"]


@pytest.mark.parametrize("record_type", ["A", "CNAME"])
async def test_cname_target_maps_to_a_site(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext, record_type: str
) -> None:
    server = dnsmasq_factory(
        {"orders.aws.example.test": [AWS], "orders.gcp.example.test": [GCP]},
        cnames={NAME: "orders.aws.example.test"},
    )
    cfg = config(
        server,
        record_type=record_type,
        # Written with a trailing dot and in capitals: compared normalised.
        answers={"aws-use1": ["Orders.AWS.example.test."], "gcp-euw1": ["orders.gcp.example.test"]},
    )

    result = await check_for(cfg).run(ctx)

    assert result.ok, result.message
    answers = result.facts["answers"]
    assert isinstance(answers, list)
    assert answers[0] == "orders.aws.example.test"
    assert answers[1:] == ([AWS] if record_type == "A" else [])
    assert result.facts["resolved_sites"] == ["aws-use1"]

    misrouted = await check_for(cfg, expect_site="gcp-euw1").run(ctx)
    assert misrouted.reason is Reason.ASSERTION
    assert misrouted.message == f"{NAME} resolves to aws-use1, expected gcp-euw1"


async def test_ttl_above_ceiling_is_a_warning_not_a_failure(
    dnsmasq_factory: MakeDnsmasq, ctx: ProbeContext
) -> None:
    server = dnsmasq_factory({NAME: [AWS]}, local_ttl=300)

    result = await check_for(config(server, ttl_ceiling="60s")).run(ctx)

    assert result.ok, result.message
    assert result.facts["ttl"] == 300
    assert result.facts["warnings"] == [
        "TTL 300s is above the ceiling of 60s: resolvers keep the old answer that long after "
        "a failover"
    ]
    within = await check_for(config(server, ttl_ceiling="5m")).run(ctx)
    assert within.facts["warnings"] == []


def test_config_defaults() -> None:
    cfg = DnsConfig.model_validate(
        {
            "name": NAME,
            "resolvers": [{"name": "cloud-dns", "address": "127.0.0.1"}],
            "answers": {"aws-use1": [AWS]},
        }
    )
    assert (cfg.record_type, cfg.interval, cfg.timeout, cfg.ttl_ceiling, cfg.expect_site) == (
        "A",
        30.0,
        2.0,
        None,
        None,
    )
    assert cfg.resolvers[0] == DnsResolverConfig(name="cloud-dns", address="127.0.0.1")
    assert (cfg.resolvers[0].port, cfg.resolvers[0].recursion) == (53, True)
    check = DnsCheck(cfg, cfg.resolvers[0], expect_site="aws-use1")
    assert (check.name, check.interval, check.timeout) == (f"dns/{NAME}/cloud-dns", 30.0, 3.0)


VALID: dict[str, Any] = {
    "name": NAME,
    "resolvers": [{"name": "cloud-dns", "address": "127.0.0.1"}],
    "answers": {"aws-use1": [AWS], "gcp-euw1": [GCP]},
}


@pytest.mark.parametrize(
    ("change", "location", "message"),
    [
        ({"colour": "blue"}, ("colour",), "Extra inputs are not permitted"),
        (
            {"resolvers": [{"name": "r", "address": "127.0.0.1", "tcp": True}]},
            ("resolvers", 0, "tcp"),
            "Extra inputs are not permitted",
        ),
        ({"record_type": "MX"}, ("record_type",), "Input should be 'A', 'AAAA' or 'CNAME'"),
        (
            {"resolvers": [{"name": "r", "address": "dns.example.test"}]},
            ("resolvers", 0, "address"),
            "Value error, 'dns.example.test' is not an IP address: a resolver is asked "
            "directly, by address",
        ),
        ({"resolvers": []}, ("resolvers",), "List should have at least 1 item after validation"),
        ({"timeout": "soon"}, ("timeout",), "Value error, invalid duration 'soon'"),
        (
            {"expect_site": "azure-weu"},
            (),
            "Value error, expect_site 'azure-weu' has no entry under answers",
        ),
        (
            {"answers": {"aws-use1": [AWS], "gcp-euw1": [AWS]}},
            (),
            "Value error, answer '10.1.0.10' is listed for both aws-use1 and gcp-euw1",
        ),
        (
            {"record_type": "CNAME"},
            (),
            "Value error, answers.aws-use1: '10.1.0.10' is an address, but a CNAME query only "
            "returns names",
        ),
        (
            {"answers": {"aws-use1": []}},
            (),
            "Value error, answers.aws-use1: list at least one address or CNAME target",
        ),
        (
            {
                "resolvers": [
                    {"name": "r", "address": "127.0.0.1"},
                    {"name": "r", "address": "127.0.0.2"},
                ]
            },
            (),
            "Value error, resolver 'r' is listed twice",
        ),
        ({"name": "bad..name"}, ("name",), "Value error, invalid DNS name 'bad..name'"),
    ],
)
def test_config_rejects(change: dict[str, Any], location: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DnsConfig.model_validate(VALID | change)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == location
    assert errors[0]["msg"].startswith(message), errors[0]["msg"]


def test_plan_expects_the_primary_site_unless_told() -> None:
    told = DnsConfig.model_validate(
        VALID | {"name": "told.example.test", "expect_site": "gcp-euw1"}
    )
    other = DnsConfig.model_validate(VALID | {"answers": {"azure-weu": ["10.3.0.10"]}})
    two = {"resolvers": [{"name": "a", "address": "127.0.0.1"}, {"name": "b", "address": "::1"}]}
    default = DnsConfig.model_validate(VALID | two)

    checks = KIND.plan(
        [told, other, default], env(**{"gcp-euw1": "standby", "aws-use1": "primary"})
    )

    assert [(c.name, c.expect_site) for c in checks if isinstance(c, DnsCheck)] == [
        ("dns/told.example.test/cloud-dns", "gcp-euw1"),
        # The primary has no answers listed: no site is expected.
        (f"dns/{NAME}/cloud-dns", None),
        (f"dns/{NAME}/a", "aws-use1"),
        (f"dns/{NAME}/b", "aws-use1"),
    ]


def test_kind_describes_the_dns_section() -> None:
    assert (KIND.name, KIND.key, KIND.model, KIND.dependency_group) == (
        "dns",
        "dns",
        DnsConfig,
        "dns",
    )
    assert [m.name for m in KIND.metrics] == ["dns_answer_match", "dns_resolved_site"]
    assert KIND.naming is not None
    noun, name_of = KIND.naming
    assert (noun, name_of(DnsConfig.model_validate(VALID))) == ("dns name", NAME)


def test_answers_must_name_configured_sites() -> None:
    section = [
        DnsConfig.model_validate(VALID),
        DnsConfig.model_validate(VALID | {"answers": {"aws-use1": [AWS], "azure-weu": [GCP]}}),
    ]

    errors = list(KIND.check_config(section, env(**{"aws-use1": "primary"})))

    assert errors == [
        ((0, "answers", "gcp-euw1"), "unknown site 'gcp-euw1'"),
        ((1, "answers", "azure-weu"), "unknown site 'azure-weu'"),
    ]


def test_check_refuses_an_expected_site_without_answers() -> None:
    cfg = DnsConfig.model_validate(VALID)
    with pytest.raises(ValueError, match="expected site 'azure-weu' has no entry under answers"):
        DnsCheck(cfg, cfg.resolvers[0], expect_site="azure-weu")
