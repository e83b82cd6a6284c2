"""Room state as one node sees it: members, the merge buffer, recent comments, and the
cached moderation state (mutes, bans, slow mode, room mute).

A :class:`Member` is one client in one room, reached through its :class:`Connection`
(the owned websocket of :mod:`danmaku.websocket`, or python-socketio for polling clients:
:mod:`danmaku.namespace`).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.tokens import Role, Viewer
from danmaku.batch import RoomBuffer
from danmaku.config import DanmakuConfig
from danmaku.wire import Outbound

__all__ = ["Connection", "Member", "Room"]


class Connection(Protocol):
    """Where a member's packets go, in the order :meth:`send` is called."""

    closed: bool
    """The client is gone (nothing more is sent)."""
    direct: bool
    """True when :meth:`send` writes the pre-built frame itself (the websocket path)."""

    def send(self, out: Outbound) -> bool:
        """Send (or queue in order) one packet; False if the client is too far behind."""
        ...

    async def disconnect(self) -> None:
        """Leave the namespace from the server side (kick, shutdown); the client is told."""
        ...

    async def drop(self) -> None:
        """Close the whole connection now, discarding what is unsent (a slow client)."""
        ...


@dataclass(eq=False, slots=True)
class Member:
    sid: str
    conn: Connection | None
    viewer: Viewer | None
    role: Role
    room: str
    dropped: bool = False
    joined_at: float = field(default_factory=time.monotonic)
    """When this connection joined (monotonic): a lottery's ``min_watch_s`` counts from it."""
    ip: str = ""
    """The client's address and device id (``auth.device``): the lottery entry's abuse
    checks (:mod:`core.abuse`)."""
    device: str = ""

    @property
    def user_id(self) -> str | None:
        return self.viewer.user_id if self.viewer else None


class Room:
    def __init__(self, name: str, channel: str, config: DanmakuConfig, rng: random.Random) -> None:
        self.name = name
        self.channel = channel
        self.members: dict[str, Member] = {}
        self.buffer = RoomBuffer(name, config.batch_max_comments, config.batch_max_priority, rng)
        self.recent: deque[dict[str, Any]] = deque()
        self.recent_ids: set[str] = set()
        self.recent_max = max(1, config.history_size)
        self.muted: dict[str, float] = {}
        self.banned: dict[str, float] = {}
        self.slow_mode_s = 0.0
        self.room_muted = False
        self.state_loaded = False
        self.last_comment: OrderedDict[str, float] = OrderedDict()
        self.lotteries: dict[str, dict[str, Any]] = {}
        self.empty_since: float | None = None
        self.unreported_comments = 0
        self.unreported_likes = 0

    @property
    def tracks_users(self) -> bool:
        """An open lottery here draws among those present: report who is."""
        return any(info.get("present_at_draw") for info in self.lotteries.values())

    def remember(self, comment: dict[str, Any]) -> bool:
        """Record a comment delivered to this room; False if it was seen already."""
        cid = comment.get("id")
        if not isinstance(cid, str) or cid in self.recent_ids:
            return False
        if len(self.recent) >= self.recent_max:
            old = self.recent.popleft()
            self.recent_ids.discard(old.get("id", ""))
        self.recent.append(comment)
        self.recent_ids.add(cid)
        return True

    def forget(self, comment_id: str) -> None:
        if comment_id in self.recent_ids:
            self.recent_ids.discard(comment_id)
            self.recent = deque(c for c in self.recent if c.get("id") != comment_id)

    @staticmethod
    def _active(table: dict[str, float], user_id: str | None, now: float) -> float | None:
        if user_id is None:
            return None
        until = table.get(user_id)
        if until is None:
            return None
        if until and until <= now:
            del table[user_id]
            return None
        return until

    def muted_until(self, user_id: str | None, now: float) -> float | None:
        return self._active(self.muted, user_id, now)

    def banned_until(self, user_id: str | None, now: float) -> float | None:
        return self._active(self.banned, user_id, now)

    def apply_state(self, fields: dict[str, str]) -> None:
        """Load the moderation hash (``mute:<uid>``, ``ban:<uid>``, ``slow``, ``rmute``)."""
        muted: dict[str, float] = {}
        banned: dict[str, float] = {}
        for k, v in fields.items():
            if k.startswith("mute:"):
                muted[k[5:]] = float(v)
            elif k.startswith("ban:"):
                banned[k[4:]] = float(v)
        self.muted, self.banned = muted, banned
        self.slow_mode_s = float(fields.get("slow", 0) or 0)
        self.room_muted = fields.get("rmute", "0") == "1"
        self.state_loaded = True
