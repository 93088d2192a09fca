"""The status page in a real headless Chromium, driven over the DevTools protocol, against an
agent watching the simulated platform: rendering, live updates, escaping, outages, failovers and
failbacks, holds, the last hour's timeline, phones."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from failsight.agent.demo.simulator import Fault, Platform
from tests.fixtures.dnsmasq import Dnsmasq
from tests.fixtures.oidc import AUDIENCE, CLIENT_ID, CLIENT_SECRET, OidcIssuer
from tests.fixtures.platform import (
    SITES,
    demo_config_data,
    free_port,
    running_agent,
    three_agents,
    write_config,
)
from tests.fixtures.postgres import PgPair

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the tests run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
)
STATIC = Path(__file__).resolve().parents[2] / "agent" / "static"
STATUS_PAGE = STATIC / "status.html"
STATUS_SCRIPT = STATIC / "status.js"
STATUS_STYLES = STATIC / "status.css"
SCREENSHOT_FOR_THE_LEAD = Path("/tmp/status-page.png")
FAILED_OVER_SCREENSHOT = Path("/tmp/status-page-failed-over.png")
HELD_SCREENSHOT = Path("/tmp/status-page-held.png")
ADMIN_TOKEN = "status-page-admin-token"
CLOCK = r"(\d\d:\d\d:\d\d|\d{4}-\d\d-\d\d \d\d:\d\d) UTC"  # how the page writes times
HOSTILE_SITE = "<script>alert(1)</script>x"
HOSTILE_JOURNEY = "<img src=x onerror=alert(2)>"

# What the page shows, read from the live DOM after its own scripts ran.
SNAPSHOT = """(() => {
  const cells = (tr) => [...tr.cells].map((c) => c.textContent);
  const banner = document.getElementById("banner");
  const outage = document.getElementById("outage");
  const text = (root, selector) => {
    const node = root.querySelector(selector);
    return node ? node.textContent : null;
  };
  return {
    rows: [...document.querySelectorAll("#matrix tbody tr[data-site]")].map((tr) => ({
      site: tr.dataset.site,
      verdict: tr.querySelector(".verdict").textContent,
      vantages: Object.fromEntries([...tr.querySelectorAll("td[data-vantage]")]
        .map((td) => [td.dataset.vantage, td.textContent])),
    })),
    reasons: Object.fromEntries([...document.querySelectorAll("#sites article[data-site]")]
      .map((a) => [a.dataset.site, [...a.querySelectorAll(".reasons li")]
        .map((li) => li.textContent)])),
    steps: Object.fromEntries([...document.querySelectorAll("#journeys article[data-check]")]
      .map((a) => [a.dataset.check, [...a.querySelectorAll("tr[data-step]")].map(cells)])),
    replication: [...document.querySelectorAll("#replication article")].map((a) => ({
      ok: a.querySelector(".card-head .badge").textContent === "ok",
      lines: [...a.querySelectorAll(".replication p")].map((p) => p.textContent),
    })),
    site_replication: Object.fromEntries([...document.querySelectorAll("#sites article")]
      .map((a) => [a.dataset.site, [...a.querySelectorAll(".replication p")]
        .map((p) => p.textContent)])),
    dependencies: Object.fromEntries([...document.querySelectorAll("#dependencies [data-kind]")]
      .map((d) => [d.dataset.kind, [...d.querySelectorAll("tr[data-check]")].map(cells)])),
    cards: Object.fromEntries([...document.querySelectorAll("#sites article[data-site]")]
      .map((a) => [a.dataset.site, {
        verdict: text(a, ".card-head .verdict"),
        flags: [...a.querySelectorAll(".card-head .flag")].map((b) => b.textContent),
        current: text(a, ".card-head .current .badge"),
        latch: text(a, ".latch-line"),
        hold: text(a, ".hold-line"),
        hints: Object.fromEntries([...a.querySelectorAll("[data-hint]")]
          .map((h) => [h.dataset.hint, h.textContent])),
      }])),
    timeline: Object.fromEntries([...document.querySelectorAll("#timeline article[data-site]")]
      .map((a) => [a.dataset.site, {
        bands: Object.fromEntries([...a.querySelectorAll(".band")].map((b) =>
          [b.dataset.band, [...b.querySelectorAll(".seg")].map((s) => s.dataset.state)])),
        ticks: [...a.querySelectorAll(".tick")].map((t) => ({
          kind: t.dataset.kind, title: t.title, left: parseFloat(t.style.left)})),
        axis: [...a.querySelectorAll(".axis span")].map((s) => s.textContent),
        actions: [...a.querySelectorAll(".tl-actions li")].map((li) => li.textContent),
      }])),
    banner: banner.hidden ? null : banner.textContent,
    outage: outage.hidden ? null : [...outage.children].map((p) => p.textContent),
    stale: document.body.classList.contains("stale"),
    refreshes: Number(document.documentElement.dataset.refreshes || 0),
    scripts: document.querySelectorAll("script").length,
    images: document.querySelectorAll("img").length,
    title: document.title,
    text: document.body.innerText,
  };
})()"""


# --------------------------------------------------------------------------------------------
# The computed colours of one site's verdict band, and the outage banner's for comparison.
VERDICT_BAND_COLOURS = """((site) => {
  const article = [...document.querySelectorAll("#timeline article[data-site]")]
    .find((a) => a.dataset.site === site);
  const colour = (node) => getComputedStyle(node).backgroundColor;
  return {
    segments: [...article.querySelectorAll('.band[data-band="verdict"] .seg')].map((s) => ({
      state: s.dataset.state,
      colour: colour(s),
      end: parseFloat(s.style.left) + parseFloat(s.style.width),
    })),
    outage: colour(document.getElementById("outage")),
  };
})"""


# --------------------------------------------------------------------------------------------
# Chromium and the DevTools protocol


@dataclass
class Chromium:
    process: subprocess.Popen[bytes]
    port: int
    log: Path


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    # Chromium writes the port it bound (we asked for 0: any free one) into the profile.
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"chromium exited with {process.returncode}: {log.read_text()[-2000:]}")
        if active.is_file():
            first = active.read_text().split("\n", 1)[0].strip()
            if first.isdigit():
                return int(first)
        time.sleep(0.05)
    pytest.fail(f"chromium wrote no DevToolsActivePort in 30 s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """One headless Chromium for the module; each test opens its own tab."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = tmp_path_factory.mktemp("chromium-log") / "stderr.log"
    with log.open("wb") as stderr:
        # Its own session, so teardown can end Chromium's helper processes with it, and only them.
        process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        yield Chromium(process, _devtools_port(profile, process, log), log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@dataclass
class Page:
    """One browser tab over a DevTools websocket: commands, events, and DOM reads."""

    ws: aiohttp.ClientWebSocketResponse
    events: list[dict[str, Any]] = field(default_factory=list)
    _pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def read(self) -> None:
        """Dispatch replies to their commands and record events, until the socket closes."""
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                waiter = self._pending.pop(data["id"], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(data)
                continue
            self.events.append(data)
            if data.get("method") == "Page.javascriptDialogOpening":
                # An alert() would block the page: dismiss it (the test fails on it anyway).
                await self._post("Page.handleJavaScriptDialog", {"accept": True})
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("DevTools connection closed"))

    async def _post(self, method: str, params: dict[str, Any]) -> int:
        ident = next(self._ids)
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        return ident

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        ident = next(self._ids)
        self._pending[ident] = waiter
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        reply = await asyncio.wait_for(waiter, 20)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def snapshot(self) -> dict[str, Any]:
        value: dict[str, Any] = await self.evaluate(SNAPSHOT)
        return value

    async def wait_until_true(self, expression: str, timeout: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await self.evaluate(expression):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"never true: {expression}")
            await asyncio.sleep(0.05)

    async def wait_until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
    ) -> dict[str, Any]:
        """The first snapshot for which `predicate` holds (the page is never reloaded)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            shown = await self.snapshot()
            if predicate(shown):
                return shown
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the page never showed it; it shows:\n{shown['text']}")
            await asyncio.sleep(0.1)

    async def screenshot(self, *paths: Path) -> None:
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.send(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        )
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        for path in paths:
            path.write_bytes(png)

    def named(self, method: str) -> list[dict[str, Any]]:
        return [e["params"] for e in self.events if e.get("method") == method]

    def assert_no_page_errors(self) -> None:
        assert self.named("Runtime.exceptionThrown") == []
        assert self.named("Page.javascriptDialogOpening") == []
        console_errors = [
            e for e in self.named("Runtime.consoleAPICalled") if e["type"] in ("error", "assert")
        ]
        assert console_errors == []
        csp = [e for e in self.named("Log.entryAdded") if "Content Security" in e["entry"]["text"]]
        assert csp == []


@contextlib.asynccontextmanager
async def open_page(
    browser: Chromium, url: str, *, phone: bool = False, before_load: str | None = None
) -> AsyncIterator[Page]:
    """A tab showing `url` once its script has refreshed it; `before_load` is a script DevTools
    runs in the page before the page's own (outside its Content-Security-Policy)."""
    devtools = f"http://127.0.0.1:{browser.port}"
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{devtools}/json/new?about:blank") as response:
            assert response.status == 200, await response.text()
            target = await response.json()
        ws = await http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        reader = asyncio.create_task(page.read())
        try:
            for domain in ("Page", "Runtime", "Log", "Network"):
                await page.send(f"{domain}.enable")
            if before_load is not None:
                await page.send("Page.addScriptToEvaluateOnNewDocument", source=before_load)
            if phone:
                await page.send(
                    "Emulation.setDeviceMetricsOverride",
                    width=390,
                    height=844,
                    deviceScaleFactor=2,
                    mobile=True,
                )
            await page.send("Page.navigate", url=url)
            await page.wait_until_true(
                f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
            )
            await page.wait_until(lambda shown: shown["refreshes"] >= 1)
            yield page
        finally:
            await ws.close()
            await reader  # ends when the socket closes
            async with http.get(f"{devtools}/json/close/{target['id']}"):
                pass


