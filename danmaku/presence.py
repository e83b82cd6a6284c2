"""Presence: how many are online in a room, over every node.

Every ``presence_interval_s`` each node writes ``<members here>:<unix time>`` under its id
in the room's presence hash and reads the whole hash back (with the like total) in one
pipeline; the room's ``online`` is the sum of the fresh entries. Entries of nodes silent
for three intervals (plus a second) are removed: a crashed node stops counting, and the
hash itself expires ten intervals (at least a minute) after the last node wrote. Between
rounds, joins and leaves (here and from the envelopes) move ``online`` at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from danmaku.keys import REDIS_TIMEOUT, Keys, decode
from danmaku.rooms import Room

__all__ = ["Presence"]

STALE_ROUNDS = 3
"""A node silent this many presence rounds (plus a second) no longer counts."""


class Presence:
    def __init__(self, redis: Any, keys: Keys, node_id: str, interval_s: float = 5.0) -> None:
        self.redis = redis
        self.ttl_s = max(60, int(interval_s * 10))
        self.interval = interval_s
        self.keys = keys
        self.node_id = node_id

    async def round(self, rooms: list[Room], interval: float) -> None:
        """One round for ``rooms`` (raises on a Redis failure: the caller counts it)."""
        if not rooms:
            return
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for room in rooms:
            key = self.keys.presence(room.name)
            if room.members:
                pipe.hset(key, self.node_id, f"{len(room.members)}:{now:.3f}")
            else:
                pipe.hdel(key, self.node_id)
            pipe.expire(key, self.ttl_s)
            pipe.hgetall(key)
            pipe.get(self.keys.likes(room.name))
        for room in rooms:  # who is here, by user, for lotteries drawn among those present
            if room.members and room.tracks_users:
                users = {
                    f"{self.node_id}|{m.user_id}": now for m in room.members.values() if m.user_id
                }
                if users:
                    pipe.zadd(self.keys.users(room.name), users)
                    pipe.expire(self.keys.users(room.name), self.ttl_s)
        results = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        stale_after = interval * STALE_ROUNDS + 1
        for i, room in enumerate(rooms):
            fields, likes = results[4 * i + 2], results[4 * i + 3]
            online = 0
            stale: list[str] = []
            for node, value in fields.items():
                count, _, ts = decode(value).partition(":")
                try:
                    if now - float(ts) > stale_after:
                        stale.append(decode(node))
                        continue
                    online += int(count)
                except ValueError:
                    stale.append(decode(node))
            if stale:
                await asyncio.wait_for(
                    self.redis.hdel(self.keys.presence(room.name), *stale), REDIS_TIMEOUT
                )
            room.buffer.online = online
            room.buffer.likes_total = max(room.buffer.likes_total, int(likes or 0))

    @staticmethod
    def fallback(rooms: list[Room]) -> None:
        """Without Redis, a room shows at least the members of this node."""
        for room in rooms:
            room.buffer.online = max(room.buffer.online, len(room.members))

    async def leave_all(self, rooms: list[str]) -> None:
        """At shutdown: this node no longer counts in any room."""
        for name in rooms:
            try:
                await asyncio.wait_for(
                    self.redis.hdel(self.keys.presence(name), self.node_id), REDIS_TIMEOUT
                )
            except Exception:  # best effort, one room at a time
                continue

    async def users(self, room_name: str, room: Room | None) -> set[str]:
        """The users in ``room_name`` now: this node's members as they are, and those other
        nodes reported in their last rounds (``<node>|<user>``, for rooms that track users)."""
        here = {m.user_id for m in room.members.values() if m.user_id} if room else set()
        since = time.time() - (self.interval * STALE_ROUNDS + 1)
        raw = await asyncio.wait_for(
            self.redis.zrangebyscore(self.keys.users(room_name), since, "+inf"), REDIS_TIMEOUT
        )
        mine = f"{self.node_id}|"
        for entry in raw:
            node_user = decode(entry)
            if not node_user.startswith(mine):
                here.add(node_user.partition("|")[2])
        return here
