"""prize names: what was won, kept with the grant; prizes listed by time and by lottery

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 09:40:00.000000

A grant keeps the prize's ``name`` from the lottery (rows from before have none: the
operators' listing names them from their order's product or their coupon's value). The
operators list prizes newest first, all or of one lottery.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shop_prize_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_shop_prize_grants_created", ["created_ms"])
        batch_op.create_index("ix_shop_prize_grants_lottery", ["lottery_id", "created_ms"])


def downgrade() -> None:
    with op.batch_alter_table("shop_prize_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_shop_prize_grants_lottery")
        batch_op.drop_index("ix_shop_prize_grants_created")
        batch_op.drop_column("name")
