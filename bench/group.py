"""Vantage groups: synthetic traffic, intra-group traffic and hand-over time against group size.

Run: `.venv/bin/python -m bench.group` (about 4 minutes) or `--quick` (about a minute). Nothing is
asserted. Every agent is a real `failsight run` process on a free loopback port, every member of
one vantage (`bench`) with the same `--checks` one-step journeys (distinct paths, `critical:
false` so that each is placed by its own name; a site's critical journeys would all stay on one
member) every `--interval` against one loopback aiohttp target, in a child process, that records
each request's time, path and member (the member's name rides in the query: `?m=m3`). Members
find each other through a static `agent.group.members` list of their URLs.

(1) Synthetic requests per interval against member count: for each N in `--members`, N members
    of one group and, in the same run, N independent agents without `agent.group` (what a
    DaemonSet did before: every agent runs every check). Once every member's `/v1/view` lists N
    live members, the target's requests are counted over `--window` seconds: requests per
    interval (goal: the number of checks, whatever N), the most members running one check in
    one of its intervals (goal: 1), checks run by more than one member or by none in the
    window, and each agent's CPU over the window.
(2) Intra-group traffic: each member's `failsight_group_fetches_total` (scraped before and after
    the same window), total and per member, per second, against docs/groups.md (each member
    asks each other member once per refresh, at most 10 requests a second in all:
    `min((N - 1) / refresh, 10)`); with the size of the largest member's
    `/v1/view?scope=member` answer, for the bytes.
(3) Hand-over: a group of `--handover-members` (3); once settled and one interval later, one
    member (another each repeat) is killed with SIGKILL; for each check it ran (its
    `/v1/view?scope=member` `checks`, checked against who the target saw run them), the time
    from the kill to the first request for that check's path from another member. Median and
    max per repeat, `--repeat` times with fresh processes, against the goal refresh + interval
    (+ the member request timeout when a dead member's address does not refuse at once: on
    loopback it refuses; `--freeze` stops the member with SIGSTOP instead, so that requests to
    it wait out the timeout, as for a hung member).

`--critical` makes the journeys critical: all of the one site's then go to one member, whose
`/v1/view?scope=member` answer changes with every run (the site's last run), so the other
members' requests to it are answered 200 rather than 304.

The machine is shared and the processes are not pinned (up to 2 x 10 agents on 2 cores): the
load average is printed with every part.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.blackbox import cpu_seconds, free_port, metric_sum, stop_process, write_summary
from bench.target import loopback_listener

ROOT = Path(__file__).resolve().parent.parent
VANTAGE = "bench"
SITE = "bench"
TOKEN = "bench-group-view-token"  # members send it to each other, as peers do
FETCH_CAP_PER_S = 10.0  # docs/groups.md: a member asks the others at most 10 times a second
RECORDS = "/_bench/records"  # the counting target's own endpoint, never a check's path


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    """`median (min-max)` for a table cell; `n/a` for nothing."""
    if not values:
        return "n/a"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


# -- the counting target -------------------------------------------------------------------------


def _serve_counting(sock: socket.socket) -> None:
    from aiohttp import web

    # (wall-clock time, path, member): wall clock, because the kill in (3) is timed by the
    # parent with the same clock, in another process.
    records: list[tuple[float, str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        if request.path == RECORDS:
            since = float(request.query.get("since", "0"))
            until = float(request.query.get("until", "inf"))
            return web.json_response([r for r in records if since <= r[0] < until])
        records.append((time.time(), request.path, request.query.get("m", "")))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


class CountingTarget:
    """`with CountingTarget() as target:` an aiohttp server on a free loopback port in a child
    process, answering every path 200 and recording who asked for what when."""

    def __init__(self) -> None:
        self.sock, self.url = loopback_listener()
        self.proc: Any = None

    def __enter__(self) -> CountingTarget:
        ctx = multiprocessing.get_context("fork")
        self.proc = ctx.Process(target=_serve_counting, args=(self.sock,), daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                self.records(0, 0)
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("the counting target did not start")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(5)
        self.sock.close()

    def records(self, since: float, until: float = math.inf) -> list[tuple[float, str, str]]:
        query = f"?since={since}" + (f"&until={until}" if until != math.inf else "")
        with urllib.request.urlopen(self.url + RECORDS + query, timeout=10) as response:
            return [(float(t), str(p), str(m)) for t, p, m in json.loads(response.read())]


# -- the agents --------------------------------------------------------------------------------


def check_path(i: int) -> str:
    return f"/c{i:03d}"


def agent_config(
    *,
    member: str,
    port: int,
    urls: Sequence[str] | None,
    target_url: str,
    checks: int,
    interval: float,
    refresh: float,
    timeout: float,
    critical: bool = False,
) -> dict[str, Any]:
    """One agent's config; `urls` None: no group (the agent runs every check)."""
    agent: dict[str, Any] = {
        "vantage": VANTAGE,
        "listen": f"127.0.0.1:{port}",
        "view_token": TOKEN,
    }
    if urls is not None:
        agent["group"] = {
            "member": member,
            "members": list(urls),
            "refresh": f"{refresh:g}s",
            "timeout": f"{timeout:g}s",
        }
    return {
        "agent": agent,
        "sites": [{"name": SITE, "role": "primary", "base_url": target_url}],
        "journeys": [
            {
                "name": check_path(i).lstrip("/"),
                "interval": f"{interval:g}s",
                "timeout": "5s",
                "critical": critical,
                "steps": [
                    {
                        "name": "get",
                        "method": "GET",
                        "path": check_path(i),
                        "query": {"m": member},
                        "expect": {"status": 200},
                    }
                ],
            }
            for i in range(checks)
        ],
    }


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any, int]:
    """(status, parsed body or None, body bytes) of GET `url` with the view token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return int(response.status), json.loads(body), len(body)
    except urllib.error.HTTPError as exc:
        body = exc.read()
        with contextlib.suppress(ValueError):
            return exc.code, json.loads(body), len(body)
        return exc.code, None, len(body)


@dataclass
class Agent:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def view(self, scope: str = "group") -> Any:
        return http_json(f"{self.url}/v1/view?scope={scope}", 3.0)[1]

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return str(response.read().decode())

    def alive(self) -> bool:
        return self.proc.poll() is None


@contextlib.contextmanager
def agents(
    n: int,
    *,
    grouped: bool,
    target_url: str,
    args: argparse.Namespace,
    tmp: Path,
    label: str,
) -> Iterator[list[Agent]]:
    """N `failsight run` processes, members of one group (`grouped`) or independent; all of
    them answering /readyz. Always stopped."""
    ports = [free_port() for _ in range(n)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    started: list[Agent] = []
    try:
        for i, port in enumerate(ports):
            name = f"m{i}"
            data = agent_config(
                member=name,
                port=port,
                urls=urls if grouped else None,
                target_url=target_url,
                checks=args.checks,
                interval=args.interval,
                refresh=args.refresh,
                timeout=args.timeout,
                critical=args.critical,
            )
            config = tmp / f"{label}-{name}.yaml"
            config.write_text(json.dumps(data, indent=1))  # JSON is YAML
            log = tmp / f"{label}-{name}.log"
            # The per-run JSON log lines go to a file: read it when something looks wrong.
            proc = subprocess.Popen(
                [sys.executable, "-m", "failsight", "run", "--config", str(config)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log.open("wb"),
            )
            started.append(Agent(name, port, proc, log))
        for agent in started:
            wait_ready(agent)
        yield started
    finally:
        for agent in started:
            stop_process(agent.proc)


def wait_ready(agent: Agent, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not agent.alive():
            raise SystemExit(
                f"{agent.name} exited {agent.proc.returncode}:\n{agent.log.read_text()[-3000:]}"
            )
        with contextlib.suppress(OSError):
            if http_json(f"{agent.url}/readyz", 1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"{agent.name} was not ready within {timeout:.0f}s")


def live_members(view: Any) -> int:
    """How many live members a group view lists (-1: no group in it)."""
    if not isinstance(view, dict) or not isinstance(view.get("group"), dict):
        return -1
    members = view["group"].get("members") or []
    return sum(1 for m in members if isinstance(m, dict) and m.get("state") == "live")


def settle(group: Sequence[Agent], timeout: float) -> float | None:
    """Seconds until every member's view lists len(group) live members; None on timeout."""
    start = time.monotonic()
    seen: list[int] = []
    while time.monotonic() - start < timeout:
        seen = []
        for agent in group:
            try:
                seen.append(live_members(agent.view()))
            except (OSError, ValueError):
                seen.append(0)
        if all(s == len(group) for s in seen):
            return time.monotonic() - start
        time.sleep(0.2)
    print(f"    did not settle in {timeout:.0f}s: live members seen {seen}", flush=True)
    for agent in group:
        with contextlib.suppress(OSError, ValueError):
            print(f"    {agent.name}: {json.dumps(agent.view().get('group'))}", flush=True)
    return None