# --------------------------------------------------------------------------------------------
# Agents to look at


def _free_port() -> int:
    """A loopback port nothing listens on: refused connections, or free for a server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_config(platform: Platform) -> dict[str, Any]:
    """The demo's journey on the simulated platform, one agent alone, nothing else."""
    return demo_config_data(platform, replication=[], slos=[], peers=[])


def config_with_dependencies(
    platform: Platform, issuer: OidcIssuer, dns_port: int, tls_port: int, pg: PgPair
) -> dict[str, Any]:
    """Every kind of check: journeys, a real PostgreSQL primary and replica, a healthy IdP, a
    DNS name answered by dnsmasq, and a TLS endpoint where nothing listens (a failing one)."""
    data = base_config(platform)
    data["replication"] = [
        {
            "cluster": "orders-db",
            "rpo": "30s",
            "interval": "1s",
            "primary": {"site": "aws-use1", "dsn": pg.primary.dsn()},
            "replicas": [{"site": "gcp-euw1", "dsn": pg.replica.dsn()}],
        }
    ]
    data["idps"] = [
        {
            "name": "corp-idp",
            "issuer": issuer.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "audience": AUDIENCE,
            "interval": "1s",
            "timeout": "1s",
        }
    ]
    data["dns"] = [
        {
            "name": "orders.test",
            "interval": "1s",
            "resolvers": [{"name": "local", "address": "127.0.0.1", "port": dns_port}],
            "answers": {"aws-use1": ["127.0.0.11"], "gcp-euw1": ["127.0.0.12"]},
        }
    ]
    data["tls"] = [{"name": "orders-cert", "host": "127.0.0.1", "port": tls_port, "interval": "1s"}]
    return data


