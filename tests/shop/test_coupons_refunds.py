"""Coupons at checkout, stock returned by refunds (exactly once), late payments refunded
automatically, the bounded notification log, and the shelf filled from control's
broadcast product_ids."""

from __future__ import annotations

import asyncio
import time

from shop_bridge.payments import HttpPaymentProvider
from tests.shop.conftest import FakeClock, make_product, make_sale, uid
from tests.shop.test_payments import notification, outcomes, send


async def _coupon(api, user: str, value: int) -> str:
    grant = await api.ok(
        "POST",
        "/api/lottery/prizes",
        {
            "lottery_id": uid("lot"),
            "user_id": user,
            "n": 1,
            "prize": {"name": "coupon", "value_fen": value},
        },
        201,
    )
    return str(grant["coupon_id"])


async def _order(api, user: str, sku: int, qty: int = 1, coupon: str | None = None, key=None):
    body = {"user_id": user, "sku_id": sku, "quantity": qty, "idempotency_key": key or uid("k")}
    if coupon is not None:
        body["coupon_id"] = coupon
    return await api.post("/api/orders", body, token=None)


async def _sku_stock(api, product_id: int) -> int:
    return int((await api.ok("GET", f"/api/products/{product_id}"))["skus"][0]["stock"])


async def _coupon_row(api, user: str, cid: str) -> dict:
    items = (await api.ok("GET", f"/api/users/{user}/coupons", token=None, viewer=user))["items"]
    return next(c for c in items if c["id"] == cid)


async def _pay(api, order: dict) -> None:
    pay = await api.ok(
        "POST", f"/api/orders/{order['id']}/pay", token=None, viewer=order["user_id"]
    )
    assert pay["amount_fen"] == order["amount_fen"]
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert (await r.json())["notify_status"] == 200


async def test_coupon_discounts_an_order_and_is_used_once(shop) -> None:
    api = shop.api
    product = await make_product(api, price=2000, stock=10)
    sku = product["skus"][0]["id"]
    cid = await _coupon(api, "cora", 500)
    other = await _coupon(api, "otto", 500)
    status, body = await _order(api, "cora", sku, coupon=other)  # someone else's
    assert (status, body["error"]["code"]) == (422, "unknown_coupon")
    status, order = await _order(api, "cora", sku, qty=2, coupon=cid)
    assert status == 201, order
    assert order["amount_fen"] == 3500 and order["discount_fen"] == 500
    assert order["coupon_id"] == cid
    assert (await _coupon_row(api, "cora", cid))["used_order_id"] == order["id"]
    status, body = await _order(api, "cora", sku, coupon=cid)
    assert (status, body["error"]["code"]) == (409, "coupon_used")
    assert await _sku_stock(api, product["id"]) == 8  # the refused order took nothing
    # the provider is asked for the discounted amount, and the notification must match it
    status, body = await send(shop, notification(order["id"], 4000))
    assert (status, body["error"]["code"]) == (400, "amount_mismatch")
    await _pay(api, order)
    got = await api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="cora")
    assert got["state"] == "paid"
    # refunded after payment: the money goes back, the units go back, the coupon does not
    refunded = await api.ok("POST", f"/api/orders/{order['id']}/refund", {"reason": "size"})
    assert refunded["state"] == "refunded"
    assert await _sku_stock(api, product["id"]) == 10
    assert (await _coupon_row(api, "cora", cid))["used_order_id"] == order["id"]


async def test_two_orders_racing_for_one_coupon(shop) -> None:
    api = shop.api
    product = await make_product(api, price=1000, stock=50)
    sku = product["skus"][0]["id"]
    cid = await _coupon(api, "rita", 300)
    results = await asyncio.gather(*(_order(api, "rita", sku, coupon=cid) for _ in range(8)))
    codes = sorted(status for status, _ in results)
    assert codes == [201] + [409] * 7, results
    assert {b["error"]["code"] for s, b in results if s == 409} == {"coupon_used"}
    assert await _sku_stock(api, product["id"]) == 49


async def test_cancelled_orders_give_the_coupon_back(shop) -> None:
    api = shop.api
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    product = await make_product(api, price=1000, stock=5)
    sku = product["skus"][0]["id"]
    cid = await _coupon(api, "cole", 200)
    _, first = await _order(api, "cole", sku, coupon=cid)
    await api.ok("POST", f"/api/orders/{first['id']}/cancel", token=None, viewer="cole")
    assert (await _coupon_row(api, "cole", cid))["used_order_id"] is None
    assert await _sku_stock(api, product["id"]) == 5
    status, second = await _order(api, "cole", sku, coupon=cid)  # usable again
    assert status == 201 and second["amount_fen"] == 800
    clock.advance(shop.svc.ctx.config.payment_timeout + 1)
    assert (await shop.svc.upkeep.sweep())["cancelled"] == 1
    assert (await _coupon_row(api, "cole", cid))["used_order_id"] is None
    assert await _sku_stock(api, product["id"]) == 5


