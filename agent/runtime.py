"""The running agent: one TaskGroup owning the API server, the scheduler and the watchers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from failsight.agent.api import SCRAPES, Scrapes, build_app
from failsight.agent.config import Config, SiteConfig, load_config
from failsight.agent.config import plan as plan_checks
from failsight.agent.control import (
    Action,
    ActionKind,
    ControlConflict,
    ControlStore,
    maintenance_holds,
)
from failsight.agent.group import (
    GroupPoller,
    Shard,
    evidence_ages,
    latest_results,
    merge_view,
    owned_checks,
    seed,
)
from failsight.agent.logs import log_result
from failsight.agent.metrics import CATALOGUE
from failsight.agent.otlp_config import build_resource
from failsight.agent.peers import PeerPoller, PeerState
from failsight.agent.prometheus import PrometheusSink
from failsight.agent.scheduler import Scheduler
from failsight.agent.server import GuardedSite, runner_options
from failsight.agent.sinks import FanOut
from failsight.agent.status import Status, build_status
from failsight.agent.timeline import Timeline
from failsight.agent.verdict import (
    DEPENDENCY_GROUPS,
    FailbackPolicy,
    SiteVerdict,
    Verdict,
    decide,
    dependency_reasons,
    replication_states,
)
from failsight.agent.view import (
    Hysteresis,
    SiteOpinion,
    SiteState,
    SiteView,
    VantageView,
    ViewTracker,
)
from failsight.agent.yamlsource import ConfigInvalid
from failsight.core.check import Check, ProbeContext
from failsight.core.http import new_session
from failsight.core.results import Remark, ReplicaSafety, Result
from failsight.core.telemetry import MetricType, Sample
from failsight.core.version import __version__
from failsight.probes import idp
from failsight.probes.journal import CleanupJournal, retry_pending

if TYPE_CHECKING:
    from failsight.agent import otlp

log = logging.getLogger(__name__)

LOOP_LAG_PERIOD = 0.5
# At most ten judgements a second: each walks every site, view and latest result and publishes a
# snapshot, which at hundreds of results a second was a tenth of the agent's CPU (judging at
# 50 Hz); a tenth of a second is nothing beside the seconds that detection takes.
VERDICT_MIN_GAP = 0.1
OTLP_CLOSE_TIMEOUT = 5.0
CLEANUP_RETRY_PERIOD = 30.0
SETTLE_AFTER_RELOAD = 2.0  # seconds after the last reload: the heap is settled again
WARM_UP_CAP = 300.0  # the longest wait for every check's first result before settling again
WARM_UP_POLL = 1.0


class Agent:
    """One vantage's agent. `run()` returns after SIGTERM/SIGINT (or `stop()`) once in-flight
    runs have finished or the grace period is over."""

    def __init__(self, config: Config, config_path: str | Sequence[str] | None = None) -> None:
        self.config = config
        # The files SIGHUP re-reads, merged in this order (`--config A --config B`).
        self.config_paths: tuple[str, ...] = (
            ()
            if config_path is None
            else (config_path,)
            if isinstance(config_path, str)
            else tuple(config_path)
        )
        self.prometheus = PrometheusSink(config.agent.vantage)
        self.views = ViewTracker(
            tuple(s.name for s in config.sites),
            hysteresis(config),
            on_unsettled=self._confirm,
            on_down=self._recheck_others,
            on_recheck=self._recheck,
        )
        self.control = ControlStore(config.agent.vantage, config.agent.state_dir)
        self.control.load()
        # One journal per process: the runs in flight and the retry pass must share it.
        self.journal = CleanupJournal(config.agent.state_dir)
        self.timeline = Timeline()
        self._changed = asyncio.Event()  # a result, a peer view or an action: judge again
        self.fanout = FanOut([self.views, _Nudge(self._changed), _LogSink()])
        if config.telemetry.prometheus.enabled:
            self.fanout.add(self.prometheus)
        self.otlp: otlp.OtlpSink | None = None
        self._set_otlp(config)
        self.prometheus.sources.append(self._live_samples)
        self.verdicts: dict[str, SiteVerdict] = {}
        # The views the last judgement was made from: this vantage's own and its copies of the
        # peers' (what the demo's status line shows beside the verdict).
        self.judged_views: list[VantageView] = []
        self.scheduler: Scheduler | None = None
        self.loop_lag = 0.0
        # (when, lag) of each wake-up of the last `loop_lag_window` seconds (monotonic clock).
        self.loop_lag_window = 60.0
        self._loop_lags: list[tuple[float, float]] = []
        self._scrapes: Scrapes | None = None  # the API's count of /metrics answers
        self.port: int | None = None
        self.http: aiohttp.ClientSession | None = None
        # The configured peers, not polled yet (no session): never heard from, so stale.
        self.peers = PeerPoller(config.peers, None, self._peer_fetched)
        self._peer_task: asyncio.Task[None] | None = None
        # This process, as the other members of its group tell it from another: a member
        # finds its own entry in the group's list by it.
        self.instance = secrets.token_hex(8)
        # Every check the config asks for; the scheduler runs this member's share of them.
        self.planned: list[Check] = []  # planned when the agent runs (`_plan`)
        # In a group, how old each site's newest critical run may be and still count: derived
        # from the planned checks, so computed when they are, not on every publish.
        self._evidence_ages: dict[str, float] = {}
        self.group: GroupPoller | None = None
        self._group_task: asyncio.Task[None] | None = None
        self._owned: set[str] | None = None  # the checks run here, once a share is known
        # For each site another member saw go down: the `since` this member rechecked for.
        self._rechecked_down: dict[str, float] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = asyncio.Event()
        self._settling: asyncio.Task[None] | None = None
        # The API serves only published snapshots: one exists, verdicts judged, from the start.
        self.status: Status
        self.refresh_verdicts()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, install_signals: bool = True) -> None:
        loop = asyncio.get_running_loop()
        async with new_session(keepalive=self.config.agent.keepalive) as http:
            self.http = http
            self.scheduler = Scheduler(
                self.probe_context(),
                self.fanout,
                concurrency=self.config.agent.concurrency,
                aligned=self.config.agent.vantage if self.config.agent.group else None,
            )
            app = build_app(self)
            self._scrapes = app[SCRAPES]
            runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options())
            await runner.setup()
            # Not web.TCPSite: every connection is on a clock and their number is capped, so
            # idle or half-open sockets cannot lock out /healthz (agent/server.py).
            site = GuardedSite(
                runner,
                self.config.agent.listen_host,
                self.config.agent.listen_port,
                max_connections=self.config.agent.max_connections,
                reuse_address=True,
            )
            try:
                await site.start()  # ListenError (one line) when the address is unusable
                self.port = _bound_port(site)
                if install_signals:
                    # Before announcing ourselves: a supervisor may signal us right after.
                    self._install_signals(loop)
                log.info("listening on http://%s:%s", self.config.agent.listen_host, self.port)
                checks = self._plan(self.config)
                settle_heap()
                self._settle_after(0.0, checks, thaw=False)
                async with asyncio.TaskGroup() as tg:
                    # In a group, the shared checks wait for the first look at the members
                    # (within agent.group.timeout): a rollout must not start every check on
                    # every new member at once.
                    first = self._share(checks, None) if self.config.agent.group else checks
                    scheduler = tg.create_task(
                        self.scheduler.run(first, grace=self.config.agent.shutdown_grace)
                    )
                    self._tg = tg
                    watchers = [
                        tg.create_task(self._verdict_loop()),
                        tg.create_task(self._loop_lag_monitor()),
                        tg.create_task(self._cleanup_retries()),
                    ]
                    self._start_peers()
                    self._start_group()
                    await self._stopping.wait()
                    log.info(
                        "stopping: no new runs; in-flight runs get %.1fs",
                        self.config.agent.shutdown_grace,
                    )
                    self.scheduler.stop()
                    self._publish()  # not ready any more
                    await scheduler
                    for task in (*watchers, self._peer_task, self._group_task):
                        if task is not None:
                            task.cancel()
                if self.otlp is not None:
                    await asyncio.to_thread(self.otlp.close, OTLP_CLOSE_TIMEOUT)
            finally:
                if self._settling is not None:
                    self._settling.cancel()
                if install_signals:
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                        loop.remove_signal_handler(sig)
                await runner.cleanup()  # stops the site, then closes its connections
                await site.abort_remaining()
        log.info("stopped")

    def stop(self) -> None:
        self._stopping.set()

    def _set_otlp(self, config: Config) -> otlp.OtlpSink | None:
        """Build the OTLP sink for this config (none without collectors); returns the one it
        replaces, for the caller to close off the event loop."""
        old = self.otlp
        if old is not None:
            self.fanout.sinks.remove(old)
        self.otlp = None
        if config.telemetry.otlp:
            # The SDK and gRPC load only when a collector is set.
            from failsight.agent.otlp import OtlpSink

            self.otlp = OtlpSink(
                config.telemetry.otlp,
                resource=build_resource(
                    config.agent.vantage,
                    config.agent.cloud_provider,
                    config.agent.cloud_region,
                    __version__,
                ),
                logs_over_otlp=config.telemetry.logs.otlp,
            )
            self.fanout.add(self.otlp)
        return old

    def _start_peers(self) -> None:
        """(Re)start polling the configured peers, keeping what is known of those that stay."""
        assert self._tg is not None and self.http is not None
        if self._peer_task is not None:
            self._peer_task.cancel()
        known = self.peers.states
        self.peers = PeerPoller(self.config.peers, self.http, self._peer_fetched)
        self.peers.states.update({k: v for k, v in known.items() if k in self.peers.states})
        self._peer_task = self._tg.create_task(self.peers.run(), name="peers")

    def _plan(self, config: Config) -> list[Check]:
        """Every check `config` asks for (`planned`), and what follows from them."""
        self.planned = plan_checks(config)
        group = config.agent.group
        self._evidence_ages = evidence_ages(self.planned, group.refresh) if group else {}
        return self.planned

    def _start_group(self) -> None:
        """(Re)start looking at this vantage's group, when the config has one."""
        assert self._tg is not None and self.http is not None
        if self._group_task is not None:
            self._group_task.cancel()
            self._group_task = None
        group = self.config.agent.group
        known = self.group
        self.group = None
        if group is None:
            return
        self.group = GroupPoller(
            group,
            vantage=self.config.agent.vantage,
            instance=self.instance,
            token=self.config.agent.view_token,
            http=self.http,
            on_change=self._group_changed,
        )
        self.group.ready = lambda: self.ready and not self._stopping.is_set()
        if known is not None and known.config == group:
            self.group.members, self.group.listed = known.members, known.listed
            self.group.stats = known.stats
        self._group_task = self._tg.create_task(self.group.run(), name="group")

    def _share(self, checks: Sequence[Check], live: set[str] | None) -> list[Check]:
        """This member's checks: all of them without a group; in one, its share among the
        `live` members (before the first look at them: the `every_member` checks only)."""
        group = self.config.agent.group
        if group is None:
            return list(checks)
        if live is None:
            return [c for c in checks if c.placement == "every_member"]
        return owned_checks(checks, group.member_name, live)

    def _live_members(self) -> set[str] | None:
        """The live members to share out among (None before the first look). With no list
        resolved yet, or nobody answering, this member is alone and runs everything:
        coverage first."""
        if self.group is None or self._group_task is None:
            return None
        live = self.group.live()
        me = self.group.me
        if live is None or not live:
            return {me}
        return live

    def _group_changed(self) -> None:
        """After each look at the group: share the checks out again, take over the sites'
        history from their last owner, merge the members' control actions, judge again."""
        if self.group is None or self.scheduler is None or not self.scheduler.running:
            return
        for member in self.group.others():
            if member.state == "live" and member.shard is not None and member.shard.actions:
                self.control.merge(member.shard.actions, source=f"member {member.name}")
        self.views.remote = latest_results({}, self.group)
        self._reshare(count=True)
        self._recheck_for_members()
        self._changed.set()

    def _recheck_for_members(self) -> None:
        """A site another member has just seen go down: run this member's critical journeys of
        the other sites now, as a lone agent would run all of them (`_recheck_others`), so the
        standby is vouched for by a run made after the primary failed, within a `refresh`
        rather than at their next tick."""
        assert self.group is not None
        for member in self.group.others():
            if member.state != "live" or member.shard is None:
                continue
            for site, opinion in member.shard.sites.items():
                if opinion.state is not SiteState.DOWN:
                    continue
                if self._rechecked_down.get(site, 0.0) >= opinion.since:
                    continue
                self._rechecked_down[site] = opinion.since
                if time.time() - opinion.since <= 2 * self.group.config.refresh + 1.0:
                    self._recheck_others(site)

    def _reshare(self, *, count: bool, force: bool = False) -> None:
        """Give the scheduler this member's share (`force`: even when the same names, for a
        new config's new checks)."""
        assert self.scheduler is not None
        mine = self._share(self.planned, self._live_members())
        names = {c.name for c in mine}
        if not force and names == self._owned:
            return
        before = self._owned
        self._owned = names
        if before is not None and count and self.group is not None:
            self.group.stats.handovers["in"] += len(names - before)
            self.group.stats.handovers["out"] += len(before - names)
            if names != before:
                log.info(
                    "group: %d check(s) taken over, %d handed over; running %d of %d",
                    len(names - before),
                    len(before - names),
                    len(names),
                    len(self.planned),
                )
        self._take_over_sites(mine, before)
        self.scheduler.replace(mine)
        self.prometheus.prune(
            names, {(c.site, c.target) for c in mine if c.kind == "journey" and c.site}
        )

    def _take_over_sites(self, mine: Sequence[Check], before: set[str] | None) -> None:
        """A site whose critical journeys come here starts from the freshest opinion any
        member had of it (the last owner's, even one that just died), so its failures keep
        counting; without one, a history older than the evidence age is forgotten."""
        if self.group is None:
            return
        ages = self._evidence_ages
        now = time.time()
        taken = {c.site for c in mine if c.critical and c.site and c.name not in (before or ())}
        for site in taken:
            if site not in self.views.views:
                continue
            known = [
                o
                for shard in self.group.last_words()
                for o in (shard.sites.get(site),)
                if o is not None and o.last_run_at is not None
            ]
            view = self.views.views[site]
            if known:
                freshest = max(known, key=lambda o: o.last_run_at or 0.0)
                view = seed(view, freshest, flap_threshold=self.views.hysteresis.flap_threshold)
            if view.last_run_at is not None and now - view.last_run_at > ages.get(site, 0.0):
                view = SiteView()
            self.views.views[site] = view

    def probe_context(self) -> ProbeContext:
        assert self.http is not None
        return probe_context(self.config, self.http, self.journal)

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def reload(self) -> bool:
        """Re-read the config file; an invalid one is refused and the running config stays."""
        if not self.config_paths or self.scheduler is None:
            return False
        try:
            new = load_config(*self.config_paths)
        except ConfigInvalid as exc:
            log.error("reload refused, the running config stays in force:\n%s", exc)
            return False
        if new.agent.listen != self.config.agent.listen:
            log.warning("agent.listen changed; it takes effect only after a restart")
        self.apply(new)
        # Once the reloads stop: a SIGHUP storm pays for one full collection, not one each.
        self._settle_after(SETTLE_AFTER_RELOAD, self.scheduler.checks, thaw=True)
        log.info("config reloaded from %s", " + ".join(self.config_paths))
        return True

    def _settle_after(self, delay: float, checks: Sequence[Check], *, thaw: bool) -> None:
        """Settle the heap `delay` seconds from now (thawing first after a reload), and again,
        without a thaw, once every check has a result (or after WARM_UP_CAP): the series and
        state the first results create live as long as the config does."""
        names = {c.name for c in checks}

        async def settle() -> None:
            if delay:
                await asyncio.sleep(delay)
                settle_heap(thaw=thaw)
            # Polled: one comparison a second, for a few intervals after start or a reload.
            for _ in range(int(WARM_UP_CAP / WARM_UP_POLL)):
                if names <= self.views.latest.keys():
                    break
                await asyncio.sleep(WARM_UP_POLL)
            settle_heap(thaw=False)

        if self._settling is not None:
            self._settling.cancel()
        self._settling = asyncio.create_task(settle())

    def apply(self, new: Config) -> None:
        assert self.scheduler is not None
        old_config, self.config = self.config, new
        checks = self._plan(new)
        removed = {c.name for c in self.scheduler.checks} - {c.name for c in checks}
        if new.telemetry.otlp != old_config.telemetry.otlp:
            replaced = self._set_otlp(new)
            if replaced is not None and self._tg is not None:
                # A dead old collector may take its export timeout to let go: not on the loop.
                self._tg.create_task(asyncio.to_thread(replaced.close, OTLP_CLOSE_TIMEOUT))
        elif self.otlp is not None:
            for name in removed:
                self.otlp.forget_check(name)
        self.scheduler.ctx = self.probe_context()
        self.scheduler.aligned = new.agent.vantage if new.agent.group else None
        self.prometheus.vantage = new.agent.vantage
        self.views.reconfigure(
            tuple(s.name for s in new.sites), {c.name for c in checks}, hysteresis(new)
        )
        if self._tg is not None and (
            new.agent.group != old_config.agent.group
            or new.agent.view_token != old_config.agent.view_token
            or new.agent.vantage != old_config.agent.vantage
        ):
            self._start_group()
        # A new config is not a hand-over: the share is taken again, uncounted.
        self._reshare(count=False, force=True)
        self.verdicts = {k: v for k, v in self.verdicts.items() if k in self.views.views}
        self._start_peers()
        self._publish()

    @property
    def ready(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    @property
    def metrics_sink(self) -> PrometheusSink:
        # The sink renders /metrics itself (agent/prometheus.py): no prometheus_client registry.
        return self.prometheus

    @property
    def scrapes(self) -> int:
        """How many times the API has served /metrics."""
        return self._scrapes.count if self._scrapes is not None else 0

    def _publish(self) -> None:
        """Publish a new status snapshot (agent/status.py): after every change the API shows.
        This vantage's view is built anew: its impairment and control actions are the ones
        judging has just decided."""
        view, shard = self._vantage_view()
        self.status = build_status(
            self.config,
            ready=self.ready and not self._stopping.is_set(),
            view=view,
            shard=shard,
            verdicts=self.verdicts,
            results=latest_results(self.views.latest, self.group),
            peers=self.peers.states,
            timeline=self.timeline,
        )

    # -- views and verdicts ------------------------------------------------------------------

    def local_view(self) -> VantageView:
        """This vantage's view, as /v1/view serves it: in a group, the members' merged."""
        return self._vantage_view()[0]

    def _vantage_view(self) -> tuple[VantageView, Shard | None]:
        """This vantage's view, and in a group this member's shard it was merged from."""
        own = self._own_view()
        if self.group is None:
            return own, None
        shard = self._own_shard(own)
        merged = merge_view(
            own, shard, self.group, evidence_ages=self._evidence_ages, now=own.generated_at
        )
        return merged, shard

    def _own_shard(self, own: VantageView) -> Shard:
        """This member's part of its group's view (`/v1/view?scope=member`): the sites whose
        critical journeys it runs, and the latest results the other members' verdicts read
        (replication safety, the shared dependencies)."""
        assert self.config.agent.group is not None
        mine = {c.name: c for c in (self.scheduler.checks if self.scheduler else ())}
        held = {c.site for c in mine.values() if c.critical and c.site}
        ages = self._evidence_ages
        now = own.generated_at

        def shared(site: str, opinion: SiteOpinion) -> bool:
            # The sites it runs, and one it has just handed over while what it last saw is
            # fresh: the new owner has not run it yet, and the merge takes the newest.
            if opinion.last_run_at is None:
                return False
            return site in held or now - opinion.last_run_at <= ages.get(site, 0.0)

        return Shard(
            vantage=self.config.agent.vantage,
            member=self.config.agent.group.member_name,
            instance=self.instance,
            generated_at=own.generated_at,
            checks=tuple(sorted(mine)),
            sites=MappingProxyType({site: o for site, o in own.sites.items() if shared(site, o)}),
            results=tuple(
                r for name, r in self.views.latest.items() if name in mine and _shared(r)
            ),
            self_check=own.self_check,
            control_clock=own.control_clock,
            actions=own.actions,
        )

    def _own_view(self) -> VantageView:
        """What this agent's own runs say (in a group: about the sites it runs)."""
        return VantageView(
            vantage=self.config.agent.vantage,
            generated_at=time.time(),
            sites=MappingProxyType(
                {
                    site: SiteOpinion(
                        v.state,
                        v.since,
                        v.evidence,
                        v.last_run_at,
                        v.flapping,
                        v.episode_since,
                        failures=v.failures,
                        successes=v.successes,
                    )
                    for site, v in self.views.snapshot().items()
                }
            ),
            every_site_failing=self.views.every_site_failing,
            self_check=self.views.self_check_ok,
            impaired=self.impaired,
            control_clock=self.control.clock,
            actions=tuple(self.control.actions()),
        )

    @property
    def impaired(self) -> bool:
        """This vantage's views do not vote: judged against the other vantages' views."""
        return any(
            v.quorum.vantages.get(self.config.agent.vantage) == "impaired"
            for v in self.verdicts.values()
        )

    def refresh_verdicts(self) -> dict[str, SiteVerdict]:
        """Judge every site again; latch a failover entered, release an auto failback due."""
        now = time.time()
        config = self.config
        self.judged_views = [self.local_view(), *self.peers.views()]
        latest = latest_results(self.views.latest, self.group).values()
        verdicts = decide(
            [(s.name, s.role) for s in config.sites],
            self.judged_views,
            quorum=config.quorum,
            stale_after=config.verdict.peer_stale_after,
            now=now,
            replication=replication_states(latest),
            previous=self.verdicts,
            controls=self.control.controls(now, maintenance_holds(config.maintenance, now)),
            failback={s.name: failback_policy(config, s) for s in config.sites},
        )
        for site, v in verdicts.items():
            if v.verdict is Verdict.FAILOVER_RECOMMENDED:
                self.control.record(
                    ActionKind.LATCH,
                    site,
                    by=f"verdict@{config.agent.vantage}",
                    reason="; ".join(v.reasons[:2]),
                    now=now,
                    target=v.failover_target,
                )
            elif v.failback_due and v.latch is not None:
                self.control.record(
                    ActionKind.FAILBACK,
                    site,
                    by=f"policy:auto@{config.agent.vantage}",
                    reason=f"up in a quorum of views for {v.failback.stable_for:g}s",
                    now=now,
                    latched_at=v.latch.at,
                )
        self.verdicts = {
            site: replace(v, reasons=(*v.reasons, *dependency_reasons(site, latest)))
            for site, v in verdicts.items()
        }
        self.timeline.observe(now, self.verdicts, self.control.history)
        self._publish()
        return self.verdicts

    def control_action(
        self,
        kind: ActionKind,
        site: str,
        *,
        by: str,
        reason: str,
        until: float | None = None,
    ) -> Action:
        """An operator's action (API); ControlConflict when the site's state does not allow it."""
        now = time.time()
        current = self.refresh_verdicts().get(site)
        latched_at: float | None = None
        if kind is ActionKind.FAILBACK:
            latch = current.latch if current is not None else None
            if latch is None:
                raise ControlConflict(
                    f"site {site} is not failed over: there is nothing to fail back"
                )
            latched_at = latch.at
        elif kind is ActionKind.LIFT:
            held = current.hold if current is not None else None
            if held is None:
                raise ControlConflict(f"site {site} is not held")
            if held.source == "maintenance":
                raise ControlConflict(
                    f"site {site} is held by {held.by} from the config: edit "
                    "`maintenance:` to end it"
                )
        action = self.control.record(
            kind, site, by=by, reason=reason, now=now, until=until, latched_at=latched_at
        )
        self.refresh_verdicts()
        self._changed.set()
        return action

    def _peer_fetched(self, peer: str, state: PeerState) -> None:
        # A view or an error: judge again, which publishes the peer's state with the verdicts.
        if state.error is None and state.actions:
            self.control.merge(state.actions, source=f"peer {peer}")
        self._changed.set()

    def _confirm(self, check: str) -> None:
        interval = self.config.verdict.confirm_interval
        if interval is not None and self.scheduler is not None:
            self.scheduler.confirm(check, interval)

    def _recheck(self, check: str) -> None:
        if self.scheduler is not None:
            self.scheduler.confirm(check, 0.0)

    def _recheck_others(self, site: str) -> None:
        # A site just went down from here: run the other sites' critical journeys now rather
        # than at their next tick (up to an interval away), so the standby is vouched for by a
        # run made after the primary failed, and a vantage that lost its network says so.
        if self.scheduler is None:
            return
        for check in self.scheduler.checks:
            if check.critical and check.site not in (None, site):
                self._recheck(check.name)

    async def _verdict_loop(self) -> None:
        # The API serves the verdicts judged here: on every new result, peer view or control
        # action (within VERDICT_MIN_GAP), and at least every second so that staleness and
        # `since` stay current when nothing happens.
        announced: dict[str, Verdict] = {}
        while True:
            self._changed.clear()
            before, announced = announced, {}
            verdicts = self.refresh_verdicts()
            if self.otlp is not None:
                self.otlp.replace_gauges(
                    "live", (s for s in self._live_samples() if s.spec.type is MetricType.GAUGE)
                )
            for site, v in verdicts.items():
                announced[site] = v.verdict
                if before.get(site) not in (None, v.verdict):
                    log.warning(
                        "site %s verdict %s -> %s: %s",
                        site,
                        before[site].value,
                        v.verdict.value,
                        "; ".join(v.reasons[:3]),
                    )
            # At most one judgement per VERDICT_MIN_GAP: a busy agent (hundreds of results a
            # second) judges in batches; a quiet one judges each result as it comes.
            await asyncio.sleep(VERDICT_MIN_GAP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0 - VERDICT_MIN_GAP):
                    await self._changed.wait()

    async def _cleanup_retries(self) -> None:
        # Cleanups owed by an earlier process (killed mid-journey) run first, beside the
        # scheduler rather than before it: start-up is not held up by an unreachable site.
        # Then every CLEANUP_RETRY_PERIOD for cleanups that failed since.
        if not self.journal.enabled:
            return
        while True:
            if self.scheduler is not None:
                try:
                    report = await retry_pending(
                        self.journal,
                        # Every configured check: a run this member made of a check now
                        # owned by another member is still this member's to clean up.
                        self.planned,
                        self.probe_context(),
                        budget=CLEANUP_RETRY_PERIOD,
                    )
                    if report.cleaned or report.abandoned:
                        log.info(
                            "cleanup journal: %d owed cleanup(s) done, %d given up, %d pending",
                            report.cleaned,
                            report.abandoned,
                            report.pending,
                        )
                except Exception:  # the retry pass must never stop the agent
                    log.exception("the cleanup journal's retry pass failed")
            await asyncio.sleep(CLEANUP_RETRY_PERIOD)

    async def _loop_lag_monitor(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(LOOP_LAG_PERIOD)
            now = time.monotonic()
            self.loop_lag = max(0.0, now - start - LOOP_LAG_PERIOD)
            # The lags of the last window, for their maximum: kept by time, not reset by a
            # scrape, so two Prometheus servers scraping this agent read the same value.
            since = now - self.loop_lag_window
            self._loop_lags = [(t, lag) for t, lag in self._loop_lags if t >= since]
            self._loop_lags.append((now, self.loop_lag))

    def latest_results(self) -> dict[str, Result]:
        return dict(self.views.latest)

    # -- metrics computed at scrape time (in memory, no I/O) ---------------------------------

    def _live_samples(self) -> Iterator[Sample]:
        def s(name: str, value: float, *labels: str) -> Sample:
            spec = CATALOGUE[name]
            return Sample(spec, tuple(zip(spec.labels, labels, strict=True)), value)

        yield s("agent_info", 1.0, __version__)
        yield s("event_loop_lag_seconds", self.loop_lag)
        since = time.monotonic() - self.loop_lag_window
        lags = (lag for t, lag in self._loop_lags if t >= since)
        yield s("event_loop_lag_max_seconds", max(lags, default=0.0))
        yield s("vantage_impaired", 1.0 if self.impaired else 0.0)
        if self.group is not None:
            live = self.group.live() or set()
            yield s("group_members", float(len(live | {self.group.me})))
            yield s("group_members_listed", float(len(self.group.members)))
            yield s("group_checks_owned", float(len(self._owned or ())))
            partial = self.status.view.group is not None and bool(
                self.status.view.group.get("partial")
            )
            yield s("group_partial", 1.0 if partial else 0.0)
            for direction, n in self.group.stats.handovers.items():
                yield s("group_handovers_total", float(n), direction)
            for outcome, n in self.group.stats.fetches.items():
                yield s("group_fetches_total", float(n), outcome)
        # The vantage's view as published: in a group, the members' merged one, so that every
        # member says the same of each site (a missing site is not down).
        view = self.status.view
        for site, opinion in view.sites.items():
            down = opinion.state is SiteState.DOWN and site not in view.missing
            yield s("site_view_down", 1.0 if down else 0.0, site)
            yield s("site_flapping", 1.0 if opinion.flapping else 0.0, site)
        for site, verdict in self.verdicts.items():
            for word in Verdict:
                yield s("site_verdict", 1.0 if verdict.verdict is word else 0.0, site, word.value)
            latch = verdict.latch
            target = (latch.target or "") if latch is not None else ""
            yield s("site_failed_over", 1.0 if latch is not None else 0.0, site, target)
            yield s("site_hold", 1.0 if verdict.hold is not None else 0.0, site)
        if self.scheduler is not None:
            # Every scheduled check from 0, not only those that skipped: increase() and rate()
            # need the series before the first skip, and a dashboard shows 0, not "no data".
            skipped = self.scheduler.skipped
            for check in self.scheduler.checks:
                n = skipped.get((check.name, check.kind), 0)
                yield s("check_runs_skipped_total", float(n), check.name, check.kind)
                n = self.scheduler.confirmations.get((check.name, check.kind), 0)
                if check.critical:
                    yield s("check_confirmation_runs_total", float(n), check.name, check.kind)
        if self.journal.enabled:
            yield s("cleanup_pending", float(self.journal.owed()))
            for (journey, site), n in sorted(self.journal.abandoned.items()):
                yield s("cleanup_abandoned_total", float(n), journey, site)
        for sink in self.fanout.sinks:  # every sink, from 0: rate() needs the series to exist
            yield s("sink_errors_total", float(self.fanout.errors.get(sink.name, 0)), sink.name)
        yield s("telemetry_exports_total", float(self.scrapes), "prometheus", "success")
        if self.otlp is not None:
            for (path, outcome), n in self.otlp.export_counts().items():
                yield s("telemetry_exports_total", float(n), path, outcome)


class _Nudge:
    """Wakes the verdict loop when a result arrives (after the view has taken it)."""

    name = "nudge"

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def handle(self, result: Result) -> None:
        self.event.set()


class _LogSink:
    """One structured JSON line per run on stdout (agent/logs.py)."""

    name = "log"

    def handle(self, result: Result) -> None:
        log_result(result)


def settle_heap(*, thaw: bool = True) -> None:
    """Put everything alive now (modules, config, checks, the API) out of the cyclic
    collector's reach, so that a full collection walks only what runs create.

    Start-up leaves a few hundred thousand long-lived objects behind; without this, every full
    collection walks all of them and stalls the event loop for 40-60 ms (bench/capacity.py),
    which lands on whatever step is being timed. Frozen objects are still freed by reference
    counting; only cycles among them would stay, so after a reload the heap is thawed and
    collected once (one such pause per reload, none per run) before the new config's objects
    are frozen. Without `thaw`, only what is not frozen yet is collected (a pause as short as
    a run's own collections) and what survives is frozen with the rest.
    """
    if thaw:
        gc.unfreeze()
    gc.collect()
    gc.freeze()


def _shared(result: Result) -> bool:
    """A result the other members of a group read: a shared dependency's (IdP, DNS, TLS...)
    or one that bears on data safety or on the verdict's reasons."""
    return result.kind in DEPENDENCY_GROUPS or any(
        isinstance(e, ReplicaSafety | Remark) for e in result.evidence
    )


def _bound_port(site: GuardedSite) -> int:
    """The port the API listens on: the one the kernel chose when the config says port 0."""
    port = site.port
    if not port:
        raise RuntimeError("the API server is not bound")
    return port


def hysteresis(config: Config) -> Hysteresis:
    v = config.verdict
    return Hysteresis(v.failure_threshold, v.recovery_threshold, v.flap_threshold, v.flap_half_life)


def failback_policy(config: Config, site: SiteConfig) -> FailbackPolicy:
    chosen = site.failback or config.verdict.failback
    return FailbackPolicy(auto=chosen.policy == "auto", stable_for=chosen.stable_for)


def probe_context(
    config: Config, http: aiohttp.ClientSession, journal: CleanupJournal | None = None
) -> ProbeContext:
    """What every check run shares: the HTTP session, the IdP token cache and the cleanup
    journal."""
    idps = config.section(idp.KIND)
    tokens = idp.TokenCache({i.name: i for i in idps}, http) if idps else None
    return ProbeContext(vantage=config.agent.vantage, http=http, tokens=tokens, journal=journal)