def verdicts(shown: dict[str, Any]) -> dict[str, str]:
    return {row["site"]: row["verdict"] for row in shown["rows"]}


async def operator(agent_port: int, method: str, site: str, action: str, **body: str) -> None:
    """An operator's control call, as `failsight failback` / `failsight hold` make it."""
    url = f"http://127.0.0.1:{agent_port}/v1/sites/{site}/{action}"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()


async def verdict_band(page: Page, site: str) -> dict[str, Any]:
    value: dict[str, Any] = await page.evaluate(f"{VERDICT_BAND_COLOURS}({json.dumps(site)})")
    return value


# --------------------------------------------------------------------------------------------
# Tests


async def test_page_renders_the_verdict_and_follows_a_site_outage_without_reloading(
    chromium: Chromium,
    platform: Platform,
    oidc_issuer: OidcIssuer,
    dnsmasq_factory: Callable[..., Dnsmasq],
    pg_pair: PgPair,
    tmp_path: Path,
) -> None:
    dns = dnsmasq_factory({"orders.test": ["127.0.0.11"]})
    data = config_with_dependencies(platform, oidc_issuer, dns.port, _free_port(), pg_pair)
    config = write_config(tmp_path / "failsight.yaml", data)
    async with running_agent(config) as agent:
        base = f"http://127.0.0.1:{agent.port}/"
        async with open_page(chromium, base + "?refresh=1") as page:
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s) == {"aws-use1": "healthy", "gcp-euw1": "healthy"}
                    and len(s["steps"]) == 2
                    and all(s["dependencies"][kind] for kind in ("idps", "dns", "tls"))
                    and s["replication"]
                )
            )
            (replication,) = shown["replication"]
            (line,) = replication["lines"]
            assert replication["ok"] and line.startswith("Replica gcp-euw1: lag "), line
            assert line.endswith("against RPO 30 s within RPO"), line
            assert shown["rows"][0]["vantages"] == {"aws-use1": "up"}
            steps = shown["steps"]["journey/order-to-invoice/aws-use1"]
            names = [row[0] for row in steps]
            assert names[:6] == [
                "order_submit",
                "allocation",
                "allocation_done",
                "pick",
                "shipment",
                "invoice",
            ]
            assert "cancel_order" in names  # the cleanup step is listed too
            assert steps[0][1:3] == ["ok", "201"]
            (idp,) = shown["dependencies"]["idps"]
            assert idp[1:3] == ["corp-idp", "ok"]
            (dns_row,) = shown["dependencies"]["dns"]
            assert dns_row[2] == "ok"
            assert dns_row[3].startswith("resolves to aws-use1 · answers 127.0.0.11"), dns_row
            (tls_row,) = shown["dependencies"]["tls"]
            assert tls_row[2] == "failed [connect]"
            assert shown["outage"] is None
            assert "[object " not in shown["text"]  # every piece rendered as a node, not a string
            # Freshness of every piece, as "N s ago".
            assert re.search(r"verdict generated \d+s ago", shown["text"])
            assert re.search(r"ran \d+s ago", shown["text"])
            assert re.search(r"verdict since \d+s ago", shown["text"])

            # Mark this document: a reload would lose the mark.
            await page.evaluate("window.sameDocument = 'yes'")
            before = shown["refreshes"]
            platform.set_fault("aws-use1", Fault(kind="outage"))
            # The verdict recommends the failover and latches it at once: failed over it stays.
            shown = await page.wait_until(lambda s: verdicts(s).get("aws-use1") == "failed_over")
            assert await page.evaluate("window.sameDocument") == "yes"
            assert shown["refreshes"] > before
            bands = (await page.wait_until(lambda s: s["timeline"]["aws-use1"]["ticks"]))[
                "timeline"
            ]["aws-use1"]["bands"]
            assert bands["verdict"][0] == "healthy", bands
            assert bands["verdict"][-2:] == ["failover_recommended", "failed_over"], bands
            assert bands["aws-use1"][0] == "up" and bands["aws-use1"][-1] == "down", bands
            reasons = shown["reasons"]["aws-use1"]
            assert reasons[0].startswith("failed over to gcp-euw1 at "), reasons
            assert any(r.startswith("down in 1 of 1 views (quorum 1)") for r in reasons)
            assert any("[http_status]" in r for r in reasons)
            assert any(r.startswith("orders-db lag ") and "within RPO 30s" in r for r in reasons)
            # The verdict's own replication block: the lag the failover decision relied on.
            (line,) = shown["site_replication"]["aws-use1"]
            assert line.startswith("Replication orders-db to gcp-euw1: lag "), line
            assert line.endswith("against RPO 30 s within RPO"), line
            assert shown["reasons"]["gcp-euw1"] == []
            assert "No reasons to report." in shown["text"]
            assert shown["rows"][0]["vantages"] == {"aws-use1": "down"}
            assert shown["title"].startswith("failed_over aws-use1")
            (line,) = shown["outage"]
            assert re.fullmatch(
                r"aws-use1 failed over to gcp-euw1 at \d\d:\d\d:\d\d UTC \(latched\): its "
                r"health endpoint answers 503 until failback\.",
                line,
            ), line
            shown = await page.wait_until(
                lambda s: (
                    s["steps"]["journey/order-to-invoice/aws-use1"][0][1] == "failed [http_status]"
                )
            )
            assert shown["steps"]["journey/order-to-invoice/aws-use1"][0][2] == "503"
            await page.screenshot(tmp_path / "status-page.png", SCREENSHOT_FOR_THE_LEAD)

            page.assert_no_page_errors()
            # Air-gapped: every request the page made went to the agent itself.
            urls = [e["request"]["url"] for e in page.named("Network.requestWillBeSent")]
            assert urls and all(url.startswith(base) for url in urls), urls
            assert {u.removeprefix(base).split("?")[0] for u in urls} >= {
                "",
                "v1/verdict",
                "v1/results",
                "v1/timeline",
            }


