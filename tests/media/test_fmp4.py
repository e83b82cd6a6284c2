"""media.fmp4: init segments and parts read back by PyAV and by a box parser of our own.

Real input: clips encoded by ffmpeg into FLV (H.264 with B-frames, HEVC over Enhanced RTMP,
AAC; audio-only, video-only), demuxed by ``media.flv.FlvDemuxer`` into ``Frame`` objects,
muxed, concatenated (init + parts) and opened with PyAV: codecs, sizes, every packet's
DTS / PTS / keyframe flag against the input, and a clean decode of every packet.
Synthetic input (hypothesis): random frame sequences and cut points, checked box by box.
"""

from __future__ import annotations

import io
import itertools
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import flv
from media.errors import LocalProtocolError
from media.fmp4 import (
    AudioTrack,
    Cut,
    Fmp4Muxer,
    Part,
    PartCutter,
    Sample,
    TrackFragment,
    VideoTrack,
    fragment,
    init_segment,
    styp,
)
from media.frame import Frame, Kind
from tests.mediautil import make_clip

# --------------------------------------------------------------------------------------
# A small ISO BMFF reader (for checking only)
# --------------------------------------------------------------------------------------

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"dinf", b"moof", b"traf"}


@dataclass
class Box:
    kind: bytes
    start: int
    end: int
    body: int  # where the payload starts
    children: list[Box] = field(default_factory=list)

    def find(self, *path: bytes) -> Box:
        box = self
        for kind in path:
            matches = [c for c in box.children if c.kind == kind]
            assert len(matches) == 1, f"{kind!r} x{len(matches)} in {box.kind!r}"
            box = matches[0]
        return box

    def all(self, kind: bytes) -> list[Box]:
        return [c for c in self.children if c.kind == kind]


def parse_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    end = len(data) if end is None else end
    out: list[Box] = []
    pos = start
    while pos < end:
        assert end - pos >= 8, "truncated box header"
        size, kind = struct.unpack_from(">I4s", data, pos)
        assert size >= 8 and pos + size <= end, f"box {kind!r} size {size} overruns its parent"
        box = Box(kind, pos, pos + size, pos + 8)
        if kind in CONTAINERS:
            box.children = parse_boxes(data, pos + 8, pos + size)
        elif kind == b"stsd":
            box.children = parse_boxes(data, pos + 16, pos + size)
        out.append(box)
        pos += size
    assert pos == end
    return out


def full_header(data: bytes, box: Box) -> tuple[int, int]:
    word = struct.unpack_from(">I", data, box.body)[0]
    return word >> 24, word & 0xFFFFFF


@dataclass
class Run:
    track_id: int
    tfdt: int
    durations: list[int]
    sizes: list[int]
    flags: list[int]
    ctos: list[int]
    samples: list[bytes]


def parse_part(data: bytes) -> tuple[int, dict[int, Run]]:
    """``moof`` + ``mdat`` -> (sequence number, runs by track id); checks offsets and sizes."""
    top = parse_boxes(data)
    assert [b.kind for b in top] == [b"moof", b"mdat"]
    moof, mdat = top
    mfhd = moof.find(b"mfhd")
    assert full_header(data, mfhd) == (0, 0)
    seq = struct.unpack_from(">I", data, mfhd.body + 4)[0]
    runs: dict[int, Run] = {}
    covered = 0
    for traf in moof.all(b"traf"):
        tfhd = traf.find(b"tfhd")
        _, tf_flags = full_header(data, tfhd)
        assert tf_flags & 0x020000, "default-base-is-moof"
        assert not tf_flags & 0x000001, "no base data offset"
        pos = tfhd.body + 4
        track_id = struct.unpack_from(">I", data, pos)[0]
        pos += 4
        default_flags = None
        for bit, size in ((0x02, 4), (0x08, 4), (0x10, 4)):
            if tf_flags & bit:
                pos += size
        if tf_flags & 0x20:
            default_flags = struct.unpack_from(">I", data, pos)[0]
            pos += 4
        assert pos == tfhd.end
        tfdt = traf.find(b"tfdt")
        assert full_header(data, tfdt) == (1, 0)
        base = struct.unpack_from(">Q", data, tfdt.body + 4)[0]
        trun = traf.find(b"trun")
        version, flags = full_header(data, trun)
        assert version == 1 and flags & 0x001 and flags & 0x100 and flags & 0x200
        count, offset = struct.unpack_from(">Ii", data, trun.body + 4)
        pos = trun.body + 12
        run = Run(track_id, base, [], [], [], [], [])
        for _ in range(count):
            run.durations.append(struct.unpack_from(">I", data, pos)[0])
            run.sizes.append(struct.unpack_from(">I", data, pos + 4)[0])
            pos += 8
            if flags & 0x400:
                run.flags.append(struct.unpack_from(">I", data, pos)[0])
                pos += 4
            else:
                assert default_flags is not None
                run.flags.append(default_flags)
            if flags & 0x800:
                run.ctos.append(struct.unpack_from(">i", data, pos)[0])
                pos += 4
            else:
                run.ctos.append(0)
        assert pos == trun.end
        at = moof.start + offset
        assert at >= mdat.body
        for size in run.sizes:
            assert at + size <= mdat.end
            run.samples.append(data[at : at + size])
            at += size
        covered += sum(run.sizes)
        assert track_id not in runs
        runs[track_id] = run
    assert covered == mdat.end - mdat.body, "the mdat holds exactly the samples"
    return seq, runs


def parse_init(data: bytes) -> dict[int, dict[str, Any]]:
    """ftyp + moov -> per track id: handler, timescale, sample entry, its config box."""
    top = parse_boxes(data)
    assert [b.kind for b in top] == [b"ftyp", b"moov"]
    ftyp = top[0]
    assert data[ftyp.body : ftyp.body + 4] == b"iso6"
    assert b"cmfc" in data[ftyp.body + 8 : ftyp.end]
    moov = top[1]
    tracks: dict[int, dict[str, Any]] = {}
    trex_ids = []
    for trex in moov.find(b"mvex").all(b"trex"):
        trex_ids.append(struct.unpack_from(">I", data, trex.body + 4)[0])
    for trak in moov.all(b"trak"):
        tkhd = trak.find(b"tkhd")
        track_id = struct.unpack_from(">I", data, tkhd.body + 12)[0]
        width, height = struct.unpack_from(">II", data, tkhd.end - 8)
        mdhd = trak.find(b"mdia", b"mdhd")
        timescale = struct.unpack_from(">I", data, mdhd.body + 12)[0]
        hdlr = trak.find(b"mdia", b"hdlr")
        handler = data[hdlr.body + 8 : hdlr.body + 12]
        stbl = trak.find(b"mdia", b"minf", b"stbl")
        for empty in (b"stts", b"stsc", b"stco"):
            assert struct.unpack_from(">I", data, stbl.find(empty).body + 4)[0] == 0
        (entry,) = stbl.find(b"stsd").children
        info: dict[str, Any] = {
            "handler": handler,
            "timescale": timescale,
            "entry": entry.kind,
            "tkhd_size": (width >> 16, height >> 16),
        }
        if handler == b"vide":
            info["size"] = struct.unpack_from(">HH", data, entry.body + 24)
            inner = parse_boxes(data, entry.body + 78, entry.end)
            info["config"] = {b.kind: data[b.body : b.end] for b in inner}
        else:
            channels, _, _, _, rate = struct.unpack_from(">HHHHI", data, entry.body + 16)
            info["channels"] = channels
            info["rate"] = rate >> 16
            inner = parse_boxes(data, entry.body + 28, entry.end)
            info["config"] = {b.kind: data[b.body : b.end] for b in inner}
        tracks[track_id] = info
    assert sorted(trex_ids) == sorted(tracks)
    return tracks