async def test_an_order_the_coupon_covers_is_paid_at_once(shop) -> None:
    api = shop.api
    paid: list[dict] = []
    shop.svc.ctx.bus.subscribe("order.paid", lambda e: paid.append(e.data))
    product = await make_product(api, price=300, stock=3)
    sku = product["skus"][0]["id"]
    cid = await _coupon(api, "zed", 1000)
    status, order = await _order(api, "zed", sku, coupon=cid)
    assert status == 201
    assert order["state"] == "paid" and order["amount_fen"] == 0 and order["discount_fen"] == 300
    got = await api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="zed")
    assert [(h["to_state"], h["actor"]) for h in got["history"]] == [
        ("pending_payment", "zed"),
        ("paid", "checkout"),
    ]
    status, body = await api.post(f"/api/orders/{order['id']}/pay", token=None, viewer="zed")
    assert (status, body["error"]["code"]) == (409, "illegal_transition")
    await shop.svc.ctx.bus.drain()
    # once for this order (other tests' orders may share the production Redis bus)
    assert [e["order_id"] for e in paid if e["order_id"] == order["id"]] == [order["id"]]
    refunded = await api.ok("POST", f"/api/orders/{order['id']}/refund")
    assert refunded["state"] == "refunded"
    assert await _sku_stock(api, product["id"]) == 3
    assert order["id"] not in shop.sim.refund_calls  # nothing to pay back


async def test_flash_sale_buys_take_no_coupon(shop) -> None:
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"])
    cid = await _coupon(api, "flo", 100)
    status, body = await api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "flo", "idempotency_key": "t1", "coupon_id": cid},
        token=None,
    )
    assert status == 400 and "coupon_id" in body["error"]["message"]


async def test_refunds_return_stock_exactly_once(shop) -> None:
    api = shop.api
    product = await make_product(api, price=1000, stock=20)
    sku = product["skus"][0]["id"]
    sale = await make_sale(api, uid(), sku, stock=5, limit=2)
    assert await _sku_stock(api, product["id"]) == 15
    # a flash order: its units go back to the SKU (the sale's stock came from it)
    status, flash = await api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "fay", "idempotency_key": "f1", "quantity": 2},
        token=None,
    )
    assert status == 201
    _, normal = await _order(api, "fay", sku, qty=3)
    assert await _sku_stock(api, product["id"]) == 12
    for o in (flash, normal):
        await _pay(api, o)
    # the refund cannot start (provider down): stays refunding, nothing returned yet
    real = shop.svc.checkout.provider
    dead = HttpPaymentProvider("http://127.0.0.1:9", shop.svc.notices.payment_key, timeout=1)
    await dead.start()
    try:
        shop.svc.checkout.provider = dead
        for o in (flash, normal):
            got = await api.ok("POST", f"/api/orders/{o['id']}/refund")
            assert got["state"] == "refunding"
    finally:
        shop.svc.checkout.provider = real
        await dead.close_session()
    assert await _sku_stock(api, product["id"]) == 12
    status, body = await api.post(f"/api/orders/{normal['id']}/refund")
    assert (status, body["error"]["code"]) == (409, "illegal_transition")
    # the sweeper and direct retries race to confirm it: the units come back once
    orders = [await shop.svc.checkout.order(o["id"]) for o in (flash, normal)]
    await asyncio.gather(
        shop.svc.upkeep.sweep(),
        shop.svc.upkeep.sweep(),
        *(shop.svc.checkout.try_refund(o, "api") for o in orders),
        *(shop.svc.checkout.try_refund(o, "api") for o in orders),
    )
    for o in (flash, normal):
        got = await api.ok("GET", f"/api/orders/{o['id']}")
        assert got["state"] == "refunded"
        assert [h["to_state"] for h in got["history"]].count("refunded") == 1
    assert await _sku_stock(api, product["id"]) == 17
    await shop.svc.upkeep.sweep()
    await shop.svc.upkeep.reconcile()
    assert await _sku_stock(api, product["id"]) == 17
    view = await api.ok("GET", f"/api/flash-sales/{sale['id']}")
    assert view["remaining"] == 3  # a refund never puts units back into a live sale
    audit = await api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"] and audit["returned_to_sku"] == 2, audit
    # and the buyer's allowance stays used (no buy-refund-buy around the limit)
    status, body = await api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "fay", "idempotency_key": "f2"},
        token=None,
    )
    assert (status, body["error"]["code"]) == (409, "limit_reached")


