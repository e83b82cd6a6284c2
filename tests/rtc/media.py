"""Media for transport tests: H.264 access units from libx264 and RFC 6184 payloads, and
a helper that sends them (plus Opus) through a session as a WHEP server would."""

from __future__ import annotations

import fractions

import av

from core.rtc import RtcSession
from tests.rtc.peer import rtp_packet

OPUS_SILENCE = b"\xf8\xff\xfe"
"""One 20 ms Opus frame (CELT, silence)."""


def h264_access_units(count: int, size: tuple[int, int] = (160, 120)) -> list[bytes]:
    """``count`` Annex-B access units from libx264 (baseline, SPS/PPS in band, IDR first)."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = size
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, 30)
    codec.framerate = fractions.Fraction(30, 1)
    codec.options = {"profile": "baseline", "tune": "zerolatency", "g": "15", "bf": "0"}
    units: list[bytes] = []
    for i in range(count):
        frame = av.VideoFrame(size[0], size[1], "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([(i * 7) % 256]) * plane.buffer_size)
        frame.pts = i
        units.extend(bytes(p) for p in codec.encode(frame))
    units.extend(bytes(p) for p in codec.encode(None))
    return units


def _nal_units(annexb: bytes) -> list[bytes]:
    # A NAL unit ends with its RBSP stop bit, so trailing zeros belong to the next start code.
    return [c.rstrip(b"\x00") for c in annexb.split(b"\x00\x00\x01") if c.rstrip(b"\x00")]


def h264_payloads(annexb: bytes, mtu: int = 1100) -> list[bytes]:
    """RFC 6184 payloads: single NAL units, FU-A for larger ones."""
    payloads: list[bytes] = []
    for nal in _nal_units(annexb):
        if len(nal) <= mtu:
            payloads.append(nal)
            continue
        header, body = nal[0], nal[1:]
        indicator = (header & 0xE0) | 28
        pieces = [body[i : i + mtu] for i in range(0, len(body), mtu)]
        for j, piece in enumerate(pieces):
            fu = (header & 0x1F) | (0x80 if j == 0 else 0) | (0x40 if j == len(pieces) - 1 else 0)
            payloads.append(bytes([indicator, fu]) + piece)
    return payloads


def send_h264_and_opus(
    session: RtcSession, units: list[bytes], *, start_seq: int = 0, batch: bool = False
) -> int:
    """Packetize ``units`` (30 fps) and one Opus frame per 20 ms; returns video packets
    sent. ``batch``: one ``send_rtp_batch`` per frame, as a WHEP fan-out sends."""
    video, audio = session.video, session.audio
    assert video is not None
    seq = start_seq
    for i, unit in enumerate(units):
        payloads = h264_payloads(unit)
        frame: list[bytes] = []
        for j, payload in enumerate(payloads):
            marker = j == len(payloads) - 1
            frame.append(
                rtp_packet(video.payload_type, seq, i * 3000, video.local_ssrc, payload, marker)
            )
            seq += 1
        if batch:
            assert session.send_rtp_batch(frame) == len(frame)
        else:
            assert all(session.send_rtp(packet) for packet in frame)
    if audio is not None:
        for i in range(audio_packets(units)):
            packet = rtp_packet(audio.payload_type, i, i * 960, audio.local_ssrc, OPUS_SILENCE)
            assert session.send_rtp(packet)
    return seq - start_seq


def audio_packets(units: list[bytes]) -> int:
    """Opus packets :func:`send_h264_and_opus` sends along ``units`` (20 ms each)."""
    return len(units) * 3 // 2
