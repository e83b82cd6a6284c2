"""RTCP (RFC 3550 §6, RFC 4585, draft-alvestrand-rmcat-remb): parse and build.

Packets: sender report (:class:`SenderReport`), receiver report (:class:`ReceiverReport`)
with their report blocks (:class:`ReportBlock`), BYE (:class:`Bye`), generic NACK
(:class:`Nack`, RTPFB FMT 1), picture loss indication (:class:`Pli`, PSFB FMT 1) and
receiver estimated maximum bitrate (:class:`Remb`, PSFB FMT 15 "REMB"). Anything else
(SDES, XR, transport-cc, APP...) parses as :class:`RtcpUnknown` and is kept, not refused.

:func:`parse_compound` splits a compound packet; each structure has ``parse`` and
``__bytes__``. Malformed input raises :class:`~media.rtp.packet.RtpError` (never an
``IndexError`` or ``struct.error``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from media.rtp.packet import RtpError

__all__ = [
    "Bye",
    "Nack",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpPacket",
    "RtcpUnknown",
    "SenderReport",
    "ntp_time",
    "parse_compound",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_RTPFB = 205
PT_PSFB = 206

NTP_EPOCH_OFFSET = 2_208_988_800
"""Seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)."""

_COMMON = struct.Struct("!BBH")
_MAX_NACK_ITEMS = 256
"""A NACK naming more than this many (pid, blp) pairs is taken as garbage."""


def ntp_time(unix_seconds: float) -> int:
    """The 64-bit NTP timestamp (32.32 fixed point) of a Unix time."""
    seconds = unix_seconds + NTP_EPOCH_OFFSET
    whole = int(seconds)
    frac = int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return ((whole & 0xFFFFFFFF) << 32) | frac


def _header(count: int, packet_type: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("an RTCP body is a whole number of 32-bit words")
    return _COMMON.pack(0x80 | (count & 0x1F), packet_type, body_len // 4)


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (24 bytes)."""

    ssrc: int
    fraction_lost: int
    """Lost fraction since the last report, in 1/256."""
    packets_lost: int
    """Cumulative, signed 24 bits."""
    highest_seq: int
    """Extended highest sequence number received."""
    jitter: int
    lsr: int
    """Middle 32 bits of the last SR's NTP timestamp."""
    dlsr: int
    """Delay since that SR, in 1/65536 s."""

    SIZE = 24

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, frac_lost, hs, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", data, pos)
        lost = frac_lost & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        return cls(ssrc, frac_lost >> 24, lost, hs, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        return struct.pack(
            "!IIIIII",
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | (self.packets_lost & 0xFFFFFF),
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )


def _blocks(data: bytes, pos: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if pos + count * ReportBlock.SIZE > end:
        raise RtpError(f"RTCP report announces {count} blocks that do not fit")
    return tuple(ReportBlock.parse(data, pos + i * ReportBlock.SIZE) for i in range(count))


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def parse(cls, data: bytes, count: int, pos: int, end: int) -> SenderReport:
        if end - pos < 24:
            raise RtpError("RTCP SR shorter than its sender info")
        ssrc, ntp, rtp_ts, pc, oc = struct.unpack_from("!IQIII", data, pos)
        return cls(ssrc, ntp, rtp_ts, pc, oc, _blocks(data, pos + 24, count, end))

    def __bytes__(self) -> bytes:
        body = struct.pack(
            "!IQIII",
            self.ssrc,
            self.ntp_timestamp & 0xFFFFFFFFFFFFFFFF,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count & 0xFFFFFFFF,
            self.octet_count & 0xFFFFFFFF,
        ) + b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), PT_SR, len(body)) + body


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def parse(cls, data: bytes, count: int, pos: int, end: int) -> ReceiverReport:
        if end - pos < 4:
            raise RtpError("RTCP RR shorter than its SSRC")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        return cls(ssrc, _blocks(data, pos + 4, count, end))

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _header(len(self.reports), PT_RR, len(body)) + body


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]

    @classmethod
    def parse(cls, data: bytes, count: int, pos: int, end: int) -> Bye:
        if pos + 4 * count > end:
            raise RtpError("RTCP BYE announces more SSRCs than it holds")
        return cls(struct.unpack_from(f"!{count}I", data, pos))

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        return _header(len(self.ssrcs), PT_BYE, len(body)) + body


