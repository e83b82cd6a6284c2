"""The one definition of what a broadcast sold: GMV, orders, buyers, refunds.

Every figure of sales anywhere (the console's live panel and ``GET
/api/broadcasts/{id}/stats``, ``/api/broadcasts/{id}/sales``, the live-room series,
``/metrics`` and the ``sales.updated`` event webhooks forward) is computed by
:func:`figures` from the order records (the database is the truth), never from counters
of events:

* a **sale** is an order that is not a lottery prize (``kind != 'prize'``: a 0-fen prize
  order is a gift, not a sale) and whose money came in: its state is ``paid``,
  ``shipped``, ``completed``, ``refunding`` or ``refunded``;
* ``paid_fen``: the sum of what the buyers paid for their sales (``amount_fen``: list
  price less the coupon's discount);
* ``refunded_fen``: what was given back to them (a refunded order's whole amount; a
  partial refund's amount once the provider confirmed it);
* ``gmv_fen = paid_fen - refunded_fen``;
* ``orders``: sales not refunded in full (``paid``, ``shipped``, ``completed``,
  ``refunding``); ``buyers``: the distinct users of those orders;
* ``units``: the quantity of those orders.

A refund that is still ``refunding`` (the provider has not confirmed) still counts: the
money is not back with the buyer yet. Orders placed but not paid, cancelled orders and
prize orders count nowhere (``orders_placed``, ``cancelled`` and ``prizes`` say how many
there were).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.sql.elements import ColumnElement

from shop_bridge.models import ORDERS
from shop_bridge.state import PAID_STATES, OrderState

__all__ = [
    "MONEY_IN",
    "Figures",
    "figures",
    "is_sale",
    "order_counts",
    "refunded_amount",
]

MONEY_IN: frozenset[OrderState] = PAID_STATES | {OrderState.REFUNDED}
"""States of an order whose money came in (and may have gone back)."""

PRIZE_KIND = "prize"


@dataclass(frozen=True, slots=True)
class Figures:
    """What one broadcast sold (see the module's docstring for each figure)."""

    gmv_fen: int = 0
    paid_fen: int = 0
    refunded_fen: int = 0
    orders: int = 0
    buyers: int = 0
    units: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def is_sale() -> ColumnElement[bool]:
    """An order that is a sale whose money came in (refunded since or not)."""
    o = ORDERS.c
    return (o.kind != PRIZE_KIND) & o.state.in_([s.value for s in MONEY_IN])


def order_counts() -> ColumnElement[bool]:
    """A sale that counts as an order (not refunded in full)."""
    o = ORDERS.c
    return (o.kind != PRIZE_KIND) & o.state.in_([s.value for s in PAID_STATES])


def refunded_amount() -> ColumnElement[Any]:
    """What was given back for one order: all of it once ``refunded``, else the partial
    refunds the provider confirmed (``refunded_fen``)."""
    o = ORDERS.c
    return case((o.state == OrderState.REFUNDED.value, o.amount_fen), else_=o.refunded_fen)


async def figures(conn: Any, broadcast_ids: list[str]) -> dict[str, Figures]:
    """The figures of each broadcast (one query; broadcasts with no sale get zeros)."""
    out = {b: Figures() for b in broadcast_ids}
    if not broadcast_ids:
        return out
    o = ORDERS.c
    counted = order_counts()
    rows = (
        await conn.execute(
            select(
                o.broadcast_id,
                func.coalesce(func.sum(o.amount_fen), 0),
                func.coalesce(func.sum(refunded_amount()), 0),
                func.coalesce(func.sum(case((counted, 1), else_=0)), 0),
                func.count(func.distinct(case((counted, o.user_id), else_=None))),
                func.coalesce(func.sum(case((counted, o.quantity), else_=0)), 0),
            )
            .where(o.broadcast_id.in_(broadcast_ids), is_sale())
            .group_by(o.broadcast_id)
        )
    ).all()
    for bid, paid, refunded, orders, buyers, units in rows:
        out[str(bid)] = Figures(
            gmv_fen=int(paid) - int(refunded),
            paid_fen=int(paid),
            refunded_fen=int(refunded),
            orders=int(orders),
            buyers=int(buyers),
            units=int(units),
        )
    return out
