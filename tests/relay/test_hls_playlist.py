"""LivePlaylist (sans-I/O) fed by the real cutter with real encoded clips."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from media import flv
from media.fmp4 import PartCutter
from media.frame import Frame, Kind
from relay.hls_playlist import FILE_RE, LivePlaylist
from tests.mediautil import make_clip
from tests.relay.hls_check import History, PlaylistError, check, parse

BASE = 1_800_000_000.0
PART_TARGET = 0.333


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hlsclips")
    return {
        "gop2": make_clip(d / "gop2.flv", 12.0, gop=60),
        "big": make_clip(d / "big.flv", 4.0, gop=30, size="480x270"),
    }


def flv_frames(path: Path, offset: int = 0) -> list[Frame]:
    tags = [t for t in flv.FlvDemuxer().feed(path.read_bytes()) if isinstance(t, flv.FlvTag)]
    return [Frame.from_payload(Kind(t.tag_type), t.timestamp + offset, t.body) for t in tags]


def new_playlist(window: int = 4) -> LivePlaylist:
    return LivePlaylist(
        name="s", token="0123abcd", part_target=PART_TARGET, segment_max=4.0, window=window
    )


def feed(
    playlist: LivePlaylist, cutter: PartCutter, frames: list[Frame], history: History | None
) -> list[str]:
    texts = []
    for frame in frames:
        for cut in cutter.push(frame):
            playlist.add(cut.part, cut.new_segment, BASE + frame.dts / 1000)
            text = playlist.render()
            texts.append(text)
            if history is not None:
                history.add(text)
    return texts


def decode(init: bytes, segment: bytes) -> int:
    with av.open(io.BytesIO(init + segment), format="mp4") as c:
        return sum(len(p.decode()) for p in c.demux(c.streams.video[0]))


def test_live_window_of_a_real_stream(clips: dict[str, Path]) -> None:
    playlist = new_playlist(window=4)
    cutter = PartCutter(part_target=PART_TARGET, segment_target=1.0, segment_max=4.0)
    history = History(max_segments=5)
    frames = flv_frames(clips["gop2"])
    frames += flv_frames(clips["gop2"], offset=frames[-1].dts + 33)  # 24 s, one encoder
    texts = feed(playlist, cutter, frames, history)
    pl = parse(texts[-1])
    assert pl.target_duration == 4 and pl.part_target == PART_TARGET
    assert pl.tags["#EXT-X-VERSION"] == "9"
    # 24 s at a 2 s GOP: segments 0..10 complete (11 is open), the window keeps the last 4
    complete = [s for s in pl.segments if s.duration is not None]
    assert len(complete) == 4 and pl.media_sequence == 7
    for seg in complete:
        assert 1.9 <= seg.duration <= 2.1, seg.duration
    # parts: 200-333 ms, each segment opens on an independent part
    for seg in pl.segments:
        if seg.parts:
            assert seg.parts[0]["INDEPENDENT"] == "YES"
            assert all(0.2 <= float(p["DURATION"]) <= PART_TARGET for p in seg.parts[:-1])
    # the program date follows the media timeline
    assert pl.segments[0].pdt is not None and pl.segments[0].pdt.endswith("Z")
    # a listed segment plays: its init + styp + parts
    last = complete[-1]
    assert last.uri is not None
    m = FILE_RE.match(last.uri.rsplit("/", 1)[1])
    assert m is not None
    data = playlist.segment_data(int(m.group(2)))
    init = playlist.init_data(1)
    assert data is not None and init is not None and data[4:8] == b"styp"
    assert decode(init, data) == 60
    # segments that slid out: a few are still served, older ones are gone
    assert playlist.segment_data(pl.media_sequence - 1) is not None
    assert playlist.segment_data(pl.media_sequence - 3) is not None
    assert playlist.segment_data(pl.media_sequence - 4) is None
    assert playlist.part_data(0, 0) is None


def test_codec_change_makes_a_discontinuity_with_a_new_map(clips: dict[str, Path]) -> None:
    playlist = new_playlist(window=2)
    cutter = PartCutter(part_target=PART_TARGET, segment_target=1.0, segment_max=4.0)
    history = History(max_segments=3)
    first = flv_frames(clips["gop2"])[:300]  # ~5 s
    feed(playlist, cutter, first, history)
    big = flv_frames(clips["big"], offset=first[-1].dts + 40)
    big += flv_frames(clips["big"], offset=big[-1].dts + 33)[2:]  # no header: same codec
    texts = feed(playlist, cutter, big, history)
    after = [parse(t) for t in texts if "init-2.mp4" in t]
    assert after, "no new map after the codec change"
    pl = after[0]
    changed = [s for s in pl.segments if s.map_uri and s.map_uri.endswith("init-2.mp4")]
    assert changed[0].discontinuity
    assert history.discontinuities == 1
    # the window slides past the discontinuity: the sequence counts it
    final = parse(texts[-1])
    assert final.discontinuity_sequence == 1 and not final.segments[0].discontinuity
    assert playlist.init_data(2) is not None


def test_takeover_marks_a_discontinuity(clips: dict[str, Path]) -> None:
    playlist = new_playlist()
    cutter = PartCutter(part_target=PART_TARGET, segment_target=1.0)
    frames = flv_frames(clips["gop2"])
    feed(playlist, cutter, frames[:200], None)
    for cut in cutter.finish():
        playlist.add(cut.part, cut.new_segment, BASE + 10)
    playlist.mark_discontinuity()
    open_before = playlist.next_position()
    assert open_before[1] == 0  # the open segment was closed
    again = flv_frames(clips["gop2"], offset=frames[199].dts + 40)
    history = History()
    feed(playlist, cutter, again[:200], history)
    pl = history.last
    assert pl is not None
    disc = [s for s in pl.segments if s.discontinuity]
    assert len(disc) == 1 and disc[0].msn == open_before[0]
    assert disc[0].map_uri == pl.segments[0].map_uri  # same codec: same map


def test_blocking_positions() -> None:
    playlist = new_playlist()
    assert playlist.empty and playlist.next_position() == (0, 0)
    assert not playlist.has(0, 0) and not playlist.has(0, None)
    assert not playlist.too_far(1) and playlist.too_far(2)


def test_positions_follow_parts(clips: dict[str, Path]) -> None:
    playlist = new_playlist()
    cutter = PartCutter(part_target=PART_TARGET, segment_target=1.0)
    feed(playlist, cutter, flv_frames(clips["gop2"])[:400], None)  # ~3 s
    msn, idx = playlist.next_position()
    assert msn >= 1 and idx >= 1
    prev = msn - 1
    assert playlist.has(prev, None) and playlist.has(prev, 99)  # past a complete one's end
    assert playlist.has(msn, idx - 1) and not playlist.has(msn, idx)
    assert not playlist.has(msn, None)
    assert not playlist.too_far(msn + 2) and playlist.too_far(msn + 3)
    assert playlist.part_data(msn, idx - 1) is not None and playlist.part_data(msn, idx) is None
    assert playlist.segment_data(msn) is None  # not complete yet
    assert playlist.segment_data(prev) is not None


def test_checker_catches_broken_playlists(clips: dict[str, Path]) -> None:
    """The checker is not a rubber stamp: each rule it claims fails on a planted fault."""
    playlist = new_playlist()
    cutter = PartCutter(part_target=PART_TARGET, segment_target=1.0)
    text = feed(playlist, cutter, flv_frames(clips["gop2"])[:200], None)[-1]
    check(parse(text))
    faults = [
        text.replace("PART-TARGET=0.333", "PART-TARGET=0.2"),  # parts longer than the target
        "\n".join(ln for ln in text.splitlines() if "PRELOAD-HINT" not in ln),
        text.replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"),
        text.replace("part-1.1.m4s", "part-1.7.m4s"),
        text.replace("#EXT-X-PROGRAM-DATE-TIME", "#EXT-X-NOTHING", 1),
    ]
    for broken in faults:
        with pytest.raises(PlaylistError):
            check(parse(broken))
    history = History()
    history.add(text)
    with pytest.raises(PlaylistError):  # a listed segment changed its duration on reload
        history.add(text.replace("#EXTINF:2.", "#EXTINF:1.", 1))
    sliding = new_playlist(window=2)
    texts = feed(sliding, PartCutter(part_target=PART_TARGET, segment_target=1.0),
                 flv_frames(clips["gop2"]), None)  # fmt: skip
    later = next(t for t in texts if "#EXT-X-MEDIA-SEQUENCE:0" not in t)
    history = History()
    history.add(later)
    with pytest.raises(PlaylistError, match="media sequence went back"):
        history.add(texts[0])
    with pytest.raises(PlaylistError):
        check(parse(text), max_segments=1)
