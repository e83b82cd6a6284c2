"""Closing and editing live flash sales; settlement of unsold stock back to the SKU."""

from __future__ import annotations

import asyncio
import time

from shop_bridge.redis_store import SaleKeys
from shop_bridge.state import OrderState
from tests.shop.conftest import FakeClock, journal_drained, make_product, make_sale, uid


async def _buy(api, sale_id: int, user: str, key: str = "k", qty: int = 1) -> tuple[int, dict]:
    return await api.post(
        f"/api/flash-sales/{sale_id}/buy",
        {"user_id": user, "idempotency_key": key, "quantity": qty},
        token=None,
    )


async def _sku_stock(api, product_id: int) -> int:
    return int((await api.ok("GET", f"/api/products/{product_id}"))["skus"][0]["stock"])


async def _audit(api, sale_id: int) -> dict:
    audit = await api.ok("GET", f"/api/flash-sales/{sale_id}/audit")
    assert audit["consistent"], audit
    return audit


async def test_sale_stock_is_taken_from_the_sku(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=30)
    sku = product["skus"][0]["id"]
    bid = uid()
    await make_sale(api, bid, sku, stock=20)
    assert await _sku_stock(api, product["id"]) == 10
    status, body = await api.post(
        "/api/flash-sales",
        {
            "broadcast_id": bid,
            "sku_id": sku,
            "sale_price_fen": 100,
            "sale_stock": 11,
            "starts_at": int(time.time() * 1000),
            "ends_at": int(time.time() * 1000) + 60000,
        },
    )
    assert (status, body["error"]["code"]) == (409, "insufficient_stock")
    assert await _sku_stock(api, product["id"]) == 10


