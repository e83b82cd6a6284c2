"""A winner's prizes and the redemption of offline vouchers (:mod:`shop_bridge.vouchers`):
handlers and their part of the shop's route table (added by :func:`ops`)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from core.http import read_json
from core.routes import Op, OpDoc
from shop_bridge.api import MAX_BODY, SHOP, api, operator, order_owner
from shop_bridge.errors import ShopError
from shop_bridge.openapi import J
from shop_bridge.validate import ID_RE, Body, query_int

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
