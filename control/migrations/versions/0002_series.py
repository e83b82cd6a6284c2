"""the live-room series: one row per broadcast and step, and the show's summary

Revision ID: control_0002
Revises: control_0001
Create Date: 2026-12-05 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "control_0002"
down_revision = "control_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_series_points",
        sa.Column("broadcast_id", sa.Integer(), nullable=False),
        sa.Column("t", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["control_broadcasts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id", "t"),
    )
    op.create_table(
        "control_broadcast_summaries",
        sa.Column("broadcast_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["broadcast_id"], ["control_broadcasts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id"),
    )


def downgrade() -> None:
    op.drop_table("control_broadcast_summaries")
    op.drop_table("control_series_points")
