"""Catalog, shelf, cards (events), attribution and sales, lottery prizes, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shop_bridge.errors import ShopError
from shop_bridge.validate import Body, check_int
from tests.shop.conftest import make_product, make_sale, uid


async def test_shelf_cards_events_and_sales(shop) -> None:
    api, bus = shop.api, shop.svc.ctx.bus
    events: list[tuple[str, dict]] = []
    bus.subscribe("card.*", lambda e: events.append((e.topic, e.data)))
    bid = uid()
    await api.ok(
        "PUT", f"/api/broadcasts/{bid}/shop", {"anchor_id": "anchor7", "room": f"live/s{bid}"}
    )
    scarf = await make_product(api, price=9900, skus=2)
    mug = await make_product(api, price=3900)
    # a card needs the product on the shelf
    status, body = await api.post(f"/api/broadcasts/{bid}/card", {"product_id": scarf["id"]})
    assert (status, body["error"]["code"]) == (409, "not_on_shelf")
    shelf = await api.ok(
        "PUT",
        f"/api/broadcasts/{bid}/shelf",
        {"items": [{"product_id": mug["id"]}, {"product_id": scarf["id"], "on_shelf": False}]},
    )
    assert [i["product"]["id"] for i in shelf["items"]] == [mug["id"], scarf["id"]]
    public = await api.ok("GET", f"/api/broadcasts/{bid}/shelf", token=None)
    assert public["items"][1]["on_shelf"] is False
    status, body = await api.post(f"/api/broadcasts/{bid}/card", {"product_id": scarf["id"]})
    assert (status, body["error"]["code"]) == (409, "off_shelf")
    await api.ok("PATCH", f"/api/broadcasts/{bid}/shelf/{scarf['id']}", {"on_shelf": True})
    sale = await make_sale(api, bid, scarf["skus"][0]["id"], stock=10, limit=2, price=5000)

    # explain the scarf; orders placed now are attributed to that card
    card = await api.ok(
        "POST",
        f"/api/broadcasts/{bid}/card",
        {"product_id": scarf["id"], "flash_sale_id": sale["id"]},
        201,
    )
    current = await api.ok("GET", f"/api/broadcasts/{bid}/card", token=None)
    assert current["card"]["id"] == card["id"] and current["card"]["room"] == f"live/s{bid}"
    buys = []
    for user in ("v1", "v2", "v2"):
        buys.append(
            await api.ok(
                "POST",
                f"/api/flash-sales/{sale['id']}/buy",
                {"user_id": user, "idempotency_key": uid("k")},
                201,
                token=None,
            )
        )
    assert all(b["card_id"] == card["id"] and b["anchor_id"] == "anchor7" for b in buys)
    # switch to the mug: one card at a time per room
    card2 = await api.ok("POST", f"/api/broadcasts/{bid}/card", {"product_id": mug["id"]}, 201)
    normal = await api.ok(
        "POST",
        "/api/orders",
        {
            "user_id": "v3",
            "sku_id": scarf["skus"][1]["id"],
            "quantity": 1,
            "broadcast_id": bid,
            "idempotency_key": "n1",
            "channel": "share",
        },
        201,
        token=None,
    )
    assert normal["card_id"] == card2["id"] and normal["channel"] == "share"
    await api.ok("DELETE", f"/api/broadcasts/{bid}/card")
    assert (await api.ok("GET", f"/api/broadcasts/{bid}/card"))["card"] is None
    status, _ = await api.call("DELETE", f"/api/broadcasts/{bid}/card")
    assert status == 404
    history = await api.ok("GET", f"/api/broadcasts/{bid}/cards")
    assert [c["product_id"] for c in history["items"]] == [mug["id"], scarf["id"]]
    assert all(c["cleared_at"] for c in history["items"])
    await bus.drain()
    topics = [(t, d["product_id"]) for t, d in events if d["broadcast_id"] == bid]
    assert topics == [
        ("card.pushed", scarf["id"]),
        ("card.cleared", scarf["id"]),
        ("card.pushed", mug["id"]),
        ("card.cleared", mug["id"]),
    ]
    pushed = next(d for t, d in events if t == "card.pushed")
    assert {"broadcast_id", "room", "product_id", "sku_id", "ts", "card_id"} <= set(pushed)

    # pay two of the flash orders and the normal one
    for order in (buys[0], buys[1], normal):
        pay = await api.ok(
            "POST", f"/api/orders/{order['id']}/pay", token=None, viewer=order["user_id"]
        )
        async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
            assert r.status == 200
    sales = await api.ok("GET", f"/api/broadcasts/{bid}/sales")
    assert sales["gmv_fen"] == 5000 * 2 + 9900
    assert sales["orders"] == 3 and sales["orders_placed"] == 4 and sales["buyers"] == 3
    by_product = {p["product_id"]: p for p in sales["products"]}
    scarf_sales = by_product[scarf["id"]]
    assert scarf_sales["card_orders"] == 2 and scarf_sales["times_explained"] == 1
    assert scarf_sales["card_conversion"] == round(2 / 3, 4)
    assert by_product[mug["id"]]["orders"] == 0 and by_product[mug["id"]]["times_explained"] == 1
    assert sales["card_orders"] == 3
    # anchors see sales; buyers do not
    assert (await api.call("GET", f"/api/broadcasts/{bid}/sales", token=None))[0] == 401


async def test_lottery_prize_events_are_granted_exactly_once(shop) -> None:
    api, bus = shop.api, shop.svc.ctx.bus
    bid = uid()
    await api.ok("PUT", f"/api/broadcasts/{bid}/shop", {"anchor_id": "a1", "room": f"live/r{bid}"})
    product = await make_product(api, stock=3)
    sku = product["skus"][0]
    coupon_event = {
        "lottery_id": f"L{bid}",
        "room": f"live/r{bid}",
        "user_id": "winner1",
        "nick": "W",
        "prize": {"name": "5 yuan off", "stock": 10, "coupon": "500"},
        "prize_index": 0,
        "n": 0,
        "mode": "timed",  # every field danmaku's LotteryPrize carries
    }
    product_event = {
        **coupon_event,
        "user_id": "winner2",
        "n": 1,
        "prize_index": 1,
        "prize": {"name": "a scarf", "stock": 1, "sku": str(sku["id"])},
    }
    for _ in range(3):  # the hub (or the bus across nodes) may deliver twice
        await bus.publish("lottery.prize", coupon_event)
        await bus.publish("lottery.prize", product_event)
    await bus.drain()
    coupons = await api.ok("GET", "/api/users/winner1/coupons", token=None, viewer="winner1")
    assert [c["value_fen"] for c in coupons["items"]] == [500]
    prize_orders = await shop.svc.ctx.book.list_orders(user_id="winner2")
    assert len(prize_orders) == 1
    order = prize_orders[0]
    assert order["amount_fen"] == 0 and order["state"] == "paid"
    assert order["broadcast_id"] == str(bid)  # the stored row (text); the API shows the int
    assert (await api.ok("GET", f"/api/products/{product['id']}"))["skus"][0]["stock"] == 2
    # the REST fallback is idempotent too
    status, body = await api.post("/api/lottery/prizes", coupon_event)
    assert status == 200 and body["duplicate"] is True


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/api/products", {"title": "x", "skus": [{"price_fen": -1, "stock": 1}]}, "invalid_field"),
        (
            "/api/products",
            {"title": "x", "skus": [{"price_fen": 1.5, "stock": 1}]},
            "invalid_field",
        ),
        (
            "/api/products",
            {"title": "x", "skus": [{"price_fen": "100", "stock": 1}]},
            "invalid_field",
        ),
        ("/api/products", {"title": "x", "skus": []}, "invalid_field"),
        (
            "/api/products",
            {"title": "x", "skus": [{"price_fen": 1, "stock": True}]},
            "invalid_field",
        ),
        ("/api/products", {"title": "", "skus": [{"price_fen": 1, "stock": 1}]}, "invalid_field"),
        ("/api/products", {"skus": [{"price_fen": 1, "stock": 1}]}, "missing_field"),
        (
            "/api/products",
            {"title": "x", "skus": [{"price_fen": 1, "stock": 1}], "evil": 1},
            "unknown_field",
        ),
        ("/api/products", [1, 2], "bad_json"),
        (
            "/api/orders",
            {"user_id": "u", "sku_id": 1, "quantity": -2, "idempotency_key": "k"},
            "invalid_field",
        ),
        (
            "/api/orders",
            {"user_id": "u", "sku_id": 1, "quantity": 0, "idempotency_key": "k"},
            "invalid_field",
        ),
        (
            "/api/orders",
            {"user_id": "u", "sku_id": 1, "quantity": 10**6, "idempotency_key": "k"},
            "invalid_field",
        ),
        (
            "/api/orders",
            {"user_id": "u", "sku_id": 99999999, "quantity": 1, "idempotency_key": "k"},
            "unknown_sku",
        ),
        (
            "/api/orders",
            {"user_id": "u u", "sku_id": 1, "quantity": 1, "idempotency_key": "k"},
            "invalid_field",
        ),
        ("/api/orders", {"sku_id": 1, "quantity": 1, "idempotency_key": "k"}, "missing_field"),
        (
            "/api/flash-sales",
            {
                "broadcast_id": "1",
                "sku_id": 99999999,
                "sale_price_fen": 1,
                "sale_stock": 1,
                "starts_at": "2030-01-01T00:00:00+08:00",
                "ends_at": "2030-01-01T01:00:00+08:00",
            },
            "unknown_sku",
        ),
        (
            "/api/flash-sales",
            {
                "broadcast_id": "1",
                "sku_id": 1,
                "sale_price_fen": 1,
                "sale_stock": 1,
                "starts_at": "2030-01-01T00:00:00",
                "ends_at": "2030-01-01T01:00:00+08:00",
            },
            "invalid_field",
        ),
        (
            "/api/flash-sales",
            {
                "broadcast_id": "1",
                "sku_id": 1,
                "sale_price_fen": 1,
                "sale_stock": -5,
                "starts_at": 1,
                "ends_at": 2,
            },
            "invalid_field",
        ),
    ],
)
async def test_bad_input_gets_a_4xx_with_a_reason(shop, path: str, body: Any, code: str) -> None:
    # a buyer's app (viewer token for the body's user_id); without user_id, an operator
    # backend that forgot to name the buyer
    token = None if path == "/api/orders" and "user_id" in body else ""
    status, got = await shop.api.post(path, body, token=token)
    assert 400 <= status < 500, (status, got)
    assert got["error"]["code"] == code, got
    assert got["error"]["message"]


async def test_bad_bodies_and_paths(shop) -> None:
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=3)
    buy = f"/api/flash-sales/{sale['id']}/buy"
    huge = json.dumps({"user_id": "u", "idempotency_key": "k", "channel": "x" * 200_000})
    status, body = await api.post(
        buy, huge, token=None, headers={"Content-Type": "application/json"}
    )
    assert (status, body["error"]["code"]) == (413, "body_too_large")
    status, body = await api.post(buy, b"{not json", token=None)
    assert (status, body["error"]["code"]) == (400, "bad_json")
    status, body = await api.post(
        buy, {"user_id": "u", "idempotency_key": "k", "quantity": "2"}, token=None
    )
    assert status == 400 and "quantity" in body["error"]["message"]
    status, body = await api.post(
        buy, {"user_id": "u", "idempotency_key": "k", "quantity": -1}, token=None
    )
    assert status == 400 and "quantity" in body["error"]["message"]
    status, body = await api.post(buy, {"user_id": "u"}, token=None)
    assert (status, body["error"]["code"]) == (400, "missing_field")
    status, body = await api.post(
        "/api/flash-sales/abc/buy", {"user_id": "u", "idempotency_key": "k"}, token=None
    )
    assert status == 404 and body["error"]["code"]
    status, body = await api.get("/api/orders/does-not-exist", token=None, viewer="u")
    assert (status, body["error"]["code"]) == (404, "order_not_found")
    status, body = await api.call("PATCH", "/api/skus/99999999", {"stock": 1})
    assert status == 404
    status, body = await api.call(
        "PATCH", f"/api/skus/{product['skus'][0]['id']}", {"stock_delta": -(10**6)}
    )
    assert (status, body["error"]["code"]) == (409, "insufficient_stock")
    # nothing half-written: the sale still has all its stock, no orders were made
    assert (await api.ok("GET", f"/api/flash-sales/{sale['id']}"))["remaining"] == 3
    # operator routes need a token; buyers cannot create products
    assert (await api.post("/api/products", {"title": "x", "skus": []}, token=None))[0] == 401
    assert (
        await api.post("/api/products", {"title": "x", "skus": []}, token=api.tokens["anchor"])
    )[0] == 403


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "title",
    "price_fen",
    "stock",
    "specs",
    "images",
    "quantity",
    "starts_at",
    "on_shelf",
    "x",
]


@given(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_validation_never_crashes_on_garbage(data: dict) -> None:
    body = Body(data, FIELDS[:-1]) if "x" not in data else None
    if body is None:
        with pytest.raises(ShopError) as err:
            Body(data, FIELDS[:-1])
        assert err.value.status == 400
        return
    for call in (
        lambda: body.text("title", max_len=20),
        lambda: body.integer("price_fen", lo=0, hi=10**10),
        lambda: body.integer("stock", lo=0, hi=10, default=0),
        lambda: body.specs("specs", default={}),
        lambda: body.str_list("images", max_items=3, max_len=10, default=[]),
        lambda: body.time_ms("starts_at", default=None),
        lambda: body.boolean("on_shelf", default=True),
    ):
        try:
            call()
        except ShopError as exc:
            assert 400 <= exc.status < 500 and exc.message


@given(st.integers() | st.floats() | st.booleans() | st.text() | st.none())
def test_integers_are_integers(value: Any) -> None:
    try:
        got = check_int("q", value, 1, 99)
    except ShopError:
        assert not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 99)
    else:
        assert type(got) is int and 1 <= got <= 99 and got == value


async def test_buyers_are_identified_by_their_viewer_token(shop) -> None:
    """Nobody buys, pays, cancels or reads orders in another user's name."""
    api = shop.api
    product = await make_product(api)
    sale = await make_sale(api, uid(), product["skus"][0]["id"], stock=10)
    buy = f"/api/flash-sales/{sale['id']}/buy"
    # anonymous: refused, whatever user_id it names
    status, body = await api.post(
        buy, {"user_id": "alice", "idempotency_key": "a1"}, token=None, viewer=""
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    # a forged or foreign token
    status, body = await api.post(
        buy, {"idempotency_key": "a1"}, token=None, headers={"X-Viewer-Token": "v1.forged.sig"}
    )
    assert (status, body["error"]["code"]) == (401, "invalid_viewer_token")
    status, body = await api.post(
        buy, {"user_id": "alice", "idempotency_key": "a1"}, token=None, viewer="mallory"
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")
    # the buyer's own token: the order is theirs, with or without naming user_id
    order = await api.ok("POST", buy, {"idempotency_key": "a1"}, 201, token=None, viewer="alice")
    assert order["user_id"] == "alice"
    # another viewer cannot see, pay or cancel it
    for method, path in (
        ("GET", f"/api/orders/{order['id']}"),
        ("POST", f"/api/orders/{order['id']}/pay"),
        ("POST", f"/api/orders/{order['id']}/cancel"),
    ):
        status, _ = await api.call(method, path, token=None, viewer="mallory")
        assert status == 404, (method, path)
        status, _ = await api.call(method, path, token=None, viewer="")
        assert status == 401, (method, path)
    assert (await api.call("GET", "/api/users/alice/coupons", token=None, viewer="mallory"))[
        0
    ] == 403
    # the owner and an operator can
    assert (await api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer="alice"))[
        "id"
    ] == order["id"]
    assert (await api.ok("GET", f"/api/orders/{order['id']}"))["user_id"] == "alice"
    # a trusted backend (operator API token) buys for a user it names, and must name one
    other = await api.ok("POST", buy, {"user_id": "bob", "idempotency_key": "b1"}, 201)
    assert other["user_id"] == "bob"
    status, body = await api.post(buy, {"idempotency_key": "b2"})
    assert (status, body["error"]["code"]) == (400, "missing_field")