async def test_names_from_config_are_shown_as_text_never_markup(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    data = base_config(platform)
    data["sites"][1]["name"] = HOSTILE_SITE
    data["journeys"][0]["name"] = HOSTILE_JOURNEY
    config = write_config(tmp_path / "failsight.yaml", data)
    assert [s.name for s in config.sites] == ["aws-use1", HOSTILE_SITE]
    async with running_agent(config) as agent:
        url = f"http://127.0.0.1:{agent.port}/?refresh=1"
        async with open_page(chromium, url) as page:
            shown = await page.wait_until(
                lambda s: verdicts(s).get(HOSTILE_SITE) == "healthy" and len(s["steps"]) == 2
            )
            assert HOSTILE_SITE in shown["text"] and HOSTILE_JOURNEY in shown["text"]
            assert [row["site"] for row in shown["rows"]] == ["aws-use1", HOSTILE_SITE]
            assert f"journey/{HOSTILE_JOURNEY}/{HOSTILE_SITE}" in shown["steps"]
            # The page's own script is the only one; no element came out of the names.
            assert shown["scripts"] == 1 and shown["images"] == 0
            exact = await page.evaluate(
                "[...document.querySelectorAll('#sites h3')].map((h) => h.childNodes.length === 1"
                " && h.firstChild.nodeType === Node.TEXT_NODE ? h.textContent : null)"
            )
            assert exact == ["aws-use1", HOSTILE_SITE]
            await asyncio.sleep(1.5)  # a few more refreshes, re-rendering the same names
            page.assert_no_page_errors()


async def test_a_group_member_shows_its_group_and_one_that_does_not_answer(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    """A member of a group (agent.group) lists the members, who answers and who runs what,
    and says the group is partial when one does not answer; an agent alone has no such
    section."""
    data = base_config(platform)
    port, gone = free_port(), free_port()
    data["agent"]["listen"] = f"127.0.0.1:{port}"
    data["agent"]["group"] = {
        "member": "pod-a",
        "members": [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{gone}"],
        "refresh": "1s",
    }
    config = write_config(tmp_path / "failsight.yaml", data)
    async with running_agent(config) as agent:
        url = f"http://127.0.0.1:{agent.port}/?refresh=1"
        async with open_page(chromium, url) as page:
            await page.wait_until_true(
                "!document.getElementById('group-section').hidden && "
                "document.querySelectorAll('#group tr[data-member]').length === 2"
            )
            rows = await page.evaluate(
                "[...document.querySelectorAll('#group tr[data-member]')].map((r) =>"
                " [...r.cells].map((c) => c.innerText))"
            )
            by_member = {r[0].split("\n")[0]: r for r in rows}
            ours = by_member["pod-a (this one)"]
            assert ours[1] == "live" and int(ours[2]) >= 1
            other = next(r for name, r in by_member.items() if name != "pod-a (this one)")
            assert other[1] == "unreachable" and f"127.0.0.1:{gone}" in other[5]
            lead = await page.evaluate("document.querySelector('#group p').innerText")
            assert "1 of 2 listed member(s) answer" in lead and "partial" in lead
            page.assert_no_page_errors()
    alone = write_config(tmp_path / "alone.yaml", base_config(platform))
    async with (
        running_agent(alone) as agent,
        open_page(chromium, f"http://127.0.0.1:{agent.port}/?refresh=1") as page,
    ):
        await page.wait_until(lambda s: bool(verdicts(s)))
        assert await page.evaluate("document.getElementById('group-section').hidden")


async def test_banner_when_the_api_cannot_be_reached_keeps_the_last_data_marked_stale(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    data = base_config(platform)
    data["agent"]["listen"] = f"127.0.0.1:{_free_port()}"
    config = write_config(tmp_path / "failsight.yaml", data)
    url = f"http://{config.agent.listen}/?refresh=1"
    async with contextlib.AsyncExitStack() as first_agent:
        await first_agent.enter_async_context(running_agent(config))
        async with open_page(chromium, url) as page:
            await page.wait_until(
                lambda s: verdicts(s).get("aws-use1") == "healthy" and len(s["steps"]) == 2
            )
            await first_agent.aclose()  # the agent goes away; the page stays open

            shown = await page.wait_until(lambda s: s["banner"] is not None, timeout=15)
            assert shown["banner"].startswith("Cannot reach the failsight API (v1/verdict:")
            assert "Showing the last data received" in shown["banner"]
            assert shown["stale"] and "STALE" in shown["text"]
            # What it last saw is still there.
            assert verdicts(shown) == {"aws-use1": "healthy", "gcp-euw1": "healthy"}
            assert len(shown["steps"]) == 2, shown["text"]
            refreshes = shown["refreshes"]

            # Back on the same address: the banner goes away by itself.
            async with running_agent(config):
                shown = await page.wait_until(
                    lambda s: s["banner"] is None and s["refreshes"] > refreshes, timeout=15
                )
            assert not shown["stale"] and "STALE" not in shown["text"]
    assert page.named("Runtime.exceptionThrown") == []


async def test_a_failed_over_site_shows_the_latch_the_failback_hint_and_the_last_hour(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    data = base_config(platform)
    data["agent"]["admin_token"] = ADMIN_TOKEN
    data["verdict"]["flap_threshold"] = 1  # its first entry into down already counts
    config = write_config(tmp_path / "failsight.yaml", data)
    async with running_agent(config) as agent:
        url = f"http://127.0.0.1:{agent.port}/?refresh=1"
        async with open_page(chromium, url) as page:
            shown = await page.wait_until(
                lambda s: verdicts(s) == {"aws-use1": "healthy", "gcp-euw1": "healthy"}
            )
            assert shown["timeline"]["aws-use1"]["ticks"] == []
            assert shown["cards"]["aws-use1"]["hints"] == {}

            platform.set_fault("aws-use1", Fault(kind="outage"))
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s).get("aws-use1") == "failed_over"
                    and s["timeline"]["aws-use1"]["bands"]["verdict"][-1:] == ["failed_over"]
                )
            )
            card = shown["cards"]["aws-use1"]
            assert card["verdict"] == "failed_over" and card["flags"] == ["flapping"], card
            assert re.fullmatch(
                rf"Failed over to gcp-euw1 at {CLOCK} \(\d+s ago\), latched by verdict@aws-use1: "
                r"its health endpoint answers 503 until failback\.",
                card["latch"],
            ), card["latch"]
            assert card["hints"] == {
                "failback": "Failback is manual: when aws-use1 is ready, run "
                "failsight failback aws-use1."
            }
            assert card["hold"] is None
            (row,) = [r for r in shown["rows"] if r["site"] == "aws-use1"]
            assert row["vantages"] == {"aws-use1": "down"}

            # The last hour: the latch is marked where the verdict band turns to the outage
            # colour, and that band runs up to now.
            timeline = shown["timeline"]["aws-use1"]
            assert timeline["axis"] == ["-60m", "-45m", "-30m", "-15m", "now"]
            (tick,) = timeline["ticks"]
            assert tick["kind"] == "latch" and 95 < tick["left"] <= 100, tick
            assert re.fullmatch(
                rf"{CLOCK} latch by verdict@aws-use1 to gcp-euw1: down in 1 of 1 views .+",
                tick["title"],
            ), tick["title"]
            assert [a.split(" UTC ", 1)[1] for a in timeline["actions"]] == [
                tick["title"].split(" UTC ", 1)[1]
            ]
            band = await verdict_band(page, "aws-use1")
            first, last = band["segments"][0], band["segments"][-1]
            assert last["state"] == "failed_over" and last["colour"] == band["outage"], band
            assert last["end"] == pytest.approx(100, abs=0.01), band
            assert first["state"] == "healthy" and first["colour"] != band["outage"], band
            assert shown["timeline"]["gcp-euw1"]["ticks"] == []
            assert set(shown["timeline"]["gcp-euw1"]["bands"]["verdict"]) == {"healthy"}
            assert "[object " not in shown["text"]
            await page.screenshot(tmp_path / "failed-over.png", FAILED_OVER_SCREENSHOT)

            # Zoomed into the last 5 minutes, the same history spreads wider.
            await page.evaluate("document.querySelector('#zoom [data-minutes=\"5\"]').click()")
            shown = await page.wait_until(lambda s: s["timeline"]["aws-use1"]["axis"][0] == "-5m")
            assert shown["timeline"]["aws-use1"]["axis"] == [
                "-5m",
                "-4m",
                "-3m",
                "-2m",
                "-1m",
                "now",
            ]
            zoomed = await verdict_band(page, "aws-use1")
            assert [s["state"] for s in zoomed["segments"]] == [
                s["state"] for s in band["segments"]
            ]
            (tick,) = shown["timeline"]["aws-use1"]["ticks"]
            assert 50 < tick["left"] < 100, tick

            # It answers again: still failed over (latched), and the page says what the
            # evidence says now; the vantage's band shows the way back.
            platform.recover("aws-use1")
            shown = await page.wait_until(
                lambda s: (
                    s["cards"]["aws-use1"]["current"] == "healthy"
                    and s["timeline"]["aws-use1"]["bands"]["aws-use1"][-1:] == ["up"]
                )
            )
            assert verdicts(shown)["aws-use1"] == "failed_over"
            assert shown["cards"]["aws-use1"]["hints"]["failback"].startswith("Failback is manual")
            states = shown["timeline"]["aws-use1"]["bands"]["aws-use1"]
            assert states[-3:] == ["down", "recovering", "up"], states

            await operator(agent.port, "POST", "aws-use1", "failback", by="alice", reason="ok")
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s).get("aws-use1") == "healthy"
                    and len(s["timeline"]["aws-use1"]["ticks"]) == 2
                )
            )
            assert shown["outage"] is None
            card = shown["cards"]["aws-use1"]
            assert card["latch"] is None and card["hints"] == {}, card
            latch, failback = shown["timeline"]["aws-use1"]["ticks"]
            assert latch["kind"] == "latch" and failback["kind"] == "failback"
            assert failback["title"].endswith(" failback by alice via aws-use1: ok"), failback
            assert shown["timeline"]["aws-use1"]["bands"]["verdict"][-2:] == [
                "failed_over",
                "healthy",
            ]
            page.assert_no_page_errors()


