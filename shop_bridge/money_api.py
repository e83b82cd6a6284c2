"""HTTP handlers of money given back or given away: refunds with a reason and an amount
(:mod:`shop_bridge.refunds`) and coupons operators give (:mod:`shop_bridge.coupons`)."""

from __future__ import annotations

from aiohttp import web

from shop_bridge import broadcast_ids
from shop_bridge.api import api, ident_path, json_reply, operator, read_body, shop_service
from shop_bridge.errors import invalid
from shop_bridge.validate import check_ident
from shop_bridge.views import order_view


@api
async def refund_order(request: web.Request) -> web.Response:
    """A whole or partial refund with its reason (:mod:`shop_bridge.refunds`)."""
    oid = ident_path(request, "order_id")
    reason, amount = "", None
    if request.can_read_body:
        body = await read_body(request, {"reason", "amount_fen"})
        reason = body.text("reason", max_len=200, default="")
        amount = body.integer("amount_fen", lo=1, hi=10**12, default=None)
    reason = reason or "refund requested"
    done = await shop_service(request).refunds.refund(oid, operator(request), reason, amount)
    return json_reply({**order_view(done["order"]), "refund": done["refund"]})


@api
async def create_coupons(request: web.Request) -> web.Response:
    """Operators give coupons: to ``user_id`` or to each of ``user_ids`` (a batch)."""
    body = await read_body(
        request,
        {"user_id", "user_ids", "value_fen", "broadcast_id", "note", "idempotency_key"},
    )
    if body.has("user_id") == body.has("user_ids"):
        raise invalid("user_ids", "give user_id (one buyer) or user_ids (a batch), not both")
    if body.has("user_id"):
        users = [str(body.ident("user_id"))]
    else:
        from shop_bridge.coupons import MAX_BATCH

        raw = body.data["user_ids"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
            raise invalid("user_ids", f"must be a list of 1..{MAX_BATCH} user ids")
        users = [check_ident(f"user_ids[{i}]", u) for i, u in enumerate(raw)]
        if len(set(users)) != len(users):
            raise invalid("user_ids", "a user appears twice")
    value = body.integer("value_fen", lo=1, hi=10**9)
    bid = broadcast_ids.from_body(body, default="")
    note = body.text("note", max_len=120, min_len=0, default="")
    key = body.ident("idempotency_key", default=None)
    items, created = await shop_service(request).coupons.issue(
        users, value, bid, note, operator(request), key
    )
    return json_reply({"items": items, "created": created}, 201 if created else 200)
