"""order core: sealed recipients, address book, sharers, blocklist

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 06:30:00.000000

Orders get their recipient (sealed with AES-GCM, plus a masked copy for lists) and the
sharer they are credited to. New tables: the buyers' address books, the registered
sharers and the blocklist of accounts, devices and IPs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("recipient_masked", sa.String(length=400), nullable=True))
        batch_op.add_column(sa.Column("sharer_id", sa.String(length=64), nullable=True))
    op.create_table(
        "shop_addresses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("masked", sa.String(length=400), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_addresses")),
    )
    op.create_index("ix_shop_addresses_user", "shop_addresses", ["user_id", "id"], unique=False)
    op.create_table(
        "shop_sharers",
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_shop_sharers")),
    )
    op.create_table(
        "shop_blocklist",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shop_blocklist")),
        sa.UniqueConstraint("kind", "value", name="uq_shop_blocklist_entry"),
    )


def downgrade() -> None:
    op.drop_table("shop_blocklist")
    op.drop_table("shop_sharers")
    op.drop_index("ix_shop_addresses_user", table_name="shop_addresses")
    op.drop_table("shop_addresses")
    with op.batch_alter_table("shop_orders", schema=None) as batch_op:
        batch_op.drop_column("sharer_id")
        batch_op.drop_column("recipient_masked")
        batch_op.drop_column("recipient")
