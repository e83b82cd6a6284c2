"""Crash safety: the process dies between the Lua reservation and the durable order write.

The kill is simulated faithfully: the order writer never runs (the request hangs as if the
process froze right after the script), then the whole server is torn down and a new one
starts on the same data dir (embedded valkey's append-only file and the SQLite file) or the
same PostgreSQL/Redis. Startup reconciliation must complete the order or give the stock
back; nothing is lost and nothing is sold twice.
"""

from __future__ import annotations

import asyncio

from shop_bridge import SHOP
from shop_bridge.state import OrderState
from tests.shop.conftest import FakeClock, make_product, make_sale, uid


async def _crash_during_buy(env, sale_id: int, user: str, key: str, clock=None) -> None:
    svc = env.svc
    if clock is not None:
        svc.ctx.set_clock(clock)
    reserved = asyncio.Event()

    def freeze(row: dict, future: asyncio.Future) -> None:
        reserved.set()  # the row is never queued, the buyer never answered: the process
        # "dies" here, with the reservation made

    svc.flash.batcher.sink = freeze  # where a reserved buy's row goes to the order writer
    request = asyncio.ensure_future(
        env.api.post(
            f"/api/flash-sales/{sale_id}/buy",
            {"user_id": user, "idempotency_key": key},
            token=None,
        )
    )
    await asyncio.wait_for(reserved.wait(), 10)
    request.cancel()
    await env.server.runner.cleanup()  # the node goes away with the reservation in Redis


async def test_restart_completes_an_order_that_can_still_be_paid(shop_factory) -> None:
    env = await shop_factory("node")
    product = await make_product(env.api)
    sale = await make_sale(env.api, uid(), product["skus"][0]["id"], stock=5, limit=1)
    await _crash_during_buy(env, sale["id"], "frank", "tap-1")

    env2 = await shop_factory("node", reservation_grace=0.0)  # same data dir / databases
    svc = env2.server.app[SHOP]
    orders = await svc.ctx.book.list_orders(user_id="frank")
    mine = [o for o in orders if o["flash_sale_id"] == sale["id"]]
    assert len(mine) == 1 and mine[0]["state"] == "pending_payment"
    history = await svc.ctx.book.history(mine[0]["id"])
    assert history[0]["actor"] == "reconciler"
    # the buyer's retry of the same tap gets that very order; a new tap is over the limit
    status, again = await env2.api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "frank", "idempotency_key": "tap-1"},
        token=None,
    )
    assert status == 200 and again["id"] == mine[0]["id"]
    status, body = await env2.api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "frank", "idempotency_key": "tap-2"},
        token=None,
    )
    assert (status, body["error"]["code"]) == (409, "limit_reached")
    audit = await env2.api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"] and audit["redis_stock"] == 4 and audit["in_flight"] == 0, audit


async def test_restart_gives_back_stock_of_a_reservation_too_old_to_pay(shop_factory) -> None:
    env = await shop_factory("node")
    product = await make_product(env.api)
    sale = await make_sale(
        env.api, uid(), product["skus"][0]["id"], stock=5, limit=1, start_in=-7200, length=14400
    )
    past = FakeClock()
    past.advance(-2 * env.svc.ctx.config.payment_timeout)  # the crash happened long ago
    await _crash_during_buy(env, sale["id"], "grace", "tap-1", clock=past)

    env2 = await shop_factory("node", reservation_grace=0.0)
    svc = env2.server.app[SHOP]
    mine = [
        o
        for o in await svc.ctx.book.list_orders(user_id="grace")
        if o["flash_sale_id"] == sale["id"]
    ]
    assert len(mine) == 1 and mine[0]["state"] == "cancelled" and mine[0]["stock_released"]
    assert [h["actor"] for h in await svc.ctx.book.history(mine[0]["id"])] == ["reconciler"]
    audit = await env2.api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"] and audit["redis_stock"] == 5 and audit["in_flight"] == 0, audit
    # reconciling again returns nothing twice
    report = await svc.upkeep.reconcile()
    assert report["restored"] == 0 and report["completed"] == 0
    assert (await svc.flash.store.stock(sale["id"])) == 5
    # and the buyer may buy again (the allowance came back with the stock)
    status, _ = await env2.api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "grace", "idempotency_key": "tap-2"},
        token=None,
    )
    assert status == 201


async def test_a_late_original_write_loses_to_the_tombstone(shop) -> None:
    """If reconciliation gave the stock back, the original request's write must not also
    succeed (the order id is a primary key: exactly one of them lands)."""
    svc = shop.svc
    product = await make_product(shop.api)
    sale = await make_sale(shop.api, uid(), product["skus"][0]["id"], stock=1, limit=1)
    ctx = await svc.flash.sale_ctx(sale["id"])
    past = svc.ctx.now_ms() - 2 * svc.ctx.config.payment_timeout * 1000
    journal = {"u": "henry", "q": 1, "k": "k", "t": past, "c": None, "cp": None, "ch": "live"}
    res = await svc.flash.store.buy(
        sale["id"],
        now_ms=svc.ctx.now_ms(),
        user="henry",
        qty=1,
        idem_key="k",
        order_id="o" * 32,
        journal=journal,
    )
    assert res.status == "ok"
    report = await svc.upkeep.reconcile()
    assert report["restored"] == 1
    row = svc.flash.order_row(ctx, "o" * 32, journal, OrderState.PENDING_PAYMENT)
    order, created = await svc.flash.commit(ctx, row)
    assert not created and order["state"] == "cancelled"
    assert await svc.flash.store.stock(sale["id"]) == 1
    assert (await shop.api.ok("GET", f"/api/flash-sales/{sale['id']}/audit"))["consistent"]
