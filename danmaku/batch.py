"""Per-room merge buffer: everything a room's clients get in one tick, bounded, sans-I/O.

Ordinary comments beyond ``max_comments`` per tick are reservoir-sampled (uniform, memory
bounded by ``max_comments``); anchor/moderator/operator comments are always kept (up to
``max_priority`` per tick). :meth:`RoomBuffer.flush` returns the batch payload (see
``docs/danmaku.md``) or ``None`` when there is nothing new.
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["RoomBuffer"]

MAX_NOTICES_PER_TICK = 64
MAX_DELETED_PER_TICK = 256
MAX_DIRECT_PER_TICK = 1024


class RoomBuffer:
    def __init__(self, room: str, max_comments: int, max_priority: int, rng: random.Random) -> None:
        self.room = room
        self.max_comments = max(1, max_comments)
        self.max_priority = max(1, max_priority)
        self._rng = rng
        self._seq = 0
        self._ordinary: list[tuple[int, dict[str, Any]]] = []
        self._seen_ordinary = 0
        self._priority: list[tuple[int, dict[str, Any]]] = []
        self.priority_dropped = 0
        self.notices: list[dict[str, Any]] = []
        self.notices_dropped = 0
        self.deleted: list[str] = []
        self.like_delta = 0
        self.likes_total = 0
        self.joins = 0
        self.leaves = 0
        self.online = 0
        self._sent_online = -1
        self.batch_seq = 0
        self.sampled_out_total = 0

    def add_comment(self, comment: dict[str, Any], privileged: bool) -> None:
        self._seq += 1
        item = (self._seq, comment)
        if privileged:
            if len(self._priority) < self.max_priority:
                self._priority.append(item)
            else:
                self.priority_dropped += 1
            return
        self._seen_ordinary += 1
        if len(self._ordinary) < self.max_comments:
            self._ordinary.append(item)
            return
        j = self._rng.randrange(self._seen_ordinary)
        if j < self.max_comments:
            self._ordinary[j] = item

    def add_likes(self, delta: int, total: int | None = None) -> None:
        self.like_delta += delta
        if total is not None:
            self.likes_total = max(self.likes_total, total)
        else:
            self.likes_total += delta

    def add_notice(self, notice: dict[str, Any]) -> None:
        if len(self.notices) < MAX_NOTICES_PER_TICK:
            self.notices.append(notice)
        else:
            self.notices_dropped += 1

    def add_deleted(self, comment_id: str) -> None:
        if len(self.deleted) < MAX_DELETED_PER_TICK:
            self.deleted.append(comment_id)

    def pending(self) -> bool:
        return bool(
            self._ordinary
            or self._priority
            or self.notices
            or self.deleted
            or self.like_delta
            or self.joins
            or self.leaves
            or self.online != self._sent_online
        )

    def flush(self) -> dict[str, Any] | None:
        if not self.pending():
            return None
        items = self._priority + self._ordinary
        items.sort(key=lambda it: it[0])
        batch: dict[str, Any] = {"room": self.room, "comments": [c for _, c in items]}
        self.batch_seq += 1
        batch["seq"] = self.batch_seq
        seen = self._seen_ordinary
        kept = len(self._ordinary)
        if seen > kept:
            batch["sample"] = {"rate": round(kept / seen, 4), "kept": kept, "seen": seen}
            self.sampled_out_total += seen - kept
        if self.like_delta:
            batch["likes"] = {"total": self.likes_total, "delta": self.like_delta}
        if self.online != self._sent_online or self.joins or self.leaves:
            batch["presence"] = {"online": self.online, "joins": self.joins, "leaves": self.leaves}
            self._sent_online = self.online
        if self.notices:
            batch["notices"] = self.notices
        if self.deleted:
            batch["deleted"] = self.deleted
        self._ordinary = []
        self._priority = []
        self._seen_ordinary = 0
        self.notices = []
        self.deleted = []
        self.like_delta = 0
        self.joins = 0
        self.leaves = 0
        return batch
