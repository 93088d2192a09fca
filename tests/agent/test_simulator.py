"""The demo platform simulator, exercised over real HTTP on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from failsight.agent.demo.simulator import (
    FAULT_KINDS,
    HUGE_BODY_BYTES,
    REQUEST_LOG_SIZE,
    Fault,
    Platform,
)

SITE_A = "aws-use1"
SITE_B = "gcp-euw1"
DELAY = 0.2
TOKEN = "s3cr3t-demo-token-value"
ORDER = {"sku": "SKU-42", "qty": 3, "tenant": "acme"}
SYNTHETIC = {"X-Failsight-Synthetic": "1"}


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    async with Platform([SITE_A, SITE_B], allocation_delay=DELAY) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def submit(
    http: aiohttp.ClientSession,
    base: str,
    *,
    key: str = "key-1",
    body: Any = ORDER,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    sent = {"Idempotency-Key": key, **SYNTHETIC, **(headers or {})}
    async with http.post(f"{base}/api/v1/orders", json=body, headers=sent) as resp:
        return resp.status, await resp.json(), resp.headers


async def post(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def add_fault(http: aiohttp.ClientSession, base: str, **fault: Any) -> None:
    async with http.post(f"{base}/admin/fault", json=fault) as resp:
        assert resp.status == 201, await resp.text()


async def wait_allocated(http: aiohttp.ClientSession, base: str, allocation_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, body = await get(http, f"{base}/api/v1/allocations/{allocation_id}")
        assert status == 200
        if body["state"] == "allocated":
            return
        await asyncio.sleep(0.05)
    raise AssertionError("allocation never completed")


async def allocated_order(http: aiohttp.ClientSession, base: str, key: str = "key-1") -> str:
    _, order, _ = await submit(http, base, key=key)
    _, allocation = await post(http, f"{base}/api/v1/orders/{order['id']}/allocation")
    await wait_allocated(http, base, allocation["allocation_id"])
    return str(order["id"])


async def test_happy_path_order_to_invoice_then_cancel_leaves_no_synthetic_data(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    status, order, headers = await submit(http, base)
    assert status == 201
    assert headers["X-Site"] == SITE_A
    assert order["id"].startswith("ord-")
    assert order == {
        "id": order["id"],
        "status": "created",
        "sku": "SKU-42",
        "qty": 3,
        "tenant": "acme",
        "synthetic": True,
        "site": SITE_A,
    }
    order_url = f"{base}/api/v1/orders/{order['id']}"

    started = time.monotonic()
    status, allocation = await post(http, f"{order_url}/allocation")
    assert status == 202
    assert allocation["allocation_id"].startswith("alc-")
    assert allocation["order_id"] == order["id"]
    assert allocation["state"] == "pending"
    status, polled = await get(http, f"{base}/api/v1/allocations/{allocation['allocation_id']}")
    assert (status, polled["state"]) == (200, "pending")
    await wait_allocated(http, base, allocation["allocation_id"])
    assert time.monotonic() - started >= DELAY
    assert (await get(http, order_url))[1]["status"] == "allocated"

    status, pick = await post(http, f"{order_url}/pick")
    assert (status, pick["status"], pick["order_id"]) == (201, "picked", order["id"])
    assert pick["pick_id"].startswith("pck-")
    status, shipment = await post(http, f"{order_url}/shipment")
    assert status == 201
    assert shipment["shipment_id"].startswith("shp-")
    assert shipment["tracking"]
    status, invoice = await post(http, f"{order_url}/invoice")
    assert status == 201
    assert invoice["invoice_id"].startswith("inv-")
    assert invoice["currency"] == "EUR"
    assert isinstance(invoice["amount"], float) and invoice["amount"] > 0

    status, current = await get(http, order_url)
    assert (status, current["status"]) == (200, "invoiced")
    assert current["invoice_id"] == invoice["invoice_id"]
    async with http.get(f"{base}/admin/state") as resp:
        before = await resp.json()
    assert before["synthetic_orders"] == 1
    assert (before["allocations"], before["picks"], before["shipments"], before["invoices"]) == (
        1,
        1,
        1,
        1,
    )

    status, cancelled = await post(http, f"{order_url}/cancel")
    assert (status, cancelled["id"], cancelled["status"]) == (200, order["id"], "cancelled")
    async with http.get(f"{base}/admin/state") as resp:
        after = await resp.json()
    assert after["site"] == SITE_A
    assert after["orders"] == after["synthetic_orders"] == 0
    assert (after["allocations"], after["picks"], after["shipments"], after["invoices"]) == (
        0,
        0,
        0,
        0,
    )
    assert (await get(http, order_url))[0] == 404
    assert (await post(http, f"{order_url}/cancel"))[0] == 404


async def test_cancelling_a_real_order_keeps_it_as_cancelled(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    async with http.post(
        f"{base}/api/v1/orders", json=ORDER, headers={"Idempotency-Key": "real"}
    ) as resp:
        order = await resp.json()
    assert order["synthetic"] is False
    status, cancelled = await post(http, f"{base}/api/v1/orders/{order['id']}/cancel")
    assert (status, cancelled["status"]) == (200, "cancelled")
    assert (await get(http, f"{base}/api/v1/orders/{order['id']}"))[1]["status"] == "cancelled"
    assert platform.state(SITE_A).synthetic_orders == 0
    assert len(platform.state(SITE_A).orders) == 1
    assert (await post(http, f"{base}/api/v1/orders/{order['id']}/allocation"))[0] == 409


async def test_same_idempotency_key_replays_the_same_order(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    first_status, first, first_headers = await submit(http, base, key="retry-me")
    again_status, again, again_headers = await submit(http, base, key="retry-me")
    assert (first_status, again_status) == (201, 200)
    assert again == first
    assert "Idempotent-Replayed" not in first_headers
    assert again_headers["Idempotent-Replayed"] == "true"
    assert len(platform.state(SITE_A).orders) == 1

    status, other, _ = await submit(http, base, key="another-key")
    assert status == 201
    assert other["id"] != first["id"]
    assert len(platform.state(SITE_A).orders) == 2


async def test_same_idempotency_key_with_another_body_is_422(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await submit(http, base, key="k")
    status, body, _ = await submit(http, base, key="k", body={**ORDER, "qty": 4})
    assert status == 422
    assert "Idempotency-Key" in body["error"]
    assert len(platform.state(SITE_A).orders) == 1


async def test_missing_idempotency_key_is_400(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{platform.urls[SITE_A]}/api/v1/orders", json=ORDER) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "Idempotency-Key header is required"
    assert platform.state(SITE_A).orders == {}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body must be valid JSON"),
        (b"", "body must be valid JSON"),
        (b"[1, 2]", "body must be a JSON object"),
        (json.dumps({"qty": 1, "tenant": "t"}).encode(), "sku: must be a non-empty string"),
        (json.dumps({**ORDER, "qty": 0}).encode(), "qty: must be an integer greater than zero"),
        (json.dumps({**ORDER, "qty": "2"}).encode(), "qty: must be an integer greater than zero"),
        (json.dumps({**ORDER, "qty": True}).encode(), "qty: must be an integer greater than zero"),
        (json.dumps({**ORDER, "tenant": ""}).encode(), "tenant: must be a non-empty string"),
    ],
)
async def test_bad_order_body_is_400_with_json_error(
    platform: Platform, http: aiohttp.ClientSession, body: bytes, error: str
) -> None:
    async with http.post(
        f"{platform.urls[SITE_A]}/api/v1/orders",
        data=body,
        headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == error
    assert platform.state(SITE_A).orders == {}


async def test_token_is_enforced_on_the_api_only(http: aiohttp.ClientSession) -> None:
    async with Platform([SITE_A], token=TOKEN) as platform:
        base = platform.urls[SITE_A]
        async with http.post(f"{base}/api/v1/orders", json=ORDER) as resp:
            assert resp.status == 401
            assert resp.headers["X-Site"] == SITE_A
            assert "token" in (await resp.json())["error"]
        wrong = {"Authorization": "Bearer not-the-token"}
        assert (await submit(http, base, key="a", headers=wrong))[0] == 401
        basic = {"Authorization": f"Basic {TOKEN}"}
        assert (await submit(http, base, key="b", headers=basic))[0] == 401
        assert platform.state(SITE_A).orders == {}

        good = {"Authorization": f"Bearer {TOKEN}"}
        assert (await submit(http, base, key="c", headers=good))[0] == 201
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"site": SITE_A, "status": "ok"}


async def test_out_of_order_steps_are_409_and_unknown_ids_404(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    _, order, _ = await submit(http, base)
    order_url = f"{base}/api/v1/orders/{order['id']}"
    for step in ("pick", "shipment", "invoice"):
        assert (await post(http, f"{order_url}/{step}"))[0] == 409
    status, allocation = await post(http, f"{order_url}/allocation")
    assert (status, allocation["state"]) == (202, "pending")
    status, body = await post(http, f"{order_url}/pick")
    assert status == 409
    assert body["error"] == "cannot pick an order that is created; it must be allocated"
    await wait_allocated(http, base, allocation["allocation_id"])
    again = await post(http, f"{order_url}/allocation")
    assert again == (202, {**allocation, "state": "allocated"})
    assert (await post(http, f"{order_url}/shipment"))[0] == 409
    assert (await post(http, f"{order_url}/pick"))[0] == 201
    assert (await post(http, f"{order_url}/pick"))[0] == 409
    assert (await post(http, f"{order_url}/invoice"))[0] == 409

    missing = f"{base}/api/v1/orders/ord-missing"
    for step in ("allocation", "pick", "shipment", "invoice", "cancel"):
        assert (await post(http, f"{missing}/{step}"))[0] == 404
    assert (await get(http, missing))[0] == 404
    assert (await get(http, f"{base}/api/v1/allocations/alc-missing"))[0] == 404
    async with http.get(f"{base}/api/v1/nowhere") as resp:
        assert resp.status == 404
        assert resp.headers["X-Site"] == SITE_A
        assert "error" in await resp.json()


async def test_outage_answers_503_json_and_leaves_healthz_alone(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="outage")
    status, body, headers = await submit(http, base)
    assert (status, body) == (503, {"error": "site unavailable"})
    assert headers["X-Site"] == SITE_A
    assert (await get(http, f"{base}/api/v1/orders/ord-x"))[0] == 503
    assert platform.state(SITE_A).orders == {}
    async with http.get(f"{base}/healthz") as resp:
        assert resp.status == 200


async def test_latency_delays_the_answer_by_at_least_latency_ms(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="latency", latency_ms=400)
    started = time.monotonic()
    status, _, _ = await submit(http, base)
    assert status == 201
    assert time.monotonic() - started >= 0.4


async def test_fail_step_fails_only_that_step(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="fail_step", step="pick", status=502)
    order_id = await allocated_order(http, base)
    status, body = await post(http, f"{base}/api/v1/orders/{order_id}/pick")
    assert status == 502
    assert body == {"error": "injected failure on step pick"}
    assert (await get(http, f"{base}/api/v1/orders/{order_id}"))[1]["status"] == "allocated"
    assert (await post(http, f"{base}/api/v1/orders/{order_id}/cancel"))[0] == 200


async def test_fail_step_allocation_covers_its_post_and_its_poll(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    _, order, _ = await submit(http, base)
    _, allocation = await post(http, f"{base}/api/v1/orders/{order['id']}/allocation")
    platform.set_fault(SITE_A, Fault(kind="fail_step", step="allocation"))
    assert (await post(http, f"{base}/api/v1/orders/{order['id']}/allocation"))[0] == 500
    assert (await get(http, f"{base}/api/v1/allocations/{allocation['allocation_id']}"))[0] == 500
    assert (await get(http, f"{base}/api/v1/orders/{order['id']}"))[0] == 200


async def test_hang_never_answers_and_ends_when_the_client_leaves(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="hang", step="order_submit")
    tasks_before = len(asyncio.all_tasks())
    # A connection of its own, closed after the request, so the server task serving it can only
    # end if the hanging handler notices that the client went away.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as alone:
        with pytest.raises(TimeoutError):
            await alone.post(
                f"{base}/api/v1/orders",
                json=ORDER,
                headers={"Idempotency-Key": "k"},
                timeout=aiohttp.ClientTimeout(total=0.5),
            )
    assert platform.state(SITE_A).orders == {}
    assert platform.state(SITE_A).requests[-1].status is None
    deadline = time.monotonic() + 5
    while len(asyncio.all_tasks()) > tasks_before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= tasks_before, "the hanging handler outlived its client"
    assert (await get(http, f"{base}/api/v1/orders/ord-x"))[0] == 404


async def test_stop_returns_promptly_while_a_request_hangs(http: aiohttp.ClientSession) -> None:
    platform = Platform([SITE_A, SITE_B])
    await platform.start()
    platform.set_fault(SITE_A, Fault(kind="hang"))
    hanging = asyncio.create_task(get(http, f"{platform.urls[SITE_A]}/api/v1/orders/ord-x"))
    try:
        deadline = time.monotonic() + 10
        while not platform.state(SITE_A).requests and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert platform.state(SITE_A).requests, "the hanging request never reached the site"

        started = time.monotonic()
        await asyncio.wait_for(platform.stop(), timeout=10)
        assert time.monotonic() - started < 5
        with pytest.raises(aiohttp.ClientError):
            await hanging
    finally:
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)
        await platform.stop()
    await platform.stop()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, f"{platform.urls[SITE_A]}/healthz")


async def test_html_fault_answers_an_html_page(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="html")
    async with http.get(f"{base}/api/v1/orders/ord-x") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert (await resp.text()).startswith("<!DOCTYPE html>")
        with pytest.raises(aiohttp.ContentTypeError):
            await resp.json()


async def test_truncate_fault_gives_the_client_a_payload_error(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="truncate", step="order_get")
    async with http.get(f"{base}/api/v1/orders/ord-x") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert (await submit(http, base))[0] == 201


async def test_huge_fault_streams_ten_megabytes_of_json(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="huge")
    async with http.get(f"{base}/api/v1/orders/ord-x") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.read()
    assert len(body) == HUGE_BODY_BYTES == 10 * 1024 * 1024
    assert set(json.loads(body)) == {"padding"}


async def test_vantage_scoped_fault_hits_only_that_vantage(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    platform.set_fault(SITE_A, Fault(kind="outage", vantage="azure-weu"))
    cut_off = {"X-Failsight-Vantage": "azure-weu"}
    assert (await submit(http, base, key="a", headers=cut_off))[0] == 503
    assert (await submit(http, base, key="b", headers={"X-Failsight-Vantage": SITE_B}))[0] == 201
    assert (await submit(http, base, key="c"))[0] == 201
    assert len(platform.state(SITE_A).orders) == 2


async def test_first_matching_fault_wins(platform: Platform, http: aiohttp.ClientSession) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="fail_step", step="order_get", status=418)
    await add_fault(http, base, kind="outage")
    assert (await get(http, f"{base}/api/v1/orders/ord-x"))[0] == 418
    assert (await submit(http, base))[0] == 503
    async with http.get(f"{base}/admin/state") as resp:
        faults = (await resp.json())["faults"]
    assert faults == [
        {"kind": "fail_step", "step": "order_get", "status": 418},
        {"kind": "outage", "status": 503},
    ]


async def test_recover_clears_every_fault(platform: Platform, http: aiohttp.ClientSession) -> None:
    base = platform.urls[SITE_A]
    await add_fault(http, base, kind="outage")
    await add_fault(http, base, kind="html")
    async with http.post(f"{base}/admin/recover") as resp:
        assert resp.status == 200
        assert (await resp.json())["faults"] == []
    assert (await submit(http, base, key="a"))[0] == 201

    platform.set_fault(SITE_A, Fault(kind="outage"))
    assert (await submit(http, base, key="b"))[0] == 503
    platform.recover(SITE_A)
    assert platform.state(SITE_A).faults == []
    assert (await submit(http, base, key="b"))[0] == 201


@pytest.mark.parametrize(
    ("fault", "field"),
    [
        ({}, "kind"),
        ({"kind": "meltdown"}, "kind"),
        ({"kind": "fail_step"}, "step"),
        ({"kind": "fail_step", "step": "teleport"}, "step"),
        ({"kind": "latency"}, "latency_ms"),
        ({"kind": "latency", "latency_ms": -5}, "latency_ms"),
        ({"kind": "fail_step", "step": "pick", "status": 200}, "status"),
        ({"kind": "outage", "vantage": ""}, "vantage"),
        ({"kind": "outage", "colour": "red"}, "colour"),
        ({"kind": "outage", "status": 200}, "status"),
        ({"kind": "hang", "latency_ms": 10}, "latency_ms"),
        ({"kind": "latency", "latency_ms": 10, "status": 500}, "status"),
    ],
)
async def test_invalid_fault_is_400_naming_the_field(
    platform: Platform, http: aiohttp.ClientSession, fault: dict[str, Any], field: str
) -> None:
    async with http.post(f"{platform.urls[SITE_A]}/admin/fault", json=fault) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["field"] == field
    assert body["error"].startswith(f"invalid fault: {field}: ")
    assert platform.state(SITE_A).faults == []


# Each kind's fault as posted, and its echo: what the site then serves, and only that.
ECHOES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "outage": ({"kind": "outage"}, {"kind": "outage", "status": 503}),
    "latency": (
        {"kind": "latency", "latency_ms": 50, "vantage": "azure-weu"},
        {"kind": "latency", "vantage": "azure-weu", "latency_ms": 50},
    ),
    "fail_step": (
        {"kind": "fail_step", "step": "order_submit", "status": 502},
        {"kind": "fail_step", "step": "order_submit", "status": 502},
    ),
    "hang": ({"kind": "hang", "step": "order_submit"}, {"kind": "hang", "step": "order_submit"}),
    "html": ({"kind": "html"}, {"kind": "html", "status": 200}),
    "truncate": ({"kind": "truncate"}, {"kind": "truncate", "status": 200}),
    "huge": ({"kind": "huge"}, {"kind": "huge", "status": 200}),
}


def test_every_fault_kind_has_an_echo_case() -> None:
    assert set(ECHOES) == set(FAULT_KINDS)


async def served_status(base: str, *, wait: float) -> int | None:
    """The status an order submission from azure-weu gets; None when no answer comes."""
    # A connection of its own, dropped afterwards: a hung or cut-short answer stays here.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as alone:
        try:
            async with alone.post(
                f"{base}/api/v1/orders",
                json=ORDER,
                headers={"Idempotency-Key": "echo", "X-Failsight-Vantage": "azure-weu"},
                timeout=aiohttp.ClientTimeout(total=wait),
            ) as resp:
                # Read to the end, so that a streamed answer is served whole (or cut short).
                with contextlib.suppress(aiohttp.ClientPayloadError):
                    await resp.read()
                return resp.status
        except TimeoutError:
            return None


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_fault_echo_is_what_a_request_then_gets(
    platform: Platform, http: aiohttp.ClientSession, kind: str
) -> None:
    posted, echo = ECHOES[kind]
    base = platform.urls[SITE_A]
    async with http.post(f"{base}/admin/fault", json=posted) as resp:
        assert resp.status == 201
        body = await resp.json()
    assert body["fault"] == echo
    assert body["faults"] == [echo]
    assert "note" not in body
    async with http.get(f"{base}/admin/state") as resp:
        assert (await resp.json())["faults"] == [echo]

    status = await served_status(base, wait=0.5 if kind == "hang" else 15)
    if "status" in echo:
        assert status == echo["status"]
    elif kind == "latency":
        assert status == 201  # late, but the API's own answer
    else:
        assert status is None  # a hang answers nothing

    # The echo is a fault in its own right: posted back, it is the same fault.
    async with http.post(f"{platform.urls[SITE_B]}/admin/fault", json=echo) as resp:
        assert resp.status == 201
        assert (await resp.json())["fault"] == echo


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (
            {"kind": "html", "status": 502},
            "invalid fault: status: Value error, only outage and fail_step choose their "
            "status; html always answers 200",
        ),
        (
            {"kind": "hang", "status": 504},
            "invalid fault: status: Value error, only outage and fail_step choose their "
            "status; hang answers no status of its own",
        ),
        (
            {"kind": "outage", "status": 302},
            "invalid fault: status: Value error, must be an error status, 400 to 599, for outage",
        ),
        (
            {"kind": "fail_step", "step": "pick", "status": 302},
            "invalid fault: status: Value error, must be an error status, 400 to 599, "
            "for fail_step",
        ),
        (
            {"kind": "outage", "latency_ms": 100},
            "invalid fault: latency_ms: Value error, only for kind latency, not outage",
        ),
    ],
)
async def test_a_field_that_means_nothing_for_the_kind_is_refused(
    platform: Platform, http: aiohttp.ClientSession, fault: dict[str, Any], message: str
) -> None:
    async with http.post(f"{platform.urls[SITE_A]}/admin/fault", json=fault) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, message)
    assert platform.state(SITE_A).faults == []


async def test_fault_echo_says_when_an_earlier_fault_answers_first(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    url = f"{platform.urls[SITE_A]}/admin/fault"
    async with http.post(url, json={"kind": "fail_step", "step": "pick"}) as resp:
        assert "note" not in await resp.json()
    # Narrower faults first leave the wider one the other requests: no note.
    async with http.post(url, json={"kind": "outage", "vantage": "azure-weu"}) as resp:
        assert "note" not in await resp.json()
    async with http.post(
        url, json={"kind": "html", "step": "pick", "vantage": "azure-weu"}
    ) as resp:
        body = await resp.json()
    assert body["fault"] == {"kind": "html", "step": "pick", "vantage": "azure-weu", "status": 200}
    assert body["note"] == (
        "an earlier fault matches every request this one does and answers them first: "
        "POST /admin/recover clears all faults"
    )


async def test_fault_body_must_be_a_json_object(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    url = f"{platform.urls[SITE_A]}/admin/fault"
    async with http.post(url, data=b"kind=outage") as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "body must be valid JSON")
    async with http.post(url, json=["outage"]) as resp:
        assert (resp.status, (await resp.json())["error"]) == (400, "body must be a JSON object")


async def test_request_log_records_headers_but_never_the_token(
    http: aiohttp.ClientSession,
) -> None:
    async with Platform([SITE_A], token=TOKEN) as platform:
        base = platform.urls[SITE_A]
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        sent = {
            "Authorization": f"Bearer {TOKEN}",
            "traceparent": traceparent,
            "X-Failsight-Run-Id": "run-7",
            "X-Failsight-Vantage": SITE_A,
        }
        assert (await submit(http, base, key="idem-9", headers=sent))[0] == 201
        async with http.get(f"{base}/api/v1/orders/ord-x") as resp:
            assert resp.status == 401

        async with http.get(f"{base}/admin/requests") as resp:
            raw = await resp.text()
        assert TOKEN not in raw
        records = json.loads(raw)
        assert [(r["method"], r["path"], r["status"]) for r in records] == [
            ("POST", "/api/v1/orders", 201),
            ("GET", "/api/v1/orders/ord-x", 401),
        ]
        assert records[0]["headers"] == {
            "traceparent": traceparent,
            "Idempotency-Key": "idem-9",
            "X-Failsight-Synthetic": "1",
            "X-Failsight-Run-Id": "run-7",
            "X-Failsight-Vantage": SITE_A,
        }
        assert records[0]["authorization_present"] is True
        assert records[1]["authorization_present"] is False
        assert set(records[1]["headers"].values()) == {None}
        assert TOKEN not in repr(platform.state(SITE_A).requests)


async def test_request_log_is_bounded_newest_last_and_clearable(
    platform: Platform, http: aiohttp.ClientSession
) -> None:
    base = platform.urls[SITE_A]
    extra = 5
    semaphore = asyncio.Semaphore(20)

    async def probe(n: int) -> None:
        async with semaphore, http.get(f"{base}/api/v1/orders/ord-{n}") as resp:
            assert resp.status == 404

    await asyncio.gather(*(probe(n) for n in range(REQUEST_LOG_SIZE + extra)))
    await probe(999_999)
    async with http.get(f"{base}/admin/requests") as resp:
        records = await resp.json()
    assert len(records) == REQUEST_LOG_SIZE
    assert records[-1]["path"] == "/api/v1/orders/ord-999999"
    async with http.get(f"{base}/admin/requests", params={"limit": "3"}) as resp:
        newest = await resp.json()
    assert newest == records[-3:]
    async with http.get(f"{base}/admin/requests", params={"limit": "many"}) as resp:
        assert (resp.status, (await resp.json())["field"]) == (400, "limit")
    async with http.get(f"{base}/admin/state") as resp:
        assert (await resp.json())["requests_total"] == REQUEST_LOG_SIZE + extra + 1

    async with http.delete(f"{base}/admin/requests") as resp:
        assert await resp.json() == {"site": SITE_A, "cleared": REQUEST_LOG_SIZE}
    async with http.get(f"{base}/admin/requests") as resp:
        assert await resp.json() == []
    assert platform.state(SITE_A).requests_total == REQUEST_LOG_SIZE + extra + 1


async def test_two_sites_are_independent(platform: Platform, http: aiohttp.ClientSession) -> None:
    a, b = platform.urls[SITE_A], platform.urls[SITE_B]
    assert a != b
    await add_fault(http, a, kind="outage")
    assert (await submit(http, a))[0] == 503
    status, order, headers = await submit(http, b)
    assert status == 201
    assert (order["site"], headers["X-Site"]) == (SITE_B, SITE_B)
    assert (await get(http, f"{a}/api/v1/orders/{order['id']}"))[0] == 503
    platform.recover(SITE_A)
    assert (await get(http, f"{a}/api/v1/orders/{order['id']}"))[0] == 404
    assert platform.state(SITE_A).orders == {}
    assert list(platform.state(SITE_B).orders) == [order["id"]]
    assert platform.state(SITE_B).faults == []
    assert platform.state(SITE_A).requests_total == 3
    assert platform.state(SITE_B).requests_total == 1


async def test_explicit_ports_are_used(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Platform([SITE_A], ports=[port]) as platform:
        assert platform.urls == {SITE_A: f"http://127.0.0.1:{port}"}
        async with http.get(f"{platform.urls[SITE_A]}/healthz") as resp:
            assert resp.status == 200


def test_platform_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one site"):
        Platform([])
    with pytest.raises(ValueError, match="unique"):
        Platform([SITE_A, SITE_A])
    with pytest.raises(ValueError, match="2 ports for 1 sites"):
        Platform([SITE_A], ports=[1, 2])
    with pytest.raises(ValueError, match="allocation_delay"):
        Platform([SITE_A], allocation_delay=-1)
    with pytest.raises(KeyError, match="unknown site"):
        Platform([SITE_A]).state(SITE_B)
