"""The stamp, the probe's chunked-transfer reader and the LL-HLS part and playlist parsers,
fed whole, in any pieces and with garbage.

.venv/bin/pytest -q bench/latency
"""

from __future__ import annotations

import select
import socket
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.latency.hls_probe import (
    FormatError,
    HlsTimer,
    InitInfo,
    cut_waits,
    nal_units,
    parse_init,
    parse_playlist,
    part_stamps,
    video_samples,
)
from bench.latency.probe import Dechunker
from bench.latency.publisher import _is_header
from bench.latency.run import PROTOCOLS, split_probes, summary
from bench.latency.stamp import (
    NAL_SIZE,
    is_avc_nalu_tag,
    read_stamp,
    read_stamp_nalus,
    sei,
    stamp,
)
from bench.latency.whep_probe import StampTimer, enable_rx_times, kernel_rx_time
from media import flv
from media.fmp4 import Cut, PartCutter, styp
from media.frame import Frame, Kind
from relay.hls_playlist import FILE_RE, LivePlaylist
from tests.mediautil import make_clip

NOW_US = st.integers(10**15, 10**16 - 1)
PROTOS = list(PROTOCOLS)


@given(NOW_US, st.binary(min_size=1, max_size=300), st.sampled_from([0x17, 0x27]))
def test_a_stamp_reads_back_and_keeps_the_frame(wall_us: int, nalus: bytes, b0: int) -> None:
    body = bytes((b0, 1, 0, 0, 0)) + nalus
    assert is_avc_nalu_tag(body)
    stamped = stamp(body, wall_us)
    assert read_stamp(stamped) == wall_us
    # the stamp is one length-prefixed NAL unit in front; the frame's own units follow
    assert int.from_bytes(stamped[5:9], "big") == NAL_SIZE == len(sei(wall_us))
    assert stamped[9 + NAL_SIZE :] == nalus and stamped[:5] == body[:5]
    assert b"\x00\x00" not in sei(wall_us)  # nothing an emulation-prevention byte would fix


@given(st.binary(max_size=400))
def test_read_stamp_never_raises_and_finds_nothing_in_plain_frames(data: bytes) -> None:
    got = read_stamp(data)
    assert got is None or b"berrylive-g2g-v1" in data


def test_sequence_headers_and_other_codecs_are_not_stamped() -> None:
    assert not is_avc_nalu_tag(b"\x17\x00\x00\x00\x00\x01\x64")  # AVC sequence header
    assert not is_avc_nalu_tag(b"\x2c\x01\x00\x00\x00abc")  # not H.264
    assert _is_header(flv.FlvTag(9, 0, b"\x17\x00\x00\x00\x00\x01"))
    assert _is_header(flv.FlvTag(8, 0, b"\xaf\x00\x12\x10"))
    assert not _is_header(flv.FlvTag(8, 0, b"\xaf\x01\x00"))


def _chunked(payload: bytes, sizes: list[int]) -> bytes:
    out, pos = bytearray(), 0
    for size in sizes:
        part = payload[pos : pos + size]
        pos += len(part)
        if part:
            out += b"%x\r\n" % len(part) + part + b"\r\n"
    if pos < len(payload):
        out += b"%x;ext=1\r\n" % (len(payload) - pos) + payload[pos:] + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


@given(
    st.binary(max_size=2000),
    st.lists(st.integers(1, 700), max_size=8),
    st.lists(st.integers(1, 97), min_size=1, max_size=20),
)
def test_dechunker_joins_any_split(payload: bytes, sizes: list[int], cuts: list[int]) -> None:
    wire = _chunked(payload, sizes)
    d = Dechunker()
    out, pos, i = bytearray(), 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += d.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert bytes(out) == payload


def test_probes_split_between_protocols_and_percentiles() -> None:
    assert split_probes(2, 8) == {"flv": 1, "rtmp": 1}
    assert split_probes(1, 8) == {"flv": 1, "rtmp": 0}
    assert split_probes(1000, 8) == {"flv": 4, "rtmp": 4}
    s = summary([float(x) for x in range(1, 101)])
    assert (s["n"], s["p50"], s["p99"], s["max"]) == (100, 51.0, 100.0, 100.0)
    assert summary([])["p50"] is None


