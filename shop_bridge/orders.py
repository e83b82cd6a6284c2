"""Order records: reading them, moving them between states, giving their stock back.

All state moves go through :meth:`OrderBook.move`, which checks the table in
:mod:`shop_bridge.state`, applies the move with ``UPDATE ... WHERE id = ? AND state = <from>``
(so two racing moves cannot both win), logs it in ``shop_order_transitions`` in the same
transaction, and publishes ``order.<state>`` after the commit.

New orders of the buy path are written by the group-commit writer
(:mod:`shop_bridge.order_writer`); :meth:`OrderBook.insert_orders` is the plain SQLAlchemy
path (reconciliation, and the writer on engines without a driver of their own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.bus import EventBus
from shop_bridge.events import OrderCreated, order_moved
from shop_bridge.models import BROADCASTS, COUPONS, ORDERS, SALES, SKUS, TRANSITIONS
from shop_bridge.order_rows import created_log, insert_batch_or_rows
from shop_bridge.redis_store import NOT_LOADED, RELEASED, SETTLED, FlashStore
from shop_bridge.state import IllegalTransition, OrderState, transition

logger = logging.getLogger(__name__)


class OrderBook:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        flash: FlashStore,
        clock: Callable[[], float] = time.time,
        loader: Callable[[int], Awaitable[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.flash = flash
        self.clock = clock
        self.loader = loader
        """Loads a flash sale into Redis from the database (when its keys are missing)."""

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- creation ------------------------------------------------------------------

    async def insert_orders(
        self, rows: list[dict[str, Any]], actor: str = "", reason: str = "placed"
    ) -> list[str]:
        """Insert orders with their "created" log rows (see :func:`insert_batch_or_rows`)."""
        if not rows:
            return []
        async with self.engine.connect() as conn:

            async def write(batch: list[dict[str, Any]]) -> None:
                async with conn.begin():
                    await conn.execute(insert(ORDERS), batch)
                    logs = [created_log(r, actor, reason) for r in batch]
                    await conn.execute(insert(TRANSITIONS), logs)

            return await insert_batch_or_rows(write, rows, IntegrityError)

    async def publish_created(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            await self.bus.emit(OrderCreated.of(row, row["user_id"]))

    # -- reading -------------------------------------------------------------------

    async def get(self, order_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(ORDERS).where(ORDERS.c.id == order_id))).mappings()
            first = row.first()
            return dict(first) if first is not None else None

    async def get_by_idem(self, user_id: str, key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            res = await conn.execute(
                select(ORDERS).where(ORDERS.c.user_id == user_id, ORDERS.c.idempotency_key == key)
            )
            first = res.mappings().first()
            return dict(first) if first is not None else None

    async def history(self, order_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            res = await conn.execute(
                select(TRANSITIONS)
                .where(TRANSITIONS.c.order_id == order_id)
                .order_by(TRANSITIONS.c.id)
            )
            return [dict(r) for r in res.mappings()]

    async def list_orders(
        self,
        *,
        user_id: str | None = None,
        broadcast_id: str | None = None,
        anchor_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        before_ms: int | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Orders, newest first. ``anchor_id`` keeps the orders of broadcasts whose anchor
        it is (the shop's broadcast -> anchor mapping, from control's events, not the
        order's own attribution); ``after`` is the ``(created_ms, id)`` of the last order
        of the previous page (pages never skip or repeat an order with the same time)."""
        o = ORDERS.c
        q = select(ORDERS).order_by(o.created_ms.desc(), o.id.desc()).limit(limit)
        if user_id is not None:
            q = q.where(o.user_id == user_id)
        if broadcast_id is not None:
            q = q.where(o.broadcast_id == broadcast_id)
        if anchor_id is not None:
            own = select(BROADCASTS.c.broadcast_id).where(BROADCASTS.c.anchor_id == anchor_id)
            q = q.where(o.broadcast_id.in_(own))
        if state is not None:
            q = q.where(o.state == state)
        if before_ms is not None:
            q = q.where(o.created_ms < before_ms)
        if after is not None:
            ms, oid = after
            q = q.where((o.created_ms < ms) | ((o.created_ms == ms) & (o.id < oid)))
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(q)).mappings()]

    # -- moving --------------------------------------------------------------------

    async def move(
        self,
        order_id: str,
        target: OrderState,
        actor: str,
        reason: str = "",
        values: dict[str, Any] | None = None,
        expect: OrderState | None = None,
    ) -> dict[str, Any]:
        """Move an order to ``target`` (raises IllegalTransition, LookupError if unknown).

        In the same transaction as the move: a cancellation gives the order's coupon back,
        and a completed refund of an order never cancelled nor shipped gives its units back
        to the SKU (``stock_released``, exactly once; a shipped order's goods left the
        warehouse). A cancellation's stock goes back after the
        commit (flash-sale stock lives in Redis) through :meth:`release_stock`.
        """
        current = OrderState.PENDING_PAYMENT
        for _attempt in range(3):
            order = await self.get(order_id)
            if order is None:
                raise LookupError(order_id)
            current = OrderState(order["state"])
            if expect is not None and current is not expect:
                raise IllegalTransition(current, target)
            transition(current, target)
            now = self.now_ms()
            changes = {"state": target.value, "updated_ms": now, **(values or {})}
            if target is OrderState.CANCELLED:
                changes["cancelled_ms"] = now
            elif current is OrderState.CANCELLED and order.get("cancelled_ms") is None:
                changes["cancelled_ms"] = order["updated_ms"]
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    update(ORDERS)
                    .where(ORDERS.c.id == order_id, ORDERS.c.state == current.value)
                    .values(**changes)
                )
                if res.rowcount != 1:
                    continue  # someone moved it first: re-read and re-check
                await conn.execute(
                    insert(TRANSITIONS).values(
                        order_id=order_id,
                        from_state=current.value,
                        to_state=target.value,
                        actor=actor[:64],
                        reason=reason[:200],
                        at_ms=now,
                    )
                )
                if target is OrderState.CANCELLED and order.get("coupon_id"):
                    await conn.execute(
                        update(COUPONS)
                        .where(
                            COUPONS.c.id == order["coupon_id"],
                            COUPONS.c.used_order_id == order_id,
                        )
                        .values(used_order_id=None)
                    )
                restocked = ""
                if (
                    target is OrderState.REFUNDED
                    and changes.get("cancelled_ms", order.get("cancelled_ms")) is None
                    and not await self._was_shipped(conn, order_id)
                ):
                    restocked = await self._restock_sku(conn, order)
            order.update(changes)
            if restocked:
                order["stock_released"], order["restock"] = True, restocked
            logger.info("order %s: %s -> %s by %s %s", order_id, current, target, actor, reason)
            await self.bus.emit(order_moved(target, order, actor))
            if target is OrderState.CANCELLED:
                await self.release_stock(order)
            return order
        raise IllegalTransition(current, target)

    async def _was_shipped(self, conn: Any, order_id: str) -> bool:
        """True if the order was ever shipped: its goods left the warehouse, so a refund
        does not put its units back in stock (after-sale returns are handled outside)."""
        shipped = await conn.execute(
            select(TRANSITIONS.c.id)
            .where(
                TRANSITIONS.c.order_id == order_id,
                TRANSITIONS.c.to_state == OrderState.SHIPPED.value,
            )
            .limit(1)
        )
        return shipped.first() is not None

    async def _restock_sku(self, conn: Any, order: dict[str, Any]) -> str:
        """Give the order's units back to the SKU once (``stock_released`` guards it).

        Returns where they went (``sku``, or ``none`` for a flash sale that did not take its
        stock from the SKU), or ``""`` if they had already gone back."""
        target = "sku"
        if order["kind"] == "flash" and order["flash_sale_id"] is not None:
            carved = (
                await conn.execute(
                    select(SALES.c.carved).where(SALES.c.id == order["flash_sale_id"])
                )
            ).scalar()
            target = "sku" if carved else "none"
        res = await conn.execute(
            update(ORDERS)
            .where(ORDERS.c.id == order["id"], ORDERS.c.stock_released.is_(False))
            .values(stock_released=True, restock=target)
        )
        if res.rowcount != 1:
            return ""
        if target == "sku":
            await conn.execute(
                update(SKUS)
                .where(SKUS.c.id == order["sku_id"])
                .values(stock=SKUS.c.stock + order["quantity"])
            )
        logger.info("order %s: %d returned to the SKU's stock", order["id"], order["quantity"])
        return target

    async def release_stock(self, order: dict[str, Any]) -> bool:
        """Give a cancelled order's stock back, exactly once. False if already done.

        Flash-sale units go back on sale while the sale is not settled, else to the SKU;
        normal and prize orders go back to the SKU. An order that was cancelled and then
        refunded (a late payment) is released here, never by the refund."""
        if order.get("stock_released"):
            return False
        if order["state"] != OrderState.CANCELLED.value and order.get("cancelled_ms") is None:
            return False
        if order["kind"] == "flash" and order["flash_sale_id"] is not None:
            sale_id = order["flash_sale_id"]
            args = {
                "order_id": order["id"],
                "user": order["user_id"],
                "qty": order["quantity"],
                "now_ms": self.now_ms(),
            }
            status = await self.flash.release_status(sale_id, **args)
            if status == NOT_LOADED and self.loader is not None:
                await self.loader(sale_id)
                status = await self.flash.release_status(sale_id, **args)
            if status == NOT_LOADED:
                logger.warning(
                    "order %s: sale %s not in Redis; release later", order["id"], sale_id
                )
                return False
            if status == SETTLED:
                async with self.engine.begin() as conn:
                    done = bool(await self._restock_sku(conn, order))
            else:
                done = status == RELEASED
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(ORDERS)
                        .where(ORDERS.c.id == order["id"], ORDERS.c.stock_released.is_(False))
                        .values(stock_released=True, restock="sale")
                    )
                if done:
                    logger.info("order %s: %d back on sale", order["id"], order["quantity"])
        else:
            async with self.engine.begin() as conn:
                done = bool(await self._restock_sku(conn, order))
        order["stock_released"] = True
        return done

    async def unreleased_cancellations(self, limit: int = 500) -> list[dict[str, Any]]:
        """Cancelled orders (including ones refunded after a late payment) whose stock has
        not gone back yet (a crash between the move and the release)."""
        async with self.engine.connect() as conn:
            res = await conn.execute(
                select(ORDERS)
                .where(
                    or_(
                        ORDERS.c.state == OrderState.CANCELLED.value,
                        ORDERS.c.cancelled_ms.is_not(None),
                    ),
                    ORDERS.c.stock_released.is_(False),
                )
                .limit(limit)
            )
            return [dict(r) for r in res.mappings()]