# --------------------------------------------------------------------------------------
# Input helpers
# --------------------------------------------------------------------------------------


def flv_frames(path: Path) -> list[Frame]:
    tags = [t for t in flv.FlvDemuxer().feed(path.read_bytes()) if isinstance(t, flv.FlvTag)]
    return [Frame.from_payload(Kind(t.tag_type), t.timestamp, t.body) for t in tags]


def coded_offset(frame: Frame) -> int | None:
    """Where the sample bytes start in a coded audio/video frame; None for anything else
    (sequence headers, end of sequence, Enhanced RTMP metadata). Written apart from the
    muxer's own classification, from the FLV layout."""
    p = frame.payload
    if frame.kind == Kind.VIDEO:
        if p[0] & 0x80:
            packet_type = p[0] & 0x0F
            return {1: 8, 3: 5}.get(packet_type)
        return 5 if p[1] == 1 else None
    if frame.kind == Kind.AUDIO:
        return 2 if p[1] == 1 else None
    return None


def cut(
    frames: list[Frame],
    muxer: Fmp4Muxer,
    part_target: float = 0.3,
    segment_target: float = 0.9,
) -> tuple[list[Part], set[int]]:
    """Cut parts the way the relay is meant to: a segment at the first keyframe past
    ``segment_target``, parts when ``part_target`` is ready. Returns the parts and the
    indexes of the parts that open a segment."""
    parts: list[Part] = []
    segment_starts: set[int] = {0}
    segment_start = None
    for frame in frames:
        forced = muxer.push(frame)
        if forced is not None:
            parts.append(forced)
            segment_starts.add(len(parts))
        key = frame.kind == Kind.VIDEO and frame.keyframe
        if key and segment_start is None:
            segment_start = frame.dts
        if key and segment_start is not None and frame.dts - segment_start >= segment_target * 1000:
            part = muxer.flush_part()
            if part is not None:
                parts.append(part)
            segment_starts.add(len(parts))
            segment_start = frame.dts
        elif muxer.pending_duration >= part_target:
            part = muxer.flush_part()
            assert part is not None
            parts.append(part)
    last = muxer.flush_part(final=True)
    if last is not None:
        parts.append(last)
    return parts, segment_starts


def read_back(data: bytes) -> dict[str, Any]:
    """Open with PyAV: stream facts and every packet per stream type; decode everything."""
    out: dict[str, Any] = {"streams": {}, "packets": {}, "decoded": {}}
    container: Any
    with av.open(io.BytesIO(data), format="mp4") as container:
        for stream in container.streams:
            ctx: Any = stream.codec_context
            entry: dict[str, Any] = {"codec": ctx.name, "time_base": stream.time_base}
            if stream.type == "video":
                entry.update(width=ctx.width, height=ctx.height)
            else:
                entry.update(sample_rate=ctx.sample_rate)
            out["streams"][stream.type] = entry
            out["packets"][stream.type] = []
            out["decoded"][stream.type] = 0
        for packet in container.demux():
            kind = packet.stream.type
            if packet.size:
                out["packets"][kind].append(
                    {
                        "dts": packet.dts,
                        "pts": packet.pts,
                        "key": packet.is_keyframe,
                        "size": packet.size,
                        "corrupt": packet.is_corrupt,
                    }
                )
            out["decoded"][kind] += len(packet.decode())  # raises on a decoding error
    return out


# --------------------------------------------------------------------------------------
# Real clips
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("fmp4clips")
    return {
        "h264": make_clip(d / "h264.flv", 3.0, gop=30),
        "hevc": make_clip(d / "hevc.flv", 3.0, gop=30, vcodec="libx265"),
        "audio": make_clip(d / "audio.flv", 3.0, video=False),
        "video": make_clip(d / "video.flv", 3.0, gop=30, audio=False),
        "big": make_clip(d / "big.flv", 2.0, gop=30, size="640x360"),
    }


def check_against_input(frames: list[Frame], data: bytes, codec: str | None) -> dict[str, Any]:
    got = read_back(data)
    video_in = [f for f in frames if f.kind == Kind.VIDEO and coded_offset(f) is not None]
    audio_in = [f for f in frames if f.kind == Kind.AUDIO and coded_offset(f) is not None]
    if codec is None:
        assert "video" not in got["streams"]
    else:
        v = got["streams"]["video"]
        assert v["codec"] == codec
        assert v["time_base"] * 90_000 == 1
        packets = got["packets"]["video"]
        assert len(packets) == len(video_in)
        for f, p in zip(video_in, packets, strict=True):
            assert p["dts"] == f.dts * 90
            assert p["pts"] == (f.dts + f.cts) * 90
            assert p["key"] == f.keyframe
            assert p["size"] == len(f.payload) - (coded_offset(f) or 0)
            assert not p["corrupt"]
        assert got["decoded"]["video"] == len(video_in), "every video packet decodes to a frame"
    if not audio_in:
        assert "audio" not in got["streams"]
    else:
        a = got["streams"]["audio"]
        assert a["codec"] == "aac"
        rate = a["sample_rate"]
        assert a["time_base"] * rate == 1
        packets = got["packets"]["audio"]
        assert len(packets) == len(audio_in)
        for f, p in zip(audio_in, packets, strict=True):
            # within the millisecond timestamps' own rounding: each input timestamp is
            # within 0.5 ms of the sample grid, and so is the grid's first tick
            assert abs(p["dts"] - f.dts * rate / 1000) <= rate / 1000
            assert p["pts"] == p["dts"]
            assert p["key"]
            assert p["size"] == len(f.payload) - 2
        # the encoder's continuous audio keeps exact 1024-sample frames
        assert {b["dts"] - a["dts"] for a, b in itertools.pairwise(packets)} == {1024}
        assert got["decoded"]["audio"] >= len(audio_in) - 2  # the AAC decoder's own delay
    return got