async def test_automatic_failback_shows_its_progress_and_is_marked(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    data = base_config(platform)
    data["verdict"]["failback"] = {"policy": "auto", "stable_for": "5s"}
    config = write_config(tmp_path / "failsight.yaml", data)
    async with running_agent(config) as agent:
        url = f"http://127.0.0.1:{agent.port}/?refresh=1"
        async with open_page(chromium, url) as page:
            await page.wait_until(lambda s: verdicts(s).get("aws-use1") == "healthy")
            platform.set_fault("aws-use1", Fault(kind="outage"))
            shown = await page.wait_until(lambda s: verdicts(s).get("aws-use1") == "failed_over")
            assert shown["cards"]["aws-use1"]["hints"] == {
                "failback": "Failback is automatic once aws-use1 has been up in a quorum of views "
                "for 5s: it is not up in a quorum of views yet."
            }
            platform.recover("aws-use1")
            shown = await page.wait_until(
                lambda s: "so far" in s["cards"]["aws-use1"]["hints"].get("failback", "")
            )
            assert re.fullmatch(
                r"Failback is automatic once aws-use1 has been up in a quorum of views for 5s: "
                r"up for [0-5]s so far\.",
                shown["cards"]["aws-use1"]["hints"]["failback"],
            ), shown["cards"]["aws-use1"]["hints"]
            assert verdicts(shown)["aws-use1"] == "failed_over"
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s).get("aws-use1") == "healthy"
                    and len(s["timeline"]["aws-use1"]["ticks"]) == 2
                ),
                timeout=15,
            )
            assert [t["kind"] for t in shown["timeline"]["aws-use1"]["ticks"]] == [
                "latch",
                "failback",
            ]
            failback = shown["timeline"]["aws-use1"]["ticks"][1]["title"]
            assert " failback by policy:auto@aws-use1: up in a quorum of views for 5s" in failback
            page.assert_no_page_errors()


