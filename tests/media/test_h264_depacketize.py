"""media.rtp.h264_depacketize: RTP/H.264 (RFC 6184) back to access units and FLV tags.

Real H.264 from libx264 (PyAV) of two profiles (Baseline as browsers send, High as OBS
sends while advertising 42e01f), packetized here by a small RFC 6184 packetizer (single
NAL / STAP-A / FU-A), depacketized, written as FLV AVC tags and decoded again by FFmpeg:
every picture decodes. Loss, reordering, duplicates, wrap-around and garbage are fed too.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterable
from fractions import Fraction

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import flv
from media.codecs import AvcDecoderConfig, split_annexb, split_length_prefixed
from media.rtp.h264_depacketize import (
    AccessUnit,
    AvcTagWriter,
    H264Depacketizer,
    parse_rtp,
)
from media.rtp.h264_packetize import H264Packetizer, RtpSequencer

# ---------------------------------------------------------------------- helpers


def rtp(seq: int, ts: int, marker: bool, payload: bytes, pt: int = 102, ssrc: int = 1234) -> bytes:
    return (
        bytes((0x80, (0x80 if marker else 0) | pt))
        + (seq & 0xFFFF).to_bytes(2, "big")
        + (ts & 0xFFFFFFFF).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def packetize(nalus: Iterable[bytes], mtu: int, stap: bool = True) -> list[bytes]:
    """RFC 6184 packetization-mode 1 payloads of one access unit (test side)."""
    out: list[bytes] = []
    pending: list[bytes] = []

    def flush_stap() -> None:
        if len(pending) == 1:
            out.append(pending[0])
        elif pending:
            nri = max(n[0] & 0x60 for n in pending)
            out.append(
                bytes((nri | 24,)) + b"".join(len(n).to_bytes(2, "big") + n for n in pending)
            )
        pending.clear()

    for nal in nalus:
        if len(nal) <= mtu:
            size = 1 + sum(2 + len(n) for n in pending) + 2 + len(nal)
            if stap and size <= mtu:
                pending.append(nal)
                continue
            flush_stap()
            if stap and len(nal) + 3 <= mtu:
                pending.append(nal)
            else:
                out.append(nal)
            continue
        flush_stap()
        head, body = nal[0], nal[1:]
        chunk = max(1, mtu - 2)
        for i in range(0, len(body), chunk):
            s = 0x80 if i == 0 else 0
            e = 0x40 if i + chunk >= len(body) else 0
            out.append(bytes(((head & 0xE0) | 28, s | e | (head & 0x1F))) + body[i : i + chunk])
    flush_stap()
    return out


def to_packets(
    units: list[tuple[int, list[bytes]]], mtu: int = 1200, seq0: int = 1000, stap: bool = True
) -> list[bytes]:
    packets: list[bytes] = []
    seq = seq0
    for ts, nalus in units:
        payloads = packetize(nalus, mtu, stap)
        for i, p in enumerate(payloads):
            packets.append(rtp(seq, ts, i == len(payloads) - 1, p))
            seq += 1
    return packets


@functools.cache
def encoded(
    profile: str, frames: int = 60, gop: int = 15
) -> tuple[tuple[int, tuple[bytes, ...]], ...]:
    """(pts in 90 kHz, NAL units) per picture of a real libx264 encode, SPS/PPS in band."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = 160, 96
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.options = {
        "profile": profile,
        "bf": "0",
        "tune": "zerolatency",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
    }
    out: list[tuple[int, tuple[bytes, ...]]] = []
    for i in range(frames):
        frame = av.VideoFrame(160, 96, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes((i * 7 + k) % 251 for k in range(plane.buffer_size)))
        frame.pts = i
        for pkt in ctx.encode(frame):
            out.append((int(pkt.pts) * 3000, tuple(split_annexb(bytes(pkt)))))
    for pkt in ctx.encode(None):
        out.append((int(pkt.pts) * 3000, tuple(split_annexb(bytes(pkt)))))
    return tuple(out)


def units_of(profile: str) -> list[tuple[int, list[bytes]]]:
    return [(ts, list(n)) for ts, n in encoded(profile)]


def run(dep: H264Depacketizer, packets: Iterable[bytes]) -> list[AccessUnit]:
    out: list[AccessUnit] = []
    for p in packets:
        out += dep.receive(p)
    return out


