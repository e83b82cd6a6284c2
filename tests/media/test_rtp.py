"""media.rtp: RTP header, RTCP (SR, RR, BYE, NACK, PLI, REMB), H.264 packetizer.

Parsers are fed garbage (hypothesis) and must raise only RtpError; wire structures
round-trip; our bytes are read back by aiortc's own RTP/RTCP parsers (an implementation
we did not write); the packetizer's output, reassembled, decodes with PyAV.
"""

from __future__ import annotations

import struct
from pathlib import Path

import av
import pytest
from aiortc import rtp as aiortc_rtp
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import AvcDecoderConfig, split_length_prefixed
from media.flv import FlvDemuxer, FlvTag, parse_video_header
from media.rtp import (
    Bye,
    H264Packetizer,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpUnknown,
    RtpError,
    RtpPacket,
    RtpSequencer,
    SenderReport,
    build_header,
    is_rtcp,
    ntp_time,
    parse_compound,
    rewrite,
    seq_diff,
)
from media.rtp.packet import seq_newer
from tests.mediautil import make_clip

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)


# ----------------------------------------------------------------------------- RTP


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    ext = draw(
        st.none() | st.tuples(u16, st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)))
    )
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=64)),
        marker=draw(st.booleans()),
        csrc=tuple(draw(st.lists(u32, max_size=15))),
        extension=ext,
        padding=draw(st.integers(0, 20)),
    )


@given(rtp_packets())
def test_rtp_round_trip(p: RtpPacket) -> None:
    data = bytes(p)
    assert RtpPacket.parse(data) == p
    theirs = aiortc_rtp.RtpPacket.parse(data)
    assert (theirs.payload_type, theirs.sequence_number, theirs.timestamp, theirs.ssrc) == (
        p.payload_type, p.sequence_number, p.timestamp, p.ssrc,
    )  # fmt: skip
    assert theirs.marker == int(p.marker) and theirs.payload == p.payload
    assert tuple(theirs.csrc) == p.csrc


@given(st.binary(max_size=80))
def test_rtp_parse_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        RtpPacket.parse(data)
    except RtpError:
        pass


@given(rtp_packets(), st.binary(max_size=5))
def test_rtp_trailing_bytes_become_payload(p: RtpPacket, extra: bytes) -> None:
    if p.padding:
        return  # padding sits at the very end: trailing bytes would be read as it
    assert RtpPacket.parse(bytes(p) + extra).payload == p.payload + extra


def test_rtp_truncations_are_refused() -> None:
    data = bytes(RtpPacket(96, 1, 2, 3, b"xy", csrc=(7, 8), extension=(0xBEDE, bytes(8))))
    for n in range(0, len(data) - 2):  # every cut inside the header
        with pytest.raises(RtpError):
            RtpPacket.parse(data[:n])
    bad_pad = bytearray(bytes(RtpPacket(96, 1, 2, 3, b"ab")))
    bad_pad[0] |= 0x20
    bad_pad[-1] = 200
    with pytest.raises(RtpError, match="padding"):
        RtpPacket.parse(bytes(bad_pad))
    with pytest.raises(RtpError, match="version"):
        RtpPacket.parse(b"\x40" + bytes(11))


@given(st.integers(0, 127), u16, u32, u32, st.booleans(), st.integers(0, 127), u32)
def test_header_build_and_rewrite(pt, seq, ts, ssrc, marker, pt2, ssrc2) -> None:
    pkt = build_header(pt, seq, ts, ssrc, marker) + b"payload"
    p = RtpPacket.parse(pkt)
    assert (p.payload_type, p.sequence_number, p.timestamp, p.ssrc, p.marker) == (
        pt, seq, ts, ssrc, marker,
    )  # fmt: skip
    assert rewrite(pkt) is pkt and rewrite(pkt, pt, ssrc) is pkt
    q = RtpPacket.parse(rewrite(pkt, pt2, ssrc2))
    assert (q.payload_type, q.ssrc, q.marker, q.sequence_number, q.payload) == (
        pt2, ssrc2, marker, seq, b"payload",
    )  # fmt: skip
    assert not is_rtcp(pkt) or 64 <= pt <= 95  # RFC 5761: those PTs collide with RTCP


@given(u16, st.integers(-32768, 32767))
def test_seq_arithmetic_wraps(a: int, d: int) -> None:
    b = (a + d) & 0xFFFF
    assert seq_diff(b, a) == d
    assert seq_newer(b, a) == (d > 0)


# ----------------------------------------------------------------------------- RTCP

