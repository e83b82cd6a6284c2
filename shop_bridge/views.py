"""The JSON the shop answers with and publishes: one function per resource.

Rows from the database (dicts of column values) become API views here, and nowhere else:
times as ISO 8601 UTC with milliseconds, internal columns left out.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from shop_bridge.broadcast_ids import to_wire


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    seconds, rest = divmod(ms, 1000)
    return f"{iso_second(seconds)}.{rest:03d}Z"


@functools.lru_cache(maxsize=4096)
def iso_second(seconds: int) -> str:
    """The UTC time of a Unix second (orders of a burst share a few: cached)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def sku_view(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": s["id"],
        "product_id": s["product_id"],
        "code": s["code"],
        "specs": s["specs"],
        "price_fen": s["price_fen"],
        "stock": s["stock"],
    }


def product_view(p: dict[str, Any], skus: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": p["id"],
        "title": p["title"],
        "description": p["description"],
        "images": p["images"],
        "page_path": p["page_path"],
        "created_at": iso(p["created_ms"]),
        "updated_at": iso(p["updated_ms"]),
        "skus": [sku_view(s) for s in skus],
    }


def card_view(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "broadcast_id": to_wire(c["broadcast_id"]),
        "room": c["room"],
        "product_id": c["product_id"],
        "sku_id": c["sku_id"],
        "flash_sale_id": c["flash_sale_id"],
        "pushed_by": c["actor"],
        "pushed_at": iso(c["pushed_ms"]),
        "cleared_at": iso(c["cleared_ms"]),
        "cleared_by": c["cleared_by"] or None,
    }


def sale_view(s: dict[str, Any], remaining: int | None, now_ms: int) -> dict[str, Any]:
    if s.get("closed_ms") is not None:
        status = "closed"
    elif now_ms < s["starts_ms"]:
        status = "scheduled"
    elif now_ms >= s["ends_ms"]:
        status = "ended"
    else:
        status = "sold_out" if remaining == 0 else "open"
    return {
        "id": s["id"],
        "broadcast_id": to_wire(s["broadcast_id"]),
        "product_id": s["product_id"],
        "sku_id": s["sku_id"],
        "sale_price_fen": s["sale_price_fen"],
        "sale_stock": s["sale_stock"],
        "remaining": remaining,
        "per_user_limit": s["per_user_limit"],
        "starts_at": iso(s["starts_ms"]),
        "ends_at": iso(s["ends_ms"]),
        "status": status,
        "closed_at": iso(s.get("closed_ms")),
        "closed_by": s.get("closed_by") or None,
        "settled_at": iso(s.get("settled_ms")),
        "returned_stock": s.get("returned_stock", 0) if s.get("carved", True) else 0,
    }


def order_view(o: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": o["id"],
        "kind": o["kind"],
        "state": o["state"],
        "user_id": o["user_id"],
        "product_id": o["product_id"],
        "sku_id": o["sku_id"],
        "flash_sale_id": o["flash_sale_id"],
        "quantity": o["quantity"],
        "unit_price_fen": o["unit_price_fen"],
        "amount_fen": o["amount_fen"],
        "discount_fen": o.get("discount_fen") or 0,
        "refunded_fen": int(o.get("refunded_fen") or 0),
        "coupon_id": o.get("coupon_id"),
        "broadcast_id": to_wire(o["broadcast_id"]),
        "anchor_id": o["anchor_id"],
        "card_id": o["card_id"],
        "channel": o["channel"],
        "created_at": iso(o["created_ms"]),
        "pay_before": iso(o["expires_ms"]),
        "paid_at": iso(o["paid_ms"]),
        "transaction_id": o["transaction_id"] or None,
        "recipient": masked_recipient(o),
        "sharer_id": o.get("sharer_id"),
    }


def masked_recipient(o: dict[str, Any]) -> dict[str, str] | None:
    """The order's recipient as everyone but a shipping operator sees it (masked)."""
    raw = o.get("recipient_masked")
    return json.loads(raw) if raw else None
