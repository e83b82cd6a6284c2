"""Payment notifications (duplicate, forged, wrong amount, unknown, late), the timeout
sweeper racing late payments, refunds and illegal transitions."""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import aiohttp

from shop_bridge import payments
from shop_bridge.payments import HttpPaymentProvider
from tests.shop.conftest import FakeClock, make_product, make_sale, uid

NOTIFY = "/api/shop/payments/notify"


def notification(order_id: str, amount: int, txn: str = "", state: str = "SUCCESS") -> bytes:
    body = {
        "id": secrets.token_hex(8),
        "event_type": "TRANSACTION.SUCCESS",
        "resource": {
            "out_trade_no": order_id,
            "transaction_id": txn or "42" + secrets.token_hex(8),
            "trade_state": state,
            "amount": {"total": amount, "currency": "CNY"},
        },
    }
    return json.dumps(body).encode()


async def send(shop, body: bytes, key: bytes | None = None, ts: float | None = None, headers=None):
    h = (
        headers
        if headers is not None
        else payments.signed_headers(key or shop.svc.notices.payment_key, body, ts)
    )
    return await shop.api.call("POST", NOTIFY, body, token=None, headers=h)


async def buy(shop, sale_id: int, user: str, key: str = "k", qty: int = 1) -> dict:
    return await shop.api.ok(
        "POST",
        f"/api/flash-sales/{sale_id}/buy",
        {"user_id": user, "idempotency_key": key, "quantity": qty},
        201,
        token=None,
    )


async def outcomes(shop, order_id: str) -> list[str]:
    rows = await shop.svc.notices.entries(order_id, 100)
    return sorted(r["outcome"] for r in rows)


async def setup_sale(shop, stock: int = 10, limit: int = 1):
    product = await make_product(shop.api)
    return await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=stock, limit=limit)


async def test_duplicate_forged_wrong_amount_unknown(shop) -> None:
    paid_events: list[dict] = []
    shop.svc.ctx.bus.subscribe("order.paid", lambda e: paid_events.append(e.data))
    sale = await setup_sale(shop)
    order = await buy(shop, sale["id"], "alice")
    oid, amount = order["id"], order["amount_fen"]

    # forged: wrong key, missing headers, tampered body
    status, body = await send(shop, notification(oid, amount), key=b"not-the-key")
    assert (status, body["error"]["code"]) == (401, "bad_signature")
    status, _ = await send(
        shop, notification(oid, amount), headers={"Content-Type": "application/json"}
    )
    assert status == 401
    good = notification(oid, amount)
    h = payments.signed_headers(shop.svc.notices.payment_key, good)
    status, _ = await send(shop, good.replace(b"SUCCESS", b"SUCCESS "), headers=h)
    assert status == 401
    # stale timestamp (a replay from long ago), malformed, unknown order, wrong amount
    status, body = await send(shop, notification(oid, amount), ts=time.time() - 3600)
    assert (status, body["error"]["code"]) == (401, "stale_timestamp")
    status, _ = await send(shop, b'{"resource": {"out_trade_no": 5}}')
    assert status == 400
    status, body = await send(shop, notification("0" * 32, amount))
    assert (status, body["error"]["code"]) == (404, "order_not_found")
    status, body = await send(shop, notification(oid, amount + 1))
    assert (status, body["error"]["code"]) == (400, "amount_mismatch")
    assert (await shop.api.ok("GET", f"/api/orders/{oid}", token=None, viewer="alice"))[
        "state"
    ] == "pending_payment"

    # the real one, then the provider repeats it (it does for ~24 h)
    txn = "4200001234"
    status, body = await send(shop, notification(oid, amount, txn))
    assert (status, body["code"]) == (200, "SUCCESS")
    for _ in range(3):
        status, body = await send(shop, notification(oid, amount, txn))
        assert (status, body["code"]) == (200, "SUCCESS")
    got = await shop.api.ok("GET", f"/api/orders/{oid}", token=None, viewer="alice")
    assert got["state"] == "paid" and got["transaction_id"] == txn
    assert [h["to_state"] for h in got["history"]] == ["pending_payment", "paid"]
    assert got["history"][1]["actor"] == "payment-notify"
    await shop.svc.ctx.bus.drain()
    assert [e["order_id"] for e in paid_events] == [oid]
    assert await outcomes(shop, oid) == [
        "accepted",
        "duplicate",
        "duplicate",
        "duplicate",
        "wrong_amount",
    ]
    rows = await shop.svc.notices.entries(None, 500)
    assert {"malformed", "unknown_order"} <= {r["outcome"] for r in rows}
    # the unauthenticated ones are only counted (and the last kept in memory)
    assert not {"forged", "stale"} & {r["outcome"] for r in rows}
    assert shop.svc.notices.refused_counts == {"forged": 3, "stale": 1}
    # operators can read the log; buyers cannot
    assert (await shop.api.call("GET", f"/api/shop/payments/notifications?order_id={oid}"))[
        0
    ] == 200
    assert (await shop.api.call("GET", "/api/shop/payments/notifications", token=None))[0] == 401


