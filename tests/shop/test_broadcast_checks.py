"""The shop checks the broadcast it sells for (issue 20 items 3-5): a broadcast it does
not know is 404, one that is over (cancelled, banned; ended in tests/control/test_series)
takes no card or flash sale, orders and flash sales only of products on that broadcast's
shelf, a SKU of another product is named as such, and broadcast ids are integers."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.shop.conftest import ShopEnv, make_product


async def _broadcast(shop: ShopEnv, **extra: Any) -> dict[str, Any]:
    """A broadcast scheduled in control; returns once the shop has its shelf (control's
    ``broadcast.created`` event fills it)."""
    body = {"title": "checks", "scheduled_start": "2030-01-01T12:00:00Z", **extra}
    b: dict[str, Any] = await shop.api.ok("POST", "/api/broadcasts", body, 201)
    want = len(extra.get("product_ids", []))
    async with asyncio.timeout(10):
        while True:
            shelf = await shop.api.ok("GET", f"/api/broadcasts/{b['id']}/shelf")
            if len(shelf["items"]) == want:
                return b
            await asyncio.sleep(0.02)


def _sale(bid: Any, sku: int) -> dict[str, Any]:
    return {
        "broadcast_id": bid,
        "sku_id": sku,
        "sale_price_fen": 100,
        "sale_stock": 5,
        "starts_at": "2030-01-01T00:00:00Z",
        "ends_at": "2030-01-01T01:00:00Z",
    }


async def _stock(shop: ShopEnv, product_id: int) -> int:
    return int((await shop.api.ok("GET", f"/api/products/{product_id}"))["skus"][0]["stock"])


async def test_unknown_and_closed_broadcasts_are_refused(shop: ShopEnv) -> None:
    api = shop.api
    tea = await make_product(api, stock=50)
    sku = tea["skus"][0]["id"]
    # a broadcast nobody scheduled: 404, and no stock moves
    for bid in (999_999_999, "999"):
        status, body = await api.post("/api/flash-sales", _sale(bid, sku))
        assert (status, body["error"]["code"]) == (404, "broadcast_not_found"), body
    status, body = await api.post("/api/broadcasts/999999999/card", {"product_id": tea["id"]})
    assert (status, body["error"]["code"]) == (404, "broadcast_not_found")
    status, body = await api.post("/api/broadcasts/b1/card", {"product_id": tea["id"]})
    assert (status, body["error"]["code"]) == (404, "broadcast_not_found")
    assert await _stock(shop, tea["id"]) == 50
    # not an id at all
    status, body = await api.post("/api/flash-sales", _sale("b1", sku))
    assert (status, body["error"]["code"]) == (400, "invalid_field")

    # cancelled and banned broadcasts take no card and no flash sale
    for action, code in (("cancel", "broadcast_cancelled"), ("ban", "broadcast_banned")):
        b = await _broadcast(shop, product_ids=[tea["id"]])
        bid = b["id"]
        card = await api.ok("POST", f"/api/broadcasts/{bid}/card", {"product_id": tea["id"]}, 201)
        assert card["broadcast_id"] == bid  # an integer
        sale = await api.ok("POST", "/api/flash-sales", _sale(bid, sku), 201)
        assert sale["broadcast_id"] == bid
        await api.ok("POST", f"/api/broadcasts/{bid}/{action}", {"reason": "test"})
        # its open flash sale is closed: buys refused, the unsold stock back to the SKU
        async with asyncio.timeout(10):
            while (await api.ok("GET", f"/api/flash-sales/{sale['id']}"))["status"] != "closed":
                await asyncio.sleep(0.02)
        status, body = await api.post(
            f"/api/flash-sales/{sale['id']}/buy",
            {"user_id": "u9", "idempotency_key": f"b{bid}"},
            token=None,
        )
        assert (status, body["error"]["code"]) == (409, "sale_closed"), body
        shop_view = await api.ok("GET", f"/api/broadcasts/{bid}/shop")
        assert shop_view["state"] in ("cancelled", "banned") and shop_view["known"]
        status, body = await api.post(f"/api/broadcasts/{bid}/card", {"product_id": tea["id"]})
        assert (status, body["error"]["code"]) == (409, code), body
        before = await _stock(shop, tea["id"])
        status, body = await api.post("/api/flash-sales", _sale(bid, sku))
        assert (status, body["error"]["code"]) == (409, code), body
        assert await _stock(shop, tea["id"]) == before
        status, body = await api.post(
            "/api/orders",
            {"user_id": "u1", "sku_id": sku, "quantity": 1, "broadcast_id": bid,
             "idempotency_key": f"k{bid}"},
            token=None,
        )  # fmt: skip
        assert (status, body["error"]["code"]) == (409, code), body
        # its shelf is frozen the same way for a replace and for one product's toggle
        shelf = await api.ok("GET", f"/api/broadcasts/{bid}/shelf")
        status, body = await api.call(
            "PUT", f"/api/broadcasts/{bid}/shelf", {"items": [{"product_id": tea["id"]}]}
        )
        assert (status, body["error"]["code"]) == (409, code), body
        for on in (False, True):
            status, body = await api.call(
                "PATCH", f"/api/broadcasts/{bid}/shelf/{tea['id']}", {"on_shelf": on}
            )
            assert (status, body["error"]["code"]) == (409, code), body
        assert await api.ok("GET", f"/api/broadcasts/{bid}/shelf") == shelf


async def test_only_the_shelf_sells(shop: ShopEnv) -> None:
    api = shop.api
    tea = await make_product(api, stock=50)
    cup = await make_product(api, stock=50)
    other = await make_product(api, stock=50)  # in the catalog, on no shelf
    b = await _broadcast(shop, product_ids=[tea["id"], cup["id"]])
    bid = b["id"]
    await api.ok("PATCH", f"/api/broadcasts/{bid}/shelf/{cup['id']}", {"on_shelf": False})

    def order(sku: int, key: str) -> dict[str, Any]:
        return {"user_id": "u2", "sku_id": sku, "quantity": 1, "broadcast_id": bid,
                "idempotency_key": key}  # fmt: skip

    status, body = await api.post("/api/orders", order(other["skus"][0]["id"], "a"), token=None)
    assert (status, body["error"]["code"]) == (409, "not_on_shelf"), body
    status, body = await api.post("/api/orders", order(cup["skus"][0]["id"], "b"), token=None)
    assert (status, body["error"]["code"]) == (409, "off_shelf"), body
    assert await _stock(shop, other["id"]) == 50 and await _stock(shop, cup["id"]) == 50
    placed = await api.ok("POST", "/api/orders", order(tea["skus"][0]["id"], "c"), 201, token=None)
    assert placed["broadcast_id"] == bid
    # a numeric string still works for one release
    legacy = {**order(tea["skus"][0]["id"], "d"), "broadcast_id": str(bid)}
    placed = await api.ok("POST", "/api/orders", legacy, 201, token=None)
    assert placed["broadcast_id"] == bid

    # an anchor (or anyone) takes flash-sale stock only from SKUs on the shelf
    status, body = await api.post("/api/flash-sales", _sale(bid, other["skus"][0]["id"]))
    assert (status, body["error"]["code"]) == (409, "not_on_shelf"), body
    assert await _stock(shop, other["id"]) == 50

    # a card's SKU of another product: 422 naming both
    status, body = await api.post(
        f"/api/broadcasts/{bid}/card",
        {"product_id": tea["id"], "sku_id": other["skus"][0]["id"]},
    )
    assert (status, body["error"]["code"]) == (422, "sku_not_of_product"), body
    assert body["error"]["sku_product_id"] == other["id"]
    assert body["error"]["product_id"] == tea["id"]
    assert (
        str(other["id"]) in body["error"]["message"] and str(tea["id"]) in body["error"]["message"]
    )
    status, body = await api.post(
        f"/api/broadcasts/{bid}/card", {"product_id": tea["id"], "sku_id": 99_999_999}
    )
    assert (status, body["error"]["code"]) == (422, "unknown_sku")