async def test_late_payment_of_a_cancelled_normal_order_is_refunded(shop) -> None:
    api = shop.api
    late_events: list[dict] = []
    shop.svc.ctx.bus.subscribe("order.payment_late", lambda e: late_events.append(e.data))
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    shop.svc.ctx.config = type(shop.svc.ctx.config)(
        **{**shop.svc.ctx.config.__dict__, "notify_max_skew": 10**6}
    )
    product = await make_product(api, price=1500, stock=4)
    sku = product["skus"][0]["id"]
    cid = await _coupon(api, "lou", 500)
    _, order = await _order(api, "lou", sku, qty=2, coupon=cid)
    await api.ok("POST", f"/api/orders/{order['id']}/pay", token=None, viewer="lou")
    clock.advance(shop.svc.ctx.config.payment_timeout + 1)
    assert (await shop.svc.upkeep.sweep())["cancelled"] == 1
    assert await _sku_stock(api, product["id"]) == 4
    # the provider's refund endpoint is down when the money arrives: the order is on the
    # refund path already, and the sweeper finishes it later
    real = shop.svc.checkout.provider
    dead = HttpPaymentProvider("http://127.0.0.1:9", shop.svc.notices.payment_key, timeout=1)
    await dead.start()
    try:
        shop.svc.checkout.provider = dead
        async with api.session.post(f"{shop.sim.url}/sim/pay/{order['id']}?late=1") as r:
            assert (await r.json())["notify_status"] == 200
        got = await api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="lou")
        assert got["state"] == "refunding" and got["transaction_id"]
    finally:
        shop.svc.checkout.provider = real
        await dead.close_session()
    # the provider repeats its notification (for a day): every repeat is acknowledged
    for _ in range(3):
        async with api.session.post(f"{shop.sim.url}/sim/notify/{order['id']}") as r:
            assert (await r.json())["notify_status"] == 200
    assert (await shop.svc.upkeep.sweep())["refunded"] == 1
    async with api.session.post(f"{shop.sim.url}/sim/notify/{order['id']}") as r:
        assert (await r.json())["notify_status"] == 200
    got = await api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="lou")
    assert got["state"] == "refunded"
    assert [h["to_state"] for h in got["history"]] == [
        "pending_payment",
        "cancelled",
        "refunding",
        "refunded",
    ]
    assert all(h["actor"] and h["reason"] for h in got["history"])
    # (the last repeat reports the refund: noted as "ignored")
    assert await outcomes(shop, order["id"]) == ["duplicate"] * 3 + ["ignored", "late"]
    assert shop.sim.refund_calls[order["id"]] == 1
    # stock: returned once at the cancellation, neither again nor taken back
    assert await _sku_stock(api, product["id"]) == 4
    await shop.svc.upkeep.reconcile()
    assert await _sku_stock(api, product["id"]) == 4
    # the coupon came back at the cancellation and stays the buyer's
    assert (await _coupon_row(api, "lou", cid))["used_order_id"] is None
    await shop.svc.ctx.bus.drain()
    assert [e["order_id"] for e in late_events] == [order["id"]]


async def test_notification_log_is_bounded(shop_factory) -> None:
    env = await shop_factory(notification_max_rows=5, notification_retention=3600, prune_batch=2)
    svc = env.svc
    now = svc.ctx.now_ms()
    for i in range(4):  # older than the retention
        await svc.notices.log(now - 7200_000 + i, f"old{i}", "", "", "forged", "", "x")
    for i in range(8):
        await svc.notices.log(now + i, f"new{i}", "", "", "forged", "", "x")
    report = await svc.upkeep.sweep()
    assert report["pruned"] == 7
    kept = await svc.notices.entries(None, 100)
    assert sorted(r["order_id"] for r in kept) == [f"new{i}" for i in range(3, 8)]
    assert (await svc.upkeep.sweep())["pruned"] == 0


async def test_shelf_is_filled_from_the_broadcast_products(shop) -> None:
    api = shop.api
    a = await make_product(api)
    b = await make_product(api)
    c = await make_product(api)
    anchor = int(api.tokens["anchor_id"]) if api.tokens else 0
    created = await api.ok(
        "POST",
        "/api/broadcasts",
        {
            "title": "tea",
            "scheduled_start": "2030-01-01T12:00:00Z",
            "anchor_id": anchor,
            "product_ids": [b["id"], a["id"], 99999999],
        },
        201,
    )
    bid = str(created["id"])

    async def shelf_ids() -> list[int]:
        shelf = await api.ok("GET", f"/api/broadcasts/{bid}/shelf", token=None)
        return [i["product"]["id"] for i in shelf["items"]]

    async def wait_for(expected: list[int]) -> None:
        deadline = time.monotonic() + 10
        while await shelf_ids() != expected:
            assert time.monotonic() < deadline, await shelf_ids()
            await asyncio.sleep(0.02)

    await wait_for([b["id"], a["id"]])
    await api.ok("PATCH", f"/api/broadcasts/{bid}/shelf/{a['id']}", {"on_shelf": False})
    await api.ok("PATCH", f"/api/broadcasts/{bid}", {"product_ids": [a["id"], c["id"]]})
    await wait_for([a["id"], c["id"]])
    shelf = await api.ok("GET", f"/api/broadcasts/{bid}/shelf", token=None)
    assert [i["on_shelf"] for i in shelf["items"]] == [False, True]  # flags kept
