"""Edge pulls: a stream is pulled from an origin (HTTP-FLV) while this edge has viewers.

- The first viewer of a stream this node does not hold calls ``registry.resolver``; the
  edge finds the origin holding it (Redis stream directory first, then ``relay.origins``),
  opens one HTTP-FLV pull and feeds the frames into a local hub through a
  :class:`~relay.hub.Publisher`. Concurrent first viewers await the same pull.
- The hub's own GOP cache and fan-out serve every local viewer: the origin sees one
  upstream viewer per edge, whatever the number of edge viewers.
- When the last viewer leaves, the pull goes on for ``edge_idle_linger`` seconds, then
  the hub is removed and the pull stops.
- When the upstream is lost, the publisher closes (the hub lingers ``publisher_linger``
  seconds, viewers stay connected) and the edge retries with exponential backoff and full
  jitter, re-reading the directory each time, so it fails over to whichever origin the
  anchor republished to. A ``stream.published`` event from another origin wakes the
  retry at once (after a small random delay, so edges do not arrive in a herd) or moves a
  pull still attached to a stale origin. Each reconnection attaches a new publisher:
  the hub continues its timeline and viewers resume without reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from core.runtime import Runtime
from ingest.events import StreamPublished
from media import flv
from media.amf import decode_amf0
from media.errors import AMFError, FLVError
from media.frame import Frame, Kind
from media.rtmp.client import ClientConnection, ClientError, CommandReply, MediaMessage
from media.rtmp.connection import metadata_payload
from relay.backoff import backoff_delay
from relay.cluster import ClusterDirectory
from relay.config import RelayConfig
from relay.hub import Publisher, PublisherInfo, StreamHub, StreamRegistry

logger = logging.getLogger(__name__)

MAX_PULL_TAG = 8 * 1024 * 1024
"""Largest FLV tag accepted from an origin."""
RTMP_READ = 65536
END_CODES = ("NetStream.Play.UnpublishNotify", "NetStream.Play.Stop")
WAKE_JITTER = 0.25
"""A retry woken by an event waits a random 0..this many seconds first."""


Tag = tuple[int, int, bytes]
"""(FLV tag type, timestamp ms, body)."""


class _Upstream:
    """A connection to an origin delivering FLV tags."""

    async def read(self) -> list[Tag] | None:
        """The tags received next; None at the end of the stream."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _HttpUpstream(_Upstream):
    """HTTP-FLV pull (``GET /app/name.flv``); aiohttp's ``sock_read`` bounds silence."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.demux = flv.FlvDemuxer(MAX_PULL_TAG)

    async def read(self) -> list[Tag] | None:
        data = await self.resp.content.readany()
        if not data:
            return None
        return [
            (t.tag_type, t.timestamp, t.body)
            for t in self.demux.feed(data)
            if isinstance(t, flv.FlvTag)
        ]

    def close(self) -> None:
        self.resp.close()


class _RtmpUpstream(_Upstream):
    """RTMP pull (``rtmp://host:port`` origins): connect, createStream, play, through the
    sans-I/O client core; acknowledgements and pings are answered as data comes in."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client: ClientConnection,
        read_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.client = client
        self.read_timeout = read_timeout
        self.pending: list[Tag] = []
        self.ended = False

    @classmethod
    async def open(cls, base: str, app: str, name: str, cfg: RelayConfig) -> _RtmpUpstream | None:
        parts = urlsplit(base)
        host, port = parts.hostname or "127.0.0.1", parts.port or 1935
        reader, writer = await asyncio.open_connection(host, port, limit=RTMP_READ)
        client = ClientConnection(max_message_size=MAX_PULL_TAG)
        up = cls(reader, writer, client, cfg.pull_read_timeout)
        try:
            client.connect(app, f"rtmp://{host}:{port}/{app}")
            tx = client.create_stream()
            writer.write(client.data_to_send())
            started = False
            while True:
                data = await reader.read(RTMP_READ)
                if not data:
                    raise ConnectionError("origin closed during play")
                for event in client.receive_data(data):
                    if isinstance(event, ClientError):
                        raise ConnectionError(event.reason)
                    if isinstance(event, MediaMessage):
                        up._take(event)
                    elif isinstance(event, CommandReply):
                        if event.name == "_result" and event.transaction_id == tx:
                            sid = next((a for a in event.args if isinstance(a, int | float)), 1)
                            client.play(int(sid), name)
                        elif event.name == "_error":
                            raise ConnectionError(f"origin refused: {event.info}")
                        elif event.name == "onStatus":
                            code = str(event.info.get("code", ""))
                            if code == "NetStream.Play.Start":
                                started = True  # media may follow in this same read
                            if code in ("NetStream.Play.StreamNotFound", "NetStream.Play.Failed"):
                                logger.info("edge: %s has no %s/%s (%s)", base, app, name, code)
                                up.close()
                                return None
                writer.write(client.data_to_send())
                if started:
                    return up
        except BaseException:
            up.close()
            raise

    def _take(self, event: MediaMessage) -> None:
        self.pending.append((event.type_id, event.timestamp, event.payload))

    async def read(self) -> list[Tag] | None:
        if self.pending:
            ready, self.pending = self.pending, []
            return ready
        if self.ended:
            return None
        data = await asyncio.wait_for(self.reader.read(RTMP_READ), self.read_timeout)
        if not data:
            return None
        for event in self.client.receive_data(data):
            if isinstance(event, ClientError):
                raise ConnectionError(event.reason)
            if isinstance(event, MediaMessage):
                self._take(event)
            elif isinstance(event, CommandReply) and event.name == "onStatus":
                self.ended = self.ended or str(event.info.get("code", "")) in END_CODES
        out = self.client.data_to_send()
        if out:
            self.writer.write(out)
        tags, self.pending = self.pending, []
        return tags

    def close(self) -> None:
        self.writer.close()


class Pull:
    """One stream pulled from an origin, with its retry loop."""

    def __init__(self, puller: EdgePuller, app: str, name: str) -> None:
        self.puller = puller
        self.app = app
        self.name = name
        self.key = f"{app}/{name}"
        loop = asyncio.get_running_loop()
        self.first: asyncio.Future[StreamHub | None] = loop.create_future()
        self.hub: StreamHub | None = None
        self.publisher: Publisher | None = None
        self.upstream: tuple[str | None, str] | None = None
        """(node id or None, base URL) of the origin being pulled."""
        self.wake = asyncio.Event()
        self.switch_to: str | None = None
        self._upstream: _Upstream | None = None
        self.idle_handle: asyncio.TimerHandle | None = None
        self.connects = 0
        self.task = loop.create_task(self._run(), name=f"edge-pull:{self.key}")

    # ------------------------------------------------------------ loop

    async def _run(self) -> None:
        attempt = 0
        cfg = self.puller.config
        try:
            while True:
                ok = await self._attempt()
                if not self.first.done():
                    self.first.set_result(None)  # nobody holds it: 404 for the first viewer
                    return
                if ok:
                    attempt = 0
                if (
                    self.hub is None
                    or self.puller.registry.get(self.app, self.name) is not self.hub
                ):
                    return
                if self.switch_to is not None:
                    delay = random.uniform(0, WAKE_JITTER)
                else:
                    delay = backoff_delay(attempt, cfg.pull_retry_min, cfg.pull_retry_max)
                attempt += 1
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), delay)
                if self.wake.is_set():
                    await asyncio.sleep(random.uniform(0, WAKE_JITTER))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("edge pull %s failed", self.key)
        finally:
            if not self.first.done():
                self.first.set_result(None)
            if self.publisher is not None:
                self.publisher.close("edge pull stopped")
                self.publisher = None
            self.puller._forget(self)

    async def _attempt(self) -> bool:
        """Try each candidate origin once; True when data flowed from one of them."""
        p = self.puller
        cfg = p.config
        prefer, self.switch_to = self.switch_to, None
        candidates = await p.candidates(self.app, self.name, prefer, resuming=self.connects > 0)
        if not candidates:
            logger.info("edge: no origin known for %s", self.key)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=cfg.pull_connect_timeout, sock_read=cfg.pull_read_timeout
        )
        for node, base in candidates:
            upstream: _Upstream | None
            try:
                async with asyncio.timeout(cfg.pull_connect_timeout + 1):
                    if base.startswith("rtmp://"):
                        upstream = await _RtmpUpstream.open(base, self.app, self.name, cfg)
                    else:
                        upstream = await self._open_http(base, timeout)
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                logger.info("edge: %s unreachable for %s: %r", base, self.key, exc)
                continue
            if upstream is None:
                continue
            self.upstream = (node, base)
            self.connects += 1
            hub = p.registry.get(self.app, self.name)
            if self.hub is not None and hub is not self.hub:
                upstream.close()
                return False  # our hub expired while we were connecting: stop
            info = PublisherInfo("edge", base, p.runtime.node_id)
            self.publisher = pub = p.registry.publish(
                self.app, self.name, info, on_kick=lambda reason: None
            )
            self.hub = pub.hub
            logger.info("edge: pulling %s from %s (%s)", self.key, base, node or "configured")
            if not self.first.done():
                self.first.set_result(self.hub)
                p.viewers_changed(self.hub)  # no viewer yet: start the idle clock
            self._upstream = upstream
            try:
                frames = await self._consume(upstream, pub)
                reason = "upstream closed"
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as exc:
                frames, reason = 1, f"upstream error: {exc!r}"
            except FLVError as exc:
                frames, reason = 1, f"bad FLV from origin: {exc}"
            finally:
                self._upstream = None
                upstream.close()
            if self.switch_to is not None:
                reason = f"stream moved to {self.switch_to}"
            if self.publisher is pub:
                pub.close(reason)
                self.publisher = None
            logger.info("edge: %s from %s ended: %s", self.key, base, reason)
            return frames > 0
        return False

    async def _open_http(self, base: str, timeout: aiohttp.ClientTimeout) -> _HttpUpstream | None:
        p = self.puller
        resp = await p.session.get(
            f"{base}/{self.app}/{self.name}.flv",
            timeout=timeout,
            headers={"X-Berrylive-Edge": p.runtime.node_id},
        )
        if resp.status != 200:
            resp.release()
            logger.info("edge: %s answered %d for %s", base, resp.status, self.key)
            return None
        return _HttpUpstream(resp)

    async def _consume(self, upstream: _Upstream, pub: Publisher) -> int:
        frames = 0
        while True:
            tags = await upstream.read()
            if tags is None:
                return frames
            for tag_type, ts, body in tags:
                if tag_type == flv.TAG_SCRIPT:
                    self._metadata(pub, body)
                elif tag_type in (flv.TAG_AUDIO, flv.TAG_VIDEO):
                    frames += 1
                    pub.push_frame(Frame.from_payload(Kind(tag_type), ts, body))
            if not pub.active or self.switch_to is not None:
                return frames

    @staticmethod
    def _metadata(pub: Publisher, body: bytes) -> None:
        try:
            values = decode_amf0(body)
        except AMFError:
            return
        if values and isinstance(values[0], str):
            meta = metadata_payload(tuple(values[1:]), values[0])
            if meta is not None:
                pub.metadata(*meta)

    # ------------------------------------------------------------ control

    def published_elsewhere(self, node: str) -> None:
        """An origin announced a (re)publish of this stream."""
        if self.upstream is not None and self.publisher is not None and self.upstream[0] == node:
            return  # the one we pull from: nothing to do
        self.switch_to = node
        if self._upstream is not None:
            self._upstream.close()  # a stale origin may be silent: do not wait for its timeout
        self.wake.set()

    def stop(self) -> None:
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        self.task.cancel()


