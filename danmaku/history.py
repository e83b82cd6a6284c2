"""A room's recent comments in Redis (the resume window): what a joining client gets, and
deleting one comment from it (moderation).

The list itself is written by :mod:`danmaku.writer` (RPUSH + LTRIM to ``history_size``);
deleted ids are kept in a sorted set so a comment removed while a node was cut off from
Redis is still filtered out.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from danmaku.keys import REDIS_TIMEOUT, Keys, decode
from danmaku.rooms import Room
from danmaku.stats import HubStats, Warnings

__all__ = ["HISTORY_DELETE_LUA", "History"]

HISTORY_DELETE_LUA = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local needle = '"id":' .. cjson.encode(ARGV[1]) .. ','
for _, item in ipairs(items) do
  if string.find(item, needle, 1, true) then
    redis.call('LREM', KEYS[1], 1, item)
    return 1
  end
end
return 0
"""


class History:
    def __init__(
        self, redis: Any, keys: Keys, size: int, on_join: int, stats: HubStats, warn: Warnings
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.size = size
        self.on_join = on_join
        self.stats = stats
        self._warn = warn
        self._delete = redis.register_script(HISTORY_DELETE_LUA)

    async def for_join(self, room: Room, last_id: str | None) -> tuple[list[dict[str, Any]], bool]:
        """Comments for a joining client and whether some it missed are gone (``gap``).

        Without Redis, the comments this node delivered recently (``room.recent``)."""
        items: list[dict[str, Any]] = []
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(self.keys.history(room.name), -self.size, -1)
            pipe.zrange(self.keys.deleted(room.name), 0, -1)
            raw, deleted = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            gone = {decode(d) for d in deleted}
            for entry in raw:
                try:
                    obj = json.loads(entry)
                except ValueError:
                    continue
                if (
                    isinstance(obj, dict)
                    and isinstance(obj.get("id"), str)
                    and obj["id"] not in gone
                ):
                    items.append(obj)
        except Exception as exc:
            self.stats.redis_errors += 1
            self._warn("history", "danmaku: history of %s unavailable: %s", room.name, exc)
        ids = {c["id"] for c in items}
        items.extend(c for c in room.recent if c["id"] not in ids)
        del items[: -self.size]
        if last_id is None:
            return items[-self.on_join :], False
        for i, c in enumerate(items):
            if c["id"] == last_id:
                return items[i + 1 :], False
        return items[-self.on_join :], True

    async def delete(self, room: str, comment_id: str) -> bool:
        result = await asyncio.wait_for(
            self._delete(keys=[self.keys.history(room)], args=[comment_id]), REDIS_TIMEOUT
        )
        return bool(result)
