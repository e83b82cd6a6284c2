"""REST handlers of the order core: recipients, the address book, share links and sharers,
the blocklist; and :func:`order_extras`, what the buy and order handlers of
:mod:`shop_bridge.api` add to a new order (its sealed recipient, its sharer) after the
abuse checks. Routes and roles are in :mod:`shop_bridge.routes`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from sqlalchemy import select

from core.abuse import KINDS, normalise_entry
from core.http import caller
from core.runtime import RUNTIME
from core.tokens import TokenError, verify_token
from shop_bridge.api import api, ident_path, order_owner, read_body, shop_service, state_query
from shop_bridge.errors import ShopError, invalid, not_found
from shop_bridge.masking import Recipient
from shop_bridge.models import BROADCASTS
from shop_bridge.order_export import export_rows
from shop_bridge.order_extras import (
    device_id,
    parse_body_recipient,
    recipient_of_body,
    share_token,
)
from shop_bridge.service import ShopService
from shop_bridge.validate import ID_RE, Body, check_ident, query_int

__all__ = [
    "add_address",
    "block",
    "create_share_link",
    "deactivate_sharer",
    "delete_address",
    "export_orders",
    "get_recipient",
    "list_addresses",
    "list_blocked",
    "list_sharers",
    "put_recipient",
    "register_sharer",
    "share_visit",
    "sharer_sales",
    "unblock",
]

logger = logging.getLogger(__name__)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    import json

    return json.dumps(data, ensure_ascii=False)


def _recipient(data: object, prefix: str = "recipient.") -> Recipient:
    return parse_body_recipient(data, prefix)


def _viewer(request: web.Request) -> str:
    """The viewer whose own records these are (the address book): their viewer token."""
    owner = order_owner(request)
    if owner is None:
        raise ShopError(
            400, "viewer_token_required", "the address book is the buyer's: send X-Viewer-Token"
        )
    return owner


def _int_path(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise ShopError(404, "not_found", f"{name} {raw[:20]!r} does not exist")
    return int(raw)


def _actor(request: web.Request) -> str:
    who = caller(request)
    return str(getattr(who, "username", "") or getattr(who, "user_id", "") or "operator")


# -- recipients -------------------------------------------------------------------------


@api
async def put_recipient(request: web.Request) -> web.Response:
    """The buyer (their own order) or an operator gives or changes the recipient of an
    order not shipped yet."""
    from shop_bridge.views import order_view

    oid = ident_path(request, "order_id")
    svc = shop_service(request)
    owner = order_owner(request)
    order = await svc.recipients.order_for(oid)
    if owner is not None and order["user_id"] != owner:
        raise not_found("order", oid)
    body = await read_body(request, {"recipient", "address_id", "name", "phone", "address"})
    bare = {k: body.data[k] for k in ("name", "phone", "address") if k in body.data}
    if bare:
        if body.has("recipient") or body.has("address_id"):
            raise invalid("recipient", "give name/phone/address, recipient or address_id")
        rcpt: Recipient | None = _recipient(bare, "")
    else:
        rcpt = await recipient_of_body(svc, order["user_id"], body)
    if rcpt is None:
        raise ShopError(400, "missing_field", "recipient: is required (or address_id)")
    updated = await svc.recipients.set_for_order(order, rcpt, owner or _actor(request))
    return _json(order_view(updated))


@api
async def get_recipient(request: web.Request) -> web.Response:
    """The plaintext recipient, for the operators who ship (the route is operator-only)."""
    oid = ident_path(request, "order_id")
    svc = shop_service(request)
    order = await svc.recipients.order_for(oid)
    return _json(
        {"order_id": oid, "recipient": svc.recipients.reveal(order, _actor(request))},
    )


# -- the address book --------------------------------------------------------------------


@api
async def list_addresses(request: web.Request) -> web.Response:
    user = _viewer(request)
    svc = shop_service(request)
    return _json({"items": await svc.addresses.list(user), "limit": svc.ctx.config.max_addresses})


@api
async def add_address(request: web.Request) -> web.Response:
    user = _viewer(request)
    body = await read_body(request, {"name", "phone", "address", "default"})
    rcpt = _recipient({k: body.data.get(k) for k in ("name", "phone", "address")}, "")
    default = body.boolean("default", default=False)
    return _json(await shop_service(request).addresses.add(user, rcpt, default), 201)


@api
async def delete_address(request: web.Request) -> web.Response:
    user = _viewer(request)
    await shop_service(request).addresses.delete(user, _int_path(request, "address_id"))
    return web.Response(status=204)


# -- sharers -------------------------------------------------------------------------------


def _broadcast_path(request: web.Request) -> str:
    raw = request.match_info["broadcast_id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16 or int(raw) < 1:
        raise ShopError(404, "broadcast_not_found", f"no broadcast {raw[:20]!r}: ids are integers")
    return str(int(raw))


def _viewer_or_none(request: web.Request) -> str | None:
    raw = request.headers.get("X-Viewer-Token")
    if raw is None:
        return None
    try:
        return verify_token(request.app[RUNTIME].secret, raw).user_id
    except TokenError as exc:
        raise ShopError(401, "invalid_viewer_token", f"viewer token refused: {exc}") from None


async def _broadcast_or_404(svc: ShopService, bid: str) -> dict[str, Any]:
    async with svc.ctx.engine.connect() as conn:
        row = (
            (await conn.execute(select(BROADCASTS).where(BROADCASTS.c.broadcast_id == bid)))
            .mappings()
            .first()
        )
    if row is None:
        raise not_found("broadcast", bid)
    return dict(row)


@api
async def create_share_link(request: web.Request) -> web.Response:
    """A share link of the broadcast: an operator (any registered sharer), the broadcast's
    anchor (decided from the shop's record of the broadcast), or a registered sharer for
    themselves (viewer token)."""
    bid = _broadcast_path(request)
    svc = shop_service(request)
    body = await read_body(request, {"sharer_id"}) if request.can_read_body else Body({}, set())
    named = body.ident("sharer_id", default=None)
    viewer = _viewer_or_none(request)
    who = caller(request)
    broadcast = await _broadcast_or_404(svc, bid)
    if viewer is not None:
        if named is not None and named != viewer:
            raise ShopError(403, "forbidden", "a sharer makes links for themselves only")
        sharer = viewer
        if not await svc.sharers.is_active(sharer):
            raise ShopError(403, "not_a_sharer", "you are not a registered sharer")
    elif who is not None and (
        who.role == "operator"
        or (who.role == "anchor" and str(who.user_id) == str(broadcast["anchor_id"]))
    ):
        if named is None:
            raise ShopError(400, "missing_field", "sharer_id: is required", field="sharer_id")
        sharer = named
        if not await svc.sharers.is_active(sharer):
            raise ShopError(422, "unknown_sharer", f"{sharer} is not a registered sharer")
    elif who is not None:
        raise not_found("broadcast", bid)  # someone else's broadcast: as if it did not exist
    else:
        raise ShopError(401, "unauthorized", "sign in, or send a sharer's X-Viewer-Token")
    room = broadcast["room"] or bid
    link = svc.sharers.make_link(bid, sharer, request.app[RUNTIME].http_base(), room)
    return _json(link, 201)


@api
async def share_visit(request: web.Request) -> web.Response:
    """A viewer arrived through a share link: a visit for its sharer (once per viewer and
    browser, with or without a viewer token) and, with a viewer token, the touch that
    credits their orders (first/last)."""
    bid = _broadcast_path(request)
    svc = shop_service(request)
    viewer = _viewer_or_none(request)
    device = device_id(request)
    if viewer is None and device is None:
        raise ShopError(
            401, "unauthorized", "send the viewer's X-Viewer-Token or the browser's X-Device-Id"
        )
    body = await read_body(request, {"share"}) if request.can_read_body else Body({}, set())
    token = share_token(request, body)
    if not token:
        raise ShopError(400, "missing_field", "share: is required (or X-Share-Token)")
    visit = await svc.sharers.visit(
        token, bid, user_id=viewer, device=device, address=request.remote or ""
    )
    cfg = svc.ctx.config
    return _json(
        {
            "broadcast_id": int(bid),
            "counted": visit.counted,
            "not_counted": visit.reason or None,
            "credited_to": visit.credited_to,
            "attribution": cfg.sharer_attribution,
            "window_s": cfg.sharer_window,
        }
    )


@api
async def sharer_sales(request: web.Request) -> web.Response:
    return _json(await shop_service(request).sharers.report(_broadcast_path(request)))


@api
async def register_sharer(request: web.Request) -> web.Response:
    body = await read_body(request, {"user_id", "name"})
    view, created = await shop_service(request).sharers.register(
        body.ident("user_id"), body.text("name", max_len=64, min_len=0, default=""), _actor(request)
    )
    return _json(view, 201 if created else 200)


@api
async def list_sharers(request: web.Request) -> web.Response:
    limit = query_int(request.query, "limit", 100, 1, 500)
    after = request.query.get("after", "")
    if after:
        check_ident("after", after)
    items = await shop_service(request).sharers.list(limit, after)
    return _json(
        {"items": items, "next_after": items[-1]["user_id"] if len(items) == limit else None}
    )


@api
async def deactivate_sharer(request: web.Request) -> web.Response:
    uid = request.match_info["user_id"]
    if not ID_RE.match(uid):
        raise not_found("sharer", uid[:20])
    return _json(await shop_service(request).sharers.deactivate(uid, _actor(request)))


# -- the blocklist -----------------------------------------------------------------------------


@api
async def block(request: web.Request) -> web.Response:
    body = await read_body(request, {"kind", "value", "reason", "ttl_s"})
    kind = body.text("kind", max_len=16)
    try:
        value = normalise_entry(kind, body.text("value", max_len=128))
    except ValueError as exc:
        raise invalid("value" if kind in KINDS else "kind", str(exc)) from None
    view, created = await shop_service(request).blocklist.add(
        kind,
        value,
        body.text("reason", max_len=200, min_len=0, default=""),
        _actor(request),
        body.integer("ttl_s", lo=1, hi=10 * 365 * 86400, default=None),
    )
    return _json(view, 201 if created else 200)


@api
async def list_blocked(request: web.Request) -> web.Response:
    kind = request.query.get("kind")
    if kind is not None and kind not in KINDS:
        raise invalid("kind", f"one of {', '.join(KINDS)}")
    limit = query_int(request.query, "limit", 100, 1, 500)
    after = query_int(request.query, "after", 0, 0, 2**53)
    items = await shop_service(request).blocklist.list(kind, limit, after)
    return _json({"items": items, "next_after": items[-1]["id"] if len(items) == limit else None})


@api
async def unblock(request: web.Request) -> web.Response:
    kind, value = request.match_info["kind"], request.match_info["value"]
    try:
        value = normalise_entry(kind, value)
    except ValueError:
        raise not_found("blocklist_entry", f"{kind[:16]} {value[:60]}") from None
    if not await shop_service(request).blocklist.remove(kind, value, _actor(request)):
        raise not_found("blocklist_entry", f"{kind} {value}")
    return web.Response(status=204)


# -- the orders export --------------------------------------------------------------------------


@api
async def export_orders(request: web.Request) -> web.StreamResponse:
    """Orders as CSV (operators): masked recipients, or ``recipients=full`` to ship."""
    q = request.query
    state = state_query(q)
    bid = q.get("broadcast_id")
    if bid is not None and not (bid.isascii() and bid.isdigit() and len(bid) <= 16):
        raise invalid("broadcast_id", "an integer")
    mode = q.get("recipients", "masked")
    if mode not in ("masked", "full"):
        raise invalid("recipients", "masked or full")
    limit = query_int(q, "limit", 10_000, 1, 100_000)
    rows = export_rows(
        shop_service(request).recipients,
        broadcast_id=str(int(bid)) if bid is not None else None,
        state=state,
        limit=limit,
        full=mode == "full",
        actor=_actor(request),
    )
    first = await anext(rows)  # the header: errors before the response starts
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="orders.csv"',
            "Cache-Control": "no-store",
        }
    )
    await resp.prepare(request)
    await resp.write(first)
    async for chunk in rows:
        await resp.write(chunk)
    await resp.write_eof()
    return resp
