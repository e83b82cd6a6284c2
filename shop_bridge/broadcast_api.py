"""HTTP handlers of a broadcast's shop: what the shop knows of the broadcast, its shelf, its
"now explaining" card, its flash sales and its sales report (routes in
:mod:`shop_bridge.routes`; the rules in :mod:`shop_bridge.shelf` and
:mod:`shop_bridge.broadcast_rules`). Broadcast ids are integers in and out
(:mod:`shop_bridge.broadcast_ids`)."""

from __future__ import annotations

from aiohttp import web

from shop_bridge import broadcast_ids
from shop_bridge.api import api, int_path, json_reply, operator, read_body, shop_service
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.errors import not_found
from shop_bridge.validate import ROOM_RE, Body, query_int


@api
async def put_broadcast(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    body = await read_body(request, {"anchor_id", "room"})
    anchor = body.ident("anchor_id")
    room = body.text("room", max_len=128, pattern=ROOM_RE, default="")
    info = await shop_service(request).shelf.set_broadcast(bid, anchor, room)
    return json_reply({**info, "broadcast_id": to_wire(bid)})


@api
async def get_broadcast_shop(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    row = await shop_service(request).shelf.fresh_row(bid)
    if row is None:
        raise not_found("broadcast", bid)
    return json_reply(
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
    return json_reply(
        {"broadcast_id": to_wire(bid), "items": await shop_service(request).shelf.get_shelf(bid)}
    )


@api
async def put_shelf(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    body = await read_body(request, {"items"})
    items = []
    for i, raw in enumerate(body.objects("items", max_items=500)):
        item = Body(raw, {"product_id", "on_shelf"}, f"items[{i}]")
        items.append((item.integer("product_id", lo=1), item.boolean("on_shelf", default=True)))
    shelf = await shop_service(request).shelf.put_shelf(bid, items, operator(request))
    return json_reply({"broadcast_id": to_wire(bid), "items": shelf})


@api
async def patch_shelf_item(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    pid = int_path(request, "product_id")
    body = await read_body(request, {"on_shelf"})
    on = body.boolean("on_shelf")
    shelf = await shop_service(request).shelf.set_on_shelf(bid, pid, on, operator(request))
    return json_reply({"broadcast_id": to_wire(bid), "items": shelf})


@api
async def get_card(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return json_reply(
        {"broadcast_id": to_wire(bid), "card": await shop_service(request).shelf.current_card(bid)}
    )


@api
async def push_card(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    body = await read_body(request, {"product_id", "sku_id", "flash_sale_id"})
    card = await shop_service(request).shelf.push_card(
        bid,
        body.integer("product_id", lo=1),
        body.integer("sku_id", lo=1, default=None),
        body.integer("flash_sale_id", lo=1, default=None),
        operator(request),
    )
    return json_reply(card, 201)


@api
async def clear_card(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return json_reply(await shop_service(request).shelf.clear_card(bid, operator(request)))


@api
async def card_history(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    limit = query_int(request.query, "limit", 100, 1, 500)
    return json_reply(
        {
            "broadcast_id": to_wire(bid),
            "items": await shop_service(request).shelf.card_history(bid, limit),
        }
    )


@api
async def sales(request: web.Request) -> web.Response:
    bid = broadcast_ids.from_path(request.match_info["broadcast_id"])
    return json_reply(await shop_service(request).reports.sales(bid))


@api
async def list_flash_sales(request: web.Request) -> web.Response:
    q = request.query
    bid = broadcast_ids.parse(q["broadcast_id"]) if q.get("broadcast_id") else None
    limit = query_int(q, "limit", 50, 1, 200)
    items = await shop_service(request).sale_admin.list_sales(bid, limit)
    return json_reply({"broadcast_id": to_wire(bid) if bid else None, "items": items})
