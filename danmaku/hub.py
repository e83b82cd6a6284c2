"""The hub: rooms, per-tick merged batches, fan-out, and Redis sharing between nodes.

Data path of one comment, accepted on node A::

    client --comment--> LiveNamespace --> Hub.submit_comment
        |-- room.buffer (local clients get it at A's next tick: one frame per client)
        '-- outbox --> writer task --> Lua ``room_flush`` on Redis:
                RPUSH history + LTRIM, INCRBY likes, PUBLISH envelope on the room channel
                   '--> node B's subscriber --> B's room.buffer --> B's clients at B's tick

At each tick a room's batch is encoded and framed once and the same bytes are written to
every websocket viewer's transport (:mod:`danmaku.fanout`; :meth:`Hub._fanout`).

Local delivery never waits for Redis. While Redis is unreachable the hub keeps serving
its own clients; what could not reach Redis is counted in :class:`HubStats` and logged,
the subscriber reconnects with backoff, re-subscribes every room, and recovers comments
other nodes wrote to the history while it was cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Any

import socketio
from engineio import packet as eio_packet
from redis.exceptions import NoScriptError
from socketio import packet as sio_packet

from danmaku.batch import RoomBuffer
from danmaku.config import DanmakuConfig
from danmaku.fanout import install, ws_text_frame
from danmaku.payloads import PayloadError, parse_comment, parse_like
from danmaku.ratelimit import Buckets
from danmaku.tokens import Role, Viewer
from danmaku.wordfilter import WordFilter

logger = logging.getLogger(__name__)

__all__ = ["Hub", "HubStats", "Keys", "Member", "Room"]

REDIS_TIMEOUT = 2.0
WRITE_COALESCE_S = 0.01
MAX_OUTBOX_COMMENTS_PER_ROOM = 5000
MAX_OUTBOX_ITEMS_PER_ROOM = 256
MAX_LAST_COMMENT_PER_ROOM = 50000

ROOM_FLUSH_LUA = """
local n = #ARGV
local i = 5
while i <= n do
  local j = math.min(n, i + 999)
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
if n >= 5 then redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1) end
local total
local d = tonumber(ARGV[2])
if d > 0 then
  total = redis.call('INCRBY', KEYS[2], d)
