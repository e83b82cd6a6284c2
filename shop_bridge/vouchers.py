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

from sqlalchemy import Select, select, update

from shop_bridge.context import ShopContext
from shop_bridge.errors import ShopError, not_found
from shop_bridge.models import COUPONS, GRANTS, ORDERS, PRODUCTS

__all__ = ["CODE_ALPHABET", "PRIZE_STATES", "Vouchers", "new_code"]

CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""No 0/O, 1/I: read aloud or typed from a phone screen without mistakes."""
CODE_LENGTH = 12


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize(code: str) -> str:
    """What an operator types: case, spaces and dashes do not matter."""
    return "".join(code.split()).replace("-", "").upper()


PRIZE_STATES = (
    "owed",
    "to_ship",
    "shipped",
    "delivered",
    "granted",
    "used",
    "redeemed",
    "failed_no_stock",
    "cancelled",
    "refunded",
)
"""What an operator does next about a prize (``state`` of :func:`grant_view`): ``owed``
(a manual prize to hand out, a voucher not redeemed yet), ``to_ship`` (a product prize's
order is paid, not shipped), ``shipped``, ``delivered`` (its order completed), ``granted``
(a coupon not used yet), ``used`` (the coupon paid an order), ``redeemed`` (a voucher),
``failed_no_stock`` (the SKU had none left: nothing was given), ``cancelled`` / ``refunded``
(the prize order was)."""

_ORDER_STATES = {
    "paid": "to_ship",
    "shipped": "shipped",
    "completed": "delivered",
    "refunding": "refunded",
    "refunded": "refunded",
    "cancelled": "cancelled",
    "pending_payment": "to_ship",
}


def prize_state(row: Any) -> str:
    status = row["status"]
    if status == "failed_no_stock":
        return "failed_no_stock"
    kind = row["kind"]
    if kind == "voucher":
        return "redeemed" if row["redeemed_ms"] else "owed"
    if kind == "product":
        return _ORDER_STATES.get(row["order_state"] or "", "owed")
    if kind == "coupon":
        return "used" if row["coupon_used_order_id"] else "granted"
    return "owed"  # manual: the operators hand it out


def prize_name(row: Any) -> str:
    """The lottery's name for the prize; for grants from before it was kept: the product
    prize's product, the coupon's value."""
    if row["name"]:
        return str(row["name"])
    if row["product_title"]:
        return str(row["product_title"])
    if row["coupon_value_fen"]:
        return f"¥{int(row['coupon_value_fen']) / 100:.2f} coupon"
    return ""


def grant_view(row: Any) -> dict[str, Any]:
    return {
        "grant_key": row["grant_key"],
        "lottery_id": row["lottery_id"],
        "user_id": row["user_id"],
        "name": prize_name(row),
        "kind": row["kind"],
        "status": row["status"],
        "state": prize_state(row),
        "coupon_id": row["coupon_id"],
        "order_id": row["order_id"],
        "order_state": row["order_state"],
        "code": row["code"],
        "redeemed_ms": row["redeemed_ms"],
        "created_ms": row["created_ms"],
    }


def _with_details() -> Select[Any]:
    """Grants with their order's state and product, their coupon's value and use."""
    return select(
        GRANTS,
        ORDERS.c.state.label("order_state"),
        PRODUCTS.c.title.label("product_title"),
        COUPONS.c.value_fen.label("coupon_value_fen"),
        COUPONS.c.used_order_id.label("coupon_used_order_id"),
    ).select_from(
        GRANTS.outerjoin(ORDERS, ORDERS.c.id == GRANTS.c.order_id)
        .outerjoin(PRODUCTS, PRODUCTS.c.id == ORDERS.c.product_id)
        .outerjoin(COUPONS, COUPONS.c.id == GRANTS.c.coupon_id)
    )


class Vouchers:
    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    async def prizes_of(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """A winner's prizes, newest first (vouchers with their code)."""
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                _with_details()
                .where(GRANTS.c.user_id == user_id)
                .order_by(GRANTS.c.created_ms.desc(), GRANTS.c.grant_key)
                .limit(limit)
            )
            return [grant_view(r) for r in rows.mappings()]

    async def listing(
        self, *, lottery_id: str | None, user_id: str | None, state: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Prizes for the operators, newest first: all, of one lottery and/or one winner;
        with ``state`` (:data:`PRIZE_STATES`) those in that state among the newest
        ``10 * limit`` (at most 2000) read."""
        q = _with_details()
        if lottery_id is not None:
            q = q.where(GRANTS.c.lottery_id == lottery_id)
        if user_id is not None:
            q = q.where(GRANTS.c.user_id == user_id)
        q = q.order_by(GRANTS.c.created_ms.desc(), GRANTS.c.grant_key)
        q = q.limit(min(10 * limit, 2000) if state else limit)
        async with self.ctx.engine.connect() as conn:
            views = [grant_view(r) for r in (await conn.execute(q)).mappings()]
        if state is not None:
            views = [v for v in views if v["state"] == state]
        return views[:limit]

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
                (await conn.execute(_with_details().where(GRANTS.c.code == code)))
                .mappings()
                .first()
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
