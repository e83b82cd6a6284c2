"""The buyer's address book: own entries only, a default, bounded, sealed at rest."""

from __future__ import annotations

from typing import Any

from tests.shop.conftest import ShopEnv, uid
from tests.shop.order_core_ports import server_factory  # noqa: F401

HOME = {"name": "张三", "phone": "13812345678", "address": "广东省深圳市南山区科苑路15号"}
WORK = {"name": "张三", "phone": "+86 139 0000 1111", "address": "上海市浦东新区世纪大道100号"}


async def test_address_book_owner_default_delete(shop: ShopEnv) -> None:
    api = shop.api
    me, other = uid("u"), uid("u")
    assert (await api.ok("GET", "/api/me/addresses", token=None, viewer=me))["items"] == []
    home = await api.ok("POST", "/api/me/addresses", HOME, 201, token=None, viewer=me)
    assert home["default"] is True  # the first one is the default
    assert home["phone"] == "13812345678" and home["masked"]["phone"] == "138****5678"
    work = await api.ok(
        "POST", "/api/me/addresses", {**WORK, "default": True}, 201, token=None, viewer=me
    )
    assert work["phone"] == "13900001111"  # normalised
    book = await api.ok("GET", "/api/me/addresses", token=None, viewer=me)
    assert [(a["id"], a["default"]) for a in book["items"]] == [
        (work["id"], True),
        (home["id"], False),
    ]
    # another buyer sees nothing of it and cannot delete it
    assert (await api.ok("GET", "/api/me/addresses", token=None, viewer=other))["items"] == []
    status, _ = await api.call(
        "DELETE", f"/api/me/addresses/{work['id']}", token=None, viewer=other
    )
    assert status == 404
    # no viewer token: 401; an operator has no address book
    assert (await api.call("GET", "/api/me/addresses", token=None))[0] == 401
    assert (await api.call("GET", "/api/me/addresses"))[0] == 400
    # deleting the default makes the newest left the default
    status, _ = await api.call("DELETE", f"/api/me/addresses/{work['id']}", token=None, viewer=me)
    assert status == 204
    book = await api.ok("GET", "/api/me/addresses", token=None, viewer=me)
    assert [(a["id"], a["default"]) for a in book["items"]] == [(home["id"], True)]
    status, _ = await api.call("DELETE", f"/api/me/addresses/{work['id']}", token=None, viewer=me)
    assert status == 404


async def test_address_book_is_bounded_and_validated(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(max_addresses=3)
    api = shop.api
    me = uid("u")
    for i in range(3):
        body = {**HOME, "address": f"广东省深圳市南山区科苑路{i}号"}
        await api.ok("POST", "/api/me/addresses", body, 201, token=None, viewer=me)
    status, err = await api.call("POST", "/api/me/addresses", HOME, token=None, viewer=me)
    assert (status, err["error"]["code"]) == (409, "address_book_full")
    for bad, field in (
        ({**HOME, "phone": "12345"}, "phone"),
        ({**HOME, "name": ""}, "name"),
        ({"name": "x", "phone": "13812345678"}, "address"),
    ):
        status, err = await api.call("POST", "/api/me/addresses", bad, token=None, viewer=uid("u"))
        assert (status, err["error"]["field"]) == (400, field), err
    status, err = await api.call(
        "POST", "/api/me/addresses", {**HOME, "zip": "1"}, token=None, viewer=me
    )
    assert (status, err["error"]["code"]) == (400, "unknown_field")
    # the saved rows hold no plaintext
    from sqlalchemy import select

    from shop_bridge.models import ADDRESSES

    async with shop.svc.ctx.engine.connect() as conn:
        rows = (await conn.execute(select(ADDRESSES).where(ADDRESSES.c.user_id == me))).all()
    assert len(rows) == 3
    text = repr(rows)
    assert "13812345678" not in text and "科苑路" not in text and "张三" not in text