async def test_full_flow_through_the_simulated_provider(shop) -> None:
    sale = await setup_sale(shop)
    order = await buy(shop, sale["id"], "bob")
    pay = await shop.api.ok(
        "POST", f"/api/orders/{order['id']}/pay", token=None, viewer=order["user_id"]
    )
    url = pay["payment"]["sim_pay_url"]
    async with shop.api.session.post(url) as r:
        assert (await r.json())["notify_status"] == 200
    async with shop.api.session.post(url.replace("/sim/pay/", "/sim/notify/")) as r:
        assert (await r.json())["notify_status"] == 200  # the repeat is acknowledged too
    got = await shop.api.ok(
        "GET", f"/api/orders/{order['id']}", token=None, viewer=order["user_id"]
    )
    assert got["state"] == "paid"
    shipped = await shop.api.ok("POST", f"/api/orders/{order['id']}/ship")
    assert shipped["state"] == "shipped"
    status, body = await shop.api.post(
        f"/api/orders/{order['id']}/cancel", token=None, viewer=order["user_id"]
    )
    assert (status, body["error"]["code"]) == (409, "illegal_transition")
    assert body["error"]["state"] == "shipped"
    refunded = await shop.api.ok("POST", f"/api/orders/{order['id']}/refund", {"reason": "damaged"})
    assert refunded["state"] == "refunded"
    status, body = await shop.api.post(f"/api/orders/{order['id']}/complete")
    assert status == 409
    hist = (await shop.api.ok("GET", f"/api/orders/{order['id']}"))["history"]
    assert [h["to_state"] for h in hist] == [
        "pending_payment",
        "paid",
        "shipped",
        "refunding",
        "refunded",
    ]
    assert all(h["at_ms"] > 0 and h["actor"] for h in hist)


async def test_timeout_cancels_after_close_then_late_callback(shop) -> None:
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    sale = await setup_sale(shop, stock=3)
    order = await buy(shop, sale["id"], "carol")
    await shop.api.ok("POST", f"/api/orders/{order['id']}/pay", token=None, viewer=order["user_id"])
    assert (await shop.svc.upkeep.sweep())["cancelled"] == 0  # not due yet
    clock.advance(shop.svc.ctx.config.payment_timeout + 1)
    report = await shop.svc.upkeep.sweep()
    assert report["cancelled"] == 1
    got = await shop.api.ok(
        "GET", f"/api/orders/{order['id']}", token=None, viewer=order["user_id"]
    )
    assert got["state"] == "cancelled" and got["history"][-1]["actor"] == "timeout"
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 3
    # the provider refuses payment of a closed order
    async with shop.api.session.post(f"{shop.sim.url}/sim/pay/{order['id']}") as r:
        assert r.status == 409
    # ...unless the payment raced the close (a provider can lose that race): the money then
    # arrives for a cancelled order. It never resurrects the order nor moves stock again:
    # it is recorded and paid back through the provider.
    shop.svc.ctx.config = type(shop.svc.ctx.config)(
        **{**shop.svc.ctx.config.__dict__, "notify_max_skew": 10**6}
    )
    async with shop.api.session.post(f"{shop.sim.url}/sim/pay/{order['id']}?late=1") as r:
        assert (await r.json())["notify_status"] == 200
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="carol")
    assert got["state"] == "refunded" and got["transaction_id"]
    assert [(h["to_state"], h["actor"]) for h in got["history"]] == [
        ("pending_payment", "carol"),
        ("cancelled", "timeout"),
        ("refunding", "payment-notify"),
        ("refunded", "payment-notify"),
    ]
    assert "after the cancellation" in got["history"][2]["reason"]
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 3
    assert await outcomes(shop, order["id"]) == ["late"]
    assert shop.sim.refund_calls[order["id"]] == 1
    await shop.svc.upkeep.sweep()
    await shop.svc.upkeep.reconcile()
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 3
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}/audit"))["consistent"]


