"""Live figures of a broadcast for the dashboard, the series and ``/metrics``.

Three sources:

* the relay's per-stream stats (viewers by protocol, bitrate, codec, fps, uptime): the
  ``relay`` package's Python accessor when it has one, else its ``GET /api/streams``;
* the shop's sales figures, by the one definition of GMV, orders and buyers
  (:mod:`shop_bridge.gmv`), read from the order records when asked (never counted from
  events, which would disagree with ``/sales`` after a refund or a lottery prize order);
* counters kept here from bus events, per broadcast in Redis (so every node sees the same
  figures): ``danmaku.comment`` (comments) and ``danmaku.like`` (likes), ``count`` each.
  A count whose event names no broadcast (the hub did not know the room's broadcast, e.g.
  it was scheduled before that node started) is credited to the broadcast of its room,
  looked up here.

Comments per second is the number of comments reported in the last :data:`RATE_WINDOW`
seconds divided by it, from the events themselves (a bounded ring per broadcast), so it
does not depend on how often anybody asks.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from core.bus import Event, EventBus
from core.events import EventDecodeError
from danmaku.events import DanmakuComment, DanmakuLike
from shop_bridge.events import OrderPaid, OrderRefunded

logger = logging.getLogger(__name__)

KEY = "berrylive:control:bstats:"
RATE_WINDOW = 10.0
MAX_TRACKED = 1000
SALES_FIELDS = ("gmv_fen", "paid_fen", "refunded_fen", "orders", "buyers", "units")

StreamsProvider = Callable[[], Awaitable[list[dict[str, Any]]]]
SalesProvider = Callable[[list[int]], Awaitable[dict[int, dict[str, int]]]]
"""Broadcast ids -> their sales figures (:class:`shop_bridge.gmv.Figures` as a dict)."""
RoomResolver = Callable[[str], Awaitable[int | None]]
"""A danmaku room (``<app>/<stream>``) -> its broadcast's id."""


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:
        return int(value)
    return 0


