"""The shop's typed events keep the JSON of docs/events.md: each payload published in a
real flow has exactly the documented keys and decodes to its class and back unchanged."""

from __future__ import annotations

import json
from typing import Any

from core.bus import Event
from core.events import event_class_of
from shop_bridge.events import OrderCreated, order_payload
from tests.shop.conftest import journal_drained, make_product, make_sale, uid

ORDER = {
    "order_id", "state", "kind", "user_id", "broadcast_id", "anchor_id", "product_id",
    "sku_id", "flash_sale_id", "quantity", "amount_fen", "card_id", "channel", "actor", "ts",
    "sharer_id", "recipient",
}  # fmt: skip
SALE_VIEW = {
    "id", "broadcast_id", "product_id", "sku_id", "sale_price_fen", "sale_stock",
    "remaining", "per_user_limit", "starts_at", "ends_at", "status", "closed_at",
    "closed_by", "settled_at", "returned_stock",
}  # fmt: skip
CARD = {
    "card_id", "broadcast_id", "room", "anchor_id", "product_id", "sku_id",
    "flash_sale_id", "actor", "ts", "pushed_ts",
}  # fmt: skip
KEYS: dict[str, set[str]] = {
    "card.pushed": CARD,
    "card.cleared": CARD | {"reason"},
    "flash_sale.created": SALE_VIEW | {"room", "anchor_id", "ts"},
    "flash_sale.updated": SALE_VIEW | {"changed", "room", "anchor_id", "actor", "ts"},
    "flash_sale.closed": SALE_VIEW | {"room", "anchor_id", "actor", "reason", "ts"},
    "flash_sale.settled": {"id", "broadcast_id", "sku_id", "returned_stock", "room", "ts"},
    "order.created": ORDER,
    "order.paid": ORDER,
    "order.cancelled": ORDER,
}


def test_the_buy_paths_dict_is_order_created() -> None:
    row = {
        "id": "o1",
        "state": "pending_payment",
        "kind": "flash",
        "user_id": "u",
        "broadcast_id": "7",
        "anchor_id": "a",
        "product_id": 1,
        "sku_id": 2,
        "flash_sale_id": 3,
        "quantity": 1,
        "amount_fen": 990,
        "card_id": None,
        "channel": "live",
        "updated_ms": 1_700_000_000_123,
    }
    payload = order_payload(row, "u")
    assert set(payload) == ORDER
    assert OrderCreated.of(row, "u").to_data() == payload
    assert OrderCreated.from_data(payload).to_data() == payload


async def test_published_payloads_have_the_documented_keys_and_round_trip(shop) -> None:
    api, bus = shop.api, shop.svc.ctx.bus
    seen: list[Event] = []
    for pattern in ("card.*", "shelf.*", "flash_sale.*", "order.*"):
        bus.subscribe(pattern, seen.append)
    bid = uid()
    await api.ok("PUT", f"/api/broadcasts/{bid}/shop", {"anchor_id": "a1", "room": f"live/e{bid}"})
    product = await make_product(api)
    pid, sku = product["id"], product["skus"][0]["id"]
    await api.ok("PUT", f"/api/broadcasts/{bid}/shelf", {"items": [{"product_id": pid}]})
    await api.ok("PATCH", f"/api/broadcasts/{bid}/shelf/{pid}", {"on_shelf": True})
    sale = await make_sale(api, bid, sku, stock=5, limit=1)
    await api.ok("POST", f"/api/broadcasts/{bid}/card", {"product_id": pid}, 201)
    await api.ok("POST", f"/api/broadcasts/{bid}/card", {"product_id": pid}, 201)  # replaces
    await api.ok("DELETE", f"/api/broadcasts/{bid}/card")
    await api.ok("PATCH", f"/api/flash-sales/{sale['id']}", {"per_user_limit": 2})
    buy = {"user_id": "ev1", "idempotency_key": "k1", "quantity": 1}
    order = await api.ok("POST", f"/api/flash-sales/{sale['id']}/buy", buy, 201, token=None)
    await api.ok("POST", f"/api/orders/{order['id']}/cancel", None, token=None, viewer="ev1")
    buy = {"user_id": "ev2", "idempotency_key": "k2", "quantity": 1}
    paid = await api.ok("POST", f"/api/flash-sales/{sale['id']}/buy", buy, 201, token=None)
    pay = await api.ok("POST", f"/api/orders/{paid['id']}/pay", token=None, viewer="ev2")
    async with api.session.post(pay["payment"]["sim_pay_url"]) as r:
        assert (await r.json())["notify_status"] == 200
    await journal_drained(shop.svc, sale["id"])  # else the close leaves settling to the sweep
    await api.ok("POST", f"/api/flash-sales/{sale['id']}/close", {"reason": "done"})
    await shop.svc.ctx.flush_events()
    await bus.drain()
    mine = [e for e in seen if e.data.get("broadcast_id") == bid]
    topics = {e.topic for e in mine}
    assert topics >= set(KEYS) | {"shelf.updated"}, topics
    for event in mine:
        data: dict[str, Any] = json.loads(json.dumps(event.data))  # as another node gets it
        if event.topic in KEYS:
            assert set(data) == KEYS[event.topic], event.topic
        cls = event_class_of(event.topic)
        assert cls is not None, event.topic
        assert cls.from_data(data, event.topic).to_data() == data, event.topic
    shelves = [set(e.data) for e in mine if e.topic == "shelf.updated"]
    assert {"broadcast_id", "product_ids", "actor", "ts"} in shelves
    assert {"broadcast_id", "product_id", "on_shelf", "actor", "ts"} in shelves
