"""Events the shop publishes on the bus (the contract; see ``docs/events.md``).

``broadcast_id`` is control's integer id in every payload (``None``: the order belongs to
no broadcast); the shop stores it as text and converts at this edge
(:mod:`shop_bridge.broadcast_ids`).

The JSON payloads are what they were before the events were typed: every class lists the
fields of its payload in the order they travel (``kw_only``, so optional ones need not
come last), and a field that only some events of a class carry (``reason`` of a cleared
card, the two shapes of ``shelf.updated``) is left out of the payload when it is ``None``.

The buy path does not build these instances: ``order.created`` of a flash-sale buy is
queued as the plain dict :func:`order_payload` (thousands a second, on the event loop
that answers the buyers); the classes below decode it to the same value (a test holds
them equal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Self, cast

from core.events import BusEvent
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.state import OrderState

__all__ = [
    "ORDER_EVENTS",
    "AfterSalesDecided",
    "AfterSalesRequested",
    "CardEvent",
    "FlashSaleClosed",
    "FlashSaleCreated",
    "FlashSaleSettled",
    "FlashSaleUpdated",
    "OrderCancelled",
    "OrderCompleted",
    "OrderCreated",
    "OrderEvent",
    "OrderPaid",
    "OrderPaymentLate",
    "OrderRefunded",
    "OrderRefunding",
    "OrderShipped",
    "PrizeGranted",
    "RefundCompleted",
    "SalesUpdated",
    "ShelfUpdated",
    "order_moved",
    "order_payload",
]


def _without_none(event: BusEvent, optional: tuple[str, ...]) -> dict[str, Any]:
    data = BusEvent.to_data(event)
    for name in optional:
        if data[name] is None:
            del data[name]
    return data


# -- the "now explaining" card and the shelf ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CardEvent(BusEvent, topic="card.*"):
    """``card.pushed`` (a card is shown in a room) and ``card.cleared`` (it is gone:
    ``reason`` ``cleared``, or ``replaced`` by the next push, which comes right after)."""

    topic: str
    card_id: int
    broadcast_id: int | None
    room: str
    anchor_id: str
    product_id: int
    sku_id: int | None
    flash_sale_id: int | None
    actor: str
    ts: float
    """When it was pushed (``card.pushed``) or cleared (``card.cleared``), Unix seconds."""
    pushed_ts: float
    reason: str | None = None
    """``card.cleared`` only."""

    def to_data(self) -> dict[str, Any]:
        return _without_none(self, ("reason",))


@dataclass(frozen=True, slots=True, kw_only=True)
class ShelfUpdated(BusEvent, topic="shelf.updated"):
    """The whole shelf replaced (``product_ids``) or one product put on or off it
    (``product_id``, ``on_shelf``)."""

    broadcast_id: int | None
    product_ids: tuple[int, ...] | None = None
    product_id: int | None = None
    on_shelf: bool | None = None
    actor: str
    ts: float

    def to_data(self) -> dict[str, Any]:
        return _without_none(self, ("product_ids", "product_id", "on_shelf"))


# -- flash sales ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _SaleView:
    """The fields of a flash sale's API view (:func:`shop_bridge.views.sale_view`)."""

    id: int
    broadcast_id: int | None
    product_id: int
    sku_id: int
    sale_price_fen: int
    sale_stock: int
    remaining: int | None
    per_user_limit: int
    starts_at: str | None
    ends_at: str | None
    status: str
    closed_at: str | None
    closed_by: str | None
    settled_at: str | None
    returned_stock: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FlashSaleCreated(_SaleView, BusEvent, topic="flash_sale.created"):
    room: str
    anchor_id: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FlashSaleUpdated(_SaleView, BusEvent, topic="flash_sale.updated"):
    """A live sale changed; ``changed`` names what (``ends_at``, ``per_user_limit``,
    ``sale_stock``)."""

    changed: tuple[str, ...]
    room: str
    anchor_id: str
    actor: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FlashSaleClosed(_SaleView, BusEvent, topic="flash_sale.closed"):
    """An operator ended the sale early: buys are refused from now on."""

    room: str
    anchor_id: str
    actor: str
    reason: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FlashSaleSettled(BusEvent, topic="flash_sale.settled"):
    """The sale is over and its unsold units went back to the SKU."""

    id: int
    broadcast_id: int | None
    sku_id: int
    returned_stock: int
    room: str
    ts: float


# -- orders -----------------------------------------------------------------------------


def order_payload(order: dict[str, Any], actor: str) -> dict[str, Any]:
    """The payload of an ``order.<state>`` event for an order row (as a dict: the buy path
    queues it as it is; see :class:`OrderEvent`)."""
    return {
        "order_id": order["id"],
        "state": order["state"],
        "kind": order["kind"],
        "user_id": order["user_id"],
        "broadcast_id": to_wire(order["broadcast_id"]),
        "anchor_id": order["anchor_id"],
        "product_id": order["product_id"],
        "sku_id": order["sku_id"],
        "flash_sale_id": order["flash_sale_id"],
        "quantity": order["quantity"],
        "amount_fen": order["amount_fen"],
        "card_id": order["card_id"],
        "channel": order["channel"],
        "actor": actor,
        "ts": order["updated_ms"] / 1000,
        "sharer_id": order.get("sharer_id"),
        "recipient": _masked(order.get("recipient_masked")),
    }


