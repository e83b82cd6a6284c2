"""``/metrics``: Prometheus text from a registry owned by the app (no global state).

Figures are gathered when scraped, from what the packages expose: the relay's stream
stats, the broadcast table, the counters :class:`control.stats.LiveStats` keeps from bus
events, the sales figures of the broadcasts not over yet (the one definition of GMV, orders and
buyers: :mod:`shop_bridge.gmv`), the webhook worker's counters, and the bus itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Snapshot = dict[str, Any]


class SnapshotCollector(Collector):
    """Yields the metric families of the last snapshot taken (taken per scrape)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot = {}

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        streams = s.get("streams", [])
        g = GaugeMetricFamily("berrylive_streams", "Streams being published on this node")
        g.add_metric([], sum(1 for st in streams if st.get("live", True)))
        yield g
        viewers = GaugeMetricFamily("berrylive_viewers", "Viewers by protocol", labels=["protocol"])
        totals: dict[str, float] = {}
        for st in streams:
            for proto, n in (st.get("viewers") or {}).items():
                if isinstance(n, int | float):
                    totals[str(proto)] = totals.get(str(proto), 0) + n
        for proto in ("flv", "ws", "rtmp", "hls", *sorted(totals)):
            if proto not in totals:
                totals[proto] = 0
        for proto in sorted(totals):
            viewers.add_metric([proto], totals[proto])
        yield viewers
        bin_ = GaugeMetricFamily(
            "berrylive_stream_bitrate_in_bps", "Incoming bitrate per stream", labels=["stream"]
        )
        bout = GaugeMetricFamily(
            "berrylive_stream_bitrate_out_bps", "Outgoing bitrate per stream", labels=["stream"]
        )
        for st in streams:
            label = f"{st.get('app', '')}/{st.get('name', st.get('stream', ''))}"
            if isinstance(st.get("bitrate_in"), int | float):
                bin_.add_metric([label], st["bitrate_in"])
            if isinstance(st.get("bitrate_out"), int | float):
                bout.add_metric([label], st["bitrate_out"])
        yield bin_
        yield bout
        states = GaugeMetricFamily(
            "berrylive_broadcasts", "Broadcasts by lifecycle state", labels=["state"]
        )
        for state, n in sorted(s.get("broadcasts", {}).items()):
            states.add_metric([state], n)
        yield states
        totals_ = s.get("totals", {})
        for name, key, doc in (
            ("berrylive_comments", "comments", "Comments seen on the bus"),
            ("berrylive_likes", "likes", "Likes seen on the bus"),
            ("berrylive_orders_paid", "orders", "Sales paid (lottery prize orders excluded)"),
            ("berrylive_paid_fen", "paid_fen", "Money paid for sales (fen)"),
            ("berrylive_refunds", "refunds", "Sales refunded in full"),
            ("berrylive_refunded_fen", "refunded_fen", "Money paid back for sales (fen)"),
        ):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], totals_.get(key, 0))
            yield c
        sales = s.get("sales", {})
        for name, key, doc in (
            ("berrylive_broadcast_gmv_fen", "gmv_fen", "GMV of a broadcast not over (fen)"),
            ("berrylive_broadcast_orders", "orders", "Orders of a broadcast not over"),
            ("berrylive_broadcast_buyers", "buyers", "Buyers of a broadcast not over"),
            (
                "berrylive_broadcast_refunded_fen",
                "refunded_fen",
                "Money paid back for a broadcast not over (fen)",
            ),
        ):
            g = GaugeMetricFamily(name, doc + "; docs/shop.md, GMV", labels=["broadcast_id"])
            for bid, figs in sorted(sales.items()):
                g.add_metric([str(bid)], figs.get(key, 0))
            yield g
        wh = s.get("webhooks", {})
        c = CounterMetricFamily("berrylive_webhook_deliveries", "Webhook deliveries sent OK")
        c.add_metric([], wh.get("delivered", 0))
        yield c
        c = CounterMetricFamily(
            "berrylive_webhook_failures", "Failed webhook attempts", labels=["final"]
        )
        c.add_metric(["false"], wh.get("failed_attempts", 0))
        c.add_metric(["true"], wh.get("gave_up", 0))
        yield c
        g = GaugeMetricFamily("berrylive_webhook_pending", "Webhook deliveries waiting")
        g.add_metric([], wh.get("pending", 0))
        yield g
        c = CounterMetricFamily("berrylive_bus_events_published", "Events published on this node")
        c.add_metric([], s.get("bus_published", 0))
        yield c
        c = CounterMetricFamily(
            "berrylive_valkey_restarts",
            "Restarts of the embedded valkey-server after it exited on its own (core/redis.py)",
        )
        c.add_metric([], s.get("valkey_restarts", 0))
        yield c


class Metrics:
    def __init__(self, gather: Callable[[], Awaitable[Snapshot]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = SnapshotCollector()
        self.registry.register(self.collector)
        self._gather = gather
        self._lock = asyncio.Lock()

    async def render(self) -> bytes:
        async with self._lock:
            self.collector.snapshot = await self._gather()
            return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        body = await self.render()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp
