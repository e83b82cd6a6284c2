"""Upkeep: what runs without a caller. Payment timeouts, settling ended sales, pruning
the notification log (the sweep); repairing Redis against the database after a crash
(reconciliation); comparing the two for one sale (the audit).

The database is the record of truth: reconciliation completes or gives back reservations
a crash left in a sale's journal, returns the stock of cancellations that did not get it
back, and makes a sale's Redis meta match its row. It runs at startup, before buys are
taken, and every ``reconcile_interval``; the sweep every ``sweep_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import select

from shop_bridge import payments
from shop_bridge.checkout import Checkout
from shop_bridge.context import ShopContext
from shop_bridge.errors import ProviderUnavailable, ShopError, not_found
from shop_bridge.flash import FlashSales
from shop_bridge.models import ORDERS, SALES
from shop_bridge.order_rows import EXISTS
from shop_bridge.payment_notices import PaymentNotices
from shop_bridge.sale_admin import FlashSaleAdmin
from shop_bridge.state import IllegalTransition, OrderState

logger = logging.getLogger(__name__)


class Upkeep:
    """The sweep, reconciliation and audits (and the tasks that run them periodically)."""

    def __init__(
        self,
        ctx: ShopContext,
        flash: FlashSales,
        sale_admin: FlashSaleAdmin,
        checkout: Checkout,
        notices: PaymentNotices,
    ) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.flash = flash
        self.sale_admin = sale_admin
        self.checkout = checkout
        self.notices = notices
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, background: bool = True) -> None:
        """Reconcile once (before buys are taken), then, with ``background``, start the
        periodic sweep and reconciliation."""
        try:
            report = await self.reconcile()
            if report["completed"] or report["restored"] or report["released"]:
                logger.warning("startup reconciliation: %s", report)
        except Exception:
            logger.exception("startup reconciliation failed; the periodic one will retry")
        if background:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._sweep_loop(), name="shop:sweeper"))
            self._tasks.append(loop.create_task(self._reconcile_loop(), name="shop:reconcile"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("payment timeout sweep failed")

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:
                logger.exception("reconciliation failed")

    async def sweep(self) -> dict[str, int]:
        """Cancel unpaid orders past their deadline, each only after the provider closed it."""
        now = self.ctx.now_ms()
        report = {"cancelled": 0, "paid": 0, "skipped": 0, "refunded": 0}
        report["settled"] = await self.sale_admin.settle_due(self.ctx.config.sweep_batch)
        report["pruned"] = await self.notices.prune()
        async with self.ctx.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ORDERS)
                    .where(
                        ORDERS.c.state == OrderState.PENDING_PAYMENT.value,
                        ORDERS.c.expires_ms <= now,
                    )
                    .order_by(ORDERS.c.expires_ms)
                    .limit(self.ctx.config.sweep_batch)
                )
            ).mappings()
            expired = [dict(r) for r in rows]
        for order in expired:
            try:
                moved = await self.checkout.close_and_cancel(order, "timeout", "payment timeout")
            except (ShopError, IllegalTransition) as exc:
                report["skipped"] += 1
                logger.info("timeout of %s skipped: %s", order["id"], exc)
                continue
            report["cancelled" if moved["state"] == OrderState.CANCELLED.value else "paid"] += 1
        async with self.ctx.engine.connect() as conn:
            refunding = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(ORDERS)
                        .where(ORDERS.c.state == OrderState.REFUNDING.value)
                        .limit(self.ctx.config.sweep_batch)
                    )
                ).mappings()
            ]
        for order in refunding:
            try:
                result = await self.checkout.provider.query(order["id"])
            except ProviderUnavailable:
                continue
            if result.state == payments.REFUND:
                with contextlib.suppress(IllegalTransition):
                    await self.ctx.book.move(
                        order["id"], OrderState.REFUNDED, "sweeper", "provider refunded"
                    )
                    report["refunded"] += 1
            elif await self.checkout.try_refund(order, "sweeper"):
                report["refunded"] += 1
        return report

    async def reconcile(self) -> dict[str, Any]:
        """Match Redis reservations with DB orders; repair what a crash left behind.

        For each flash sale still live in Redis: reservations in the journal older than
        ``reservation_grace`` whose order is missing are completed (written as pending
        orders while they can still be paid) or given back (a cancelled tombstone is
        written first, so a late original write cannot also succeed). Cancelled orders
        whose stock was not yet returned are returned (idempotently).
        """
        now = self.ctx.now_ms()
        report: dict[str, Any] = {"completed": 0, "restored": 0, "released": 0, "mismatch": []}
        horizon = now - (self.ctx.config.payment_timeout + self.ctx.config.sale_retention) * 1000
        async with self.ctx.engine.connect() as conn:
            sales = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(SALES)
                        .where(SALES.c.ends_ms >= horizon)
                        .order_by(SALES.c.id)
                        .limit(1000)
                    )
                ).mappings()
            ]
        grace = int(self.ctx.config.reservation_grace * 1000)
        for sale in sales:
            snap = await self.store.snapshot(sale["id"])
            if not snap.loaded:
                await self.flash.load(sale)
                continue
            await self.sale_admin.sync(sale["id"])
            ctx = await self.flash.sale_ctx(sale["id"])
            if ctx is None:
                continue
            done: list[str] = []
            for order_id, entry in snap.journal.items():
                if now - int(entry.get("t", 0)) < grace:
                    continue
                if await self.ctx.book.get(order_id) is not None:
                    done.append(order_id)
                    continue
                if int(entry["t"]) + self.ctx.config.payment_timeout * 1000 > now:
                    row = self.flash.order_row(ctx, order_id, entry, OrderState.PENDING_PAYMENT)
                    out = await self.ctx.book.insert_orders(
                        [row], actor="reconciler", reason="completed after a crash"
                    )
                    if out[0] != EXISTS:
                        report["completed"] += 1
                        await self.ctx.book.publish_created([row])
                        logger.warning("reconciliation completed order %s", order_id)
                    done.append(order_id)
                else:
                    row = self.flash.order_row(ctx, order_id, entry, OrderState.CANCELLED)
                    row["updated_ms"] = now
                    out = await self.ctx.book.insert_orders(
                        [row], actor="reconciler", reason="reservation never confirmed"
                    )
                    existing = await self.ctx.book.get(order_id)
                    if existing is not None and await self.ctx.book.release_stock(existing):
                        report["restored"] += 1
                        logger.warning("reconciliation gave back the stock of %s", order_id)
                    if existing is not None and existing["state"] != OrderState.CANCELLED.value:
                        done.append(order_id)
            if done:
                await self.store.forget_journal({sale["id"]: done})
        for order in await self.ctx.book.unreleased_cancellations():
            if await self.ctx.book.release_stock(order):
                report["released"] += 1
        for sale in sales:
            audit = await self.audit_sale(sale["id"])
            if audit["loaded"] and not audit["consistent"]:
                report["mismatch"].append(audit)
                logger.error("flash sale %s: Redis and DB disagree: %s", sale["id"], audit)
        return report

    async def audit_sale(self, sale_id: int) -> dict[str, Any]:
        """Compare Redis stock and per-user counts with the orders in the database."""
        sale = await self.flash.sale_row(sale_id)
        if sale is None:
            raise not_found("flash_sale", sale_id)
        snap = await self.store.snapshot(sale_id)
        holders = await self.flash.holders(sale_id)
        held_ids = {h["id"] for h in holders}
        db_held = sum(h["quantity"] for h in holders if not h["stock_released"])
        to_sku = sum(h["quantity"] for h in holders if h["stock_released"])
        returned = (sale["returned_stock"] or 0) if sale["settled_ms"] is not None else 0
        in_flight = sum(
            int(e.get("q", 0)) for oid, e in snap.journal.items() if oid not in held_ids
        )
        per_user: dict[str, int] = {}
        for h in holders:
            per_user[h["user_id"]] = per_user.get(h["user_id"], 0) + h["quantity"]
        for oid, e in snap.journal.items():
            if oid not in held_ids:
                per_user[str(e.get("u"))] = per_user.get(str(e.get("u")), 0) + int(e.get("q", 0))
        consistent = (
            snap.stock + db_held + in_flight + returned + to_sku == sale["sale_stock"]
            and per_user == snap.users
        )
        return {
            "flash_sale_id": sale_id,
            "loaded": snap.loaded,
            "sale_stock": sale["sale_stock"],
            "redis_stock": snap.stock,
            "db_held": db_held,
            "in_flight": in_flight,
            "returned_at_settlement": returned,
            "returned_to_sku": to_sku,
            "users_over_limit": sorted(
                u for u, q in per_user.items() if q > sale["per_user_limit"]
            ),
            "consistent": consistent,
        }