async def test_timeout_racing_late_payments(shop) -> None:
    """Sweeper and buyers paying at the last second, interleaved: a paid order is never
    cancelled and stock is returned exactly once per cancelled order."""
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    n = 40
    sale = await setup_sale(shop, stock=n)
    orders = [await buy(shop, sale["id"], f"p{i}") for i in range(n)]
    for o in orders:
        await shop.api.ok("POST", f"/api/orders/{o['id']}/pay", token=None, viewer=o["user_id"])
    clock.advance(shop.svc.ctx.config.payment_timeout + 1)
    # the notifications must not look stale to the shifted clock
    shop.svc.ctx.config = type(shop.svc.ctx.config)(
        **{**shop.svc.ctx.config.__dict__, "notify_max_skew": 10**6}
    )

    async def pay(o: dict) -> int:
        async with shop.api.session.post(f"{shop.sim.url}/sim/pay/{o['id']}") as r:
            return r.status

    payers = [pay(o) for o in orders[::2]]
    results = await asyncio.gather(*payers, shop.svc.upkeep.sweep(), shop.svc.upkeep.sweep())
    pay_status = results[: len(payers)]
    await shop.svc.upkeep.sweep()
    states = {}
    for o in orders:
        got = await shop.api.ok("GET", f"/api/orders/{o['id']}", token=None, viewer=o["user_id"])
        states[o["id"]] = got
        moves = [h["to_state"] for h in got["history"]]
        assert moves in (["pending_payment", "paid"], ["pending_payment", "cancelled"]), moves
    paid = {oid for oid, g in states.items() if g["state"] == "paid"}
    cancelled = {oid for oid, g in states.items() if g["state"] == "cancelled"}
    assert len(paid) + len(cancelled) == n
    # whoever the provider accepted money from is paid; nobody else is
    accepted = {o["id"] for o, st in zip(orders[::2], pay_status, strict=True) if st == 200}
    assert paid == accepted
    assert cancelled >= {o["id"] for o in orders[1::2]}
    snap = await shop.svc.flash.store.snapshot(sale["id"])
    assert snap.released == cancelled
    assert snap.stock == len(cancelled)
    audit = await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"], audit
    # running everything again changes nothing
    await shop.svc.upkeep.sweep()
    await shop.svc.upkeep.reconcile()
    assert (await shop.svc.flash.store.snapshot(sale["id"])).stock == len(cancelled)


async def test_no_cancel_while_the_provider_cannot_confirm(shop) -> None:
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    sale = await setup_sale(shop, stock=2)
    order = await buy(shop, sale["id"], "dave")
    real = shop.svc.checkout.provider
    dead = HttpPaymentProvider("http://127.0.0.1:9", shop.svc.notices.payment_key, timeout=1)
    await dead.start()
    try:
        shop.svc.checkout.provider = dead
        clock.advance(shop.svc.ctx.config.payment_timeout + 5)
        report = await shop.svc.upkeep.sweep()
        assert report == {
            "cancelled": 0,
            "paid": 0,
            "skipped": 1,
            "refunded": 0,
            "settled": 0,
            "pruned": 0,
        }
        got = await shop.api.ok(
            "GET", f"/api/orders/{order['id']}", token=None, viewer=order["user_id"]
        )
        assert got["state"] == "pending_payment"
        assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 1
        status, body = await shop.api.post(
            f"/api/orders/{order['id']}/cancel", token=None, viewer=order["user_id"]
        )
        assert (status, body["error"]["code"]) == (503, "provider_unavailable")
    finally:
        shop.svc.checkout.provider = real
        await dead.close_session()
    assert (await shop.svc.upkeep.sweep())["cancelled"] == 1
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 2