else
  total = tonumber(redis.call('GET', KEYS[2]) or '0')
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4] .. total .. '}') end
return total
"""

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


class Keys:
    """Every Redis key and channel of the hub; room keys share a hash tag (Redis Cluster)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def history(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:history"

    def likes(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:likes"

    def presence(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:presence"

    def moderation(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:mod"

    def deleted(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:deleted"

    def room_lotteries(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:lotteries"

    def channel(self, room: str) -> str:
        return f"{self.prefix}ch:{room}"

    def audit(self) -> str:
        return f"{self.prefix}audit"

    def lottery(self, lottery_id: str, part: str) -> str:
        return f"{self.prefix}lot:{{{lottery_id}}}:{part}"


@dataclass
class HubStats:
    """Counters (monotonic) and gauges, exposed at ``GET /api/danmaku/stats``."""

    connections: int = 0
    refused: int = 0
    comments_in: int = 0
    comments_rejected: int = 0
    comments_filtered: int = 0
    likes_in: int = 0
    batches: int = 0
    frames: int = 0
    direct_frames: int = 0
    queued_frames: int = 0
    sampled_out: int = 0
    priority_dropped: int = 0
    slow_clients_dropped: int = 0
    remote_envelopes_in: int = 0
    redis_errors: int = 0
    lost_history_comments: int = 0
    lost_remote_comments: int = 0
    lost_remote_items: int = 0
    outbox_dropped: int = 0
    recovered_comments: int = 0
    redis_disconnects: int = 0
    redis_down_seconds: float = 0.0
    redis_connected: bool = False
    bus_notices: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class Member:
    sid: str
    eio_sid: str
    viewer: Viewer | None
    role: Role
    room: str
    dropped: bool = False

    @property
    def user_id(self) -> str | None:
        return self.viewer.user_id if self.viewer else None


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


def _decode(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Hub:
    def __init__(
        self,
        config: DanmakuConfig,
        sio: socketio.AsyncServer,
        redis: Any,
        node_id: str,
        word_filter: WordFilter,
    ) -> None:
        self.config = config
        self.sio = sio
        self.redis = redis
        self.node_id = node_id
        self.tag = secrets.token_hex(3)
        self.keys = Keys(config.redis_prefix)
        self.filter = word_filter
        self.stats = HubStats()
        self.rooms: dict[str, Room] = {}
        self.members: dict[str, Member] = {}
        self._rng = random.Random()
        self._seq = 0
        self._buckets = Buckets(config.rate_capacity, config.rate_per_s, config.max_users_tracked)
        self._like_buckets = Buckets(
            float(config.likes_max_per_message), config.likes_per_s, config.max_users_tracked
        )
        self._outbox: dict[str, Outgoing] = {}
        self._outbox_ready = asyncio.Event()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._room_flush = redis.register_script(ROOM_FLUSH_LUA)
        self._history_delete = redis.register_script(HISTORY_DELETE_LUA)
        self._log_counts: dict[str, int] = {}
        self._conns = install(sio.eio)
        self.on_comment_hooks: list[Any] = []
        self.on_tick_hooks: list[Any] = []
        self.on_remote_hooks: list[Any] = []

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._tick_loop(), name="danmaku:tick"),
            loop.create_task(self._writer_loop(), name="danmaku:writer"),
            loop.create_task(self._subscriber_loop(), name="danmaku:subscriber"),
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
            await asyncio.wait_for(self._write_outbox(), REDIS_TIMEOUT)
        for name in list(self.rooms):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.redis.hdel(self.keys.presence(name), self.node_id), REDIS_TIMEOUT
                )

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _warn(self, what: str, msg: str, *args: Any) -> None:
        """Log the first occurrence and then every 1000th of a recurring problem."""
        n = self._log_counts.get(what, 0) + 1
        self._log_counts[what] = n
        if n == 1 or n % 1000 == 0:
            logger.warning(msg + " (occurrence %d)", *args, n)

    # ----------------------------------------------------------------- rooms and members
    def next_id(self) -> str:
        self._seq += 1
        return f"{self.tag}-{self._seq:x}"

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
        if self._pubsub is not None:
            try:
                await asyncio.wait_for(self._pubsub.subscribe(room.channel), REDIS_TIMEOUT)
            except Exception as exc:
                self.stats.redis_errors += 1
                self._warn("subscribe", "danmaku: cannot subscribe %s yet: %s", name, exc)
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
        room.apply_state({_decode(k): _decode(v) for k, v in fields.items()})
        room.buffer.likes_total = max(room.buffer.likes_total, int(likes or 0))
        for hook in self.on_remote_hooks:
            await hook(room, {"lotteries_known": [_decode(x) for x in lottery_ids]})

    async def history(self, room: Room, last_id: str | None) -> tuple[list[dict[str, Any]], bool]:
        """Comments for a joining client and whether some it missed are gone (``gap``)."""
        items: list[dict[str, Any]] = []
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lrange(self.keys.history(room.name), -self.config.history_size, -1)
            pipe.zrange(self.keys.deleted(room.name), 0, -1)
            raw, deleted = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            gone = {_decode(d) for d in deleted}
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
        del items[: -self.config.history_size]
        if last_id is None:
            return items[-self.config.history_on_join :], False
        for i, c in enumerate(items):
            if c["id"] == last_id:
                return items[i + 1 :], False
        return items[-self.config.history_on_join :], True

    def activate(self, member: Member, joined: dict[str, Any]) -> None:
        """Make ``member`` receive batches, right after its ``joined`` frame (synchronous)."""
        room = self.rooms.get(member.room)
        if room is None or member.sid in self.members:
            return
        sock = self.sio.eio.sockets.get(member.eio_sid)
        if sock is None or sock.closed:
            return
        if not self.sio.manager.is_connected(member.sid, self.config.namespace):
            return
        self._send_frame(member, "joined", joined)
        room.members[member.sid] = member
        self.members[member.sid] = member
        room.empty_since = None
        room.buffer.joins += 1
        room.buffer.online += 1
        self.stats.connections += 1
        self._out(room.name).add("j", 1)
        self._outbox_ready.set()

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
            self._out(room.name).add("v", 1)
            self._outbox_ready.set()
        self.stats.connections = max(0, self.stats.connections - 1)
        return member

    def members_of(self, room: str, user_id: str) -> list[Member]:
        r = self.rooms.get(room)
        if r is None:
            return []
        return [m for m in r.members.values() if m.user_id == user_id]

    # ----------------------------------------------------------------- inbound
    def _out(self, room: str) -> Outgoing:
        out = self._outbox.get(room)
        if out is None:
            out = self._outbox[room] = Outgoing()
        return out

    async def submit_comment(self, member: Member, data: Any) -> dict[str, Any]:
        """Accept a comment or raise :class:`PayloadError`; returns the ack payload."""
        room = self.rooms.get(member.room)
        if room is None:
            raise PayloadError("not_joined", "not in a room")
        if member.viewer is None:
            raise PayloadError("not_authenticated", "anonymous viewers cannot comment; log in")
        cfg = self.config
        parsed = parse_comment(data, cfg.max_comment_chars)
        now = time.time()
        uid = member.viewer.user_id
        if room.banned_until(uid, now) is not None:
            raise PayloadError("banned", "you are banned from this room")
        until = room.muted_until(uid, now)
        if until is not None:
            raise PayloadError("muted", "you are muted in this room", until=until or None)
        privileged = member.role.privileged
        if room.room_muted and not privileged:
            raise PayloadError("room_muted", "comments are closed in this room for now")
        mono = time.monotonic()
        if room.slow_mode_s > 0 and not privileged:
            last = room.last_comment.get(uid)
            if last is not None and mono - last < room.slow_mode_s:
                wait = round(room.slow_mode_s - (mono - last), 2)
                raise PayloadError("slow_mode", f"slow mode: wait {wait}s", retry_after=wait)
        wait_rl = self._buckets.take(uid, mono)
        if wait_rl > 0:
            raise PayloadError(
                "rate_limited", "too many comments; slow down", retry_after=round(wait_rl, 2)
            )
        if room.slow_mode_s > 0 and not privileged:
            room.last_comment[uid] = mono
            room.last_comment.move_to_end(uid)
            if len(room.last_comment) > MAX_LAST_COMMENT_PER_ROOM:
                room.last_comment.popitem(last=False)
        text, masked = self.filter.clean(parsed.text) if self.filter else (parsed.text, False)
        if masked:
            self.stats.comments_filtered += 1
        comment = {
            "id": self.next_id(),
            "user": uid,
            "nick": member.viewer.nick,
            "text": text,
            "ts": int(now * 1000),
            "role": member.role.value,
        }
        self.stats.comments_in += 1
        room.unreported_comments += 1
        room.buffer.add_comment(comment, privileged)
        room.remember(comment)
        out = self._out(room.name)
        if len(out.comments) < MAX_OUTBOX_COMMENTS_PER_ROOM:
            out.comments.append(json.dumps(comment, separators=(",", ":"), ensure_ascii=False))
        else:
            self.stats.outbox_dropped += 1
        self._outbox_ready.set()
        ack: dict[str, Any] = {"ok": True, "id": comment["id"], "filtered": masked}
        for hook in self.on_comment_hooks:
            extra = await hook(member, room, comment, parsed.text)
            if extra:
                ack.update(extra)
        return ack

    def submit_like(self, member: Member, data: Any) -> dict[str, Any]:
        room = self.rooms.get(member.room)
        if room is None:
            raise PayloadError("not_joined", "not in a room")
        if member.viewer is None:
            raise PayloadError("not_authenticated", "anonymous viewers cannot like; log in")
        count = parse_like(data, self.config.likes_max_per_message)
        wait = self._like_buckets.take(member.viewer.user_id, time.monotonic(), float(count))
        if wait > 0:
            raise PayloadError("rate_limited", "too many likes", retry_after=round(wait, 2))
        self.stats.likes_in += count
        room.unreported_likes += count
        room.buffer.add_likes(count)
        self._out(room.name).like_delta += count
        self._outbox_ready.set()
        return {"ok": True}

    def post_notice(self, room_name: str, notice: dict[str, Any], propagate: bool) -> None:
        """Deliver ``notice`` in the room's next batch (here, and on all nodes if ``propagate``)."""
        room = self.rooms.get(room_name)
        if room is not None:
            room.buffer.add_notice(notice)
        if propagate:
            if not self._out(room_name).add("x", notice):
                self.stats.lost_remote_items += 1
            self._outbox_ready.set()

    def post_deleted(self, room_name: str, comment_id: str, propagate: bool) -> None:
        room = self.rooms.get(room_name)
        if room is not None:
            room.buffer.add_deleted(comment_id)
            room.forget(comment_id)
        if propagate:
            self._out(room_name).add("d", comment_id)
            self._outbox_ready.set()

    def post_control(self, room_name: str, control: dict[str, Any]) -> None:
        """Propagate a moderation/lottery state change to the other nodes' caches."""
        if not self._out(room_name).add("m", control):
            self.stats.lost_remote_items += 1
        self._outbox_ready.set()

    async def send_direct(
        self, room_name: str, user_id: str, event: str, data: dict[str, Any], propagate: bool
    ) -> None:
        """Send ``event`` to every session of ``user_id`` in the room (on every node)."""
        for m in self.members_of(room_name, user_id):
            self._send_frame(m, event, data)
        if propagate:
            self._out(room_name).add("u", {"user": user_id, "event": event, "data": data})
            self._outbox_ready.set()

    async def kick(self, room_name: str, user_id: str, reason: str) -> int:
        members = self.members_of(room_name, user_id)
        for m in members:
            self._send_frame(m, "kicked", {"room": room_name, "reason": reason})
            await self.sio.disconnect(m.sid, namespace=self.config.namespace)
        return len(members)

    # ----------------------------------------------------------------- fan-out
    def _encode(self, event: str, data: Any) -> eio_packet.Packet:
        pkt = self.sio.packet_class(
            sio_packet.EVENT, namespace=self.config.namespace, data=[event, data]
        )
        return eio_packet.Packet(eio_packet.MESSAGE, pkt.encode())

    def _send_frame(self, member: Member, event: str, data: Any) -> None:
        self._fanout([member], self._encode(event, data))

    def _fanout(self, members: list[Member] | Any, frame: eio_packet.Packet) -> int:
        """Send one pre-encoded packet to each member; slow clients are dropped, not buffered.

        Websocket viewers whose queue is idle get the same pre-framed ``bytes`` written to
        their transport (see :mod:`danmaku.fanout`); the others get ``frame`` queued behind
        what they have pending. A viewer with more than ``client_backlog_bytes`` unsent or
        ``client_backlog_max`` queued packets is disconnected (it may resume with ``last_id``).
        """
        sockets = self.sio.eio.sockets
        conns = self._conns
        limit = self.config.client_backlog_max
        max_bytes = self.config.client_backlog_bytes
        wire: bytes | None = None
        direct = queued = 0
        slow: list[Member] = []
        for m in members:
            if m.dropped:
                continue
            sock = sockets.get(m.eio_sid)
            if sock is None or sock.closed or sock.closing:
                continue
            conn = conns.get(m.eio_sid)
            if conn is not None and conn.ready(sock):
                transport = conn.transport
                if transport.get_write_buffer_size() > max_bytes:
                    slow.append(m)
                    continue
                if wire is None:
                    wire = ws_text_frame(frame.encode().encode())
                transport.write(wire)
                direct += 1
                continue
            queue = sock.queue
            if queue.qsize() >= limit or (
                conn is not None and conn.transport.get_write_buffer_size() > max_bytes
            ):
                slow.append(m)
                continue
            queue.put_nowait(frame)
            queued += 1
        for m in slow:
            m.dropped = True
            self.stats.slow_clients_dropped += 1
            self._warn("slow", "danmaku: dropping slow client %s in %s", m.sid, m.room)
            self.spawn(self._drop(m))
        self.stats.direct_frames += direct
        self.stats.queued_frames += queued
        return direct + queued

    async def _drop(self, member: Member) -> None:
        """Disconnect a viewer that fell too far behind, closing its connection at once.

        Its unsent backlog is discarded; a Socket.IO client sees the transport close,
        reconnects by itself and resumes from ``last_id`` (when ``auth`` is a function).
        """
        conn = self._conns.get(member.eio_sid)
        await self.sio.disconnect(member.sid, namespace=self.config.namespace)
        if conn is not None:
            conn.transport.abort()
        else:
            await self.sio.eio.disconnect(member.eio_sid)

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
        self.stats.frames += self._fanout(room.members.values(), self._encode("comments", batch))

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

    # ----------------------------------------------------------------- Redis: writes
    def _envelope_prefix(self, out: Outgoing) -> str:
        env: dict[str, Any] = {"n": self.tag}
        if out.like_delta:
            env["l"] = out.like_delta
        env.update(out.items)
        body = json.dumps(env, separators=(",", ":"), ensure_ascii=False)[:-1]
        if out.comments:
            body += ',"c":[' + ",".join(out.comments) + "]"
        return body + ',"t":'

    async def _flush_rooms(self, rooms: list[tuple[str, Outgoing]]) -> list[Any]:
        """One pipelined ``EVALSHA room_flush`` per room (no ``SCRIPT EXISTS`` round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        sha = self._room_flush.sha
        for name, out in rooms:
            pipe.evalsha(
                sha,
                2,
                self.keys.history(name),
                self.keys.likes(name),
                self.config.history_size,
                out.like_delta,
                self.keys.channel(name),
                self._envelope_prefix(out),
                *out.comments,
            )
        return list(await pipe.execute(raise_on_error=False))

    async def _write_outbox(self) -> None:
        if not self._outbox:
            return
        batch, self._outbox = self._outbox, {}
        rooms = list(batch.items())
        try:
            results = await asyncio.wait_for(self._flush_rooms(rooms), REDIS_TIMEOUT)
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
                    self._out(name).like_delta += out.like_delta
                self._warn(
                    "write",
                    "danmaku: Redis write for %s failed (%s); %d comments not in history "
                    "nor sent to other nodes",
                    name,
                    result,
                    len(out.comments),
                )
            else:
                room = self.rooms.get(name)
                if room is not None and isinstance(result, int):
                    room.buffer.likes_total = max(room.buffer.likes_total, result)

    async def _writer_loop(self) -> None:
        while True:
            await self._outbox_ready.wait()
            await asyncio.sleep(WRITE_COALESCE_S)  # one round trip carries a few ms of comments
            self._outbox_ready.clear()
            errors = self.stats.redis_errors
            try:
                await self._write_outbox()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("danmaku: writer failed")
            if self._outbox:
                if self.stats.redis_errors != errors:  # failed: back off before retrying
                    await asyncio.sleep(0.2 if self.stats.redis_connected else 1.0)
                self._outbox_ready.set()

    # ----------------------------------------------------------------- Redis: reads
    def _on_envelope(self, channel: str, raw: bytes | str) -> None:
        name = channel[len(self.keys.channel("")) :]
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
        for c in env.get("c") or ():
            if isinstance(c, dict) and room.remember(c):
                room.buffer.add_comment(c, c.get("role") in ("anchor", "moderator", "operator"))
        if env.get("l"):
            room.buffer.add_likes(int(env["l"]), int(env.get("t") or 0))
        elif env.get("t"):
            room.buffer.likes_total = max(room.buffer.likes_total, int(env["t"]))
        for key, attr in (("j", "joins"), ("v", "leaves")):
            n = sum(int(x) for x in env.get(key) or ())
            setattr(room.buffer, attr, getattr(room.buffer, attr) + n)
            room.buffer.online = max(0, room.buffer.online + (n if key == "j" else -n))
        for notice in env.get("x") or ():
            room.buffer.add_notice(notice)
        for cid in env.get("d") or ():
            room.buffer.add_deleted(cid)
            room.forget(cid)
        for d in env.get("u") or ():
            for m in self.members_of(name, d.get("user")):
                self._send_frame(m, d.get("event", "direct"), d.get("data"))
        for control in env.get("m") or ():
            for hook in self.on_remote_hooks:
                self.spawn(hook(room, control))

    async def _subscriber_loop(self) -> None:
        backoff = 0.1
        down_since: float | None = None
        ctl = self.keys.channel("") + "*node*" + self.tag  # never published: keeps listen alive
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(
                    pubsub.subscribe(ctl, *[r.channel for r in self.rooms.values()]), REDIS_TIMEOUT
                )
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
                    await self._recover(down_since)
                    down_since = None
                    for room in list(self.rooms.values()):
                        await self._load_room_state(room)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg and msg.get("type") == "message":
                        self._on_envelope(_decode(msg["channel"]), msg["data"])
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

    async def _recover(self, since: float) -> None:
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
                    room.buffer.add_comment(c, c.get("role") in ("anchor", "moderator", "operator"))
                    recovered += 1
        self.stats.recovered_comments += recovered
        if recovered:
            logger.warning("danmaku: recovered %d comments missed while Redis was down", recovered)

    # ----------------------------------------------------------------- housekeeping
    async def _housekeeping_loop(self) -> None:
        interval = max(0.2, self.config.presence_interval_s)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._presence_round(interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.redis_errors += 1
                self._warn("presence", "danmaku: presence update failed: %s", exc)
                for room in self.rooms.values():
                    room.buffer.online = max(room.buffer.online, len(room.members))
            for hook in self.on_tick_hooks:
                try:
                    await hook()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("danmaku: housekeeping hook failed")
            self._collect_rooms()

    async def _presence_round(self, interval: float) -> None:
        rooms = list(self.rooms.values())
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
            pipe.hgetall(key)
            pipe.get(self.keys.likes(room.name))
        results = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        stale_after = interval * 3 + 1
        for i, room in enumerate(rooms):
            fields, likes = results[3 * i + 1], results[3 * i + 2]
            online = 0
            stale: list[str] = []
            for node, value in fields.items():
                count, _, ts = _decode(value).partition(":")
                try:
                    if now - float(ts) > stale_after:
                        stale.append(_decode(node))
                        continue
                    online += int(count)
                except ValueError:
                    stale.append(_decode(node))
            if stale:
                await asyncio.wait_for(
                    self.redis.hdel(self.keys.presence(room.name), *stale), REDIS_TIMEOUT
                )
            room.buffer.online = online
            room.buffer.likes_total = max(room.buffer.likes_total, int(likes or 0))

    def _collect_rooms(self) -> None:
        now = time.monotonic()
        for name, room in list(self.rooms.items()):
            if room.members or room.empty_since is None or now - room.empty_since < 30:
                continue
            if room.lotteries or room.buffer.pending() or room.unreported_comments:
                continue
            del self.rooms[name]
            if self._pubsub is not None:
                self.spawn(self._unsubscribe(room.channel))

    async def _unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(Exception):
            if self._pubsub is not None:
                await asyncio.wait_for(self._pubsub.unsubscribe(channel), REDIS_TIMEOUT)

    async def delete_from_history(self, room: str, comment_id: str) -> bool:
        result = await asyncio.wait_for(
            self._history_delete(keys=[self.keys.history(room)], args=[comment_id]),
            REDIS_TIMEOUT,
        )
        return bool(result)