def test_probes_are_shared_over_any_protocols() -> None:
    assert split_probes(3, 8, ("whep", "flv", "rtmp")) == {"whep": 1, "flv": 1, "rtmp": 1}
    assert split_probes(1, 8, ("whep", "flv", "rtmp")) == {"whep": 1, "flv": 0, "rtmp": 0}
    assert split_probes(100, 8, ("flv", "rtmp", "whep")) == {"flv": 3, "rtmp": 3, "whep": 2}
    assert split_probes(5, 8, ()) == {}


@given(st.integers(0, 5000), st.integers(0, 64), st.lists(st.sampled_from(PROTOS), unique=True))
def test_probe_split_never_exceeds_the_audience(n: int, probes: int, protos: list[str]) -> None:
    got = split_probes(n, probes, tuple(protos))
    assert list(got) == protos
    assert sum(got.values()) == (min(n, probes) if protos else 0)
    assert max(got.values(), default=0) - min(got.values(), default=0) <= 1


OTHER_NAL = st.binary(min_size=1, max_size=60).filter(lambda b: b[0] & 0x1F != 6)


@given(NOW_US, st.lists(OTHER_NAL, max_size=5), st.lists(OTHER_NAL, max_size=5))
def test_a_stamp_reads_back_from_depacketized_nal_units(
    wall_us: int, before: list[bytes], after: list[bytes]
) -> None:
    """Wherever the server puts the SEI among the access unit's NAL units (SPS/PPS in
    front of an IDR), the stamp reads back; a unit without it has none."""
    assert read_stamp_nalus([*before, sei(wall_us), *after]) == wall_us
    assert read_stamp_nalus([*before, *after]) is None


@given(st.lists(st.binary(max_size=60), max_size=6))
def test_read_stamp_nalus_never_raises_on_garbage(nalus: list[bytes]) -> None:
    got = read_stamp_nalus(nalus)
    assert got is None or any(b"berrylive-g2g-v1" in n for n in nalus)


def test_other_sei_and_truncated_stamps_are_not_stamps() -> None:
    nal = sei(1733385600000000)
    assert read_stamp_nalus([nal[:-2]]) is None  # cut inside the digits
    assert read_stamp_nalus([b"\x06\x05\x20" + b"another-uuid-xyz" + b"1" * 16 + b"\x80"]) is None
    assert read_stamp_nalus([b"\x06\x04" + nal[2:]]) is None  # another payload type
    assert read_stamp_nalus([nal[:19] + b"12345678901234x6" + b"\x80"]) is None


def test_stamp_timer_drops_the_join_gop_and_times_stamped_units() -> None:
    video: list[tuple[float, float]] = []
    timer = StampTimer(skip=1.0, video=video)
    t0 = time.time() + 10  # the first unit comes late: the skip counts from it
    timer.unit((sei(int(t0 * 1e6) - 1_500_000), b"\x65idr"), wall=t0)  # the join GOP
    timer.unit((sei(int(t0 * 1e6) - 500_000), b"\x41p"), wall=t0 + 0.5)  # in the skip
    timer.unit((b"\x41slice",), wall=t0 + 1.5)  # no stamp
    timer.unit((b"\x09\x10", sei(int((t0 + 2) * 1e6) - 40_000), b"\x41s"), wall=t0 + 2)
    assert (timer.units, timer.stamped) == (4, 3)
    assert len(video) == 1 and abs(video[0][1] - 40.0) < 0.01
    assert video[0][0] == round(t0 + 2, 3)


def test_stamp_timer_times_at_the_kernel_receive_time_and_keeps_the_read_time() -> None:
    video: list[tuple[float, float]] = []
    read: list[tuple[float, float]] = []
    timer = StampTimer(skip=0.0, video=video, read=read)
    t0 = time.time()
    timer.unit((sei(int(t0 * 1e6)),), wall=t0 + 0.300, rx=t0 + 0.010)
    timer.unit((sei(int(t0 * 1e6)),), wall=t0 + 0.050)  # no kernel time: the read time
    assert [round(ms) for _, ms in video] == [10, 50]
    assert [round(ms) for _, ms in read] == [300, 50]
    # samples are placed in time by arrival (the run keeps those inside its window)
    assert [t for t, _ in video] == [round(t0 + 0.010, 3), round(t0 + 0.050, 3)]