class LiveStats:
    def __init__(
        self,
        redis: Any,
        streams: StreamsProvider | None = None,
        sales: SalesProvider | None = None,
        room_broadcast: RoomResolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.streams_provider = streams
        self.sales_provider = sales
        self.room_broadcast = room_broadcast
        self.clock = clock
        self._reports: OrderedDict[int, deque[tuple[float, int]]] = OrderedDict()
        self._rooms: OrderedDict[str, int | None] = OrderedDict()
        self.totals = {
            "comments": 0,
            "likes": 0,
            "orders": 0,
            "paid_fen": 0,
            "refunds": 0,
            "refunded_fen": 0,
        }
        """This node's counts of events since it started (``/metrics`` counters)."""

    def subscribe_events(self, bus: EventBus) -> list[Callable[[], None]]:
        """Count comments and likes (and, for ``/metrics``, paid and refunded sales);
        returns the unsubscribers."""
        return [
            bus.on(OrderPaid, self.on_order_paid),
            # raw: the shop publishes it through its state -> event table (order_moved)
            bus.subscribe("order.refunded", self._on_refunded_event),
            bus.on(DanmakuComment, self.on_comments),
            bus.on(DanmakuLike, self.on_likes),
        ]

    def on_order_paid(self, event: OrderPaid) -> None:
        if event.kind == "prize":
            return  # a lottery prize is not a sale (shop_bridge.gmv)
        self.totals["orders"] += 1
        self.totals["paid_fen"] += max(0, _int(event.amount_fen))

    def _on_refunded_event(self, event: Event) -> None:
        try:
            self.on_order_refunded(OrderRefunded.from_data(event.data, event.topic))
        except EventDecodeError as exc:
            logger.warning("order.refunded from %s not decoded: %s", event.node, exc)

    def on_order_refunded(self, event: OrderRefunded) -> None:
        if event.kind == "prize":
            return
        self.totals["refunds"] += 1
        self.totals["refunded_fen"] += max(0, _int(event.amount_fen))

    async def on_comments(self, event: DanmakuComment) -> None:
        bid = await self._count("comments", event.room, event.broadcast_id, event.count)
        if bid is not None:
            ring = self._reports.get(bid)
            if ring is None:
                if len(self._reports) >= MAX_TRACKED:
                    self._reports.popitem(last=False)
                ring = self._reports[bid] = deque(maxlen=256)
            ring.append((self.clock(), max(1, _int(event.count))))

    async def on_likes(self, event: DanmakuLike) -> None:
        await self._count("likes", event.room, event.broadcast_id, event.count)

    async def _count(self, field: str, room: Any, broadcast_id: Any, count: Any) -> int | None:
        amount = max(1, _int(count))
        self.totals[field] += amount
        bid = broadcast_id_of(broadcast_id)
        if bid is None and isinstance(room, str):
            bid = await self._broadcast_of_room(room)
        if bid is not None:
            await self.redis.hincrby(KEY + str(bid), field, amount)
        return bid

    async def _broadcast_of_room(self, room: str) -> int | None:
        if room in self._rooms:
            self._rooms.move_to_end(room)
            return self._rooms[room]
        if self.room_broadcast is None:
            return None
        try:
            bid = await self.room_broadcast(room)
        except Exception as exc:  # never lose the event loop's handler over a lookup
            logger.debug("room %s: broadcast lookup failed: %s", room[:80], exc)
            return None
        if bid is not None:  # an unknown room may become a broadcast's later: not cached
            self._rooms[room] = bid
            while len(self._rooms) > MAX_TRACKED:
                self._rooms.popitem(last=False)
        return bid

    async def counters(self, broadcast_id: int) -> dict[str, int]:
        """Comments and likes so far (Redis)."""
        raw = await self.redis.hgetall(KEY + str(broadcast_id))
        out = {"comments": 0, "likes": 0}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else str(k)
            if key in out:
                out[key] = int(v)
        return out

    async def sales(self, broadcast_ids: list[int]) -> dict[int, dict[str, int]]:
        """The shop's figures of each broadcast (zeros without a shop)."""
        zero = dict.fromkeys(SALES_FIELDS, 0)
        out = {b: dict(zero) for b in broadcast_ids}
        if self.sales_provider is None or not broadcast_ids:
            return out
        for bid, figs in (await self.sales_provider(broadcast_ids)).items():
            if bid in out:
                out[bid].update({k: int(figs.get(k, 0)) for k in SALES_FIELDS})
        return out

    def comment_rate(self, broadcast_id: int, now: float | None = None) -> float:
        """Comments per second over the last :data:`RATE_WINDOW` seconds."""
        now = self.clock() if now is None else now
        ring = self._reports.get(broadcast_id)
        if not ring:
            return 0.0
        while ring and now - ring[0][0] > RATE_WINDOW:
            ring.popleft()
        return round(sum(n for _t, n in ring) / RATE_WINDOW, 2)

    async def streams(self) -> list[dict[str, Any]]:
        if self.streams_provider is None:
            return []
        try:
            return await self.streams_provider()
        except Exception as exc:  # the relay is another package: never fail the dashboard
            logger.debug("relay stats unavailable: %s", exc)
            return []

    async def stream(self, app: str, name: str) -> dict[str, Any] | None:
        for s in await self.streams():
            if s.get("app") == app and (s.get("name") == name or s.get("stream") == name):
                return s
        return None


def viewers_of(stream: dict[str, Any] | None) -> dict[str, int]:
    out = {"flv": 0, "ws": 0, "rtmp": 0, "hls": 0}
    raw = (stream or {}).get("viewers")
    if isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(k, str) and len(out) < 16:
                out[k] = _int(v)
    return out


def broadcast_id_of(value: Any) -> int | None:
    """A broadcast id from an event: an int (a decimal string from an older node)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None
