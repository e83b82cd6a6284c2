"""HTTP handlers of a broadcast's shop: what the shop knows of the broadcast, its shelf, its
"now explaining" card, its flash sales and its sales report (routes in
:mod:`shop_bridge.routes`; the rules in :mod:`shop_bridge.shelf` and
:mod:`shop_bridge.broadcast_rules`). Broadcast ids are integers in and out
(:mod:`shop_bridge.broadcast_ids`)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.http import read_json
from shop_bridge import broadcast_ids
from shop_bridge.api import MAX_BODY, SHOP, api, operator
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.errors import ShopError, not_found
from shop_bridge.service import ShopService
from shop_bridge.validate import ROOM_RE, Body, query_int


def _svc(request: web.Request) -> ShopService:
    return request.app[SHOP]


async def _body(request: web.Request, allowed: set[str]) -> Body:
    return Body(await read_json(request, request.app[MAX_BODY]), allowed)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def _int_path(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 12:
        raise ShopError(404, "not_found", f"{name} {raw[:20]!r} does not exist")
    return int(raw)


@api
async def put_broadcast(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    body = await _body(request, {"anchor_id", "room"})
    anchor = body.ident("anchor_id")
    room = body.text("room", max_len=128, pattern=ROOM_RE, default="")
    info = await _svc(request).shelf.set_broadcast(bid, anchor, room)
    return _json({**info, "broadcast_id": to_wire(bid)})


@api
async def get_broadcast_shop(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    row = await _svc(request).shelf.fresh_row(bid)
    if row is None:
        raise not_found("broadcast", bid)
    return _json(
        {
            "broadcast_id": to_wire(bid),
            "anchor_id": row["anchor_id"],
            "room": row["room"],
            "state": row["state"] or None,
            "source": row["source"] or None,
            "known": bool(row["source"]) and row["state"] != "deleted",
        }
    )


@api
async def get_shelf(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return _json({"broadcast_id": to_wire(bid), "items": await _svc(request).shelf.get_shelf(bid)})


@api
async def put_shelf(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    body = await _body(request, {"items"})
    items = []
    for i, raw in enumerate(body.objects("items", max_items=500)):
        item = Body(raw, {"product_id", "on_shelf"}, f"items[{i}]")
        items.append((item.integer("product_id", lo=1), item.boolean("on_shelf", default=True)))
    shelf = await _svc(request).shelf.put_shelf(bid, items, operator(request))
    return _json({"broadcast_id": to_wire(bid), "items": shelf})


@api
async def patch_shelf_item(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    pid = _int_path(request, "product_id")
    body = await _body(request, {"on_shelf"})
    on = body.boolean("on_shelf")
    shelf = await _svc(request).shelf.set_on_shelf(bid, pid, on, operator(request))
    return _json({"broadcast_id": to_wire(bid), "items": shelf})


@api
async def get_card(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return _json(
        {"broadcast_id": to_wire(bid), "card": await _svc(request).shelf.current_card(bid)}
    )


@api
async def push_card(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    body = await _body(request, {"product_id", "sku_id", "flash_sale_id"})
    card = await _svc(request).shelf.push_card(
        bid,
        body.integer("product_id", lo=1),
        body.integer("sku_id", lo=1, default=None),
        body.integer("flash_sale_id", lo=1, default=None),
        operator(request),
    )
    return _json(card, 201)


@api
async def clear_card(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return _json(await _svc(request).shelf.clear_card(bid, operator(request)))


@api
async def card_history(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    limit = query_int(request.query, "limit", 100, 1, 500)
    return _json(
        {"broadcast_id": to_wire(bid), "items": await _svc(request).shelf.card_history(bid, limit)}
    )


@api
async def sales(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return _json(await _svc(request).reports.sales(bid))


@api
async def list_flash_sales(request: web.Request) -> web.Response:
    q = request.query
    bid = broadcast_ids.parse(q["broadcast_id"]) if q.get("broadcast_id") else None
    limit = query_int(q, "limit", 50, 1, 200)
    items = await _svc(request).sale_admin.list_sales(bid, limit)
    return _json({"broadcast_id": to_wire(bid) if bid else None, "items": items})