def decode_tags(units: list[AccessUnit]) -> tuple[int, AvcDecoderConfig]:
    """Write FLV tags, decode every frame tag with FFmpeg; returns (pictures, config)."""
    writer = AvcTagWriter()
    tags = [t for u in units for t in writer.write(u)]
    assert tags[0].header and tags[1].keyframe
    record = tags[0].payload[5:]
    config = AvcDecoderConfig.parse(record)
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = record
    pictures = 0
    last = -1
    for tag in tags[1:]:
        info = flv.parse_video_header(tag.payload)
        assert not info.sequence_header
        assert tag.dts > last
        last = tag.dts
        body = tag.payload[5:]
        for nal in split_length_prefixed(body):
            assert nal[0] & 0x1F not in (7, 8, 9)
        pictures += len(ctx.decode(av.Packet(body)))
    pictures += len(ctx.decode(None))
    return pictures, config


# ---------------------------------------------------------------------- tests


@pytest.mark.parametrize(("profile", "idc"), [("baseline", 66), ("high", 100)])
@pytest.mark.parametrize("mtu", [1200, 300])
def test_real_encode_round_trip_decodes_every_picture(profile: str, idc: int, mtu: int) -> None:
    units = units_of(profile)
    packets = to_packets(units, mtu=mtu)
    dep = H264Depacketizer()
    got = run(dep, packets) + dep.flush()
    assert [u.nalus for u in got] == [tuple(n) for _, n in units]
    assert [u.timestamp for u in got] == [ts for ts, _ in units]
    assert [u.keyframe for u in got] == [any(x[0] & 0x1F == 5 for x in n) for _, n in units]
    assert dep.stats.lost == dep.stats.malformed == dep.stats.dropped_units == 0
    pictures, config = decode_tags(got)
    assert pictures == len(units)
    assert config.profile_idc == idc


def test_reordered_within_window_is_put_back() -> None:
    units = units_of("high")
    packets = to_packets(units, mtu=200)
    rng = random.Random(7)
    shuffled: list[bytes] = packets[:1]  # the first packet to arrive starts the numbering
    for i in range(1, len(packets), 8):  # every group of 8 arrives in random order
        group = packets[i : i + 8]
        rng.shuffle(group)
        shuffled += group
    dep = H264Depacketizer(reorder_window=16)
    got = run(dep, shuffled) + dep.flush()
    assert [u.nalus for u in got] == [tuple(n) for _, n in units]
    assert dep.stats.lost == 0


def test_duplicates_are_ignored() -> None:
    units = units_of("baseline")[:20]
    packets = to_packets(units, mtu=300)
    doubled = [p for p in packets for _ in range(2)]
    dep = H264Depacketizer()
    got = run(dep, doubled) + dep.flush()
    assert [u.nalus for u in got] == [tuple(n) for _, n in units]
    assert dep.stats.duplicates == len(packets)


def test_loss_drops_until_the_next_idr() -> None:
    units = units_of("high")  # keyframes every 15 pictures
    packets = to_packets(units, mtu=300)
    seqs_of_unit: list[list[int]] = []
    seq = 0
    for _, nalus in units:
        n = len(packetize(nalus, 300))
        seqs_of_unit.append(list(range(seq, seq + n)))
        seq += n
    victim = 20  # a P-frame in the second GOP (15..29)
    lost = set(seqs_of_unit[victim][-1:])  # its last fragment (with the marker)
    dep = H264Depacketizer(reorder_window=4)
    got = run(dep, (p for i, p in enumerate(packets) if i not in lost)) + dep.flush()
    expect = [tuple(n) for i, (_, n) in enumerate(units) if not 20 <= i < 30]
    assert [u.nalus for u in got] == expect
    assert dep.stats.lost == 1
    assert got[20].keyframe
    pictures, _ = decode_tags(got)
    assert pictures == len(expect)


def test_lost_fu_start_and_waiting_flag() -> None:
    units = units_of("baseline")[:16]
    packets = to_packets(units, mtu=100)
    dep = H264Depacketizer(reorder_window=2)
    assert dep.needs_keyframe
    got = run(dep, packets[:1])  # the first packet alone: nothing complete yet
    assert got == []
    # drop the second packet (a fragment of the first IDR): the IDR is damaged
    got = run(dep, packets[2:-1])
    assert got == [] and dep.needs_keyframe
    assert dep.stats.dropped_units == 15 and dep.stats.lost == 1
    got = run(dep, packets[-1:]) + dep.flush()  # the next IDR (picture 15) ends the wait
    assert [u.nalus for u in got] == [tuple(units[15][1])] and got[0].keyframe
    assert not dep.needs_keyframe


