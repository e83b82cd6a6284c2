"""Orders as CSV for operators (``GET /api/shop/orders.csv``): the shipping list.

Newest first, filtered by broadcast and state, at most ``limit`` rows, written page by
page (500 orders a query) to a streamed response. Recipients are **masked** unless the
operator asks ``recipients=full`` (the shipping list: each export that reveals them is
logged with who asked and how many rows; the data itself never goes to the log). Cells
that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``) are
prefixed with ``'``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from typing import Any

from shop_bridge.recipients import KeyError_, Recipients, order_aad
from shop_bridge.views import iso, masked_recipient

__all__ = ["COLUMNS", "export_rows"]

logger = logging.getLogger(__name__)

COLUMNS = (
    "order_id",
    "created_at",
    "paid_at",
    "state",
    "kind",
    "user_id",
    "broadcast_id",
    "product_id",
    "sku_id",
    "quantity",
    "amount_fen",
    "sharer_id",
    "recipient_name",
    "recipient_phone",
    "recipient_address",
)
PAGE = 500


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


async def export_rows(
    recipients: Recipients,
    *,
    broadcast_id: str | None,
    state: str | None,
    limit: int,
    full: bool,
    actor: str,
) -> AsyncIterator[bytes]:
    """The CSV, header first, in chunks of one page."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    yield buf.getvalue().encode()
    book = recipients.ctx.book
    after: tuple[int, str] | None = None
    sent = unreadable = 0
    while sent < limit:
        page = await book.list_orders(
            broadcast_id=broadcast_id, state=state, limit=min(PAGE, limit - sent), after=after
        )
        if not page:
            break
        buf = io.StringIO()
        writer = csv.writer(buf)
        for o in page:
            r: dict[str, str] | None = masked_recipient(o)
            if full and o.get("recipient"):
                try:
                    r = recipients.sealer.open_recipient(
                        o["recipient"], order_aad(o["id"])
                    ).as_dict()
                except KeyError_:
                    unreadable += 1
                    r = {"name": "?", "phone": "?", "address": "(unreadable: see the log)"}
            r = r or {}
            writer.writerow(
                _cell(v)
                for v in (
                    o["id"],
                    iso(o["created_ms"]),
                    iso(o["paid_ms"]),
                    o["state"],
                    o["kind"],
                    o["user_id"],
                    o["broadcast_id"],
                    o["product_id"],
                    o["sku_id"],
                    o["quantity"],
                    o["amount_fen"],
                    o.get("sharer_id"),
                    r.get("name"),
                    r.get("phone"),
                    r.get("address"),
                )
            )
        sent += len(page)
        after = (page[-1]["created_ms"], page[-1]["id"])
        yield buf.getvalue().encode()
        if len(page) < PAGE:
            break
    if full:
        logger.info(
            "orders export with full recipients by %s: %d rows (%d unreadable)",
            actor,
            sent,
            unreadable,
        )
