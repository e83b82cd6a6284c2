"""Wire formats for viewers. Each turns a list of frames into the bytes every viewer of
that format receives; the bytes depend only on the frames, so they are built once per
batch and shared."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import ClassVar, final

from media import flv
from media.frame import Frame


def flv_raw(frames: Sequence[Frame]) -> bytes:
    if len(frames) == 1:
        return frames[0].flv_tag()
    return b"".join([f.flv_tag() for f in frames])


def http_chunk(raw: bytes) -> bytes:
    """One HTTP/1.1 chunk (the framing depends only on the length)."""
    return b"%x\r\n" % len(raw) + raw + b"\r\n"


def ws_binary(raw: bytes) -> bytes:
    """One unmasked server-to-client WebSocket binary frame."""
    n = len(raw)
    if n < 126:
        head = bytes([0x82, n])
    elif n < 65536:
        head = b"\x82\x7e" + struct.pack(">H", n)
    else:
        head = b"\x82\x7f" + struct.pack(">Q", n)
    return head + raw


class Format:
    """How a protocol wraps FLV or RTMP bytes.

    Caches of encoded bytes (a batch's, a hub's preludes) are keyed by the format object
    itself, never by a name: RTMP at a 60 000-byte chunk size (forwards) and at 65 536
    (players) are two formats, and a cache keyed by their shared name handed one of them
    the other's chunking. So that every viewer of one wire format shares those caches, and
    a lookup costs an identity hash, not a hash of fields per viewer and batch, a format is
    one object per value: constructing it again with the same parameters returns the same
    object (``RtmpPlay(4096) is RtmpPlay(4096)``). Formats are immutable.
    """

    __slots__ = ()

    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        raise NotImplementedError

    def wrap_prelude(self, raw_flv: bytes) -> bytes:
        """Wrap the FLV file header + initial tags for this format."""
        raise NotImplementedError

    @property
    def uses_flv(self) -> bool:
        return True


@final
class HttpFlv(Format):
    """HTTP-FLV: HTTP/1.1 chunks, or (``chunked=False``, HTTP/1.0) the bare stream."""

    __slots__ = ("_chunked",)
    _chunked: bool
    _interned: ClassVar[dict[bool, HttpFlv]] = {}

    def __new__(cls, chunked: bool = True) -> HttpFlv:
        fmt = cls._interned.get(chunked)
        if fmt is None:
            fmt = cls._interned[chunked] = object.__new__(cls)
            fmt._chunked = chunked
        return fmt

    @property
    def chunked(self) -> bool:
        return self._chunked

    def __repr__(self) -> str:
        return f"HttpFlv(chunked={self._chunked})"

    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        raw = raw_flv if raw_flv is not None else flv_raw(frames)
        return http_chunk(raw) if self._chunked else raw

    def wrap_prelude(self, raw_flv: bytes) -> bytes:
        return http_chunk(raw_flv) if self._chunked else raw_flv


@final
class WsFlv(Format):
    """FLV in unmasked binary WebSocket frames."""

    __slots__ = ()
    _instance: ClassVar[WsFlv | None] = None

    def __new__(cls) -> WsFlv:
        if cls._instance is None:
            cls._instance = object.__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "WsFlv()"

    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        return ws_binary(raw_flv if raw_flv is not None else flv_raw(frames))

    def wrap_prelude(self, raw_flv: bytes) -> bytes:
        return ws_binary(raw_flv)


MAX_CHUNK_SIZES = 64
"""Distinct RTMP chunk sizes given one shared object each (servers use a handful; past
this a format still encodes correctly, its players just do not share the encoding)."""


@final
class RtmpPlay(Format):
    """RTMP messages (fmt 0 + fmt 3 chunks) at the chunk size announced to the peer."""

    __slots__ = ("_chunk_size",)
    _chunk_size: int
    _interned: ClassVar[dict[int, RtmpPlay]] = {}

    def __new__(cls, chunk_size: int) -> RtmpPlay:
        fmt = cls._interned.get(chunk_size)
        if fmt is None:
            fmt = object.__new__(cls)
            fmt._chunk_size = chunk_size
            if len(cls._interned) < MAX_CHUNK_SIZES:
                cls._interned[chunk_size] = fmt
        return fmt

    @property
    def chunk_size(self) -> int:
        return self._chunk_size

    def __repr__(self) -> str:
        return f"RtmpPlay({self._chunk_size})"

    @property
    def uses_flv(self) -> bool:
        return False

    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        cs = self._chunk_size
        if len(frames) == 1:
            return frames[0].rtmp_message(cs)
        return b"".join([f.rtmp_message(cs) for f in frames])

    def wrap_prelude(self, raw_flv: bytes) -> bytes:  # pragma: no cover - not used
        raise NotImplementedError


HTTP_FLV = HttpFlv()
HTTP_FLV_10 = HttpFlv(chunked=False)
WS_FLV = WsFlv()


def flv_prelude(has_audio: bool, has_video: bool, frames: Sequence[Frame]) -> bytes:
    return flv.file_header(has_audio, has_video) + flv_raw(frames)