def test_sequence_and_timestamp_wrap() -> None:
    units = [(0xFFFFFFFF - 3000 * 5 + 3000 * i, n) for i, (_, n) in enumerate(units_of("baseline"))]
    packets = to_packets(units, mtu=300, seq0=0xFFFF - 30)
    dep = H264Depacketizer()
    got = run(dep, packets) + dep.flush()
    assert len(got) == len(units)
    steps = {b.timestamp - a.timestamp for a, b in itertools.pairwise(got)}
    assert steps == {3000}
    writer = AvcTagWriter()
    dts = [t.dts for u in got for t in writer.write(u) if not t.header]
    assert dts == [i * 100 // 3 for i in range(len(units))]


def test_sender_restart_resyncs() -> None:
    units = units_of("baseline")[:30]
    first = to_packets(units[:15], mtu=300, seq0=100)
    second = to_packets(units[15:], mtu=300, seq0=40000)
    dep = H264Depacketizer()
    got = run(dep, first + second) + dep.flush()
    assert len(got) == 30 and dep.stats.resyncs == 1


def test_sprop_and_sps_change_make_new_headers() -> None:
    base = units_of("baseline")
    high = units_of("high")
    units = [AccessUnit(ts, tuple(n), any(x[0] & 0x1F == 5 for x in n)) for ts, n in base[:15]]
    units += [
        AccessUnit(ts + 90000 * 10, tuple(n), any(x[0] & 0x1F == 5 for x in n))
        for ts, n in high[:15]
    ]
    writer = AvcTagWriter()
    tags = [t for u in units for t in writer.write(u)]
    headers = [t for t in tags if t.header]
    assert len(headers) == 2
    assert AvcDecoderConfig.parse(headers[0].payload[5:]).profile_idc == 66
    assert AvcDecoderConfig.parse(headers[1].payload[5:]).profile_idc == 100
    # a stream whose SPS/PPS only came in the SDP (sprop-parameter-sets)
    sps = next(n for n in base[0][1] if n[0] & 0x1F == 7)
    pps = next(n for n in base[0][1] if n[0] & 0x1F == 8)
    stripped = [
        AccessUnit(u.timestamp, tuple(n for n in u.nalus if n[0] & 0x1F not in (7, 8)), u.keyframe)
        for u in units[:15]
    ]
    writer = AvcTagWriter(sprop=(sps, pps))
    tags = [t for u in stripped for t in writer.write(u)]
    assert tags[0].header and len(tags) == 16


def test_units_before_parameter_sets_are_dropped() -> None:
    units = units_of("baseline")
    stripped = [
        AccessUnit(
            ts, tuple(x for x in n if x[0] & 0x1F not in (7, 8)), any(x[0] & 0x1F == 5 for x in n)
        )
        for ts, n in units[:15]
    ]
    writer = AvcTagWriter()
    assert [t for u in stripped for t in writer.write(u)] == []
    assert writer.dropped == 15


def test_bframes_keep_dts_monotonic_with_cts() -> None:
    nal = bytes((0x65, 0x88, 0x84))
    p = bytes((0x41, 0x9A, 0x02))
    sps = next(n for n in units_of("baseline")[0][1] if n[0] & 0x1F == 7)
    pps = next(n for n in units_of("baseline")[0][1] if n[0] & 0x1F == 8)
    writer = AvcTagWriter()
    pts = [0, 9000, 3000, 6000, 18000, 12000]
    tags = [t for i, ts in enumerate(pts) for t in writer.write(
        AccessUnit(ts, (sps, pps, nal) if i == 0 else (p,), i == 0))]  # fmt: skip
    frames = [t for t in tags if not t.header]
    dts = [t.dts for t in frames]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert [t.dts + t.cts for t in frames] == [ts // 90 for ts in pts]


def test_parse_rtp_fields() -> None:
    ext = bytes((0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0))
    pkt = bytes((0x90 | 0x22, 0x80 | 96)) + (7).to_bytes(2, "big") + (9).to_bytes(4, "big")
    pkt += (5).to_bytes(4, "big") + bytes(8) + ext + b"\x41\x01" + bytes((0, 0, 3))
    view = parse_rtp(pkt)
    assert view is not None
    assert (view.payload_type, view.marker, view.sequence, view.timestamp, view.ssrc) == (
        96, True, 7, 9, 5)  # fmt: skip
    assert view.payload == b"\x41\x01"
    assert parse_rtp(pkt[:11]) is None
    assert parse_rtp(b"\x00" * 20) is None


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=64), max_size=60))
def test_garbage_never_crashes(chunks: list[bytes]) -> None:
    dep = H264Depacketizer(reorder_window=8, max_unit_bytes=4096, max_unit_nalus=16)
    writer = AvcTagWriter()
    for c in chunks:
        for u in dep.receive(c):
            writer.write(u)
    for u in dep.flush():
        writer.write(u)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.booleans(),
                  st.binary(min_size=1, max_size=40)),
        max_size=80,
    )
)  # fmt: skip
def test_random_rtp_fields_never_crash(fields: list[tuple[int, int, bool, bytes]]) -> None:
    dep = H264Depacketizer(reorder_window=4, max_unit_bytes=512, max_unit_nalus=8)
    total = 0
    for seq, ts, marker, payload in fields:
        for u in dep.push(seq, ts, marker, payload):
            total += sum(map(len, u.nalus))
            assert len(u.nalus) <= 8 and sum(map(len, u.nalus)) <= 512
    dep.flush()
    assert dep.holding == 0


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.lists(st.binary(min_size=1, max_size=700), min_size=1, max_size=6),
        min_size=1,
        max_size=12,
    ),
    st.integers(40, 1400),
    st.integers(0, 0xFFFF),
    st.booleans(),
    st.randoms(use_true_random=False),
)
def test_packetize_depacketize_round_trip(
    bodies: list[list[bytes]], mtu: int, seq0: int, stap: bool, rng: random.Random
) -> None:
    units: list[tuple[int, list[bytes]]] = []
    for i, body in enumerate(bodies):
        nalus = [bytes(((0x65 if i == 0 and j == 0 else 0x41),)) + b for j, b in enumerate(body)]
        units.append((i * 3000, nalus))
    packets = to_packets(units, mtu=mtu, seq0=seq0, stap=stap)
    window = 8
    jittered = list(packets)
    i = 1  # the first packet to arrive starts the numbering
    while i < len(jittered) - 1:  # disjoint neighbours swapped: always within the window
        if rng.random() < 0.3:
            jittered[i], jittered[i + 1] = jittered[i + 1], jittered[i]
            i += 1
        i += 1
    dep = H264Depacketizer(reorder_window=window)
    got = run(dep, jittered) + dep.flush()
    assert [list(u.nalus) for u in got] == [n for _, n in units]
    assert dep.stats.lost == 0


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(64, 1400), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1))
def test_the_relay_packetizer_round_trips(mtu: int, seq0: int, ts0: int) -> None:
    """media.rtp.h264_packetize (WHEP's sending side) -> this depacketizer: same units."""
    packetizer = H264Packetizer(mtu)
    sequencer = RtpSequencer(102, 42, seq0)
    units = units_of("high")
    packets = [
        pkt
        for ts, nalus in units
        for _, pkt in sequencer.packetize(packetizer.pack(nalus), (ts0 + ts) & 0xFFFFFFFF)
    ]
    dep = H264Depacketizer()
    got = run(dep, packets) + dep.flush()
    assert [u.nalus for u in got] == [tuple(n) for _, n in units]
    assert [u.timestamp - got[0].timestamp for u in got] == [ts for ts, _ in units]


