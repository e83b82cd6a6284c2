"""Whose resource a shop route acts on, for the control plane's ownership check.

Each anchor-callable route in :mod:`shop_bridge.routes` declares ``owner=`` one of these
(see :class:`core.routes.Owner`): the check loads the resource and names its broadcast,
then control asks whether the caller may act on that broadcast (an anchor: only their
own). A flash sale's broadcast is read from its row, never taken from the URL or body.
"""

from __future__ import annotations

from aiohttp import web

from core.routes import Owner, Scope, broadcast_in_body, broadcast_in_path, resolved_by
from shop_bridge.service import ShopService

__all__ = ["BROADCAST", "CARD", "NEW_SALE", "SALE", "SALES_LIST"]


def _shop(request: web.Request) -> ShopService:
    from shop_bridge.api import SHOP  # api imports this module's users

    return request.app[SHOP]


async def _sale_scope(request: web.Request, sale_id: object) -> Scope:
    raw = str(sale_id)
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        return Scope(missing=f"flash sale {raw[:20]}")
    row = await _shop(request).flash.sale_row(int(raw))
    if row is None:
        return Scope(missing=f"flash sale {raw}")
    return Scope.of([row["broadcast_id"]])


async def _sale_in_path(request: web.Request) -> Scope:
    return await _sale_scope(request, request.match_info.get("sale_id", ""))


async def _sale_in_body(request: web.Request) -> Scope:
    from core.http import read_json

    if not request.body_exists:
        return Scope()
    sale_id = (await read_json(request)).get("flash_sale_id")
    if sale_id is None:
        return Scope()
    scope = await _sale_scope(request, sale_id)
    # a sale named in a body that does not exist: the handler answers (422 unknown ref)
    return Scope() if scope.missing else scope


async def _broadcast_in_query(request: web.Request) -> Scope:
    value = request.query.get("broadcast_id")
    return Scope(everything=True) if not value else Scope.of([value])


SALES_LIST = resolved_by(
    _broadcast_in_query, "the broadcast of the query's broadcast_id (else all)", status=403
)
"""Listing flash sales: the query's broadcast (anchors must name one of theirs)."""
BROADCAST = broadcast_in_path("broadcast_id")
"""A route of one broadcast (its shelf, card, sales)."""
SALE = resolved_by(_sale_in_path, "the broadcast of the flash sale {sale_id}")
"""A flash sale: the broadcast in its row."""
NEW_SALE = broadcast_in_body("broadcast_id")
"""Creating a flash sale: the body's broadcast."""
CARD: Owner = BROADCAST + resolved_by(
    _sale_in_body, "the broadcast of the body's flash_sale_id", status=403
)
"""Pushing a card: the broadcast in the path, and that of the flash sale it links."""
