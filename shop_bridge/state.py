"""The order state machine: one enum, one transition table, nothing else decides.

::

    pending_payment -> paid -> shipped -> completed
    pending_payment -> cancelled            (payment timeout, buyer, reconciliation)
    paid -> refunding -> refunded
    shipped -> refunding                    (after-sale refund of a shipped order)
    cancelled -> refunding                  (money arrived for a cancelled order: paid back)

Every other move raises :class:`IllegalTransition` (HTTP 409 at the API). The store applies a
move with a conditional ``UPDATE ... WHERE state = <from>``, so of two racing moves out of the
same state exactly one wins.
"""

from __future__ import annotations

import enum


class OrderState(enum.StrEnum):
    PENDING_PAYMENT = "pending_payment"
    PAID = "paid"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REFUNDING = "refunding"
    REFUNDED = "refunded"


S = OrderState

TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    S.PENDING_PAYMENT: frozenset({S.PAID, S.CANCELLED}),
    S.PAID: frozenset({S.SHIPPED, S.REFUNDING}),
    S.SHIPPED: frozenset({S.COMPLETED, S.REFUNDING}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset({S.REFUNDING}),
    S.REFUNDING: frozenset({S.REFUNDED}),
    S.REFUNDED: frozenset(),
}

TERMINAL: frozenset[OrderState] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)

CLOSED: frozenset[OrderState] = frozenset({S.COMPLETED, S.CANCELLED, S.REFUNDED})
"""States no buyer or operator action leaves. ``cancelled -> refunding`` is taken only by the
payment notification handler when money arrives for a cancelled order."""

PAID_STATES: frozenset[OrderState] = frozenset({S.PAID, S.SHIPPED, S.COMPLETED, S.REFUNDING})
"""States whose amount counts towards GMV (money received and not yet given back)."""

HOLDS_STOCK: frozenset[OrderState] = frozenset(
    s for s in OrderState if s not in (S.CANCELLED, S.REFUNDED)
)
"""States in which a (never cancelled) order keeps its stock: cancelling gives it back to the
sale or the SKU, a completed refund gives it back to the SKU (``stock_released`` records it,
so it happens once)."""


class IllegalTransition(Exception):
    """A move the table does not allow (or the order moved on before us)."""

    def __init__(self, current: OrderState, target: OrderState) -> None:
        super().__init__(f"order is {current.value}; it cannot become {target.value}")
        self.current = current
        self.target = target


def can_transition(current: OrderState, target: OrderState) -> bool:
    return target in TRANSITIONS[current]


def transition(current: OrderState, target: OrderState) -> OrderState:
    """Return ``target`` if ``current -> target`` is allowed, else raise IllegalTransition."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return target


def sources(target: OrderState) -> frozenset[OrderState]:
    """The states from which ``target`` can be reached in one move."""
    return frozenset(s for s, nxt in TRANSITIONS.items() if target in nxt)