def test_padding_only_packets_are_ignored() -> None:
    """Browsers probe bandwidth with padding-only packets on the video SSRC: they take
    sequence numbers (no hole) and carry nothing (no damage)."""
    units = units_of("baseline")[:20]
    packets = to_packets(units, mtu=300)
    padded: list[bytes] = []
    seq = 5000
    for p in packets:
        view = parse_rtp(p)
        assert view is not None
        padded.append(rtp(seq, view.timestamp, view.marker, view.payload))
        seq += 1
        if view.marker:  # a probe after each picture, with that picture's timestamp
            probe = bytearray(rtp(seq, view.timestamp, False, bytes(3) + b"\x04"))
            probe[0] |= 0x20  # the padding bit: the last byte counts the padding
            padded.append(bytes(probe))
            seq += 1
    dep = H264Depacketizer()
    got = run(dep, padded) + dep.flush()
    assert [u.nalus for u in got] == [tuple(n) for _, n in units]
    assert dep.stats.padding == 20 and dep.stats.malformed == dep.stats.dropped_units == 0


def test_missing_names_the_holes_for_a_nack() -> None:
    units = units_of("baseline")[:10]
    packets = to_packets(units, mtu=200, seq0=0xFFFF - 2)
    dep = H264Depacketizer(reorder_window=64)
    assert dep.missing() == []
    lost = {3, 4, 9}
    first = parse_rtp(packets[0])
    assert first is not None
    for i, p in enumerate(packets[:12]):
        if i not in lost:
            dep.receive(p)
    seqs = [(first.sequence + i) & 0xFFFF for i in sorted(lost)]
    assert dep.missing() == seqs and dep.missing(limit=2) == seqs[:2]
    # the retransmissions arrive: nothing is missing, nothing was lost
    for i in sorted(lost):
        dep.receive(packets[i])
    assert dep.missing() == [] and dep.holding == 0
    got = run(dep, packets[12:]) + dep.flush()
    assert dep.stats.lost == 0 and dep.stats.dropped_units == 0
    assert dep.stats.access_units == len(units) and got
