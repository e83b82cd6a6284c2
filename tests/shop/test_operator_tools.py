"""Operators' and anchors' tools of issue 20 item 7: coupons given directly (one buyer or a
batch, idempotent), an anchor reads an order of their own show (decided from the order's
broadcast) and no one else's, a flash sale shows its card in the same call."""

from __future__ import annotations

from typing import Any

from tests.shop.conftest import ShopEnv, make_product


async def test_operators_give_coupons(shop: ShopEnv) -> None:
    api = shop.api
    one = await api.ok("POST", "/api/coupons", {"user_id": "cara", "value_fen": 500}, 201)
    assert [c["user_id"] for c in one["items"]] == ["cara"] and one["items"][0]["value_fen"] == 500
    batch = {
        "user_ids": ["dan", "eve", "fay"],
        "value_fen": 800,
        "note": "sorry for the outage",
        "idempotency_key": "apology-1",
    }
    made = await api.ok("POST", "/api/coupons", batch, 201)
    assert {c["user_id"] for c in made["items"]} == {"dan", "eve", "fay"}
    again = await api.ok("POST", "/api/coupons", batch, 200)  # a retry gives nothing twice
    assert {c["id"] for c in again["items"]} == {c["id"] for c in made["items"]}
    mine = await api.ok("GET", "/api/users/eve/coupons", token=None, viewer="eve")
    assert [c["value_fen"] for c in mine["items"]] == [800]
    for bad in (
        {"value_fen": 500},
        {"user_id": "x", "user_ids": ["y"], "value_fen": 5},
        {"user_ids": ["a", "a"], "value_fen": 5},
        {"user_id": "x", "value_fen": 0},
        {"user_ids": [], "value_fen": 5},
    ):
        status, body = await api.post("/api/coupons", bad)
        assert status == 400, (bad, body)
    status, _ = await api.post(
        "/api/coupons", {"user_id": "x", "value_fen": 5}, token=api.tokens["anchor"]
    )
    assert status == 403  # operators only


async def _coupons_of(shop: ShopEnv, user: str) -> list[dict[str, Any]]:
    got = await shop.api.ok("GET", f"/api/users/{user}/coupons", token=None, viewer=user)
    return list(got["items"])


async def test_a_coupon_batch_key_names_one_request(shop: ShopEnv) -> None:
    """An idempotency key repeated with the same request (the users in another order too)
    answers the first batch's coupons (200) and gives nothing twice; repeated with anything
    else (new users, other users, another value, broadcast or note) it is 409
    ``idempotency_key_reused`` and gives nobody anything."""
    api = shop.api
    batch = {"user_ids": ["gil", "hana"], "value_fen": 300, "idempotency_key": "promo-7"}
    made = await api.ok("POST", "/api/coupons", batch, 201)
    assert made["created"] is True
    ids = {c["user_id"]: c["id"] for c in made["items"]}
    same = await api.ok("POST", "/api/coupons", {**batch, "user_ids": ["hana", "gil"]}, 200)
    assert same["created"] is False
    assert {c["user_id"]: c["id"] for c in same["items"]} == ids
    assert [c["user_id"] for c in same["items"]] == ["hana", "gil"]  # as asked this time

    for changed in (
        {"user_ids": ["gil", "hana", "ines"]},  # the first users plus a new one
        {"user_ids": ["ines"]},  # only new users
        {"user_ids": ["gil"]},  # fewer users
        {"value_fen": 301},
        {"note": "another note"},
    ):
        status, body = await api.post("/api/coupons", {**batch, **changed})
        assert status == 409, (changed, body)
        assert body["error"]["code"] == "idempotency_key_reused", body
        assert body["error"]["idempotency_key"] == "promo-7"
        assert "promo-7" in body["error"]["message"]
    # nothing was given by the refused repeats
    assert await _coupons_of(shop, "ines") == []
    assert [c["id"] for c in await _coupons_of(shop, "gil")] == [ids["gil"]]
    assert [c["id"] for c in await _coupons_of(shop, "hana")] == [ids["hana"]]
    # a new key is a new batch
    more = await api.ok(
        "POST", "/api/coupons", {**batch, "user_ids": ["ines"], "idempotency_key": "promo-8"}, 201
    )
    assert [c["user_id"] for c in more["items"]] == ["ines"]
    # the single-user form follows the same rule
    await api.ok(
        "POST", "/api/coupons", {"user_id": "jo", "value_fen": 5, "idempotency_key": "j"}, 201
    )
    await api.ok(
        "POST", "/api/coupons", {"user_id": "jo", "value_fen": 5, "idempotency_key": "j"}, 200
    )
    status, body = await api.post(
        "/api/coupons", {"user_id": "kai", "value_fen": 5, "idempotency_key": "j"}
    )
    assert (status, body["error"]["code"]) == (409, "idempotency_key_reused"), body
    assert await _coupons_of(shop, "kai") == []


