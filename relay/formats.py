"""Wire formats for viewers. Each turns a list of frames into the bytes every viewer of
that format receives; the bytes depend only on the frames, so they are built once per
batch and shared."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

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

    A format is an immutable value: two formats are equal exactly when they produce the
    same bytes (same class, same parameters). Caches of encoded bytes (a batch's, a hub's
    preludes) are keyed by the format itself, never by a name: RTMP at a 60 000-byte chunk
    size (forwards) and at 65 536 (players) are two formats, and a cache keyed by a shared
    name handed one of them the other's chunking.
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


@dataclass(frozen=True, slots=True)
class HttpFlv(Format):
    chunked: bool = True
    """HTTP/1.1 chunked transfer coding (False: HTTP/1.0, the body is the bare stream)."""

    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        raw = raw_flv if raw_flv is not None else flv_raw(frames)
        return http_chunk(raw) if self.chunked else raw

    def wrap_prelude(self, raw_flv: bytes) -> bytes:
        return http_chunk(raw_flv) if self.chunked else raw_flv


@dataclass(frozen=True, slots=True)
class WsFlv(Format):
    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        return ws_binary(raw_flv if raw_flv is not None else flv_raw(frames))

    def wrap_prelude(self, raw_flv: bytes) -> bytes:
        return ws_binary(raw_flv)


@dataclass(frozen=True, slots=True)
class RtmpPlay(Format):
    chunk_size: int

    @property
    def uses_flv(self) -> bool:
        return False

    def encode(self, frames: Sequence[Frame], raw_flv: bytes | None) -> bytes:
        cs = self.chunk_size
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
