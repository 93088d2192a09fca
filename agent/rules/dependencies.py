"""The replication and dependency groups: data safety of the standbys (lag against the RPO,
streaming, split brain) and the shared dependencies that make a site look down when it is not
(identity provider, DNS, TLS certificates).

It exists because these alerts explain a failover verdict (or its refusal) rather than make it:
they read one kind's evidence each and do not depend on the failover rules.
"""

from __future__ import annotations

from failsight.agent.rules.common import (
    CRITICAL,
    IMPAIRED,
    WARNING,
    Rule,
    RuleContext,
    indent,
    number,
    quote,
)

__all__ = ["dependency_rules", "replication_rules"]

CERT_WARNING_DAYS = 14


def replication_rules(ctx: RuleContext) -> list[Rule]:
    lag_branches = []
    for cluster, _, replica, rpo in sorted(ctx.inp.replication):
        pair = f"cluster={quote(cluster)}, replica={quote(replica)}"
        lag_branches.append(
            "max by (cluster, replica) (failsight_replication_lag_seconds"
            f'{{{pair}, method="heartbeat"}}) > {number(rpo)}'
        )
    rules = []
    if lag_branches:
        rules.append(
            ctx.alert(
                "FailsightReplicationLagAboveRPO",
                "\nor\n".join(f"({b})" for b in lag_branches),
                for_="2m",
                severity=WARNING,
                summary="{{ $labels.replica }} of {{ $labels.cluster }} lags beyond the RPO",
                description=(
                    "The heartbeat lag of replica {{ $labels.replica }} is"
                    " {{ $value | humanizeDuration }}, above the RPO of cluster"
                    " {{ $labels.cluster }}: failing over to it now would lose data."
                ),
            )
        )
    rules += [
        ctx.alert(
            "FailsightReplicaNotStreaming",
            "min by (cluster, replica) (failsight_replication_streaming) == 0",
            for_="2m",
            severity=WARNING,
            summary="{{ $labels.replica }} of {{ $labels.cluster }} is not streaming",
            description=(
                "Replica {{ $labels.replica }} does not stream WAL from the primary of"
                " {{ $labels.cluster }}; its lag will grow until it reconnects."
            ),
        ),
        ctx.alert(
            "FailsightSplitBrain",
            'max by (cluster, replica) (failsight_replication_writable{role="replica"}) == 1\n'
            "and on (cluster, replica)\n"
            'max by (cluster, replica) (failsight_replication_writable{role="primary"}) == 1',
            for_="1m",
            severity=CRITICAL,
            summary="Split brain in {{ $labels.cluster }}: two writable primaries",
            description=(
                "Replica {{ $labels.replica }} has left recovery and accepts writes while the"
                " primary of {{ $labels.cluster }} still does. Writes are diverging; stop one"
                " of them."
            ),
        ),
    ]
    return rules


def dependency_rules(ctx: RuleContext) -> list[Rule]:
    q = ctx.quorum
    return [
        ctx.alert(
            "FailsightIdPDown",
            f"count by (idp) (\n{indent(ctx.votes_of('failsight_idp_up', 'idp'))} == 0\n) >= {q}",
            for_="2m",
            severity=CRITICAL,
            summary="Identity provider {{ $labels.idp }} is down",
            description=(
                f"{{{{ $value }}}} vantages (at least {q}) fail to obtain or validate a token"
                " from {{ $labels.idp }}: every site that depends on it will look down."
            ),
        ),
        ctx.alert(
            "FailsightDNSMisrouted",
            "min by (name, resolver) (\n"
            f"  failsight_dns_answer_match{{vantage=~{ctx.vantages}}}\n"
            f"  unless on (vantage) ({IMPAIRED})\n"
            ") == 0",
            for_="2m",
            severity=CRITICAL,
            summary="{{ $labels.name }} does not resolve where it should",
            description=(
                "Resolver {{ $labels.resolver }} answers {{ $labels.name }} with addresses"
                " that are not those of the site it should point at now."
            ),
        ),
        ctx.alert(
            "FailsightCertExpiringSoon",
            "min by (target) (failsight_tls_cert_not_after_timestamp_seconds) - time()\n"
            f"< {CERT_WARNING_DAYS} * 86400",
            for_="10m",
            severity=WARNING,
            summary="The certificate of {{ $labels.target }} expires soon",
            description=(
                "A certificate served by {{ $labels.target }} expires in"
                f" {{{{ $value | humanizeDuration }}}} (warning at {CERT_WARNING_DAYS} days)."
            ),
        ),
    ]
