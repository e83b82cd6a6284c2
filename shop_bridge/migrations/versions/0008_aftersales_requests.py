"""after-sales requests: a buyer asks for a refund, an operator decides

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00.000000

One row per request (``shop_bridge.aftersales``): the order and its buyer, the kind
(``refund_only``, ``return_refund``), a reason code and the buyer's words, the amount asked
(and the amount approved), the state (``open``, ``approved``, ``refunded``, ``rejected``,
``withdrawn``), the operator's note, the refund made on approval, who and when. A partial
unique index keeps at most one ``open`` request per order (SQLite and PostgreSQL both
support it); ``claim`` is the short lease an approval holds while it asks for the refund.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_aftersales",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("order_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("broadcast_id", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("text", sa.String(length=500), nullable=False, server_default=""),
        sa.Column("amount_fen", sa.BigInteger(), nullable=False),
        sa.Column("approved_fen", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=False, server_default=""),
        sa.Column("refund_id", sa.String(length=32), nullable=True),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("claim_ms", sa.BigInteger(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.Column("decided_ms", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("closed_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("amount_fen > 0", name=op.f("ck_shop_aftersales_amount")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["shop_orders.id"],
            name=op.f("fk_shop_aftersales_order_id_shop_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_aftersales")),
    )
    op.create_index(
        "uq_shop_aftersales_open_order",
        "shop_aftersales",
        ["order_id"],
        unique=True,
        sqlite_where=sa.text("state = 'open'"),
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_index("ix_shop_aftersales_order", "shop_aftersales", ["order_id", "created_ms"])
    op.create_index("ix_shop_aftersales_user", "shop_aftersales", ["user_id", "created_ms"])
    op.create_index("ix_shop_aftersales_state", "shop_aftersales", ["state", "created_ms"])


def downgrade() -> None:
    op.drop_index("ix_shop_aftersales_state", table_name="shop_aftersales")
    op.drop_index("ix_shop_aftersales_user", table_name="shop_aftersales")
    op.drop_index("ix_shop_aftersales_order", table_name="shop_aftersales")
    op.drop_index("uq_shop_aftersales_open_order", table_name="shop_aftersales")
    op.drop_table("shop_aftersales")
