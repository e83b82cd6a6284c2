"""After-sales requests (:mod:`shop_bridge.aftersales`): handlers and their part of the
shop's route table (added by :func:`ops`).

The buyer's routes take the viewer token (``X-Viewer-Token``) and act only on what the
resource says is theirs: the order (or the request) is loaded and its ``user_id`` compared
with the token's; someone else's answers 404 as if it did not exist. They are
rate-limited by the shop's abuse guard (action ``aftersales``: ``shop.aftersales_limit_*``
per ``shop.rate_window``; the blocklist too). The operators' routes list, approve and
reject.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from core.abuse import Refused
from core.http import ApiError
from core.routes import Op, OpDoc
from shop_bridge import broadcast_ids
from shop_bridge.aftersales import MAX_NOTE, MAX_TEXT
from shop_bridge.aftersales_state import KINDS, REASONS, AfterSalesState
from shop_bridge.api import (
    api,
    ident_path,
    json_reply,
    operator,
    order_owner,
    read_body,
    shop_service,
)
from shop_bridge.errors import ShopError, invalid
from shop_bridge.openapi import J
from shop_bridge.order_extras import device_id
from shop_bridge.validate import query_int

__all__ = ["ops"]

STATES = [s.value for s in AfterSalesState]


def _buyer(request: web.Request) -> str:
    """The buyer named by the viewer token (an operator decides requests, never asks)."""
    owner = order_owner(request)
    if owner is None:
        raise ShopError(
            403, "buyer_only", "after-sales is asked by the buyer, with their viewer token"
        )
    return owner


async def _limit(request: web.Request, user: str) -> None:
    try:
        await shop_service(request).abuse.check(
            "aftersales", user, device_id(request), request.remote, name="after-sales request"
        )
    except Refused as exc:
        extra = dict(exc.extra)
        if exc.status == 429:
            extra["retry_after"] = exc.retry_after
        err = ApiError(exc.status, exc.code, exc.message, **extra)
        if exc.status == 429:
            err.headers["Retry-After"] = str(exc.retry_after)
        raise err from None


@api
async def create_request(request: web.Request) -> web.Response:
    oid = ident_path(request, "order_id")
    user = _buyer(request)
    body = await read_body(request, {"kind", "reason", "text", "amount_fen"})
    kind = body.text("kind", max_len=16)
    reason = body.text("reason", max_len=24)
    words = body.text("text", max_len=MAX_TEXT, min_len=0, default="").strip()
    amount = body.integer("amount_fen", lo=1, hi=10**12, default=None)
    if kind not in KINDS:
        raise invalid("kind", f"one of {', '.join(KINDS)}")
    if reason not in REASONS:
        raise invalid("reason", f"one of {', '.join(REASONS)}")
    await _limit(request, user)
    view = await shop_service(request).aftersales.create(oid, user, kind, reason, words, amount)
    return json_reply(view, 201)


@api
async def my_requests(request: web.Request) -> web.Response:
    user = _buyer(request)
    limit = query_int(request.query, "limit", 50, 1, 200)
    return json_reply({"items": await shop_service(request).aftersales.of_user(user, limit)})


@api
async def withdraw_request(request: web.Request) -> web.Response:
    rid = ident_path(request, "request_id")
    user = _buyer(request)
    await _limit(request, user)
    return json_reply(await shop_service(request).aftersales.withdraw(rid, user))


@api
async def list_requests(request: web.Request) -> web.Response:
    q = request.query
    state = q.get("state") or None
    if state is not None and state not in STATES:
        raise invalid("state", f"one of {', '.join(STATES)}")
    bid = broadcast_ids.parse(q["broadcast_id"]) if q.get("broadcast_id") else None
    limit = query_int(q, "limit", 100, 1, 200)
    items = await shop_service(request).aftersales.listing(
        state=state, broadcast_id=bid, limit=limit
    )
    return json_reply({"items": items})


@api
async def approve_request(request: web.Request) -> web.Response:
    rid = ident_path(request, "request_id")
    amount, note = None, ""
    if request.can_read_body:
        body = await read_body(request, {"amount_fen", "note"})
        amount = body.integer("amount_fen", lo=1, hi=10**12, default=None)
        note = body.text("note", max_len=MAX_NOTE, min_len=0, default="").strip()
    view = await shop_service(request).aftersales.approve(rid, operator(request), amount, note)
    return json_reply(view)


@api
async def reject_request(request: web.Request) -> web.Response:
    rid = ident_path(request, "request_id")
    body = await read_body(request, {"reason"})
    reason = body.text("reason", max_len=MAX_NOTE).strip()
    if not reason:
        raise invalid("reason", "say why the request is rejected")
    return json_reply(await shop_service(request).aftersales.reject(rid, operator(request), reason))


def ops(
    doc: Callable[..., OpDoc], path: Callable[..., J], query: Callable[[str, J], J]
) -> list[Op]:
    """The routes, documented with the table's ``doc``, ``path`` and ``query`` helpers."""
    request_id = path("request_id", {"type": "string", "maxLength": 64})
    view: J = {"type": "object"}
    items: J = {"type": "object", "properties": {"items": {"type": "array"}}}
    limit = query("limit", {"type": "integer", "minimum": 1, "maximum": 200})
    return [
        Op(
            "POST",
            "/api/orders/{order_id}/aftersales",
            create_request,
            doc(
                "Ask for after-sales (a refund) of one's own paid or shipped order (viewer "
                "token): kind, reason code, text, amount_fen (default: all that is left); "
                "409 order_not_eligible, kind_not_allowed, too_late, nothing_to_refund, "
                "refund_exceeds_paid, request_open; 429 rate_limited",
                ["public"],
                view,
                {
                    "type": "object",
                    "required": ["kind", "reason"],
                    "properties": {
                        "kind": {"type": "string", "enum": list(KINDS)},
                        "reason": {"type": "string", "enum": list(REASONS)},
                        "text": {"type": "string", "maxLength": MAX_TEXT},
                        "amount_fen": {"type": "integer", "minimum": 1},
                    },
                },
                "201",
                errors=(400, 403, 404, 409, 413, 429, 503),
                params=[path("order_id")],
                buyer=True,
            ),
        ),
        Op(
            "GET",
            "/api/me/aftersales",
            my_requests,
            doc(
                "The buyer's after-sales requests, newest first (viewer token)",
                ["public"],
                items,
                errors=(400,),
                params=[limit],
                buyer=True,
            ),
        ),
        Op(
            "POST",
            "/api/aftersales/{request_id}/withdraw",
            withdraw_request,
            doc(
                "Withdraw one's own open after-sales request (viewer token; 409 "
                "illegal_transition when it is no longer open, request_busy while an "
                "operator approves it)",
                ["public"],
                view,
                errors=(400, 404, 409, 429, 503),
                params=[request_id],
                buyer=True,
            ),
        ),
        Op(
            "GET",
            "/api/aftersales",
            list_requests,
            doc(
                "After-sales requests for the operators, with their order (buyer's "
                "recipient masked): state=open is the queue, oldest first; any other "
                "selection newest first; filter by state and broadcast",
                ["operator"],
                items,
                params=[
                    query("state", {"type": "string", "enum": STATES}),
                    query("broadcast_id", {"type": "integer", "minimum": 1}),
                    limit,
                ],
                errors=(400,),
            ),
        ),
        Op(
            "POST",
            "/api/aftersales/{request_id}/approve",
            approve_request,
            doc(
                "Approve an open request: refunds amount_fen (default: the amount asked) "
                "through the refund path; the request is approved, then refunded when the "
                "refund completes (event aftersales.decided; 409 illegal_transition, "
                "request_busy, refund_pending, refund_exceeds_paid, nothing_to_refund)",
                ["operator"],
                view,
                {
                    "type": "object",
                    "properties": {
                        "amount_fen": {"type": "integer", "minimum": 1},
                        "note": {"type": "string", "maxLength": MAX_NOTE},
                    },
                },
                errors=(400, 404, 409, 503),
                params=[request_id],
                body_required=False,
            ),
        ),
        Op(
            "POST",
            "/api/aftersales/{request_id}/reject",
            reject_request,
            doc(
                "Reject an open request with a reason the buyer sees (event "
                "aftersales.decided; 409 illegal_transition, request_busy)",
                ["operator"],
                view,
                {
                    "type": "object",
                    "required": ["reason"],
                    "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 200}},
                },
                errors=(400, 404, 409),
                params=[request_id],
            ),
        ),
    ]
