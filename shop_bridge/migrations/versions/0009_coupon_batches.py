"""coupon batches: the idempotency key of an operator's coupon batch, with what it asked

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 11:00:00.000000

One row per ``idempotency_key`` a coupon batch was given under (``shop_bridge.coupons``):
a fingerprint of the request (the users as a set, the value, the broadcast, the note), how
many users, who and when. A repeat with the same fingerprint answers the first batch's
coupons; another fingerprint is 409 ``idempotency_key_reused``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shop_coupon_batches",
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False, server_default=""),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key", name=op.f("pk_shop_coupon_batches")),
    )


def downgrade() -> None:
    op.drop_table("shop_coupon_batches")
