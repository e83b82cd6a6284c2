"""Pre-framed fan-out: one WebSocket frame per batch, the same bytes written to every viewer.

python-engineio gives each socket a queue and a writer task; queueing a batch there costs,
per viewer and per tick, a task wake-up, a string copy, a UTF-8 encode and a frame header
(and, if the browser negotiated permessage-deflate, a compression). Instead, the hub
builds the frame once per room per tick (:func:`ws_text_frame`: the header depends only on
the payload length) and writes that one ``bytes`` object with ``transport.write`` to each
websocket viewer's connection, like the media relay does for FLV over websocket.

To find a socket's connection, :func:`install` replaces engineio's aiohttp websocket
driver with :class:`DirectWebSocket`, which

- refuses permessage-deflate (``compress=False``): a frame written raw never needs RSV1,
  and no batch is compressed once per viewer;
- records the connection (:class:`WsConn`) by Engine.IO sid while the websocket lives;
- counts sends in progress from engineio's writer task (``busy``), so the hub knows when
  packets taken off the socket's queue are not all on the wire yet.

Ordering: the hub writes directly only when the socket's queue is empty and its writer is
not inside a send (:meth:`WsConn.ready`); otherwise it queues the packet behind the others
(the normal path). So ``joined`` (queued) always precedes the first batch, and every
event keeps its order. Polling clients, sockets mid-upgrade and anything unexpected take
the normal path too.
"""

from __future__ import annotations

import struct
from typing import Any

from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp

__all__ = ["DirectWebSocket", "WsConn", "install", "ws_text_frame"]


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed (RSV bits clear) server-to-client text frame, FIN set."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, n])
    elif n < 65536:
        head = b"\x81\x7e" + struct.pack(">H", n)
    else:
        head = b"\x81\x7f" + struct.pack(">Q", n)
    return head + payload


class WsConn:
    """A live websocket of one Engine.IO socket, as the hub sees it."""

    __slots__ = ("busy", "transport", "ws")

    def __init__(self, ws: WebSocketResponse, transport: Any) -> None:
        self.ws = ws
        self.transport = transport
        self.busy = 0

    def ready(self, sock: Any) -> bool:
        """True when a frame written now lands after everything queued before it."""
        return (
            self.busy == 0
            and sock.upgraded
            and not sock.upgrading
            and not sock.queue.qsize()
            and not self.ws.closed
            and not self.ws.compress
            and not self.transport.is_closing()
        )


class DirectWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """engineio's aiohttp websocket wrapper, without compression, registered by sid."""

    def __init__(self, handler: Any, server: Any, registry: dict[str, WsConn]) -> None:
        super().__init__(handler, server)
        self.registry = registry
        self.conn: WsConn | None = None

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size, compress=False
        )
        await self._sock.prepare(request)
        self.environ = environ
        sid = getattr(getattr(self.handler, "__self__", None), "sid", None)
        transport = request.transport
        if isinstance(sid, str) and transport is not None:
            self.conn = WsConn(self._sock, transport)
            self.registry[sid] = self.conn
        try:
            await self.handler(self)
        finally:
            if self.conn is not None and self.registry.get(sid or "") is self.conn:
                del self.registry[sid or ""]
        return self._sock

    async def send(self, message: Any) -> None:
        conn = self.conn
        if conn is None:
            await super().send(message)
            return
        conn.busy += 1
        try:
            await super().send(message)
        finally:
            conn.busy -= 1


def install(eio: Any) -> dict[str, WsConn]:
    """Use :class:`DirectWebSocket` on this engineio server; returns the sid -> conn registry.

    Idempotent. Only this server's driver table is changed (it is copied, not mutated).
    """
    registry: dict[str, WsConn] | None = getattr(eio, "_berrylive_ws_registry", None)
    if registry is not None:
        return registry
    registry = {}
    table = dict(eio._async)
    if table.get("websocket") is not eio_aiohttp.WebSocket:
        return registry  # another async mode: the normal path only
    reg = registry

    def factory(handler: Any, server: Any) -> DirectWebSocket:
        return DirectWebSocket(handler, server, reg)

    table["websocket"] = factory
    eio._async = table
    eio._berrylive_ws_registry = registry
    return registry
