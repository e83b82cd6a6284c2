"""relay.rtc_stream against a real hub fed by a real ffmpeg RTMP publish.

The viewers here are in-memory sinks (what a WebRTC session's ``send_rtp`` gets, before
SRTP): the packets are checked as a receiver would (sequence, marker, keyframe first,
reassembled H.264 decodes with PyAV, Opus decodes), plus serialize-once, NACK
retransmission, the bounded history and a viewer that drops everything.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import av
import pytest

from media.rtp import Nack, RtpPacket, SenderReport, parse_compound
from relay.http import REGISTRY
from relay.hub import StreamHub
from relay.rtc_stream import (
    AUDIO_PT,
    BFRAMES_REFUSAL,
    VIDEO_PT,
    NegotiatedTrack,
    PacketHistory,
    RtpStreams,
    unplayable,
)
from tests.mediautil import make_clip, start_publisher, stop, wait_for


class MemSink:
    """A viewer's transport in memory (``send_rtp`` as the session offers it)."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, packet: bytes) -> bool:
        if self.accept:
            self.rtp.append(packet)
        return self.accept

    def send_rtp_batch(self, packets: list[bytes]) -> int:
        if self.accept:
            self.rtp.extend(packets)
        return len(packets) if self.accept else 0

    def send_rtcp(self, packet: bytes) -> bool:
        self.rtcp.append(packet)
        return True

    def of(self, pt: int) -> list[RtpPacket]:
        return [p for p in map(RtpPacket.parse, self.rtp) if p.payload_type == pt]


def depacketize(packets: list[RtpPacket]) -> list[list[bytes]]:
    """Access units (lists of NAL units) from H.264 RTP packets in order."""
    units: list[list[bytes]] = []
    current: list[bytes] = []
    fu: bytearray | None = None
    for p in packets:
        data = p.payload
        t = data[0] & 0x1F
        if t == 24:
            pos = 1
            while pos < len(data):
                n = int.from_bytes(data[pos : pos + 2], "big")
                current.append(data[pos + 2 : pos + 2 + n])
                pos += 2 + n
        elif t == 28:
            if data[1] & 0x80:
                fu = bytearray([(data[0] & 0xE0) | (data[1] & 0x1F)])
            assert fu is not None
            fu += data[2:]
            if data[1] & 0x40:
                current.append(bytes(fu))
                fu = None
        else:
            current.append(data)
        if p.marker:
            units.append(current)
            current = []
    return units


def decode_h264(units: list[list[bytes]]) -> int:
    codec = av.CodecContext.create("h264", "r")
    annexb = b"".join(b"\x00\x00\x00\x01" + n for unit in units for n in unit)
    n = 0
    for packet in codec.parse(annexb) + codec.parse(None):
        n += len(codec.decode(packet))
    return n + len(codec.decode(None))


VIDEO = NegotiatedTrack(VIDEO_PT, 0x1111)
AUDIO = NegotiatedTrack(AUDIO_PT, 0x2222)


@pytest.fixture
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_nob.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "0"])