# -- (1) and (2): a counting window --------------------------------------------------------------


@dataclass
class Window:
    n: int
    grouped: bool
    seconds: float
    settled_s: float | None
    requests: int
    per_check_max: int  # most members running one check in one of its intervals
    duplicated: int  # checks run by more than one member in the window
    unrun: int  # checks no one ran in the window
    first_duplicate_s: float | None  # when the first extra run happened, from the window's start
    cpu_share: list[float]  # each agent's CPU over the window, share of a core
    fetches: list[float]  # each member's group fetches in the window
    outcomes: dict[str, float] = field(default_factory=dict)
    view_bytes: int = 0  # the largest member's /v1/view?scope=member answer

    def per_interval(self, interval: float) -> float:
        return self.requests / (self.seconds / interval)


FETCHES = "failsight_group_fetches_total"
OUTCOMES = ("changed", "unchanged", "error")


def fetch_counts(agent: Agent) -> dict[str, float]:
    text = agent.metrics()
    return {o: metric_sum(text, FETCHES, outcome=o) for o in OUTCOMES}


def per_check(
    records: Sequence[tuple[float, str, str]], checks: int, interval: float, t0: float
) -> tuple[int, int, int, float | None]:
    """(most members running one check in one of its intervals, checks run by more than one
    member, checks not run, seconds into the window of the first interval with two).

    A group's check runs on its own grid (k * interval + its phase), so its intervals are
    counted from its first run in the window: run t goes to round((t - first) / interval), and
    runs of two members in one interval land in the same slot. Members are counted, not runs:
    independent agents run at random phases, and one agent's run half an interval from the
    first may round into its neighbour's slot; a member running a check twice shows in the
    requests per interval instead.
    """
    by_path: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for t, path, member in records:
        by_path[path].append((t, member))
    worst, duplicated, first_extra = 0, 0, None
    for i in range(checks):
        runs = sorted(by_path.get(check_path(i), []))
        if not runs:
            continue
        if len({m for _, m in runs}) > 1:
            duplicated += 1
        slots: dict[int, set[str]] = defaultdict(set)
        for t, member in runs:
            slots[round((t - runs[0][0]) / interval)].add(member)
        worst = max(worst, *(len(m) for m in slots.values()))
        for slot, members in slots.items():
            if len(members) > 1:
                extra = runs[0][0] + slot * interval - t0
                first_extra = extra if first_extra is None else min(first_extra, extra)
    unrun = sum(1 for i in range(checks) if check_path(i) not in by_path)
    return worst, duplicated, unrun, first_extra


