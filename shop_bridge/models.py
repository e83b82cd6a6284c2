"""Durable records of the shop (SQLAlchemy 2). Times are epoch milliseconds, money is fen.

Integer milliseconds rather than ``DateTime`` so SQLite and PostgreSQL store and compare the
same values; integer fen so no amount is ever a float. Table names start with ``shop_``;
the schema is created by the Alembic scripts in ``shop_bridge/migrations`` (version table
``alembic_version_shop``) and must be changed there, never by ``create_all``.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Product(Base):
    """A product (SPU); what is sold is one of its SKUs."""

    __tablename__ = "shop_products"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    images: Mapped[list[str]] = mapped_column(JSON, default=list)
    page_path: Mapped[str] = mapped_column(String(512), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Sku(Base):
    __tablename__ = "shop_skus"
    __table_args__ = (
        CheckConstraint("price_fen >= 0", name="price"),
        CheckConstraint("stock >= 0", name="stock"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("shop_products.id"), index=True)
    code: Mapped[str] = mapped_column(String(64), default="")
    specs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    price_fen: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int] = mapped_column(Integer)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class BroadcastInfo(Base):
    """What the shop knows of a broadcast (owned by control): its anchor and room."""

    __tablename__ = "shop_broadcasts"
    broadcast_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    anchor_id: Mapped[str] = mapped_column(String(64), default="")
    room: Mapped[str] = mapped_column(String(128), default="")
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(24), default="", server_default="")
    """The lifecycle state control last announced (``""``: not told)."""
    source: Mapped[str] = mapped_column(String(16), default="", server_default="")
    """``control`` (its events), ``operator`` (``PUT .../shop``), ``legacy`` (before 0005),
    ``""``: a placeholder row, not a broadcast the shop sells for."""


class ShelfItem(Base):
    """A product on a broadcast's goods shelf, in display order, on or off shelf."""

    __tablename__ = "shop_shelf"
    broadcast_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("shop_products.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    on_shelf: Mapped[bool] = mapped_column(Boolean, default=True)
    added_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Card(Base):
    """One "now explaining" card; ``cleared_ms`` is NULL while it is the room's current card."""

    __tablename__ = "shop_cards"
    __table_args__ = (
        Index(
            "uq_shop_cards_current_room",
            "room",
            unique=True,
            sqlite_where=text("cleared_ms IS NULL"),
            postgresql_where=text("cleared_ms IS NULL"),
        ),
        Index("ix_shop_cards_broadcast", "broadcast_id", "pushed_ms"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    broadcast_id: Mapped[str] = mapped_column(String(64))
    room: Mapped[str] = mapped_column(String(128))
    product_id: Mapped[int] = mapped_column(ForeignKey("shop_products.id"))
    sku_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flash_sale_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(64), default="")
    pushed_ms: Mapped[int] = mapped_column(BigInteger)
    cleared_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cleared_by: Mapped[str] = mapped_column(String(64), default="")


class FlashSale(Base):
    __tablename__ = "shop_flash_sales"
    __table_args__ = (
        CheckConstraint("sale_price_fen >= 0", name="price"),
        CheckConstraint("sale_stock >= 0", name="stock"),
        CheckConstraint("per_user_limit >= 1", name="user_limit"),
        CheckConstraint("ends_ms > starts_ms", name="window"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    broadcast_id: Mapped[str] = mapped_column(String(64), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("shop_products.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("shop_skus.id"))
    sale_price_fen: Mapped[int] = mapped_column(BigInteger)
    sale_stock: Mapped[int] = mapped_column(Integer)
    per_user_limit: Mapped[int] = mapped_column(Integer)
    starts_ms: Mapped[int] = mapped_column(BigInteger)
    ends_ms: Mapped[int] = mapped_column(BigInteger)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    carved: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("false"))
    """The sale stock was taken from the SKU's stock at creation (every sale since 0002);
    unsold and refunded units go back to the SKU. False for older sales (nothing goes back)."""
    closed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Set when an operator closed the sale before its end (buys refused from then on)."""
    closed_by: Mapped[str] = mapped_column(String(64), default="", server_default="")
    settled_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """Set once the sale is over and its unsold stock went back to the SKU (exactly once)."""
    returned_stock: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    """Unsold units given back to the SKU at settlement."""


class Order(Base):
    __tablename__ = "shop_orders"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_shop_orders_idem"),
        Index("ix_shop_orders_state_expires", "state", "expires_ms"),
        Index("ix_shop_orders_broadcast", "broadcast_id"),
        Index("ix_shop_orders_sale", "flash_sale_id"),
        CheckConstraint("quantity >= 1", name="quantity"),
        CheckConstraint("amount_fen >= 0", name="amount"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``flash`` (stock in Redis), ``normal`` (stock in shop_skus), ``prize`` (lottery)."""
    state: Mapped[str] = mapped_column(String(24))
    user_id: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[int] = mapped_column(Integer)
    sku_id: Mapped[int] = mapped_column(Integer)
    flash_sale_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_fen: Mapped[int] = mapped_column(BigInteger)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    broadcast_id: Mapped[str] = mapped_column(String(64), default="")
    anchor_id: Mapped[str] = mapped_column(String(64), default="")
    card_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    card_product_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    channel: Mapped[str] = mapped_column(String(32), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    paid_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    transaction_id: Mapped[str] = mapped_column(String(64), default="")
    stock_released: Mapped[bool] = mapped_column(Boolean, default=False)
    """Set once the order's stock went back (on cancellation, or when a refund completes);
    the release is idempotent."""
    restock: Mapped[str] = mapped_column(String(8), default="", server_default="")
    """Where the stock went when released: ``sale`` (the flash sale's Redis stock), ``sku``
    (the SKU's stock) or ``none`` (a sale from before stock was carved from the SKU)."""
    cancelled_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """When the order was cancelled (kept if a late payment then moves it to a refund)."""
    coupon_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    discount_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Coupon discount; ``amount_fen`` is what the buyer pays (list amount - discount)."""
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Paid back so far (confirmed refunds, :class:`Refund`); never above ``amount_fen``."""
    recipient: Mapped[str | None] = mapped_column(Text, nullable=True, default=None)
    """Who receives the goods, sealed (AES-GCM, :mod:`shop_bridge.recipients`): never
    plaintext. NULL until the buyer gives it (paying needs it)."""
    recipient_masked: Mapped[str | None] = mapped_column(String(400), nullable=True, default=None)
    """The recipient masked for lists, events and exports (JSON: name, phone, address)."""
    sharer_id: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    """The sharer (分享员) the order is credited to (:mod:`shop_bridge.sharers`)."""


class OrderTransition(Base):
    """The log of every state move of every order: when, by whom, why."""

    __tablename__ = "shop_order_transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("shop_orders.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(24), nullable=True)
    to_state: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(200), default="")
    at_ms: Mapped[int] = mapped_column(BigInteger)


class PaymentNotification(Base):
    """Every payment notification received, accepted or not (forgeries are evidence)."""

    __tablename__ = "shop_payment_notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    order_id: Mapped[str] = mapped_column(String(64), default="")
    transaction_id: Mapped[str] = mapped_column(String(64), default="")
    notify_id: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(500), default="")
    remote: Mapped[str] = mapped_column(String(64), default="")


class Coupon(Base):
    __tablename__ = "shop_coupons"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    value_fen: Mapped[int] = mapped_column(BigInteger)
    broadcast_id: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(200))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    used_order_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


class PrizeGrant(Base):
    """One row per lottery prize handed out: the primary key makes it exactly once."""

    __tablename__ = "shop_prize_grants"
    __table_args__ = (
        Index("ix_shop_prize_grants_code", "code", unique=True),
        Index("ix_shop_prize_grants_user", "user_id", "created_ms"),
        Index("ix_shop_prize_grants_created", "created_ms"),
        Index("ix_shop_prize_grants_lottery", "lottery_id", "created_ms"),
    )
    grant_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    lottery_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    coupon_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """A voucher prize's redemption code (``shop_bridge.vouchers``)."""
    redeemed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    redeemed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """The prize's name in its lottery (None on grants from before schema 0007)."""


class Address(Base):
    """One saved address of a buyer's address book (:mod:`shop_bridge.addresses`)."""

    __tablename__ = "shop_addresses"
    __table_args__ = (Index("ix_shop_addresses_user", "user_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64))
    sealed: Mapped[str] = mapped_column(Text)
    """Name, phone and address, sealed like an order's recipient."""
    masked: Mapped[str] = mapped_column(String(400))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class Sharer(Base):
    """A registered sharer (分享员): may make share links of any broadcast for themselves."""

    __tablename__ = "shop_sharers"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class BlockEntry(Base):
    """A blocked buyer: an account, a device or an IP (:mod:`shop_bridge.abuse`)."""

    __tablename__ = "shop_blocklist"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_shop_blocklist_entry"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``user``, ``device`` or ``ip``."""
    value: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    expires_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """NULL: until removed."""


class Refund(Base):
    """One refund of an order (whole or partial): asked, then confirmed by the provider."""

    __tablename__ = "shop_refunds"
    __table_args__ = (CheckConstraint("amount_fen > 0", name="amount"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("shop_orders.id"), index=True)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(200), default="", server_default="")
    actor: Mapped[str] = mapped_column(String(64), default="", server_default="")
    state: Mapped[str] = mapped_column(String(16))
    """``pending`` (asked of the provider) or ``done`` (confirmed)."""
    full: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """The refund that pays back what was left: the order becomes ``refunded``."""
    created_ms: Mapped[int] = mapped_column(BigInteger)
    done_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


def _table(cls: type[Base]) -> Table:
    return cast(Table, cls.__table__)


PRODUCTS = _table(Product)
SKUS = _table(Sku)
BROADCASTS = _table(BroadcastInfo)
SHELF = _table(ShelfItem)
CARDS = _table(Card)
SALES = _table(FlashSale)
ORDERS = _table(Order)
TRANSITIONS = _table(OrderTransition)
NOTIFICATIONS = _table(PaymentNotification)
COUPONS = _table(Coupon)
GRANTS = _table(PrizeGrant)
REFUNDS = _table(Refund)
ADDRESSES = _table(Address)
SHARERS = _table(Sharer)
BLOCKLIST = _table(BlockEntry)
