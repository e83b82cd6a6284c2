"""What a broadcast is: its record, its transition log entries, push info, list filters,
the domain errors, and the ``broadcast.*`` event of a record. No I/O.

:mod:`control.broadcasts` holds the service that stores and moves them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from control.events import BroadcastEvent
from control.lifecycle import State

SETTING_KEYS = ("comments", "likes", "replay", "sharing")
DEFAULT_SETTINGS = dict.fromkeys(SETTING_KEYS, True)
MAX_PRODUCTS = 200


class NotFound(LookupError):
    pass


class Conflict(Exception):
    """The request does not fit the broadcast's current state."""


@dataclass(frozen=True)
class Broadcast:
    id: int
    title: str
    description: str
    anchor_id: int | None
    app: str
    stream: str
    state: State
    scheduled_start: float
    scheduled_end: float | None
    product_ids: list[int]
    settings: dict[str, bool]
    cover: str | None
    key_version: str
    push_revoked: bool
    replay_url: str | None
    ban_reason: str | None
    created_at: float
    updated_at: float
    state_changed_at: float
    started_at: float | None
    ended_at: float | None
    reminder_count: int = 0

    @property
    def stream_path(self) -> str:
        return f"{self.app}/{self.stream}"


@dataclass(frozen=True)
class TransitionRecord:
    id: int
    broadcast_id: int
    previous: State | None
    state: State
    trigger: str
    reason: str
    actor: str
    at: float


@dataclass
class PushInfo:
    url: str
    server: str
    stream_key: str
    not_before: int
    expires_at: int
    key_version: str


@dataclass
class Filters:
    state: list[State] = field(default_factory=list)
    anchor_id: int | None = None
    start_from: float | None = None
    start_to: float | None = None


def settings_of(raw: Any) -> dict[str, bool]:
    out = dict(DEFAULT_SETTINGS)
    if isinstance(raw, dict):
        for k in SETTING_KEYS:
            if isinstance(raw.get(k), bool):
                out[k] = raw[k]
    return out


def broadcast_of_row(row: Any, reminder_count: int = 0) -> Broadcast:
    """A ``control_broadcasts`` row as a :class:`Broadcast`."""
    return Broadcast(
        id=row.id,
        title=row.title,
        description=row.description,
        anchor_id=row.anchor_id,
        app=row.app,
        stream=row.stream,
        state=State(row.state),
        scheduled_start=row.scheduled_start,
        scheduled_end=row.scheduled_end,
        product_ids=[int(p) for p in (row.product_ids or [])],
        settings=settings_of(row.settings),
        cover=row.cover,
        key_version=row.key_version,
        push_revoked=bool(row.push_revoked),
        replay_url=row.replay_url,
        ban_reason=row.ban_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        state_changed_at=row.state_changed_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        reminder_count=reminder_count,
    )


def new_key_version(closed: bool = False) -> str:
    """A fresh push-key version; ``closed`` (``x...``): ingest refuses every URL."""
    return ("x" if closed else "k") + secrets.token_hex(8)


def broadcast_event(topic: str, b: Broadcast, at: float, **extra: Any) -> BroadcastEvent:
    """The ``broadcast.*`` event of ``b`` (``extra``: previous, trigger, reason, actor...)."""
    return BroadcastEvent(
        topic=topic,
        id=b.id,
        broadcast_id=b.id,
        app=b.app,
        stream=b.stream,
        title=b.title,
        anchor_id=b.anchor_id,
        state=b.state.value,
        product_ids=tuple(b.product_ids),
        settings=dict(b.settings),
        at=at,
        **extra,
    )
