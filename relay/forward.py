"""Forwarding: an origin pushes live streams to external RTMP servers (a third-party CDN).

Rules come from ``relay.forward``: ``APP=rtmp://host[:port]/app/key`` forwards every stream
of APP (``{stream}`` in the URL is replaced by the stream name; without it the stream
name is appended as the last path segment unless the URL already names one), and
``APP/STREAM=rtmp://...`` forwards one broadcast. A query string on the URL (a signed
push URL) travels with the publish name.

Each forward is a :class:`~relay.hub.Viewer` of the hub whose transport is the TCP
connection to the destination, so frames are serialized once as RTMP chunks and shared
with the local RTMP players. The handshake and the connect/createStream/publish exchange
use the sans-I/O client core (:mod:`media.rtmp.client`); a reader task answers the
server's acknowledgements and pings. A lost destination is retried with exponential
backoff and full jitter (``forward_retry_max`` cap) for as long as the stream is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.runtime import Runtime
from ingest.events import StreamPublished
from media.rtmp.client import ClientConnection, ClientError, CommandReply
from relay.backoff import backoff_delay
from relay.config import RelayConfig
from relay.formats import RtmpPlay
from relay.hub import StreamHub, StreamRegistry, Viewer, ViewerInfo

logger = logging.getLogger(__name__)

CHUNK_SIZE = 60000
CONNECT_TIMEOUT = 5.0
READY_TIMEOUT = 10.0
MAX_FORWARDS = 64
"""Forwards running at once at most (a rule for a whole app could otherwise grow)."""


@dataclass(frozen=True)
class Rule:
    app: str
    stream: str | None
    url: str

    @classmethod
    def parse(cls, text: str) -> Rule:
        left, sep, url = text.partition("=")
        if not sep or not url.startswith("rtmp://"):
            raise ValueError(f"forward rule {text!r}: expected APP[/STREAM]=rtmp://...")
        app, _, stream = left.strip().partition("/")
        return cls(app, stream or None, url.strip())

    def matches(self, app: str, stream: str) -> bool:
        return self.app == app and (self.stream is None or self.stream == stream)

    def target(self, stream: str) -> tuple[str, int, str, str, str]:
        """(host, port, app, publish name with query, tcUrl) for ``stream``."""
        url = self.url.replace("{stream}", stream)
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        if not segments:
            raise ValueError(f"forward URL {self.url!r} names no app")
        if len(segments) == 1:
            segments.append(stream)
        app = "/".join(segments[:-1])
        name = segments[-1] + (f"?{parts.query}" if parts.query else "")
        host = parts.hostname or "127.0.0.1"
        port = parts.port or 1935
        return host, port, app, name, f"rtmp://{host}:{port}/{app}"


class _Forward:
    def __init__(self, owner: Forwarder, hub: StreamHub, rule: Rule) -> None:
        self.owner = owner
        self.hub = hub
        self.rule = rule
        self.label = f"{hub.key} -> {rule.url.split('?')[0]}"
        self.connects = 0
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"forward:{hub.key}")

    async def _run(self) -> None:
        attempt = 0
        cap = self.owner.config.forward_retry_max
        while self.owner.registry.get(self.hub.app, self.hub.name) is self.hub:
            try:
                sent = await self._once()
                reason = "destination closed"
            except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
                sent, reason = 0, repr(exc)
            if sent:
                attempt = 0
            delay = backoff_delay(attempt, 0.5, cap)
            attempt += 1
            logger.warning("forward %s: %s; retry in %.1fs", self.label, reason, delay)
            await asyncio.sleep(delay)

    async def _once(self) -> int:
        host, port, app, name, tc_url = self.rule.target(self.hub.name)
        # Codecs first: a viewer added before the sequence headers would never get them.
        await self.hub.wait_ready(READY_TIMEOUT)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CONNECT_TIMEOUT
        )
        client = ClientConnection(chunk_size=CHUNK_SIZE)
        viewer: Viewer | None = None
        try:
            client.connect(app, tc_url)
            tx_create = client.create_stream()
            writer.write(client.data_to_send())
            stream_id = await asyncio.wait_for(
                self._handshake(reader, writer, client, tx_create, name), CONNECT_TIMEOUT
            )
            if stream_id != 1:
                raise ValueError(f"destination gave stream id {stream_id}; only 1 is supported")
            if not self.hub.live:
                return 0
            self.connects += 1
            logger.info("forward %s: publishing", self.label)
            viewer = Viewer(
                writer.transport, RtmpPlay(CHUNK_SIZE), ViewerInfo("forward", f"{host}:{port}")
            )
            self.hub.add_viewer(viewer, self.hub.rtmp_prelude(CHUNK_SIZE))
            reading: asyncio.Future[None] = asyncio.ensure_future(
                self._pump(reader, writer, client)
            )
            try:
                done: asyncio.Future[Any] = viewer.done
                await asyncio.wait([reading, done], return_when=asyncio.FIRST_COMPLETED)
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading
            return viewer.bytes_sent
        finally:
            if viewer is not None:
                viewer.close("forward ended")
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: ClientConnection,
        tx_create: float,
        name: str,
    ) -> int:
        stream_id = 0
        while True:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("destination closed during publish")
            for ev in client.receive_data(data):
                if isinstance(ev, ClientError):
                    raise ConnectionError(ev.reason)
                if not isinstance(ev, CommandReply):
                    continue
                if ev.name == "_error":
                    raise ConnectionError(f"destination refused: {ev.info.get('description', '')}")
                if ev.name == "_result" and ev.transaction_id == tx_create:
                    sid = next((a for a in ev.args if isinstance(a, int | float)), 1)
                    stream_id = int(sid)
                    client.publish(stream_id, name)
                elif ev.name == "onStatus":
                    code = str(ev.info.get("code", ""))
                    if code == "NetStream.Publish.Start":
                        writer.write(client.data_to_send())
                        return stream_id
                    if "Publish" in code or "Rejected" in code:
                        raise ConnectionError(
                            f"destination refused: {code} {ev.info.get('description', '')}"
                        )
            out = client.data_to_send()
            if out:
                writer.write(out)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: ClientConnection
    ) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for ev in client.receive_data(data):
                if isinstance(ev, ClientError):
                    return
            out = client.data_to_send()
            if out:
                writer.write(out)

    def stop(self) -> None:
        self.task.cancel()


class Forwarder:
    """Starts a forward for each live stream matching a rule; stops it with the stream."""

    def __init__(self, registry: StreamRegistry, runtime: Runtime, config: RelayConfig) -> None:
        self.registry = registry
        self.runtime = runtime
        self.config = config
        self.rules = [Rule.parse(r) for r in config.forward]
        self.store = ForwardStore(runtime.redis, config.cluster_prefix)
        self.dynamic: dict[str, list[str]] = {}
        """Per-broadcast destinations from Redis (``app/name`` -> URLs), last read."""
        self.forwards: dict[tuple[str, str], _Forward] = {}
        self._unsubscribe: object = None
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()

    async def start(self) -> None:
        self.registry.hub_listeners.append(self._on_hub)
        self._unsubscribe = self.runtime.bus.on(StreamPublished, self._on_published)
        self._task = asyncio.get_running_loop().create_task(self._sync_loop(), name="forward")

    async def close(self) -> None:
        unsubscribe = self._unsubscribe
        if callable(unsubscribe):
            unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        tasks = [f.task for f in self.forwards.values()]
        for f in self.forwards.values():
            f.stop()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.forwards.clear()

    async def _sync_loop(self) -> None:
        """Re-read the per-broadcast rules every heartbeat (or at once when poked)."""
        interval = self.config.cluster_heartbeat
        failures = 0
        while True:
            try:
                self.dynamic = await self.store.all()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    logger.warning("forward: cannot read rules from Redis: %s", exc)
            self.reconcile()
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), interval * random.uniform(0.9, 1.1))

    def desired(self, hub: StreamHub) -> dict[str, Rule]:
        out = {r.url: r for r in self.rules if r.matches(hub.app, hub.name)}
        for url in self.dynamic.get(hub.key, []):
            out.setdefault(url, Rule(hub.app, hub.name, url))
        return out

    def reconcile(self) -> None:
        """Start the forwards live streams should have; stop those no longer wanted."""
        wanted: set[tuple[str, str]] = set()
        for hub in list(self.registry.hubs.values()):
            if not hub.live or hub.publisher is None or hub.publisher.info.protocol == "edge":
                continue
            for url, rule in self.desired(hub).items():
                key = (hub.key, url)
                wanted.add(key)
                current = self.forwards.get(key)
                if current is not None and current.hub is hub:
                    continue
                if current is not None:
                    current.stop()
                if len(self.forwards) >= MAX_FORWARDS:
                    logger.warning("forward: %d running; not forwarding %s", MAX_FORWARDS, hub.key)
                    continue
                self.forwards[key] = _Forward(self, hub, rule)
        for key, f in list(self.forwards.items()):
            if key not in wanted and not f.hub.live and f.hub.key in self.registry.hubs:
                continue  # publisher lingering: keep the forward for its reconnect
            if key not in wanted:
                f.stop()
                del self.forwards[key]

    def _on_published(self, event: StreamPublished) -> None:
        if event.node == self.runtime.node_id:
            self._poke.set()

    def _on_hub(self, hub: StreamHub, what: str) -> None:
        if what != "removed":
            return
        for key, f in list(self.forwards.items()):
            if f.hub is hub:
                f.stop()
                del self.forwards[key]


MAX_RULE_URLS = 8
"""Destinations per broadcast at most."""
MAX_RULES = 1000
"""Broadcasts with forwarding rules at most (per cluster)."""


class ForwardStore:
    """Per-broadcast forwarding rules in Redis: hash ``P forwards``, ``app/name`` -> JSON
    list of ``rtmp://`` URLs. Every origin applies them within a heartbeat."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.key = f"{prefix}forwards"

    @staticmethod
    def validate(urls: Any) -> list[str]:
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError("urls must be a list of rtmp:// URLs")
        if len(urls) > MAX_RULE_URLS:
            raise ValueError(f"at most {MAX_RULE_URLS} destinations per broadcast")
        out: list[str] = []
        for u in urls:
            if len(u) > 2048:
                raise ValueError("URL too long")
            Rule.parse(f"x/y={u}").target("y")  # raises ValueError when unusable
            if u not in out:
                out.append(u)
        return out

    async def all(self) -> dict[str, list[str]]:
        raw = await self.redis.hgetall(self.key)
        out: dict[str, list[str]] = {}
        for k, v in list(raw.items())[:MAX_RULES]:
            try:
                urls = self.validate(json.loads(v))
            except ValueError:
                continue
            out[k.decode() if isinstance(k, bytes) else str(k)] = urls
        return out

    async def put(self, key: str, urls: list[str]) -> None:
        if not urls:
            await self.redis.hdel(self.key, key)
            return
        if await self.redis.hlen(self.key) >= MAX_RULES and not await self.redis.hexists(
            self.key, key
        ):
            raise ValueError(f"at most {MAX_RULES} broadcasts with forwarding rules")
        await self.redis.hset(self.key, key, json.dumps(urls))
