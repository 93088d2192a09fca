"""The SLO group: journey error and slowness ratios, error budgets and burn-rate alerts.

It exists because the burn-rate scheme (windows, factors, severities) is one design, from the SRE
workbook, that changes as a whole and independently of the failover logic.
"""

from __future__ import annotations

from failsight.agent.rules.common import (
    CRITICAL,
    IMPAIRED,
    WARNING,
    Rule,
    RuleContext,
    any_of,
    duration,
    indent,
    le_matcher,
    number,
    quote,
    record,
    seconds,
    template_text,
)
from failsight.agent.slo import SloConfig

__all__ = ["slo_rules"]

# The SRE workbook's multiwindow, multi-burn-rate alerts (chapter 5, table 5-8): a burn rate of
# 14.4 spends 2% of a 30-day budget in one hour. The short window of each pair makes the alert
# stop soon after the burn stops.
PAGE_BURNS = (("5m", "1h", 14.4), ("30m", "6h", 6.0))
TICKET_BURNS = (("2h", "1d", 3.0), ("6h", "3d", 1.0))
BURN_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def _ratio_window(ctx: RuleContext, metric: str, window: str, extra: str = "") -> str:
    selector = f"{{vantage=~{ctx.vantages}{extra}}}"
    return (
        f"sum by (site, journey) (\n"
        f"  rate({metric}{selector}[{window}])\n"
        f"  unless on (vantage) ({IMPAIRED})\n"
        f")"
    )


def _error_ratio(ctx: RuleContext, window: str) -> Rule:
    runs = "failsight_journey_runs_total"
    failures = _ratio_window(ctx, runs, window, ', result="failure"')
    total = _ratio_window(ctx, runs, window)
    # A journey that never failed has no failure series: count it as zero, not as no data.
    return record(
        f"failsight:journey_error_ratio:rate{window}",
        f"(\n{indent(failures)}\n  or\n  0 * {indent(total).lstrip()}\n)\n/\n{total}",
    )


def _slow_ratio(ctx: RuleContext, window: str, threshold: float) -> Rule:
    fast = _ratio_window(
        ctx, "failsight_journey_duration_seconds_bucket", window, ", " + le_matcher(threshold)
    )
    total = _ratio_window(ctx, "failsight_journey_duration_seconds_count", window)
    return record(
        f"failsight:journey_slow_ratio:rate{window}",
        f"1 - (\n{indent(fast)}\n  /\n{indent(total)}\n)",
        {"le": number(threshold)},
    )


def slo_rules(ctx: RuleContext) -> list[Rule]:
    slos = sorted(ctx.inp.slos, key=lambda s: s.name)
    budget_windows = {duration(s.window) for s in slos}
    windows = list(BURN_WINDOWS) + sorted(budget_windows - set(BURN_WINDOWS), key=seconds)
    thresholds = sorted({s.latency_threshold for s in slos if s.latency_threshold})
    rules = [_error_ratio(ctx, w) for w in windows]
    for threshold in thresholds:
        rules += [_slow_ratio(ctx, w, threshold) for w in windows]
    for slo in slos:
        ratio, selector = _slo_series(ctx, slo)
        rules.append(
            record(
                "failsight:slo_error_budget_remaining:ratio",
                f"1 - {ratio}:rate{duration(slo.window)}{selector} / {number(slo.error_budget)}",
                {"slo": slo.name},
            )
        )
    for slo in slos:
        rules += _burn_alerts(ctx, slo)
    return rules


def _slo_series(ctx: RuleContext, slo: SloConfig) -> tuple[str, str]:
    sites = any_of(ctx.inp.journey_sites[slo.journey])
    selector = f"journey={quote(slo.journey)}, site=~{sites}"
    if slo.latency_threshold is None:
        return "failsight:journey_error_ratio", f"{{{selector}}}"
    le = quote(number(slo.latency_threshold))
    return "failsight:journey_slow_ratio", f"{{{selector}, le={le}}}"


def _burn_alerts(ctx: RuleContext, slo: SloConfig) -> list[Rule]:
    ratio, selector = _slo_series(ctx, slo)
    budget = number(slo.error_budget)
    what = (
        "failed runs"
        if slo.kind == "availability"
        else f"runs slower than {number(slo.latency_threshold or 0)}s"
    )
    rules = []
    for severity, burns, for_ in (
        (CRITICAL, PAGE_BURNS, "2m"),
        (WARNING, TICKET_BURNS, "15m"),
    ):
        branches = [
            f"(\n  {ratio}:rate{short}{selector} > {number(factor)} * {budget}\n"
            f"  and\n  {ratio}:rate{long}{selector} > {number(factor)} * {budget}\n)"
            for short, long, factor in burns
        ]
        windows = " or ".join(
            f"{short}+{long} at {number(factor)}x" for short, long, factor in burns
        )
        rules.append(
            ctx.alert(
                "FailsightJourneyErrorBudgetBurn",
                "\nor\n".join(branches),
                for_=for_,
                severity=severity,
                labels={"slo": slo.name},
                # Static labels are not in $labels when annotations are expanded.
                summary=(
                    "{{ $labels.journey }} on {{ $labels.site }} is burning the error budget"
                    f" of {template_text(slo.name)}"
                ),
                description=(
                    f"The share of {what} is {{{{ $value | humanizePercentage }}}} against an"
                    f" objective of {number(slo.objective)}% over"
                    f" {duration(slo.window)} (burn windows {windows})."
                ),
            )
        )
    return rules
