"""Coupons an operator gives directly (``POST /api/coupons``): to one buyer or a batch.

Lottery prizes give coupons too (:mod:`shop_bridge.prizes`); a buyer spends one at checkout
(:func:`shop_bridge.checkout.take_coupon`). A batch is one transaction (all or nothing);
``idempotency_key`` makes a repeated request (a double click, a retry after a timeout)
answer the coupons of the first instead of giving them twice: each coupon's id is derived
from the key and the user, and ids are primary keys.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from shop_bridge.context import ShopContext, new_id
from shop_bridge.models import COUPONS
from shop_bridge.views import iso

MAX_BATCH = 1000


def coupon_view(c: dict[str, Any]) -> dict[str, Any]:
    from shop_bridge.broadcast_ids import to_wire

    return {
        "id": c["id"],
        "user_id": c["user_id"],
        "value_fen": c["value_fen"],
        "broadcast_id": to_wire(c["broadcast_id"]),
        "source": c["source"],
        "created_at": iso(c["created_ms"]),
        "used_order_id": c["used_order_id"],
    }


class Coupons:
    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    async def issue(
        self,
        user_ids: list[str],
        value_fen: int,
        broadcast_id: str,
        note: str,
        actor: str,
        idempotency_key: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One coupon of ``value_fen`` per user; (coupons, created now)."""
        now = self.ctx.now_ms()

        def coupon_id(user: str) -> str:
            if idempotency_key is None:
                return new_id()
            digest = hashlib.sha256(f"{idempotency_key}\0{user}".encode()).hexdigest()
            return "c" + digest[:31]

        rows = [
            {
                "id": coupon_id(u),
                "user_id": u,
                "value_fen": value_fen,
                "broadcast_id": broadcast_id,
                "source": f"operator {actor[:40]}: {note}"[:200]
                if note
                else f"operator {actor[:40]}",
                "created_ms": now,
                "used_order_id": None,
            }
            for u in user_ids
        ]
        try:
            async with self.ctx.engine.begin() as conn:
                await conn.execute(insert(COUPONS), rows)
        except IntegrityError:
            if idempotency_key is None:
                raise
            async with self.ctx.engine.connect() as conn:
                found = (
                    await conn.execute(
                        select(COUPONS).where(COUPONS.c.id.in_([r["id"] for r in rows]))
                    )
                ).mappings()
                return [coupon_view(dict(r)) for r in found], False
        return [coupon_view(r) for r in rows], True
