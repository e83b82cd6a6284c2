"""What a new order gets besides its goods, decided before it is placed: the buyer's
sealed recipient (:mod:`shop_bridge.recipients`) and the sharer it is credited to
(:mod:`shop_bridge.sharers`), after the abuse checks (:mod:`shop_bridge.abuse`).

The buy and order handlers (:mod:`shop_bridge.api`) call :func:`order_extras` with the
decoded body; it returns a function of the new order's id giving the extra columns (the
recipient is sealed with the order id as associated data), or None when there is nothing
to add: a flash-sale buy without a recipient pays no cryptography, and the sealing of
one with a recipient happens before the buy reaches Redis, never inside the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from core.abuse import Refused
from core.http import ApiError
from core.runtime import RUNTIME
from core.tokens import verify_token
from shop_bridge.errors import ShopError, invalid
from shop_bridge.masking import Recipient, RecipientError, parse_recipient
from shop_bridge.service import ShopService
from shop_bridge.validate import Body

__all__ = [
    "EXTRA_FIELDS",
    "SHARE_HEADER",
    "Extra",
    "order_extras",
    "parse_body_recipient",
    "recipient_of_body",
    "share_token",
]

Extra = Callable[[str], dict[str, Any]]

EXTRA_FIELDS = frozenset({"recipient", "address_id", "share"})
"""Body fields of a buy or an order that :func:`order_extras` reads."""


def parse_body_recipient(data: object, prefix: str = "recipient.") -> Recipient:
    """A recipient object, or 400 ``invalid_field`` naming the field."""
    try:
        return parse_recipient(data, prefix)
    except RecipientError as exc:
        raise ShopError(400, "invalid_field", str(exc), field=exc.field) from None


async def recipient_of_body(svc: ShopService, user: str, body: Body) -> Recipient | None:
    """The recipient a body gives: ``recipient`` or ``address_id`` (one of the buyer's
    saved addresses), or None."""
    if body.has("recipient") and body.has("address_id"):
        raise invalid("address_id", "give recipient or address_id, not both")
    if body.has("recipient"):
        return parse_body_recipient(body.data["recipient"])
    if body.has("address_id"):
        return await svc.addresses.recipient(user, body.integer("address_id", lo=1))
    return None


SHARE_HEADER = "X-Share-Token"
DEVICE_HEADER = "X-Device-Id"


def device_id(request: web.Request) -> str | None:
    """The caller's device id (``X-Device-Id``: 1..128 printable characters), if sent."""
    raw = request.headers.get(DEVICE_HEADER)
    if raw is None or raw == "":
        return None
    if len(raw) > 128 or any(c.isspace() or not c.isprintable() for c in raw):
        raise invalid(DEVICE_HEADER, "must be 1..128 printable characters without spaces")
    return raw


def refusal(exc: Refused) -> ApiError:
    """The HTTP answer of an abuse refusal (429 with ``Retry-After``, 403)."""
    extra = dict(exc.extra)
    if exc.retry_after:
        extra["retry_after"] = exc.retry_after
    err = ApiError(exc.status, exc.code, exc.message, **extra)
    if exc.retry_after and exc.status == 429:
        err.headers["Retry-After"] = str(exc.retry_after)
    return err


async def check_abuse(request: web.Request, svc: ShopService, user: str, flash: bool) -> None:
    """The blocklist and rate limits of buying (:mod:`shop_bridge.abuse`); with ``flash``
    the account-age rule too. A buy an operator's backend places (no viewer token) is not
    limited per IP: the backend's address is every buyer's."""
    viewer_raw = request.headers.get("X-Viewer-Token")
    ip = request.remote if viewer_raw is not None else None
    try:
        await svc.abuse.check("buy", user, device_id(request), ip)
        if flash and svc.abuse.min_account_age > 0:
            created = None
            if viewer_raw is not None:
                created = verify_token(request.app[RUNTIME].secret, viewer_raw).created
            await svc.abuse.check_account_age(user, created)
    except Refused as exc:
        raise refusal(exc) from None


def share_token(request: web.Request, body: Body) -> str | None:
    """The share token of the request: the body's ``share`` or ``X-Share-Token``."""
    raw = body.data.get("share") if body.has("share") else request.headers.get(SHARE_HEADER)
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 512:
        raise invalid("share", "must be the share token of a share link (at most 512 chars)")
    return raw


def _body_broadcast(body: Body) -> str:
    raw = body.data.get("broadcast_id")
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        return str(int(raw))
    return ""


async def order_extras(
    request: web.Request,
    svc: ShopService,
    user: str,
    body: Body,
    sale_id: int | None = None,
) -> Extra | None:
    """The extra columns of a new order as a function of its id (None: nothing to add):
    its sealed recipient and the sharer it is credited to. ``sale_id``: a flash-sale buy
    (its broadcast is the sale's)."""
    await check_abuse(request, svc, user, flash=sale_id is not None)
    rcpt = await recipient_of_body(svc, user, body)
    seal = svc.recipients.columns_for(rcpt)
    token = share_token(request, body)
    sharer: str | None = None
    if token:
        if sale_id is not None:
            sale = await svc.flash.sale_ctx(sale_id)
            broadcast = str(sale.sale["broadcast_id"]) if sale is not None else ""
        else:
            broadcast = _body_broadcast(body)
        if broadcast:
            sharer = await svc.sharers.touch(token, user, broadcast)
    if sharer is None:
        return seal
    if seal is None:
        return lambda _order_id: {"sharer_id": sharer}
    return lambda order_id: {**seal(order_id), "sharer_id": sharer}