def window(
    n: int, grouped: bool, target: CountingTarget, args: argparse.Namespace, tmp: Path
) -> Window:
    label = f"{'group' if grouped else 'alone'}{n}"
    with agents(n, grouped=grouped, target_url=target.url, args=args, tmp=tmp, label=label) as a:
        settled = settle(a, args.settle_timeout) if grouped else 0.0
        before = [fetch_counts(x) for x in a] if grouped else []
        cpu0 = [cpu_seconds(x.proc.pid) for x in a]
        t0, m0 = time.time(), time.monotonic()
        time.sleep(args.window)
        t1, m1 = time.time(), time.monotonic()
        cpu1 = [cpu_seconds(x.proc.pid) for x in a]
        after = [fetch_counts(x) for x in a] if grouped else []
        # The largest member's answer: the one owning a site's critical journeys carries its
        # opinion, and changes with every run of them.
        view_bytes = max(http_json(f"{x.url}/v1/view?scope=member")[2] for x in a) if grouped else 0
        dead = [x.name for x in a if not x.alive()]
        if dead:
            print(f"    died during the window: {', '.join(dead)}", flush=True)
    records = target.records(t0, t1)
    worst, duplicated, unrun, first_extra = per_check(records, args.checks, args.interval, t0)
    outcomes = {o: sum(b[o] - f[o] for f, b in zip(before, after, strict=True)) for o in OUTCOMES}
    return Window(
        n=n,
        grouped=grouped,
        seconds=t1 - t0,
        settled_s=settled,
        requests=len(records),
        per_check_max=worst,
        duplicated=duplicated,
        unrun=unrun,
        first_duplicate_s=first_extra,
        cpu_share=[(c1 - c0) / (m1 - m0) for c0, c1 in zip(cpu0, cpu1, strict=True)],
        fetches=[sum(b.values()) - sum(f.values()) for f, b in zip(before, after, strict=True)],
        outcomes=outcomes,
        view_bytes=view_bytes,
    )


