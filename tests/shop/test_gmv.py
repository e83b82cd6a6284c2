"""One definition of GMV, orders and buyers (docs/shop.md): the issue's scenario of four
orders of one broadcast (a lottery prize order, a refunded order and two kept sales) gives
the same figures on the live panel (``/stats``), ``/sales``, ``/metrics`` and the
``sales.updated`` webhook."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from aiohttp import web

from tests.shop.conftest import ShopEnv, make_product, uid


async def _subscriber() -> tuple[web.AppRunner, str, list[dict[str, Any]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook", received


async def _wait(cond: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _paid_order(shop: ShopEnv, bid: int, sku_id: int, user: str) -> dict[str, Any]:
    api = shop.api
    order = await api.ok(
        "POST",
        "/api/orders",
        {
            "user_id": user,
            "sku_id": sku_id,
            "quantity": 1,
            "broadcast_id": bid,
            "idempotency_key": uid("k"),
        },
        201,
        token=None,
    )
    pay = await api.ok("POST", f"/api/orders/{order['id']}/pay", token=None, viewer=user)
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert r.status == 200
    await _wait_state(shop, order["id"], "paid")
    return order  # type: ignore[no-any-return]


async def _wait_state(shop: ShopEnv, order_id: str, state: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        got = await shop.api.ok("GET", f"/api/orders/{order_id}")
        if got["state"] == state:
            return
        assert time.monotonic() < deadline, (order_id, got["state"], state)
        await asyncio.sleep(0.05)


def _metric(text: str, name: str, bid: int) -> float:
    m = re.search(rf'^{name}{{broadcast_id="{bid}"}} (\S+)$', text, re.M)
    assert m is not None, f"{name} of {bid} not in /metrics"
    return float(m.group(1))


async def test_one_gmv_everywhere(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=False)  # nothing shipped here
    api = shop.api
    runner, url, received = await _subscriber()
    try:
        await api.ok(
            "POST", "/api/webhooks", {"url": url, "events": ["sales.updated", "order.*"]}, 201
        )
        b = await api.ok(
            "POST",
            "/api/broadcasts",
            {"title": "GMV", "scheduled_start": "2030-01-01T12:00:00Z"},
            201,
        )
        bid = b["id"]
        tea = await make_product(api, price=9900)
        cup = await make_product(api, price=7800)
        pot = await make_product(api, price=6900)
        prize = await make_product(api, price=12000)
        await api.ok(
            "PUT",
            f"/api/broadcasts/{bid}/shelf",
            {"items": [{"product_id": p["id"]} for p in (tea, cup, pot, prize)]},
        )
        await _paid_order(shop, bid, tea["skus"][0]["id"], "alice")
        await _paid_order(shop, bid, cup["skus"][0]["id"], "bob")
        refunded = await _paid_order(shop, bid, pot["skus"][0]["id"], "carol")
        status, body = await api.post(
            "/api/lottery/prizes",
            {
                "lottery_id": f"L{bid}",
                "user_id": "dave",
                "broadcast_id": bid,
                "prize": {"name": "a kettle", "sku": str(prize["skus"][0]["id"])},
                "n": 0,
            },
        )
        assert status == 201, body
        await api.ok("POST", f"/api/orders/{refunded['id']}/refund", {"reason": "broken"})
        await _wait_state(shop, refunded["id"], "refunded")

        want = {"gmv_fen": 17700, "orders": 2, "buyers": 2, "refunded_fen": 6900}
        sales = await api.ok("GET", f"/api/broadcasts/{bid}/sales")
        assert {k: sales[k] for k in want} == want
        assert sales["paid_fen"] == 9900 + 7800 + 6900 and sales["prizes"] == 1
        assert sales["orders_placed"] == 3  # the prize order is no sale
        by_product = {p["product_id"]: p for p in sales["products"]}
        assert by_product[prize["id"]]["orders"] == 0 and by_product[prize["id"]]["prizes"] == 1
        assert by_product[pot["id"]]["gmv_fen"] == 0 and by_product[pot["id"]]["orders"] == 0

        stats = await api.ok("GET", f"/api/broadcasts/{bid}/stats")
        assert {k: stats[k] for k in want} == want

        async with api.session.get(shop.server.http_url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
        assert _metric(text, "berrylive_broadcast_gmv_fen", bid) == 17700
        assert _metric(text, "berrylive_broadcast_orders", bid) == 2
        assert _metric(text, "berrylive_broadcast_buyers", bid) == 2
        assert _metric(text, "berrylive_broadcast_refunded_fen", bid) == 6900

        def last_sales() -> dict[str, Any] | None:
            mine = [
                e["data"]
                for e in received
                if e["topic"] == "sales.updated" and e["data"]["broadcast_id"] == bid
            ]
            return mine[-1] if mine else None

        await _wait(lambda: (last_sales() or {}).get("refunded_fen") == 6900)
        hook = last_sales()
        assert hook is not None
        assert {k: hook[k] for k in want} == want
        # the order events webhooks forward say which orders are prizes (kind), with an
        # integer broadcast id
        await _wait(lambda: any(e["topic"] == "order.paid" for e in received))
        paid = [e["data"] for e in received if e["topic"] == "order.paid"]
        assert all(isinstance(p["broadcast_id"], int) for p in paid)
        assert {p["kind"] for p in paid} >= {"normal", "prize"}
    finally:
        await runner.cleanup()
