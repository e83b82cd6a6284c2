"""RTP packets (RFC 3550 §5.1): the fixed header, CSRCs, the header extension, padding.

:class:`RtpPacket` is a frozen wire structure with :meth:`RtpPacket.parse` and
``bytes()``. The fan-out path does not build a dataclass per packet: :func:`build_header`
packs a 12-byte header, and :func:`rewrite` patches the payload type and SSRC of an
already serialized packet (what may differ between two viewers of one stream).

Sequence numbers wrap at 16 bits: :func:`seq_newer` and :func:`seq_diff` compare them
the RFC 1982 way (serial number arithmetic).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from media.errors import ProtocolViolation

__all__ = [
    "RTP_HEADER_SIZE",
    "RtpError",
    "RtpPacket",
    "build_header",
    "is_rtcp",
    "rewrite",
    "seq_diff",
    "seq_newer",
]

RTP_HEADER_SIZE = 12
_HEADER = struct.Struct("!BBHII")


class RtpError(ProtocolViolation):
    """Malformed RTP or RTCP bytes."""


def seq_diff(a: int, b: int) -> int:
    """``a - b`` for 16-bit sequence numbers, in ``[-32768, 32767]``."""
    d = (a - b) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (wrapping)."""
    return seq_diff(a, b) > 0


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a muxed port, packet types 192-223 (second byte) are RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def build_header(payload_type: int, seq: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """A 12-byte RTP header: version 2, no padding, extension or CSRC."""
    return _HEADER.pack(
        0x80,
        (0x80 if marker else 0) | (payload_type & 0x7F),
        seq & 0xFFFF,
        timestamp & 0xFFFFFFFF,
        ssrc & 0xFFFFFFFF,
    )


def rewrite(packet: bytes, payload_type: int | None = None, ssrc: int | None = None) -> bytes:
    """``packet`` with another payload type and/or SSRC (marker and the rest kept).

    Returns ``packet`` itself when nothing changes (the common case: no copy).
    """
    pt_same = payload_type is None or (packet[1] & 0x7F) == payload_type
    ssrc_same = ssrc is None or packet[8:12] == ssrc.to_bytes(4, "big")
    if pt_same and ssrc_same:
        return packet
    out = bytearray(packet)
    if payload_type is not None:
        out[1] = (out[1] & 0x80) | (payload_type & 0x7F)
    if ssrc is not None:
        out[8:12] = (ssrc & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class RtpPacket:
    """One RTP packet. ``extension`` is ``(profile, data)`` when the X bit is set."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0
    """Bytes of padding at the end (0: none), the last of which holds the count."""

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of 0..127")
        if not 0 <= self.sequence_number <= 0xFFFF:
            raise ValueError(f"sequence number {self.sequence_number} out of 16 bits")
        if not 0 <= self.timestamp <= 0xFFFFFFFF or not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise ValueError("timestamp and SSRC are 32-bit unsigned")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding is 0..255 bytes")
        if self.extension is not None and len(self.extension[1]) % 4:
            raise ValueError("header extension data must be a multiple of 4 bytes")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one packet; raise :class:`RtpError` on anything malformed."""
        if len(data) < RTP_HEADER_SIZE:
            raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        if b0 >> 6 != 2:
            raise RtpError(f"RTP version {b0 >> 6}, expected 2")
        pos = RTP_HEADER_SIZE
        cc = b0 & 0x0F
        if len(data) < pos + 4 * cc:
            raise RtpError("RTP packet truncated in its CSRC list")
        csrc = struct.unpack_from(f"!{cc}I", data, pos) if cc else ()
        pos += 4 * cc
        extension: tuple[int, bytes] | None = None
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise RtpError("RTP packet truncated in its header extension")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise RtpError("RTP header extension longer than the packet")
            extension = (profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or end - padding < pos:
                raise RtpError(f"RTP padding count {padding} does not fit the packet")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        b0 = 0x80 | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        out = [
            _HEADER.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        ]
        if self.csrc:
            out.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            out.append(struct.pack("!HH", profile, len(data) // 4) + data)
        out.append(self.payload)
        if self.padding:
            out.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(out)