def test_kernel_rx_time_is_the_datagrams_arrival_not_the_read() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        enable_rx_times(rx)
        # The kernel turns receive times on through deferred work: until then a read
        # datagram has none and the ioctl answers with its own time. Wait for it.
        deadline = time.time() + 10
        while True:
            tx.sendto(b"warm", rx.getsockname())
            assert select.select([rx], [], [], 5)[0]
            read_at = time.time() + 0.01
            while time.time() < read_at:
                select.select([], [], [], 0.002)
            rx.recv(16)
            got = kernel_rx_time(rx)
            if got is not None and got < read_at - 0.005:
                break
            assert time.time() < deadline, "the kernel never kept a receive time"
        before = time.time()
        tx.sendto(b"one", rx.getsockname())
        assert select.select([rx], [], [], 5)[0]
        sent_second = time.time()
        tx.sendto(b"two", rx.getsockname())
        while time.time() < sent_second + 0.02:  # read 20 ms after "one" arrived
            select.select([], [], [], 0.005)
        assert rx.recv(16) == b"one"
        first = kernel_rx_time(rx)
        assert select.select([rx], [], [], 5)[0]
        assert rx.recv(16) == b"two"
        second = kernel_rx_time(rx)
        after = time.time()
    assert first is not None and second is not None
    assert before - 0.001 <= first <= sent_second + 0.005  # arrival, not the read 20 ms on
    assert sent_second - 0.001 <= second <= after + 0.001
    assert first <= second


# ------------------------------------------------------------------ LL-HLS parts

STAMP0 = 1_800_000_000_000_000


@pytest.fixture(scope="module")
def stamped_cuts(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Cut], list[int]]:
    """A real clip (libx264 with B-frames, AAC) whose every video frame was stamped as the
    publisher stamps it, cut into parts by the product's cutter (0.333 s parts, 1 s GOP)."""
    clip = make_clip(tmp_path_factory.mktemp("g2g") / "clip.flv", 3.0, gop=30)
    tags = [t for t in flv.FlvDemuxer().feed(clip.read_bytes()) if isinstance(t, flv.FlvTag)]
    cutter = PartCutter(part_target=0.333, segment_target=1.0, segment_max=4.0)
    cuts: list[Cut] = []
    stamps: list[int] = []
    for tag in tags:
        body = tag.body
        if tag.tag_type == 9 and is_avc_nalu_tag(body):
            stamps.append(STAMP0 + 1000 * len(stamps))
            body = stamp(body, stamps[-1])
        cuts += cutter.push(Frame.from_payload(Kind(tag.tag_type), tag.timestamp, body))
    cuts += cutter.finish()
    return cuts, stamps


def test_stamps_read_back_from_real_parts_in_decode_order(
    stamped_cuts: tuple[list[Cut], list[int]],
) -> None:
    cuts, stamps = stamped_cuts
    parts = [c.part.data for c in cuts]
    assert len(parts) >= 8 and len(stamps) == 90
    init = parse_init(cuts[0].part.init.data)
    assert init == InitInfo(video_track=1, nal_length_size=4)
    per_part = [part_stamps(p, init) for p in parts]
    assert [s for got in per_part for s in got] == stamps  # every frame once, in order
    assert all(0 < len(got) <= 11 for got in per_part)  # <= 0.333 s of 30 fps each
    assert sum(len(video_samples(p, 2)) for p in parts) > 100  # the AAC track is apart
    # a whole segment (styp + its parts) reads the same
    whole = styp() + b"".join(parts[:4])
    assert part_stamps(whole, init) == [s for got in per_part[:4] for s in got]
    # the stamp is one NAL unit among the frame's own: the keyframe's IDR slice follows
    units = nal_units(video_samples(parts[0], 1)[0])
    assert units[0][0] & 0x1F == 6 and any(n[0] & 0x1F == 5 for n in units)


