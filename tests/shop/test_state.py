"""The order state machine: the table is the only authority (hypothesis on random walks)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shop_bridge.state import (
    CLOSED,
    HOLDS_STOCK,
    PAID_STATES,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    OrderState,
    can_transition,
    sources,
    transition,
)

S = OrderState

LEGAL = {
    (S.PENDING_PAYMENT, S.PAID),
    (S.PENDING_PAYMENT, S.CANCELLED),
    (S.PAID, S.SHIPPED),
    (S.SHIPPED, S.COMPLETED),
    (S.PAID, S.REFUNDING),
    (S.SHIPPED, S.REFUNDING),
    (S.REFUNDING, S.REFUNDED),
    (S.CANCELLED, S.REFUNDING),  # money arrived for a cancelled order: paid back
}


def test_table_is_exactly_the_documented_one() -> None:
    got = {(a, b) for a, nxt in TRANSITIONS.items() for b in nxt}
    assert got == LEGAL
    assert {S.COMPLETED, S.REFUNDED} == TERMINAL
    assert {S.COMPLETED, S.CANCELLED, S.REFUNDED} == CLOSED
    assert S.CANCELLED not in HOLDS_STOCK and S.REFUNDED not in HOLDS_STOCK
    assert S.PENDING_PAYMENT not in PAID_STATES
    assert sources(S.CANCELLED) == {S.PENDING_PAYMENT}


@given(st.sampled_from(list(S)), st.sampled_from(list(S)))
def test_every_pair_is_allowed_or_refused(a: OrderState, b: OrderState) -> None:
    if (a, b) in LEGAL:
        assert transition(a, b) is b
        assert can_transition(a, b)
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(a, b)
        assert err.value.current is a and err.value.target is b
        assert a.value in str(err.value)


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_random_walks_never_leave_the_graph(moves: list[OrderState]) -> None:
    state = S.PENDING_PAYMENT
    history = [state]
    for target in moves:
        try:
            state = transition(state, target)
            history.append(state)
        except IllegalTransition:
            assert not can_transition(state, target)
    # a paid order is never cancelled; a cancelled one is never paid (only refunded);
    # completed and refunded are final
    if S.PAID in history:
        assert S.CANCELLED not in history
    if S.CANCELLED in history:
        assert S.PAID not in history and S.SHIPPED not in history
    for terminal in TERMINAL:
        if terminal in history:
            assert history[-1] is terminal
    assert len(history) <= 5
