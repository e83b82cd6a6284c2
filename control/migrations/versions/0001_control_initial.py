"""control: users, tokens, broadcasts, transitions, reminders, webhooks, deliveries

Revision ID: control_0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "control_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "control_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "control_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("control_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False, server_default=""),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("last_used_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_index("ix_control_tokens_user", "control_tokens", ["user_id"])
    op.create_table(
        "control_broadcasts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column(
            "anchor_id",
            sa.Integer,
            sa.ForeignKey("control_users.id", ondelete="RESTRICT"),
            nullable=True,
        ),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("scheduled_start", sa.Float, nullable=False),
        sa.Column("scheduled_end", sa.Float, nullable=True),
        sa.Column("product_ids", sa.JSON, nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("cover", sa.String(128), nullable=True),
        sa.Column("key_version", sa.String(64), nullable=False),
        sa.Column("push_revoked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("replay_url", sa.String(1024), nullable=True),
        sa.Column("ban_reason", sa.String(500), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("state_changed_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.UniqueConstraint("app", "stream", name="uq_control_broadcasts_stream"),
    )
    op.create_index("ix_control_broadcasts_state", "control_broadcasts", ["state"])
    op.create_index("ix_control_broadcasts_start", "control_broadcasts", ["scheduled_start"])
    op.create_table(
        "control_transitions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "broadcast_id",
            sa.Integer,
            sa.ForeignKey("control_broadcasts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("previous", sa.String(16), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("actor", sa.String(128), nullable=False, server_default=""),
        sa.Column("at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_control_transitions_broadcast", "control_transitions", ["broadcast_id", "id"]
    )
    op.create_table(
        "control_reminders",
        sa.Column(
            "broadcast_id",
            sa.Integer,
            sa.ForeignKey("control_broadcasts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("subscriber", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("notified_at", sa.Float, nullable=True),
    )
    op.create_table(
        "control_webhooks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("url", sa.String(1024), nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "control_webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "webhook_id",
            sa.Integer,
            sa.ForeignKey("control_webhooks.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=True),
        sa.Column("last_status", sa.Integer, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_control_delivery_event"),
    )
    op.create_index(
        "ix_control_deliveries_due", "control_webhook_deliveries", ["status", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_table("control_webhook_deliveries")
    op.drop_table("control_webhooks")
    op.drop_table("control_reminders")
    op.drop_table("control_transitions")
    op.drop_table("control_broadcasts")
    op.drop_table("control_tokens")
    op.drop_table("control_users")
