"""Refunds with a reason and an amount: whole or partial, never more than was paid.

``POST /api/orders/{id}/refund {"reason", "amount_fen"?}`` (operators) on a ``paid`` or
``shipped`` order. Every refund is a row of ``shop_refunds`` (amount, reason, who, when;
``pending`` until the provider confirms, then ``done``):

* **partial** (``amount_fen`` below what is left to pay back): the provider is asked for
  that amount under the refund's own id; the order keeps its state, its ``refunded_fen``
  grows when the provider confirms (``refund.completed`` event). No stock moves: the
  buyer keeps the goods (a discount, a damaged item);
* **full** (no ``amount_fen``, or exactly what is left): the order moves to
  ``refunding`` and the provider is asked for what is left (:meth:`Checkout.try_refund`,
  retried by the sweeper); ``refunded`` when it confirms. The units go back to the SKU
  only if the order was never shipped (:meth:`OrderBook.move`).

The amounts are checked in a transaction that first locks the order's row (an ``UPDATE``
of it: the row lock on PostgreSQL, the write lock on SQLite): two refunds at once cannot
both pass, so the refunds of an order never add up to more than it paid. While one
refund of an order is pending another is refused (409 ``refund_pending``). A partial
refund the provider did not confirm yet is retried every ``sweep_interval``.

**A whole refund cut short.** A whole refund is two steps: its row is written
(:meth:`Refunds._record`), then the order is moved and the provider asked
(:meth:`Refunds._carry_on`). A node that stopped between them leaves a pending whole
refund on a ``paid`` or ``shipped`` order. The retry loop carries it on (the order moved
``refunding``, the provider asked under ``R<order id>``, which it dedupes), and so does a
``POST .../refund`` asking again for the same whole amount (none, or exactly that one's):
it answers that refund instead of 409 ``refund_pending``. Money moves at most once, the
units come back at most once (:meth:`OrderBook.move`).

**Idempotent refunds.** A caller that must refund at most once for something (an
after-sales request: :func:`shop_bridge.aftersales.refund_id_for`) passes its own
``refund_id``: the refund row is written under that id (the table's primary key, so
never twice), and a repeat under the same id makes no second refund: it finds the row and
carries it on (a pending one is asked of the provider again under the same id, which the
provider dedupes; a whole refund whose order never reached ``refunding`` is moved there
first) and answers it. The same id for another order is refused (409
``refund_id_reused``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.bus import Event
from core.events import EventDecodeError
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.checkout import Checkout
from shop_bridge.context import ShopContext, new_id, stop_worker
from shop_bridge.errors import ProviderUnavailable, conflict, invalid
from shop_bridge.events import OrderRefunded, RefundCompleted
from shop_bridge.models import ORDERS, REFUNDS
from shop_bridge.state import IllegalTransition, OrderState

logger = logging.getLogger(__name__)

REFUNDABLE = (OrderState.PAID, OrderState.SHIPPED)
PENDING, DONE = "pending", "done"
RETRY_ACTOR = "refund-retry"


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Refunds._record` wrote or found: the refund's row (None: a free order's
    whole refund, which has none); ``found``: a pending whole refund made before."""

    refund: dict[str, Any] | None
    found: bool = False


def _same_whole(refund: dict[str, Any], amount_fen: int | None) -> bool:
    """Whether asking for ``amount_fen`` (None: all that is left) is the pending whole
    ``refund`` asked again."""
    return amount_fen is None or amount_fen == int(refund["amount_fen"])


def refund_view(r: dict[str, Any]) -> dict[str, Any]:
    from shop_bridge.views import iso

    return {
        "id": r["id"],
        "order_id": r["order_id"],
        "amount_fen": r["amount_fen"],
        "reason": r["reason"],
        "actor": r["actor"],
        "state": r["state"],
        "full": bool(r["full"]),
        "created_at": iso(r["created_ms"]),
        "done_at": iso(r["done_ms"]),
    }


