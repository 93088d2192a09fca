"""The journey check: one journey against one site. Each run gets its own variables (the
built-ins, the next tenant) and trace, runs the steps within the journey's timeout and then the
cleanup whatever happened; `cleanup_for` runs the cleanup of an earlier run (crash recovery)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

from yarl import URL

from failsight.core.check import (
    Check,
    ProbeContext,
    Run,
    idp_check_name,
    new_span_id,
    new_trace_id,
)
from failsight.core.configtypes import Secret
from failsight.core.http import ssl_context
from failsight.core.results import DependsOn, Reason, Result, StepResult
from failsight.probes.journey.config import (
    BUILTIN_VARIABLES,
    JourneyConfig,
    expectation_templates,
    step_templates,
)
from failsight.probes.journey.run import JourneyRun
from failsight.probes.templating import render, variables_in


class JourneyCheck(Check):
    """One journey against one site."""

    kind = "journey"

    def __init__(
        self,
        cfg: JourneyConfig,
        *,
        site: str,
        base_url: str,
        site_headers: Mapping[str, Secret] | None = None,
        ca_file: str | None = None,
        tls_verify: bool = True,
    ) -> None:
        super().__init__(
            name=f"journey/{cfg.name}/{site}",
            target=cfg.name,
            interval=cfg.interval,
            # The run's time covers the steps (cfg.timeout, which the journey enforces itself)
            # and then the cleanup (cfg.cleanup_timeout, likewise): the hard limit leaves room
            # for the cleanup, so a run that hits the step timeout still cleans up.
            budget=cfg.timeout + cfg.cleanup_timeout,
            site=site,
            critical=cfg.critical,
            placement=cfg.placement,
        )
        self.cfg = cfg
        if cfg.idp is not None:
            # Every run relies on the IdP for its token: when the IdP's own check fails too,
            # that explains this journey's `auth` failures.
            self.standing_evidence = (
                DependsOn(
                    check=idp_check_name(cfg.idp),
                    label=f"IdP {cfg.idp}",
                    via=Reason.AUTH,
                    effect=f"journey {cfg.name} cannot authenticate",
                ),
            )
        self.base_url = base_url.rstrip("/")
        self.site_headers = dict(site_headers or {})
        self.ssl = ssl_context(ca_file, tls_verify)
        # Each step's `url.template` (its span's name and attribute), the same for every run:
        # the site's base path and the step's path with each `{{name}}` written `{name}`.
        base_path = URL(self.base_url).raw_path.rstrip("/")
        self.url_templates = {
            step.path: base_path
            + str(render(step.path, {name: f"{{{name}}}" for name in variables_in(step.path)}))
            for step in (*cfg.steps, *cfg.cleanup)
        }
        self._tenants = itertools.cycle(cfg.tenants)
        # What a crash-recovery journal keeps of a run: the built-ins and the extracted
        # variables the cleanup steps (their requests and assertions, or the site's headers)
        # use; nothing else (config variables and secrets come from the config in force when
        # the cleanup is retried).
        used = variables_in(
            [[step_templates(step), expectation_templates(step)] for step in cfg.cleanup]
        )
        used |= variables_in([v.get_secret_value() for v in self.site_headers.values()])
        extracted = {name for step in cfg.steps for name in step.extract}
        self.journaled = frozenset(BUILTIN_VARIABLES | (extracted & used))
        # What each cleanup step must have not to be skipped as not needed (see JourneyRun.cleanup).
        self.cleanup_needs = [variables_in([step.path, step.body]) for step in cfg.cleanup]

    async def probe(self, ctx: ProbeContext, run: Run) -> Result:
        trace_id = new_trace_id()
        variables: dict[str, object] = {
            **self.cfg.variables,
            "run_id": run.id,
            "site": self.site or "",
            "tenant": next(self._tenants),
            "vantage": ctx.vantage,
            "journey": self.cfg.name,
        }
        journal = ctx.journal if self.cfg.cleanup else None
        if journal is not None and not journal.enabled:
            journal = None
        state = JourneyRun(self, ctx, run.id, trace_id, variables, run.start, journal)
        steps: list[StepResult] = []
        try:
            await state.note()  # before the first step
            # The steps have cfg.timeout from the start; the rest of the budget is the
            # cleanup's.
            steps = await state.steps(run.start + self.cfg.timeout)
        finally:
            duration = run.elapsed()  # the steps only
            cleaned = False
            try:
                cleanup = await state.cleanup()
                cleaned = all(c.ok for c in cleanup)
            finally:
                if journal is not None and state.noted is not None:
                    await journal.finish(run.id, cleaned=cleaned)
        failed = next((s for s in steps if not s.ok and not s.skipped), None)
        return self.result(
            run,
            ok=failed is None,
            reason=failed.reason if failed else None,
            message=f"step {failed.name}: {failed.message}" if failed else "",
            duration=duration,
            trace_id=trace_id,
            span_id=new_span_id(),
            steps=tuple(steps),
            cleanup=cleanup,
            facts={
                "tenant": variables["tenant"],
                "cleanup_ok": all(c.ok for c in cleanup),
                "idp": self.cfg.idp,
            },
        )

    async def cleanup_for(
        self, ctx: ProbeContext, run_id: str, variables: Mapping[str, object]
    ) -> tuple[StepResult, ...]:
        """Run the cleanup steps for an earlier run of this journey, as that run would have:
        its run id, the variables a journal kept of it (over the config's own variables), and
        the token and headers of the config in force now. For crash recovery
        (probes/journal.py); never raises for a failure of the target."""
        run = JourneyRun(
            self,
            ctx,
            run_id,
            new_trace_id(),
            {**self.cfg.variables, **variables},
            time.monotonic(),
        )
        return await run.cleanup()