blocks = st.builds(
    ReportBlock, u32, st.integers(0, 255), st.integers(-(2**23), 2**23 - 1), u32, u32, u32, u32
)
rtcp_packets = st.one_of(
    st.builds(
        SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32,
        st.lists(blocks, max_size=3).map(tuple),
    ),
    st.builds(ReceiverReport, u32, st.lists(blocks, max_size=3).map(tuple)),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple)),
    st.builds(Pli, u32, u32),
    st.builds(Remb, u32, st.integers(0, (2**18 - 1) << 20), st.lists(u32, max_size=3).map(tuple)),
    st.builds(
        RtcpUnknown, st.sampled_from([202, 204, 207]), st.integers(0, 31),
        st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)),
    ),
)  # fmt: skip


def _remb_exact(p: object) -> object:
    """REMB keeps 18 significant bits: compare what survives the encoding."""
    if isinstance(p, Remb):
        return Remb.parse(bytes(p), 4, len(bytes(p)))
    return p


@given(st.lists(rtcp_packets, min_size=1, max_size=4))
def test_rtcp_compound_round_trip(packets: list) -> None:
    data = b"".join(bytes(p) for p in packets)
    assert parse_compound(data) == [_remb_exact(p) for p in packets]
    assert is_rtcp(data)


@given(u32, u32, st.sets(u16, min_size=1, max_size=60))
def test_nack_round_trip_covers_exactly_the_lost(sender: int, media: int, lost: set[int]) -> None:
    data = bytes(Nack(sender, media, tuple(lost)))
    (parsed,) = parse_compound(data)
    assert isinstance(parsed, Nack)
    assert set(parsed.lost) == lost and (parsed.sender_ssrc, parsed.media_ssrc) == (sender, media)
    theirs = aiortc_rtp.RtcpPacket.parse(data)[0]
    assert set(theirs.lost) == lost


def test_nack_wraps_around_zero() -> None:
    (parsed,) = parse_compound(bytes(Nack(1, 2, (65534, 65535, 0, 3))))
    assert isinstance(parsed, Nack)
    assert sorted(parsed.lost) == [0, 3, 65534, 65535]


def test_remb_bitrate_and_ssrcs_match_aiortc() -> None:
    data = bytes(Remb(5, 2_500_000, (11, 12)))
    (theirs,) = aiortc_rtp.RtcpPacket.parse(data)
    assert theirs.fmt == 15
    (ours,) = parse_compound(data)
    assert isinstance(ours, Remb) and ours.ssrcs == (11, 12)
    assert abs(ours.bitrate - 2_500_000) / 2_500_000 < 1e-4


def test_aiortc_bytes_parse() -> None:
    """Reports and feedback built by aiortc (a peer's bytes) parse here."""
    info = aiortc_rtp.RtcpSenderInfo(
        ntp_timestamp=ntp_time(1e9), rtp_timestamp=3, packet_count=4, octet_count=5
    )
    block = aiortc_rtp.RtcpReceiverInfo(
        ssrc=1, fraction_lost=2, packets_lost=3, highest_sequence=4, jitter=5, lsr=6, dlsr=7
    )
    sr = aiortc_rtp.RtcpSrPacket(ssrc=9, sender_info=info, reports=[block])
    pli = aiortc_rtp.RtcpPsfbPacket(fmt=1, ssrc=1, media_ssrc=2)
    nack = aiortc_rtp.RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2)
    nack.lost = [10, 12, 40]
    got = parse_compound(bytes(sr) + bytes(pli) + bytes(nack))
    assert got[0] == SenderReport(9, ntp_time(1e9), 3, 4, 5, (ReportBlock(1, 2, 3, 4, 5, 6, 7),))
    assert got[1] == Pli(1, 2)
    assert isinstance(got[2], Nack) and sorted(got[2].lost) == [10, 12, 40]


@given(st.binary(max_size=100))
@settings(max_examples=400)
def test_rtcp_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        parse_compound(data)
    except RtpError:
        pass


@given(st.binary(max_size=60))
def test_rtcp_garbage_behind_a_valid_header(body: bytes) -> None:
    """Valid common headers (every type and count) over random bodies."""
    for pt in (200, 201, 203, 205, 206):
        for count in (0, 1, 3, 15, 31):
            words = len(body) // 4
            data = struct.pack("!BBH", 0x80 | count, pt, words) + body[: 4 * words]
            try:
                parse_compound(data)
            except RtpError:
                pass


def test_rtcp_truncation_is_refused() -> None:
    data = bytes(SenderReport(1, 2, 3, 4, 5, (ReportBlock(1, 2, 3, 4, 5, 6, 7),)))
    for n in range(len(data)):
        with pytest.raises(RtpError):
            parse_compound(data[:n])


# ----------------------------------------------------------------------------- H.264