async def _live_hub(server: Any, name: str, clip: Path) -> tuple[StreamHub, Any]:
    proc = await start_publisher(server.push_url(name), clip, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", name)) is not None and h.gop_valid, 20)
    hub = registry.get("live", name)
    assert hub is not None
    return hub, proc


async def test_viewer_starts_at_the_keyframe_and_decodes(server_factory, clip) -> None:
    server = await server_factory()
    hub, proc = await _live_hub(server, "s1", clip)
    streams = RtpStreams()
    try:
        assert unplayable(hub) is None
        sink = MemSink()
        viewer = streams.join(hub, sink, VIDEO, AUDIO, "test")
        assert hub.stats()["viewers"].get("whep") == 1
        await wait_for(lambda: len(sink.of(VIDEO_PT)) > 300 and len(sink.of(AUDIO_PT)) > 50, 20)
        video = sink.of(VIDEO_PT)
        assert {p.ssrc for p in video} == {VIDEO.ssrc}
        seqs = [p.sequence_number for p in video]
        assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        units = depacketize(video)
        first_types = [n[0] & 0x1F for n in units[0]]
        assert first_types[:2] == [7, 8] and 5 in first_types  # SPS, PPS, then the IDR
        ts = [p.timestamp for p in video if p.marker]
        assert all(0 < (b - a) & 0xFFFFFFFF < 90_000 for a, b in itertools.pairwise(ts))
        assert decode_h264(units) >= len(units) - 1  # every access unit decodes
        opus = av.CodecContext.create("opus", "r")
        decoded = sum(len(opus.decode(av.Packet(p.payload))) for p in sink.of(AUDIO_PT))
        assert decoded >= 50
        assert {p.ssrc for p in sink.of(AUDIO_PT)} == {AUDIO.ssrc}
        # sender reports for both tracks, on the stream's clock
        await wait_for(lambda: len(sink.rtcp) >= 1, 5)
        srs = [p for p in parse_compound(sink.rtcp[0]) if isinstance(p, SenderReport)]
        assert {s.ssrc for s in srs} == {VIDEO.ssrc, AUDIO.ssrc}
        assert viewer.stats()["first_packet_ms"] is not None
    finally:
        streams.close()
        await stop(proc)
    assert hub.stats()["viewers"].get("whep") is None


async def test_packets_are_built_once_and_nack_resends(server_factory, clip) -> None:
    server = await server_factory()
    hub, proc = await _live_hub(server, "s2", clip)
    streams = RtpStreams()
    try:
        stream = streams.stream(hub)
        ssrc = stream.video_seq.ssrc
        own = NegotiatedTrack(VIDEO_PT, ssrc)  # both viewers took the stream's own SSRC
        a, b = MemSink(), MemSink()
        va = streams.join(hub, a, own, None, "a")
        streams.join(hub, b, own, None, "b")
        assert va.stream is stream
        await wait_for(lambda: len(a.rtp) > 200 and len(b.rtp) > 200, 20)
        common = {id(p) for p in a.rtp} & {id(p) for p in b.rtp}
        assert len(common) > 100  # the very same bytes objects: serialized once
        # NACK: ask again for three sent packets; they come back byte for byte
        sent = [RtpPacket.parse(p) for p in a.rtp[-50:-40]]
        lost = tuple(p.sequence_number for p in sent[:3])
        before = len(a.rtp)
        va.on_rtcp(bytes(Nack(1, ssrc, lost)))
        again = [RtpPacket.parse(p) for p in a.rtp[before:]]
        resent = [p for p in again if p.sequence_number in lost]
        assert sorted(p.sequence_number for p in resent) == sorted(lost)
        assert all(bytes(p) in a.rtp[:before] for p in resent)
        assert va.retransmits == 3
        # garbage RTCP is counted, not raised
        va.on_rtcp(b"\x81\xcd\x00\x09garbage")
        assert va.rtcp_errors == 1
    finally:
        streams.close()
        await stop(proc)


async def test_a_dropping_viewer_does_not_disturb_others(server_factory, clip) -> None:
    server = await server_factory()
    hub, proc = await _live_hub(server, "s3", clip)
    streams = RtpStreams(history_packets=64, history_bytes=40_000)
    try:
        bad, good = MemSink(accept=False), MemSink()
        vbad = streams.join(hub, bad, VIDEO, AUDIO, "bad")
        streams.join(hub, good, VIDEO, AUDIO, "good")
        await wait_for(lambda: len(good.of(VIDEO_PT)) > 300, 20)
        assert decode_h264(depacketize(good.of(VIDEO_PT))) > 20
        assert vbad.send_drops > 300 and not bad.rtp
        stream = vbad.stream
        assert len(stream.video_history) <= 64 and stream.video_history.nbytes <= 40_000
        # a flood of NACKs is bounded per viewer
        seqs = tuple(RtpPacket.parse(p).sequence_number for p in good.rtp[-40:])
        vgood = next(v for v in stream.viewers if v.sink is good)
        for _ in range(50):
            vgood.on_rtcp(bytes(Nack(1, VIDEO.ssrc, seqs)))
        assert vgood.retransmits <= 400 + 40 and vgood.nack_refused > 0
    finally:
        streams.close()
        await stop(proc)


async def test_bframes_are_refused(server_factory, tmp_path) -> None:
    server = await server_factory()
    clip = make_clip(tmp_path / "b.flv", 3.0, fps=25, gop=25)  # x264 main, -bf 2
    hub, proc = await _live_hub(server, "bf", clip)
    try:
        await wait_for(lambda: len(hub.gop) > 5, 10)
        assert unplayable(hub) == BFRAMES_REFUSAL
    finally:
        await stop(proc)


def test_history_is_bounded_and_finds_wrapping_seqs() -> None:
    h = PacketHistory(max_packets=4, max_bytes=1000)
    for i in range(10):
        h.append((65530 + i) & 0xFFFF, bytes([i]) * 10)
    assert len(h) == 4 and h.base == 6 and h.end == 10
    assert h.index_of_seq((65530 + 9) & 0xFFFF) == 9
    assert h.get(9) == bytes([9]) * 10
    assert h.index_of_seq(65530) is None and h.get(5) is None
    h2 = PacketHistory(max_packets=100, max_bytes=25)
    for i in range(5):
        h2.append(i, bytes(10))
    assert len(h2) == 2 and h2.nbytes == 20


async def test_bframes_appearing_mid_stream_close_the_viewers() -> None:
    """Pictures out of presentation order after the viewer started: it is closed with the
    reason (browsers' WebRTC receivers do not reorder)."""
    from dataclasses import replace

    from media.frame import Kind
    from relay.config import RelayConfig
    from relay.hub import PublisherInfo, StreamRegistry

    def video(frame_type: int, cts: int, nal: bytes) -> bytes:
        return bytes([frame_type << 4 | 7, 1]) + cts.to_bytes(3, "big") + _avcc(nal)

    def _avcc(nal: bytes) -> bytes:
        return len(nal).to_bytes(4, "big") + nal

    record = bytes([1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67SPS" + b"\x01\x00\x03\x68PP"
    reg = StreamRegistry(replace(RelayConfig(), write_coalesce_ms=0), linger_seconds=0.05)
    pub = reg.publish("live", "b", PublisherInfo("test"))
    pub.push(Kind.VIDEO, 0, b"\x17\x00\x00\x00\x00" + record)
    pub.push(Kind.VIDEO, 0, video(1, 0, b"\x65" + bytes(40)))
    hub = reg.get("live", "b")
    assert hub is not None and unplayable(hub) is None
    streams = RtpStreams()
    sink = MemSink()
    viewer = streams.join(hub, sink, VIDEO, None, "v")
    pub.push(Kind.VIDEO, 40, video(2, 40, b"\x41" + bytes(40)))  # pts 80
    assert not viewer.closed and len(sink.of(VIDEO_PT)) >= 2
    pub.push(Kind.VIDEO, 80, video(2, 0, b"\x01" + bytes(40)))  # pts 80 again: fine
    assert not viewer.closed
    pub.push(Kind.VIDEO, 120, video(2, -60 & 0xFFFFFF, b"\x01" + bytes(40)))  # pts 60 < 80
    assert viewer.closed and viewer.close_reason == BFRAMES_REFUSAL
    assert hub.stats()["viewers"].get("whep") is None and not streams.streams


async def test_a_viewer_without_video_gets_audio_only(server_factory, clip) -> None:
    """A viewer whose offer had no video (audio-only client) of a video stream: Opus only,
    from the same keyframe point as the others."""
    server = await server_factory()
    hub, proc = await _live_hub(server, "ao", clip)
    streams = RtpStreams()
    try:
        sink = MemSink()
        viewer = streams.join(hub, sink, None, AUDIO, "ao")
        await wait_for(lambda: len(sink.of(AUDIO_PT)) > 50, 20)
        assert not sink.of(VIDEO_PT) and viewer.cursor is None and viewer.started
    finally:
        streams.close()
        await stop(proc)
