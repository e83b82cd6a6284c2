"""Tables of the control plane (SQLAlchemy Core; migrations in ``control/migrations``).

Times are stored as float Unix seconds (UTC) so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

users = sa.Table(
    "control_users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)

tokens = sa.Table(
    "control_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "user_id", sa.Integer, sa.ForeignKey("control_users.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("kind", sa.String(16), nullable=False),  # session | api
    sa.Column("name", sa.String(128), nullable=False, server_default=""),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Index("ix_control_tokens_user", "user_id"),
)

broadcasts = sa.Table(
    "control_broadcasts",
    metadata,
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
    sa.Index("ix_control_broadcasts_state", "state"),
    sa.Index("ix_control_broadcasts_start", "scheduled_start"),
)

transitions = sa.Table(
    "control_transitions",
    metadata,
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
    sa.Index("ix_control_transitions_broadcast", "broadcast_id", "id"),
)

reminders = sa.Table(
    "control_reminders",
    metadata,
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

webhooks = sa.Table(
    "control_webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("url", sa.String(1024), nullable=False),
    sa.Column("secret", sa.String(128), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("description", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

deliveries = sa.Table(
    "control_webhook_deliveries",
    metadata,
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
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.UniqueConstraint("webhook_id", "event_id", name="uq_control_delivery_event"),
    sa.Index("ix_control_deliveries_due", "status", "next_attempt_at"),
)

series_points = sa.Table(
    "control_series_points",
    metadata,
    sa.Column(
        "broadcast_id",
        sa.Integer,
        sa.ForeignKey("control_broadcasts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("t", sa.Integer, primary_key=True),  # the step's start, Unix seconds (UTC)
    sa.Column("data", sa.JSON, nullable=False),  # one point (control.series)
)

broadcast_summaries = sa.Table(
    "control_broadcast_summaries",
    metadata,
    sa.Column(
        "broadcast_id",
        sa.Integer,
        sa.ForeignKey("control_broadcasts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("data", sa.JSON, nullable=False),  # peak and unique viewers, totals
    sa.Column("updated_at", sa.Float, nullable=False),
)
