"""Assembly of the hub on the aiohttp app: Socket.IO server, services, bus subscriptions."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from control.events import BroadcastEvent, StaffRevoked
from core.abuse import ABUSE_GUARD
from core.bus import Event, EventBus
from core.runtime import RUNTIME
from danmaku.config import DanmakuConfig
from danmaku.delivery import Delivery
from danmaku.events import DanmakuComment, DanmakuLike
from danmaku.hub import Hub
from danmaku.known_rooms import CLOSING_STATES, KnownRooms
from danmaku.lottery import LotteryService
from danmaku.moderation import Actor, Moderation, audit
from danmaku.namespace import LiveNamespace
from danmaku.payloads import PayloadError, parse_room
from danmaku.revocations import STAFF_PREFIX, Revocations
from danmaku.session import Sessions
from danmaku.websocket import PING_INTERVAL_S, PING_TIMEOUT_S, LiveEndpoint
from danmaku.wordfilter import WordFilter
from ingest.events import StreamPublished

logger = logging.getLogger(__name__)

__all__ = [
    "DANMAKU",
    "LIVE_WS",
    "SIO",
    "DanmakuService",
    "make_ctx",
    "make_sio",
    "notice_from_event",
]

PRIVATE_KEYS = frozenset(
    {"client_ip", "ip", "node", "secret", "token", "url", "push_url"}
    # staff who acted: their login names are nobody's business in the room
    | {"actor", "closed_by", "created_by", "updated_by", "changed_by", "operator", "by"}
)
TOPIC_TYPES = {"stream.published": "live_start", "stream.unpublished": "live_end"}


def room_of(data: dict[str, Any]) -> str | None:
    """The room an event is about: ``data["room"]``, else ``"<app>/<stream>"`` (app ``live``)."""
    raw = data.get("room")
    if raw is None and isinstance(data.get("stream"), str):
        app = data.get("app") if isinstance(data.get("app"), str) else "live"
        raw = f"{app}/{data['stream']}"
    try:
        return parse_room(raw)
    except PayloadError:
        return None


def notice_from_event(event: Event) -> tuple[str, dict[str, Any]] | None:
    """``(room, notice)`` for a bus event, or None when it names no room."""
    room = room_of(event.data)
    if room is None:
        return None
    if event.topic in TOPIC_TYPES:
        data: dict[str, Any] = {
            "room": room,
            "app": event.data.get("app"),
            "stream": event.data.get("stream"),
        }
        if "reason" in event.data:
            data["reason"] = event.data["reason"]
    else:
        data = {k: v for k, v in event.data.items() if k not in PRIVATE_KEYS}
    return room, {"type": TOPIC_TYPES.get(event.topic, event.topic), "data": data, "ts": event.ts}


class DanmakuService:
    def __init__(
        self,
        config: DanmakuConfig,
        sio: socketio.AsyncServer,
        redis: Any,
        bus: EventBus,
        node_id: str,
        secret: str,
    ) -> None:
        self.config = config
        self.sio = sio
        self.bus = bus
        self.hub = Hub(config, redis, node_id, load_filter(config))
        self.moderation = Moderation(self.hub, bus)
        self.lottery = LotteryService(self.hub, bus)
        self.known_rooms = KnownRooms(redis, self.hub.keys, config.room_ttl_s)
        self.revocations = Revocations(redis, self.hub.keys)
        self.sessions = Sessions(
            self.hub,
            self.moderation,
            self.lottery,
            secret,
            self._may_open(config),
            self.revocations,
        )
        self.namespace = LiveNamespace(config.namespace, self.sessions, config.client_backlog_max)
        self._unsubscribe: list[Callable[[], None]] = []
        self._broadcasts: OrderedDict[str, int] = OrderedDict()
        self.hub.on_tick_hooks.append(self.report_counts)

    async def start(self) -> None:
        self.sio.register_namespace(self.namespace)
        await self.hub.start()
        self.lottery.start_backfill()
        # raw on purpose: a configurable list of topics whose payloads pass through to
        # the room as notices (only private keys removed), whatever their shape
        for topic in self.config.notice_topics:
            self._unsubscribe.append(self.bus.subscribe(topic, self._on_bus_event))
        self._unsubscribe.append(self.bus.on(BroadcastEvent, self._on_broadcast))
        self._unsubscribe.append(self.bus.on(BroadcastEvent, self._room_of_broadcast))
        self._unsubscribe.append(self.bus.on(StreamPublished, self._room_of_stream))
        self._unsubscribe.append(self.bus.on(StaffRevoked, self._staff_revoked))

    async def stop(self) -> None:
        for unsub in self._unsubscribe:
            unsub()
        self._unsubscribe.clear()
        for member in list(self.hub.members.values()):
            await Delivery.disconnect(member)
        await self.lottery.stop()
        await self.hub.stop()

    async def _on_bus_event(self, event: Event) -> None:
        found = notice_from_event(event)
        if found is None:
            logger.debug("bus event %s names no room; not delivered", event.topic)
            return
        room, notice = found
        self.hub.stats.bus_notices += 1
        # Every node receives bus events itself: deliver locally only.
        self.hub.post_notice(room, notice, propagate=False)

    def _on_broadcast(self, event: BroadcastEvent) -> None:
        """Remember which broadcast a room belongs to, for the counters control reads."""
        try:
            room = parse_room(event.room)
        except PayloadError:
            return
        bid = event.id
        if not isinstance(bid, int) or isinstance(bid, bool):
            return
        self._broadcasts[room] = bid
        self._broadcasts.move_to_end(room)
        while len(self._broadcasts) > self.config.max_rooms:
            self._broadcasts.popitem(last=False)

    def _may_open(self, config: DanmakuConfig) -> Callable[[str], Awaitable[bool]] | None:
        """The check a socket without a token passes to join ``room`` (None: any room)."""
        if config.anonymous_rooms == "any":
            return None

        async def may_open(room: str) -> bool:
            return room in self.hub.rooms or await self.known_rooms.exists(room)

        return may_open

    async def _staff_revoked(self, event: StaffRevoked) -> None:
        """Refuse the account's hub tokens from now on, everywhere, and cut its sockets."""
        try:
            await self.revocations.revoke(event.user_id, event.at)
        except Exception as exc:
            logger.error("danmaku: revocation of staff %s not stored: %s", event.user_id, exc)
        uid = f"{STAFF_PREFIX}{event.user_id}"
        for member in list(self.hub.members.values()):
            if member.viewer is not None and member.viewer.user_id == uid:
                await Delivery.disconnect(member)

    async def _room_of_broadcast(self, event: BroadcastEvent) -> None:
        """A broadcast's room exists from its creation until it is deleted, banned or
        cancelled (and ``room_ttl_s`` after its last event)."""
        try:
            room = parse_room(event.room)
        except PayloadError:
            return
        if event.event_topic.rpartition(".")[2] in CLOSING_STATES:
            await self.known_rooms.remove(room)
        else:
            await self.known_rooms.add(room)

    async def _room_of_stream(self, event: StreamPublished) -> None:
        try:
            room = parse_room(f"{event.app}/{event.stream}")
        except PayloadError:
            return
        await self.known_rooms.add(room)

    async def report_counts(self) -> None:
        """Publish this node's comment/like counts per room since the last report.

        ``danmaku.comment`` / ``danmaku.like`` ``{room, broadcast_id?, count}``: aggregated
        every ``presence_interval_s``, never one event per comment.
        """
        for name, room in list(self.hub.rooms.items()):
            bid = self._broadcasts.get(name)
            comments, room.unreported_comments = room.unreported_comments, 0
            if comments:
                await self.bus.emit(DanmakuComment(room=name, count=comments, broadcast_id=bid))
            likes, room.unreported_likes = room.unreported_likes, 0
            if likes:
                await self.bus.emit(DanmakuLike(room=name, count=likes, broadcast_id=bid))

    async def announce(self, room: str, actor: Actor, data: dict[str, Any]) -> None:
        await audit(self.hub, actor, "notice", room, "", data)
        self.hub.post_notice(room, {"type": "announcement", "data": data, "ts": time.time()}, True)

    def stats(self) -> dict[str, Any]:
        body = self.hub.stats.as_dict()
        body["node"] = self.hub.node_id
        body["rooms"] = {
            name: {"local_members": len(r.members), "online": r.buffer.online}
            for name, r in list(self.hub.rooms.items())[:1000]
        }
        return body


