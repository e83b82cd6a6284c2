"""After-sales (申请售后): a buyer asks for a refund of a paid or shipped order, an operator
approves or rejects it, an approved request is paid back through the refund path.

A request (a row of ``shop_aftersales``) names the order and its buyer, a ``kind``
(``refund_only``; ``return_refund`` only once the order was shipped), a reason code from a
fixed list plus the buyer's own words (at most :data:`MAX_TEXT` characters) and the amount
asked (default: all that is left to pay back). Its states and their moves are the table
of :mod:`shop_bridge.aftersales_state`: ``open -> approved -> refunded``, ``open ->
rejected`` (with the operator's reason), ``open -> withdrawn`` (by the buyer).

The buyer may ask while the order is ``paid`` or ``shipped``, within
``shop.aftersales_window_days`` of the payment, while something is left to pay back, and
with no other open request for the order (a partial unique index holds that, also for two
requests at once).

**Approving** asks :meth:`shop_bridge.refunds.Refunds.refund` for the amount (the one asked,
or the operator's), so the partial/whole rules, the stock and the sales figures stay in
one place. While it does, the request holds a short claim (``claim``, a lease of
:data:`CLAIM_MS`): a second approval, a rejection or a withdrawal meanwhile gets 409
``request_busy``, so one request never makes two refunds. A refusal of the refund path
(``refund_pending``, ``nothing_to_refund``, an order that moved on) releases the claim and
reaches the caller; the request stays open. Once the refund is made the request is
``approved`` with the refund's id; it becomes ``refunded`` when that refund completes (the
``refund.completed`` event, or at once when the provider confirmed during the call).

**One refund per request, also across a crash.** The refund an approval makes has an id
derived from the request's (:func:`refund_id_for`), the refunds table's primary key. If a
node stops after the refund was made but before the approval was recorded, its claim
lapses and the request is open again; the next approval asks the refund path under the
same id, which finds that refund instead of making another (a pending one is asked of the
provider again under the same id, which the provider dedupes), and records the approval
with that refund and its amount.

Events: ``aftersales.requested`` (a new request), ``aftersales.decided`` (approved or
rejected), declared in :mod:`shop_bridge.events`.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from shop_bridge.aftersales_state import (
    KINDS,
    REASONS,
    AfterSalesState,
    IllegalAfterSalesMove,
    transition,
)
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.context import ShopContext, new_id
from shop_bridge.errors import ShopError, conflict, invalid, not_found
from shop_bridge.events import AfterSalesDecided, AfterSalesRequested, RefundCompleted
from shop_bridge.models import ORDERS, REFUNDS, Base
from shop_bridge.refunds import DONE, Refunds
from shop_bridge.state import OrderState
from shop_bridge.views import iso, masked_recipient

__all__ = ["AFTERSALES", "CLAIM_MS", "MAX_TEXT", "AfterSales", "refund_id_for", "request_view"]

logger = logging.getLogger(__name__)

S = AfterSalesState

MAX_TEXT = 500
"""Most characters of the buyer's own words."""
MAX_NOTE = 200
"""Most characters of an operator's note or rejection reason."""
CLAIM_MS = 60_000
"""How long an approval holds its request while the refund is asked (a crashed node's
claim lapses after it)."""
ELIGIBLE = (OrderState.PAID, OrderState.SHIPPED)
"""Order states a buyer may ask after-sales for (those the refund path takes)."""