@pytest.mark.parametrize(
    ("clip", "codec", "entry"),
    [("h264", "h264", b"avc1"), ("hevc", "hevc", b"hvc1"), ("video", "h264", b"avc1")],
)
def test_real_video_clips_read_back_exactly(
    clips: dict[str, Path], clip: str, codec: str, entry: bytes
) -> None:
    frames = flv_frames(clips[clip])
    assert any(f.cts > 0 for f in frames if f.kind == Kind.VIDEO), "the clip has B-frames"
    muxer = Fmp4Muxer()
    parts, segment_starts = cut(frames, muxer)
    init = muxer.init_segment()
    assert init.version == 1 and all(p.init is init for p in parts)
    data = init.data + b"".join(p.data for p in parts)
    got = check_against_input(frames, data, codec)
    assert (got["streams"]["video"]["width"], got["streams"]["video"]["height"]) == (320, 180)

    tracks = parse_init(init.data)
    assert tracks[1]["entry"] == entry and tracks[1]["size"] == (320, 180)
    assert tracks[1]["timescale"] == 90_000 and tracks[1]["tkhd_size"] == (320, 180)
    header = next(f for f in frames if f.kind == Kind.VIDEO and f.header)
    info = flv.parse_video_header(header.payload)
    assert tracks[1]["config"][entry.replace(b"1", b"C")] == header.payload[info.data_offset :]
    assert init.codecs.startswith(entry.decode())
    if clip != "video":
        assert tracks[2]["entry"] == b"mp4a" and tracks[2]["timescale"] == 44_100
        assert init.codecs.endswith(",mp4a.40.2")
    # parts: sequence numbers, continuity, independence, segment starts at keyframes
    assert [p.sequence_number for p in parts] == list(range(1, len(parts) + 1))
    ends: dict[int, int] = {}
    for index, part in enumerate(parts):
        seq, runs = parse_part(part.data)
        assert seq == part.sequence_number
        for track_id, run in runs.items():
            if track_id in ends:
                assert run.tfdt == ends[track_id], "tfdt continues where the last part ended"
            ends[track_id] = run.tfdt + sum(run.durations)
        video = runs.get(1)
        assert part.independent == (video is not None and video.flags[0] == 0x02000000)
        if index in segment_starts:
            assert part.independent, "a segment opens with a keyframe"
        if video is not None:
            assert part.duration == pytest.approx(sum(video.durations) / 90_000)
            assert part.start == video.tfdt / 90_000
    assert sum(p.independent for p in parts) >= 3  # 3 s at a 1 s GOP
    assert all(p.duration <= 0.3 + 1 / 30 + 1e-9 for p in parts)


def test_real_audio_only_clip(clips: dict[str, Path]) -> None:
    frames = flv_frames(clips["audio"])
    muxer = Fmp4Muxer()
    parts, _ = cut(frames, muxer, part_target=0.2)
    init = muxer.init_segment()
    assert init.video is None and init.codecs == "mp4a.40.2"
    tracks = parse_init(init.data)
    assert list(tracks) == [2] and tracks[2]["rate"] == 44_100 and tracks[2]["channels"] == 1
    data = init.data + b"".join(p.data for p in parts)
    check_against_input(frames, data, None)
    assert all(p.independent for p in parts)
    assert all(p.duration <= 0.2 + 1024 / 44_100 for p in parts)
    assert len(parts) >= 10


def test_codec_change_makes_a_new_init_segment(clips: dict[str, Path]) -> None:
    """A second publisher at 640x360 after a 320x180 one (the hub's timeline continues):
    the buffered samples go out under the old init, the rest under a new one; each half
    plays with its own init and the second restarts at a keyframe."""
    first = flv_frames(clips["h264"])
    offset = max(f.dts for f in first) + 40
    second = [f.with_dts(f.dts + offset) for f in flv_frames(clips["big"])]
    muxer = Fmp4Muxer()
    parts, _ = cut(first + second, muxer)
    inits = {p.init.version: p.init for p in parts}
    assert sorted(inits) == [1, 2]
    assert inits[1].video is not None and inits[1].video.width == 320
    assert inits[2].video is not None and inits[2].video.width == 640
    switch = next(i for i, p in enumerate(parts) if p.init.version == 2)
    assert all(p.init.version == 1 for p in parts[:switch])
    assert all(p.init.version == 2 for p in parts[switch:])
    assert parts[switch].independent
    check_against_input(first, inits[1].data + b"".join(p.data for p in parts[:switch]), "h264")
    got = check_against_input(
        second, inits[2].data + b"".join(p.data for p in parts[switch:]), "h264"
    )
    assert (got["streams"]["video"]["width"], got["streams"]["video"]["height"]) == (640, 360)
    # the same header again changes nothing
    header = next(f for f in second if f.kind == Kind.VIDEO and f.header)
    assert muxer.push(header) is None and muxer.init_segment() is inits[2]


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_cuts_of_a_real_stream_read_back(
    clips: dict[str, Path], data: st.DataObject
) -> None:
    frames = flv_frames(clips["h264"])
    muxer = Fmp4Muxer()
    flush_after = data.draw(
        st.sets(st.integers(0, len(frames) - 1), max_size=len(frames) // 3), label="cuts"
    )
    parts = []
    for i, frame in enumerate(frames):
        assert muxer.push(frame) is None
        if i in flush_after:
            part = muxer.flush_part()
            if part is not None:
                parts.append(part)
    last = muxer.flush_part(final=True)
    assert last is not None
    parts.append(last)
    check_against_input(frames, muxer.init_segment().data + b"".join(p.data for p in parts), "h264")


# --------------------------------------------------------------------------------------
# Synthetic streams (hypothesis)
# --------------------------------------------------------------------------------------

AVC_HEADER = bytes.fromhex(
    "1700000000014d400dffe10019674d400deca0a0cfcf8088000003000800000301e078a14cb001000468ce0fc8"
)  # ffmpeg's x264, 320x180, Main
AAC_HEADER = b"\xaf\x00\x12\x10"  # AAC LC, 44.1 kHz, stereo


def video_payload(keyframe: bool, cts: int, size: int, seed: int) -> bytes:
    nal = bytes([0x65 if keyframe else 0x41]) + bytes((seed + i) & 0xFF for i in range(size))
    body = len(nal).to_bytes(4, "big") + nal
    return bytes([0x17 if keyframe else 0x27, 1]) + (cts & 0xFFFFFF).to_bytes(3, "big") + body


def audio_payload(size: int, seed: int) -> bytes:
    return b"\xaf\x01" + bytes((seed * 3 + i) & 0xFF for i in range(size))


@st.composite
def synthetic(draw: st.DrawFn) -> tuple[list[Frame | str], bool, bool]:
    """Frames of a stream with random timing and cut points (``"flush"`` entries)."""
    has_video = draw(st.booleans())
    has_audio = draw(st.booleans()) or not has_video
    video: list[Frame] = []
    audio: list[Frame] = []
    if has_video:
        dts = draw(st.integers(0, 10_000))
        for i in range(draw(st.integers(1, 40))):
            dts += draw(st.sampled_from([33, 33, 34, 0, 1, 17, 100, 500]))
            key = draw(st.booleans()) if i else draw(st.booleans() | st.just(True))
            cts = draw(st.sampled_from([0, 0, 33, 66, 133, -33, -100]))
            size = draw(st.integers(1, 3000))
            video.append(Frame.from_payload(Kind.VIDEO, dts, video_payload(key, cts, size, i)))
    if has_audio:
        dts = draw(st.integers(0, 10_000))
        for i in range(draw(st.integers(1, 60))):
            dts += draw(st.sampled_from([23, 23, 24, 0, 5, 40, 300]))
            size = draw(st.integers(1, 800))
            audio.append(Frame.from_payload(Kind.AUDIO, dts, audio_payload(size, i)))
    events: list[Frame | str] = []
    if has_video:
        events.append(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    if has_audio:
        events.append(Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER))
    vi = ai = 0
    while vi < len(video) or ai < len(audio):
        take_video = ai >= len(audio) or (vi < len(video) and draw(st.booleans()))
        if take_video:
            events.append(video[vi])
            vi += 1
        else:
            events.append(audio[ai])
            ai += 1
        if draw(st.integers(0, 4)) == 0:
            events.append("flush")
    return events, has_video, has_audio


@settings(max_examples=300, deadline=None)
@given(stream=synthetic())
def test_synthetic_streams_parse_back(stream: tuple[list[Frame | str], bool, bool]) -> None:
    events, has_video, has_audio = stream
    muxer = Fmp4Muxer()
    parts: list[Part] = []
    accepted: dict[int, list[Frame]] = {1: [], 2: []}
    video_started = False
    held_video: list[int | None] = []  # per part: the video dts held back at its cut
    for event in events:
        if event == "flush":
            part = muxer.flush_part()
            if part is not None:
                parts.append(part)
                held_video.append(accepted[1][-1].dts if accepted[1] else None)
            continue
        assert isinstance(event, Frame)
        assert muxer.push(event) is None
        # what the muxer must keep: video from its first keyframe, audio once video started
        if event.header:
            continue
        if event.kind == Kind.VIDEO:
            video_started = video_started or event.keyframe
            if video_started:
                accepted[1].append(event)
        elif video_started or not has_video:
            accepted[2].append(event)
    last = muxer.flush_part(final=True)
    if last is not None:
        parts.append(last)
        held_video.append(None)
    assert muxer.buffered_bytes == 0 and muxer.pending_duration == 0.0
    dropped = sum(1 for e in events if isinstance(e, Frame) and not e.header) - sum(
        len(v) for v in accepted.values()
    )
    assert muxer.dropped == dropped

    init = muxer.init_segment()
    tracks = parse_init(init.data)
    assert (1 in tracks) == has_video and (2 in tracks) == has_audio

    runs: dict[int, list[Run]] = {1: [], 2: []}
    audio_done = 0
    for n, (part, held) in enumerate(zip(parts, held_video, strict=True), start=1):
        seq, by_track = parse_part(part.data)
        assert seq == n == part.sequence_number
        for track_id, run in by_track.items():
            assert run.samples, "no empty track runs"
            runs[track_id].append(run)
        if 2 in by_track:
            count = len(by_track[2].samples)
            in_part = accepted[2][audio_done : audio_done + count]
            audio_done += count
            if held is not None:
                assert all(f.dts < held for f in in_part), "audio is cut at the held video"
        if has_video:
            assert part.independent == (1 in by_track and by_track[1].flags[0] == 0x02000000)
        else:
            assert part.independent
        main = by_track[1] if 1 in by_track else by_track[2]
        timescale = 90_000 if 1 in by_track else 44_100
        assert part.duration == pytest.approx(sum(main.durations) / timescale)

    for track_id, track_runs in runs.items():
        frames = accepted[track_id]
        samples = [s for r in track_runs for s in r.samples]
        offset = 5 if track_id == 1 else 2
        assert samples == [f.payload[offset:] for f in frames]
        # decode times: tfdt + the durations before, continuous across parts
        ticks: list[int] = []
        for a, b in itertools.pairwise(track_runs):
            assert b.tfdt == a.tfdt + sum(a.durations)
        for r in track_runs:
            t = r.tfdt
            for d in r.durations:
                ticks.append(t)
                t += d
        if track_id == 1:
            expected: list[int] = []
            for f in frames:
                expected.append(max([f.dts * 90, *expected[-1:]]))
            assert ticks == expected
            ctos = [c for r in track_runs for c in r.ctos]
            assert [t + c for t, c in zip(ticks, ctos, strict=True)] == [f.pts * 90 for f in frames]
            flags = [fl for r in track_runs for fl in r.flags]
            assert flags == [0x02000000 if f.keyframe else 0x01010000 for f in frames]
            # the final sample lasts as long as the one before it
            durations = [d for r in track_runs for d in r.durations]
            if durations:
                assert durations[-1] == ((durations[-2] if len(durations) > 1 else 0) or 3000)
        else:
            assert ticks == sorted(ticks)
            for t, f in zip(ticks, frames, strict=True):
                assert abs(t - f.dts * 44.1) <= 512 + 1
            assert {fl for r in track_runs for fl in r.flags} <= {0x02000000}
            assert not track_runs or track_runs[-1].durations[-1] == 1024
            assert all(c == 0 for r in track_runs for c in r.ctos)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Kind.VIDEO, Kind.AUDIO, Kind.SCRIPT]),
            st.integers(0, 1 << 40),
            st.binary(max_size=64),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_garbage_never_crashes(items: list[tuple[Kind, int, bytes, bool]]) -> None:
    """Random payloads (some with real headers mixed in): push never raises, every part
    written parses."""
    muxer = Fmp4Muxer()
    for kind, dts, payload, flush in items:
        if payload[:1] == b"\x00":
            payload = AVC_HEADER if kind == Kind.VIDEO else AAC_HEADER
        for frame in (Frame(kind, dts, payload), Frame.from_payload(kind, dts, payload)):
            part = muxer.push(frame)
            if part is not None:
                parse_part(part.data)
        if flush:
            part = muxer.flush_part(final=dts % 2 == 0)
            if part is not None:
                parse_part(part.data)
                parse_init(part.init.data)


