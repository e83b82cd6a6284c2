"""Issue 17, low items: a refund of a shipped order does not restock (the goods left the
warehouse); a buyer holds at most ``max_unpaid_per_sku`` unpaid units of a SKU."""

from __future__ import annotations

import asyncio

from tests.shop.conftest import make_product, make_sale, uid
from tests.shop.test_coupons_refunds import _order, _pay, _sku_stock


async def _refund_done(shop, order_id: str) -> dict:
    got = await shop.api.ok("POST", f"/api/orders/{order_id}/refund")
    if got["state"] != "refunded":  # the provider confirms later: the sweeper finishes it
        await shop.svc.checkout.try_refund(await shop.svc.checkout.order(order_id), "test")
    return await shop.api.ok("GET", f"/api/orders/{order_id}")


async def test_a_shipped_order_refunded_does_not_restock(shop) -> None:
    api = shop.api
    product = await make_product(api, price=1000, stock=20)
    sku = product["skus"][0]["id"]
    sale = await make_sale(api, uid(), sku, stock=5, limit=3)
    assert await _sku_stock(api, product["id"]) == 15
    status, flash = await api.post(
        f"/api/flash-sales/{sale['id']}/buy",
        {"user_id": "sam", "idempotency_key": "f1", "quantity": 2},
        token=None,
    )
    assert status == 201
    _, shipped = await _order(api, "sam", sku, qty=3, key="s1")
    _, kept = await _order(api, "sam", sku, qty=1, key="s2")
    assert await _sku_stock(api, product["id"]) == 11
    for o in (flash, shipped, kept):
        await _pay(api, o)
    for o in (flash, shipped):
        assert (await api.ok("POST", f"/api/orders/{o['id']}/ship"))["state"] == "shipped"
    for o in (flash, shipped):
        got = await _refund_done(shop, o["id"])
        assert got["state"] == "refunded", got
    assert await _sku_stock(api, product["id"]) == 11  # shipped goods are not back
    got = await _refund_done(shop, kept["id"])  # paid, never shipped: back in stock
    assert got["state"] == "refunded"
    assert await _sku_stock(api, product["id"]) == 12
    await shop.svc.upkeep.reconcile()
    assert await _sku_stock(api, product["id"]) == 12
    audit = await api.ok("GET", f"/api/flash-sales/{sale['id']}/audit")
    assert audit["consistent"], audit


async def test_a_buyer_holds_at_most_a_few_unpaid_units_of_a_sku(shop_factory) -> None:
    shop = await shop_factory(max_unpaid_per_sku=5)
    api = shop.api
    product = await make_product(api, price=1000, stock=100)
    sku = product["skus"][0]["id"]
    status, a = await _order(api, "hoa", sku, qty=2, key="a")
    assert status == 201
    status, b = await _order(api, "hoa", sku, qty=3, key="b")
    assert status == 201
    status, body = await _order(api, "hoa", sku, qty=1, key="c")
    assert (status, body["error"]["code"]) == (409, "unpaid_limit"), body
    assert await _sku_stock(api, product["id"]) == 95  # the refused one took nothing
    assert (await _order(api, "ivo", sku, qty=5, key="a"))[0] == 201  # another buyer
    # paying one frees its units from the cap; cancelling another too
    await _pay(api, a)
    assert (await _order(api, "hoa", sku, qty=2, key="d"))[0] == 201
    await api.ok("POST", f"/api/orders/{b['id']}/cancel", token=None, viewer="hoa")
    assert (await _order(api, "hoa", sku, qty=3, key="e"))[0] == 201
    # one buyer's orders at the same moment: exactly the cap gets through
    results = await asyncio.gather(
        *(_order(api, "jun", sku, qty=1, key=f"j{i}") for i in range(12))
    )
    assert sorted(s for s, _ in results) == [201] * 5 + [409] * 7
    assert {b["error"]["code"] for s, b in results if s == 409} == {"unpaid_limit"}
