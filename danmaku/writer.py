"""The Redis writer: what this node tells Redis (and through it the other nodes) per room.

Everything that must reach Redis goes into the room's :class:`Outgoing` (comments as JSON,
the like delta, small items: joins ``j``, leaves ``v``, notices ``x``, deleted ids ``d``,
direct messages ``u``, moderation/lottery controls ``m``). The writer task wakes when there
is something, waits ``WRITE_COALESCE_S`` so one round trip carries a few ms of traffic,
and runs one pipelined ``EVALSHA room_flush`` per room: RPUSH to the history + LTRIM,
INCRBY the likes (both keys then live ``room_ttl_s`` more), PUBLISH one envelope on the
room channel (read by :mod:`danmaku.subscriber` on every node).

The envelope is published only when some *other* node listens to the room: the script
compares ``PUBSUB NUMSUB`` of the room channel with that of this node's mark channel
(:meth:`~danmaku.keys.Keys.node_mark`, subscribed and unsubscribed in the same command as
the room channel by this node's subscriber, so the two counts are read atomically and
consistently). A node alone in a room therefore neither publishes nor receives its own
envelopes back; as soon as another node (of any version) subscribes the room channel, the
count differs and every later flush publishes. Nodes that do not subscribe a mark (older
versions) are simply counted as other listeners.

The script also tells whether another node listened. While no pending room has another
listener, the writer gathers for ``LONE_WRITE_COALESCE_S`` instead (fewer round trips: the
history is for later joins, and a joining client of this node also gets the comments
this node still has to write, from ``Room.recent``); a write for a room with a listener
(or not written yet) cuts that wait short. A node that starts listening to a room gets
every envelope flushed after its SUBSCRIBE, and what was flushed before is in the history
it reads after subscribing; and its first envelope (the join of its first member) makes
this node's writer stop gathering for that room, so only what this node flushes before
that envelope arrives may have waited up to ``LONE_WRITE_COALESCE_S``.

Standalone Redis/valkey only: on a Redis Cluster ``NUMSUB`` counts one shard's
subscribers, so this gate would have to go.

Local delivery never waits for this. A failed write is counted (``lost_*`` in
:class:`~danmaku.stats.HubStats`) and logged; a like delta, being a count, is kept for the
next attempt. The outbox is bounded per room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import NoScriptError

from danmaku.keys import REDIS_TIMEOUT, Keys
from danmaku.stats import HubStats, Warnings

logger = logging.getLogger(__name__)

__all__ = ["ROOM_FLUSH_LUA", "Outgoing", "RedisWriter"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _dumps_comment(comment: dict[str, Any]) -> str:
    """``_dumps(comment)``, the same text, through orjson (a comment is a flat dict of str
    and int); anything orjson refuses (a lone surrogate in a nick) takes the json path."""
    try:
        return orjson.dumps(comment).decode()
    except TypeError:
        return _dumps(comment)


WRITE_COALESCE_S = 0.01
LONE_WRITE_COALESCE_S = 0.15
"""Gathering window while no pending room has a listener on another node."""
MAX_LISTENED_ROOMS = 4096
MAX_OUTBOX_COMMENTS_PER_ROOM = 5000
MAX_OUTBOX_ITEMS_PER_ROOM = 256

ROOM_FLUSH_LUA = """
local n = #ARGV
local i = 7
local ttl = tonumber(ARGV[6])
while i <= n do
  local j = math.min(n, i + 999)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
if n >= 7 then
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local total
local others = 0
local d = tonumber(ARGV[2])
if d > 0 then
  total = redis.call('INCRBY', KEYS[2], d)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  total = tonumber(redis.call('GET', KEYS[2]) or '0')
end
if ARGV[4] ~= '' then
  local subs = redis.call('PUBSUB', 'NUMSUB', ARGV[3], ARGV[5])
  others = subs[2] - subs[4]
  if others > 0 then redis.call('PUBLISH', ARGV[3], ARGV[4] .. total .. '}') end