@dataclass(frozen=True, slots=True)
class Nack:
    """Generic NACK (RFC 4585 §6.2.1): the sequence numbers the receiver misses."""

    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]

    FMT = 1

    @classmethod
    def parse(cls, data: bytes, pos: int, end: int) -> Nack:
        if end - pos < 8:
            raise RtpError("RTCP NACK shorter than its SSRCs")
        sender, media = struct.unpack_from("!II", data, pos)
        items = (end - pos - 8) // 4
        if items > _MAX_NACK_ITEMS:
            raise RtpError(f"RTCP NACK with {items} items")
        lost: list[int] = []
        for i in range(items):
            pid, blp = struct.unpack_from("!HH", data, pos + 8 + 4 * i)
            lost.append(pid)
            for bit in range(16):
                if blp & (1 << bit):
                    lost.append((pid + bit + 1) & 0xFFFF)
        return cls(sender, media, tuple(lost))

    def __bytes__(self) -> bytes:
        items: list[bytes] = []
        remaining = sorted(set(self.lost))
        # Group wrapping-aware: each item covers pid and the 16 that follow it.
        while remaining:
            pid = remaining.pop(0)
            blp = 0
            keep: list[int] = []
            for s in remaining:
                d = (s - pid) & 0xFFFF
                if 1 <= d <= 16:
                    blp |= 1 << (d - 1)
                else:
                    keep.append(s)
            remaining = keep
            items.append(struct.pack("!HH", pid, blp))
        body = struct.pack("!II", self.sender_ssrc, self.media_ssrc) + b"".join(items)
        return _header(self.FMT, PT_RTPFB, len(body)) + body


@dataclass(frozen=True, slots=True)
class Pli:
    """Picture loss indication (RFC 4585 §6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    FMT = 1

    def __bytes__(self) -> bytes:
        return _header(self.FMT, PT_PSFB, 8) + struct.pack("!II", self.sender_ssrc, self.media_ssrc)


@dataclass(frozen=True, slots=True)
class Remb:
    """Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb)."""

    sender_ssrc: int
    bitrate: int
    """Bits per second (stored as a 6-bit exponent and an 18-bit mantissa)."""
    ssrcs: tuple[int, ...] = ()

    FMT = 15

    @classmethod
    def parse(cls, data: bytes, pos: int, end: int) -> Remb | None:
        """The REMB in an application-layer feedback message, or None if it is another."""
        if end - pos < 16 or data[pos + 8 : pos + 12] != b"REMB":
            return None
        (sender,) = struct.unpack_from("!I", data, pos)
        num = data[pos + 12]
        exp = data[pos + 13] >> 2
        mantissa = ((data[pos + 13] & 0x03) << 16) | (data[pos + 14] << 8) | data[pos + 15]
        if pos + 16 + 4 * num > end:
            raise RtpError("RTCP REMB announces more SSRCs than it holds")
        ssrcs = struct.unpack_from(f"!{num}I", data, pos + 16)
        return cls(sender, mantissa << exp, tuple(ssrcs))

    def __bytes__(self) -> bytes:
        if self.bitrate < 0 or len(self.ssrcs) > 255:
            raise ValueError("REMB bitrate is >= 0, with at most 255 SSRCs")
        exp = 0
        mantissa = self.bitrate
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exp += 1
        if exp > 63:
            raise ValueError("REMB bitrate too large")
        body = (
            struct.pack("!II", self.sender_ssrc, 0)
            + b"REMB"
            + bytes([len(self.ssrcs), (exp << 2) | (mantissa >> 16), (mantissa >> 8) & 0xFF])
            + bytes([mantissa & 0xFF])
            + struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        )
        return _header(self.FMT, PT_PSFB, len(body)) + body


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """A packet type (or feedback format) this module does not interpret."""

    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | Bye | Nack | Pli | Remb | RtcpUnknown


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Every packet of a (compound) RTCP datagram, in order."""
    out: list[RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise RtpError(f"RTCP datagram of {len(data)} bytes")
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtpError("trailing bytes after the last RTCP packet")
        b0, pt, words = _COMMON.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtpError(f"RTCP version {b0 >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtpError(f"RTCP packet of {4 + 4 * words} bytes overruns the datagram")
        body_end = end
        if b0 & 0x20:  # padding (only the last packet of a compound may have it)
            pad = data[end - 1]
            if pad == 0 or end - pad < pos + 4:
                raise RtpError(f"RTCP padding count {pad} does not fit")
            body_end = end - pad
        count = b0 & 0x1F
        body = pos + 4
        packet: RtcpPacket
        if pt == PT_SR:
            packet = SenderReport.parse(data, count, body, body_end)
        elif pt == PT_RR:
            packet = ReceiverReport.parse(data, count, body, body_end)
        elif pt == PT_BYE:
            packet = Bye.parse(data, count, body, body_end)
        elif pt == PT_RTPFB and count == Nack.FMT:
            packet = Nack.parse(data, body, body_end)
        elif pt == PT_PSFB and count == Pli.FMT:
            if body_end - body < 8:
                raise RtpError("RTCP PLI shorter than its SSRCs")
            sender, media = struct.unpack_from("!II", data, body)
            packet = Pli(sender, media)
        else:
            remb = Remb.parse(data, body, body_end) if pt == PT_PSFB and count == 15 else None
            packet = remb or RtcpUnknown(pt, count, bytes(data[body:body_end]))
        out.append(packet)
        pos = end
    return out