class Refunds:
    """Whole and partial refunds of orders."""

    def __init__(self, ctx: ShopContext, checkout: Checkout) -> None:
        self.ctx = ctx
        self.checkout = checkout
        self._task: asyncio.Task[None] | None = None
        self._unsub: list[Any] = []

    def start(self, background: bool = True) -> None:
        # raw: OrderRefunded is published through the state -> event table (order_moved)
        self._unsub = [self.ctx.bus.subscribe("order.refunded", self._on_refunded_event)]
        if background:
            self._task = asyncio.get_running_loop().create_task(self._retry_loop())

    async def stop(self) -> None:
        await stop_worker(self._unsub, self._task)
        self._task = None

    async def list(self, order_id: str) -> list[dict[str, Any]]:
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(REFUNDS).where(REFUNDS.c.order_id == order_id).order_by(REFUNDS.c.created_ms)
            )
            return [refund_view(dict(r)) for r in rows.mappings()]

    async def refund(
        self,
        order_id: str,
        actor: str,
        reason: str,
        amount_fen: int | None,
        *,
        refund_id: str | None = None,
    ) -> dict[str, Any]:
        """Refund ``amount_fen`` (None: all that is left) of a paid or shipped order;
        returns ``{"order": row, "refund": view}``. With ``refund_id`` the refund is made
        at most once under that id: a repeat carries the first one on (module docstring)."""
        if refund_id is not None:
            existing = await self._find(refund_id)
            if existing is not None:
                return await self._resume(existing, order_id, actor)
        try:
            return await self._make(
                order_id, actor, reason, amount_fen, refund_id or new_id(), adopt=refund_id is None
            )
        except IntegrityError:
            if refund_id is None:
                raise
            existing = await self._find(refund_id)  # made meanwhile under the same id
            if existing is None:
                raise
            return await self._resume(existing, order_id, actor)

    async def _make(
        self,
        order_id: str,
        actor: str,
        reason: str,
        amount_fen: int | None,
        refund_id: str,
        *,
        adopt: bool = True,
    ) -> dict[str, Any]:
        recorded = await self._record(order_id, actor, reason, amount_fen, refund_id, adopt=adopt)
        if recorded.found and recorded.refund is not None:
            return await self._resume(recorded.refund, order_id, actor)
        await self._carry_on(recorded.refund, order_id, actor, reason)
        return {
            "order": await self.checkout.order(order_id),
            "refund": None if recorded.refund is None else await self._view(refund_id),
        }

    async def _record(
        self,
        order_id: str,
        actor: str,
        reason: str,
        amount_fen: int | None,
        refund_id: str,
        *,
        adopt: bool = True,
    ) -> Recorded:
        """The first half of a refund: check the amounts and write the refund's row
        (``pending``), nothing else. With ``adopt`` (a caller without its own refund id),
        a whole refund of the same amount already pending on a ``paid`` or ``shipped``
        order (a node stopped between writing it and moving the order) is found instead
        (``found``): the caller carries that one on rather than making another; without,
        it is 409 ``refund_pending``."""
        if amount_fen is not None and amount_fen <= 0:
            raise invalid("amount_fen", "must be at least 1")
        order = await self.checkout.order(order_id)
        state = OrderState(order["state"])
        if state not in REFUNDABLE:  # a refunding order's refund is the sweeper's to finish
            raise IllegalTransition(state, OrderState.REFUNDING)
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            locked = await conn.execute(
                update(ORDERS)
                .where(ORDERS.c.id == order_id, ORDERS.c.state.in_([s.value for s in REFUNDABLE]))
                .values(updated_ms=ORDERS.c.updated_ms)
            )
            if locked.rowcount != 1:  # moved meanwhile
                current = await self.checkout.order(order_id)
                raise IllegalTransition(OrderState(current["state"]), OrderState.REFUNDING)
            pending_rows = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(REFUNDS).where(
                            REFUNDS.c.order_id == order_id, REFUNDS.c.state == PENDING
                        )
                    )
                ).mappings()
            ]
            for row in pending_rows:
                if adopt and row["full"] and _same_whole(row, amount_fen):
                    return Recorded(row, found=True)
            if pending_rows:
                raise conflict(
                    "refund_pending",
                    "a refund of this order is waiting for the payment provider; retry then",
                )
            taken = (
                await conn.execute(
                    select(func.coalesce(func.sum(REFUNDS.c.amount_fen), 0)).where(
                        REFUNDS.c.order_id == order_id
                    )
                )
            ).scalar_one()
            left = int(order["amount_fen"]) - int(taken)
            amount = left if amount_fen is None else amount_fen
            if int(order["amount_fen"]) == 0 and amount_fen is None:
                return Recorded(None)  # nothing was paid (a coupon covered it): refunded whole
            if left <= 0:
                raise conflict("nothing_to_refund", "this order was paid back in full already")
            if amount > left:
                raise conflict(
                    "refund_exceeds_paid",
                    f"at most {left} fen is left to pay back on this order "
                    f"(paid {order['amount_fen']}, refunded {taken})",
                    remaining_fen=left,
                )
            row = self._row(refund_id, order_id, amount, reason, actor, amount == left, now)
            await conn.execute(insert(REFUNDS).values(**row))
        return Recorded(row)

    async def _carry_on(
        self, refund: dict[str, Any] | None, order_id: str, actor: str, reason: str
    ) -> bool:
        """The second half of a refund, safe to repeat and to race: a partial one is asked
        of the provider under its own id; a whole one (``refund`` None: a free order) moves
        the order ``paid|shipped -> refunding`` if it is not there yet and asks the provider
        for what is left under ``R<order id>`` (:meth:`Checkout.try_refund`), which the
        provider dedupes. True when the refund completed now."""
        order = await self.checkout.order(order_id)
        if refund is not None and not refund["full"]:
            return await self._ask_provider(refund, order)
        state = OrderState(order["state"])
        if state in REFUNDABLE:
            try:
                order = await self.checkout.book.move(
                    order_id, OrderState.REFUNDING, actor, reason, expect=state
                )
            except IllegalTransition:  # moved meanwhile (another caller carrying it on)
                order = await self.checkout.order(order_id)
        if OrderState(order["state"]) is not OrderState.REFUNDING:
            return False
        return await self.checkout.try_refund(order, actor)

    async def _find(self, refund_id: str) -> dict[str, Any] | None:
        async with self.ctx.engine.connect() as conn:
            row = (
                (await conn.execute(select(REFUNDS).where(REFUNDS.c.id == refund_id)))
                .mappings()
                .first()
            )
        return None if row is None else dict(row)

    async def _resume(self, refund: dict[str, Any], order_id: str, actor: str) -> dict[str, Any]:
        """A repeat of the refund made under ``refund["id"]``: nothing new is made; a
        pending refund is carried on (asked again under the same id)."""
        if refund["order_id"] != order_id:
            raise conflict(
                "refund_id_reused",
                f"refund {refund['id']} was made for another order",
                refund_id=refund["id"],
            )
        logger.info("refund %s of order %s asked again: carried on", refund["id"], order_id)
        if refund["state"] == PENDING:
            await self._carry_on(refund, order_id, actor, refund["reason"])
        return {
            "order": await self.checkout.order(order_id),
            "refund": await self._view(refund["id"]),
        }

    @staticmethod
    def _row(
        refund_id: str, order_id: str, amount: int, reason: str, actor: str, full: bool, now: int
    ) -> dict[str, Any]:
        return {
            "id": refund_id,
            "order_id": order_id,
            "amount_fen": amount,
            "reason": reason[:200],
            "actor": actor[:64],
            "state": PENDING,
            "full": full,
            "created_ms": now,
            "done_ms": None,
        }

    async def _row_of(self, refund_id: str) -> dict[str, Any]:
        async with self.ctx.engine.connect() as conn:
            row = (await conn.execute(select(REFUNDS).where(REFUNDS.c.id == refund_id))).mappings()
            return dict(row.one())

    async def _view(self, refund_id: str) -> dict[str, Any]:
        async with self.ctx.engine.connect() as conn:
            row = (await conn.execute(select(REFUNDS).where(REFUNDS.c.id == refund_id))).mappings()
            return refund_view(dict(row.one()))

    async def _ask_provider(self, refund: dict[str, Any], order: dict[str, Any]) -> bool:
        """Ask for a partial refund; record it once the provider confirms."""
        try:
            status = await self.checkout.provider.refund(
                order["id"], refund["id"], int(refund["amount_fen"]), int(order["amount_fen"])
            )
        except ProviderUnavailable as exc:
            logger.warning("partial refund %s not started yet: %s", refund["id"], exc)
            return False
        if status != "SUCCESS":
            return False
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            done = await conn.execute(
                update(REFUNDS)
                .where(REFUNDS.c.id == refund["id"], REFUNDS.c.state == PENDING)
                .values(state=DONE, done_ms=now)
            )
            if done.rowcount != 1:
                return False  # another node recorded it
            await conn.execute(
                update(ORDERS)
                .where(ORDERS.c.id == order["id"])
                .values(refunded_fen=ORDERS.c.refunded_fen + int(refund["amount_fen"]))
            )
            refunded = (
                await conn.execute(select(ORDERS.c.refunded_fen).where(ORDERS.c.id == order["id"]))
            ).scalar_one()
        logger.info(
            "order %s: %s fen refunded (%s)", order["id"], refund["amount_fen"], refund["reason"]
        )
        await self.ctx.bus.emit(
            RefundCompleted(
                refund_id=refund["id"],
                order_id=order["id"],
                broadcast_id=to_wire(order["broadcast_id"]),
                user_id=order["user_id"],
                amount_fen=int(refund["amount_fen"]),
                refunded_fen=int(refunded),
                full=False,
                reason=refund["reason"],
                actor=refund["actor"],
                ts=now / 1000,
            )
        )
        return True

    async def _on_refunded_event(self, event: Event) -> None:
        try:
            refunded = OrderRefunded.from_data(event.data, event.topic)
        except EventDecodeError as exc:
            logger.warning("order.refunded from %s not decoded: %s", event.node, exc)
            return
        await self.on_refunded(refunded)

    async def on_refunded(self, event: OrderRefunded) -> None:
        """An order refunded in full: its last refund is done, ``refunded_fen`` is all of it
        (idempotent: every node gets the event)."""
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            done = await conn.execute(
                update(REFUNDS)
                .where(REFUNDS.c.order_id == event.order_id, REFUNDS.c.state == PENDING)
                .values(state=DONE, done_ms=now)
            )
            await conn.execute(
                update(ORDERS)
                .where(ORDERS.c.id == event.order_id)
                .values(refunded_fen=ORDERS.c.amount_fen)
            )
            row = (
                (
                    await conn.execute(
                        select(REFUNDS)
                        .where(REFUNDS.c.order_id == event.order_id, REFUNDS.c.full.is_(True))
                        .order_by(REFUNDS.c.created_ms.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
        if done.rowcount and row is not None:
            await self.ctx.bus.emit(
                RefundCompleted(
                    refund_id=row["id"],
                    order_id=event.order_id,
                    broadcast_id=event.broadcast_id,
                    user_id=event.user_id,
                    amount_fen=int(row["amount_fen"]),
                    refunded_fen=int(event.amount_fen),
                    full=True,
                    reason=row["reason"],
                    actor=event.actor,
                    ts=now / 1000,
                )
            )

    async def retry_pending(self) -> int:
        """Carry on the refunds still pending: ask again for the partial refunds the
        provider has not confirmed, and carry on a whole refund whose order a stopped node
        left ``paid`` or ``shipped`` (its row written, the order not moved: moved to
        ``refunding`` now and the provider asked under ``R<order id>``) or ``refunded``
        (the row not marked done). A whole refund whose order is ``refunding`` is the
        sweeper's (:meth:`Upkeep.sweep`). Returns how many completed."""
        waiting = [*(s.value for s in REFUNDABLE), OrderState.REFUNDED.value]
        async with self.ctx.engine.connect() as conn:
            rows = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(REFUNDS)
                        .join(ORDERS, ORDERS.c.id == REFUNDS.c.order_id)
                        .where(
                            REFUNDS.c.state == PENDING,
                            REFUNDS.c.full.is_(False) | ORDERS.c.state.in_(waiting),
                        )
                        .order_by(REFUNDS.c.created_ms)
                        .limit(self.ctx.config.sweep_batch)
                    )
                ).mappings()
            ]
        done = 0
        for refund in rows:
            order = await self.ctx.book.get(refund["order_id"])
            if order is None:
                continue
            if not refund["full"]:
                done += await self._ask_provider(refund, order)
            elif order["state"] == OrderState.REFUNDED.value:
                await self.on_refunded(OrderRefunded.of(order, RETRY_ACTOR))
            else:
                logger.warning(
                    "whole refund %s of order %s was left pending with the order %s: carried on",
                    refund["id"],
                    order["id"],
                    order["state"],
                )
                done += await self._carry_on(refund, order["id"], RETRY_ACTOR, refund["reason"])
        return done

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.sweep_interval)
            try:
                await self.retry_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("retrying pending refunds failed")
