"""The agents group: alerts about failsight itself (a vantage gone silent, a failing telemetry
path).

It exists because these watch the watchers: when they fire, the other groups' evidence is
incomplete, whatever those alerts say.
"""

from __future__ import annotations

from failsight.agent.rules.common import WARNING, Rule, RuleContext, number, quote

__all__ = ["agent_rules"]

TELEMETRY_FAILURE_SHARE = 0.5


def agent_rules(ctx: RuleContext) -> list[Rule]:
    silent = "\nor\n".join(
        f"absent_over_time(failsight_agent_info{{vantage={quote(v)}}}[2m])"
        for v in sorted(ctx.inp.vantages)
    )
    exports = "failsight_telemetry_exports_total"
    return [
        ctx.alert(
            "FailsightVantageSilent",
            silent,
            for_="1m",
            severity=WARNING,
            summary="Vantage {{ $labels.vantage }} stopped reporting",
            description=(
                "No failsight_agent_info from {{ $labels.vantage }} for 3 minutes: its"
                " agent or the path to Prometheus is down, and its views no longer vote."
            ),
        ),
        ctx.alert(
            "FailsightTelemetryPathFailing",
            "(\n"
            f'  sum by (vantage, path) (rate({exports}{{result=~"failure|dropped"}}[10m]))\n'
            "  /\n"
            f"  sum by (vantage, path) (rate({exports}[10m]))\n"
            f") > {number(TELEMETRY_FAILURE_SHARE)}",
            for_="5m",
            severity=WARNING,
            summary="Telemetry path {{ $labels.path }} of {{ $labels.vantage }} is failing",
            description=(
                "{{ $value | humanizePercentage }} of the exports on {{ $labels.path }} failed"
                " or were dropped over 10 minutes; the other path still carries the data."
            ),
        ),
    ]
