"""Results as the scheduler hands them to the views and sinks, for tests that feed agents
without running checks."""

from __future__ import annotations

import time

from failsight.core.results import Reason, Result, StepResult


def journey_result(
    site: str,
    ok: bool,
    at: float | None = None,
    *,
    journey: str = "order-to-invoice",
    step: str = "order_submit",
    critical: bool = True,
) -> Result:
    """One critical (by default) journey run of one step against `site`: failed with HTTP 500,
    or passed; started at `at` (default: now)."""
    started = time.time() if at is None else at
    failed = None if ok else Reason.HTTP_STATUS
    return Result(
        check=f"journey/{journey}/{site}",
        kind="journey",
        target=journey,
        site=site,
        ok=ok,
        started_at=started,
        duration=0.1,
        run_id=f"run-{site}-{started}",
        critical=critical,
        reason=failed,
        steps=(
            StepResult(
                name=step, ok=ok, duration=0.1, reason=failed, message="" if ok else "HTTP 500"
            ),
        ),
    )