async def test_buyer_cancel_and_normal_orders_return_stock_once(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=5)
    sku = product["skus"][0]["id"]
    body = {"user_id": "erin", "sku_id": sku, "quantity": 2, "idempotency_key": "n1"}
    order = await api.ok("POST", "/api/orders", body, 201, token=None)
    again = await api.ok("POST", "/api/orders", body, 200, token=None)
    assert again["id"] == order["id"]
    assert (await api.ok("GET", f"/api/products/{product['id']}"))["skus"][0]["stock"] == 3
    status, err = await api.post(
        "/api/orders", {**body, "quantity": 4, "idempotency_key": "n2"}, token=None
    )
    assert (status, err["error"]["code"]) == (409, "sold_out")
    cancelled = await api.ok(
        "POST", f"/api/orders/{order['id']}/cancel", token=None, viewer=order["user_id"]
    )
    assert cancelled["state"] == "cancelled"
    status, _ = await api.post(
        f"/api/orders/{order['id']}/cancel", token=None, viewer=order["user_id"]
    )
    assert status == 409
    await shop.svc.upkeep.reconcile()
    assert (await api.ok("GET", f"/api/products/{product['id']}"))["skus"][0]["stock"] == 5
    status, err = await api.post(f"/api/orders/{order['id']}/ship")
    assert status == 409 and err["error"]["code"] == "illegal_transition"


async def test_lower_case_header_names_are_accepted(shop) -> None:
    """Header names are case-insensitive (HTTP/2 hops send them in lower case): a
    notification signed correctly but with lower-case (or upper-case) names pays the order
    at once, not at the 15-minute sweep. The client really sends the names as given."""
    sale = await setup_sale(shop)
    for user, fold in (("lena", str.lower), ("ulla", str.upper)):
        order = await buy(shop, sale["id"], user)
        body = notification(order["id"], order["amount_fen"], "4200" + user)
        signed = payments.signed_headers(shop.svc.notices.payment_key, body)
        headers = {fold(k): v for k, v in signed.items()}
        seen: list[str] = []

        async def on_headers(_session, _ctx, params, seen=seen) -> None:
            seen.extend(params.headers.keys())

        trace = aiohttp.TraceConfig()
        trace.on_request_headers_sent.append(on_headers)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            async with session.post(shop.api.base + NOTIFY, data=body, headers=headers) as r:
                status, answer = r.status, await r.json()
        assert fold(payments.SIG_HEADER) in seen  # the names went out folded
        assert (status, answer["code"]) == (200, "SUCCESS"), answer
        got = await shop.api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer=user)
        assert got["state"] == "paid"
        assert await outcomes(shop, order["id"]) == ["accepted"]


async def test_forged_notifications_write_nothing(shop) -> None:
    """Anyone can post to the notify URL: a forged notification is refused before anything
    is written; refused ones are counted and only the last REFUSED_KEPT kept (in memory)."""
    from sqlalchemy import func, select

    from shop_bridge.models import NOTIFICATIONS
    from shop_bridge.payment_notices import REFUSED_KEPT

    async def rows() -> int:
        async with shop.svc.ctx.engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(NOTIFICATIONS))).scalar_one()
            )

    sale = await setup_sale(shop)
    order = await buy(shop, sale["id"], "frank")
    before = await rows()
    n = REFUSED_KEPT + 20
    sem = asyncio.Semaphore(20)

    async def forge(i: int) -> int:
        async with sem:
            body = notification(order["id"], order["amount_fen"], f"forged{i}")
            status, _ = await send(shop, body, key=b"guessed-key")
            return status

    statuses = await asyncio.gather(*(forge(i) for i in range(n)))
    assert set(statuses) == {401}
    assert await rows() == before  # nothing stored
    log = (await shop.api.ok("GET", "/api/shop/payments/notifications"))["refused"]
    assert log["counts"] == {"forged": n}
    assert len(log["recent"]) == REFUSED_KEPT
    assert all(r["outcome"] == "forged" for r in log["recent"])
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="frank")
    assert got["state"] == "pending_payment"