async def test_close_refuses_buys_keeps_orders_and_returns_unsold_stock(shop) -> None:
    api = shop.api
    events: list[tuple[str, dict]] = []
    shop.svc.ctx.bus.subscribe("flash_sale.*", lambda e: events.append((e.topic, e.data)))
    product = await make_product(api, stock=50)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=10, limit=2)
    assert await _sku_stock(api, product["id"]) == 40
    orders = []
    for u in ("a1", "a2", "a3"):
        status, order = await _buy(api, sale["id"], u)
        assert status == 201
        orders.append(order)
    # anchors may close too; buyers may not
    status, _ = await api.post(f"/api/flash-sales/{sale['id']}/close", token=None)
    assert status == 401
    closed = await api.ok(
        "POST", f"/api/flash-sales/{sale['id']}/close", {"reason": "sold out on stage"}
    )
    assert closed["status"] == "closed" and closed["closed_at"] and closed["settled_at"]
    assert closed["returned_stock"] == 7 and closed["remaining"] == 0
    assert await _sku_stock(api, product["id"]) == 47
    status, body = await _buy(api, sale["id"], "late-buyer")
    assert (status, body["error"]["code"]) == (409, "sale_closed")
    # a repeated buy of an earlier tap still answers its order (idempotency wins)
    status, again = await _buy(api, sale["id"], "a1")
    assert status == 200 and again["id"] == orders[0]["id"]
    # orders placed before stay valid: one is paid after the close
    pay = await api.ok("POST", f"/api/orders/{orders[0]['id']}/pay", token=None, viewer="a1")
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert (await r.json())["notify_status"] == 200
    got = await api.ok("GET", f"/api/orders/{orders[0]['id']}", token=None, viewer="a1")
    assert got["state"] == "paid"
    # an unpaid one cancelled after the close: its unit goes to the SKU, not the closed sale
    await api.ok("POST", f"/api/orders/{orders[1]['id']}/cancel", token=None, viewer="a2")
    assert await _sku_stock(api, product["id"]) == 48
    assert (await api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 0
    audit = await _audit(api, sale["id"])
    assert audit["returned_at_settlement"] == 7 and audit["returned_to_sku"] == 1
    # closing again changes nothing; editing a closed sale is refused
    again_view = await api.ok("POST", f"/api/flash-sales/{sale['id']}/close")
    assert again_view["closed_at"] == closed["closed_at"]
    status, body = await api.call("PATCH", f"/api/flash-sales/{sale['id']}", {"sale_stock": 20})
    assert (status, body["error"]["code"]) == (409, "sale_closed")
    await shop.svc.upkeep.sweep()
    await shop.svc.upkeep.reconcile()
    assert await _sku_stock(api, product["id"]) == 48
    await _audit(api, sale["id"])
    await shop.svc.ctx.bus.drain()
    topics = [t for t, _ in events]
    assert topics.count("flash_sale.closed") == 1 and topics.count("flash_sale.settled") == 1
    closed_event = next(d for t, d in events if t == "flash_sale.closed")
    assert closed_event["reason"] == "sold out on stage" and closed_event["status"] == "closed"
    assert closed_event["room"] and closed_event["actor"]
    settled_event = next(d for t, d in events if t == "flash_sale.settled")
    assert settled_event["returned_stock"] == 7


async def test_edit_a_live_sale(shop) -> None:
    api = shop.api
    events: list[dict] = []
    shop.svc.ctx.bus.subscribe("flash_sale.updated", lambda e: events.append(e.data))
    product = await make_product(api, stock=100)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=10, limit=1)
    sid = sale["id"]
    for i in range(4):
        assert (await _buy(api, sid, f"e{i}"))[0] == 201
    status, body = await _buy(api, sid, "e0", key="second")
    assert (status, body["error"]["code"]) == (409, "limit_reached")
    new_end = int((time.time() + 7200) * 1000)
    edited = await api.ok(
        "PATCH",
        f"/api/flash-sales/{sid}",
        {"ends_at": new_end, "per_user_limit": 2, "sale_stock": 30},
    )
    assert edited["sale_stock"] == 30 and edited["remaining"] == 26
    assert edited["per_user_limit"] == 2 and edited["status"] == "open"
    assert await _sku_stock(api, product["id"]) == 70
    assert (await _buy(api, sid, "e0", key="second"))[0] == 201  # the new limit applies
    # Redis (what buy.lua reads) agrees with the database
    meta = await shop.svc.flash.store.meta(sid)
    assert meta["end"] == str(new_end) and meta["limit"] == "2" and meta["cap"] == "30"
    # shrink: unsold units go back to the SKU, never below what is sold or held
    shrunk = await api.ok("PATCH", f"/api/flash-sales/{sid}", {"sale_stock": 6})
    assert shrunk["remaining"] == 1 and await _sku_stock(api, product["id"]) == 94
    status, body = await api.call("PATCH", f"/api/flash-sales/{sid}", {"sale_stock": 4})
    assert (status, body["error"]["code"]) == (409, "stock_held")
    status, body = await api.call("PATCH", f"/api/flash-sales/{sid}", {"sale_stock": 100_000})
    assert (status, body["error"]["code"]) == (409, "insufficient_stock")
    status, body = await api.call(
        "PATCH", f"/api/flash-sales/{sid}", {"ends_at": int((time.time() - 5) * 1000)}
    )
    assert (status, body["error"]["code"]) == (400, "invalid_field")
    for bad in ({}, {"sale_stock": 0}, {"per_user_limit": "2"}, {"starts_at": 1}):
        status, body = await api.call("PATCH", f"/api/flash-sales/{sid}", bad)
        assert status == 400 and body["error"]["code"], (bad, body)
    status, _ = await api.call("PATCH", "/api/flash-sales/99999999", {"sale_stock": 5})
    assert status == 404
    status, _ = await api.call("PATCH", f"/api/flash-sales/{sid}", {"sale_stock": 5}, token=None)
    assert status == 401
    assert await _sku_stock(api, product["id"]) == 94
    await _audit(api, sid)
    await shop.svc.ctx.bus.drain()
    assert [sorted(e["changed"]) for e in events] == [
        ["ends_at", "per_user_limit", "sale_stock"],
        ["sale_stock"],
    ]


async def test_buys_racing_edits_never_oversell(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=1000)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=40, limit=1)
    sid = sale["id"]

    async def edits() -> list[int]:
        codes = []
        for stock in (60, 45, 80, 50, 70):
            status, _ = await api.call("PATCH", f"/api/flash-sales/{sid}", {"sale_stock": stock})
            codes.append(status)
            await asyncio.sleep(0)
        return codes

    buys = [_buy(api, sid, f"r{i}") for i in range(400)]
    results = await asyncio.gather(edits(), *buys)
    edit_codes = results[0]
    assert set(edit_codes) <= {200, 409}, edit_codes
    sold = sum(1 for status, _ in results[1:] if status == 201)
    final = await api.ok("GET", f"/api/flash-sales/{sid}")
    assert sold + final["remaining"] == final["sale_stock"], (sold, final)
    assert sold <= final["sale_stock"]
    # every unit is somewhere: the sale's remaining, an order, or back in the SKU
    assert await _sku_stock(api, product["id"]) == 1000 - final["sale_stock"]
    await _audit(api, sid)