# --------------------------------------------------------------------------------------
# Edges of the API
# --------------------------------------------------------------------------------------


def test_frames_before_their_sequence_header_are_dropped_and_counted() -> None:
    muxer = Fmp4Muxer()
    assert muxer.init is None
    with pytest.raises(LocalProtocolError):
        muxer.init_segment()
    assert muxer.push(Frame.from_payload(Kind.VIDEO, 0, video_payload(True, 0, 10, 0))) is None
    assert muxer.push(Frame.from_payload(Kind.AUDIO, 0, audio_payload(10, 0))) is None
    assert muxer.dropped == 2 and "sequence header" in muxer.last_drop_reason
    assert muxer.flush_part(final=True) is None
    # a malformed header: the track stays unusable, its frames dropped
    muxer.push(Frame.from_payload(Kind.AUDIO, 0, b"\xaf\x00\x00"))
    muxer.push(Frame.from_payload(Kind.AUDIO, 10, audio_payload(10, 0)))
    assert muxer.dropped == 4 and muxer.init is None
    # MP3 is not muxed
    muxer.push(Frame.from_payload(Kind.AUDIO, 20, b"\x2f\xff\xfb"))
    assert muxer.dropped == 5 and "not supported" in muxer.last_drop_reason


def test_the_buffer_is_bounded_and_overflow_is_our_misuse() -> None:
    muxer = Fmp4Muxer(max_buffer_bytes=10_000, max_buffer_samples=1000)
    muxer.push(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    dts = 0
    with pytest.raises(LocalProtocolError, match="flush_part"):
        for i in range(100):
            muxer.push(Frame.from_payload(Kind.VIDEO, dts, video_payload(i == 0, 0, 995, i)))
            dts += 33
    assert muxer.buffered_bytes <= 10_000
    part = muxer.flush_part()
    assert part is not None and muxer.buffered_bytes < 1100  # only the held sample is left
    muxer.push(Frame.from_payload(Kind.VIDEO, dts, video_payload(False, 0, 995, 1)))


def test_annexb_frames_are_written_length_prefixed() -> None:
    muxer = Fmp4Muxer()
    muxer.push(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    nal_a, nal_b = b"\x65" + b"\x11" * 40, b"\x06" + b"\x22" * 9
    annexb = b"\x00\x00\x00\x01" + nal_b + b"\x00\x00\x01" + nal_a
    muxer.push(Frame.from_payload(Kind.VIDEO, 0, b"\x17\x01\x00\x00\x00" + annexb))
    part = muxer.flush_part(final=True)
    assert part is not None
    _, runs = parse_part(part.data)
    expected = len(nal_b).to_bytes(4, "big") + nal_b + len(nal_a).to_bytes(4, "big") + nal_a
    assert runs[1].samples == [expected]
    assert runs[1].durations == [3000]  # a lone final sample lasts 1/30 s


def test_final_flush_uses_end_dts_and_the_timeline_never_goes_back() -> None:
    muxer = Fmp4Muxer()
    muxer.push(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    for i, dts in enumerate((1000, 1040)):
        muxer.push(Frame.from_payload(Kind.VIDEO, dts, video_payload(i == 0, 0, 10, i)))
    part = muxer.flush_part(final=True, end_dts=1100)
    assert part is not None
    _, runs = parse_part(part.data)
    assert runs[1].tfdt == 90_000 and runs[1].durations == [3600, 5400]
    # a frame stamped before the end of what was written starts at that end instead
    muxer.push(Frame.from_payload(Kind.VIDEO, 1090, video_payload(False, 20, 10, 3)))
    muxer.push(Frame.from_payload(Kind.VIDEO, 1133, video_payload(False, 0, 10, 4)))
    part = muxer.flush_part()
    assert part is not None and not part.independent
    _, runs = parse_part(part.data)
    assert runs[1].tfdt == 1100 * 90 and runs[1].ctos == [(1110 - 1100) * 90]
    assert runs[1].durations == [33 * 90]


def test_audio_after_a_lengthened_final_sample_starts_where_it_ended() -> None:
    """A final flush with ``end_dts`` lengthens the last AAC frame past one frame length;
    the next frame, within half a frame of that frame's natural end, starts at the end
    written, not back at the natural end (found by the part-cutter property test)."""
    muxer = Fmp4Muxer()
    muxer.push(Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER))
    muxer.push(Frame.from_payload(Kind.AUDIO, 0, audio_payload(10, 0)))
    part = muxer.flush_part(final=True, end_dts=33)
    assert part is not None
    _, runs = parse_part(part.data)
    assert runs[2].durations == [1455]  # 33 ms at 44.1 kHz
    muxer.push(Frame.from_payload(Kind.AUDIO, 33, audio_payload(10, 1)))
    part = muxer.flush_part(final=True)
    assert part is not None
    _, runs = parse_part(part.data)
    assert runs[2].tfdt == 1455


def test_stateless_writers_check_their_input() -> None:
    video = VideoTrack.from_flv(AVC_HEADER)
    audio = AudioTrack.from_flv(AAC_HEADER)
    assert (video.width, video.height, video.codec_string) == (320, 180, "avc1.4d400d")
    assert (audio.sample_rate, audio.channels, audio.codec_string) == (44_100, 2, "mp4a.40.2")
    tracks = parse_init(init_segment([video, audio]))
    assert tracks[2]["config"][b"esds"][4:5] == b"\x03"  # an ES_Descriptor after the header
    with pytest.raises(LocalProtocolError):
        init_segment([])
    with pytest.raises(LocalProtocolError):
        init_segment([video, video])
    with pytest.raises(LocalProtocolError):
        fragment(1, [])
    with pytest.raises(LocalProtocolError):
        fragment(1, [TrackFragment(1, -1, [Sample(b"x", 1)])])
    with pytest.raises(LocalProtocolError):
        fragment(1, [TrackFragment(2, 0, [Sample(b"x", 1, sync=False)], False)])
    seq, runs = parse_part(fragment(7, [TrackFragment(1, 5, [Sample(b"ab", 3, -2, False)])]))
    assert seq == 7 and runs[1].ctos == [-2] and runs[1].flags == [0x01010000]


def test_after_a_codec_change_video_waits_for_a_keyframe() -> None:
    """A header change in the middle of a GOP: the frames up to the next keyframe cannot
    be decoded under the new init, so they (and the audio beside them) are dropped."""
    muxer = Fmp4Muxer()
    muxer.push(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    muxer.push(Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER))
    for i in range(5):
        muxer.push(Frame.from_payload(Kind.VIDEO, i * 33, video_payload(i == 0, 0, 50, i)))
        muxer.push(Frame.from_payload(Kind.AUDIO, i * 33, audio_payload(20, i)))
    first = muxer.flush_part()
    assert first is not None and first.init.version == 1 and first.independent
    # the encoder restarts with another SPS (a different level): a new init
    header = bytearray(AVC_HEADER)
    header[8] = header[16] = 0x1E  # AVCLevelIndication and level_idc in the SPS
    forced = muxer.push(Frame.from_payload(Kind.VIDEO, 170, bytes(header)))
    assert forced is not None and forced.init is first.init
    _, runs = parse_part(forced.data)
    # the held frame (dts 132) lasts until the new header's timestamp
    assert len(runs[1].samples) == 1 and runs[1].durations == [(170 - 132) * 90]
    before = muxer.dropped
    for i in range(5, 8):  # inter frames and audio: dropped
        muxer.push(Frame.from_payload(Kind.VIDEO, i * 33, video_payload(False, 0, 50, i)))
        muxer.push(Frame.from_payload(Kind.AUDIO, i * 33, audio_payload(20, i)))
    assert muxer.dropped == before + 6 and "keyframe" in muxer.last_drop_reason
    assert muxer.flush_part(final=True) is None
    for i in range(8, 11):
        muxer.push(Frame.from_payload(Kind.VIDEO, i * 33, video_payload(i == 8, 0, 50, i)))
        muxer.push(Frame.from_payload(Kind.AUDIO, i * 33, audio_payload(20, i)))
    part = muxer.flush_part()
    assert part is not None and part.independent and part.init.version == 2
    assert part.init.video is not None and part.init.codecs.startswith("avc1.4d401e")
    _, runs = parse_part(part.data)
    assert runs[1].tfdt == 8 * 33 * 90 and len(runs[1].samples) == 2


# --------------------------------------------------------------------------------------
# PartCutter: the LL-HLS cutting policy
# --------------------------------------------------------------------------------------


def run_cutter(cutter: PartCutter, frames: list[Frame]) -> list[Cut]:
    cuts = [c for f in frames for c in cutter.push(f)]
    return cuts + cutter.finish()


def segments_of(cuts: list[Cut]) -> list[list[Part]]:
    segments: list[list[Part]] = []
    for c in cuts:
        if c.new_segment:
            segments.append([])
        segments[-1].append(c.part)
    return segments


@pytest.mark.parametrize("clip", ["h264", "hevc", "audio"])
def test_cutter_keeps_parts_within_target_and_opens_segments_at_keyframes(
    clips: dict[str, Path], clip: str
) -> None:
    frames = flv_frames(clips[clip])
    cutter = PartCutter(part_target=0.3, segment_target=0.9)
    cuts = run_cutter(cutter, frames)
    assert cuts[0].new_segment
    parts = [c.part for c in cuts]
    assert [p.sequence_number for p in parts] == list(range(1, len(parts) + 1))
    assert all(p.duration <= 0.3 + 1e-9 for p in parts)
    assert sum(p.duration >= 0.2 for p in parts) >= len(parts) - 4  # not needlessly short
    segments = segments_of(cuts)
    for segment in segments:
        assert segment[0].independent
    for segment in segments[:-1]:
        assert sum(p.duration for p in segment) >= 0.9 - 1e-9
    if clip == "audio":
        assert all(p.independent for p in parts)
        assert len(segments) == 3  # 3 s of audio in segments of at least 0.9 s
    else:
        keyframes = [f for f in frames if f.kind == Kind.VIDEO and f.keyframe]
        assert len(segments) == len(keyframes) == 3  # a keyframe a second
        assert [round(s[0].start * 1000) for s in segments] == [f.dts for f in keyframes]
    # segments written as files: styp + their parts, after the init segment
    init = cutter.muxer.init_segment().data
    data = init + b"".join(styp() + b"".join(p.data for p in s) for s in segments)
    assert parse_boxes(styp())[0].kind == b"styp"
    check_against_input(frames, data, {"h264": "h264", "hevc": "hevc", "audio": None}[clip])


def av_stream(
    intervals: list[int],
    keys: set[int],
    change_at: int | None = None,
    silences: dict[int, int] | None = None,
) -> list[Frame]:
    """Video and audio frame by frame (video first at each timestamp), a keyframe at 0 and
    at every index in ``keys``, a changed AVC header before frame ``change_at``; after
    frame ``i``, ``silences[i]`` ms of audio alone (a frame every 23 ms: video stopped)."""
    frames = [Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER)]
    header = bytearray(AVC_HEADER)
    header[8] = header[16] = 0x1E
    dts = 0
    for i, gap in enumerate(intervals):
        dts += gap
        if i == change_at:
            frames.append(Frame.from_payload(Kind.VIDEO, dts, bytes(header)))
        key = i == 0 or i in keys
        frames.append(Frame.from_payload(Kind.VIDEO, dts, video_payload(key, 0, 20, i)))
        frames.append(Frame.from_payload(Kind.AUDIO, dts, audio_payload(10, i)))
        pause = (silences or {}).get(i, 0)
        for k in range(1, pause // 23 + 1):
            frames.append(Frame.from_payload(Kind.AUDIO, dts + 23 * k, audio_payload(10, i + k)))
        dts += pause
    frames.insert(1, Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER))
    return frames


def check_cut_stream(
    cutter: PartCutter, frames: list[Frame], cuts: list[Cut], part_target: float
) -> list[list[Part]]:
    """What every cut stream guarantees: parts within the target (but a single frame: the
    intervals here are below it, a pause is not), every segment opening with an
    independent part (bar one a ``segment_max`` closed), one init per segment, and every
    sample not dropped written once, in order.
    Video stopped: parts without video are independent; a keyframe back after them opens
    a segment."""
    parts = [c.part for c in cuts]
    assert all(p.independent for p in parts if not p.has_video)
    for before, after in itertools.pairwise(cuts):
        if not before.part.has_video and after.part.has_video and after.part.independent:
            assert after.new_segment, "video back with a keyframe opens a segment"
    # longer only as a single frame (its interval: a pause shorter than the video gap)
    long = [p for p in parts if p.duration > part_target + 1e-9]
    assert [p.duration for p in long if p.runs[0].sample_count > 1] == []
    assert [p.sequence_number for p in parts] == list(range(1, len(parts) + 1))
    segments = segments_of(cuts) if cuts else []
    segment_max = cutter.segment_max
    for previous, segment in zip([None, *segments], segments, strict=False):
        assert len({p.init.version for p in segment}) == 1, "one init per segment"
        if segment_max is not None:
            assert sum(p.duration for p in segment[:-1]) < segment_max, "segment_max closes"
        if not segment[0].independent:
            # only a segment closed by segment_max may be followed by one without a keyframe
            assert segment_max is not None and previous is not None
            assert sum(p.duration for p in previous) >= segment_max - 1e-9
    # nothing lost, nothing reordered: per track, the samples written are the frames pushed
    # (less those the muxer dropped and counted), in order, on a timeline never going back
    pushed: dict[int, list[bytes]] = {1: [], 2: []}
    for f in frames:
        if f.header:
            continue
        if f.kind == Kind.VIDEO:
            pushed[1].append(bytes(f.payload[5:]))
        else:
            pushed[2].append(bytes(f.payload[2:]))
    written: dict[int, list[bytes]] = {1: [], 2: []}
    ends: dict[int, int] = {}
    for part in parts:
        _, runs = parse_part(part.data)
        for track_id, run in runs.items():
            assert run.tfdt >= ends.get(track_id, 0), "a track's timeline never goes back"
            ends[track_id] = run.tfdt + sum(run.durations)
            written[track_id] += run.samples
    assert len(written[1]) + len(written[2]) + cutter.muxer.dropped == len(pushed[1] + pushed[2])
    for track_id, samples in written.items():
        source = iter(pushed[track_id])
        assert all(any(s == x for x in source) for s in samples), "in push order"
    return segments


def test_cutter_finish_opens_the_last_segment_with_the_held_keyframe() -> None:
    """Found by hypothesis: the last frame is the only keyframe after the first and opens a
    segment, so at the end the muxer holds that keyframe, the audio stamped with it and the
    audio stamped just before it. That earlier audio must not open the last segment as a
    part without video: the keyframe opens it, with that audio in the same part (as in
    every segment's first part, whose audio starts with the sample straddling the cut).
    A publisher back afterwards continues the timeline in a new segment."""
    dts = [*range(0, 500, 50), 491, 520, 550, 600, 650, 700, 800, 900, 951, 1032]
    intervals = [b - a for a, b in zip([0, *dts], dts, strict=False)]
    assert len(intervals) == 20
    cutter = PartCutter(part_target=0.5, segment_target=1.0, segment_max=3.0)
    frames = av_stream(intervals, {19})
    cuts = run_cutter(cutter, frames)
    segments = check_cut_stream(cutter, frames, cuts, 0.5)
    assert [[round(p.duration, 3) for p in s] for s in segments] == [[0.491, 0.46, 0.081], [0.081]]
    last = segments[1][0]
    assert last.independent and [(r.track_id, r.first_dts) for r in last.runs] == [
        (1, 1032),
        (2, 951),
    ]
    assert [r.sample_count for r in last.runs] == [1, 2]
    # the publisher back within the linger: a new segment, the timeline going on
    back = [f for f in av_stream([1200, *[40] * 9], set()) if not f.header]
    more = run_cutter(cutter, back)
    assert more[0].new_segment and not any(c.new_segment for c in more[1:])
    assert more[0].part.independent and more[0].part.start == pytest.approx(1.2)
    check_cut_stream(cutter, frames + back, cuts + more, 0.5)


def test_cutter_codec_change_after_a_segment_opening_keyframe() -> None:
    """The same hold, ended by a codec change instead of finish(): the forced part holds
    the keyframe and both audio samples and opens its segment; the new init opens the next."""
    dts = [*range(0, 500, 50), 491, 520, 550, 600, 650, 700, 800, 900, 951, 1032, 1100]
    intervals = [b - a for a, b in zip([0, *dts], dts, strict=False)]
    cutter = PartCutter(part_target=0.5, segment_target=1.0)
    frames = av_stream(intervals, {19, 20}, change_at=20)
    cuts = run_cutter(cutter, frames)
    segments = check_cut_stream(cutter, frames, cuts, 0.5)
    assert [[p.init.version for p in s] for s in segments] == [[1, 1, 1], [1], [2]]
    assert all(s[0].independent for s in segments)
    assert [r.sample_count for r in segments[1][0].runs] == [1, 2]


def test_cutter_audio_continues_after_a_codec_change_on_a_zero_length_run() -> None:
    """Found by hypothesis: frames all stamped 0, then a codec change at 33 ms: the forced
    part's audio lasts until 33 ms, and the audio after it starts there, not before."""
    cutter = PartCutter(part_target=0.2, segment_target=1.0, segment_max=3.0)
    frames = av_stream([0, 0, 0, 0, 0, 0, 0, 33], {7}, change_at=7)
    cuts = run_cutter(cutter, frames)
    segments = check_cut_stream(cutter, frames, cuts, 0.2)
    assert [[p.init.version for p in s] for s in segments] == [[1, 1], [2]]


def test_a_flush_without_video_ready_writes_no_audio_only_part() -> None:
    """With a video track, a part always has video: audio waits for the next video cut."""
    muxer = Fmp4Muxer()
    muxer.push(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    muxer.push(Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER))
    muxer.push(video_frames([0], {0})[0])
    for i, dts in enumerate((0, 20)):
        muxer.push(Frame.from_payload(Kind.AUDIO, dts, audio_payload(10, i)))
    muxer.push(video_frames([40], set())[0])
    first = muxer.flush_part()  # video 0 and audio 0; audio 20 is held (no duration yet)
    assert first is not None and [r.sample_count for r in first.runs] == [1, 1]
    muxer.push(Frame.from_payload(Kind.AUDIO, 40, audio_payload(10, 2)))
    # audio 20 is ready and stamped before the held video 40, but no video is: nothing
    assert muxer.flush_part() is None
    last = muxer.flush_part(final=True)
    assert last is not None and [r.sample_count for r in last.runs] == [1, 2]


@settings(max_examples=400, deadline=None)
@given(
    intervals=st.lists(
        st.sampled_from([0, 1, 33, 34, 40, 100, 120]) | st.integers(0, 120),
        min_size=1,
        max_size=120,
    ),
    keys=st.sets(st.integers(0, 119)),
    change_at=st.one_of(st.none(), st.integers(1, 119)),
    part_target=st.sampled_from([0.2, 0.25, 0.333, 0.5]),
    silences=st.lists(
        st.tuples(st.integers(0, 119), st.integers(0, 3000), st.booleans()), max_size=3
    ),
    video_gap=st.sampled_from([None, 0.5, 1.0]),
)
def test_cutter_never_exceeds_the_part_target(
    intervals: list[int],
    keys: set[int],
    change_at: int | None,
    part_target: float,
    silences: list[tuple[int, int, bool]],
    video_gap: float | None,
) -> None:
    """Random timing, keyframes, a codec change, and stretches where video stops while the
    audio goes on (``silences``: after which frame, how many ms, whether video is back
    with a keyframe)."""
    cutter = PartCutter(
        part_target=part_target,
        segment_target=1.0,
        segment_max=3.0,
        video_gap=None if video_gap is None else max(video_gap, part_target),
    )
    pauses = {i % len(intervals): ms for i, ms, _ in silences}
    keys = keys | {i % len(intervals) + 1 for i, _, key in silences if key}
    frames = av_stream(intervals, keys, change_at, pauses)
    cuts = run_cutter(cutter, frames)
    check_cut_stream(cutter, frames, cuts, part_target)
    if change_at is not None and cuts:
        versions = [c.part.init.version for c in cuts]
        assert versions == sorted(versions)


def video_frames(dts_list: list[int], keys: set[int]) -> list[Frame]:
    return [
        Frame.from_payload(Kind.VIDEO, dts, video_payload(i in keys, 0, 20, i))
        for i, dts in enumerate(dts_list)
    ]


@pytest.mark.parametrize("gop_ms", [990, 1000, 1020])
def test_cutter_opens_a_segment_at_a_keyframe_exactly_on_the_target(gop_ms: int) -> None:
    """A keyframe that lands exactly at ``segment_target`` opens the next segment (a 1 s
    GOP with a 1 s target gives 1 s segments, not 2 s); one a frame early does not."""
    cutter = PartCutter(part_target=0.3, segment_target=1.0)
    dts = [round(i * gop_ms / 30) for i in range(91)]  # keyframes at 0, gop_ms, 2 gop_ms
    frames = [Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER)]
    frames += video_frames(dts, {0, 30, 60, 90})
    segments = segments_of(run_cutter(cutter, frames))
    lengths = [round(sum(p.duration for p in seg), 3) for seg in segments]
    if gop_ms >= 1000:
        assert lengths[:3] == [gop_ms / 1000] * 3
    else:  # 0.99 s < target: the segment runs to the next keyframe
        assert lengths[0] == round(2 * gop_ms / 1000, 3)


