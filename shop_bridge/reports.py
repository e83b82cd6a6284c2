"""Sales reports: what a broadcast sold, per product and in total (read-only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, select

from shop_bridge.context import ShopContext
from shop_bridge.models import CARDS, ORDERS
from shop_bridge.state import PAID_STATES, OrderState


class Reports:
    """Sales figures of broadcasts."""

    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    async def sales(self, broadcast_id: str) -> dict[str, Any]:
        """A broadcast's figures, in total and per product: GMV, orders, buyers, refunds,
        how long each product was explained and how many orders came while it was."""
        now_ms = self.ctx.now_ms()
        paid = [s.value for s in PAID_STATES]
        o = ORDERS
        async with self.ctx.engine.connect() as conn:
            per_state = (
                await conn.execute(
                    select(
                        o.c.product_id,
                        o.c.state,
                        func.count(),
                        func.coalesce(func.sum(o.c.amount_fen), 0),
                        func.coalesce(func.sum(o.c.quantity), 0),
                    )
                    .where(o.c.broadcast_id == broadcast_id)
                    .group_by(o.c.product_id, o.c.state)
                )
            ).all()
            card_orders = (
                await conn.execute(
                    select(o.c.product_id, func.count())
                    .where(
                        o.c.broadcast_id == broadcast_id,
                        o.c.state.in_(paid),
                        o.c.card_product_id == o.c.product_id,
                    )
                    .group_by(o.c.product_id)
                )
            ).all()
            buyers_total = (
                await conn.execute(
                    select(func.count(func.distinct(o.c.user_id))).where(
                        o.c.broadcast_id == broadcast_id, o.c.state.in_(paid)
                    )
                )
            ).scalar_one()
            buyers_by_product = (
                await conn.execute(
                    select(o.c.product_id, func.count(func.distinct(o.c.user_id)))
                    .where(o.c.broadcast_id == broadcast_id, o.c.state.in_(paid))
                    .group_by(o.c.product_id)
                )
            ).all()
            cards = (
                await conn.execute(
                    select(
                        CARDS.c.product_id,
                        func.count(),
                        func.coalesce(
                            func.sum(func.coalesce(CARDS.c.cleared_ms, now_ms) - CARDS.c.pushed_ms),
                            0,
                        ),
                    )
                    .where(CARDS.c.broadcast_id == broadcast_id)
                    .group_by(CARDS.c.product_id)
                )
            ).all()
            any_card = (
                await conn.execute(
                    select(func.count()).where(
                        and_(
                            o.c.broadcast_id == broadcast_id,
                            o.c.state.in_(paid),
                            o.c.card_id.is_not(None),
                        )
                    )
                )
            ).scalar_one()
        products: dict[int, dict[str, Any]] = {}

        def entry(pid: int) -> dict[str, Any]:
            return products.setdefault(
                pid,
                {
                    "product_id": pid,
                    "gmv_fen": 0,
                    "orders": 0,
                    "units": 0,
                    "orders_placed": 0,
                    "cancelled": 0,
                    "refunded_fen": 0,
                    "buyers": 0,
                    "times_explained": 0,
                    "explained_seconds": 0.0,
                    "card_orders": 0,
                },
            )

        for pid, state, count, amount, units in per_state:
            e = entry(int(pid))
            e["orders_placed"] += int(count)
            if state in paid:
                e["gmv_fen"] += int(amount)
                e["orders"] += int(count)
                e["units"] += int(units)
            elif state == OrderState.CANCELLED.value:
                e["cancelled"] += int(count)
            elif state == OrderState.REFUNDED.value:
                e["refunded_fen"] += int(amount)
        for pid, count in card_orders:
            entry(int(pid))["card_orders"] = int(count)
        for pid, count in buyers_by_product:
            entry(int(pid))["buyers"] = int(count)
        for pid, count, ms in cards:
            e = entry(int(pid))
            e["times_explained"] = int(count)
            e["explained_seconds"] = round(int(ms) / 1000, 3)
        for e in products.values():
            e["card_conversion"] = round(e["card_orders"] / e["orders"], 4) if e["orders"] else 0.0
            e["orders_per_explain"] = (
                round(e["card_orders"] / e["times_explained"], 4) if e["times_explained"] else 0.0
            )
        total_orders = sum(e["orders"] for e in products.values())
        return {
            "broadcast_id": broadcast_id,
            "gmv_fen": sum(e["gmv_fen"] for e in products.values()),
            "orders": total_orders,
            "orders_placed": sum(e["orders_placed"] for e in products.values()),
            "buyers": int(buyers_total),
            "refunded_fen": sum(e["refunded_fen"] for e in products.values()),
            "card_orders": int(any_card),
            "card_conversion": round(int(any_card) / total_orders, 4) if total_orders else 0.0,
            "products": sorted(products.values(), key=lambda e: -e["gmv_fen"]),
        }