AFTERSALES = Table(
    "shop_aftersales",
    Base.metadata,
    Column("id", String(32), primary_key=True),
    Column("order_id", String(32), ForeignKey("shop_orders.id"), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("broadcast_id", String(64), nullable=False, server_default=""),
    Column("kind", String(16), nullable=False),
    Column("reason", String(24), nullable=False),
    Column("text", String(MAX_TEXT), nullable=False, server_default=""),
    Column("amount_fen", BigInteger, nullable=False),
    Column("approved_fen", BigInteger, nullable=True),
    Column("state", String(16), nullable=False),
    Column("note", String(MAX_NOTE), nullable=False, server_default=""),
    Column("refund_id", String(32), nullable=True),
    Column("claim", String(32), nullable=True),
    Column("claim_ms", BigInteger, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("decided_ms", BigInteger, nullable=True),
    Column("decided_by", String(64), nullable=False, server_default=""),
    Column("closed_ms", BigInteger, nullable=True),
    CheckConstraint("amount_fen > 0", name="amount"),
    Index(
        "uq_shop_aftersales_open_order",
        "order_id",
        unique=True,
        sqlite_where=text("state = 'open'"),
        postgresql_where=text("state = 'open'"),
    ),
    Index("ix_shop_aftersales_order", "order_id", "created_ms"),
    Index("ix_shop_aftersales_user", "user_id", "created_ms"),
    Index("ix_shop_aftersales_state", "state", "created_ms"),
)
"""The requests (schema: migration 0008)."""


def refund_id_for(request_id: str) -> str:
    """The id of the one refund an after-sales request may make (32 characters, as the
    refunds table's ids; ``A`` keeps it apart from the ids :func:`new_id` makes)."""
    return ("A" + request_id)[:32]


def request_view(r: Any) -> dict[str, Any]:
    """A request as the API shows it, with its order's figures (the recipient masked)."""
    return {
        "id": r["id"],
        "order_id": r["order_id"],
        "user_id": r["user_id"],
        "broadcast_id": to_wire(r["broadcast_id"]),
        "kind": r["kind"],
        "reason": r["reason"],
        "text": r["text"],
        "amount_fen": int(r["amount_fen"]),
        "approved_fen": None if r["approved_fen"] is None else int(r["approved_fen"]),
        "state": r["state"],
        "note": r["note"],
        "refund_id": r["refund_id"],
        "created_at": iso(r["created_ms"]),
        "updated_at": iso(r["updated_ms"]),
        "decided_at": iso(r["decided_ms"]),
        "decided_by": r["decided_by"] or None,
        "closed_at": iso(r["closed_ms"]),
        "order": {
            "state": r["order_state"],
            "product_id": r["product_id"],
            "quantity": r["quantity"],
            "amount_fen": int(r["order_amount_fen"]),
            "refunded_fen": int(r["refunded_fen"] or 0),
            "paid_at": iso(r["paid_ms"]),
            "recipient": masked_recipient({"recipient_masked": r["recipient_masked"]}),
        },
    }


def _with_order() -> Any:
    return select(
        AFTERSALES,
        ORDERS.c.state.label("order_state"),
        ORDERS.c.product_id,
        ORDERS.c.quantity,
        ORDERS.c.amount_fen.label("order_amount_fen"),
        ORDERS.c.refunded_fen,
        ORDERS.c.paid_ms,
        ORDERS.c.recipient_masked,
    ).select_from(AFTERSALES.join(ORDERS, ORDERS.c.id == AFTERSALES.c.order_id))


class AfterSales:
    """Buyers' after-sales requests and the operators' decisions (module docstring)."""

    def __init__(self, ctx: ShopContext, refunds: Refunds) -> None:
        self.ctx = ctx
        self.refunds = refunds
        self._unsub: list[Any] = []

    def start(self) -> None:
        self._unsub = [self.ctx.bus.on(RefundCompleted, self.on_refund_completed)]

    def stop(self) -> None:
        for unsub in self._unsub:
            unsub()
        self._unsub.clear()

    # -- reading -----------------------------------------------------------------------

    async def get(self, request_id: str) -> dict[str, Any]:
        """The request's view (404 ``aftersales_not_found``)."""
        async with self.ctx.engine.connect() as conn:
            row = (
                (await conn.execute(_with_order().where(AFTERSALES.c.id == request_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise not_found("aftersales", request_id)
        return request_view(row)

    async def of_user(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """A buyer's requests, newest first."""
        q = (
            _with_order()
            .where(AFTERSALES.c.user_id == user_id)
            .order_by(AFTERSALES.c.created_ms.desc(), AFTERSALES.c.id)
            .limit(limit)
        )
        async with self.ctx.engine.connect() as conn:
            return [request_view(r) for r in (await conn.execute(q)).mappings()]

    async def listing(
        self, *, state: str | None, broadcast_id: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Requests for the operators: the open queue oldest first (first come, first
        decided), any other selection newest first."""
        q = _with_order()
        if state is not None:
            q = q.where(AFTERSALES.c.state == state)
        if broadcast_id is not None:
            q = q.where(AFTERSALES.c.broadcast_id == broadcast_id)
        if state == S.OPEN:
            q = q.order_by(AFTERSALES.c.created_ms, AFTERSALES.c.id)
        else:
            q = q.order_by(AFTERSALES.c.created_ms.desc(), AFTERSALES.c.id)
        async with self.ctx.engine.connect() as conn:
            return [request_view(r) for r in (await conn.execute(q.limit(limit))).mappings()]

    async def _left(self, order: dict[str, Any]) -> int:
        """What is left to pay back on the order (refunds asked count, pending ones too)."""
        async with self.ctx.engine.connect() as conn:
            taken = (
                await conn.execute(
                    select(func.coalesce(func.sum(REFUNDS.c.amount_fen), 0)).where(
                        REFUNDS.c.order_id == order["id"]
                    )
                )
            ).scalar_one()
        return int(order["amount_fen"]) - int(taken)

    # -- the buyer ---------------------------------------------------------------------

    async def create(
        self,
        order_id: str,
        user_id: str,
        kind: str,
        reason: str,
        words: str,
        amount_fen: int | None,
    ) -> dict[str, Any]:
        """A buyer's request for their order (someone else's order: 404, as if unknown)."""
        if kind not in KINDS:
            raise invalid("kind", f"one of {', '.join(KINDS)}")
        if reason not in REASONS:
            raise invalid("reason", f"one of {', '.join(REASONS)}")
        if len(words) > MAX_TEXT:
            raise invalid("text", f"at most {MAX_TEXT} characters")
        order = await self.ctx.book.get(order_id)
        if order is None or order["user_id"] != user_id:
            raise not_found("order", order_id)
        state = OrderState(order["state"])
        if state not in ELIGIBLE:
            raise conflict(
                "order_not_eligible",
                f"order is {state.value}: after-sales is for paid or shipped orders",
                order_state=state.value,
            )
        if kind == "return_refund" and state != OrderState.SHIPPED:
            raise conflict(
                "kind_not_allowed",
                "return_refund is for shipped orders; ask refund_only for an order not shipped",
                order_state=state.value,
            )
        now = self.ctx.now_ms()
        days = self.ctx.config.aftersales_window_days
        paid = order["paid_ms"] or order["created_ms"]
        if days > 0 and now > paid + days * 86_400_000:
            raise conflict(
                "too_late",
                f"after-sales can be asked within {days} days of payment",
                deadline=iso(paid + days * 86_400_000),
            )
        left = await self._left(order)
        if left <= 0:
            raise conflict("nothing_to_refund", "this order was paid back in full already")
        amount = left if amount_fen is None else amount_fen
        if amount > left:
            raise conflict(
                "refund_exceeds_paid",
                f"at most {left} fen is left to pay back on this order",
                remaining_fen=left,
            )
        rid = new_id()
        try:
            async with self.ctx.engine.begin() as conn:
                await conn.execute(
                    insert(AFTERSALES).values(
                        id=rid,
                        order_id=order_id,
                        user_id=user_id,
                        broadcast_id=order["broadcast_id"] or "",
                        kind=kind,
                        reason=reason,
                        text=words,
                        amount_fen=amount,
                        approved_fen=None,
                        state=S.OPEN.value,
                        note="",
                        refund_id=None,
                        claim=None,
                        claim_ms=None,
                        created_ms=now,
                        updated_ms=now,
                        decided_ms=None,
                        decided_by="",
                        closed_ms=None,
                    )
                )
        except IntegrityError:
            open_id = await self._open_of(order_id)
            raise conflict(
                "request_open",
                "an after-sales request of this order is open already; withdraw it or wait "
                "for the decision",
                request_id=open_id,
            ) from None
        view = await self.get(rid)
        logger.info("after-sales %s asked for order %s (%s fen)", rid, order_id, amount)
        await self.ctx.bus.emit(
            AfterSalesRequested(
                request_id=rid,
                order_id=order_id,
                broadcast_id=view["broadcast_id"],
                user_id=user_id,
                kind=kind,
                reason=reason,
                amount_fen=amount,
                ts=now / 1000,
            )
        )
        return view

    async def _open_of(self, order_id: str) -> str | None:
        async with self.ctx.engine.connect() as conn:
            return (
                await conn.execute(
                    select(AFTERSALES.c.id).where(
                        AFTERSALES.c.order_id == order_id, AFTERSALES.c.state == S.OPEN.value
                    )
                )
            ).scalar_one_or_none()

    async def withdraw(self, request_id: str, user_id: str) -> dict[str, Any]:
        """The buyer takes their open request back (someone else's: 404)."""
        current = await self.get(request_id)
        if current["user_id"] != user_id:
            raise not_found("aftersales", request_id)
        now = self.ctx.now_ms()
        await self._move(current, S.WITHDRAWN, now, closed_ms=now)
        return await self.get(request_id)

    # -- the operators ------------------------------------------------------------------

    async def reject(self, request_id: str, actor: str, reason: str) -> dict[str, Any]:
        current = await self.get(request_id)
        now = self.ctx.now_ms()
        await self._move(
            current,
            S.REJECTED,
            now,
            note=reason[:MAX_NOTE],
            decided_ms=now,
            decided_by=actor[:64],
            closed_ms=now,
        )
        view = await self.get(request_id)
        await self._decided(view, actor, now)
        return view

    async def approve(
        self, request_id: str, actor: str, amount_fen: int | None, note: str
    ) -> dict[str, Any]:
        """Refund the amount asked (or ``amount_fen``) through the refund path; the request
        is ``approved``, then ``refunded`` when the refund completes."""
        current = await self.get(request_id)
        transition(S(current["state"]), S.APPROVED)
        amount = current["amount_fen"] if amount_fen is None else amount_fen
        claim = new_id()
        now = self.ctx.now_ms()
        await self._claim(current, claim, now)
        why = f"after-sales {current['kind']} ({current['reason']})"
        if note:
            why = f"{why}: {note}"
        try:
            done = await self.refunds.refund(
                current["order_id"], actor, why[:200], amount, refund_id=refund_id_for(request_id)
            )
        except BaseException:
            await self._release(request_id, claim)
            raise
        refund = done["refund"]
        if refund is not None:  # a repeat after a crash: what was refunded, not what is asked
            amount = int(refund["amount_fen"])
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            moved = await conn.execute(
                update(AFTERSALES)
                .where(
                    AFTERSALES.c.id == request_id,
                    AFTERSALES.c.state == S.OPEN.value,
                    AFTERSALES.c.claim == claim,
                )
                .values(
                    state=S.APPROVED.value,
                    approved_fen=amount,
                    refund_id=refund["id"] if refund else None,
                    note=note[:MAX_NOTE],
                    decided_ms=now,
                    decided_by=actor[:64],
                    updated_ms=now,
                    claim=None,
                    claim_ms=None,
                )
            )
        if moved.rowcount != 1:  # cannot happen while the claim holds: say so loudly
            logger.error(
                "after-sales %s: refund made but the approval was not recorded", request_id
            )
        view = await self.get(request_id)
        await self._decided(view, actor, now)
        # completed already (the provider confirmed during the call, or its event came
        # before the approval was recorded and found no approved request): read after the
        # approval, so one of this and :meth:`on_refund_completed` sees it
        if refund is None or await self._refund_done(refund["id"]):
            await self._refunded(request_id)
            view = await self.get(request_id)
        return view

    async def _refund_done(self, refund_id: str) -> bool:
        async with self.ctx.engine.connect() as conn:
            state = (
                await conn.execute(select(REFUNDS.c.state).where(REFUNDS.c.id == refund_id))
            ).scalar_one_or_none()
        return state == DONE

    async def on_refund_completed(self, event: RefundCompleted) -> None:
        """The refund an approval made completed: the request is ``refunded`` (idempotent:
        every node gets the event)."""
        await self._refunded(None, event.refund_id)

    # -- moves ---------------------------------------------------------------------------

    def _free(self, now: int) -> Any:
        """No approval holds the request (or its claim lapsed)."""
        return or_(AFTERSALES.c.claim.is_(None), AFTERSALES.c.claim_ms < now - CLAIM_MS)

    async def _move(
        self, current: dict[str, Any], target: AfterSalesState, now: int, **values: Any
    ) -> None:
        """``current -> target`` if the table allows it and the request did not move
        meanwhile (conditional UPDATE); 409 otherwise."""
        state = S(current["state"])
        transition(state, target)
        async with self.ctx.engine.begin() as conn:
            moved = await conn.execute(
                update(AFTERSALES)
                .where(
                    AFTERSALES.c.id == current["id"],
                    AFTERSALES.c.state == state.value,
                    self._free(now),
                )
                .values(state=target.value, updated_ms=now, claim=None, claim_ms=None, **values)
            )
        if moved.rowcount != 1:
            await self._refuse_busy(current["id"], target)

    async def _claim(self, current: dict[str, Any], claim: str, now: int) -> None:
        async with self.ctx.engine.begin() as conn:
            got = await conn.execute(
                update(AFTERSALES)
                .where(
                    AFTERSALES.c.id == current["id"],
                    AFTERSALES.c.state == S.OPEN.value,
                    self._free(now),
                )
                .values(claim=claim, claim_ms=now)
            )
        if got.rowcount != 1:
            await self._refuse_busy(current["id"], S.APPROVED)

    async def _refuse_busy(self, request_id: str, target: AfterSalesState) -> None:
        now_view = await self.get(request_id)
        state = S(now_view["state"])
        if state != S.OPEN:
            raise IllegalAfterSalesMove(state, target)
        raise ShopError(
            409, "request_busy", "an operator is approving this request right now; retry"
        )

    async def _release(self, request_id: str, claim: str) -> None:
        async with self.ctx.engine.begin() as conn:
            await conn.execute(
                update(AFTERSALES)
                .where(AFTERSALES.c.id == request_id, AFTERSALES.c.claim == claim)
                .values(claim=None, claim_ms=None)
            )

    async def _refunded(self, request_id: str | None, refund_id: str | None = None) -> None:
        """``approved -> refunded`` for the request (or the one holding ``refund_id``)."""
        transition(S.APPROVED, S.REFUNDED)
        now = self.ctx.now_ms()
        match = (
            AFTERSALES.c.id == request_id
            if request_id is not None
            else AFTERSALES.c.refund_id == refund_id
        )
        async with self.ctx.engine.begin() as conn:
            done = await conn.execute(
                update(AFTERSALES)
                .where(and_(match, AFTERSALES.c.state == S.APPROVED.value))
                .values(state=S.REFUNDED.value, updated_ms=now, closed_ms=now)
            )
        if done.rowcount:
            logger.info("after-sales %s refunded", request_id or f"of refund {refund_id}")

    async def _decided(self, view: dict[str, Any], actor: str, now: int) -> None:
        await self.ctx.bus.emit(
            AfterSalesDecided(
                request_id=view["id"],
                order_id=view["order_id"],
                broadcast_id=view["broadcast_id"],
                user_id=view["user_id"],
                state=view["state"] if view["state"] != S.REFUNDED else S.APPROVED.value,
                amount_fen=view["approved_fen"] or view["amount_fen"],
                note=view["note"],
                actor=actor,
                ts=now / 1000,
            )
        )