def _masked(raw: str | None) -> dict[str, str] | None:
    """The masked recipient stored with the order (never the sealed one)."""
    return json.loads(raw) if raw else None


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent:
    """The payload every ``order.<state>`` event carries (one class per state below, so a
    subscriber names the move it wants; ``order.payment_late`` is another shape)."""

    order_id: str
    state: str
    kind: str
    """``flash``, ``normal`` or ``prize``."""
    user_id: str
    broadcast_id: int | None
    anchor_id: str
    product_id: int
    sku_id: int
    flash_sale_id: int | None
    quantity: int
    amount_fen: int
    card_id: int | None
    channel: str
    actor: str
    """Who made the move (the buyer for ``order.created``)."""
    ts: float
    sharer_id: str | None = None
    """The sharer (分享员) the order is credited to (:mod:`shop_bridge.sharers`)."""
    recipient: dict[str, str] | None = None
    """The recipient, **masked** (``张*``, ``138****1234``, ``广东省深圳市****``)."""

    @classmethod
    def of(cls, order: dict[str, Any], actor: str) -> Self:
        """The event of an order row, ``actor`` having made the move."""
        return cls(**order_payload(order, actor))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCreated(OrderEvent, BusEvent, topic="order.created"):
    """Published after the order row is committed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPaid(OrderEvent, BusEvent, topic="order.paid"):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderShipped(OrderEvent, BusEvent, topic="order.shipped"):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCompleted(OrderEvent, BusEvent, topic="order.completed"):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderCancelled(OrderEvent, BusEvent, topic="order.cancelled"):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRefunding(OrderEvent, BusEvent, topic="order.refunding"):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderRefunded(OrderEvent, BusEvent, topic="order.refunded"):
    pass


ORDER_EVENTS: dict[OrderState, type[OrderEvent]] = {
    OrderState.PENDING_PAYMENT: OrderCreated,
    OrderState.PAID: OrderPaid,
    OrderState.SHIPPED: OrderShipped,
    OrderState.COMPLETED: OrderCompleted,
    OrderState.CANCELLED: OrderCancelled,
    OrderState.REFUNDING: OrderRefunding,
    OrderState.REFUNDED: OrderRefunded,
}
"""The event published after a move into each state (``order.created`` for a new order)."""


def order_moved(state: OrderState, order: dict[str, Any], actor: str) -> BusEvent:
    """The event of ``order`` having moved into ``state`` (``actor`` moved it)."""
    return cast(BusEvent, ORDER_EVENTS[state].of(order, actor))


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderPaymentLate(BusEvent, topic="order.payment_late"):
    """Money arrived for a cancelled order; it is being paid back (``order.refunding``,
    then ``order.refunded`` once the provider confirms)."""

    order_id: str
    transaction_id: str
    amount_fen: int
    refund: str
    ts: float


# -- lottery prizes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PrizeGranted(BusEvent, topic="prize.granted"):
    """A lottery winner's prize, granted once per ``grant_key``."""

    grant_key: str
    lottery_id: str
    user_id: str
    kind: str
    """``coupon``, ``product`` or ``manual`` (for the operators)."""
    coupon_id: str | None
    order_id: str | None
    status: str
    """``granted``, ``manual`` or ``failed_no_stock``."""
    created_ms: int
    broadcast_id: int | None


# -- sales figures ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SalesUpdated(BusEvent, topic="sales.updated"):
    """A broadcast's sales figures after orders of it were paid or refunded (at most one
    event per broadcast per second from the node that moved them). The figures follow the
    one definition of :mod:`shop_bridge.gmv`: the same numbers as the live panel,
    ``/sales``, the series and ``/metrics``."""

    broadcast_id: int
    gmv_fen: int
    paid_fen: int
    refunded_fen: int
    orders: int
    buyers: int
    units: int
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundCompleted(BusEvent, topic="refund.completed"):
    """The provider confirmed a refund (partial, or the last one: ``full``)."""

    refund_id: str
    order_id: str
    broadcast_id: int | None
    user_id: str
    amount_fen: int
    refunded_fen: int
    """Paid back for the order so far, this refund included."""
    full: bool
    reason: str
    actor: str
    ts: float


# -- after-sales ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AfterSalesRequested(BusEvent, topic="aftersales.requested"):
    """A buyer asked for after-sales (a refund) of their order (``shop_bridge.aftersales``)."""

    request_id: str
    order_id: str
    broadcast_id: int | None
    user_id: str
    kind: str
    """``refund_only`` or ``return_refund``."""
    reason: str
    """The reason code (``not_as_described``, ``damaged``, ``wrong_item``,
    ``no_longer_wanted``, ``other``)."""
    amount_fen: int
    """The amount asked."""
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AfterSalesDecided(BusEvent, topic="aftersales.decided"):
    """An operator decided a request: ``approved`` (the refund is under way; its
    ``refund.completed`` follows) or ``rejected`` (``note`` says why)."""

    request_id: str
    order_id: str
    broadcast_id: int | None
    user_id: str
    state: str
    amount_fen: int
    """Approved: the amount being refunded; rejected: the amount that was asked."""
    note: str
    actor: str
    ts: float
