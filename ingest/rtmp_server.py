"""The RTMP server: a thin asyncio shell over :class:`media.rtmp.connection.ServerConnection`.

Publishers feed a :class:`relay.hub.Publisher`; players become :class:`relay.hub.Viewer`
objects written to by the hub directly. One bad peer only ever closes its own
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from core.bus import EventBus
from ingest import auth
from ingest.config import IngestConfig
from ingest.events import StreamPublished, StreamUnpublished
from ingest.hooks import Hooks
from media.frame import Kind
from media.rtmp import events as ev
from media.rtmp.connection import ServerConnection, State, metadata_payload
from relay.formats import RtmpPlay
from relay.hub import Publisher, PublisherInfo, StreamRegistry, Viewer, ViewerInfo

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
READ_SIZE = 65536


class KeyVersionUnknown(Exception):
    """The stream's key version can't be read now and was never seen (Redis unreachable)."""


@dataclass(frozen=True)
class PublishRefusal:
    reason: str
    retry: bool = False
    """The key version could not be read: the publisher should retry shortly."""


async def authorize_publish(
    config: IngestConfig,
    secret: str,
    key_version: Callable[[str, str], Awaitable[str | None]],
    app: str,
    stream: str,
    query: str,
) -> PublishRefusal | None:
    """Check a publish's signed URL (``query``) against the stream's current key version,
    as RTMP and WHIP both do; None: allowed (or ``require_auth`` is off)."""
    if not config.require_auth:
        return None
    try:
        version = await key_version(app, stream)
    except KeyVersionUnknown as exc:
        return PublishRefusal(str(exc), retry=True)
    result = auth.verify(
        secret,
        app,
        stream,
        query,
        time.time(),
        tencent_key=config.tencent_key,
        key_version=version,
        tencent_app=config.tencent_app,
    )
    return None if result.ok else PublishRefusal(result.reason)


KEY_VERSION_CACHE = 10_000
"""Streams whose last key version read is remembered (for when Redis is unreachable)."""


class RtmpServer:
    def __init__(
        self,
        config: IngestConfig,
        registry: StreamRegistry,
        bus: EventBus,
        secret: str,
        node: str,
        redis: Any = None,
        hooks: Hooks | None = None,
        role: str = "origin",
    ) -> None:
        self.config = config
        self.registry = registry
        self.bus = bus
        self.secret = secret
        self.node = node
        self.redis = redis
        self.hooks = hooks or Hooks()
        self.role = role
        self._server: asyncio.Server | None = None
        self.sessions: set[RtmpSession] = set()
        self._ids = itertools.count(1)
        self.address: tuple[str, int] = ("", 0)
        self.per_ip: dict[str, int] = {}
        """Open connections per remote address (for ``max_connections_per_ip``)."""
        self.refused = 0
        """Connections closed at accept because a connection limit was reached."""
        self.pending: OrderedDict[RtmpSession, None] = OrderedDict()
        """Sessions with no publish or play accepted yet (handshake or connect under way),
        oldest first: at ``max_connections`` the oldest is closed to admit a new one."""
        self.evicted = 0
        """Pending sessions closed to admit a new connection at ``max_connections``."""
        self._key_versions: dict[str, str | None] = {}
        """APP/STREAM -> the key version last read from Redis (insertion-ordered, bounded)."""
        self._bans: dict[str, str | None] = {}
        """APP/STREAM -> the ban last read from Redis (insertion-ordered, bounded)."""

    async def key_version(self, app: str, stream: str) -> str | None:
        """The stream's current key version (None: never rotated). When Redis can't be
        read, the last version read for that stream is used; a stream never read then
        refuses the publish (:class:`KeyVersionUnknown`): a rotated, revoked URL must not
        work again because Redis is down."""
        if self.redis is None:
            return None
        key = f"{app}/{stream}"
        try:
            version = await auth.current_key_version(self.redis, app, stream)
        except Exception as exc:
            if key in self._key_versions:
                logger.warning(
                    "key version of %s unreadable (%s): using the last one read", key, exc
                )
                return self._key_versions[key]
            logger.warning("key version of %s unreadable (%s): publish refused", key, exc)
            raise KeyVersionUnknown("cannot check the stream key now") from exc
        self._key_versions.pop(key, None)
        self._key_versions[key] = version
        if len(self._key_versions) > KEY_VERSION_CACHE:
            del self._key_versions[next(iter(self._key_versions))]
        return version

    async def banned(self, app: str, stream: str) -> str | None:
        """Why APP/STREAM is banned (the control plane's stream-name ban, shared by every
        node through Redis), or None. When Redis can't be read, the last answer read for
        that stream holds (a ban never read is not known: the publish goes on, logged)."""
        if self.redis is None:
            return None
        key = f"{app}/{stream}"
        try:
            reason = await auth.stream_ban(self.redis, app, stream)
        except Exception as exc:
            logger.warning("ban of %s unreadable (%s): using the last one read", key, exc)
            return self._bans.get(key)
        self._bans.pop(key, None)
        self._bans[key] = reason
        if len(self._bans) > KEY_VERSION_CACHE:
            del self._bans[next(iter(self._bans))]
        return reason

    async def start(self, host: str, port: int, backlog: int = 1024) -> tuple[str, int]:
        self._server = await asyncio.start_server(
            self._accept, host, port, reuse_address=True, limit=READ_SIZE, backlog=backlog
        )
        sock = self._server.sockets[0]
        addr = sock.getsockname()
        self.address = (str(addr[0]), int(addr[1]))
        logger.info("rtmp listening on %s:%d", self.address[0], self.address[1])
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        sessions = list(self.sessions)
        for session in sessions:
            session.abort("server shutting down")
        tasks = [s.task for s in sessions if s.task is not None and not s.task.done()]
        if tasks:
            # let each session announce its end (stream.unpublished) before the bus closes
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        await self.hooks.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) else ""
        cfg = self.config
        per_ip_cap = cfg.max_connections_per_ip
        over = per_ip_cap > 0 and self.per_ip.get(ip, 0) >= per_ip_cap
        if not over and len(self.sessions) >= cfg.max_connections:
            # Make room by closing the oldest connection that has not started publishing or
            # playing (a flood holds the cap with those); refuse only when all are in use.
            over = not self._evict_pending()
        if over:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                logger.warning(
                    "rtmp: connection limit reached (%d open, %d from %s): %d refused so far",
                    len(self.sessions),
                    self.per_ip.get(ip, 0),
                    ip,
                    self.refused,
                )
            writer.transport.abort()
            return
        session = RtmpSession(self, reader, writer, next(self._ids))
        self.sessions.add(session)
        self.pending[session] = None
        self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        try:
            await session.run()
        finally:
            self._uncount(session)

    def _uncount(self, session: RtmpSession) -> None:
        """Stop counting ``session`` against the caps (once: it may have been evicted)."""
        self.pending.pop(session, None)
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        ip = session.client_ip
        left = self.per_ip.get(ip, 1) - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)

    def _evict_pending(self) -> bool:
        """Close the oldest pending session and stop counting it; False if none is."""
        if not self.pending:
            return False
        victim, _ = self.pending.popitem(last=False)
        self._uncount(victim)
        self.evicted += 1
        if self.evicted == 1 or self.evicted % 1000 == 0:
            logger.warning(
                "rtmp: at the connection limit (%d): closed the oldest unstarted connection"
                " (%s) to admit a new one; %d so far",
                self.config.max_connections,
                victim.remote,
                self.evicted,
            )
        victim.abort("closed to make room: no publish or play yet at the connection limit")
        return True

    def established(self, session: RtmpSession) -> None:
        """``session`` had a publish or play accepted: never closed to make room."""
        self.pending.pop(session, None)

    def kick(self, app: str, stream: str, reason: str) -> bool:
        hub = self.registry.get(app, stream)
        if hub is None or hub.publisher is None:
            return False
        hub.publisher.kick(reason)
        return True


class RtmpSession:
    def __init__(
        self,
        server: RtmpServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ident: int,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.id = ident
        cfg = server.config
        self.conn = ServerConnection(
            max_message_size=cfg.max_message_size,
            max_command_size=cfg.max_command_size,
            out_chunk_size=cfg.out_chunk_size,
            ack_window=cfg.ack_window,
        )
        peer = writer.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        self.app = ""
        self.connect_query = ""
        self.tc_url = ""
        self.publisher: Publisher | None = None
        self.publish_stream_id = 0
        self.stream_name = ""
        self.viewer: Viewer | None = None
        self.play_stream_id = 0
        self.closing = False
        self.close_reason = ""
        self.task: asyncio.Task[Any] | None = asyncio.current_task()

    # ------------------------------------------------------------------ I/O loop

    async def run(self) -> None:
        cfg = self.server.config
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        started = False  # a publish or play was accepted on this connection at some point
        try:
            while not self.closing:
                if not started and (self.publisher is not None or self.viewer is not None):
                    started = True
                    self.server.established(self)
                if self.conn.state != State.READY:
                    # deadlines from the accept, not per read
                    timeout: float | None = accepted + cfg.handshake_timeout - loop.time()
                    why = "handshake not complete in time"
                elif self.publisher is None and self.viewer is None and not started:
                    timeout = accepted + cfg.start_timeout - loop.time()
                    why = "no publish or play in time"
                elif self.publisher is not None or self.viewer is None:
                    # publishing, or done publishing/playing (ffmpeg unpublishes, then closes)
                    timeout, why = cfg.idle_timeout, "timed out waiting for data"
                else:
                    timeout, why = None, ""  # players may stay silent
                try:
                    if timeout is not None and timeout <= 0:
                        raise TimeoutError
                    data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    self._log_close(why)
                    break
                if not data:
                    self.close_reason = self.close_reason or "peer closed"
                    break
                events = self.conn.receive_data(data)
                for event in events:
                    await self._on_event(event)
                    if self.closing:
                        break
                self._flush()
        except (ConnectionError, OSError) as exc:
            self.close_reason = self.close_reason or f"connection error: {exc}"
        except asyncio.CancelledError:
            self.close_reason = "cancelled"
            raise
        except Exception:
            logger.exception("rtmp session %s (%s) failed", self.id, self.remote)
            self.close_reason = "internal error"
        finally:
            await self._cleanup()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def _log_close(self, reason: str) -> None:
        self.close_reason = reason
        logger.warning("rtmp %s (%s): closing: %s", self.id, self.remote, reason)

    def abort(self, reason: str) -> None:
        self.closing = True
        self.close_reason = self.close_reason or reason
        self.writer.close()

    async def _cleanup(self) -> None:
        reason = self.close_reason or "closed"
        if self.publisher is not None:
            pub = self.publisher
            self.publisher = None
            was_active = pub.active
            pub.close(reason)
            if was_active:
                await self._publish_ended(pub, reason)
        if self.viewer is not None:
            viewer = self.viewer
            self.viewer = None
            viewer.close(reason)
            await self.server.hooks.call("on_stop", self._hook_payload(self.stream_name, ""))
        with contextlib.suppress(Exception):
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)

    async def _publish_ended(self, pub: Publisher, reason: str) -> None:
        app, name = pub.hub.app, pub.hub.name
        await self.server.bus.emit(StreamUnpublished(app, name, self.server.node, reason))
        if self.server.hooks.enabled("on_unpublish"):
            await self.server.hooks.call("on_unpublish", self._hook_payload(name, ""))

    def _hook_payload(self, stream: str, query: str) -> dict[str, Any]:
        return {
            "client_id": f"{self.server.node}-{self.id}",
            "ip": self.client_ip,
            "vhost": "__defaultVhost__",
            "app": self.app,
            "stream": stream,
            "param": f"?{query}" if query else "",
            "tcUrl": self.tc_url,
            "server_id": self.server.node,
        }

    # ------------------------------------------------------------------ events

    async def _on_event(self, event: ev.Event) -> None:
        conn = self.conn
        if isinstance(event, ev.Media):
            pub = self.publisher
            if pub is not None and event.stream_id == self.publish_stream_id:
                pub.push(
                    Kind.AUDIO if event.type_id == 8 else Kind.VIDEO, event.timestamp, event.payload
                )
        elif isinstance(event, ev.ScriptData):
            if self.publisher is not None:
                meta = metadata_payload(event.values, event.name)
                if meta is not None:
                    self.publisher.metadata(*meta)
        elif isinstance(event, ev.Connect):
            self.app, self.connect_query, self.tc_url = event.app, event.query, event.tc_url
            if not NAME_RE.match(event.app or ""):
                conn.reject_connect(event.transaction_id, f"invalid app name {event.app!r}")
                self._flush()
                self._log_close(f"connect refused: invalid app {event.app!r}")
                self.closing = True
                return
            conn.accept_connect(event.transaction_id)
        elif isinstance(event, ev.CreateStream):
            conn.accept_create_stream(event.transaction_id)
        elif isinstance(event, ev.ReleaseStream | ev.FCPublish):
            conn.reply_result(event.transaction_id)
        elif isinstance(event, ev.Publish):
            await self._on_publish(event)
        elif isinstance(event, ev.Play):
            await self._on_play(event)
        elif isinstance(event, ev.FCUnpublish):
            pass
        elif isinstance(event, ev.DeleteStream | ev.CloseStream):
            await self._on_stream_closed(event.stream_id)
        elif isinstance(event, ev.ProtocolError):
            self._log_close(f"protocol error: {event.reason}")
            self.closing = True

    async def _on_publish(self, event: ev.Publish) -> None:
        conn = self.conn
        srv = self.server
        sid = event.stream_id
        name = event.name
        if self.publisher is not None or self.viewer is not None:
            conn.refuse_publish(sid, "this connection is already publishing or playing")
            return
        if not self.app:
            conn.refuse_publish(sid, "publish before connect")
            return
        if srv.role != "origin":
            conn.refuse_publish(sid, "this node is an edge: publish to an origin")
            self._refused(name, "edge node")
            return
        if not NAME_RE.match(name):
            conn.refuse_publish(sid, f"invalid stream name {name!r}")
            self._refused(name, "invalid stream name")
            return
        query = event.query or self.connect_query
        banned = await srv.banned(self.app, name)
        if banned is not None:
            conn.refuse_publish(sid, f"publish refused: {banned}")
            self._refused(name, banned)
            return
        refusal = await authorize_publish(
            srv.config, srv.secret, srv.key_version, self.app, name, query
        )
        if refusal is not None:
            retry = "; retry shortly" if refusal.retry else ""
            conn.refuse_publish(sid, f"publish refused: {refusal.reason}{retry}")
            self._refused(name, refusal.reason)
            return
        ok, reason = await srv.hooks.call("on_publish", self._hook_payload(name, query))
        if not ok:
            conn.refuse_publish(sid, f"publish refused: {reason}")
            self._refused(name, reason)
            return
        hub = srv.registry.get(self.app, name)
        takeover = hub is not None and hub.live
        info = PublisherInfo("rtmp", self.remote, srv.node)
        self.publisher = srv.registry.publish(self.app, name, info, on_kick=self._kicked)
        self.publish_stream_id = sid
        self.stream_name = name
        conn.accept_publish(sid, name)
        self._flush()
        logger.info(
            "rtmp %s (%s): publishing %s/%s%s",
            self.id,
            self.remote,
            self.app,
            name,
            " (takeover)" if takeover else "",
        )
        await srv.bus.emit(
            StreamPublished(self.app, name, srv.node, self.client_ip, "rtmp", takeover)
        )

    def _refused(self, name: str, reason: str) -> None:
        self._flush()
        logger.warning(
            "rtmp %s (%s): publish %s/%s refused: %s", self.id, self.remote, self.app, name, reason
        )
        self.close_reason = f"publish refused: {reason}"
        self.closing = True

    def _kicked(self, reason: str) -> None:
        """The hub took our publisher away (takeover, operator kick)."""
        logger.info(
            "rtmp %s (%s): publisher %s: %s", self.id, self.remote, self.stream_name, reason
        )
        pub = self.publisher
        if pub is not None and reason != "takeover":
            # Not replaced by anyone: announce the end of the stream.
            asyncio.get_running_loop().create_task(self._publish_ended(pub, reason))
        self.publisher = None
        self.close_reason = reason
        self.closing = True
        self.writer.close()

    async def _on_play(self, event: ev.Play) -> None:
        conn = self.conn
        srv = self.server
        sid = event.stream_id
        if self.publisher is not None or self.viewer is not None:
            conn.refuse_play(
                sid, "this connection is already publishing or playing", "NetStream.Play.Failed"
            )
            return
        if not NAME_RE.match(event.name):
            # refused before any lookup: on an edge a lookup starts a pull from an origin
            conn.refuse_play(sid, f"invalid stream name {event.name!r}")
            self._flush()
            self.close_reason = "invalid stream name"
            self.closing = True
            return
        hub = await srv.registry.find(self.app, event.name)
        if hub is None:
            conn.refuse_play(sid, f"stream {self.app}/{event.name} is not live")
            self._flush()
            self.close_reason = "stream not found"
            self.closing = True
            return
        ok, reason = await srv.hooks.call("on_play", self._hook_payload(event.name, event.query))
        if not ok:
            conn.refuse_play(sid, f"play refused: {reason}", "NetStream.Play.Failed")
            self._flush()
            self.closing = True
            return
        await hub.wait_ready(3.0)
        self.stream_name = event.name
        self.play_stream_id = sid
        conn.accept_play(sid, event.name)
        self._flush()
        fmt = RtmpPlay(conn.out_chunk_size)
        viewer = Viewer(
            self.writer.transport,
            fmt,
            ViewerInfo("rtmp", self.remote),
            on_close=self._viewer_closed,
        )
        self.viewer = viewer
        if sid == 1:
            prelude = hub.rtmp_prelude(conn.out_chunk_size)
        else:
            frames, _ = hub.prelude_frames()
            prelude = b"".join(f.rtmp_message(conn.out_chunk_size, sid) for f in frames)
        hub.add_viewer(viewer, prelude)

    def _viewer_closed(self, reason: str) -> None:
        if self.closing or self.writer.is_closing():
            return
        if reason.startswith("stream ended"):
            with contextlib.suppress(Exception):
                self.conn.play_unpublished(self.play_stream_id, self.stream_name)
                self._flush()
        self.viewer = None
        self.close_reason = reason
        self.closing = True
        self.writer.close()

    async def _on_stream_closed(self, stream_id: int) -> None:
        if self.publisher is not None and stream_id in (self.publish_stream_id, 0):
            pub = self.publisher
            self.publisher = None
            pub.close("unpublished")
            await self._publish_ended(pub, "unpublished")
        if self.viewer is not None and stream_id in (self.play_stream_id, 0):
            viewer = self.viewer
            self.viewer = None
            viewer.close("player stopped")
