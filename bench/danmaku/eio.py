"""A cheap protocol-level Socket.IO v5 / Engine.IO v4 client over raw WebSocket.

One ``asyncio.Protocol`` per connection, a minimal RFC 6455 frame parser, no per-client
task: thousands of viewers fit in one process. Used by the load generator and by tests
that must send what a well-behaved library never would (invalid UTF-8, garbage packets).

Client frames are masked with an all-zero key (legal, and free: no XOR pass).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["EioClient", "connect", "ws_frame"]


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + b"\x00\x00\x00\x00" + payload


class EioClient(asyncio.Protocol):
    """Connects to ``namespace`` with ``auth``; calls ``on_event(client, event, raw_args)``.

    ``raw_args`` is the undecoded JSON text of the Socket.IO packet (``["comments",{...}]``)
    so a receiver can decide how much parsing it can afford.
    """

    def __init__(
        self,
        host: str,
        port: int,
        auth: dict[str, Any],
        namespace: str = "/live",
        on_event: Callable[[EioClient, bytes], None] | None = None,
        headers: str = "",
    ) -> None:
        self.host, self.port = host, port
        self.extra_headers = headers
        self.response_head = b""
        self.rsv_bits = 0  # OR of the RSV bits of every frame received (0 unless compressed)
        self.auth = auth
        self.ns = namespace
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self._frag: bytearray | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.connect_error: Any = None
        self.frames = 0
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self._ack_id = 0

    # ------------------------------------------------------------------ transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        key = base64.b64encode(os.urandom(16)).decode()
        req = (
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"{self.extra_headers}\r\n"
        )
        transport.write(req.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(f"closed before connect: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)
        for fut in self.acks.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            self.response_head = bytes(buf[:end])
            del buf[: end + 4]
            if b" 101 " not in status:
                self.connected.set_exception(ConnectionError(status.decode(errors="replace")))
                self.transport.close()  # type: ignore[union-attr]
                return
            self._upgraded = True
        while True:
            if len(buf) < 2:
                return
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = struct.unpack_from("!H", buf, 2)[0]
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = struct.unpack_from("!Q", buf, 2)[0]
                pos = 10
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            self.rsv_bits |= b0 & 0x70
            self._frame(b0 & 0x80, b0 & 0x0F, payload)

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode == 8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.transport.close()  # type: ignore[union-attr]
            return
        if opcode == 9:
            self.send_raw(payload, opcode=10)
            return
        if opcode == 0 and self._frag is not None:
            self._frag += payload
            if fin:
                payload, self._frag = bytes(self._frag), None
                self._packet(payload)
            return
        if opcode == 1:
            if not fin:
                self._frag = bytearray(payload)
                return
            self._packet(payload)

    # ------------------------------------------------------------------ Engine.IO / Socket.IO
    def _packet(self, p: bytes) -> None:
        self.frames += 1
        kind = p[:1]
        if kind == b"2":  # ping
            self.send_text("3")
        elif kind == b"0":  # open
            self.send_text(f"40{self.ns}," + json.dumps(self.auth))
        elif kind == b"4":
            self._sio(p[1:])

    def _sio(self, p: bytes) -> None:
        kind = p[:1]
        prefix = self.ns.encode() + b","
        body = p[1:]
        if body.startswith(prefix):
            body = body[len(prefix) :]
        if kind == b"2":
            if self.on_event is not None:
                self.on_event(self, body)
        elif kind == b"3":
            i = 0
            while i < len(body) and 48 <= body[i] <= 57:
                i += 1
            fut = self.acks.pop(int(body[:i]), None) if i else None
            if fut is not None and not fut.done():
                fut.set_result(json.loads(body[i:])[0])
        elif kind == b"0":
            if not self.connected.done():
                self.connected.set_result(json.loads(body) if body else None)
        elif kind == b"4":
            self.connect_error = json.loads(body) if body else None
            if not self.connected.done():
                self.connected.set_exception(ConnectionRefusedError(self.connect_error))

    def send_raw(self, payload: bytes, opcode: int = 1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(payload, opcode))

    def send_text(self, text: str) -> None:
        self.send_raw(text.encode())

    def emit(self, event: str, data: Any = None, ack: bool = False) -> asyncio.Future[Any] | None:
        args = json.dumps([event] if data is None else [event, data], separators=(",", ":"))
        if not ack:
            self.send_text(f"42{self.ns}," + args)
            return None
        self._ack_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[self._ack_id] = fut
        self.send_text(f"42{self.ns},{self._ack_id}" + args)
        return fut

    def close(self) -> None:
        if self.transport is not None:
            self.send_raw(b"\x03\xe8", opcode=8)
            self.transport.close()


async def connect(
    host: str,
    port: int,
    auth: dict[str, Any],
    on_event: Callable[[EioClient, bytes], None] | None = None,
    namespace: str = "/live",
    timeout: float = 10.0,
    headers: str = "",
    sock: Any = None,
) -> EioClient:
    """Connect and join; ``headers``: extra request header lines (each ending in CRLF);
    ``sock``: an unconnected socket to use (e.g. with a small receive buffer)."""
    loop = asyncio.get_running_loop()
    factory = lambda: EioClient(host, port, auth, namespace, on_event, headers)  # noqa: E731
    if sock is None:
        _, proto = await loop.create_connection(factory, host, port)
    else:
        await loop.sock_connect(sock, (host, port))
        _, proto = await loop.create_connection(factory, sock=sock)
    await asyncio.wait_for(proto.connected, timeout)
    return proto
