"""Live figures of a broadcast for the dashboard and ``/metrics``.

Two sources:

* the relay's per-stream stats (viewers by protocol, bitrate, codec, fps, uptime): the
  ``relay`` package's Python accessor when it has one, else its ``GET /api/streams``;
* counters kept here from bus events, per broadcast in Redis (so every node sees the same
  figures): ``order.paid`` (orders, GMV in fen), ``danmaku.comment`` (comments) and
  ``danmaku.like`` (likes), ``count`` each.

Comments per second is the difference of the comment counter over a short window, kept in
a bounded in-memory ring per broadcast.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from core.bus import EventBus
from danmaku.events import DanmakuComment, DanmakuLike
from shop_bridge.events import OrderPaid

logger = logging.getLogger(__name__)

KEY = "berrylive:control:bstats:"
RATE_WINDOW = 10.0
MAX_TRACKED = 1000

StreamsProvider = Callable[[], Awaitable[list[dict[str, Any]]]]


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:
        return int(value)
    return 0


class LiveStats:
    def __init__(self, redis: Any, streams: StreamsProvider | None = None) -> None:
        self.redis = redis
        self.streams_provider = streams
        self._samples: dict[int, deque[tuple[float, int]]] = {}
        self.totals = {"comments": 0, "likes": 0, "orders": 0, "gmv_fen": 0}

    def subscribe_events(self, bus: EventBus) -> list[Callable[[], None]]:
        """Count paid orders, comments and likes; returns the unsubscribers."""
        return [
            bus.on(OrderPaid, self.on_order_paid),
            bus.on(DanmakuComment, self.on_comments),
            bus.on(DanmakuLike, self.on_likes),
        ]

    async def on_order_paid(self, event: OrderPaid) -> None:
        bid = _broadcast_id(event.broadcast_id)  # the shop sends it as a decimal string
        gmv = _int(event.amount_fen)
        self.totals["orders"] += 1
        self.totals["gmv_fen"] += gmv
        if bid is not None:
            await self.redis.hincrby(KEY + str(bid), "gmv_fen", gmv)
            await self.redis.hincrby(KEY + str(bid), "orders", 1)

    async def on_comments(self, event: DanmakuComment) -> None:
        await self._count("comments", event.broadcast_id, event.count)

    async def on_likes(self, event: DanmakuLike) -> None:
        await self._count("likes", event.broadcast_id, event.count)

    async def _count(self, field: str, broadcast_id: Any, count: Any) -> None:
        amount = max(1, _int(count))
        self.totals[field] += amount
        bid = _broadcast_id(broadcast_id)  # the hub may send the id as a decimal string
        if bid is not None:
            await self.redis.hincrby(KEY + str(bid), field, amount)

    async def counters(self, broadcast_id: int) -> dict[str, int]:
        raw = await self.redis.hgetall(KEY + str(broadcast_id))
        out = {"comments": 0, "likes": 0, "orders": 0, "gmv_fen": 0}
        for k, v in raw.items():
            key = k.decode() if isinstance(k, bytes) else str(k)
            if key in out:
                out[key] = int(v)
        return out

    def comment_rate(self, broadcast_id: int, comments: int, now: float | None = None) -> float:
        now = time.time() if now is None else now
        ring = self._samples.get(broadcast_id)
        if ring is None:
            if len(self._samples) >= MAX_TRACKED:
                self._samples.pop(next(iter(self._samples)))
            ring = self._samples[broadcast_id] = deque(maxlen=64)
        ring.append((now, comments))
        while len(ring) > 2 and now - ring[0][0] > RATE_WINDOW:
            ring.popleft()
        t0, c0 = ring[0]
        if now - t0 <= 0:
            return 0.0
        return round(max(0, comments - c0) / (now - t0), 2)

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


def _broadcast_id(value: Any) -> int | None:
    """A broadcast id from an event: an int, or the decimal string other packages use."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    return None
