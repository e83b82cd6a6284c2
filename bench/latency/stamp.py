"""The wall-clock stamp a publisher puts into each video frame and a viewer reads back.

The stamp is an H.264 SEI NAL unit (``user_data_unregistered``, payload type 5) put in
front of the frame's other NAL units (AVCC, 4-byte lengths): a fixed 16-byte UUID, then
the publisher's ``time.time_ns() // 1000`` as 16 ASCII digits (no zero bytes, so no
emulation-prevention bytes are needed). Servers relay video payloads untouched, whatever
their wire format (RTMP, FLV, ...), so the viewer finds the UUID in the payload it gets.
Decoders ignore an unregistered SEI they do not know.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

UUID = b"berrylive-g2g-v1"
DIGITS = 16
_SEI = bytes((0x06, 0x05, len(UUID) + DIGITS))  # NAL type 6, payload type 5, size
NAL_SIZE = len(_SEI) + len(UUID) + DIGITS + 1  # + rbsp trailing bits


def sei(wall_us: int) -> bytes:
    """The SEI NAL unit (no length prefix) carrying ``wall_us`` (16 digits until 2286)."""
    digits = str(wall_us).encode()
    if len(digits) != DIGITS or digits[:1] == b"0":
        raise ValueError(f"{wall_us} is not a {DIGITS}-digit time in microseconds")
    return _SEI + UUID + digits + b"\x80"


def is_avc_nalu_tag(body: bytes) -> bool:
    """An FLV/RTMP video payload carrying H.264 NAL units (not a sequence header)."""
    return len(body) > 5 and body[0] & 0x0F == 7 and body[1] == 1


def stamp(body: bytes, wall_us: int | None = None) -> bytes:
    """``body`` (an FLV/RTMP AVC video payload) with the SEI stamp as its first NAL unit."""
    if wall_us is None:
        wall_us = time.time_ns() // 1000
    nal = sei(wall_us)
    return body[:5] + len(nal).to_bytes(4, "big") + nal + body[5:]


def read_stamp(body: bytes | bytearray | memoryview) -> int | None:
    """The wall-clock microseconds stamped into a video payload, or None."""
    head = bytes(body[: 5 + 4 + NAL_SIZE])
    at = head.find(UUID)
    if at < 0:
        return None
    digits = head[at + len(UUID) : at + len(UUID) + DIGITS]
    if len(digits) != DIGITS or not digits.isdigit():
        return None
    return int(digits)


def read_stamp_nalus(nalus: Iterable[bytes | bytearray | memoryview]) -> int | None:
    """The wall-clock microseconds in an access unit's NAL units (no start codes, no length
    prefixes: what an RTP depacketizer hands out), or None. Only an SEI NAL unit laid out
    exactly as :func:`sei` writes it counts, wherever it sits in the unit (a server may put
    SPS/PPS or a delimiter in front)."""
    for nal in nalus:
        if len(nal) < NAL_SIZE - 1 or nal[0] & 0x1F != 6:
            continue
        head = bytes(nal[: NAL_SIZE - 1])
        if head[:3] != _SEI or head[3 : 3 + len(UUID)] != UUID:
            continue
        digits = head[3 + len(UUID) :]
        if digits.isdigit():
            return int(digits)
    return None