end
return {total, others}
"""


@dataclass
class Outgoing:
    """What this node still has to write to Redis for one room."""

    comments: list[str] = field(default_factory=list)
    like_delta: int = 0
    items: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> bool:
        bucket = self.items.setdefault(key, [])
        if len(bucket) >= MAX_OUTBOX_ITEMS_PER_ROOM:
            return False
        bucket.append(value)
        return True

    def empty(self) -> bool:
        return not (self.comments or self.like_delta or self.items)


class RedisWriter:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        history_size: int,
        tag: str,
        stats: HubStats,
        warn: Warnings,
        on_likes_total: Callable[[str, int], None],
        key_ttl_s: float = 7 * 86400,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.history_size = history_size
        self.key_ttl_ms = max(1000, int(key_ttl_s * 1000))
        self.tag = tag
        self.stats = stats
        self._warn = warn
        self._on_likes_total = on_likes_total
        self._outbox: dict[str, Outgoing] = {}
        self._ready = asyncio.Event()
        self._urgent = asyncio.Event()
        self._listened: dict[str, bool] = {}
        """Per room: another node listened at its last write (unknown rooms: assumed)."""
        self._room_flush = redis.register_script(ROOM_FLUSH_LUA)

    # ---------------------------------------------------------------- filling the outbox
    def out(self, room: str) -> Outgoing:
        """The room's pending writes (call :meth:`wake` after adding to them)."""
        out = self._outbox.get(room)
        if out is None:
            out = self._outbox[room] = Outgoing()
        return out

    def wake(self, room: str) -> None:
        self._ready.set()
        if self._listened.get(room, True):
            self._urgent.set()

    def heard_from_other_node(self, room: str) -> None:
        """Another node published in ``room``: it listens, so stop gathering for it (a
        node that starts serving a room announces its first member within ~10 ms)."""
        if self._listened.get(room) is False:
            self._listened[room] = True
            if room in self._outbox:
                self._urgent.set()

    def add_comment(self, room: str, comment: dict[str, Any]) -> None:
        out = self.out(room)
        if len(out.comments) < MAX_OUTBOX_COMMENTS_PER_ROOM:
            out.comments.append(_dumps_comment(comment))
        else:
            self.stats.outbox_dropped += 1
        self.wake(room)

    def add_item(self, room: str, key: str, value: Any, count_lost: bool = True) -> bool:
        """Queue a small item; False (counted if ``count_lost``) when the bucket is full."""
        ok = self.out(room).add(key, value)
        if not ok and count_lost:
            self.stats.lost_remote_items += 1
        self.wake(room)
        return ok

    # ---------------------------------------------------------------- writing
    def _envelope_prefix(self, out: Outgoing) -> str:
        env: dict[str, Any] = {"n": self.tag}
        if out.like_delta:
            env["l"] = out.like_delta
        env.update(out.items)
        body = _dumps(env)[:-1]
        if out.comments:
            body += ',"c":[' + ",".join(out.comments) + "]"
        return body + ',"t":'

    def _args(self, name: str, out: Outgoing) -> tuple[Any, ...]:
        return (
            self._room_flush.sha,
            2,
            self.keys.history(name),
            self.keys.likes(name),
            self.history_size,
            out.like_delta,
            self.keys.channel(name),
            self._envelope_prefix(out),
            self.keys.node_mark(name, self.tag),
            self.key_ttl_ms,
            *out.comments,
        )

    async def _flush_rooms(self, rooms: list[tuple[str, Outgoing]]) -> list[Any]:
        """One ``EVALSHA room_flush`` per room (no ``SCRIPT EXISTS`` round trip), pipelined
        when there are several rooms; a room's failure is its result, not raised."""
        if len(rooms) == 1:  # the usual case under load: no pipeline object per round trip
            try:
                return [await self.redis.evalsha(*self._args(*rooms[0]))]
            except Exception as exc:  # as the pipeline reports it (cancellation propagates)
                return [exc]
        pipe = self.redis.pipeline(transaction=False)
        for name, out in rooms:
            pipe.evalsha(*self._args(name, out))
        return list(await pipe.execute(raise_on_error=False))

    async def flush(self) -> None:
        """Write everything pending now (one round trip, plus one if Redis lost the script)."""
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, {}
        rooms = list(batch.items())
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):  # no task per round trip (wait_for's)
                results = await self._flush_rooms(rooms)
        except BaseException as exc:
            results = [exc] * len(rooms)
            if isinstance(exc, asyncio.CancelledError):
                raise
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:  # Redis lost its script cache (restarted): load it, redo only those rooms
            try:
                await asyncio.wait_for(self.redis.script_load(ROOM_FLUSH_LUA), REDIS_TIMEOUT)
                again = await asyncio.wait_for(
                    self._flush_rooms([rooms[i] for i in missing]), REDIS_TIMEOUT
                )
            except BaseException as exc:
                again = [exc] * len(missing)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            for i, r in zip(missing, again, strict=True):
                results[i] = r
        for (name, out), result in zip(rooms, results, strict=False):
            if isinstance(result, BaseException):
                self.stats.redis_errors += 1
                self.stats.lost_history_comments += len(out.comments)
                self.stats.lost_remote_comments += len(out.comments)
                self.stats.lost_remote_items += sum(len(v) for v in out.items.values())
                if out.like_delta:  # a count, not a message: keep it for the next attempt
                    self.out(name).like_delta += out.like_delta
                self._warn(
                    "write",
                    "danmaku: Redis write for %s failed (%s); %d comments not in history "
                    "nor sent to other nodes",
                    name,
                    result,
                    len(out.comments),
                )
            elif isinstance(result, list) and len(result) == 2:
                self._on_likes_total(name, int(result[0]))
                if len(self._listened) >= MAX_LISTENED_ROOMS and name not in self._listened:
                    self._listened.clear()
                self._listened[name] = int(result[1]) > 0

    def pending(self, room: str) -> bool:
        out = self._outbox.get(room)
        return out is not None and not out.empty()

    async def run(self) -> None:
        """The writer task."""
        while True:
            await self._ready.wait()
            await asyncio.sleep(WRITE_COALESCE_S)  # one round trip carries a few ms of comments
            if not self._urgent.is_set():  # nobody else listens to the pending rooms: gather
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(LONE_WRITE_COALESCE_S - WRITE_COALESCE_S):
                        await self._urgent.wait()
            self._ready.clear()
            self._urgent.clear()
            errors = self.stats.redis_errors
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("danmaku: writer failed")
            if self._outbox:
                if self.stats.redis_errors != errors:  # failed: back off before retrying
                    await asyncio.sleep(0.2 if self.stats.redis_connected else 1.0)
                self._ready.set()
