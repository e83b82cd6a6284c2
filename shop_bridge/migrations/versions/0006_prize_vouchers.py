"""prize vouchers: a redemption code per voucher prize, redeemed once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 07:10:00.000000

A lottery prize of kind ``voucher`` (an offline voucher) gets a redemption ``code`` the
winner shows; an operator redeems it once (``redeemed_ms``, ``redeemed_by``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_prize_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("code", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("redeemed_ms", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("redeemed_by", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_shop_prize_grants_code", ["code"], unique=True)
        batch_op.create_index("ix_shop_prize_grants_user", ["user_id", "created_ms"])


def downgrade() -> None:
    with op.batch_alter_table("shop_prize_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_shop_prize_grants_user")
        batch_op.drop_index("ix_shop_prize_grants_code")
        batch_op.drop_column("redeemed_by")
        batch_op.drop_column("redeemed_ms")
        batch_op.drop_column("code")
