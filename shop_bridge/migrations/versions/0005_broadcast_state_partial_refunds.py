"""broadcasts: what control last said of them; partial refunds

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 06:30:00.000000

``shop_broadcasts`` learns the broadcast's lifecycle ``state`` (control's ``broadcast.*``
events) and where the row came from (``source``: ``control``, ``operator`` for ``PUT
/api/broadcasts/{id}/shop``, ``""`` for a placeholder the shop made itself, which is not
a broadcast it sells for). Rows from before are kept as ``legacy`` (known, state unknown).

Orders get ``refunded_fen`` (what was paid back so far) and every refund is a row of
``shop_refunds`` (amount, reason, who, when asked and when the provider confirmed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_broadcasts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=24), server_default="", nullable=False)
        )
        batch_op.add_column(
            sa.Column("source", sa.String(length=16), server_default="", nullable=False)
        )
    op.execute("UPDATE shop_broadcasts SET source = 'legacy'")
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("refunded_fen", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.create_table(
        "shop_refunds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=200), server_default="", nullable=False),
        sa.Column("actor", sa.String(length=64), server_default="", nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("full", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("done_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_shop_refunds_amount")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["shop_orders.id"],
            name=op.f("fk_shop_refunds_order_id_shop_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_refunds")),
    )
    with op.batch_alter_table("shop_refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shop_refunds_order_id"), ["order_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("shop_refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shop_refunds_order_id"))
    op.drop_table("shop_refunds")
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.drop_column("refunded_fen")
    with op.batch_alter_table("shop_broadcasts", schema=None) as batch_op:
        batch_op.drop_column("source")
        batch_op.drop_column("state")
