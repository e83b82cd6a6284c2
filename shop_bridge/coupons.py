"""Coupons an operator gives directly (``POST /api/coupons``): to one buyer or a batch.

Lottery prizes give coupons too (:mod:`shop_bridge.prizes`); a buyer spends one at checkout
(:func:`shop_bridge.checkout.take_coupon`). A batch is one transaction (all or nothing).

``idempotency_key`` makes a repeated request (a double click, a retry after a timeout)
answer the coupons of the first instead of giving them twice. The key is recorded in
``shop_coupon_batches`` (its primary key) in the batch's own transaction, with a
fingerprint of what was asked (the users as a set, the value, the broadcast, the note);
each coupon's id is derived from the key and the user, and ids are primary keys. So:

* an exact repeat (the same fingerprint; the users in any order) answers the first
  batch's coupons and creates nothing (``created: false``, HTTP 200);
* a repeat with anything else (other users, another value...) is refused, 409
  ``idempotency_key_reused``, and creates nothing: a key names one request, never "the
  first request's coupons plus whatever is new" (Stripe's rule);
* a key used before the batches were recorded (migration 0009) counts as an exact repeat
  only if every user named already holds its coupon from that key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import BigInteger, Column, Integer, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from shop_bridge.context import ShopContext, new_id
from shop_bridge.errors import conflict
from shop_bridge.models import COUPONS, Base
from shop_bridge.views import iso

__all__ = ["COUPON_BATCHES", "MAX_BATCH", "Coupons", "coupon_view"]

MAX_BATCH = 1000

COUPON_BATCHES = Table(
    "shop_coupon_batches",
    Base.metadata,
    Column("idempotency_key", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("users", Integer, nullable=False),
    Column("actor", String(64), nullable=False, server_default=""),
    Column("created_ms", BigInteger, nullable=False),
)
"""One row per idempotency key a batch was given under (schema: migration 0009)."""


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


def fingerprint(user_ids: list[str], value_fen: int, broadcast_id: str, note: str) -> str:
    """What a batch asks for, as 64 hex digits (the users as a set: their order in the
    list changes nothing given)."""
    what = [sorted(user_ids), value_fen, broadcast_id, note]
    return hashlib.sha256(json.dumps(what, separators=(",", ":")).encode()).hexdigest()


def _reused(key: str) -> Exception:
    return conflict(
        "idempotency_key_reused",
        f"idempotency_key {key!r} was used for another coupon batch (other users, value, "
        "broadcast or note); repeat that request exactly, or use a new key for a new batch",
        idempotency_key=key,
    )


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
        """One coupon of ``value_fen`` per user; (coupons, created now). A repeat of
        ``idempotency_key``: the first batch's coupons, or 409 ``idempotency_key_reused``
        if it asked for something else (module docstring)."""
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
        asked = fingerprint(user_ids, value_fen, broadcast_id, note)
        try:
            async with self.ctx.engine.begin() as conn:
                if idempotency_key is not None:
                    await conn.execute(
                        insert(COUPON_BATCHES).values(
                            idempotency_key=idempotency_key,
                            fingerprint=asked,
                            users=len(user_ids),
                            actor=actor[:64],
                            created_ms=now,
                        )
                    )
                await conn.execute(insert(COUPONS), rows)
        except IntegrityError:
            if idempotency_key is None:
                raise
            return await self._repeat(idempotency_key, asked, rows), False
        return [coupon_view(r) for r in rows], True

    async def _repeat(
        self, key: str, asked: str, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The first batch's coupons for an exact repeat of ``key``; 409 otherwise."""
        ids = [r["id"] for r in rows]
        async with self.ctx.engine.connect() as conn:
            first = (
                await conn.execute(
                    select(COUPON_BATCHES.c.fingerprint).where(
                        COUPON_BATCHES.c.idempotency_key == key
                    )
                )
            ).scalar_one_or_none()
            found = {
                r["id"]: coupon_view(dict(r))
                for r in (await conn.execute(select(COUPONS).where(COUPONS.c.id.in_(ids))))
                .mappings()
                .all()
            }
        if first is not None and first != asked:
            raise _reused(key)
        if len(found) != len(ids):  # a key from before the batches were recorded
            raise _reused(key)
        return [found[i] for i in ids]