async def test_held_sites_show_who_why_until_when_and_how_to_lift(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    data = base_config(platform)
    data["agent"]["admin_token"] = ADMIN_TOKEN
    data["maintenance"] = [
        {
            "name": "upgrade",
            "sites": ["aws-use1"],
            "reason": "db upgrade",
            "start": "2020-01-01T00:00:00Z",
            "end": "2099-01-01T00:00:00Z",
        }
    ]
    config = write_config(tmp_path / "failsight.yaml", data)
    async with running_agent(config) as agent:
        url = f"http://127.0.0.1:{agent.port}/?refresh=1"
        async with open_page(chromium, url) as page:
            shown = await page.wait_until(
                lambda s: verdicts(s) == {"aws-use1": "held", "gcp-euw1": "healthy"}
            )
            card = shown["cards"]["aws-use1"]
            assert re.fullmatch(
                r"Held by maintenance upgrade until 2099-01-01 00:00 UTC \(in \d+d\): db upgrade\. "
                r"It is never failed over while held\.",
                card["hold"],
            ), card["hold"]
            assert card["hints"] == {
                "lift": "A maintenance window from the config: it ends by itself; to end it "
                "sooner, edit maintenance: in the config."
            }
            assert shown["outage"] is None

            # An operator holds the standby too (text with markup in it stays text).
            reason = "network change <b>CHG-1</b>"
            await operator(
                agent.port, "POST", "gcp-euw1", "hold", by="bob", reason=reason, **{"for": "2h"}
            )
            shown = await page.wait_until(lambda s: verdicts(s).get("gcp-euw1") == "held")
            card = shown["cards"]["gcp-euw1"]
            assert re.fullmatch(
                rf"Held by bob via aws-use1 until {CLOCK} \(in 1h 59m\): {re.escape(reason)}\. "
                r"It is never failed over while held\.",
                card["hold"],
            ), card["hold"]
            assert card["hints"] == {"lift": "Lift it early with failsight hold gcp-euw1 --lift."}

            # The held primary goes down: it stays held, the evidence says what it would be.
            platform.set_fault("aws-use1", Fault(kind="outage"))
            shown = await page.wait_until(
                lambda s: s["cards"]["aws-use1"]["current"] == "failover_unsafe"
            )
            assert verdicts(shown) == {"aws-use1": "held", "gcp-euw1": "held"}
            assert shown["outage"] is None and shown["rows"][0]["vantages"] == {"aws-use1": "down"}
            assert shown["timeline"]["aws-use1"]["bands"]["verdict"] == ["held"]
            assert shown["timeline"]["aws-use1"]["ticks"] == []  # never latched
            (hold,) = shown["timeline"]["gcp-euw1"]["ticks"]
            assert hold["kind"] == "hold" and re.fullmatch(
                rf"{CLOCK} hold by bob via aws-use1 until {CLOCK}: {re.escape(reason)}",
                hold["title"],
            ), hold
            band = await verdict_band(page, "aws-use1")
            assert {s["state"] for s in band["segments"]} == {"held"}
            assert band["segments"][0]["colour"] != band["outage"], band
            await page.screenshot(tmp_path / "held.png", HELD_SCREENSHOT)

            await operator(agent.port, "DELETE", "gcp-euw1", "hold", by="bob")
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s).get("gcp-euw1") == "healthy"
                    and len(s["timeline"]["gcp-euw1"]["ticks"]) == 2
                )
            )
            assert shown["cards"]["gcp-euw1"]["hold"] is None
            assert [t["kind"] for t in shown["timeline"]["gcp-euw1"]["ticks"]] == ["hold", "lift"]
            assert shown["timeline"]["gcp-euw1"]["bands"]["verdict"][-2:] == ["held", "healthy"]
            assert verdicts(shown)["aws-use1"] == "held"
            # No element came out of the operator's text.
            assert await page.evaluate("document.querySelectorAll('main b').length") == 0
            page.assert_no_page_errors()


