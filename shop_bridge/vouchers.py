"""A winner's prizes, and offline vouchers an operator redeems once.

A lottery prize of kind ``voucher`` (``shop_bridge.prizes``) is a grant row with a
redemption ``code`` (12 characters of an alphabet without look-alikes, ~60 bits). The
winner reads it among their prizes (``GET /api/users/{user_id}/prizes``) and shows it at
the counter; an operator redeems it (``POST /api/vouchers/redeem``): one conditional UPDATE,
so of two redemptions at once exactly one succeeds and the other is told when and by whom.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select, update

from shop_bridge.context import ShopContext
from shop_bridge.errors import ShopError, not_found
from shop_bridge.models import GRANTS

__all__ = ["CODE_ALPHABET", "Vouchers", "new_code"]

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""No 0/O, 1/I: read aloud or typed from a phone screen without mistakes."""
CODE_LENGTH = 12


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize(code: str) -> str:
    """What an operator types: case, spaces and dashes do not matter."""
    return "".join(code.split()).replace("-", "").upper()


def grant_view(row: Any) -> dict[str, Any]:
    return {
        "grant_key": row["grant_key"],
        "lottery_id": row["lottery_id"],
        "user_id": row["user_id"],
        "kind": row["kind"],
        "status": row["status"],
        "coupon_id": row["coupon_id"],
        "order_id": row["order_id"],
        "code": row["code"],
        "redeemed_ms": row["redeemed_ms"],
        "created_ms": row["created_ms"],
    }


class Vouchers:
    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    async def prizes_of(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """A winner's prizes, newest first (vouchers with their code)."""
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(GRANTS)
                .where(GRANTS.c.user_id == user_id)
                .order_by(GRANTS.c.created_ms.desc())
                .limit(limit)
            )
            return [grant_view(r) for r in rows.mappings()]

    async def redeem(self, raw_code: str, actor: str) -> dict[str, Any]:
        code = normalize(raw_code)
        if not 4 <= len(code) <= 32 or any(c not in CODE_ALPHABET for c in code):
            raise ShopError(400, "invalid_field", "code: not a voucher code", field="code")
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            done = await conn.execute(
                update(GRANTS)
                .where(
                    GRANTS.c.code == code,
                    GRANTS.c.kind == "voucher",
                    GRANTS.c.redeemed_ms.is_(None),
                )
                .values(redeemed_ms=now, redeemed_by=actor[:64], status="redeemed")
            )
            row = (
                (await conn.execute(select(GRANTS).where(GRANTS.c.code == code))).mappings().first()
            )
        if row is None:
            raise not_found("voucher", code)
        if done.rowcount != 1:
            raise ShopError(
                409,
                "already_redeemed",
                "this voucher was redeemed already",
                redeemed_ms=row["redeemed_ms"],
                redeemed_by=row["redeemed_by"],
            )
        return {**grant_view(row), "redeemed_by": row["redeemed_by"]}
