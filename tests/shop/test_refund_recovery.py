"""A whole refund interrupted by a crash recovers by itself.

A whole refund writes its row (``pending``) and then moves the order ``paid|shipped ->
refunding`` and asks the provider under ``R<order id>``. A node that stopped between the
two left a pending row that blocked every later refund of the order. The tests make that
crash point with the refund path's own pieces, in their order (:meth:`Refunds._record`,
then nothing), and check that the retry step, its loop, or an operator asking again for
the same whole amount carries it on: the provider is asked under the same id (its calls are
counted: the simulated provider is a real HTTP server), the money moves once, the order
ends ``refunded`` with ``refunded_fen`` right, the units come back once (only if never
shipped), and a further refund is refused clearly. Both backends (tests/shop/conftest).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shop_bridge.context import new_id
from tests.shop.conftest import (
    ShopEnv,
    pay_order,
    place_order,
    shelved_product,
    sku_stock,
    wait_field,
)


async def _setup(shop: ShopEnv, price: int) -> tuple[int, dict[str, Any]]:
    return await shelved_product(shop.api, "refunds", price)


async def _paid(shop: ShopEnv, bid: int, sku: int, user: str, key: str) -> dict[str, Any]:
    return await pay_order(shop.api, await place_order(shop.api, bid, sku, user, key), user)


async def _stock(shop: ShopEnv, product_id: int) -> int:
    return await sku_stock(shop.api, product_id)


async def _wait_state(shop: ShopEnv, order_id: str, state: str) -> dict[str, Any]:
    return await wait_field(shop.api, f"/api/orders/{order_id}", "state", state)


PRICE = 10_000


async def _crashed_whole_refund(shop: ShopEnv, order_id: str) -> dict[str, Any]:
    """What a node that stopped inside a whole refund leaves: its refund row written by the
    refund path (``pending``, ``full``), the order not moved, the provider not asked."""
    recorded = await shop.svc.refunds._record(order_id, "op", "returned", None, new_id())
    assert recorded.refund is not None and not recorded.found
    got = await shop.api.ok("GET", f"/api/orders/{order_id}")
    assert got["state"] in ("paid", "shipped"), got
    assert [(r["state"], r["full"], r["amount_fen"]) for r in got["refunds"]] == [
        ("pending", True, PRICE)
    ]
    assert shop.sim.refund_calls.get(order_id, 0) == 0
    return recorded.refund


async def _all_done(shop: ShopEnv, order_id: str) -> dict[str, Any]:
    """The order once its refund rows are all ``done`` (marked on ``order.refunded``)."""
    deadline = time.monotonic() + 10
    while True:
        got: dict[str, Any] = await shop.api.ok("GET", f"/api/orders/{order_id}")
        if got["refunds"] and all(r["state"] == "done" for r in got["refunds"]):
            return got
        assert time.monotonic() < deadline, got["refunds"]
        await asyncio.sleep(0.05)


def _money_moved_once(shop: ShopEnv, order_id: str) -> None:
    assert shop.sim.refunds[order_id] == {"R" + order_id[:31]: PRICE}


async def test_the_retry_step_carries_on_a_whole_refund_left_pending(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory()
    api = shop.api
    bid, product = await _setup(shop, PRICE)
    order = await _paid(shop, bid, product["skus"][0]["id"], "cat", "rr1")
    assert await _stock(shop, product["id"]) == 9
    refund = await _crashed_whole_refund(shop, order["id"])

    # the pending row still keeps any other refund out
    status, body = await api.post(f"/api/orders/{order['id']}/refund", {"amount_fen": 1000})
    assert (status, body["error"]["code"]) == (409, "refund_pending"), body

    assert await shop.svc.refunds.retry_pending() == 1
    got = await _all_done(shop, order["id"])
    assert (got["state"], got["refunded_fen"]) == ("refunded", PRICE)
    assert [(r["id"], r["amount_fen"]) for r in got["refunds"]] == [(refund["id"], PRICE)]
    assert shop.sim.refund_calls[order["id"]] == 1
    _money_moved_once(shop, order["id"])
    assert await _stock(shop, product["id"]) == 10  # never shipped: back, once

    # nothing left to carry on; a second refund is refused and moves nothing
    assert await shop.svc.refunds.retry_pending() == 0
    status, body = await api.post(f"/api/orders/{order['id']}/refund", {"reason": "again"})
    assert (status, body["error"]["code"]) == (409, "illegal_transition"), body
    assert shop.sim.refund_calls[order["id"]] == 1
    assert await _stock(shop, product["id"]) == 10
    sales = await api.ok("GET", f"/api/broadcasts/{bid}/sales")
    assert (sales["gmv_fen"], sales["refunded_fen"], sales["orders"]) == (0, PRICE, 0)


async def test_asking_again_for_the_whole_amount_carries_the_pending_one_on(
    shop_factory: Any,
) -> None:
    shop: ShopEnv = await shop_factory()
    api = shop.api
    bid, product = await _setup(shop, PRICE)
    order = await _paid(shop, bid, product["skus"][0]["id"], "dan", "rr2")
    refund = await _crashed_whole_refund(shop, order["id"])

    # another amount is another refund: refused while this one is pending
    status, body = await api.post(f"/api/orders/{order['id']}/refund", {"amount_fen": PRICE - 1})
    assert (status, body["error"]["code"]) == (409, "refund_pending"), body
    assert shop.sim.refund_calls.get(order["id"], 0) == 0

    # the same whole amount (named, or "all that is left") is the pending refund asked again
    done = await api.ok(
        "POST", f"/api/orders/{order['id']}/refund", {"reason": "again", "amount_fen": PRICE}
    )
    assert done["refund"]["id"] == refund["id"] and done["refund"]["amount_fen"] == PRICE
    assert (done["state"], done["refunded_fen"]) == ("refunded", PRICE)
    got = await _all_done(shop, order["id"])
    assert [(r["id"], r["reason"]) for r in got["refunds"]] == [(refund["id"], "returned")]
    assert shop.sim.refund_calls[order["id"]] == 1
    _money_moved_once(shop, order["id"])
    assert await _stock(shop, product["id"]) == 10

    status, body = await api.post(f"/api/orders/{order['id']}/refund")
    assert (status, body["error"]["code"]) == (409, "illegal_transition"), body
    assert await shop.svc.refunds.retry_pending() == 0
    assert shop.sim.refund_calls[order["id"]] == 1
    assert await _stock(shop, product["id"]) == 10


async def test_carried_on_while_the_provider_is_down_then_finished_by_the_sweeper(
    shop_factory: Any,
) -> None:
    """The retry step finds the provider down: the order is moved ``refunding`` (a repeat
    is then an illegal move, as for any refunding order) and the sweeper finishes it once
    the provider is back, under the same id."""
    shop: ShopEnv = await shop_factory()
    api = shop.api
    bid, product = await _setup(shop, PRICE)
    order = await _paid(shop, bid, product["skus"][0]["id"], "eve", "rr3")
    refund = await _crashed_whole_refund(shop, order["id"])
    sim = shop.sim
    port = int(sim.url.rsplit(":", 1)[1])
    await sim.stop()
    try:
        assert await shop.svc.refunds.retry_pending() == 0
        got = await api.ok("GET", f"/api/orders/{order['id']}")
        assert got["state"] == "refunding"
        assert [(r["id"], r["state"]) for r in got["refunds"]] == [(refund["id"], "pending")]
        status, body = await api.post(f"/api/orders/{order['id']}/refund")
        assert (status, body["error"]["code"]) == (409, "illegal_transition"), body
        assert await shop.svc.refunds.retry_pending() == 0  # the sweeper's now
    finally:
        await sim.start("127.0.0.1", port)
    assert sim.refund_calls.get(order["id"], 0) == 0
    assert await _stock(shop, product["id"]) == 9

    report = await shop.svc.upkeep.sweep()
    assert report["refunded"] == 1
    got = await _all_done(shop, order["id"])
    assert (got["state"], got["refunded_fen"]) == ("refunded", PRICE)
    assert [r["id"] for r in got["refunds"]] == [refund["id"]]
    assert sim.refund_calls[order["id"]] == 1
    _money_moved_once(shop, order["id"])
    assert await _stock(shop, product["id"]) == 10
    assert await shop.svc.refunds.retry_pending() == 0
    assert (await shop.svc.upkeep.sweep())["refunded"] == 0
    assert sim.refund_calls[order["id"]] == 1


async def test_the_retry_loop_carries_on_a_shipped_order_s_whole_refund(
    shop_factory: Any,
) -> None:
    """Nobody calls anything: the refund retry loop (a short ``sweep_interval``) finds the
    pending whole refund of a shipped order and ends it; the goods left, no stock back."""
    shop: ShopEnv = await shop_factory(sweep_interval=0.2)
    api = shop.api
    bid, product = await _setup(shop, PRICE)
    order = await _paid(shop, bid, product["skus"][0]["id"], "fay", "rr4")
    await api.ok("POST", f"/api/orders/{order['id']}/ship")
    refund = await _crashed_whole_refund(shop, order["id"])

    got = await _wait_state(shop, order["id"], "refunded")
    assert got["refunded_fen"] == PRICE
    got = await _all_done(shop, order["id"])
    assert [r["id"] for r in got["refunds"]] == [refund["id"]]
    # the retry loop and the sweeper may both ask; always under the same id, paid once
    _money_moved_once(shop, order["id"])
    assert await _stock(shop, product["id"]) == 9
    status, body = await api.post(f"/api/orders/{order['id']}/refund")
    assert (status, body["error"]["code"]) == (409, "illegal_transition"), body
    _money_moved_once(shop, order["id"])


async def test_a_whole_refund_whose_completion_was_lost_is_marked_done(
    shop_factory: Any,
) -> None:
    """The order reached ``refunded`` but the refunds' part was stopped before it heard
    ``order.refunded``: the row stayed ``pending``. Started again, the retry marks it done
    and asks the provider nothing more."""
    shop: ShopEnv = await shop_factory()
    svc = shop.svc
    bid, product = await _setup(shop, PRICE)
    order = await _paid(shop, bid, product["skus"][0]["id"], "gus", "rr5")
    await svc.refunds.stop()  # hears no event from here
    try:
        recorded = await svc.refunds._record(order["id"], "op", "returned", None, new_id())
        assert recorded.refund is not None
        assert await svc.refunds._carry_on(recorded.refund, order["id"], "op", "returned")
    finally:
        svc.refunds.start(background=False)
    got = await shop.api.ok("GET", f"/api/orders/{order['id']}")
    assert (got["state"], got["refunded_fen"]) == ("refunded", PRICE)
    assert [r["state"] for r in got["refunds"]] == ["pending"]

    assert await svc.refunds.retry_pending() == 0  # nothing asked of the provider
    got = await _all_done(shop, order["id"])
    assert [r["id"] for r in got["refunds"]] == [recorded.refund["id"]]
    assert shop.sim.refund_calls[order["id"]] == 1
    _money_moved_once(shop, order["id"])
    assert await _stock(shop, product["id"]) == 10