async def test_total_outage_banner_when_every_vantage_sees_every_site_down(
    chromium: Chromium, platform: Platform
) -> None:
    async with three_agents(platform) as agents:
        url = f"http://127.0.0.1:{agents[0].port}/?refresh=1"
        async with open_page(chromium, url) as page:
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s) == {"aws-use1": "healthy", "gcp-euw1": "healthy"}
                    and len(s["rows"][0]["vantages"]) == 3
                )
            )
            for site in SITES:
                platform.set_fault(site, Fault(kind="outage"))
            shown = await page.wait_until(
                lambda s: (
                    bool(s["outage"])
                    and all("total outage" in card["flags"] for card in s["cards"].values())
                )
            )
            assert shown["outage"][0].startswith(
                "TOTAL OUTAGE: every site is down from every vantage."
            ), shown["outage"]
            assert not any(r["verdict"] == "failed_over" for r in shown["rows"])
            bands = shown["timeline"]["gcp-euw1"]["bands"]
            assert set(bands) == {"verdict", "aws-use1", "gcp-euw1", "azure-weu"}
            page.assert_no_page_errors()


async def test_page_fits_a_phone_screen(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "failsight.yaml", base_config(platform))
    async with running_agent(config) as agent:
        url = f"http://127.0.0.1:{agent.port}/?refresh=1"
        async with open_page(chromium, url, phone=True) as page:
            await page.wait_until(lambda s: len(s["steps"]) == 2)
            # A failed-over site puts the most on the page: the banner, hints, marks.
            platform.set_fault("aws-use1", Fault(kind="outage"))
            await page.wait_until(
                lambda s: bool(s["outage"] and s["timeline"]["aws-use1"]["ticks"])
            )
            layout = await page.evaluate(
                "({width: window.innerWidth, page: document.documentElement.scrollWidth,"
                " font: parseFloat(getComputedStyle(document.body).fontSize)})"
            )
            assert layout["width"] == 390
            # Wide tables scroll inside their own box; the page itself never scrolls sideways.
            assert layout["page"] <= layout["width"], layout
            assert layout["font"] >= 14
            await page.screenshot(tmp_path / "status-page-phone.png")
            page.assert_no_page_errors()


