"""Events the danmaku hub publishes on the bus (the contract; see ``docs/events.md``).

Optional fields travel only when they apply: a field left at ``None`` is not in the JSON
payload (:func:`_sparse`), so the wire format is what it was before the events
were typed, and an older node's payload decodes with those fields at ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.events import BusEvent

__all__ = ["DanmakuComment", "DanmakuLike", "DanmakuModeration", "LotteryPrize"]


def _sparse(event: BusEvent) -> dict[str, Any]:
    """The payload without the fields left at ``None``."""
    return {k: v for k, v in BusEvent.to_data(event).items() if v is not None}


@dataclass(frozen=True, slots=True)
class LotteryPrize(BusEvent, topic="lottery.prize"):
    """One per winner, published once by the node that drew (``n`` is unique per lottery)."""

    lottery_id: str
    room: str
    user_id: str
    nick: str
    prize: dict[str, Any]
    """``{name, stock, sku?, coupon?, value_fen?, ...}`` as the lottery declared it."""
    prize_index: int
    n: int
    mode: str
    title: str = ""


@dataclass(frozen=True, slots=True)
class DanmakuModeration(BusEvent, topic="danmaku.moderation"):
    """A moderation action applied (already audited)."""

    room: str
    action: str
    target: str
    actor: dict[str, str] = field(default_factory=dict)
    """``{id, role, via}``"""
    user_id: str | None = None
    until: float | None = None
    """Unix seconds; 0 = until lifted."""
    slow_mode_s: float | None = None
    room_muted: bool | None = None
    comment_id: str | None = None
    reason: str | None = None

    def to_data(self) -> dict[str, Any]:
        return _sparse(self)


@dataclass(frozen=True, slots=True)
class DanmakuComment(BusEvent, topic="danmaku.comment"):
    """Comments one node accepted in ``room`` since its last report."""

    room: str
    count: int
    broadcast_id: int | None = None

    def to_data(self) -> dict[str, Any]:
        return _sparse(self)


@dataclass(frozen=True, slots=True)
class DanmakuLike(BusEvent, topic="danmaku.like"):
    """Likes one node accepted in ``room`` since its last report."""

    room: str
    count: int
    broadcast_id: int | None = None

    def to_data(self) -> dict[str, Any]:
        return _sparse(self)