def test_cutter_cuts_before_a_codec_change_so_the_forced_part_stays_short() -> None:
    """The header comes stamped like the frame before it: the muxer cannot know how long
    that held frame lasts, so the cutter writes the ready part first and the forced part
    holds that one frame."""
    cutter = PartCutter(part_target=0.3, segment_target=1.0)
    changed = bytearray(AVC_HEADER)
    changed[8] = changed[16] = 0x1E
    frames = [Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER)]
    frames += video_frames([i * 33 for i in range(10)], {0})  # 0..297 ms
    frames.append(Frame.from_payload(Kind.VIDEO, 297, bytes(changed)))
    frames += video_frames([297 + 33 * i for i in range(1, 5)], {0})
    cuts = run_cutter(cutter, frames)
    assert [round(c.part.duration, 3) for c in cuts] == [0.297, 0.033, 0.099, 0.033]
    assert [c.part.init.version for c in cuts] == [1, 1, 2, 2]
    assert [c.new_segment for c in cuts] == [True, False, True, False]


def test_cutter_opens_a_segment_on_any_init_change_and_after_finish() -> None:
    cutter = PartCutter(part_target=0.3, segment_target=1.0)
    first = [Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER), *video_frames([0, 33, 66], {0})]
    cuts = run_cutter(cutter, first)
    assert [c.new_segment for c in cuts] == [True, False]
    # the same publisher back: a new segment, same init
    cuts = run_cutter(cutter, video_frames([100, 133, 166], {0}))
    assert [c.new_segment for c in cuts] == [True, False]
    assert {c.part.init.version for c in cuts} == {1}
    # the relay flushed everything itself; then another codec config: nothing is forced
    # out, yet the next part is under a new init, so it opens a segment
    cuts = [c for f in video_frames(list(range(200, 700, 33)), set()) for c in cutter.push(f)]
    assert [c.new_segment for c in cuts] == [True]  # after finish: a new segment
    assert cutter.muxer.flush_part(final=True) is not None
    changed = bytearray(AVC_HEADER)
    changed[8] = changed[16] = 0x1E
    assert cutter.push(Frame.from_payload(Kind.VIDEO, 300, bytes(changed))) == []
    cuts = [c for f in video_frames([300, 333, 366], {0}) for c in cutter.push(f)]
    cuts += cutter.finish()
    assert cuts[0].new_segment and cuts[0].part.init.version == 2


