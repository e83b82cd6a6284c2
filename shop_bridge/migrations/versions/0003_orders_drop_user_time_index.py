"""orders: drop the (user_id, created_ms) index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:30:00.000000

Every order insert paid for two B-trees keyed by the (random) user id: this one and the
unique (user_id, idempotency_key) index. A buyer's order list (``WHERE user_id = ? ORDER
BY created_ms DESC``) is served by the unique index's user prefix and a sort of that
user's few orders, and each flash-sale commit writes half as many random index pages.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_shop_orders_user")


def downgrade() -> None:
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.create_index("ix_shop_orders_user", ["user_id", "created_ms"], unique=False)