async def test_an_ended_sale_is_settled_by_the_sweeper(shop) -> None:
    api = shop.api
    clock = FakeClock()
    shop.svc.ctx.set_clock(clock)
    product = await make_product(api, stock=20)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=10, limit=3, length=600)
    status, pending = await _buy(api, sale["id"], "s1", qty=2)
    assert status == 201
    assert (await shop.svc.upkeep.sweep())["settled"] == 0  # still on
    await journal_drained(shop.svc, sale["id"])  # else the sweep finds it busy, tries later
    clock.advance(601)
    report = await shop.svc.upkeep.sweep()
    assert report["settled"] == 1
    view = await api.ok("GET", f"/api/flash-sales/{sale['id']}")
    assert view["status"] == "ended" and view["settled_at"] and view["returned_stock"] == 8
    assert await _sku_stock(api, product["id"]) == 18
    # extending a sale that is over is refused
    status, body = await api.call(
        "PATCH",
        f"/api/flash-sales/{sale['id']}",
        {"ends_at": int((clock() + 3600) * 1000)},
    )
    assert (status, body["error"]["code"]) == (409, "sale_over")
    # the buyer never paid: the timeout gives the units to the SKU (the sale is settled)
    clock.advance(shop.svc.ctx.config.payment_timeout)
    assert (await shop.svc.upkeep.sweep())["cancelled"] == 1
    got = await api.ok("GET", f"/api/orders/{pending['id']}", token=None, viewer="s1")
    assert got["state"] == "cancelled"
    assert await _sku_stock(api, product["id"]) == 20
    assert (await shop.svc.upkeep.sweep())["settled"] == 0
    await _audit(api, sale["id"])


async def test_redis_loss_after_close_is_rebuilt_closed(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=10)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=5)
    assert (await _buy(api, sale["id"], "x1"))[0] == 201
    await api.ok("POST", f"/api/flash-sales/{sale['id']}/close")
    await shop.svc.flash.store.drop(sale["id"])
    view = await api.ok("GET", f"/api/flash-sales/{sale['id']}")
    assert view["status"] == "closed" and view["remaining"] == 0
    status, body = await _buy(api, sale["id"], "x2")
    assert (status, body["error"]["code"]) == (409, "sale_closed")
    assert await _sku_stock(api, product["id"]) == 9
    await _audit(api, sale["id"])


async def test_reconciliation_makes_redis_match_the_database(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=50)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=10, limit=1)
    keys = SaleKeys.for_sale(shop.svc.ctx.config.redis_prefix, sale["id"])
    # as if an edit's commit had failed after Redis changed
    await shop.svc.flash.store.edit(
        sale["id"],
        ends_ms=int((time.time() + 99999) * 1000),
        limit=9,
        cap=25,
        old_cap=10,
        now_ms=shop.svc.ctx.now_ms(),
    )
    assert (await shop.svc.flash.store.stock(sale["id"])) == 25
    await shop.svc.upkeep.reconcile()
    meta = await shop.svc.flash.store.meta(sale["id"])
    assert meta["limit"] == "1" and meta["cap"] == "10"
    row = await shop.svc.flash.sale_row(sale["id"])
    assert meta["end"] == str(row["ends_ms"])
    assert int(await shop.svc.ctx.redis.get(keys.stock)) == 10
    await _audit(api, sale["id"])


async def test_an_old_sale_whose_keys_expired_is_settled_from_the_database(shop) -> None:
    api = shop.api
    product = await make_product(api, stock=10)
    sale = await make_sale(
        api, uid(), product["skus"][0]["id"], stock=6, start_in=-12 * 86400, length=3600
    )
    assert await _sku_stock(api, product["id"]) == 4
    async with shop.svc.ctx.engine.begin() as conn:  # one order bought back then
        from shop_bridge.models import ORDERS

        ctx = await shop.svc.flash.sale_ctx(sale["id"])
        j = {"u": "old", "q": 2, "k": "k", "t": shop.svc.ctx.now_ms(), "ch": "live"}
        row = shop.svc.flash.order_row(ctx, "e" * 32, j, OrderState.PAID)
        await conn.execute(ORDERS.insert().values(**row))
    await shop.svc.flash.store.drop(sale["id"])  # expired: a reload expires at once
    assert (await shop.svc.upkeep.sweep())["settled"] == 1
    view = await api.ok("GET", f"/api/flash-sales/{sale['id']}")
    assert view["settled_at"] and view["returned_stock"] == 4
    assert await _sku_stock(api, product["id"]) == 8
    assert (await shop.svc.upkeep.sweep())["settled"] == 0