class EdgePuller:
    """The edge side of the cluster: the registry's resolver and every pull."""

    def __init__(
        self,
        registry: StreamRegistry,
        directory: ClusterDirectory,
        runtime: Runtime,
        config: RelayConfig,
    ) -> None:
        self.registry = registry
        self.directory = directory
        self.runtime = runtime
        self.config = config
        self.pulls: dict[str, Pull] = {}
        self.session: aiohttp.ClientSession = None  # type: ignore[assignment]
        self._unsubscribe: Any = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.max_pulls + 8, force_close=True)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self.registry.resolver = self.resolve
        self.registry.on_viewers_changed(self.viewers_changed)
        self.registry.hub_listeners.append(self._on_hub)
        self._unsubscribe = self.runtime.bus.on(StreamPublished, self._on_published)

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.registry.resolver = None
        pulls = list(self.pulls.values())
        for pull in pulls:
            pull.stop()
        for pull in pulls:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pull.task
        await self.session.close()

    # ------------------------------------------------------------ resolver

    async def resolve(self, app: str, name: str) -> StreamHub | None:
        """The registry's resolver: start (or join) the pull of APP/NAME."""
        key = f"{app}/{name}"
        pull = self.pulls.get(key)
        if pull is None:
            if len(self.pulls) >= self.config.max_pulls:
                logger.warning("edge: %d pulls already; refusing %s", len(self.pulls), key)
                return None
            pull = self.pulls[key] = Pull(self, app, name)
        hub = await asyncio.shield(pull.first)
        if hub is not None and self.registry.get(app, name) is hub:
            return hub
        return self.registry.get(app, name)

    async def candidates(
        self, app: str, name: str, prefer: str | None = None, resuming: bool = False
    ) -> list[tuple[str | None, str]]:
        """Origins to try, best first: an origin that just announced the stream, the
        directory's holder, then the configured list.

        ``resuming`` (the upstream was lost): a configured origin that the directory knows
        as an origin of this cluster but which does not hold the stream is left out; it
        could only serve a lingering hub without a publisher (its old GOP again)."""
        out: list[tuple[str | None, str]] = []
        me = self.runtime.node_id
        nodes_by_url: dict[str, str] = {}
        origins: set[str] = set()
        owner: str | None = None
        directory_ok = False
        try:
            owner = await self.directory.stream_owner(f"{app}/{name}")
            for known in dict.fromkeys(n for n in (prefer, owner) if n and n != me):
                info = await self.directory.node(known)
                if info is not None and info.role == "origin":
                    out.append((known, info.http.rstrip("/")))
            if self.config.origins:
                for n in await self.directory.nodes():
                    nodes_by_url[n.http.rstrip("/")] = n.node
                    if n.role == "origin":
                        origins.add(n.node)
            directory_ok = True
        except Exception as exc:
            logger.warning("edge: Redis directory unavailable (%s); using configured origins", exc)
        configured = [u.rstrip("/") for u in self.config.origins]
        # Spread first attempts over the configured origins (no herd on the first one).
        start = random.randrange(len(configured)) if configured else 0
        for base in configured[start:] + configured[:start]:
            node = nodes_by_url.get(base)
            if resuming and directory_ok and node in origins and node not in (owner, prefer):
                continue
            if all(base != b for _, b in out):
                out.append((node, base))
        return out

    # ------------------------------------------------------------ viewers and hubs

    def viewers_changed(self, hub: StreamHub) -> None:
        pull = self.pulls.get(hub.key)
        if pull is None or pull.hub is not hub:
            return
        if hub.viewers:
            if pull.idle_handle is not None:
                pull.idle_handle.cancel()
                pull.idle_handle = None
        elif pull.idle_handle is None:
            loop = asyncio.get_running_loop()
            pull.idle_handle = loop.call_later(
                self.config.edge_idle_linger, self._idle_expired, pull
            )

    def _idle_expired(self, pull: Pull) -> None:
        pull.idle_handle = None
        hub = pull.hub
        if hub is None or hub.viewers:
            return
        logger.info(
            "edge: %s has had no viewers for %.1fs; stopping the pull",
            pull.key,
            self.config.edge_idle_linger,
        )
        # Remove at once: the next viewer resolves again and starts a fresh pull.
        self.registry.remove(hub)
        hub.close("edge idle")

    def _on_hub(self, hub: StreamHub, what: str) -> None:
        if what != "removed":
            return
        pull = self.pulls.get(hub.key)
        if pull is not None and pull.hub is hub:
            pull.stop()
            self._forget(pull)  # a viewer arriving now starts a fresh pull at once

    def _forget(self, pull: Pull) -> None:
        if self.pulls.get(pull.key) is pull:
            del self.pulls[pull.key]

    async def _on_published(self, event: StreamPublished) -> None:
        if event.node == self.runtime.node_id:
            return
        pull = self.pulls.get(f"{event.app}/{event.stream}")
        if pull is not None and pull.first.done():
            pull.published_elsewhere(event.node)

    def stats(self) -> dict[str, Any]:
        return {
            key: {
                "upstream": p.upstream[1] if p.upstream else None,
                "origin": p.upstream[0] if p.upstream else None,
                "connects": p.connects,
                "connected": p.publisher is not None,
            }
            for key, p in self.pulls.items()
        }


PULLER: web.AppKey[EdgePuller] = web.AppKey("relay.edge_puller", EdgePuller)
