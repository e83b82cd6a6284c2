"""Cheap viewer clients for the media benchmark: HTTP-FLV and a minimal RTMP player.

Each viewer is an ``asyncio.BufferedProtocol`` that reads into one buffer shared by all
viewers of the process (the data is looked at synchronously and thrown away). Until the
first video keyframe a viewer parses just enough of the stream to find it (HTTP response
head, chunked framing, FLV tag headers; or RTMP handshake, chunk headers and the control
messages a player must honour); after that it only counts bytes (and, for RTMP, sends the
acknowledgements the server's window asks for).

Timestamps are ``time.perf_counter()`` values; ``Viewer`` keeps them relative to the start
of its own connection attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

SHARED_BUFFER_SIZE = 256 * 1024
MAX_HEAD = 16 * 1024  # HTTP response head / RTMP chunk header bound during startup
MAX_STARTUP_BYTES = 64 * 1024 * 1024  # give up looking for a keyframe after this much
# After the first keyframe a viewer only counts bytes; reads are batched to this size, so a
# byte count taken at any moment lags by less than this (0.6 % of a 20 s window at 2 Mb/s).
DEFAULT_RCVLOWAT = 32 * 1024


@dataclass(slots=True)
class Viewer:
    """Per-viewer measurements (seconds are relative to ``started``)."""

    index: int
    started: float = 0.0
    connected: float | None = None
    first_byte: float | None = None
    first_media: float | None = None
    first_keyframe: float | None = None
    closed: float | None = None
    error: str | None = None
    nbytes: int = 0

    @property
    def ttfb(self) -> float | None:
        return None if self.first_byte is None else self.first_byte - self.started

    @property
    def ttfm(self) -> float | None:
        """Time to the first audio/video/data tag or message."""
        return None if self.first_media is None else self.first_media - self.started

    @property
    def ttfk(self) -> float | None:
        return None if self.first_keyframe is None else self.first_keyframe - self.started


@dataclass(slots=True)
class _Shared:
    buffer: bytearray = field(default_factory=lambda: bytearray(SHARED_BUFFER_SIZE))
    view: memoryview = field(init=False)

    def __post_init__(self) -> None:
        self.view = memoryview(self.buffer)


_SHARED = _Shared()


def _is_video_keyframe(b0: int, b1: int | None) -> bool:
    """FLV/RTMP video tag body: a keyframe that carries a picture (not a sequence header)."""
    if b0 & 0x80:  # Enhanced RTMP: 3-bit frame type, packet type in the low nibble
        return (b0 >> 4) & 0x07 == 1 and (b0 & 0x0F) in (1, 3)
    if b0 >> 4 != 1:
        return False
    if b0 & 0x0F in (7, 12, 13):  # AVC / legacy HEVC / legacy AV1: packet type 1 = NALUs
        return b1 == 1
    return True


class _ViewerProtocol(asyncio.BufferedProtocol):
    rcvlowat = DEFAULT_RCVLOWAT  # set per process by the load generator (0: off)

    def __init__(self, viewer: Viewer, done: asyncio.Future[None] | None = None) -> None:
        self.viewer = viewer
        self.transport: asyncio.Transport | None = None
        self.counting = False  # True once the first keyframe was seen
        self._done = done
        self._startup_bytes = 0

    # asyncio plumbing -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.viewer.connected = time.perf_counter()
        self.on_connected()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _SHARED.view

    def buffer_updated(self, nbytes: int) -> None:
        v = self.viewer
        v.nbytes += nbytes
        if self.counting:
            self.after_keyframe(nbytes)
            return
        if v.first_byte is None:
            v.first_byte = time.perf_counter()
        self._startup_bytes += nbytes
        if self._startup_bytes > MAX_STARTUP_BYTES:
            self.fail("no video keyframe in the first 64 MiB")
            return
        try:
            self.feed(_SHARED.view[:nbytes])
        except ValueError as exc:
            self.fail(str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        v = self.viewer
        v.closed = time.perf_counter()
        if v.error is None:
            v.error = f"closed: {exc}" if exc else "closed by server"
        self._finish()

    # helpers ----------------------------------------------------------------------------
    def keyframe(self) -> None:
        if self.viewer.first_keyframe is None:
            self.viewer.first_keyframe = time.perf_counter()
        self.counting = True
        # From now on only the byte count matters: let the kernel wake us per RCVLOWAT bytes
        # instead of per server write (an order of magnitude fewer reads for the generator).
        if self.transport is not None and self.rcvlowat:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, self.rcvlowat)
        self._finish()

    def media(self) -> None:
        if self.viewer.first_media is None:
            self.viewer.first_media = time.perf_counter()

    def fail(self, reason: str) -> None:
        if self.viewer.error is None:
            self.viewer.error = reason
        if self.transport is not None:
            self.transport.abort()
        self._finish()

    def _finish(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # per protocol -----------------------------------------------------------------------
    def on_connected(self) -> None:
        raise NotImplementedError

    def feed(self, data: memoryview) -> None:
        raise NotImplementedError

    def after_keyframe(self, nbytes: int) -> None:
        return None


# --------------------------------------------------------------------------------------
# HTTP-FLV
# --------------------------------------------------------------------------------------


class _FlvScanner:
    """Incremental FLV scanner: reports media and the first video keyframe tag."""

    __slots__ = ("_head", "_need_header", "_skip")

    def __init__(self) -> None:
        self._need_header = True
        self._head = bytearray()
        self._skip = 0

    def feed(self, data: memoryview, proto: _ViewerProtocol) -> None:
        pos = 0
        n = len(data)
        while pos < n and not proto.counting:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            # 13 bytes: the file header + PreviousTagSize0, or a tag header + 2 body bytes.
            want = 13
            take = min(want - len(self._head), n - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) < want:
                return
            head = self._head
            if self._need_header:
                if head[:3] != b"FLV":
                    raise ValueError(f"not an FLV stream: {bytes(head[:3])!r}")
                header_size = int.from_bytes(head[5:9], "big")
                self._skip = max(0, header_size - 9)  # PreviousTagSize0 already consumed
                self._need_header = False
                self._head = bytearray()
                continue
            tag_type = head[0] & 0x1F
            size = int.from_bytes(head[1:4], "big")
            if tag_type in (8, 9):
                proto.media()
            if (
                tag_type == 9
                and size >= 1
                and _is_video_keyframe(head[11], head[12] if size >= 2 else None)
            ):
                proto.keyframe()
                return
            # 11 header + 2 body bytes consumed; skip the rest of the body and the PTS
            # (for a body shorter than 2 bytes, the overshoot came out of the PTS).
            self._skip = size + 2
            self._head = bytearray()


class HttpFlvViewer(_ViewerProtocol):
    """GET an HTTP-FLV URL (HTTP/1.1, chunked or not) and find the first keyframe."""

    def __init__(
        self, viewer: Viewer, host: str, path: str, done: asyncio.Future[None] | None = None
    ) -> None:
        super().__init__(viewer, done)
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: berrylive-bench\r\n"
            "Accept: */*\r\nConnection: keep-alive\r\n\r\n"
        ).encode()
        self._head = bytearray()
        self._in_body = False
        self._chunked = False
        self._chunk_left = 0  # data bytes left in the current chunk
        self._chunk_line = bytearray()
        self._chunk_crlf = 0  # CRLF bytes to skip after a chunk's data
        self._flv = _FlvScanner()

    def on_connected(self) -> None:
        assert self.transport is not None
        self.transport.write(self._request)

    def feed(self, data: memoryview) -> None:
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    raise ValueError("HTTP response head too long")
                return
            head = bytes(self._head[:end]).decode("latin-1")
            rest = memoryview(bytes(self._head[end + 4 :]))
            self._head = bytearray()
            status_line, *lines = head.split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "200":
                raise ValueError(f"HTTP status {status_line!r}")
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                    self._chunked = True
            self._in_body = True
            data = rest
            if not data:
                return
        if not self._chunked:
            self._flv.feed(data, self)
            return
        self._feed_chunked(data)

    def _feed_chunked(self, data: memoryview) -> None:
        pos = 0
        n = len(data)
        while pos < n and not self.counting:
            if self._chunk_crlf:
                step = min(self._chunk_crlf, n - pos)
                self._chunk_crlf -= step
                pos += step
                continue
            if self._chunk_left:
                step = min(self._chunk_left, n - pos)
                self._flv.feed(data[pos : pos + step], self)
                self._chunk_left -= step
                pos += step
                if not self._chunk_left:
                    self._chunk_crlf = 2
                continue
            nl = bytes(data[pos:]).find(b"\n")
            if nl < 0:
                self._chunk_line += data[pos:]
                if len(self._chunk_line) > 1024:
                    raise ValueError("chunk size line too long")
                return
            self._chunk_line += data[pos : pos + nl]
            pos += nl + 1
            line = bytes(self._chunk_line).split(b";", 1)[0].strip()
            self._chunk_line = bytearray()
            size = int(line, 16) if line else 0
            if size == 0:
                raise ValueError("HTTP-FLV body ended")
            self._chunk_left = size


# --------------------------------------------------------------------------------------
# RTMP play
# --------------------------------------------------------------------------------------


def _amf_string(s: str) -> bytes:
    raw = s.encode()
    return b"\x02" + len(raw).to_bytes(2, "big") + raw


def _amf_number(x: float) -> bytes:
    return b"\x00" + struct.pack(">d", x)


def _amf_object(items: dict[str, str | float | bool]) -> bytes:
    out = bytearray(b"\x03")
    for key, value in items.items():
        raw = key.encode()
        out += len(raw).to_bytes(2, "big") + raw
        if isinstance(value, bool):
            out += b"\x01" + (b"\x01" if value else b"\x00")
        elif isinstance(value, str):
            out += _amf_string(value)
        else:
            out += _amf_number(value)
    return bytes(out + b"\x00\x00\x09")


def _rtmp_message(
    csid: int, msg_type: int, stream_id: int, payload: bytes, chunk_size: int = 128
) -> bytes:
    """One message as fmt0 + fmt3 chunks (csid < 64)."""
    out = bytearray()
    out.append(csid)
    out += b"\x00\x00\x00" + len(payload).to_bytes(3, "big") + bytes((msg_type,))
    out += stream_id.to_bytes(4, "little")
    for i in range(0, len(payload), chunk_size):
        if i:
            out.append(0xC0 | csid)
        out += payload[i : i + chunk_size]
    return bytes(out)


def rtmp_play_commands(tc_url: str, app: str, stream: str) -> bytes:
    """connect, createStream and play, pipelined (the first createStream yields stream 1)."""
    connect = (
        _amf_string("connect")
        + _amf_number(1)
        + _amf_object(
            {
                "app": app,
                "flashVer": "LNX 9,0,124,2",
                "tcUrl": tc_url,
                "fpad": False,
                "capabilities": 15.0,
                "audioCodecs": 4071.0,
                "videoCodecs": 252.0,
                "videoFunction": 1.0,
            }
        )
    )
    create = _amf_string("createStream") + _amf_number(2) + b"\x05"
    play = _amf_string("play") + _amf_number(3) + b"\x05" + _amf_string(stream) + _amf_number(-2000)
    buffer_len = (3).to_bytes(2, "big") + (1).to_bytes(4, "big") + (3000).to_bytes(4, "big")
    return (
        _rtmp_message(3, 20, 0, connect)
        + _rtmp_message(3, 20, 0, create)
        + _rtmp_message(2, 4, 0, buffer_len)
        + _rtmp_message(8, 20, 1, play)
    )


@dataclass(slots=True)
class _ChunkStream:
    timestamp: int = 0
    length: int = 0
    msg_type: int = 0
    stream_id: int = 0
    remaining: int = 0
    extended: bool = False
    head: bytearray = field(default_factory=bytearray)  # first bytes of the message


class RtmpViewer(_ViewerProtocol):
    """A minimal RTMP player: handshake, connect, createStream, play; finds the keyframe."""

    def __init__(
        self,
        viewer: Viewer,
        host: str,
        port: int,
        app: str,
        stream: str,
        done: asyncio.Future[None] | None = None,
    ) -> None:
        super().__init__(viewer, done)
        self._commands = rtmp_play_commands(f"rtmp://{host}:{port}/{app}", app, stream)
        self._hs = bytearray()
        self._handshaken = False
        self._buf = bytearray()
        self._chunk_size = 128
        self._streams: dict[int, _ChunkStream] = {}
        self._window = 0
        self._acked = 0

    def on_connected(self) -> None:
        assert self.transport is not None
        c1 = bytes(8) + os.urandom(1528)
        self.transport.write(b"\x03" + c1)

    def feed(self, data: memoryview) -> None:
        if not self._handshaken:
            self._hs += data
            if len(self._hs) < 1 + 1536 + 1536:
                return
            if self._hs[0] != 3:
                raise ValueError(f"RTMP version {self._hs[0]}")
            s1 = bytes(self._hs[1:1537])
            assert self.transport is not None
            self.transport.write(s1 + self._commands)
            self._buf = bytearray(self._hs[3073:])
            self._hs = bytearray()
            self._handshaken = True
        else:
            self._buf += data
        self._parse()
        if self.counting:
            self._buf = bytearray()
            self._streams.clear()
        self._maybe_ack()

    def after_keyframe(self, nbytes: int) -> None:
        if self._window and self.viewer.nbytes - self._acked >= self._window // 2:
            self._maybe_ack()

    def _maybe_ack(self) -> None:
        if not self._window or self.transport is None:
            return
        received = self.viewer.nbytes - 3073  # acknowledgements count chunk-stream bytes
        if received - self._acked >= self._window // 2:
            self._acked = received
            self.transport.write(_rtmp_message(2, 3, 0, (received & 0xFFFFFFFF).to_bytes(4, "big")))

    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        n = len(buf)
        while pos < n and not self.counting:
            start = pos
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            pos += 1
            if csid == 0:
                if n - pos < 1:
                    break
                csid = 64 + buf[pos]
                pos += 1
            elif csid == 1:
                if n - pos < 2:
                    break
                csid = 64 + buf[pos] + buf[pos + 1] * 256
                pos += 2
            header_len = (11, 7, 3, 0)[fmt]
            if n - pos < header_len:
                pos = start
                break
            cs = self._streams.get(csid)
            if cs is None:
                cs = self._streams[csid] = _ChunkStream()
            ts_field = None
            if fmt <= 2:
                ts_field = int.from_bytes(buf[pos : pos + 3], "big")
            if fmt <= 1:
                cs.length = int.from_bytes(buf[pos + 3 : pos + 6], "big")
                cs.msg_type = buf[pos + 6]
            if fmt == 0:
                cs.stream_id = int.from_bytes(buf[pos + 7 : pos + 11], "little")
            pos += header_len
            if ts_field is not None:
                cs.extended = ts_field == 0xFFFFFF
            if cs.extended:
                if n - pos < 4:
                    pos = start
                    break
                pos += 4
            if cs.remaining == 0:  # a new message on this chunk stream
                cs.remaining = cs.length
                cs.head = bytearray()
            size = min(self._chunk_size, cs.remaining)
            if n - pos < size:
                pos = start
                break
            if len(cs.head) < 16:
                cs.head += buf[pos : pos + min(size, 16 - len(cs.head))]
            pos += size
            cs.remaining -= size
            self._on_chunk(cs)
        del buf[:pos]
        if len(buf) > MAX_STARTUP_BYTES:
            raise ValueError("RTMP startup buffer overflow")

    def _on_chunk(self, cs: _ChunkStream) -> None:
        t = cs.msg_type
        head = cs.head
        if t == 9 and head:
            self.media()
            if _is_video_keyframe(head[0], head[1] if len(head) > 1 else None):
                self.keyframe()
            return
        if t in (8, 18):
            self.media()
            return
        if cs.remaining:
            return
        if t == 1 and len(head) >= 4:
            self._chunk_size = int.from_bytes(head[:4], "big") & 0x7FFFFFFF
            if not 1 <= self._chunk_size <= 1 << 24:
                raise ValueError(f"chunk size {self._chunk_size}")
        elif t == 5 and len(head) >= 4:
            self._window = int.from_bytes(head[:4], "big")
        elif t == 4 and len(head) >= 6 and int.from_bytes(head[:2], "big") == 6:
            assert self.transport is not None  # ping request -> ping response
            self.transport.write(_rtmp_message(2, 4, 0, b"\x00\x07" + bytes(head[2:6])))
        elif t == 20 and b"_error" in head:
            raise ValueError("RTMP command refused")


# --------------------------------------------------------------------------------------
# Opening viewers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlayTarget:
    """Where viewers connect: ``proto`` is ``http-flv`` or ``rtmp``."""

    proto: str
    host: str
    port: int
    path: str  # HTTP path, or "/app/stream" for RTMP

    @classmethod
    def from_url(cls, url: str) -> PlayTarget:
        parts = urlsplit(url)
        if parts.scheme == "rtmp":
            return cls("rtmp", parts.hostname or "127.0.0.1", parts.port or 1935, parts.path)
        if parts.scheme == "http":
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            return cls("http-flv", parts.hostname or "127.0.0.1", parts.port or 80, path)
        raise ValueError(f"unsupported play URL {url!r}")

    def protocol(self, viewer: Viewer, done: asyncio.Future[None] | None = None) -> _ViewerProtocol:
        if self.proto == "rtmp":
            app, _, stream = self.path.lstrip("/").partition("/")
            return RtmpViewer(viewer, self.host, self.port, app, stream, done)
        return HttpFlvViewer(viewer, f"{self.host}:{self.port}", self.path, done)


async def open_viewer(
    target: PlayTarget, viewer: Viewer, done: asyncio.Future[None] | None = None
) -> _ViewerProtocol | None:
    """Connect one viewer; failures are recorded on ``viewer`` (never raised)."""
    loop = asyncio.get_running_loop()
    viewer.started = time.perf_counter()
    proto = target.protocol(viewer, done)
    try:
        await loop.create_connection(lambda: proto, target.host, target.port)
    except OSError as exc:
        viewer.error = f"connect: {exc}"
        viewer.closed = time.perf_counter()
        if done is not None and not done.done():
            done.set_result(None)
        return None
    return proto


async def probe(url: str, timeout: float) -> float | None:
    """Open one viewer and wait for its first keyframe; the time to it, or None."""
    target = PlayTarget.from_url(url)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    viewer = Viewer(0)
    proto = await open_viewer(target, viewer, done)
    try:
        await asyncio.wait_for(done, timeout)
    except TimeoutError:
        pass
    finally:
        if proto is not None:
            proto.close()
    return viewer.ttfk