def expected_fetches_per_member_s(n: int, refresh: float) -> float:
    """What docs/groups.md says a member asks of the others per second."""
    return min((n - 1) / refresh, FETCH_CAP_PER_S)


# -- (3) hand-over -----------------------------------------------------------------------------

_JOURNEY = re.compile(r"journey/(?P<journey>[^/]+)/")


def owned_paths(member_view: Any) -> list[str] | None:
    """The check paths a `/v1/view?scope=member` answer says the member runs (None: it names
    no checks). Accepts a list of names, of objects with a name, or a mapping by name."""
    if not isinstance(member_view, dict):
        return None
    checks = member_view.get("checks")
    if checks is None and isinstance(member_view.get("group"), dict):
        checks = member_view["group"].get("checks")
    if checks is None:
        return None
    names: list[str] = []
    items = checks.keys() if isinstance(checks, dict) else checks
    for item in items:
        if isinstance(item, dict):
            item = item.get("name") or item.get("check") or ""
        if m := _JOURNEY.search(f"{item}/"):
            names.append("/" + m["journey"])
    return sorted(names)


@dataclass
class Handover:
    member: str  # the member stopped
    owned: int
    times: list[float]  # per taken-over check, seconds from the kill
    not_taken: int
    view_vs_target: str  # "" when the view's checks match who the target saw running them
    handovers_in: float  # the survivors' failsight_group_handovers_total{direction="in"}


def handover(target: CountingTarget, args: argparse.Namespace, tmp: Path, rep: int) -> Handover:
    n = args.handover_members
    goal = args.refresh + args.interval + args.timeout
    with agents(
        n, grouped=True, target_url=target.url, args=args, tmp=tmp, label=f"handover{rep}"
    ) as group:
        if settle(group, args.settle_timeout) is None:
            raise SystemExit("the hand-over group did not settle")
        # One full interval of steady ownership: who ran what is then in the target's records.
        time.sleep(args.interval + 0.5)
        views = {a.name: owned_paths(a.view("member")) for a in group}
        if any(v is None for v in views.values()):
            raise SystemExit(f"/v1/view?scope=member names no checks: {group[0].view('member')}")
        # A different member each repeat (the first owning a check from m<rep>): the same one
        # would give up the same checks every time, their phases and all.
        turn = [group[(rep + i) % n] for i in range(n)]
        victim = next((a for a in turn if views[a.name]), turn[0])
        owned = views[victim.name] or []
        survivors = [a for a in group if a is not victim]
        in0 = sum(
            metric_sum(a.metrics(), "failsight_group_handovers_total", direction="in")
            for a in survivors
        )
        recent = target.records(time.time() - args.interval)
        ran = sorted({p for _, p, m in recent if m == victim.name})
        mismatch = "" if ran == owned else f"view says {owned}, the target saw it run {ran}"
        t_kill = time.time()
        # SIGKILL: the port refuses at once. SIGSTOP: the kernel still accepts connections
        # for it, so each request to it waits out the member timeout (a hung member).
        victim.proc.send_signal(signal.SIGSTOP if args.freeze else signal.SIGKILL)
        pending = set(owned)
        first: dict[str, float] = {}
        deadline = t_kill + 2 * goal + 3
        while pending and time.time() < deadline:
            time.sleep(0.25)
            for t, path, member in target.records(t_kill):
                if path in pending and member != victim.name:
                    first[path] = min(first.get(path, math.inf), t)
            pending -= set(first)
        victim.proc.kill()  # a stopped process takes SIGKILL, not SIGTERM
        victim.proc.wait(5)
        in1 = sum(
            metric_sum(a.metrics(), "failsight_group_handovers_total", direction="in")
            for a in survivors
        )
    return Handover(
        member=victim.name,
        owned=len(owned),
        times=sorted(t - t_kill for t in first.values()),
        not_taken=len(pending),
        view_vs_target=mismatch,
        handovers_in=in1 - in0,
    )