async def _broadcast(shop: ShopEnv, anchor_id: int | None, product_id: int) -> int:
    body: dict[str, Any] = {
        "title": "tools",
        "scheduled_start": "2030-01-01T12:00:00Z",
        "product_ids": [product_id],
    }
    if anchor_id is not None:
        body["anchor_id"] = anchor_id
    b = await shop.api.ok("POST", "/api/broadcasts", body, 201)
    await shop.api.ok(
        "PUT", f"/api/broadcasts/{b['id']}/shelf", {"items": [{"product_id": product_id}]}
    )
    return int(b["id"])


async def test_an_anchor_reads_orders_of_their_own_show(shop: ShopEnv) -> None:
    api = shop.api
    anchor_token, anchor_id = api.tokens["anchor"], int(api.tokens["anchor_id"])
    product = await make_product(api)
    sku = product["skus"][0]["id"]
    mine = await _broadcast(shop, anchor_id, product["id"])
    other = await _broadcast(shop, None, product["id"])
    orders = {}
    for bid in (mine, other):
        orders[bid] = await api.ok(
            "POST",
            "/api/orders",
            {"user_id": "gus", "sku_id": sku, "quantity": 1, "broadcast_id": bid,
             "idempotency_key": f"t{bid}"},
            201,
            token=None,
        )  # fmt: skip
    got = await api.ok("GET", f"/api/orders/{orders[mine]['id']}", token=anchor_token)
    assert got["id"] == orders[mine]["id"] and got["history"]
    status, body = await api.call("GET", f"/api/orders/{orders[other]['id']}", token=anchor_token)
    assert status == 404, body  # not their show: as if it did not exist
    # reading is all: paying or cancelling stays the buyer's
    status, _ = await api.call(
        "POST", f"/api/orders/{orders[mine]['id']}/cancel", token=anchor_token
    )
    assert status == 401


async def _sale_in_2030(api: Any, bid: int, sku_id: int, **extra: Any) -> dict[str, Any]:
    """A flash sale of 5 units at 9.90 on 2030-01-01 00:00-01:00 (``extra``: more fields)."""
    body = {
        "broadcast_id": bid,
        "sku_id": sku_id,
        "sale_price_fen": 990,
        "sale_stock": 5,
        "starts_at": "2030-01-01T00:00:00Z",
        "ends_at": "2030-01-01T01:00:00Z",
        **extra,
    }
    return await api.ok("POST", "/api/flash-sales", body, 201)  # type: ignore[no-any-return]


async def test_a_flash_sale_shows_its_card_in_the_same_call(shop: ShopEnv) -> None:
    api = shop.api
    product = await make_product(api)
    bid = await _broadcast(shop, None, product["id"])
    sale = await _sale_in_2030(api, bid, product["skus"][0]["id"], show_card=True)
    assert sale["card"]["flash_sale_id"] == sale["id"]
    assert sale["card"]["product_id"] == product["id"]
    current = await api.ok("GET", f"/api/broadcasts/{bid}/card", token=None)
    assert current["card"]["id"] == sale["card"]["id"]


async def test_flash_sales_of_a_broadcast_are_listed(shop: ShopEnv) -> None:
    api = shop.api
    anchor_token, anchor_id = api.tokens["anchor"], int(api.tokens["anchor_id"])
    product = await make_product(api, stock=100)
    mine = await _broadcast(shop, anchor_id, product["id"])
    other = await _broadcast(shop, None, product["id"])
    made = []
    for bid in (mine, mine, other):
        made.append(await _sale_in_2030(api, bid, product["skus"][0]["id"]))
    listed = await api.ok("GET", f"/api/flash-sales?broadcast_id={mine}", token=anchor_token)
    assert [s["id"] for s in listed["items"]] == [made[1]["id"], made[0]["id"]]
    assert all(s["remaining"] == 5 and s["broadcast_id"] == mine for s in listed["items"])
    status, _ = await api.call("GET", f"/api/flash-sales?broadcast_id={other}", token=anchor_token)
    assert status == 403  # someone else's show
    status, _ = await api.call("GET", "/api/flash-sales", token=anchor_token)
    assert status == 403  # an anchor names one of their broadcasts
    every = await api.ok("GET", "/api/flash-sales?limit=200")
    assert {s["id"] for s in made} <= {s["id"] for s in every["items"]}
