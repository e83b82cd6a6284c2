"""The after-sales request's state machine: one enum, one transition table, nothing else
decides.

::

    open -> approved -> refunded     (an operator approves; the refund completes)
    open -> rejected                 (an operator refuses, with a reason)
    open -> withdrawn                (the buyer takes the request back)

Every other move raises :class:`IllegalAfterSalesMove` (HTTP 409 ``illegal_transition``
at the API). The store applies a move with a conditional ``UPDATE ... WHERE state =
<from>``, so of two racing moves out of the same state exactly one wins.

The fixed lists a request is made of live here too: its kinds and its reason codes.
"""

from __future__ import annotations

import enum

__all__ = [
    "ACTIVE",
    "KINDS",
    "REASONS",
    "TRANSITIONS",
    "AfterSalesState",
    "IllegalAfterSalesMove",
    "transition",
]


class AfterSalesState(enum.StrEnum):
    OPEN = "open"
    APPROVED = "approved"
    REFUNDED = "refunded"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


S = AfterSalesState

TRANSITIONS: dict[AfterSalesState, frozenset[AfterSalesState]] = {
    S.OPEN: frozenset({S.APPROVED, S.REJECTED, S.WITHDRAWN}),
    S.APPROVED: frozenset({S.REFUNDED}),
    S.REFUNDED: frozenset(),
    S.REJECTED: frozenset(),
    S.WITHDRAWN: frozenset(),
}

ACTIVE: frozenset[AfterSalesState] = frozenset({S.OPEN})
"""States in which a request blocks another one for the same order (one open at a time)."""

KINDS = ("refund_only", "return_refund")
"""``refund_only`` (仅退款): the goods were not shipped or not delivered; ``return_refund``
(退货退款): the goods were shipped and go back (only on a shipped order)."""

REASONS = ("not_as_described", "damaged", "wrong_item", "no_longer_wanted", "other")
"""The reason codes a buyer picks from; their own words go in ``text``."""


class IllegalAfterSalesMove(Exception):
    """A move the table does not allow (or the request moved on before us)."""

    def __init__(self, current: AfterSalesState, target: AfterSalesState) -> None:
        super().__init__(f"after-sales request is {current.value}; it cannot become {target.value}")
        self.current = current
        self.target = target


def can_transition(current: AfterSalesState, target: AfterSalesState) -> bool:
    return target in TRANSITIONS[current]


def transition(current: AfterSalesState, target: AfterSalesState) -> AfterSalesState:
    """Return ``target`` if ``current -> target`` is allowed, else raise."""
    if target not in TRANSITIONS[current]:
        raise IllegalAfterSalesMove(current, target)
    return target
