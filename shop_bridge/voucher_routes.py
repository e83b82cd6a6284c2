"""A winner's prizes and the redemption of offline vouchers (:mod:`shop_bridge.vouchers`):
handlers and their part of the shop's route table (added by :func:`ops`)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from core.http import read_json
from core.routes import Op, OpDoc
from shop_bridge.api import MAX_BODY, SHOP, api, operator, order_owner
from shop_bridge.errors import ShopError, invalid
from shop_bridge.openapi import J
from shop_bridge.validate import ID_RE, Body, query_int
from shop_bridge.vouchers import PRIZE_STATES

__all__ = ["ops"]


@api
async def user_prizes(request: web.Request) -> web.Response:
    uid = request.match_info["user_id"]
    if not ID_RE.match(uid):
        raise ShopError(404, "not_found", f"user_id {uid[:20]!r} is not a valid identifier")
    owner = order_owner(request)
    if owner is not None and owner != uid:
        raise ShopError(403, "forbidden", "a viewer sees only their own prizes")
    limit = query_int(request.query, "limit", 50, 1, 200)
    items = await request.app[SHOP].vouchers.prizes_of(uid, limit)
    return web.json_response({"items": items})


@api
async def list_prizes(request: web.Request) -> web.Response:
    q = request.query
    filters: dict[str, str | None] = {}
    for name in ("lottery_id", "user_id"):
        value = q.get(name) or None
        if value is not None and not ID_RE.match(value):
            raise invalid(name, "not a valid identifier")
        filters[name] = value
    state = q.get("state") or None
    if state is not None and state not in PRIZE_STATES:
        raise invalid("state", f"one of {', '.join(PRIZE_STATES)}")
    limit = query_int(q, "limit", 100, 1, 200)
    items = await request.app[SHOP].vouchers.listing(
        lottery_id=filters["lottery_id"], user_id=filters["user_id"], state=state, limit=limit
    )
    return web.json_response({"items": items})


@api
async def redeem_voucher(request: web.Request) -> web.Response:
    body = Body(await read_json(request, request.app[MAX_BODY]), {"code"})
    code = body.text("code", max_len=64)
    return web.json_response(await request.app[SHOP].vouchers.redeem(code, operator(request)))


def ops(
    doc: Callable[..., OpDoc], path: Callable[..., J], query: Callable[[str, J], J]
) -> list[Op]:
    """The routes, documented with the table's ``doc``, ``path`` and ``query`` helpers."""
    return [
        Op(
            "GET",
            "/api/users/{user_id}/prizes",
            user_prizes,
            doc(
                "A user's lottery prizes, newest first (a voucher with its redemption code)",
                ["public"],
                {"type": "object"},
                params=[
                    path("user_id"),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                ],
                buyer=True,
                errors=(400, 401, 403, 404),
            ),
        ),
        Op(
            "GET",
            "/api/lottery/prizes",
            list_prizes,
            doc(
                "Lottery prizes, newest first, for the operators: name, lottery, winner, "
                "state (owed, to_ship, shipped, ...), order / coupon / voucher; filtered "
                "by lottery_id, user_id, state",
                ["operator"],
                {"type": "object"},
                params=[
                    query("lottery_id", {"type": "string", "maxLength": 64}),
                    query("user_id", {"type": "string", "maxLength": 64}),
                    query("state", {"type": "string", "enum": list(PRIZE_STATES)}),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                ],
                errors=(400,),
            ),
        ),
        Op(
            "POST",
            "/api/vouchers/redeem",
            redeem_voucher,
            doc(
                "Redeem an offline voucher prize by its code, once (409 already_redeemed "
                "says when and by whom)",
                ["operator"],
                {"type": "object"},
                {
                    "type": "object",
                    "required": ["code"],
                    "properties": {"code": {"type": "string", "maxLength": 64}},
                },
                errors=(400, 404, 409),
            ),
        ),
    ]
