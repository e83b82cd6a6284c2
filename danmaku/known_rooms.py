"""Which rooms exist: the rooms anonymous sockets may open.

A room exists for a broadcast (from control's ``broadcast.*`` events) and for a stream
being published (ingest's ``stream.published``), recorded in one sorted set in Redis (every
node sees it) scored by when the entry lapses: ``room_ttl_s`` after the last such event;
``broadcast.deleted``/``banned``/``cancelled`` remove it. A room some node has open with
members (its presence hash exists) counts too.

A viewer with a token (issued by the app backend or control) may open any room; a socket
without one may only join a room that exists, so anonymous sockets cannot open rooms up to
``max_rooms`` and leave real rooms answering ``busy`` (``danmaku.anonymous_rooms =
"known"``, the default; ``"any"`` turns the check off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from danmaku.keys import REDIS_TIMEOUT, Keys

__all__ = ["CLOSING_STATES", "KnownRooms"]

logger = logging.getLogger(__name__)

CLOSING_STATES = frozenset({"deleted", "banned", "cancelled"})
"""Broadcast events after which its room stops existing."""

CACHE_S = 5.0
"""How long this node trusts a positive answer without asking Redis again."""
CACHE_MAX = 10000


class KnownRooms:
    def __init__(self, redis: Any, keys: Keys, ttl_s: float) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._seen: dict[str, float] = {}

    @property
    def key(self) -> str:
        return f"{self.keys.prefix}rooms:known"

    async def add(self, room: str) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.key, {room: now + self.ttl_s})
        pipe.zremrangebyscore(self.key, "-inf", now)  # lapsed entries go
        await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)

    async def remove(self, room: str) -> None:
        self._seen.pop(room, None)
        await asyncio.wait_for(self.redis.zrem(self.key, room), REDIS_TIMEOUT)

    async def exists(self, room: str) -> bool:
        now = time.monotonic()
        if self._seen.get(room, 0.0) > now:
            return True
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(self.key, room)
        pipe.exists(self.keys.presence(room))
        until, present = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        found = bool(present) or (until is not None and float(until) > time.time())
        if found:
            if len(self._seen) >= CACHE_MAX:
                self._seen.clear()
            self._seen[room] = now + CACHE_S
        return found
