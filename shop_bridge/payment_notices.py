"""Payment notifications: the provider tells us an order was paid (or not).

:meth:`PaymentNotices.handle` verifies the signature and the timestamp, checks the body
against the order (amount), and applies it: a pending order becomes paid; a repeat is
answered as already paid; money for a cancelled order is never turned into a sale again,
it is paid back (``order.payment_late``).

Nothing is written before the signature is verified: anyone can post to the notify URL,
and a row per forged request would let them fill the database. A refused notification
(bad or missing signature, or a stale timestamp: a replay of an old signed one) is only
counted and kept in a small in-memory log (:attr:`PaymentNotices.refused`, the last
:data:`REFUSED_KEPT`). Every notification that passed the signature, accepted or not, is
logged in ``shop_payment_notifications`` (bounded by age and count: :meth:`prune`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select

from shop_bridge import payments
from shop_bridge.checkout import Checkout
from shop_bridge.context import ShopContext
from shop_bridge.events import OrderPaymentLate
from shop_bridge.models import NOTIFICATIONS
from shop_bridge.state import PAID_STATES, IllegalTransition, OrderState

logger = logging.getLogger(__name__)

REFUSED_KEPT = 100
"""Refused (unauthenticated) notifications kept in memory; older ones are only counted."""


class PaymentNotices:
    """The provider's payment notifications and their log."""

    def __init__(self, ctx: ShopContext, checkout: Checkout, payment_key: bytes) -> None:
        self.ctx = ctx
        self.checkout = checkout
        self.payment_key = payment_key
        self.refused_counts: Counter[str] = Counter()
        """Refused notifications since start, by outcome (``forged``, ``stale``)."""
        self.refused: deque[dict[str, Any]] = deque(maxlen=REFUSED_KEPT)
        """The last refused notifications (when, outcome, detail, from where)."""

    async def handle(
        self, headers: Mapping[str, str], body: bytes, remote: str
    ) -> tuple[int, dict[str, Any]]:
        """Verify and apply one payment notification. Returns (HTTP status, JSON body).

        ``headers`` is the request's own case-insensitive mapping (aiohttp's
        ``request.headers``), never a plain ``dict`` copy of it: header names are
        case-insensitive (HTTP/2 hops and many clients send them in lower case)."""
        now = self.ctx.now_ms()
        ts = headers.get(payments.TS_HEADER, "")
        nonce = headers.get(payments.NONCE_HEADER, "")
        sig = headers.get(payments.SIG_HEADER, "")
        if not (ts and nonce and sig) or not payments.verify(
            self.payment_key, ts, nonce, body, sig
        ):
            self._refuse(now, "forged", "bad or missing signature", remote)
            logger.warning("payment notification with a bad signature from %s refused", remote)
            return 401, error_body("bad_signature", "signature verification failed")
        try:
            ts_s = int(ts)
        except ValueError:
            ts_s = 0
        if abs(now / 1000 - ts_s) > self.ctx.config.notify_max_skew:
            self._refuse(now, "stale", f"timestamp {ts[:20]}", remote)
            return 401, error_body("stale_timestamp", "notification timestamp out of range")
        try:
            data = json.loads(body)
            resource = data["resource"]
            order_id = resource["out_trade_no"]
            txn = resource["transaction_id"]
            trade_state = resource["trade_state"]
            total = resource["amount"]["total"]
            notify_id = str(data.get("id", ""))[:64]
            if not (
                isinstance(order_id, str)
                and isinstance(txn, str)
                and isinstance(trade_state, str)
                and isinstance(total, int)
                and not isinstance(total, bool)
            ):
                raise TypeError("field types")
        except (ValueError, KeyError, TypeError) as exc:
            await self.log(now, "", "", "", "malformed", repr(exc)[:200], remote)
            return 400, error_body("malformed", "notification body is not a payment result")
        order_id, txn = order_id[:64], txn[:64]
        order = await self.ctx.book.get(order_id)
        if order is None:
            await self.log(now, order_id, txn, notify_id, "unknown_order", "", remote)
            logger.warning("payment notification for unknown order %r from %s", order_id, remote)
            return 404, error_body("order_not_found", "unknown out_trade_no")
        if total != order["amount_fen"]:
            detail = f"notified {total} fen, order is {order['amount_fen']} fen"
            await self.log(now, order_id, txn, notify_id, "wrong_amount", detail, remote)
            logger.error("payment notification for %s refused: %s", order_id, detail)
            return 400, error_body("amount_mismatch", detail)
        if trade_state != payments.SUCCESS:
            await self.log(now, order_id, txn, notify_id, "ignored", trade_state, remote)
            return 200, {"code": "SUCCESS", "message": "noted"}
        state = OrderState(order["state"])
        if state is OrderState.PENDING_PAYMENT:
            try:
                await self.ctx.book.move(
                    order_id,
                    OrderState.PAID,
                    "payment-notify",
                    f"transaction {txn}",
                    values={"paid_ms": now, "transaction_id": txn},
                    expect=OrderState.PENDING_PAYMENT,
                )
                await self.log(now, order_id, txn, notify_id, "accepted", "", remote)
                return 200, {"code": "SUCCESS", "message": "paid"}
            except IllegalTransition:
                order = await self.ctx.book.get(order_id) or order
                state = OrderState(order["state"])
        if state in PAID_STATES or state is OrderState.REFUNDED:
            outcome = "duplicate" if order["transaction_id"] in ("", txn) else "other_transaction"
            if outcome != "duplicate":
                logger.error(
                    "order %s paid by %s, notified again with %s",
                    order_id,
                    order["transaction_id"],
                    txn,
                )
            await self.log(now, order_id, txn, notify_id, outcome, "", remote)
            return 200, {"code": "SUCCESS", "message": "already paid"}
        # Cancelled: money arrived anyway (the buyer paid in a race with the close, or the
        # order was cancelled without the provider). Never resurrect the order: record the
        # payment and pay it back. Its stock went back at the cancellation and stays there.
        return await self._refund_late_payment(order, txn, notify_id, total, now, remote)

    async def _refund_late_payment(
        self, order: dict[str, Any], txn: str, notify_id: str, total: int, now: int, remote: str
    ) -> tuple[int, dict[str, Any]]:
        order_id = order["id"]
        try:
            moved = await self.ctx.book.move(
                order_id,
                OrderState.REFUNDING,
                "payment-notify",
                f"payment {txn} arrived after the cancellation: paying it back",
                values={"transaction_id": txn, "paid_ms": now},
                expect=OrderState.CANCELLED,
            )
        except IllegalTransition:
            # A repeat of this notification got there first (or another transaction).
            again = await self.ctx.book.get(order_id) or order
            outcome = "duplicate" if again["transaction_id"] == txn else "other_transaction"
            await self.log(now, order_id, txn, notify_id, outcome, "", remote)
            return 200, {"code": "SUCCESS", "message": "order cancelled; payment being refunded"}
        await self.log(
            now,
            order_id,
            txn,
            notify_id,
            "late",
            "payment for a cancelled order: refunding",
            remote,
        )
        logger.warning("payment %s arrived for cancelled order %s: refunding it", txn, order_id)
        await self.ctx.bus.emit(
            OrderPaymentLate(
                order_id=order_id,
                transaction_id=txn,
                amount_fen=total,
                refund="started",
                ts=now / 1000,
            )
        )
        await self.checkout.try_refund(moved, "payment-notify")
        return 200, {"code": "SUCCESS", "message": "order cancelled; payment refunded"}

    def _refuse(self, now: int, outcome: str, detail: str, remote: str) -> None:
        """Count a refused notification and keep it in the capped in-memory log."""
        self.refused_counts[outcome] += 1
        self.refused.append(
            {"received_ms": now, "outcome": outcome, "detail": detail, "remote": remote[:64]}
        )

    def refused_summary(self) -> dict[str, Any]:
        """Refused notifications: counts since start and the last ones (newest first)."""
        return {"counts": dict(self.refused_counts), "recent": list(reversed(self.refused))}

    async def log(
        self,
        now: int,
        order_id: str,
        txn: str,
        notify_id: str,
        outcome: str,
        detail: str,
        remote: str,
    ) -> None:
        """Record one notification and what became of it (``accepted``, ``forged``...)."""
        async with self.ctx.engine.begin() as conn:
            await conn.execute(
                insert(NOTIFICATIONS).values(
                    received_ms=now,
                    order_id=order_id,
                    transaction_id=txn,
                    notify_id=notify_id,
                    outcome=outcome,
                    detail=detail[:500],
                    remote=remote[:64],
                )
            )

    async def prune(self) -> int:
        """Bound the notification log by age and by count (oldest first, in batches)."""
        cfg = self.ctx.config
        deleted = 0
        n = NOTIFICATIONS
        for _round in range(20):
            cut: Any = None
            if cfg.notification_retention > 0:
                cut = n.c.received_ms < self.ctx.now_ms() - cfg.notification_retention * 1000
            async with self.ctx.engine.begin() as conn:
                if cfg.notification_max_rows > 0:
                    edge = (
                        await conn.execute(
                            select(n.c.id)
                            .order_by(n.c.id.desc())
                            .offset(cfg.notification_max_rows)
                            .limit(1)
                        )
                    ).scalar()
                    if edge is not None:
                        cut = n.c.id <= edge if cut is None else (cut | (n.c.id <= edge))
                if cut is None:
                    break
                oldest = select(n.c.id).where(cut).order_by(n.c.id).limit(cfg.prune_batch)
                res = await conn.execute(delete(n).where(n.c.id.in_(oldest)))
            deleted += res.rowcount
            if res.rowcount < cfg.prune_batch:
                break
        if deleted:
            logger.info("payment notification log: %d old entries pruned", deleted)
        return deleted

    async def entries(self, order_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The notification log, newest first (of one order, or all)."""
        q = select(NOTIFICATIONS).order_by(NOTIFICATIONS.c.id.desc()).limit(limit)
        if order_id is not None:
            q = q.where(NOTIFICATIONS.c.order_id == order_id)
        async with self.ctx.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(q)).mappings()]


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
