"""Sales reports: what a broadcast sold, per product and in total (read-only).

Every figure follows the one definition in :mod:`shop_bridge.gmv` (GMV net of refunds,
lottery prize orders excluded); the totals are :func:`shop_bridge.gmv.figures` itself, so
the report agrees with the live panel, the series, ``/metrics`` and ``sales.updated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import case, func, select

from core.bus import Event
from shop_bridge import gmv
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.context import ShopContext, stop_worker
from shop_bridge.events import SalesUpdated
from shop_bridge.models import CARDS, ORDERS
from shop_bridge.state import OrderState

logger = logging.getLogger(__name__)

SALES_EVENT_INTERVAL = 1.0
"""Seconds between two ``sales.updated`` events of one broadcast (at most)."""
MAX_DIRTY = 10_000


class SalesUpdates:
    """Publish ``sales.updated`` for the broadcasts whose orders this node moved into
    ``paid`` or ``refunded`` (coalesced: at most one event per broadcast per
    :data:`SALES_EVENT_INTERVAL`; only the node that made the move publishes)."""

    TOPICS = ("order.paid", "order.refunded", "refund.completed")

    def __init__(self, ctx: ShopContext, reports: Reports) -> None:
        self.ctx = ctx
        self.reports = reports
        self.dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsub: list[Callable[[], None]] = []

    def on_order_event(self, event: Event) -> None:
        if event.node != self.ctx.bus.node:
            return  # another node moved it: that node publishes
        bid = event.data.get("broadcast_id")
        if event.data.get("kind") == "prize" or bid in (None, ""):
            return
        if len(self.dirty) < MAX_DIRTY:
            self.dirty.add(str(bid))
            self._wake.set()

    def start(self) -> None:
        self._unsub = [self.ctx.bus.subscribe(t, self.on_order_event) for t in self.TOPICS]
        self._task = asyncio.get_running_loop().create_task(self._run(), name="shop:sales")

    async def stop(self) -> None:
        await stop_worker(self._unsub, self._task)
        self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sales.updated not published")
            await asyncio.sleep(SALES_EVENT_INTERVAL)

    async def flush(self) -> None:
        """Publish the figures of every broadcast marked since the last flush."""
        ids, self.dirty = sorted(self.dirty), set()
        if not ids:
            return
        figs = await self.reports.figures(ids)
        ts = self.ctx.clock()
        events = [
            SalesUpdated(broadcast_id=int(bid), ts=ts, **f.as_dict())
            for bid, f in figs.items()
            if bid.isascii() and bid.isdigit()
        ]
        if events:
            await self.ctx.bus.emit(*events)


class Reports:
    """Sales figures of broadcasts."""

    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    async def figures(self, broadcast_ids: list[str]) -> dict[str, gmv.Figures]:
        """GMV, orders, buyers and refunds of each broadcast (:mod:`shop_bridge.gmv`)."""
        async with self.ctx.engine.connect() as conn:
            return await gmv.figures(conn, broadcast_ids)

    async def sales(self, broadcast_id: str) -> dict[str, Any]:
        """A broadcast's figures, in total and per product: GMV, orders, buyers, refunds,
        how long each product was explained and how many orders came while it was."""
        now_ms = self.ctx.now_ms()
        o = ORDERS.c
        counted = gmv.order_counts()
        not_prize = o.kind != gmv.PRIZE_KIND
        async with self.ctx.engine.connect() as conn:
            totals = (await gmv.figures(conn, [broadcast_id]))[broadcast_id]
            per_product = (
                await conn.execute(
                    select(
                        o.product_id,
                        func.coalesce(func.sum(case((gmv.is_sale(), o.amount_fen), else_=0)), 0),
                        func.coalesce(
                            func.sum(case((gmv.is_sale(), gmv.refunded_amount()), else_=0)), 0
                        ),
                        func.coalesce(func.sum(case((counted, 1), else_=0)), 0),
                        func.coalesce(func.sum(case((counted, o.quantity), else_=0)), 0),
                        func.count(func.distinct(case((counted, o.user_id), else_=None))),
                        func.coalesce(func.sum(case((not_prize, 1), else_=0)), 0),
                        func.coalesce(
                            func.sum(
                                case(
                                    (
                                        not_prize & (o.state == OrderState.CANCELLED.value),
                                        1,
                                    ),
                                    else_=0,
                                )
                            ),
                            0,
                        ),
                        func.coalesce(func.sum(case((~not_prize, 1), else_=0)), 0),
                        func.coalesce(
                            func.sum(
                                case((counted & (o.card_product_id == o.product_id), 1), else_=0)
                            ),
                            0,
                        ),
                    )
                    .where(o.broadcast_id == broadcast_id)
                    .group_by(o.product_id)
                )
            ).all()
            any_card = (
                await conn.execute(
                    select(func.count()).where(
                        o.broadcast_id == broadcast_id, counted, o.card_id.is_not(None)
                    )
                )
            ).scalar_one()
            placed_total, cancelled_total, prizes_total = (
                await conn.execute(
                    select(
                        func.coalesce(func.sum(case((not_prize, 1), else_=0)), 0),
                        func.coalesce(
                            func.sum(
                                case(
                                    (not_prize & (o.state == OrderState.CANCELLED.value), 1),
                                    else_=0,
                                )
                            ),
                            0,
                        ),
                        func.coalesce(func.sum(case((~not_prize, 1), else_=0)), 0),
                    ).where(o.broadcast_id == broadcast_id)
                )
            ).one()
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
        products: dict[int, dict[str, Any]] = {}

        def entry(pid: int) -> dict[str, Any]:
            return products.setdefault(
                pid,
                {
                    "product_id": pid,
                    "gmv_fen": 0,
                    "paid_fen": 0,
                    "refunded_fen": 0,
                    "orders": 0,
                    "units": 0,
                    "buyers": 0,
                    "orders_placed": 0,
                    "cancelled": 0,
                    "prizes": 0,
                    "times_explained": 0,
                    "explained_seconds": 0.0,
                    "card_orders": 0,
                },
            )

        for (
            pid,
            paid,
            refunded,
            orders,
            units,
            buyers,
            placed,
            cancelled,
            prizes,
            card,
        ) in per_product:
            e = entry(int(pid))
            e.update(
                paid_fen=int(paid),
                refunded_fen=int(refunded),
                gmv_fen=int(paid) - int(refunded),
                orders=int(orders),
                units=int(units),
                buyers=int(buyers),
                orders_placed=int(placed),
                cancelled=int(cancelled),
                prizes=int(prizes),
                card_orders=int(card),
            )
        for pid, count, ms in cards:
            e = entry(int(pid))
            e["times_explained"] = int(count)
            e["explained_seconds"] = round(int(ms) / 1000, 3)
        for e in products.values():
            e["card_conversion"] = round(e["card_orders"] / e["orders"], 4) if e["orders"] else 0.0
            e["orders_per_explain"] = (
                round(e["card_orders"] / e["times_explained"], 4) if e["times_explained"] else 0.0
            )
        return {
            "broadcast_id": to_wire(broadcast_id),
            **totals.as_dict(),
            "orders_placed": int(placed_total),
            "cancelled": int(cancelled_total),
            "prizes": int(prizes_total),
            "card_orders": int(any_card),
            "card_conversion": round(int(any_card) / totals.orders, 4) if totals.orders else 0.0,
            "definition": "docs/shop.md#gmv-orders-and-buyers",
            "products": sorted(products.values(), key=lambda e: -e["gmv_fen"]),
        }