# -- report ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", default="1,3,10", help="group sizes, comma-separated")
    p.add_argument("--interval", type=float, default=2.0, help="every check's interval, s")
    p.add_argument("--checks", type=int, default=30)
    p.add_argument("--window", type=float, default=30.0, help="counting window, s")
    p.add_argument("--refresh", type=float, default=1.0, help="agent.group.refresh, s")
    p.add_argument("--timeout", type=float, default=2.0, help="agent.group.timeout, s")
    p.add_argument("--repeat", type=int, default=3, help="hand-over repeats")
    p.add_argument("--handover-members", type=int, default=3)
    p.add_argument(
        "--critical",
        action="store_true",
        help="critical journeys: all of the one site's go to one member, whose shard then "
        "changes with every run (the site's last run)",
    )
    p.add_argument(
        "--freeze",
        action="store_true",
        help="hand-over: SIGSTOP the member instead of SIGKILL (it hangs, does not refuse)",
    )
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--skip", action="append", choices=["traffic", "handover"], default=[])
    p.add_argument("--quick", action="store_true", help="--members 1,3 --window 10 --repeat 1")
    p.add_argument("--summary-json", help="write summary rows here (for bench/run_all.py)")
    p.add_argument("--results-json", help="write every measured figure here")
    args = p.parse_args(argv)
    if args.quick:
        args.members, args.window, args.repeat = "1,3", 10.0, 1
    sizes = [int(s) for s in args.members.split(",") if s.strip()]
    print(
        f"vantage groups: {args.checks} one-step journeys every {args.interval:g}s, members "
        f"{sizes}, refresh {args.refresh:g}s, member timeout {args.timeout:g}s, window "
        f"{args.window:g}s, hand-over {args.repeat} x {args.handover_members} members; "
        f"{os.cpu_count()} CPUs; load average {load()}",
        flush=True,
    )
    rows: list[dict[str, str]] = []
    results: dict[str, Any] = {"args": vars(args), "load_before": load()}
    with CountingTarget() as target, tempfile.TemporaryDirectory(prefix="failsight-group-") as d:
        tmp = Path(d)
        if "traffic" not in args.skip:
            windows: list[tuple[Window, Window]] = []
            for i, n in enumerate(sizes):
                # Alternate which goes first, so drift in the machine's load touches both.
                order = [False, True] if i % 2 == 0 else [True, False]
                got = {}
                for grouped in order:
                    w = window(n, grouped, target, args, tmp)
                    got[grouped] = w
                    print(
                        f"  N={n} {'group' if grouped else 'no group'}: {w.requests} requests "
                        f"in {w.seconds:.1f}s{settled_text(w)}; load {load()}",
                        flush=True,
                    )
                windows.append((got[False], got[True]))
            rows += traffic_report(windows, args)
            results["traffic"] = [[vars(a), vars(b)] for a, b in windows]
        if "handover" not in args.skip:
            overs = []
            for rep in range(args.repeat):
                h = handover(target, args, tmp, rep)
                overs.append(h)
                print(
                    f"  hand-over {rep + 1}/{args.repeat}: {h.owned} checks owned by the stopped "
                    f"member {h.member}, taken over after "
                    f"{', '.join(f'{t:.2f}' for t in h.times)} s; not taken over {h.not_taken}; "
                    f"handovers counted by the survivors {h.handovers_in:.0f}; load {load()}"
                    + (f"; MISMATCH {h.view_vs_target}" if h.view_vs_target else ""),
                    flush=True,
                )
            rows += handover_report(overs, args)
            results["handover"] = [vars(h) for h in overs]
    results["load_after"] = load()
    write_summary(args.summary_json, rows)
    if args.results_json:
        Path(args.results_json).write_text(json.dumps(results, indent=1))


def settled_text(w: Window) -> str:
    if not w.grouped:
        return ""
    if w.settled_s is None:
        return ", NEVER SETTLED"
    return f", settled {w.settled_s:.1f}s after /readyz"