def test_cutter_segment_max_bounds_segments_without_keyframes() -> None:
    cutter = PartCutter(part_target=0.3, segment_target=1.0, segment_max=2.0)
    frames = [Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER)]
    frames += video_frames([i * 40 for i in range(150)], {0})  # 6 s, one keyframe
    segments = segments_of(run_cutter(cutter, frames))
    durations = [sum(p.duration for p in s) for s in segments]
    assert len(segments) == 3 and all(2.0 <= d < 2.0 + 0.3 for d in durations[:-1])
    assert segments[0][0].independent and not segments[1][0].independent


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([23, 23, 24, 0, 5, 40, 100]), min_size=1, max_size=150),
    part_target=st.sampled_from([0.2, 0.333]),
)
def test_cutter_keeps_audio_only_parts_within_target(gaps: list[int], part_target: float) -> None:
    cutter = PartCutter(part_target=part_target, segment_target=1.0)
    frames = [Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER)]
    dts = 0
    for i, gap in enumerate(gaps):
        dts += gap
        frames.append(Frame.from_payload(Kind.AUDIO, dts, audio_payload(10, i)))
    cuts = run_cutter(cutter, frames)
    assert sum(c.part.runs[0].sample_count for c in cuts) == len(gaps)
    assert [c.part.duration for c in cuts if c.part.duration > part_target + 1e-9] == []
    for segment in segments_of(cuts)[:-1]:
        assert 1.0 - 1e-9 <= sum(p.duration for p in segment) < 1.0 + part_target