def test_a_cut_part_is_a_format_error_never_a_short_answer(
    stamped_cuts: tuple[list[Cut], list[int]],
) -> None:
    cuts, _ = stamped_cuts
    init = parse_init(cuts[0].part.init.data)
    data = cuts[1].part.data
    for cut in range(1, len(data), max(1, len(data) // 97)):
        with pytest.raises(FormatError):
            part_stamps(data[:cut], init)
    with pytest.raises(FormatError):
        part_stamps(data + b"\x00\x00\x00", init)  # trailing bytes that are no box
    with pytest.raises(FormatError):
        parse_init(cuts[0].part.init.data[:-20])


@given(st.binary(max_size=600))
def test_the_part_parsers_raise_only_their_error_on_garbage(data: bytes) -> None:
    for call in (
        lambda: part_stamps(data, InitInfo(1, 4)),
        lambda: parse_init(data),
        lambda: nal_units(memoryview(data), 2),
    ):
        try:
            call()
        except FormatError:
            pass


@given(st.data())
def test_a_real_part_with_bytes_changed_raises_only_the_parsers_error(
    stamped_cuts: tuple[list[Cut], list[int]], data: st.DataObject
) -> None:
    cuts, _ = stamped_cuts
    part = bytearray(cuts[data.draw(st.integers(0, len(cuts) - 1))].part.data)
    moof_end = int.from_bytes(part[:4], "big")  # change the boxes, not the media
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, min(len(part), moof_end + 8) - 1))
        part[at] = data.draw(st.integers(0, 255))
    try:
        part_stamps(bytes(part), InitInfo(1, 4))
    except FormatError:
        pass


def test_the_playlist_parser_finds_parts_and_the_hint_of_the_products_playlist(
    stamped_cuts: tuple[list[Cut], list[int]],
) -> None:
    cuts, _ = stamped_cuts
    playlist = LivePlaylist(name="bench", token="t0k3n", part_target=0.333, segment_max=4.0)
    for cut in cuts[:-1]:
        playlist.add(cut.part, cut.new_segment, now=0.0)
        got = parse_playlist(playlist.render())
        assert got.part_target == 0.333
        assert got.parts, "no part listed"
        for ref in got.parts:
            m = FILE_RE.match(ref.uri.rsplit("/", 1)[1])
            assert m is not None and (int(m.group(3)), int(m.group(4))) == ref.position
            assert ref.map_uri == "bench.hls/t0k3n/init-1.mp4"
        assert got.hint is not None and got.hint.position == playlist.next_position()
        assert got.next_position() == playlist.next_position()
        assert got.hint.uri.endswith("part-{}.{}.m4s".format(*playlist.next_position()))
    assert sum(c.new_segment for c in cuts) >= 3  # positions were checked across segments


@given(st.text(max_size=400))
def test_the_playlist_parser_raises_only_its_error_on_garbage(text: str) -> None:
    for t in (text, "#EXTM3U\n" + text):
        try:
            parse_playlist(t)
        except FormatError:
            pass


def test_hls_timer_skips_the_start_and_times_both_ends_of_a_part() -> None:
    last: list[tuple[float, float]] = []
    first: list[tuple[float, float]] = []
    t0 = time.time()
    timer = HlsTimer(skip=1.0, last=last, first=first, started=t0)
    us = int(t0 * 1e6)
    timer.part([us - 300_000, None], first=t0 + 0.99, last=t0 + 0.995)  # in the skip
    timer.part([us + 1_000_000, us + 1_200_000], first=t0 + 1.29, last=t0 + 1.3)
    assert (timer.parts, timer.samples, timer.stamped) == (2, 4, 3)
    assert [round(ms) for _, ms in last] == [300, 100]
    assert [round(ms) for _, ms in first] == [290, 90]
    assert last[0][0] == round(t0 + 1.3, 3)


def test_the_cutting_delays_a_frame_between_a_frame_and_a_part_plus_a_frame(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    clip = make_clip(tmp_path_factory.mktemp("g2g") / "nobf.flv", 4.0, gop=60, extra=["-bf", "0"])
    tags = [t for t in flv.FlvDemuxer().feed(clip.read_bytes()) if isinstance(t, flv.FlvTag)]
    frames = [Frame.from_payload(Kind(t.tag_type), t.timestamp, t.body) for t in tags]
    waits = cut_waits(frames, 0.333)
    video = [f for f in frames if f.kind is Kind.VIDEO and not f.header]
    # every frame but those of the open part at the end (no more than a part's worth)
    assert len(video) - 11 <= len(waits) < len(video)
    assert min(waits) >= 33 and max(waits) <= 333 + 34
    assert max(waits) >= 300  # a part's first frame waits about the whole part


def test_hls_is_a_protocol_the_probes_are_shared_with() -> None:
    assert "hls" in PROTOCOLS
    assert split_probes(100, 8, ("hls", "flv", "whep")) == {"hls": 3, "flv": 3, "whep": 2}
