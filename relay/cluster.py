"""Cluster membership in Redis: which nodes are alive (role, URLs, load) and which origin
holds which stream.

Keys (``P`` = ``relay.cluster_prefix``):

- ``P node:<id>``: JSON :class:`NodeInfo`, expires after ``cluster_ttl``; refreshed every
  ``cluster_heartbeat`` seconds (with jitter, so nodes do not beat in step).
- ``P nodes``: sorted set of node ids scored by their last heartbeat (enumeration without
  ``KEYS``/``SCAN``; stale members are pruned on every beat).
- ``P stream:<app>/<name>``: id of the origin holding that stream, expires after
  ``cluster_ttl``. A new publisher claims it unconditionally (the newest publisher wins,
  like a takeover); a heartbeat only refreshes a claim it still owns; a node releases only
  its own claim (compare-and-delete in Lua).

The same commands run against the embedded valkey and a real Redis deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from core.runtime import Runtime
from ingest.events import StreamPublished, StreamUnpublished
from relay.backoff import backoff_delay
from relay.config import RelayConfig
from relay.hub import StreamHub, StreamRegistry

logger = logging.getLogger(__name__)

MAX_NODES = 1024
"""Nodes read from the directory at most (bounds every scheduler decision)."""
MAX_STREAMS_PER_NODE = 2000
"""Streams a node lists in its registration at most."""

_REFRESH_IF_MINE = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_DELETE_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass
class NodeInfo:
    """What a node tells the cluster about itself (one JSON value in Redis)."""

    node: str
    role: str
    http: str
    """HTTP base URL (``http://host:port``)."""
    rtmp: str
    """RTMP base URL (``rtmp://host:port``)."""
    ts: float
    viewers: int = 0
    bandwidth_out: int = 0
    """Bits per second sent to viewers (and edges) over the last heartbeat."""
    cpu: float = 0.0
    """CPU percent of this process (100 = one core)."""
    pid: int = 0
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``app/name`` -> ``{viewers, live, upstream, bitrate_in, ...}``."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> NodeInfo | None:
        """Parse a registration; None when malformed (never trust what is in Redis)."""
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
            if not isinstance(obj, dict):
                return None
            streams = obj.get("streams") or {}
            return cls(
                node=str(obj["node"]),
                role=str(obj["role"]),
                http=str(obj["http"]),
                rtmp=str(obj["rtmp"]),
                ts=float(obj["ts"]),
                viewers=int(obj.get("viewers", 0)),
                bandwidth_out=int(obj.get("bandwidth_out", 0)),
                cpu=float(obj.get("cpu", 0.0)),
                pid=int(obj.get("pid", 0)),
                streams={str(k): dict(v) for k, v in streams.items() if isinstance(v, dict)},
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None

    def load(self, cpu_weight: float) -> float:
        """One number to compare edges: viewers, plus CPU converted into viewers."""
        return self.viewers + self.cpu * cpu_weight


class ClusterDirectory:
    """Reads and writes the node and stream directory in Redis."""

    def __init__(self, redis: Any, prefix: str, ttl: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._cache: tuple[float, list[NodeInfo]] | None = None
        self._inflight: asyncio.Future[list[NodeInfo]] | None = None

    def node_key(self, node: str) -> str:
        return f"{self.prefix}node:{node}"

    def stream_key(self, key: str) -> str:
        return f"{self.prefix}stream:{key}"

    @property
    def nodes_key(self) -> str:
        return f"{self.prefix}nodes"

    async def put_node(self, info: NodeInfo) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.node_key(info.node), info.to_json(), px=self._ttl_ms)
        pipe.zadd(self.nodes_key, {info.node: info.ts})
        pipe.zremrangebyscore(self.nodes_key, "-inf", info.ts - 10 * self.ttl)
        await pipe.execute()

    async def remove_node(self, node: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.node_key(node))
        pipe.zrem(self.nodes_key, node)
        await pipe.execute()

    async def nodes(self, now: float | None = None) -> list[NodeInfo]:
        """Live nodes (registration present and fresh), most recent first."""
        now = time.time() if now is None else now
        ids = await self.redis.zrevrangebyscore(
            self.nodes_key, "+inf", now - self.ttl, start=0, num=MAX_NODES
        )
        if not ids:
            return []
        raws = await self.redis.mget([self.node_key(i.decode()) for i in ids])
        out: list[NodeInfo] = []
        for raw in raws:
            info = NodeInfo.from_json(raw)
            if info is not None and now - info.ts <= self.ttl:
                out.append(info)
        return out

    async def nodes_cached(self, max_age: float = 0.25) -> list[NodeInfo]:
        """:meth:`nodes`, at most one Redis round trip per ``max_age`` seconds per process
        (single flight: concurrent callers share it), for the scheduler's hot path."""
        now = time.monotonic()
        if self._cache is not None and now - self._cache[0] < max_age:
            return self._cache[1]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self.nodes())
            inflight = self._inflight

            def done(f: asyncio.Future[list[NodeInfo]]) -> None:
                self._inflight = None
                if not f.cancelled() and f.exception() is None:
                    self._cache = (time.monotonic(), f.result())

            inflight.add_done_callback(done)
        return await asyncio.shield(self._inflight)

    async def node(self, node: str) -> NodeInfo | None:
        info = NodeInfo.from_json(await self.redis.get(self.node_key(node)))
        if info is None or time.time() - info.ts > self.ttl:
            return None
        return info

    async def claim_stream(self, key: str, node: str) -> None:
        """This node now holds ``key`` (a new publisher: the newest wins)."""
        await self.redis.set(self.stream_key(key), node, px=self._ttl_ms)

    async def refresh_stream(self, key: str, node: str) -> bool:
        """Extend this node's claim; False when another node holds the stream now."""
        r = await self.redis.eval(_REFRESH_IF_MINE, 1, self.stream_key(key), node, self._ttl_ms)
        return bool(r)

    async def release_stream(self, key: str, node: str) -> None:
        await self.redis.eval(_DELETE_IF_MINE, 1, self.stream_key(key), node)

    async def stream_owner(self, key: str) -> str | None:
        raw = await self.redis.get(self.stream_key(key))
        return raw.decode() if isinstance(raw, bytes) else raw


class ClusterNode:
    """This process in the cluster: heartbeats its load, claims the streams it originates."""

    def __init__(self, registry: StreamRegistry, runtime: Runtime, config: RelayConfig) -> None:
        self.registry = registry
        self.runtime = runtime
        self.config = config
        self.directory = ClusterDirectory(runtime.redis, config.cluster_prefix, config.cluster_ttl)
        self._task: asyncio.Task[None] | None = None
        self._claimed: set[str] = set()
        self._bytes_out_last: int | None = None
        self._last_beat = time.monotonic()
        self._proc: Any = None
        self.last_info: NodeInfo | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Any = None

    @property
    def is_origin(self) -> bool:
        return self.runtime.role == "origin"

    async def start(self) -> None:
        try:
            import psutil

            self._proc = psutil.Process(os.getpid())
            self._proc.cpu_percent(None)
        except Exception:  # pragma: no cover - psutil is a dependency
            self._proc = None
        self.registry.hub_listeners.append(self._on_hub)
        # one subscription for both: a stream's up and down stay in the order they happened
        self._unsubscribe = self.runtime.bus.on_each(
            {StreamPublished: self._on_published, StreamUnpublished: self._on_unpublished}
        )
        self._task = asyncio.get_running_loop().create_task(self._beat_loop(), name="cluster:beat")

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._deregister(), 2.0)

    async def _deregister(self) -> None:
        for key in list(self._claimed):
            await self.directory.release_stream(key, self.runtime.node_id)
        self._claimed.clear()
        await self.directory.remove_node(self.runtime.node_id)

    # ------------------------------------------------------------ streams

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_published(self, event: StreamPublished) -> None:
        """Claim a stream when our ingest starts it."""
        if not self.is_origin or event.node != self.runtime.node_id:
            return
        key = f"{event.app}/{event.stream}"
        try:
            await self.directory.claim_stream(key, self.runtime.node_id)
            self._claimed.add(key)
        except Exception as exc:
            logger.warning("cluster: cannot update %s in Redis: %s", key, exc)

    async def _on_unpublished(self, event: StreamUnpublished) -> None:
        """Release the claim when it ends (the hub lingers for a reconnect, but edges must
        not re-pull its stale GOP meanwhile)."""
        if not self.is_origin or event.node != self.runtime.node_id:
            return
        key = f"{event.app}/{event.stream}"
        hub = self.registry.get(event.app, event.stream)
        if hub is not None and hub.live:  # republished in the meantime
            return
        self._claimed.discard(key)
        try:
            await self.directory.release_stream(key, self.runtime.node_id)
        except Exception as exc:
            logger.warning("cluster: cannot update %s in Redis: %s", key, exc)

    def _on_hub(self, hub: StreamHub, what: str) -> None:
        if what == "removed" and hub.key in self._claimed:
            self._claimed.discard(hub.key)
            self._spawn(self._release(hub.key))

    async def _release(self, key: str) -> None:
        try:
            await self.directory.release_stream(key, self.runtime.node_id)
        except Exception as exc:
            logger.warning("cluster: cannot release %s in Redis: %s", key, exc)

    # ------------------------------------------------------------ heartbeat

    async def _beat_loop(self) -> None:
        interval = self.config.cluster_heartbeat
        failures = 0
        while True:
            try:
                if self.runtime.http_port:
                    await self.beat()
                failures = 0
                delay = interval * random.uniform(0.9, 1.1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = backoff_delay(failures, interval, max(interval, self.config.cluster_ttl))
                if failures == 1 or failures % 30 == 0:
                    logger.warning("cluster: heartbeat to Redis failed (%s); retrying", exc)
            await asyncio.sleep(delay)

    async def _cpu(self) -> float:
        if self._proc is None:
            return 0.0
        try:
            return float(await asyncio.to_thread(self._proc.cpu_percent, None))
        except Exception:
            return 0.0

    def snapshot(self, cpu: float) -> NodeInfo:
        rt = self.runtime
        now = time.time()
        total_out = 0
        viewers = 0
        streams: dict[str, dict[str, Any]] = {}
        for hub in list(self.registry.hubs.values()):
            n = hub.audience + sum(hub.counted_viewers().values())
            viewers += n
            total_out += sum(hub.bytes_out_closed.values())
            total_out += sum(v.bytes_sent for v in hub.viewers)
            if len(streams) < MAX_STREAMS_PER_NODE:
                bps_in, _ = hub.rate_in.rate(now)
                pub = hub.publisher
                streams[hub.key] = {
                    "viewers": n,
                    "live": hub.live,
                    "publisher": pub.info.protocol if pub is not None else None,
                    "upstream": pub.info.remote if pub is not None else None,
                    "bitrate_in": int(bps_in * 8),
                    "uptime": round(now - hub.live_since, 1) if hub.live_since else 0.0,
                }
        mono = time.monotonic()
        elapsed = max(1e-3, mono - self._last_beat)
        self._last_beat = mono
        bw = 0
        if self._bytes_out_last is not None and total_out >= self._bytes_out_last:
            bw = int((total_out - self._bytes_out_last) * 8 / elapsed)
        self._bytes_out_last = total_out
        return NodeInfo(
            node=rt.node_id,
            role=rt.role,
            http=rt.http_base(),
            rtmp=rt.rtmp_base(),
            ts=now,
            viewers=viewers,
            bandwidth_out=bw,
            cpu=round(cpu, 1),
            pid=os.getpid(),
            streams=streams,
        )

    async def beat(self) -> None:
        info = self.snapshot(await self._cpu())
        await self.directory.put_node(info)
        self.last_info = info
        if not self.is_origin:
            return
        me = self.runtime.node_id
        for hub in list(self.registry.hubs.values()):
            if not hub.live:
                continue
            if await self.directory.refresh_stream(hub.key, me):
                self._claimed.add(hub.key)
            else:
                self._claimed.discard(hub.key)


CLUSTER: web.AppKey[ClusterNode] = web.AppKey("relay.cluster", ClusterNode)