def _depacketize(payloads: list[bytes]) -> list[bytes]:
    """NAL units back from single / STAP-A / FU-A payloads (the receiver's side)."""
    nals: list[bytes] = []
    fu: bytearray | None = None
    for p in payloads:
        t = p[0] & 0x1F
        if t == 24:
            pos = 1
            while pos < len(p):
                n = int.from_bytes(p[pos : pos + 2], "big")
                nals.append(p[pos + 2 : pos + 2 + n])
                pos += 2 + n
            assert pos == len(p)
        elif t == 28:
            start, end = p[1] & 0x80, p[1] & 0x40
            if start:
                assert fu is None
                fu = bytearray([(p[0] & 0xE0) | (p[1] & 0x1F)])
            assert fu is not None
            fu += p[2:]
            if end:
                nals.append(bytes(fu))
                fu = None
        else:
            nals.append(p)
    assert fu is None
    return nals


def _avcc(*nals: bytes) -> bytes:
    return b"".join(len(n).to_bytes(4, "big") + n for n in nals)


nal_units = st.builds(
    lambda t, nri, body: bytes([(nri << 5) | t]) + body,
    st.sampled_from([1, 5, 6]), st.integers(0, 3), st.binary(min_size=0, max_size=3000),
)  # fmt: skip


@given(st.lists(nal_units, min_size=1, max_size=12), st.integers(100, 1400))
def test_packetizer_payloads_fit_and_reassemble(nals: list[bytes], mtu: int) -> None:
    pk = H264Packetizer(mtu)
    payloads = pk.payloads(_avcc(*nals))
    assert all(len(p) <= mtu for p in payloads)
    assert _depacketize(payloads) == nals


def test_packetizer_sends_parameter_sets_before_idr_only() -> None:
    record = bytes([1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1, 0, 4]) + b"\x67SPS" + b"\x01\x00\x03\x68PP"
    pk = H264Packetizer()
    pk.set_config(record)
    idr = b"\x65" + bytes(50)
    p_slice = b"\x41" + bytes(50)
    aud = b"\x09\xf0"
    assert _depacketize(pk.payloads(_avcc(aud, idr))) == [b"\x67SPS", b"\x68PP", idr]
    assert _depacketize(pk.payloads(_avcc(aud, p_slice))) == [p_slice]
    own = b"\x67own"
    assert _depacketize(pk.payloads(_avcc(own, b"\x68pp", idr))) == [own, b"\x68pp", idr]
    # small parameter sets and the IDR share one STAP-A
    assert len(pk.payloads(_avcc(idr))) == 1 and pk.payloads(_avcc(idr))[0][0] & 0x1F == 24


def test_sequencer_marks_the_last_packet_and_wraps() -> None:
    seq = RtpSequencer(102, 0xDEADBEEF, first_seq=65534)
    out = seq.packetize([b"a", b"b", b"c"], 90_000)
    parsed = [RtpPacket.parse(p) for _, p in out]
    assert [s for s, _ in out] == [65534, 65535, 0]
    assert [p.sequence_number for p in parsed] == [65534, 65535, 0]
    assert [p.marker for p in parsed] == [False, False, True]
    assert {(p.timestamp, p.ssrc, p.payload_type) for p in parsed} == {(90_000, 0xDEADBEEF, 102)}


def test_packetized_clip_decodes(tmp_path: Path) -> None:
    """A real x264 clip (large IDRs: FU-A) through the packetizer and back decodes whole."""
    clip = make_clip(
        tmp_path / "c.flv", 2.0, fps=25, gop=25, size="640x360", audio=False, extra=["-bf", "0"]
    )
    pk = H264Packetizer()
    annexb = bytearray()
    frames = 0
    kinds: set[int] = set()
    for item in FlvDemuxer().feed(clip.read_bytes()):
        if not isinstance(item, FlvTag) or item.tag_type != 9:
            continue
        info = parse_video_header(item.body)
        data = bytes(item.body[info.data_offset :])
        if info.sequence_header:
            cfg = pk.set_config(data)
            assert isinstance(cfg, AvcDecoderConfig)
            continue
        if info.sequence_end:
            continue
        frames += 1
        payloads = pk.payloads(data)
        kinds |= {p[0] & 0x1F for p in payloads}
        nals = _depacketize(payloads)
        sent = [n for n in split_length_prefixed(data) if n[0] & 0x1F != 9]
        assert nals == (list(pk.parameter_sets) + sent if info.keyframe else sent)
        annexb += b"".join(b"\x00\x00\x00\x01" + n for n in nals)
    assert {28} <= kinds  # an IDR of 640x360 needs fragments
    codec = av.CodecContext.create("h264", "r")
    decoded = 0
    for packet in codec.parse(bytes(annexb)) + codec.parse(None):
        decoded += len(codec.decode(packet))
    decoded += len(codec.decode(None))
    assert decoded == frames > 40
