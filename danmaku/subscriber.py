"""The subscriber: what other nodes wrote to a room reaches this node's members.

One Redis pub/sub connection subscribes the channel of every room this node serves,
each together with this node's mark channel for the room (one SUBSCRIBE, one UNSUBSCRIBE:
the writer's script compares the two counts to publish only when another node listens;
see :mod:`danmaku.writer`). An envelope (published by another node's
:mod:`danmaku.writer`) is merged into the room's buffer: comments (deduplicated by id),
likes, joins/leaves, notices, deleted ids, direct messages to a user's sessions here, and
moderation/lottery controls (handed to the hooks).

Recovery: when the connection is lost, local members keep being served; the subscriber
reconnects with backoff, re-subscribes every room, delivers the comments other nodes put
in the history meanwhile (by timestamp, minus 2 s of slack; duplicates are dropped by id)
and reloads each room's moderation state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from danmaku.keys import REDIS_TIMEOUT, Keys, decode
from danmaku.rooms import Room
from danmaku.stats import HubStats, Warnings

logger = logging.getLogger(__name__)

__all__ = ["Subscriber"]

PRIVILEGED = ("anchor", "moderator", "operator")


class Subscriber:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        tag: str,
        rooms: dict[str, Room],
        stats: HubStats,
        warn: Warnings,
        send_direct: Callable[[str, str, str, Any], None],
        on_control: Callable[[Room, dict[str, Any]], None],
        reload_state: Callable[[Room], Awaitable[None]],
        on_other_node: Callable[[str], None] = lambda room: None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.tag = tag
        self.rooms = rooms
        self.stats = stats
        self._warn = warn
        self._send_direct = send_direct
        self._on_control = on_control
        self._reload_state = reload_state
        self._on_other_node = on_other_node
        self._pubsub: Any = None
        self._own_text = '{"n":' + json.dumps(tag) + ","
        self._own = self._own_text.encode()

    @property
    def connected(self) -> bool:
        return self._pubsub is not None

    def _channels(self, room: str) -> tuple[str, str]:
        """The room channel and this node's mark, always (un)subscribed in one command."""
        return self.keys.channel(room), self.keys.node_mark(room, self.tag)

    async def subscribe(self, room: Room) -> None:
        if self._pubsub is None:
            return  # subscribed at the next (re)connection
        try:
            await asyncio.wait_for(
                self._pubsub.subscribe(*self._channels(room.name)), REDIS_TIMEOUT
            )
        except Exception as exc:
            self.stats.redis_errors += 1
            self._warn("subscribe", "danmaku: cannot subscribe %s yet: %s", room.name, exc)

    async def unsubscribe(self, channel: str) -> None:
        channels = self._channels(self.keys.room_of_channel(channel))
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await asyncio.wait_for(self._pubsub.unsubscribe(*channels), REDIS_TIMEOUT)

    def on_envelope(self, channel: str, raw: bytes | str) -> None:
        own = self._own if isinstance(raw, bytes) else self._own_text
        if raw[: len(own)] == own:
            return  # our own envelope, back from Redis (the writer puts "n" first)
        name = self.keys.room_of_channel(channel)
        room = self.rooms.get(name)
        if room is None:
            return
        try:
            env = json.loads(raw)
        except ValueError:
            self._warn("envelope", "danmaku: malformed envelope on %s", channel)
            return
        if not isinstance(env, dict) or env.get("n") == self.tag:
            return
        self.stats.remote_envelopes_in += 1
        self._on_other_node(name)  # another node is in the room: publish to it without delay
        buffer = room.buffer
        for c in env.get("c") or ():
            if isinstance(c, dict) and room.remember(c):
                buffer.add_comment(c, c.get("role") in PRIVILEGED)
        if env.get("l"):
            buffer.add_likes(int(env["l"]), int(env.get("t") or 0))
        elif env.get("t"):
            buffer.likes_total = max(buffer.likes_total, int(env["t"]))
        joins = sum(int(x) for x in env.get("j") or ())
        leaves = sum(int(x) for x in env.get("v") or ())
        buffer.joins += joins
        buffer.leaves += leaves
        buffer.online = max(0, buffer.online + joins)
        buffer.online = max(0, buffer.online - leaves)
        for notice in env.get("x") or ():
            buffer.add_notice(notice)
        for cid in env.get("d") or ():
            buffer.add_deleted(cid)
            room.forget(cid)
        for d in env.get("u") or ():
            self._send_direct(name, d.get("user"), d.get("event", "direct"), d.get("data"))
        for control in env.get("m") or ():
            self._on_control(room, control)

    async def run(self) -> None:
        """The subscriber task: listen, and on a lost connection reconnect and recover."""
        backoff = 0.1
        down_since: float | None = None
        ctl = self.keys.channel("") + "*node*" + self.tag  # never published: keeps listen alive
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                channels = [c for name in self.rooms for c in self._channels(name)]
                await asyncio.wait_for(pubsub.subscribe(ctl, *channels), REDIS_TIMEOUT)
                self._pubsub = pubsub
                self.stats.redis_connected = True
                backoff = 0.1
                if down_since is not None:
                    down = time.time() - down_since
                    self.stats.redis_down_seconds += down
                    logger.warning(
                        "danmaku: Redis back after %.1fs; re-subscribed %d rooms, recovering",
                        down,
                        len(self.rooms),
                    )
                    await self.recover(down_since)
                    down_since = None
                    for room in list(self.rooms.values()):
                        await self._reload_state(room)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        self.on_envelope(decode(msg["channel"]), msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._pubsub = None
                self.stats.redis_connected = False
                if down_since is None:
                    down_since = time.time()
                    self.stats.redis_disconnects += 1
                    logger.warning(
                        "danmaku: Redis subscription lost (%s); serving local clients only, "
                        "retrying",
                        exc,
                    )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def recover(self, since: float) -> None:
        """Deliver comments other nodes wrote to history while we were not subscribed."""
        since_ms = (since - 2.0) * 1000
        recovered = 0
        for room in list(self.rooms.values()):
            try:
                raw = await asyncio.wait_for(
                    self.redis.lrange(self.keys.history(room.name), 0, -1), REDIS_TIMEOUT
                )
            except Exception as exc:
                self._warn("recover", "danmaku: recovery of %s failed: %s", room.name, exc)
                continue
            for entry in raw:
                try:
                    c = json.loads(entry)
                except ValueError:
                    continue
                if (
                    isinstance(c, dict)
                    and isinstance(c.get("ts"), int)
                    and c["ts"] >= since_ms
                    and not str(c.get("id", "")).startswith(self.tag + "-")
                    and room.remember(c)
                ):
                    room.buffer.add_comment(c, c.get("role") in PRIVILEGED)
                    recovered += 1
        self.stats.recovered_comments += recovered
        if recovered:
            logger.warning("danmaku: recovered %d comments missed while Redis was down", recovered)
