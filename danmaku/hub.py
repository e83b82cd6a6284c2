"""The hub: the rooms this node serves, who is in them, and the tasks that keep them going.

Data path of one comment, accepted on node A::

    client --comment--> session (danmaku.session) --> Hub.submit_comment
        |-- checks (danmaku.intake)
        |-- room.buffer (local members get it at A's next tick, danmaku.delivery)
        '-- outbox (danmaku.writer) --> Lua ``room_flush`` on Redis:
                RPUSH history + LTRIM, INCRBY likes, PUBLISH envelope on the room channel
                   '--> node B's subscriber (danmaku.subscriber) --> B's room.buffer --> B's tick

At each tick (``tick_ms``) a room's batch is encoded once and the same packet goes to
every member (:mod:`danmaku.delivery`). Presence (:mod:`danmaku.presence`) and the hooks of
the lottery and the counters run every ``presence_interval_s``; rooms empty for 30 s with
nothing pending are forgotten.

Local delivery never waits for Redis. While Redis is unreachable the hub keeps serving
its own clients; what could not reach Redis is counted in :class:`HubStats` and logged,
the subscriber reconnects with backoff, re-subscribes every room, and recovers comments
other nodes wrote to the history while it was cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from danmaku.config import DanmakuConfig
from danmaku.delivery import Delivery
from danmaku.history import History
from danmaku.intake import Intake
from danmaku.keys import REDIS_TIMEOUT, Keys, decode
from danmaku.payloads import PayloadError
from danmaku.presence import Presence
from danmaku.rooms import Member, Room
from danmaku.stats import HubStats, Warnings
from danmaku.subscriber import Subscriber
from danmaku.wordfilter import WordFilter
from danmaku.writer import RedisWriter

logger = logging.getLogger(__name__)

__all__ = ["REDIS_TIMEOUT", "Hub", "HubStats", "Keys", "Member", "Room"]

ROOM_IDLE_S = 30.0

CommentHook = Callable[[Member, Room, dict[str, Any], str], Awaitable[dict[str, Any] | None]]
RemoteHook = Callable[[Room, dict[str, Any]], Coroutine[Any, Any, None]]
TickHook = Callable[[], Awaitable[None]]


class Hub:
    def __init__(
        self, config: DanmakuConfig, redis: Any, node_id: str, word_filter: WordFilter | None
    ) -> None:
        self.config = config
        self.redis = redis
        self.node_id = node_id
        self.keys = Keys(config.redis_prefix)
        self.stats = HubStats()
        self.rooms: dict[str, Room] = {}
        self.members: dict[str, Member] = {}
        self._rng = random.Random()
        self._warn = Warnings(logger)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.intake = Intake(config, word_filter, self.stats)
        self.tag = self.intake.tag
        self.delivery = Delivery(config.namespace, self.stats, self._warn, self.spawn)
        self.history_store = History(
            redis, self.keys, config.history_size, config.history_on_join, self.stats, self._warn
        )
        self.writer = RedisWriter(
            redis, self.keys, config.history_size, self.tag, self.stats, self._warn,
            self._likes_total, config.room_ttl_s,
        )  # fmt: skip
        self.subscriber = Subscriber(
            redis, self.keys, self.tag, self.rooms, self.stats, self._warn,
            self._deliver_direct, self._on_control, self._load_room_state,
            self.writer.heard_from_other_node,
        )  # fmt: skip
        self.presence = Presence(redis, self.keys, node_id, config.presence_interval_s)
        self.on_comment_hooks: list[CommentHook] = []
        self.on_tick_hooks: list[TickHook] = []
        self.on_remote_hooks: list[RemoteHook] = []

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._tick_loop(), name="danmaku:tick"),
            loop.create_task(self.writer.run(), name="danmaku:writer"),
            loop.create_task(self.subscriber.run(), name="danmaku:subscriber"),
            loop.create_task(self._housekeeping_loop(), name="danmaku:housekeeping"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.flush(), REDIS_TIMEOUT)
        await self.presence.leave_all(list(self.rooms))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----------------------------------------------------------------- rooms and members
    def next_id(self) -> str:
        return self.intake.next_id()

    async def open_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is not None:
            if not room.state_loaded:
                await self._load_room_state(room)
            return room
        if len(self.rooms) >= self.config.max_rooms:
            raise PayloadError("busy", "this node serves too many rooms; try again later")
        room = Room(name, self.keys.channel(name), self.config, self._rng)
        self.rooms[name] = room
        room.empty_since = time.monotonic()
        await self._load_room_state(room)
        await self.subscriber.subscribe(room)
        return room

    async def _load_room_state(self, room: Room) -> None:
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(self.keys.moderation(room.name))
            pipe.get(self.keys.likes(room.name))
            pipe.smembers(self.keys.room_lotteries(room.name))
            fields, likes, lottery_ids = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        except Exception as exc:
            self.stats.redis_errors += 1
            self._warn("room_state", "danmaku: room %s state not loaded: %s", room.name, exc)
            return
        room.apply_state({decode(k): decode(v) for k, v in fields.items()})
        room.buffer.likes_total = max(room.buffer.likes_total, int(likes or 0))
        for hook in self.on_remote_hooks:
            await hook(room, {"lotteries_known": [decode(x) for x in lottery_ids]})

    async def history(self, room: Room, last_id: str | None) -> tuple[list[dict[str, Any]], bool]:
        """Comments for a joining client and whether some it missed are gone (``gap``)."""
        return await self.history_store.for_join(room, last_id)

    def activate(self, member: Member, joined: dict[str, Any]) -> bool:
        """Send ``joined`` to ``member``, then make it receive batches (synchronous: no
        batch can come between). False if the room or the connection is gone."""
        room = self.rooms.get(member.room)
        conn = member.conn
        if room is None or member.sid in self.members or conn is None or conn.closed:
            return False
        self.delivery.send(member, "joined", joined)
        room.members[member.sid] = member
        self.members[member.sid] = member
        room.empty_since = None
        room.buffer.joins += 1
        room.buffer.online += 1
        self.stats.connections += 1
        self.writer.add_item(room.name, "j", 1, count_lost=False)
        return True

    def leave(self, sid: str) -> Member | None:
        member = self.members.pop(sid, None)
        if member is None:
            return None
        room = self.rooms.get(member.room)
        if room is not None:
            room.members.pop(sid, None)
            room.buffer.leaves += 1
            room.buffer.online = max(0, room.buffer.online - 1)
            if not room.members:
                room.empty_since = time.monotonic()
            self.writer.add_item(room.name, "v", 1, count_lost=False)
        self.stats.connections = max(0, self.stats.connections - 1)
        return member

    def members_of(self, room: str, user_id: str) -> list[Member]:
        r = self.rooms.get(room)
        if r is None:
            return []
        return [m for m in r.members.values() if m.user_id == user_id]

    def _likes_total(self, room_name: str, total: int) -> None:
        room = self.rooms.get(room_name)
        if room is not None:
            room.buffer.likes_total = max(room.buffer.likes_total, total)

    # ----------------------------------------------------------------- inbound
    async def submit_comment(self, member: Member, data: Any) -> dict[str, Any]:
        """Accept a comment or raise :class:`PayloadError`; returns the ack payload."""
        room = self.rooms.get(member.room)
        if room is None:
            raise PayloadError("not_joined", "not in a room")
        accepted = self.intake.comment(member, room, data)
        comment = accepted.comment
        self.stats.comments_in += 1
        room.unreported_comments += 1
        room.buffer.add_comment(comment, accepted.privileged)
        room.remember(comment)
        self.writer.add_comment(room.name, comment)
        ack: dict[str, Any] = {"ok": True, "id": comment["id"], "filtered": accepted.masked}
        for hook in self.on_comment_hooks:
            extra = await hook(member, room, comment, accepted.typed)
            if extra:
                ack.update(extra)
        return ack

    def submit_like(self, member: Member, data: Any) -> dict[str, Any]:
        room = self.rooms.get(member.room)
        if room is None:
            raise PayloadError("not_joined", "not in a room")
        count = self.intake.likes(member, data)
        self.stats.likes_in += count
        room.unreported_likes += count
        room.buffer.add_likes(count)
        self.writer.out(room.name).like_delta += count
        self.writer.wake(room.name)
        return {"ok": True}

    # ----------------------------------------------------------------- from the services
    def post_notice(self, room_name: str, notice: dict[str, Any], propagate: bool) -> None:
        """Deliver ``notice`` in the room's next batch (here, and on all nodes if ``propagate``)."""
        room = self.rooms.get(room_name)
        if room is not None:
            room.buffer.add_notice(notice)
        if propagate:
            self.writer.add_item(room_name, "x", notice)

    def post_deleted(self, room_name: str, comment_id: str, propagate: bool) -> None:
        room = self.rooms.get(room_name)
        if room is not None:
            room.buffer.add_deleted(comment_id)
            room.forget(comment_id)
        if propagate:
            self.writer.add_item(room_name, "d", comment_id, count_lost=False)

    def post_control(self, room_name: str, control: dict[str, Any]) -> None:
        """Propagate a moderation/lottery state change to the other nodes' caches."""
        self.writer.add_item(room_name, "m", control)

    async def send_direct(
        self, room_name: str, user_id: str, event: str, data: dict[str, Any], propagate: bool
    ) -> None:
        """Send ``event`` to every session of ``user_id`` in the room (on every node)."""
        self._deliver_direct(room_name, user_id, event, data)
        if propagate:
            item = {"user": user_id, "event": event, "data": data}
            self.writer.add_item(room_name, "u", item, count_lost=False)

    def _deliver_direct(self, room_name: str, user_id: str, event: str, data: Any) -> None:
        members = self.members_of(room_name, user_id)
        if members:
            self.delivery.fanout(members, self.delivery.packet(event, data))

    def _on_control(self, room: Room, control: dict[str, Any]) -> None:
        for hook in self.on_remote_hooks:
            self.spawn(hook(room, control))

    def send_frame(self, member: Member, event: str, data: Any) -> None:
        """One event to one member, in order behind what it was sent before."""
        self.delivery.send(member, event, data)

    async def kick(self, room_name: str, user_id: str, reason: str) -> int:
        members = self.members_of(room_name, user_id)
        for m in members:
            self.delivery.send(m, "kicked", {"room": room_name, "reason": reason})
            await self.delivery.disconnect(m)
        return len(members)

    async def delete_from_history(self, room: str, comment_id: str) -> bool:
        return await self.history_store.delete(room, comment_id)

    # ----------------------------------------------------------------- the tick
    def flush_room(self, room: Room) -> None:
        before_pd = room.buffer.priority_dropped
        batch = room.buffer.flush()
        self.stats.priority_dropped += room.buffer.priority_dropped - before_pd
        room.buffer.priority_dropped = 0
        if batch is None:
            return
        sample = batch.get("sample")
        if sample:
            self.stats.sampled_out += sample["seen"] - sample["kept"]
        if not room.members:
            return
        self.stats.batches += 1
        out = self.delivery.packet("comments", batch)
        self.stats.frames += self.delivery.fanout(room.members.values(), out)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        tick = max(0.01, self.config.tick_ms / 1000)
        next_at = loop.time() + tick
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += tick
            if next_at < loop.time():  # fell behind (overload): do not try to catch up
                next_at = loop.time() + tick
            for room in list(self.rooms.values()):
                try:
                    self.flush_room(room)
                except Exception:
                    logger.exception("danmaku: flushing room %s failed", room.name)

    # ----------------------------------------------------------------- housekeeping
    async def _housekeeping_loop(self) -> None:
        interval = max(0.2, self.config.presence_interval_s)
        while True:
            await asyncio.sleep(interval)
            rooms = list(self.rooms.values())
            try:
                await self.presence.round(rooms, interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.redis_errors += 1
                self._warn("presence", "danmaku: presence update failed: %s", exc)
                self.presence.fallback(rooms)
            for hook in self.on_tick_hooks:
                try:
                    await hook()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("danmaku: housekeeping hook failed")
            self._collect_rooms()

    def _collect_rooms(self) -> None:
        now = time.monotonic()
        for name, room in list(self.rooms.items()):
            if room.members or room.empty_since is None or now - room.empty_since < ROOM_IDLE_S:
                continue
            if room.lotteries or room.buffer.pending() or room.unreported_comments:
                continue
            del self.rooms[name]
            if self.subscriber.connected:
                self.spawn(self.subscriber.unsubscribe(room.channel))
