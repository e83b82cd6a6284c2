"""Who lists which orders (``GET /api/orders``), and its paging cursor.

A buyer (viewer token) sees only their own orders (naming another user is 403); an
operator sees all of them; an anchor sees the orders of the broadcasts whose anchor they
are, decided from the shop's broadcast -> anchor mapping (``shop_broadcasts``, kept from
control's ``broadcast.*`` events), never from the order's own attribution; a moderator
sees none (403); anyone else gets 401. The filters (broadcast, state, user) narrow that.
"""

from __future__ import annotations

from typing import Any

from core.http import Caller
from shop_bridge.errors import ShopError, invalid
from shop_bridge.validate import ID_RE

VIEWER_TOKEN_HEADER = "X-Viewer-Token"


def scope(
    viewer: str | None, who: Caller | None, named: str | None
) -> tuple[str | None, str | None]:
    """(user id to filter on, anchor id to filter on) for this caller; raises 401/403."""
    if viewer is not None:
        if named is not None and named != viewer:
            raise ShopError(403, "forbidden", "a viewer sees only their own orders")
        return viewer, None
    if who is None:
        raise ShopError(
            401, "unauthorized", f"send the buyer's viewer token ({VIEWER_TOKEN_HEADER})"
        )
    if who.role == "operator":
        return named, None
    if who.role == "anchor":
        return named, str(who.user_id)
    raise ShopError(403, "forbidden", f"a {who.role} sees no orders")


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """``<created_ms>.<order id>`` of the previous page's last order."""
    if not raw:
        return None
    ms, _dot, oid = raw.partition(".")
    if not (ms.isdigit() and len(ms) <= 15 and ID_RE.match(oid)):
        raise invalid("cursor", "not a cursor this listing returned")
    return int(ms), oid


def next_cursor(orders: list[dict[str, Any]], limit: int) -> str | None:
    """The cursor of the next page (None when this page was not full)."""
    if len(orders) < limit:
        return None
    last = orders[-1]
    return f"{last['created_ms']}.{last['id']}"
