"""Refunds take a reason and an amount (issue 20 item 7): partial refunds, never more
than was paid (also when two are asked at once), the stock back only with a whole refund
of an order never shipped; the sales figures follow (net of refunds)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.shop.conftest import (
    ShopEnv,
    pay_order,
    place_order,
    shelved_product,
    sku_stock,
    wait_field,
)


async def _wait_state(shop: ShopEnv, order_id: str, state: str) -> dict[str, Any]:
    return await wait_field(shop.api, f"/api/orders/{order_id}", "state", state)


async def _paid(shop: ShopEnv, bid: int, sku: int, user: str, key: str) -> dict[str, Any]:
    return await pay_order(shop.api, await place_order(shop.api, bid, sku, user, key), user)


async def test_partial_then_whole_refund(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=False)
    api = shop.api
    bid, product = await shelved_product(api, "refunds", 10_000)
    sku = product["skus"][0]["id"]
    order = await _paid(shop, bid, sku, "ann", "r1")
    assert await sku_stock(api, product["id"]) == 9

    part = await api.ok(
        "POST", f"/api/orders/{order['id']}/refund", {"reason": "scratched", "amount_fen": 3000}
    )
    assert part["state"] == "paid" and part["refunded_fen"] == 3000
    assert part["refund"]["state"] == "done" and part["refund"]["reason"] == "scratched"
    assert part["refund"]["amount_fen"] == 3000 and part["refund"]["full"] is False
    sales = await api.ok("GET", f"/api/broadcasts/{bid}/sales")
    assert (sales["gmv_fen"], sales["refunded_fen"], sales["orders"]) == (7000, 3000, 1)
    assert await sku_stock(api, product["id"]) == 9  # the buyer keeps the goods

    status, body = await api.post(f"/api/orders/{order['id']}/refund", {"amount_fen": 8000})
    assert (status, body["error"]["code"]) == (409, "refund_exceeds_paid"), body
    assert body["error"]["remaining_fen"] == 7000

    # two refunds at once of 4000 each: 7000 left, so exactly one passes
    results = await asyncio.gather(
        *(
            api.post(f"/api/orders/{order['id']}/refund", {"amount_fen": 4000, "reason": r})
            for r in ("a", "b")
        )
    )
    assert sorted(s for s, _ in results) == [200, 409], results
    refused = next(b for s, b in results if s == 409)
    assert refused["error"]["code"] in ("refund_exceeds_paid", "refund_pending")

    whole = await api.ok("POST", f"/api/orders/{order['id']}/refund", {"reason": "returned"})
    assert whole["refund"]["amount_fen"] == 3000 and whole["refund"]["full"] is True
    done = await _wait_state(shop, order["id"], "refunded")
    assert done["refunded_fen"] == 10_000
    deadline = time.monotonic() + 10
    while not all(r["state"] == "done" for r in done["refunds"]):  # marked on order.refunded
        assert time.monotonic() < deadline, done["refunds"]
        await asyncio.sleep(0.05)
        done = await api.ok("GET", f"/api/orders/{order['id']}")
    assert [r["amount_fen"] for r in done["refunds"]] == [3000, 4000, 3000]
    assert all(r["state"] == "done" for r in done["refunds"])
    assert sum(shop.sim.refunds[order["id"]].values()) == 10_000  # never above what was paid
    assert await sku_stock(api, product["id"]) == 10  # never shipped: the unit is back
    sales = await api.ok("GET", f"/api/broadcasts/{bid}/sales")
    assert (sales["gmv_fen"], sales["refunded_fen"], sales["orders"]) == (0, 10_000, 0)
    status, body = await api.post(f"/api/orders/{order['id']}/refund", {"amount_fen": 1})
    assert (status, body["error"]["code"]) == (409, "illegal_transition")


async def test_refund_of_a_shipped_order_keeps_the_stock(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=False)
    api = shop.api
    bid, product = await shelved_product(api, "refunds", 5000)
    order = await _paid(shop, bid, product["skus"][0]["id"], "bea", "s1")
    await api.ok("POST", f"/api/orders/{order['id']}/ship")
    status, body = await api.post(f"/api/orders/{order['id']}/refund", {"amount_fen": 0})
    assert status == 400, body
    await api.ok("POST", f"/api/orders/{order['id']}/refund", {"reason": "lost in the post"})
    done = await _wait_state(shop, order["id"], "refunded")
    assert done["refunds"][0]["reason"] == "lost in the post"
    assert await sku_stock(api, product["id"]) == 9  # the goods left the warehouse