def load_filter(config: DanmakuConfig) -> WordFilter:
    words = list(config.sensitive_words)
    if config.sensitive_words_file:
        text = Path(config.sensitive_words_file).read_text(encoding="utf-8")
        words.extend(line.strip() for line in text.splitlines() if line.strip())
    return WordFilter(words, skip_separators=config.filter_skip_separators)


DANMAKU: web.AppKey[DanmakuService] = web.AppKey("berrylive.danmaku", DanmakuService)
SIO: web.AppKey[socketio.AsyncServer] = web.AppKey("berrylive.danmaku.sio", socketio.AsyncServer)
LIVE_WS: web.AppKey[LiveEndpoint] = web.AppKey("berrylive.danmaku.ws", LiveEndpoint)


def make_sio(config: DanmakuConfig) -> socketio.AsyncServer:
    origins: str | list[str] = (
        "*" if "*" in config.cors_allowed_origins else list(config.cors_allowed_origins)
    )
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins=origins,
        max_http_buffer_size=config.max_message_bytes,
        logger=False,
        engineio_logger=False,
        ping_interval=PING_INTERVAL_S,
        ping_timeout=PING_TIMEOUT_S,
    )
    return sio


def make_ctx(
    config: DanmakuConfig,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]
        svc = DanmakuService(config, app[SIO], rt.redis, rt.bus, rt.node_id, rt.secret)
        svc.lottery.guard = lambda: app.get(ABUSE_GUARD)  # the shop's, once it started
        await svc.start()
        app[DANMAKU] = svc
        endpoint = app[LIVE_WS]
        endpoint.start(svc.sessions)
        logger.info("danmaku hub ready on /socket.io/ namespace %s", config.namespace)
        try:
            yield
        finally:
            await endpoint.stop()
            await svc.stop()

    return ctx
