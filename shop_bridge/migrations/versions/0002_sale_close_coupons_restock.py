"""flash sale close/settlement, coupons at checkout, stock return on refunds

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00.000000

Sales created before this revision did not take their stock from the SKU: ``carved`` is
false for them (nothing goes back to the SKU when they end). Orders get where their stock
went (``restock``), when they were cancelled, and their coupon and discount.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_flash_sales", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("carved", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch_op.add_column(sa.Column("closed_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("closed_by", sa.String(length=64), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("settled_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("returned_stock", sa.Integer(), server_default="0", nullable=False)
        )
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("restock", sa.String(length=8), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("cancelled_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("coupon_id", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("discount_fen", sa.BigInteger(), server_default="0", nullable=False)
        )
    # Orders cancelled before this revision: their cancellation time is their last update.
    op.execute(
        "UPDATE shop_orders SET cancelled_ms = updated_ms "
        "WHERE state = 'cancelled' AND cancelled_ms IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.drop_column("discount_fen")
        batch_op.drop_column("coupon_id")
        batch_op.drop_column("cancelled_ms")
        batch_op.drop_column("restock")
    with op.batch_alter_table("shop_flash_sales", schema=None) as batch_op:
        batch_op.drop_column("returned_stock")
        batch_op.drop_column("settled_ms")
        batch_op.drop_column("closed_by")
        batch_op.drop_column("closed_ms")
        batch_op.drop_column("carved")
