"""REST handlers of the order core: recipients, the address book, share links and sharers,
the blocklist; and :func:`order_extras`, what the buy and order handlers of
:mod:`shop_bridge.api` add to a new order (its sealed recipient, its sharer) after the
abuse checks. Routes and roles are in :mod:`shop_bridge.routes`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from core.http import caller
from shop_bridge.api import MAX_BODY, SHOP, api, order_owner
from shop_bridge.errors import ShopError, invalid, not_found
from shop_bridge.masking import Recipient
from shop_bridge.order_extras import parse_body_recipient, recipient_of_body
from shop_bridge.service import ShopService
from shop_bridge.validate import ID_RE, Body

__all__ = ["add_address", "delete_address", "get_recipient", "list_addresses", "put_recipient"]

logger = logging.getLogger(__name__)


def _svc(request: web.Request) -> ShopService:
    return request.app[SHOP]


async def _body(request: web.Request, allowed: set[str]) -> Body:
    from core.http import read_json

    return Body(await read_json(request, request.app[MAX_BODY]), allowed)


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


def _order_path(request: web.Request) -> str:
    raw = request.match_info["order_id"]
    if not ID_RE.match(raw):
        raise ShopError(404, "not_found", f"order_id {raw[:20]!r} is not a valid identifier")
    return raw


def _actor(request: web.Request) -> str:
    who = caller(request)
    return str(getattr(who, "username", "") or getattr(who, "user_id", "") or "operator")


# -- recipients -------------------------------------------------------------------------


@api
async def put_recipient(request: web.Request) -> web.Response:
    """The buyer (their own order) or an operator gives or changes the recipient of an
    order not shipped yet."""
    from shop_bridge.views import order_view

    oid = _order_path(request)
    svc = _svc(request)
    owner = order_owner(request)
    order = await svc.recipients.order_for(oid)
    if owner is not None and order["user_id"] != owner:
        raise not_found("order", oid)
    body = await _body(request, {"recipient", "address_id", "name", "phone", "address"})
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
    oid = _order_path(request)
    svc = _svc(request)
    order = await svc.recipients.order_for(oid)
    return _json(
        {"order_id": oid, "recipient": svc.recipients.reveal(order, _actor(request))},
    )


# -- the address book --------------------------------------------------------------------


@api
async def list_addresses(request: web.Request) -> web.Response:
    user = _viewer(request)
    svc = _svc(request)
    return _json({"items": await svc.addresses.list(user), "limit": svc.ctx.config.max_addresses})


@api
async def add_address(request: web.Request) -> web.Response:
    user = _viewer(request)
    body = await _body(request, {"name", "phone", "address", "default"})
    rcpt = _recipient({k: body.data.get(k) for k in ("name", "phone", "address")}, "")
    default = body.boolean("default", default=False)
    return _json(await _svc(request).addresses.add(user, rcpt, default), 201)


@api
async def delete_address(request: web.Request) -> web.Response:
    user = _viewer(request)
    await _svc(request).addresses.delete(user, _int_path(request, "address_id"))
    return web.Response(status=204)
