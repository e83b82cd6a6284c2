"""Recipients on orders: sealed at rest (no plaintext in the database, Redis, events or
logs), masked for everyone but the operators who ship, required before paying, checked
with clear 400s; against SQLite + embedded valkey and PostgreSQL + the real Redis."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from core.bus import Event
from shop_bridge.recipients import order_aad
from tests.shop.conftest import ShopEnv, make_product, make_sale, uid
from tests.shop.order_core_ports import server_factory  # noqa: F401

NAME = "张三丰"
PHONE = "13812345678"
STREET = "广东省深圳市南山区科技园科苑路15号"
RECIPIENT = {"name": NAME, "phone": PHONE, "address": STREET}
SECRETS = (NAME, PHONE, "科技园科苑路", "12345678"[:8], "2345678")


async def _order(shop: ShopEnv, user: str, **extra: Any) -> dict[str, Any]:
    product = await make_product(shop.api)
    body = {
        "user_id": user,
        "sku_id": product["skus"][0]["id"],
        "quantity": 1,
        "idempotency_key": uid("k"),
        **extra,
    }
    return await shop.api.ok("POST", "/api/orders", body, 201, token=None)  # type: ignore[no-any-return]


async def _dump(shop: ShopEnv) -> str:
    """Every row of every table of the database as text, and for SQLite the raw bytes of
    the database file and its WAL: what a dump or a stolen disk would show."""
    engine = shop.svc.ctx.engine
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        conn = sqlite3.connect(path)
        try:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            rows = [repr(r) for t in tables for r in conn.execute(f'SELECT * FROM "{t}"')]
        finally:
            conn.close()
        return raw.decode("utf-8", "replace") + "\n".join(rows)
    import asyncpg

    url = engine.url.render_as_string(hide_password=False).replace("+asyncpg", "")
    conn2 = await asyncpg.connect(url)
    try:
        tables = [
            r["tablename"]
            for r in await conn2.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        ]
        out = []
        for t in tables:
            out += [r[0] for r in await conn2.fetch(f'SELECT t::text FROM "{t}" t')]
        return "\n".join(out)
    finally:
        await conn2.close()


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


async def test_recipient_is_sealed_masked_and_revealed_only_to_operators(
    shop_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    shop: ShopEnv = await shop_factory(require_recipient=True)
    api = shop.api
    seen: list[Event] = []
    shop.svc.ctx.bus.subscribe("order.*", seen.append)
    buyer = uid("u")
    order = await _order(shop, buyer, recipient=RECIPIENT)
    masked = {"name": "张**", "phone": "138****5678", "address": "广东省深圳市****"}
    assert order["recipient"] == masked
    # the buyer's own views are masked too
    mine = await api.ok("GET", f"/api/orders/{order['id']}", token=None, viewer=buyer)
    assert mine["recipient"] == masked
    listed = await api.ok("GET", "/api/orders", token=None, viewer=buyer)
    assert [o["recipient"] for o in listed["items"]] == [masked]
    # an operator's list is masked; the detail route reveals it
    assert (await api.ok("GET", f"/api/orders?user_id={buyer}"))["items"][0]["recipient"] == masked
    full = await api.ok("GET", f"/api/orders/{order['id']}/recipient")
    assert full == {"order_id": order["id"], "recipient": RECIPIENT}
    # nobody else: the buyer, an anchor, a public caller
    assert (
        await api.call("GET", f"/api/orders/{order['id']}/recipient", token=None, viewer=buyer)
    )[0] == 401
    assert (
        await api.call(
            "GET",
            f"/api/orders/{order['id']}/recipient",
            token=api.tokens["anchor"],  # type: ignore[index]
        )
    )[0] == 403
    # nothing in the database, the events or the logs is plaintext
    await shop.svc.ctx.flush_events()
    created = [e for e in seen if e.topic == "order.created" and e.data["order_id"] == order["id"]]
    assert created and created[0].data["recipient"] == masked  # masked for webhooks too
    assert _leaks(repr([e for e in seen])) == []
    assert _leaks(await _dump(shop)) == []
    assert _leaks("\n".join(r.getMessage() for r in caplog.records)) == []
    # and the envelope is bound to its order: copied to another, it does not open
    other = await _order(shop, buyer)
    row = await shop.svc.ctx.book.get(order["id"])
    assert row is not None and row["recipient"].startswith("v1.s-")
    with pytest.raises(ValueError):
        shop.svc.recipients.sealer.open(row["recipient"], order_aad(other["id"]))


async def test_paying_needs_a_recipient_given_later_by_the_buyer(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=True)
    api = shop.api
    buyer = uid("u")
    order = await _order(shop, buyer)
    assert order["recipient"] is None
    status, err = await api.call("POST", f"/api/orders/{order['id']}/pay", token=None, viewer=buyer)
    assert status == 409 and err["error"]["code"] == "recipient_required", err
    # someone else cannot set it (as if the order did not exist)
    status, _ = await api.call(
        "PUT",
        f"/api/orders/{order['id']}/recipient",
        {"recipient": RECIPIENT},
        token=None,
        viewer=uid("x"),
    )
    assert status == 404
    put = await api.ok(
        "PUT",
        f"/api/orders/{order['id']}/recipient",
        {"recipient": RECIPIENT},
        token=None,
        viewer=buyer,
    )
    assert put["recipient"]["phone"] == "138****5678"
    pay = await api.ok("POST", f"/api/orders/{order['id']}/pay", token=None, viewer=buyer)
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert (await r.json())["notify_status"] == 200
    paid = await _wait_state(shop, order["id"], "paid")
    assert paid["recipient"]["name"] == "张**"
    # the buyer may still change it before shipping (bare fields), not after
    await api.ok(
        "PUT",
        f"/api/orders/{order['id']}/recipient",
        {"name": "李四", "phone": "+44 7911 123456", "address": "1 High St, Leeds, LS1"},
        token=None,
        viewer=buyer,
    )
    full = await api.ok("GET", f"/api/orders/{order['id']}/recipient")
    assert full["recipient"] == {
        "name": "李四",
        "phone": "+447911123456",
        "address": "1 High St, Leeds, LS1",
    }
    await api.ok("POST", f"/api/orders/{order['id']}/ship")
    status, err = await api.call(
        "PUT",
        f"/api/orders/{order['id']}/recipient",
        {"recipient": RECIPIENT},
        token=None,
        viewer=buyer,
    )
    assert status == 409 and err["error"]["code"] == "recipient_locked"


async def _wait_state(shop: ShopEnv, order_id: str, state: str) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(10):
        while True:
            order = await shop.api.ok("GET", f"/api/orders/{order_id}")
            if order["state"] == state:
                return order  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("recipient", "field"),
    [
        ({"name": "", "phone": PHONE, "address": STREET}, "recipient.name"),
        ({"phone": PHONE, "address": STREET}, "recipient.name"),
        ({"name": NAME, "phone": "1381234567", "address": STREET}, "recipient.phone"),
        ({"name": NAME, "phone": "12812345678", "address": STREET}, "recipient.phone"),
        ({"name": NAME, "phone": "+0123456789", "address": STREET}, "recipient.phone"),
        ({"name": NAME, "phone": "call me", "address": STREET}, "recipient.phone"),
        ({"name": NAME, "phone": PHONE, "address": "短"}, "recipient.address"),
        ({"name": NAME, "phone": PHONE, "address": "路" * 201}, "recipient.address"),
        ({"name": NAME, "phone": PHONE, "address": STREET, "email": "x@y"}, "recipient.email"),
        ({"name": "a\u0000b", "phone": PHONE, "address": STREET}, "recipient.name"),
        ({"name": 7, "phone": PHONE, "address": STREET}, "recipient.name"),
        ("张三 138", "recipient"),
    ],
)
async def test_bad_recipients_are_refused_with_the_field(
    shop: ShopEnv, recipient: Any, field: str
) -> None:
    product = await make_product(shop.api)
    body = {
        "user_id": uid("u"),
        "sku_id": product["skus"][0]["id"],
        "quantity": 1,
        "idempotency_key": "k1",
        "recipient": recipient,
    }
    status, err = await shop.api.call("POST", "/api/orders", body, token=None)
    assert status == 400, err
    assert err["error"]["code"] == "invalid_field" and err["error"]["field"] == field, err
    # nothing was ordered
    listed = await shop.api.ok("GET", f"/api/orders?user_id={body['user_id']}")
    assert listed["items"] == []


async def test_flash_buy_with_a_recipient_or_a_saved_address(shop_factory: Any) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=True)
    api = shop.api
    product = await make_product(shop.api)
    bid = uid()
    sale = await make_sale(api, bid, product["skus"][0]["id"], stock=10, limit=5)
    buyer = uid("u")
    url = f"/api/flash-sales/{sale['id']}/buy"
    a = await api.ok(
        "POST",
        url,
        {"user_id": buyer, "idempotency_key": "a", "recipient": RECIPIENT},
        201,
        token=None,
    )
    assert a["recipient"]["phone"] == "138****5678"
    saved = await api.ok(
        "POST",
        "/api/me/addresses",
        {"name": "王五", "phone": "13900001111", "address": "北京市朝阳区建国路88号"},
        201,
        token=None,
        viewer=buyer,
    )
    b = await api.ok(
        "POST",
        url,
        {"user_id": buyer, "idempotency_key": "b", "address_id": saved["id"]},
        201,
        token=None,
    )
    assert b["recipient"] == {"name": "王*", "phone": "139****1111", "address": "北京市****"}
    # the same key again: the same order
    again = await api.ok(
        "POST",
        url,
        {"user_id": buyer, "idempotency_key": "b", "address_id": saved["id"]},
        200,
        token=None,
    )
    assert again["id"] == b["id"]
    # a buy without one stays possible; paying it is not
    c = await api.ok("POST", url, {"user_id": buyer, "idempotency_key": "c"}, 201, token=None)
    assert c["recipient"] is None
    status, err = await api.call("POST", f"/api/orders/{c['id']}/pay", token=None, viewer=buyer)
    assert (status, err["error"]["code"]) == (409, "recipient_required")
    # someone else's saved address is not usable
    status, err = await api.call(
        "POST",
        url,
        {"user_id": uid("v"), "idempotency_key": "d", "address_id": saved["id"]},
        token=None,
    )
    assert (status, err["error"]["code"]) == (422, "unknown_address")
    full = await api.ok("GET", f"/api/orders/{b['id']}/recipient")
    assert full["recipient"]["address"] == "北京市朝阳区建国路88号"
    # the sealed recipient went through the reservation journal: no plaintext in Redis
    redis = shop.svc.ctx.redis
    keys = [k async for k in redis.scan_iter(match="*" + shop.svc.ctx.config.redis_prefix + "*")]
    dumped = b"".join([await redis.dump(k) or b"" for k in keys]).decode("utf-8", "replace")
    assert _leaks(dumped) == [] and "王五" not in dumped
    assert _leaks(await _dump(shop)) == [] and "建国路" not in await _dump(shop)


async def test_a_prize_order_ships_only_once_the_winner_gave_a_recipient(
    shop_factory: Any,
) -> None:
    shop: ShopEnv = await shop_factory(require_recipient=True)
    api = shop.api
    product = await make_product(api)
    winner = uid("w")
    grant = await api.ok(
        "POST",
        "/api/lottery/prizes",
        {
            "lottery_id": uid("lot"),
            "user_id": winner,
            "n": 0,
            "prize": {"name": "a scarf", "sku": str(product["skus"][0]["id"])},
        },
        201,
    )
    oid = grant["order_id"]
    order = await api.ok("GET", f"/api/orders/{oid}")
    assert order["kind"] == "prize" and order["state"] == "paid" and order["recipient"] is None
    status, err = await api.call("POST", f"/api/orders/{oid}/ship")
    assert (status, err["error"]["code"]) == (409, "recipient_required")
    saved = await api.ok("POST", "/api/me/addresses", RECIPIENT, 201, token=None, viewer=winner)
    await api.ok(
        "PUT",
        f"/api/orders/{oid}/recipient",
        {"address_id": saved["id"]},
        token=None,
        viewer=winner,
    )
    shipped = await api.ok("POST", f"/api/orders/{oid}/ship")
    assert shipped["state"] == "shipped" and shipped["recipient"]["name"] == "张**"


async def test_orders_export_masks_unless_shipping(shop: ShopEnv) -> None:
    import csv
    import io

    api = shop.api
    buyer = uid("u")
    a = await _order(shop, buyer, recipient=RECIPIENT)
    b = await _order(
        shop,
        buyer,
        recipient={
            "name": "=HYPERLINK(1)",
            "phone": "13900001111",
            "address": "上海市浦东新区世纪大道1号",
        },
    )

    async def export(query: str, token: str | None = "") -> tuple[int, list[dict[str, str]]]:
        headers = {"Authorization": f"Bearer {token if token != '' else api.token}"}
        async with api.session.get(f"{api.base}/api/shop/orders.csv{query}", headers=headers) as r:
            text = await r.text()
            if r.status != 200:
                return r.status, []
            assert r.headers["Content-Type"].startswith("text/csv")
            return r.status, list(csv.DictReader(io.StringIO(text)))

    status, rows = await export("?limit=10")
    assert status == 200
    by_id = {r["order_id"]: r for r in rows}
    assert by_id[a["id"]]["recipient_phone"] == "138****5678"
    assert by_id[a["id"]]["recipient_name"] == "张**"
    assert _leaks(repr(rows)) == []
    status, rows = await export("?recipients=full&limit=10")
    by_id = {r["order_id"]: r for r in rows}
    assert by_id[a["id"]]["recipient_address"] == STREET
    assert by_id[b["id"]]["recipient_name"] == "'=HYPERLINK(1)"  # never a formula
    assert sorted(r["order_id"] for r in rows) == sorted([a["id"], b["id"]])
    assert api.tokens is not None
    assert (await export("?recipients=full", token=api.tokens["anchor"]))[0] == 403
    assert (await export("?recipients=all"))[0] == 400