def traffic_report(
    windows: Sequence[tuple[Window, Window]], args: argparse.Namespace
) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    print(
        f"\n(1) synthetic requests at the target per {args.interval:g}s interval "
        f"(goal with a group: {args.checks}, whatever N); max/check: the most members running "
        f"one check in one interval (goal: 1); CPU: each agent's share of a core, median (min-max)"
    )
    head = (
        f"{'N':>3} | {'no group: req/interval':>22} | {'max/check':>9} | "
        f"{'group: req/interval':>19} | {'max/check':>9} | {'run by >1':>9} | "
        f"{'not run':>7} | {'settled s':>9} | {'CPU % no group':>17} | {'CPU % group':>17}"
    )
    print(head)
    print("-" * len(head))
    for alone, group in windows:
        print(
            f"{group.n:>3} | {alone.per_interval(args.interval):>22.1f} | "
            f"{alone.per_check_max:>9} | {group.per_interval(args.interval):>19.1f} | "
            f"{group.per_check_max:>9} | {group.duplicated:>9} | {group.unrun:>7} | "
            f"{'never' if group.settled_s is None else f'{group.settled_s:.1f}':>9} | "
            f"{spread([c * 100 for c in alone.cpu_share]):>17} | "
            f"{spread([c * 100 for c in group.cpu_share]):>17}"
        )
        if group.first_duplicate_s is not None:
            print(f"      N={group.n}: first extra run {group.first_duplicate_s:.1f}s into it")
        met = (
            abs(group.per_interval(args.interval) - args.checks) <= 0.05 * args.checks
            and group.per_check_max <= 1
        )
        rows.append(
            {
                "bench": "group",
                "figure": f"requests per {args.interval:g}s, {args.checks} checks, N={group.n}: "
                "group / no group (most members running a check in one interval)",
                "value": f"{group.per_interval(args.interval):.1f} ({group.per_check_max}) / "
                f"{alone.per_interval(args.interval):.1f} ({alone.per_check_max})",
                "goal": f"{args.checks} (1)",
                "met": "yes" if met else "no",
            }
        )
    print(
        f"\n(2) requests among members (failsight_group_fetches_total), per second; expected: "
        f"each member asks each other one once per {args.refresh:g}s refresh, at most "
        f"{FETCH_CAP_PER_S:g}/s in all; outcomes per second in all"
    )
    head = (
        f"{'N':>3} | {'total/s':>8} | {'expected':>8} | {'per member/s':>20} | "
        f"{'expected':>8} | {'changed/unchanged/error':>24} | "
        f"{'largest 200':>14}"
    )
    print(head)
    print("-" * len(head))
    for _, group in windows:
        if group.n < 2:
            continue
        per = [f / group.seconds for f in group.fetches]
        expected = expected_fetches_per_member_s(group.n, args.refresh)
        outcomes = "/".join(f"{group.outcomes[o] / group.seconds:.1f}" for o in OUTCOMES)
        print(
            f"{group.n:>3} | {sum(per):>8.1f} | {expected * group.n:>8.1f} | "
            f"{spread(per, '{:.2f}'):>20} | {expected:>8.2f} | {outcomes:>24} | "
            f"{group.view_bytes:>12} B"
        )
        rows.append(
            {
                "bench": "group",
                "figure": f"requests among members per second, N={group.n}: total / per member",
                "value": f"{sum(per):.1f} / {spread(per, '{:.2f}')}",
                "goal": f"{expected * group.n:.1f} / {expected:.2f}",
                "met": "yes" if sum(per) <= expected * group.n * 1.1 else "no",
            }
        )
    return rows


def handover_report(overs: Sequence[Handover], args: argparse.Namespace) -> list[dict[str, str]]:
    goal = args.refresh + args.interval
    medians = [statistics.median(h.times) for h in overs if h.times]
    maxes = [max(h.times) for h in overs if h.times]
    missed = sum(h.not_taken for h in overs)
    how = "SIGSTOP" if args.freeze else "SIGKILL"
    print(
        f"\n(3) hand-over after {how} of one of {args.handover_members} members, seconds from "
        f"the kill to another member's first run of each of its checks; goal refresh + interval "
        f"= {goal:g}s (+ {args.timeout:g}s member timeout = {goal + args.timeout:g}s)"
    )
    print(
        f"  median per repeat {spread(medians, '{:.2f}')} s; max per repeat "
        f"{spread(maxes, '{:.2f}')} s over {len(overs)} repeats of "
        f"{', '.join(str(h.owned) for h in overs)} checks; never taken over: {missed}"
    )
    return [
        {
            "bench": "group",
            "figure": f"hand-over after {how}, N={args.handover_members}: median / max per "
            f"repeat, s ({len(overs)} repeats)",
            "value": f"{spread(medians, '{:.2f}')} / {spread(maxes, '{:.2f}')}"
            + (f"; {missed} never taken over" if missed else ""),
            "goal": f"<= {goal:g} (+ {args.timeout:g})",
            "met": "yes" if maxes and max(maxes) <= goal + args.timeout and not missed else "no",
        }
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
