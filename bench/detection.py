"""Detection time: from a site outage to every agent's failover verdict and to the failover
controller's webhook, for several settings measured side by side in one run.

Run: `.venv/bin/python -m bench.detection [--settings today,fast] [--repeat 5] [--rigs N]`
(about 5 minutes) or `--quick` (one trial per setting with every duration divided by 10: a
smoke run of the harness, under a minute; its figures mean nothing).

Each setting runs on its own rigs: a rig is the simulated platform, three agents (the demo's
vantages) watching it, a real Prometheus scraping them with the rules `failsight rules`
generates, and a real Alertmanager routing with `alerts/alertmanager.example.yml` unchanged
(production `group_wait`), all on free loopback ports. All rigs run in parallel; by default
each runs one trial. Before each fault the rig sleeps a random 0..interval, so the fault falls
at a random phase of the journey grid; but the grids of a rig's three vantages, its peer polls,
scrapes and rule evaluations keep fixed phases to each other (30 s is a multiple of 15 s and of
5 s), so trials on one rig repeat the same few verdict-to-webhook delays: a fresh rig per trial
(fresh random offsets everywhere) samples those phases too. `--rigs N` shares a setting's trials
among N rigs (each waits between trials for failback and for Alertmanager to forget the alert).
Nothing is asserted: it prints each trial, a table with the floor each setting allows, and the
goals of the fast-confirmation issue.
Two departures from production keep back-to-back trials separate incidents: flap damping is
off and Prometheus resends alerts rarely (NO_FLAP_DAMPING and RESEND_DELAY say why).

Settings (`--settings`):
  today  journeys every 30 s, failure_threshold 3, no confirm_interval, for: 1m, scrape and
         evaluation every 15 s (the shipped PodMonitor): what production ran before this change
  fast   the same with confirm_interval 2s and for: 0s
  demo   agent/demo/config.yaml as shipped (journeys every 5 s, failure_threshold 2,
         confirm_interval 1s, peers every 2 s), for: 0s, scrape and evaluation every 5 s
`today` and `fast` otherwise follow deploy/kubernetes (peers every 5 s, peer_stale_after 60s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import re
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from failsight.agent.config import Config, load_config
from failsight.agent.control import ActionKind
from failsight.agent.demo.run import DEMO_CONFIG, vantage_configs
from failsight.agent.demo.simulator import Fault, Platform
from failsight.agent.rules import render_rules, rules_input
from failsight.agent.runtime import Agent
from failsight.agent.verdict import FAILOVER_VERDICTS, Verdict
from failsight.agent.view import SiteState
from tests.fixtures.prometheus import (
    Alertmanager,
    Prometheus,
    WebhookRecorder,
    alertmanager_example_config,
    start_alertmanager,
    start_prometheus,
)

SITES = ("aws-use1", "gcp-euw1")
ALERT = "FailsightFailoverRecommended"
POLL = 0.05
TRIAL_TIMEOUT = 600.0
SETTLE_TIMEOUT = 600.0
# Alertmanager drops an aggregation group emptied by a "resolved" notification at its next
# maintenance (every 30 s, fixed in its code). A firing alert that joins a group still there
# waits for the route's group_interval (1m) instead of its group_wait (0s): a real incident
# hours after the last one never does, so each trial waits the group out.
ALERTMANAGER_MAINTENANCE = 30.0
# Trials minutes apart would count as one flapping episode (penalty half-life 10 min): the
# fourth or fifth would be refused a second failover, by design. Each trial is a separate
# incident here.
NO_FLAP_DAMPING = 100.0
# Prometheus resends every alert each resend-delay (1m), resolved ones for 15 minutes after they
# resolve, and each resend of the resolved failover alert recreates its Alertmanager group for
# up to 30 s: a failover firing into it waited 20 s for the group_interval. Trials come within
# minutes of the last failback, so resend rarely: the first notification of an alert that
# starts firing goes out at that evaluation whatever the delay.
RESEND_DELAY = "--rules.alert.resend-delay=1h"


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    title: str
    interval: float  # the critical journey's
    failure_threshold: int
    confirm_interval: float | None
    failover_for: float  # FailsightFailoverRecommended's `for:`
    scrape: float  # Prometheus scrape and rule evaluation interval
    peer_interval: float
    peer_timeout: float
    stale_after: float
    journey_timeout: float
    # The fast-confirmation issue's goals: verdict <= interval + the first, webhook <= verdict
    # + the second (seconds); None where they do not apply.
    goals: tuple[float, float] | None = None

    def scaled(self, factor: float) -> Setting:
        """Every duration divided by `factor` (--quick)."""
        if factor == 1:
            return self
        return replace(
            self,
            interval=self.interval / factor,
            confirm_interval=None
            if self.confirm_interval is None
            else self.confirm_interval / factor,
            failover_for=self.failover_for / factor,
            scrape=self.scrape / factor,
            peer_interval=self.peer_interval / factor,
            peer_timeout=self.peer_timeout / factor,
            stale_after=self.stale_after / factor,
            journey_timeout=max(2.0, self.journey_timeout / factor),
            goals=None if self.goals is None else (self.goals[0] / factor, self.goals[1] / factor),
        )

    @property
    def step(self) -> float:
        """From one failed run to the next while the view is unsettled."""
        return self.confirm_interval if self.confirm_interval is not None else self.interval

    def verdict_floor(self) -> tuple[float, float]:
        # The first failing run comes within one interval of the fault, threshold - 1 more
        # runs follow a step apart each; then every agent needs a peer's view (one poll) to
        # make the quorum, or the latch a peer took.
        later = (self.failure_threshold - 1) * self.step
        return later, self.interval + later + self.peer_interval

    def webhook_floor(self) -> tuple[float, float]:
        # After the verdict: the next scrape, the next evaluation, the `for:`; group_wait 0s.
        low, high = self.verdict_floor()
        return low + self.failover_for, high + 2 * self.scrape + self.failover_for

    def describe(self) -> str:
        confirm = (
            "no confirm_interval"
            if self.confirm_interval is None
            else f"confirm_interval {_s(self.confirm_interval)}"
        )
        return (
            f"journeys every {_s(self.interval)}, failure_threshold {self.failure_threshold}, "
            f"{confirm}, peers every {_s(self.peer_interval)}; "
            f"{ALERT} for: {_s(self.failover_for)}; scrape and evaluation every "
            f"{_s(self.scrape)}"
        )


SETTINGS = {
    "today": Setting("today", "A today", 30, 3, None, 60, 15, 5, 2, 60, 20),
    "fast": Setting("fast", "B fast confirmation", 30, 3, 2, 0, 15, 5, 2, 60, 20, goals=(6, 20)),
    "demo": Setting("demo", "demo config", 5, 2, 1, 0, 5, 2, 1, 15, 10),
}


@dataclass(slots=True)
class Trial:
    setting: str
    rig: int
    phase: float  # the random sleep before the fault
    quorum: float | None  # fault -> a quorum of the agents' own views of the primary are down
    first: float  # fault -> the first agent's verdict says fail over
    verdict: float  # fault -> every agent's verdict says so
    fires: float | None  # fault -> the alert fires in Prometheus (activeAt + for)
    webhook: float  # fault -> the firing notification at the failover webhook
    confirmations: int  # confirmation runs of the primary's journeys, all agents
    late: float  # how late the harness' poll of the verdicts woke at worst (loop stalls)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Rig:
    setting: Setting
    index: int
    platform: Platform
    agents: list[Agent]
    hooks: WebhookRecorder
    prometheus: Prometheus
    alertmanager: Alertmanager
    primary: str
    notes: list[str] = field(default_factory=list)

    @property
    def tag(self) -> str:
        return f"{self.setting.name}#{self.index}"


def _s(seconds: float) -> str:
    return f"{seconds:g}s"


def _prom_duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rig_config(setting: Setting, platform: Platform) -> Config:
    """The demo config with the setting's cadence, on free ports, without the demo's database
    (not what is measured) and without flap damping (see NO_FLAP_DAMPING)."""
    data: dict[str, Any] = load_config(DEMO_CONFIG).model_dump(by_alias=True, exclude_none=True)
    ports = [free_port() for _ in range(1 + len(data["peers"]))]
    data["agent"]["listen"] = f"127.0.0.1:{ports[0]}"
    data["peers"] = [
        {
            **p,
            "url": f"http://127.0.0.1:{port}",
            "interval": setting.peer_interval,
            "timeout": setting.peer_timeout,
        }
        for p, port in zip(data["peers"], ports[1:], strict=True)
    ]
    data["replication"] = []
    for site in data["sites"]:
        site["base_url"] = platform.urls[site["name"]]
    for journey in data["journeys"]:
        journey["interval"] = setting.interval
        journey["timeout"] = setting.journey_timeout
    verdict = {
        **data["verdict"],
        "failure_threshold": setting.failure_threshold,
        "peer_stale_after": setting.stale_after,
        "flap_threshold": NO_FLAP_DAMPING,
    }
    verdict.pop("confirm_interval", None)
    if setting.confirm_interval is not None:
        verdict["confirm_interval"] = setting.confirm_interval
    data["verdict"] = verdict
    return Config.model_validate(data)


def _word(agent: Agent, site: str) -> Verdict | None:
    v = agent.verdicts.get(site)
    return None if v is None else v.verdict


def _settled(agent: Agent, site: str) -> bool:
    """Healthy, judged from runs of every site (not from the empty view of a fresh start)."""
    views = agent.views.snapshot()
    return _word(agent, site) is Verdict.HEALTHY and all(
        v.state is SiteState.UP and v.last_run_at is not None for v in views.values()
    )


def confirmation_runs(agents: Sequence[Agent], site: str) -> int:
    total = 0
    for agent in agents:
        scheduler = agent.scheduler
        if scheduler is None:
            continue
        for check in scheduler.checks:
            if check.site == site and check.critical:
                total += scheduler.confirmations.get((check.name, check.kind), 0)
    return total


def _delivered(hooks: WebhookRecorder, status: str) -> bool:
    return any(
        alert["status"] == status and alert["labels"].get("alertname") == ALERT
        for body in hooks.received.get("/failover", [])
        for alert in body["alerts"]
    )


def _rfc3339(text: str) -> float:
    # Prometheus writes nanoseconds; datetime takes at most microseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


async def _fires_at(rig: Rig) -> float | None:
    """When Prometheus fired the alert (wall clock): its activeAt plus the `for:`, exact when
    the `for:` is a multiple of the evaluation interval, as in every setting here."""
    with contextlib.suppress(Exception):
        for alert in await rig.prometheus.alerts():
            if alert["labels"].get("alertname") == ALERT and alert["state"] == "firing":
                return _rfc3339(alert["activeAt"]) + rig.setting.failover_for
    return None


async def settle(rig: Rig, *, after_failover: bool) -> None:
    """Until every agent is healthy and judged, and the last failover notification is
    resolved and its Alertmanager group gone."""
    start = time.monotonic()
    resolved_at: float | None = None
    refailed = False
    while True:
        now = time.monotonic()
        if after_failover and resolved_at is None and _delivered(rig.hooks, "resolved"):
            resolved_at = now
        words = [_word(a, rig.primary) for a in rig.agents]
        if resolved_at is not None and not refailed and any(w in FAILOVER_VERDICTS for w in words):
            refailed = True
            rig.notes.append(
                f"{rig.tag}: failover verdict again after failback and recovery: {words}"
            )
        group_gone = not after_failover or (
            resolved_at is not None and now - resolved_at > ALERTMANAGER_MAINTENANCE + 1
        )
        if group_gone and all(_settled(a, rig.primary) for a in rig.agents):
            return
        if now - start > SETTLE_TIMEOUT:
            raise TimeoutError(
                f"{rig.tag}: not settled within {SETTLE_TIMEOUT:g}s: verdicts "
                f"{[w.value if w else None for w in words]}, resolved notification "
                f"{'received' if resolved_at is not None else 'not received'}"
            )
        await asyncio.sleep(0.2)


async def trial(rig: Rig, phase: float) -> Trial:
    """One outage of the primary: when every agent says fail over, when the webhook fires."""
    await asyncio.sleep(phase)
    rig.hooks.received.clear()  # the previous trial's notifications, resolved ones included
    confirmed_before = confirmation_runs(rig.agents, rig.primary)
    seen: list[list[str]] = [[] for _ in rig.agents]
    down: dict[str, float] = {}  # vantage -> when its own view of the primary entered down
    wall = time.time()
    t0 = time.monotonic()
    rig.platform.set_fault(rig.primary, Fault(kind="outage"))
    first = every = webhook = None
    confirmations = 0
    late = 0.0
    while every is None or webhook is None:
        now = time.monotonic() - t0
        words = [_word(a, rig.primary) for a in rig.agents]
        for trail, w in zip(seen, words, strict=True):
            if w is not None and (not trail or trail[-1] != w.value):
                trail.append(w.value)
        for agent in rig.agents:
            view = agent.views.snapshot()[rig.primary]
            if view.state is SiteState.DOWN:
                down.setdefault(agent.config.agent.vantage, now)
        hit = [w in FAILOVER_VERDICTS for w in words]
        if first is None and any(hit):
            first = now
        if every is None and all(hit):
            every = now
            confirmations = confirmation_runs(rig.agents, rig.primary) - confirmed_before
        if webhook is None and _delivered(rig.hooks, "firing"):
            webhook = now
        if now > TRIAL_TIMEOUT:
            raise TimeoutError(
                f"{rig.tag}: after {TRIAL_TIMEOUT:g}s: verdicts {seen}, webhook "
                f"{'received' if webhook is not None else 'not received'}"
            )
        slept = time.monotonic()
        await asyncio.sleep(POLL)
        late = max(late, time.monotonic() - slept - POLL)
    fires = await _fires_at(rig)
    assert first is not None
    expected = {"healthy", "degraded", "failover_recommended", "failed_over"}
    notes = [
        f"{a.config.agent.vantage}: {' -> '.join(trail)}"
        for a, trail in zip(rig.agents, seen, strict=True)
        if set(trail) - expected
    ]
    quorum = rig.agents[0].config.quorum
    return Trial(
        rig.setting.name,
        rig.index,
        phase,
        sorted(down.values())[quorum - 1] if len(down) >= quorum else None,
        first,
        every,
        None if fires is None else fires - wall,
        webhook,
        confirmations,
        late,
        notes,
    )


def release(rig: Rig) -> None:
    """The primary answers again and an operator releases failback (one agent; the others
    learn it from their peers)."""
    rig.platform.recover(rig.primary)
    for agent in rig.agents:
        try:
            agent.control_action(ActionKind.FAILBACK, rig.primary, by="bench", reason="next trial")
        except ValueError:
            continue
        return
    rig.notes.append(f"{rig.tag}: no agent held a latch to release after the trial")


async def run_rig(
    setting: Setting, index: int, trials: int, rng: random.Random, out: list[Trial]
) -> None:
    """One rig: its platform, agents, Prometheus and Alertmanager, and `trials` outages."""
    async with contextlib.AsyncExitStack() as stack:
        platform = await stack.enter_async_context(Platform(list(SITES)))
        config = rig_config(setting, platform)
        primary = next(s.name for s in config.sites if s.role == "primary")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="failsight-det-")))
        rules = workdir / "rules.yml"
        rules.write_text(render_rules(rules_input(config, failover_for=setting.failover_for)))
        agents = [Agent(c) for c in vantage_configs(config)]
        tasks = [asyncio.create_task(a.run(install_signals=False)) for a in agents]

        async def stop_agents() -> None:
            for agent in agents:
                agent.stop()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks)

        stack.push_async_callback(stop_agents)
        while not all(a.ready and a.port for a in agents):
            for task in tasks:
                if task.done():
                    task.result()
            await asyncio.sleep(0.05)
        hooks = await stack.enter_async_context(WebhookRecorder())
        am_config = alertmanager_example_config(hooks.url)
        # The test helper cuts the waits to a second: restore the shipped routing's.
        shipped = yaml.safe_load(
            (Path(__file__).parents[1] / "alerts" / "alertmanager.example.yml").read_text()
        )
        am_config["route"] = shipped["route"]
        am = await stack.enter_async_context(await start_alertmanager(am_config))
        prom = await stack.enter_async_context(
            await start_prometheus(
                [f"127.0.0.1:{a.port}" for a in agents],
                [rules],
                scrape_interval=_prom_duration(setting.scrape),
                eval_interval=_prom_duration(setting.scrape),
                alertmanager_url=am.url,
                extra_args=[RESEND_DELAY],
            )
        )
        rig = Rig(setting, index, platform, agents, hooks, prom, am, primary)
        try:
            for i in range(trials):
                await settle(rig, after_failover=i > 0)
                t = await trial(rig, rng.uniform(0, setting.interval))
                out.append(t)
                print(
                    f"{rig.tag} trial {i + 1}/{trials}: fault after a {t.phase:.1f}s wait; "
                    f"a quorum of views down {'-' if t.quorum is None else f'{t.quorum:.1f}s'}, "
                    f"first agent {t.first:.1f}s, every agent {t.verdict:.1f}s, Prometheus fires "
                    f"{'?' if t.fires is None else f'{t.fires:.1f}s'}, webhook {t.webhook:.1f}s "
                    f"({t.webhook - t.verdict:+.1f}s after the verdict); "
                    f"{t.confirmations} confirmation runs"
                    + (f"; unexpected verdicts: {'; '.join(t.notes)}" if t.notes else ""),
                    flush=True,
                )
                release(rig)
        finally:
            for note in rig.notes:
                print(f"note: {note}", flush=True)


def _spread(values: Sequence[float]) -> tuple[str, str]:
    if not values:
        return "-", "-"
    return (
        f"{statistics.median(values):.1f} s",
        f"{min(values):.1f}-{max(values):.1f} s",
    )


def _range(low: float, high: float) -> str:
    return f"{low:g}-{high:g} s"


def report(settings: Sequence[Setting], trials: Sequence[Trial]) -> list[str]:
    """The table, the breakdown and the goals, as printed lines (the last is the summary)."""
    lines = [
        "",
        "| setting | from a site outage to | median | range | n | floor the settings allow |",
        "|---|---|---|---|---|---|",
    ]
    summary = []
    for s in settings:
        mine = [t for t in trials if t.setting == s.name]
        verdicts = [t.verdict for t in mine]
        webhooks = [t.webhook for t in mine]
        for what, values, floor in (
            ("`failover_recommended`/`failed_over` on every agent", verdicts, s.verdict_floor()),
            (f"`{ALERT}` at the failover webhook", webhooks, s.webhook_floor()),
        ):
            median, spread = _spread(values)
            lines.append(
                f"| {s.title} | {what} | {median} | {spread} | {len(values)} | {_range(*floor)} |"
            )
        v, w = _spread(verdicts)[0], _spread(webhooks)[0]
        summary.append(f"{s.title}: verdict {v}, webhook {w} (n={len(mine)})")
    lines += [
        "",
        "where the time goes (medians; range):",
        "| setting | a quorum of views down | first agent | every agent | Prometheus fires "
        "| webhook | webhook - verdict | confirmation runs per trial |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in settings:
        mine = [t for t in trials if t.setting == s.name]
        cells = [
            _spread([t.quorum for t in mine if t.quorum is not None]),
            _spread([t.first for t in mine]),
            _spread([t.verdict for t in mine]),
            _spread([t.fires for t in mine if t.fires is not None]),
            _spread([t.webhook for t in mine]),
            _spread([t.webhook - t.verdict for t in mine]),
        ]
        confirmations = [t.confirmations for t in mine]
        lines.append(
            f"| {s.title} | "
            + " | ".join(f"{m} ({r})" for m, r in cells)
            + f" | {statistics.median(confirmations) if confirmations else '-'} |"
        )
    for s in settings:
        mine = [t for t in trials if t.setting == s.name]
        if s.goals is None or not mine:
            continue
        margin, gap = s.goals
        bound = s.interval + margin
        verdicts = [t.verdict for t in mine]
        gaps = [t.webhook - t.verdict for t in mine]
        lines += [
            "",
            f"goals for {s.title}:",
            _goal(f"verdict <= interval + {margin:g} s = {bound:g} s", verdicts, bound),
            _goal(f"webhook <= verdict + {gap:g} s", gaps, gap),
        ]
    if trials:
        worst = max(t.late for t in trials)
        lines += [
            "",
            f"harness: the verdict poll (every {POLL * 1000:g} ms) woke at most "
            f"{worst * 1000:.0f} ms late",
        ]
    lines += ["", "summary: " + "; ".join(summary)]
    return lines


def _goal(what: str, values: Sequence[float], bound: float) -> str:
    median = statistics.median(values)
    within = sum(1 for v in values if v <= bound)
    verdict = (
        "met" if within == len(values) else "met by the median" if median <= bound else "not met"
    )
    return (
        f"  {what}: {verdict} (median {median:.1f} s, max {max(values):.1f} s; "
        f"{within} of {len(values)} trials within)"
    )


async def main_async(names: Sequence[str], repeat: int, rigs: int, scale: float, seed: int) -> int:
    settings = [SETTINGS[n].scaled(scale) for n in names]
    rng = random.Random(seed)
    started = time.monotonic()
    print(
        f"detection benchmark: {repeat} trial(s) per setting on {rigs} rig(s) each, in parallel; "
        f"random seed {seed}; Alertmanager routing as shipped (failover route group_wait 0s, "
        f"group_interval 1m); flap damping off and Prometheus {RESEND_DELAY} (each trial is a "
        "separate incident, see the comments)"
    )
    for s in settings:
        print(f"{s.title}: {s.describe()}")
        print(
            f"  floor: verdict {_range(*s.verdict_floor())} (first failing run within "
            f"{_s(s.interval)}, then {s.failure_threshold - 1} more {_s(s.step)} apart, then "
            f"up to one peer poll of {_s(s.peer_interval)}); webhook {_range(*s.webhook_floor())} "
            f"(+ up to {_s(s.scrape)} scrape + up to {_s(s.scrape)} evaluation + for: "
            f"{_s(s.failover_for)})",
            flush=True,
        )
    jobs = []
    for s in settings:
        n = max(1, min(rigs, repeat))
        for i in range(n):
            share = repeat // n + (1 if i < repeat % n else 0)
            if share:
                jobs.append((s, i + 1, share, random.Random(rng.random())))
    trials: list[Trial] = []
    outcomes = await asyncio.gather(
        *(run_rig(s, i, k, r, trials) for s, i, k, r in jobs), return_exceptions=True
    )
    failed = 0
    for (s, i, _, _), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            failed += 1
            print(f"rig {s.name}#{i} failed: {type(outcome).__name__}: {outcome}", flush=True)
    print(f"all rigs done after {time.monotonic() - started:.0f}s")
    for line in report(settings, trials):
        print(line)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--settings",
        default="today,fast",
        help=f"comma-separated, from {', '.join(SETTINGS)} (default: today,fast)",
    )
    p.add_argument("--repeat", type=int, help="trials per setting (default 5; 1 with --quick)")
    p.add_argument("--rigs", type=int, help="parallel rigs per setting (default: one per trial)")
    p.add_argument("--seed", type=int, help="for the random fault phases (default: random)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="one trial per setting, every duration divided by 10: checks the harness only",
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown or not names:
        p.error(f"unknown setting(s) {unknown}: choose from {', '.join(SETTINGS)}")
    repeat = args.repeat or (1 if args.quick else 5)
    rigs, scale = (1, 10.0) if args.quick else (args.rigs or repeat, 1.0)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    logging.disable(logging.WARNING)  # the agents' per-run lines would drown the figures
    raise SystemExit(asyncio.run(main_async(names, repeat, rigs, scale, seed)))


if __name__ == "__main__":
    main()