def test_pending_duration_at_predicts_the_next_flush() -> None:
    """What ``pending_duration_at(dts)`` says before a push is what ``pending_duration``
    says after it: decode times clamped for video, on the AAC sample grid for audio."""
    video = Fmp4Muxer()
    video.push(Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER))
    for frame in video_frames([1000, 1033, 1066], {0}):
        video.push(frame)
    for dts in (1100, 1050):  # a later frame, and one stamped before the newest
        predicted = video.pending_duration_at(dts)
        video.push(video_frames([dts], set())[0])
        assert predicted == video.pending_duration
    assert video.pending_duration == pytest.approx(0.1)
    audio = Fmp4Muxer()
    audio.push(Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER))
    for i, dts in enumerate((0, 23, 46, 70, 93, 400)):
        predicted = audio.pending_duration_at(dts)
        audio.push(Frame.from_payload(Kind.AUDIO, dts, audio_payload(10, i)))
        assert predicted == audio.pending_duration
    assert audio.pending_duration == (400 * 44_100 + 500) // 1000 / 44_100
    assert audio.buffered_bytes == 6 * 10


# --------------------------------------------------------------------------------------
# PartCutter: video stops while audio goes on
# --------------------------------------------------------------------------------------


def gap_stream(video_until: int, video_back: int, end: int, back_key: bool = True) -> list[Frame]:
    """30 fps video (a keyframe a second) and AAC audio (1024 samples at 44.1 kHz, stamped
    in ms like an encoder), video silent from ``video_until`` to ``video_back`` (ms); the
    first frame back is a keyframe if ``back_key``. Interleaved by timestamp."""
    media: list[tuple[int, int, Frame]] = []
    for i in range(end * 30 // 1000):
        dts = round(i * 1000 / 30)
        if video_until <= dts < video_back:
            continue
        key = i % 30 == 0 or (dts >= video_back and back_key and dts - video_back < 33)
        media.append((dts, 0, Frame.from_payload(Kind.VIDEO, dts, video_payload(key, 0, 30, i))))
    for i in range(end * 44_100 // 1024 // 1000):
        dts = round(i * 1024 * 1000 / 44_100)
        media.append((dts, 1, Frame.from_payload(Kind.AUDIO, dts, audio_payload(12, i))))
    media.sort(key=lambda m: (m[0], m[1]))
    head = [
        Frame.from_payload(Kind.VIDEO, 0, AVC_HEADER),
        Frame.from_payload(Kind.AUDIO, 0, AAC_HEADER),
    ]
    return head + [m[2] for m in media]


def test_cutter_keeps_cutting_audio_parts_while_video_is_stopped() -> None:
    """Video for 2 s, 10 s of audio alone, video again (a keyframe): parts keep coming
    during the gap (audio-only, independent, within the target), segments keep closing
    at part boundaries past the target, the returning keyframe opens a segment; nothing
    lost or reordered, and the muxer's buffer (64 samples here, 4096 in the relay) never
    fills although 10 s of audio is 430 frames."""
    part_target = 0.333
    cutter = PartCutter(
        part_target=part_target,
        segment_target=1.0,
        segment_max=4.0,
        muxer=Fmp4Muxer(max_buffer_samples=64),
    )
    frames = gap_stream(2000, 12000, 14000)
    cuts: list[Cut] = []
    for frame in frames:
        cuts += cutter.push(frame)
        if frame.kind == Kind.AUDIO and 2000 + 1000 * cutter.video_gap < frame.dts < 12000:
            # once the gap is seen, what is cut reaches this frame but for a part or so
            last = cuts[-1].part
            assert last.start + last.duration >= frame.dts / 1000 - part_target - 0.05
    cuts += cutter.finish()
    segments = check_cut_stream(cutter, frames, cuts, part_target)
    parts = [c.part for c in cuts]
    silent = [p for p in parts if 2.1 < p.start < 11.9]
    assert silent and all(not p.has_video and p.independent for p in silent)
    assert sum(p.duration for p in silent) > 9.5
    assert all(p.duration > 0.2 for p in silent[:-1])  # not needlessly short
    # the timeline: each part starts where the one before ended (within an AAC frame)
    for before, after in itertools.pairwise(parts):
        assert abs(after.start - (before.start + before.duration)) < 0.024
    # segments: at keyframes with video, at the first part boundary past 1 s without
    starts = [round(s[0].start, 3) for s in segments]
    assert starts[:2] == [0.0, 1.0] and 12.0 in starts
    gap_segments = [s for s in segments if 2.0 < s[0].start < 11.0]
    assert len(gap_segments) >= 7  # 10 s in segments of 1 to 1.333 s
    for segment in gap_segments[:-1]:
        assert 1.0 - 1e-9 <= sum(p.duration for p in segment) < 1.0 + part_target
    back = next(c for c in cuts if c.part.has_video and c.part.start >= 11.9)
    assert back.new_segment and back.part.independent
    assert back.part.runs[0].first_dts == 12000
    # every part after it has video again
    assert all(p.has_video for p in parts[parts.index(back.part) :])


def test_cutter_video_back_without_a_keyframe_continues_the_segment() -> None:
    """A picture back after the gap that is not a keyframe (it needs the ones before the
    gap) is kept and continues the running segment; the next keyframe past the target
    opens the next one."""
    cutter = PartCutter(part_target=0.333, segment_target=1.0, segment_max=4.0)
    frames = gap_stream(1500, 2500, 5000, back_key=False)
    cuts = run_cutter(cutter, frames)
    segments = check_cut_stream(cutter, frames, cuts, 0.333)
    back = next(c for c in cuts if c.part.has_video and c.part.start >= 2.4)
    assert not back.new_segment and not back.part.independent
    assert round(back.part.start * 1000) == 2500
    # the segment the gap opened (at 2.159, past 1 s after the keyframe at 1.0) runs past
    # the keyframe at 3.0 (0.84 s in: short of the target) to the one at 4.0
    starts = [round(s[0].start, 3) for s in segments]
    assert starts[-1] == 4.0 and 2.0 < starts[-2] < 2.5
    assert not segments[-2][0].has_video and segments[-2][0].independent
