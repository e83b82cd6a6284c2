"""The owned websocket path of ``/socket.io/``: Engine.IO v4 + Socket.IO v5 for ``/live``.

Why own it: python-engineio gives each socket a queue and a writer task; a batch queued
there costs, per viewer and per tick, a task wake-up, a string copy, a UTF-8 encode and a
frame header (plus a per-viewer compression when the browser negotiated
permessage-deflate). Here a batch is one :class:`~danmaku.wire.Outbound` whose websocket
frame is built once and the same ``bytes`` object is written to every viewer's transport.

What it covers: a client that opens ``GET /socket.io/?EIO=4&transport=websocket`` (no
``sid``), i.e. a Socket.IO client with ``transports: ["websocket"]`` (socket.io-client,
python-socketio, the bench's raw client). Everything else is handed to python-socketio
untouched, through its public ``handle_request``: long-polling, the polling -> websocket
upgrade (the session stays python-socketio's; :mod:`danmaku.namespace` serves ``/live``
there), and other Engine.IO versions. On this path only ``/live`` is served; a CONNECT to
another namespace is answered with a connect error (the server registers no other).

Ordering: each :class:`LiveSocket` has one writer, :meth:`LiveSocket.write`, which writes
a whole frame to the transport synchronously. Every packet of the connection (Engine.IO
open and pings, Socket.IO connect, ``joined``, batches, acks, ``rejected``) goes through
it, so packets leave in the order they are produced: nothing can overtake ``joined``
(it is written in the same synchronous step that adds the member to its room). aiohttp
(public ``WebSocketResponse``) does the handshake, reads and unmasks client frames,
answers websocket pings and writes the close frame, each also one synchronous write of a
whole frame. Compression is refused, so a frame written raw never needs RSV1.

Bounds: a client message is at most ``max_message_bytes`` (aiohttp closes the connection
beyond); a client whose transport holds more than ``client_backlog_bytes`` unsent is
dropped (:mod:`danmaku.delivery`); a client that misses a ping for ``PING_TIMEOUT_S`` is
closed. Binary attachments (at most ``MAX_ATTACHMENTS``, each one size-capped message)
are put back into the event's arguments; a binary message nobody announced closes the
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

import socketio
from aiohttp import WSMsgType, web

from danmaku.config import DanmakuConfig
from danmaku.session import Refused, Sessions
from danmaku.wire import (
    BINARY_EVENT,
    CONNECT,
    DISCONNECT,
    EVENT,
    Outbound,
    SioPacket,
    WireError,
    ack_text,
    connect_error_text,
    connect_text,
    disconnect_text,
    open_text,
    parse_sio,
    with_attachments,
    ws_text_frame,
)

logger = logging.getLogger(__name__)

__all__ = ["PING_INTERVAL_S", "PING_TIMEOUT_S", "LiveEndpoint", "LiveSocket"]

PING_INTERVAL_S = 25.0
"""Engine.IO ``pingInterval`` (python-engineio's default; both paths use the same)."""
PING_TIMEOUT_S = 20.0
"""Engine.IO ``pingTimeout``."""


class LiveSocket:
    """One websocket client of the owned path; a :class:`~danmaku.rooms.Connection`."""

    __slots__ = (
        "awaiting_pong",
        "blobs",
        "closed",
        "endpoint",
        "max_backlog",
        "partial",
        "remote",
        "sid",
        "transport",
        "ws",
    )

    direct = True

    def __init__(
        self, endpoint: LiveEndpoint, ws: web.WebSocketResponse, transport: Any, max_backlog: int
    ) -> None:
        self.endpoint = endpoint
        self.ws = ws
        self.transport = transport
        self.max_backlog = max_backlog
        self.closed = False
        self.sid: str | None = None
        """The Socket.IO sid while connected to ``/live``."""
        self.awaiting_pong = False
        self.partial: SioPacket | None = None
        """A binary packet waiting for its attachments (``blobs``)."""
        self.blobs: list[bytes] = []
        self.remote = ""
        """The client's address (for the lottery entry's abuse checks)."""

    def write(self, data: bytes) -> bool:
        """The connection's one writer: whole frames, in call order. False when the
        client is too far behind (nothing written)."""
        if self.closed:
            return True
        transport = self.transport
        if transport.is_closing():
            self.closed = True
            return True
        if transport.get_write_buffer_size() > self.max_backlog:
            return False
        transport.write(data)
        return True

    def send(self, out: Outbound) -> bool:
        # :meth:`write`, inlined: this runs once per viewer per tick
        if self.closed:
            return True
        transport = self.transport
        if transport.is_closing():
            self.closed = True
            return True
        if transport.get_write_buffer_size() > self.max_backlog:
            return False
        transport.write(out.frame)
        return True

    def send_text(self, text: str) -> None:
        """An Engine.IO packet of this connection only (too far behind: closed)."""
        if not self.write(ws_text_frame(text.encode())):
            self.abort()

    async def disconnect(self) -> None:
        sid, self.sid = self.sid, None
        if sid is not None:
            self.send_text("4" + disconnect_text(self.endpoint.namespace))
            self.endpoint.leave(sid)

    async def drop(self) -> None:
        self.abort()

    def abort(self) -> None:
        self.closed = True
        self.transport.abort()


class LiveEndpoint:
    """``GET /socket.io/``: websocket-only clients here, everything else python-socketio."""

    def __init__(self, config: DanmakuConfig, sio: socketio.AsyncServer) -> None:
        self.config = config
        self.sio = sio
        self.namespace = config.namespace
        self.sessions: Sessions | None = None
        self.sockets: set[LiveSocket] = set()
        self._origins = None if "*" in config.cors_allowed_origins else config.cors_allowed_origins
        self._pinger: asyncio.Task[None] | None = None

    def add_routes(self, app: web.Application, path: str = "/socket.io/") -> None:
        app.router.add_get(path, self.handle)
        app.router.add_post(path, self.sio.handle_request)
        app.router.add_route("OPTIONS", path, self.sio.handle_request)

    # ---------------------------------------------------------------- lifecycle
    def start(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self._pinger = asyncio.get_running_loop().create_task(self._ping_loop())

    async def stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
            self._pinger = None
        for sock in list(self.sockets):
            await sock.disconnect()
        closing = [asyncio.wait_for(s.ws.close(), 1.0) for s in self.sockets if not s.closed]
        await asyncio.gather(*closing, return_exceptions=True)
        for sock in list(self.sockets):
            if not sock.closed:
                sock.abort()
        self.sessions = None

    def leave(self, sid: str) -> None:
        if self.sessions is not None:
            self.sessions.leave(sid)

    async def _ping_loop(self) -> None:
        """Engine.IO v4: the server pings; a client silent since the last ping is closed
        (it had ``PING_INTERVAL_S`` >= ``PING_TIMEOUT_S`` to answer)."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            for sock in list(self.sockets):
                if sock.closed:
                    continue
                if sock.awaiting_pong:
                    logger.debug("danmaku: websocket client missed a ping; closing")
                    sock.abort()
                    continue
                sock.awaiting_pong = True
                sock.send_text("2")

    # ---------------------------------------------------------------- one connection
    def _owned(self, request: web.Request) -> bool:
        q = request.query
        return (
            self.sessions is not None
            and q.get("transport") == "websocket"
            and q.get("EIO") == "4"
            and "sid" not in q
            and request.headers.get("Upgrade", "").lower() == "websocket"
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._owned(request):
            response: web.StreamResponse = await self.sio.handle_request(request)
            return response
        origin = request.headers.get("Origin")
        if self._origins is not None and origin and origin not in self._origins:
            return web.Response(status=400, text="Not an accepted origin.")
        ws = web.WebSocketResponse(
            compress=False, max_msg_size=self.config.max_message_bytes, autoping=True
        )
        await ws.prepare(request)  # the 101 response is on the transport (as aiohttp's own
        transport = request.transport  # websocket writer needs): frames may follow
        if transport is None:
            return ws
        sock = LiveSocket(self, ws, transport, self.config.client_backlog_bytes)
        sock.remote = request.remote or ""
        self.sockets.add(sock)
        sock.send_text(
            open_text(
                secrets.token_urlsafe(15),
                PING_INTERVAL_S,
                PING_TIMEOUT_S,
                self.config.max_message_bytes,
            )
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT and sock.partial is None:
                    if not await self._on_text(sock, msg.data):
                        break
                elif msg.type == WSMsgType.BINARY and sock.partial is not None:
                    if not await self._on_attachment(sock, msg.data):
                        break
                else:
                    break
        except Exception:
            logger.exception("danmaku: websocket client failed")
        finally:
            self.sockets.discard(sock)
            sock.closed = True
            sid, sock.sid = sock.sid, None
            if sid is not None:
                self.leave(sid)
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 1.0)
        return ws

    async def _on_text(self, sock: LiveSocket, text: str) -> bool:
        """One Engine.IO packet from the client; False closes the connection."""
        kind = text[:1]
        if kind == "4":
            return await self._on_packet(sock, text[1:])
        if kind == "3":  # pong
            sock.awaiting_pong = False
            return True
        if kind == "2":  # a client ping (Engine.IO v3 habit): answer it
            sock.send_text("3" + text[1:])
            return True
        return kind == "6"  # noop; "1" (close) or anything else ends the connection

    async def _on_attachment(self, sock: LiveSocket, blob: bytes) -> bool:
        pkt = sock.partial
        assert pkt is not None
        sock.blobs.append(blob)
        if len(sock.blobs) < pkt.attachments:
            return True
        blobs, sock.blobs, sock.partial = sock.blobs, [], None
        try:
            data = with_attachments(pkt.data, blobs)
        except WireError as exc:
            logger.debug("danmaku: closing a websocket client: %s", exc)
            return False
        if pkt.type != BINARY_EVENT:
            return True  # a binary ack: the server asks for none
        return await self._on_sio(sock, SioPacket(EVENT, pkt.namespace, pkt.ack_id, data))

    async def _on_packet(self, sock: LiveSocket, text: str) -> bool:
        try:
            pkt = parse_sio(text)
        except WireError as exc:
            logger.debug("danmaku: closing a websocket client: %s", exc)
            return False
        if pkt.attachments:
            sock.partial = pkt
            return True
        return await self._on_sio(sock, pkt)

    async def _on_sio(self, sock: LiveSocket, pkt: SioPacket) -> bool:
        sessions = self.sessions
        if sessions is None:
            return False
        ns = self.namespace
        if pkt.type == CONNECT:
            if pkt.namespace != ns:
                sock.send_text("4" + connect_error_text(pkt.namespace, "Unable to connect"))
                return True
            if sock.sid is not None:
                return True  # connected already
            sid = secrets.token_urlsafe(15)
            try:
                member, joined = await sessions.join(sid, sock, pkt.data, sock.remote)
            except Refused as exc:
                sock.send_text("4" + connect_error_text(ns, exc.message, {"code": exc.code}))
                return True
            if sock.closed:
                return False
            # one synchronous step: CONNECT, then ``joined``, then the member is in the room
            sock.sid = sid
            sock.send_text("4" + connect_text(ns, sid))
            if not sessions.hub.activate(member, joined):
                sock.sid = None
                sock.send_text("4" + disconnect_text(ns))
            return True
        if pkt.namespace != ns or sock.sid is None:
            return True  # not connected there: ignored, as python-socketio does
        if pkt.type == EVENT:
            data = pkt.data
            ack = await sessions.event(sock.sid, data[0], data[1:])
            if pkt.ack_id is not None:
                sock.send_text("4" + ack_text(ns, pkt.ack_id, [ack]))
        elif pkt.type == DISCONNECT:
            sid, sock.sid = sock.sid, None
            sessions.leave(sid)
        return True