# Records the page's CSP violations as they happen, from before its own script runs.
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.cspViolations.push(
  {directive: e.effectiveDirective, blocked: e.blockedURI, disposition: e.disposition}));
"""
# What an injected payload would try: an inline script, an inline style, an event handler.
INJECT_INLINE = """(() => {
  const script = document.createElement("script");
  script.textContent = "window.inlineScriptRan = true";
  document.body.append(script);
  const styled = document.createElement("div");
  styled.setAttribute("style", "color: red");
  document.body.append(styled);
  const img = document.createElement("img");
  img.setAttribute("onerror", "window.handlerRan = true");
  img.src = "data:,not-an-image";
  document.body.append(img);
})()"""


def _directives(policy: str) -> dict[str, list[str]]:
    parts = [d.split() for d in policy.split(";") if d.strip()]
    return {d[0]: d[1:] for d in parts}


async def test_page_runs_under_a_csp_without_unsafe_inline_and_chromium_logs_no_violation(
    chromium: Chromium, platform: Platform, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "failsight.yaml", base_config(platform))
    async with running_agent(config) as agent:
        base = f"http://127.0.0.1:{agent.port}/"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as response:
                assert response.status == 200
                policy = response.headers["Content-Security-Policy"]
                assert response.headers["X-Content-Type-Options"] == "nosniff"
            for path, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
                async with http.get(base + path) as response:
                    assert response.status == 200, path
                    assert response.content_type == kind and response.charset == "utf-8"
                    assert response.headers["X-Content-Type-Options"] == "nosniff"
                    assert response.headers["Cache-Control"] == "no-cache"
                    assert await response.read() == (STATIC / path).read_bytes()
        directives = _directives(policy)
        assert directives["script-src"] == ["'self'"], policy
        assert directives["style-src"] == ["'self'"], policy
        assert directives["default-src"] == ["'none'"], policy
        for name in ("frame-ancestors", "base-uri", "form-action"):
            assert directives[name] == ["'none'"], policy
        assert "unsafe" not in policy

        async with open_page(
            chromium, base + "?refresh=1", before_load=RECORD_CSP_VIOLATIONS
        ) as page:
            # The page did its whole job under that policy: rendered, refreshed, drew the hour.
            shown = await page.wait_until(
                lambda s: (
                    verdicts(s) == {"aws-use1": "healthy", "gcp-euw1": "healthy"}
                    and len(s["steps"]) == 2
                    and s["refreshes"] >= 3
                    and all(s["timeline"][site]["bands"]["verdict"] for site in SITES)
                )
            )
            assert shown["banner"] is None and shown["scripts"] == 1
            band = await verdict_band(page, "aws-use1")
            assert band["segments"] and band["segments"][-1]["end"] == pytest.approx(100, abs=0.01)
            # Its styles applied: the header is the sticky bar status.css makes it.
            assert (
                await page.evaluate("getComputedStyle(document.querySelector('header')).position")
                == "sticky"
            )
            assert await page.evaluate("window.cspViolations") == []
            blocked = [e for e in page.named("Network.loadingFailed") if e.get("blockedReason")]
            assert blocked == []
            page.assert_no_page_errors()  # no console error, no CSP message in Chromium's log

            # The policy is enforced, and the checks above would have seen a violation: an
            # injected inline script, style attribute and event handler are all refused, and
            # Chromium logs it.
            await page.evaluate(INJECT_INLINE)
            await page.wait_until_true("window.cspViolations.length >= 3")
            seen = {v["directive"] for v in await page.evaluate("window.cspViolations")}
            assert seen >= {"script-src-elem", "style-src-attr", "script-src-attr"}, seen
            assert await page.evaluate("[window.inlineScriptRan, window.handlerRan]") == [
                None,
                None,
            ]
            assert (
                await page.evaluate(
                    "getComputedStyle(document.body.lastElementChild.previousElementSibling).color"
                )
                != "rgb(255, 0, 0)"
            )
            deadline = asyncio.get_running_loop().time() + 10
            while not [
                e for e in page.named("Log.entryAdded") if "Content Security" in e["entry"]["text"]
            ]:
                assert asyncio.get_running_loop().time() < deadline, page.named("Log.entryAdded")
                await asyncio.sleep(0.05)


def test_page_is_self_contained_and_never_parses_data_as_markup() -> None:
    html, script, styles = (f.read_text() for f in (STATUS_PAGE, STATUS_SCRIPT, STATUS_STYLES))
    # No external assets (air-gapped clusters), and no API that turns a string into markup.
    for text in (html, script, styles):
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
        assert not re.search(r"@import|url\(", text)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "new Function" not in script and 'setAttribute("style"' not in script
    # Nothing inline, which the page's Content-Security-Policy would refuse: its one script and
    # its styles are files of their own, served by the agent (relative URLs).
    tags = re.findall(r"<[a-z][^>]*>", html)
    assert [t for t in tags if t.startswith("<script")] == ['<script src="status.js" defer>']
    assert [t for t in tags if t.startswith("<link")] == [
        '<link rel="stylesheet" href="status.css">'
    ]
    assert "<style" not in html
    assert [t for t in tags if re.search(r"\s(on[a-z]+|style)\s*=", t)] == []
