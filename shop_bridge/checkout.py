"""Checkout: normal orders (stock in the database), paying, cancelling, refunds, coupons.

Flash-sale orders are created by :mod:`shop_bridge.flash`; from then on every order is
handled here the same way: the buyer starts a payment with the provider
(:mod:`shop_bridge.payments`), cancels an unpaid order (only once the provider confirms
nothing was or can be paid), an operator ships, completes or refunds it. Every state move
goes through :meth:`shop_bridge.orders.OrderBook.move` (the table in
:mod:`shop_bridge.state`). Payment notifications are :mod:`shop_bridge.payment_notices`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from shop_bridge import payments
from shop_bridge.catalog import Catalog
from shop_bridge.context import ShopContext, new_id
from shop_bridge.errors import ProviderUnavailable, ShopError, conflict, not_found, unknown_ref
from shop_bridge.events import OrderCreated, OrderPaid
from shop_bridge.models import COUPONS, ORDERS, SKUS, TRANSITIONS
from shop_bridge.no_provider import PaymentsNotConfigured
from shop_bridge.shelf import NO_CARD, Shelf
from shop_bridge.state import IllegalTransition, OrderState
from shop_bridge.views import order_view

logger = logging.getLogger(__name__)


class Checkout:
    """Orders at list price, payments, cancellations, refunds and coupons."""

    def __init__(
        self,
        ctx: ShopContext,
        catalog: Catalog,
        shelf: Shelf,
        provider: payments.PaymentProvider,
        notify_url: Callable[[], str],
    ) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.shelf = shelf
        self.book = ctx.book
        self.provider = provider
        self.notify_url = notify_url

    async def place_order(
        self,
        user_id: str,
        sku_id: int,
        quantity: int,
        broadcast_id: str,
        idem_key: str,
        channel: str,
        coupon_id: str | None = None,
        extra: Callable[[str], dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Place an order at list price, less a coupon of the buyer's if one is given.

        The coupon is taken in the same transaction as the stock (of two orders with the
        same coupon, one wins: 409 ``coupon_used`` for the other). An order whose amount is
        0 after the coupon is paid at once (there is nothing to pay)."""
        existing = await self.book.get_by_idem(user_id, idem_key)
        if existing is not None:
            return existing, False
        sku = await self.catalog.sku(sku_id)
        if sku is None:
            raise unknown_ref("sku", sku_id)
        anchor_id, room = ("", "")
        card = NO_CARD
        if broadcast_id:
            await self.shelf.check_broadcast(broadcast_id, "order")
            await self.shelf.check_on_shelf(broadcast_id, sku["product_id"])
            anchor_id, room = await self.shelf.broadcast_info(broadcast_id)
            card = await self.shelf.card_for_room(room)
        now = self.ctx.now_ms()
        row = {
            "id": new_id(),
            "kind": "normal",
            "state": OrderState.PENDING_PAYMENT.value,
            "user_id": user_id,
            "idempotency_key": idem_key,
            "product_id": sku["product_id"],
            "sku_id": sku_id,
            "flash_sale_id": None,
            "quantity": quantity,
            "unit_price_fen": sku["price_fen"],
            "amount_fen": sku["price_fen"] * quantity,
            "broadcast_id": broadcast_id,
            "anchor_id": anchor_id,
            "card_id": card.card_id or None,
            "card_product_id": card.product_id or None,
            "channel": channel,
            "created_ms": now,
            "updated_ms": now,
            "expires_ms": now + self.ctx.config.payment_timeout * 1000,
            "paid_ms": None,
            "transaction_id": "",
            "stock_released": False,
            "coupon_id": coupon_id,
            "discount_fen": 0,
        }
        if extra is not None:  # the order core's columns: sealed recipient, sharer
            row.update(extra(row["id"]))
        try:
            async with self.ctx.engine.begin() as conn:
                res = await conn.execute(
                    update(SKUS)
                    .where(SKUS.c.id == sku_id, SKUS.c.stock >= quantity)
                    .values(stock=SKUS.c.stock - quantity)
                )
                if res.rowcount != 1:
                    raise conflict("sold_out", f"SKU {sku_id} has fewer than {quantity} in stock")
                await self._check_unpaid(conn, user_id, sku_id, quantity)
                if coupon_id is not None:
                    value = await take_coupon(conn, coupon_id, user_id, row["id"])
                    row["discount_fen"] = min(value, row["amount_fen"])
                    row["amount_fen"] -= row["discount_fen"]
                free = row["amount_fen"] == 0
                if free:
                    row.update(state=OrderState.PAID.value, paid_ms=now, expires_ms=None)
                await conn.execute(insert(ORDERS).values(**row))
                await conn.execute(
                    insert(TRANSITIONS),
                    [
                        {
                            "order_id": row["id"],
                            "from_state": None,
                            "to_state": OrderState.PENDING_PAYMENT.value,
                            "actor": user_id,
                            "reason": "placed",
                            "at_ms": now,
                        }
                    ]
                    + [
                        {
                            "order_id": row["id"],
                            "from_state": OrderState.PENDING_PAYMENT.value,
                            "to_state": OrderState.PAID.value,
                            "actor": "checkout",
                            "reason": f"nothing to pay: coupon {coupon_id} covers it",
                            "at_ms": now,
                        }
                    ]
                    * free,
                )
        except IntegrityError:
            existing = await self.book.get_by_idem(user_id, idem_key)
            if existing is None:
                raise
            return existing, False
        if row["state"] == OrderState.PAID.value:
            await self.ctx.bus.emit(
                OrderCreated.of({**row, "state": "pending_payment"}, user_id),
                OrderPaid.of(row, "checkout"),
            )
        else:
            await self.book.publish_created([row])
        return row, True

    async def _check_unpaid(self, conn: Any, user_id: str, sku_id: int, quantity: int) -> None:
        """One buyer may hold at most ``max_unpaid_per_sku`` unpaid units of a SKU (else
        one buyer could keep a SKU's stock from everyone for a payment timeout). Runs after
        the SKU's stock UPDATE in the order's transaction: that row's lock (PostgreSQL) or
        the write lock (SQLite) serialises the orders of a SKU, so two orders of one buyer
        cannot both pass."""
        cap = self.ctx.config.max_unpaid_per_sku
        if cap <= 0:
            return
        o = ORDERS.c
        held = (
            await conn.execute(
                select(func.coalesce(func.sum(o.quantity), 0)).where(
                    o.user_id == user_id,
                    o.sku_id == sku_id,
                    o.kind == "normal",
                    o.state == OrderState.PENDING_PAYMENT.value,
                )
            )
        ).scalar_one()
        if int(held) + quantity > cap:
            raise conflict(
                "unpaid_limit",
                f"at most {cap} unpaid units of a SKU per buyer; you have {held} unpaid: "
                "pay or cancel them first",
            )

    async def order(self, order_id: str) -> dict[str, Any]:
        """The order's row (404 if unknown)."""
        order = await self.book.get(order_id)
        if order is None:
            raise not_found("order", order_id)
        return order

    async def order_with_history(self, order_id: str) -> dict[str, Any]:
        order = await self.order(order_id)
        return {**order_view(order), "history": await self.book.history(order_id)}

    async def move(
        self, order_id: str, target: OrderState, actor: str, reason: str = ""
    ) -> dict[str, Any]:
        if target is OrderState.SHIPPED and self.ctx.config.require_recipient:
            order = await self.order(order_id)
            if not order.get("recipient"):  # a prize order's winner may not have said yet
                raise conflict(
                    "recipient_required",
                    "nobody to ship to: the buyer gives the recipient first "
                    "(PUT /api/orders/{id}/recipient)",
                    order_id=order_id,
                )
        try:
            return await self.book.move(order_id, target, actor, reason)
        except LookupError:
            raise not_found("order", order_id) from None

    async def start_payment(self, order_id: str, user_id: str | None) -> dict[str, Any]:
        order = await self.order(order_id)
        if user_id is not None and order["user_id"] != user_id:
            raise not_found("order", order_id)
        if order["state"] != OrderState.PENDING_PAYMENT.value:
            raise IllegalTransition(OrderState(order["state"]), OrderState.PAID)
        if order["expires_ms"] is not None and order["expires_ms"] <= self.ctx.now_ms():
            raise conflict("payment_expired", "the time to pay this order is over")
        if self.ctx.config.require_recipient and not order.get("recipient"):
            raise conflict(
                "recipient_required",
                "give the recipient first: PUT /api/orders/{id}/recipient",
                order_id=order_id,
            )
        try:
            prepay = await self.provider.create(
                order_id, order["amount_fen"], f"berrylive order {order_id}", self.notify_url()
            )
        except PaymentsNotConfigured as exc:
            raise ShopError(503, "payments_not_configured", str(exc)) from None
        except ProviderUnavailable as exc:
            logger.warning("payment provider unavailable: %s", exc)
            raise ShopError(503, "provider_unavailable", "payment provider unavailable") from None
        return {"order_id": order_id, "amount_fen": order["amount_fen"], "payment": prepay}

    async def cancel_by_buyer(self, order_id: str, actor: str) -> dict[str, Any]:
        order = await self.order(order_id)
        if order["state"] != OrderState.PENDING_PAYMENT.value:
            raise IllegalTransition(OrderState(order["state"]), OrderState.CANCELLED)
        return await self.close_and_cancel(order, actor, "cancelled by buyer")

    async def close_and_cancel(
        self, order: dict[str, Any], actor: str, reason: str
    ) -> dict[str, Any]:
        """Cancel only once the provider confirms nothing was or can be paid."""
        try:
            result = await self.provider.close(order["id"])
        except ProviderUnavailable as exc:
            raise ShopError(
                503, "provider_unavailable", f"payment state unknown, not cancelled: {exc}"
            ) from None
        if result.state == payments.CLOSED or result.state == payments.NOTFOUND:
            return await self.move(order["id"], OrderState.CANCELLED, actor, reason)
        if result.state in (payments.SUCCESS, payments.REFUND):
            return await self._paid_from_provider(order, result, actor)
        raise ShopError(503, "provider_unsure", f"provider says {result.state}; not cancelled")

    async def _paid_from_provider(
        self, order: dict[str, Any], result: payments.ProviderPayment, actor: str
    ) -> dict[str, Any]:
        if result.amount_fen != order["amount_fen"]:
            logger.error(
                "order %s: provider reports %d fen paid, order is %d fen",
                order["id"],
                result.amount_fen,
                order["amount_fen"],
            )
            raise conflict("amount_mismatch", "provider amount differs from the order")
        return await self.book.move(
            order["id"],
            OrderState.PAID,
            actor,
            "provider reports paid",
            values={"paid_ms": self.ctx.now_ms(), "transaction_id": result.transaction_id[:64]},
            expect=OrderState.PENDING_PAYMENT,
        )

    async def refund(self, order_id: str, actor: str, reason: str) -> dict[str, Any]:
        """Refund a paid or shipped order. When the provider confirms, the order becomes
        ``refunded`` and its units go back to the SKU's stock (once)."""
        order = await self.order(order_id)
        state = OrderState(order["state"])
        if state not in (OrderState.PAID, OrderState.SHIPPED):
            raise IllegalTransition(state, OrderState.REFUNDING)
        order = await self.book.move(order_id, OrderState.REFUNDING, actor, reason, expect=state)
        await self.try_refund(order, actor)
        return await self.order(order_id)

    async def try_refund(self, order: dict[str, Any], actor: str) -> bool:
        """Ask the provider to pay back; move to ``refunded`` once it has. Safe to repeat
        and to race (the sweeper, an API call): the move happens once, the stock with it."""
        if order["amount_fen"] == 0:
            reason = "nothing to pay back"
        else:
            try:  # what is left after partial refunds (shop_bridge.refunds)
                left = order["amount_fen"] - int(order.get("refunded_fen") or 0)
                status = await self.provider.refund(
                    order["id"], "R" + order["id"][:31], left, order["amount_fen"]
                )
            except ProviderUnavailable as exc:
                logger.warning("refund of %s not started yet: %s", order["id"], exc)
                return False
            if status != "SUCCESS":
                return False
            reason = "provider refunded"
        try:
            await self.book.move(
                order["id"],
                OrderState.REFUNDED,
                actor,
                reason,
                values={"refunded_fen": order["amount_fen"]},
                expect=OrderState.REFUNDING,
            )
        except IllegalTransition as exc:
            if exc.current is not OrderState.REFUNDED:
                raise
            return False
        return True

    async def coupons(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """A buyer's coupons, newest first."""
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(COUPONS)
                .where(COUPONS.c.user_id == user_id)
                .order_by(COUPONS.c.created_ms.desc())
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]


async def take_coupon(conn: Any, coupon_id: str, user_id: str, order_id: str) -> int:
    """Mark the buyer's coupon used by ``order_id`` (in the caller's transaction); its value."""
    row = (
        await conn.execute(
            select(COUPONS.c.user_id, COUPONS.c.value_fen, COUPONS.c.used_order_id).where(
                COUPONS.c.id == coupon_id
            )
        )
    ).first()
    if row is None or row[0] != user_id:
        raise unknown_ref("coupon", coupon_id)  # someone else's coupon: as if it did not exist
    if int(row[1]) <= 0:
        raise ShopError(
            422, "coupon_not_redeemable", f"coupon {coupon_id} has no value to deduct at checkout"
        )
    res = await conn.execute(
        update(COUPONS)
        .where(COUPONS.c.id == coupon_id, COUPONS.c.used_order_id.is_(None))
        .values(used_order_id=order_id)
    )
    if res.rowcount != 1:
        raise conflict("coupon_used", f"coupon {coupon_id} is already used by another order")
    return int(row[1])
