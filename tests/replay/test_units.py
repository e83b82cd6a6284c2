"""Pure parts of the replay package: playlists, card-to-clip planning, sprites, commands."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from replay import commands, playlist
from replay.config import ReplayConfig
from replay.finalize import plan_clips, sprite_vtt
from replay.model import Card, PartRecord, Replay, ReplayState
from replay.storage import FILE_RE, REPLAY_ID_RE

FFMPEG_TS = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:EVENT
#EXTINF:2.000000,
seg-00000.ts
#EXTINF:1.966667,
seg-00001.ts
"""
FFMPEG_FMP4 = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MAP:URI="init.mp4"
#EXTINF:2.000000,
seg-00000.m4s
#EXT-X-ENDLIST
"""


def test_parse_ffmpeg_playlists():
    ts = playlist.parse(FFMPEG_TS)
    assert [s.uri for s in ts.segments] == ["seg-00000.ts", "seg-00001.ts"]
    assert abs(ts.duration - 3.966667) < 1e-6 and not ts.ended and ts.init_uri is None
    mp4 = playlist.parse(FFMPEG_FMP4)
    assert mp4.init_uri == "init.mp4" and mp4.ended and len(mp4.segments) == 1


def test_parse_refuses_paths_outside_the_part():
    text = "#EXTM3U\n#EXTINF:2,\n../../secret.ts\n#EXTINF:2,\n/etc/passwd\n#EXTINF:2,\nok.ts\n"
    assert [s.uri for s in playlist.parse(text).segments] == ["ok.ts"]


@given(st.text(max_size=2000))
def test_parse_never_crashes(text):
    playlist.parse(text)


def test_render_joins_parts_with_discontinuities():
    parts = [("p1", playlist.parse(FFMPEG_TS)), ("p2", playlist.PartPlaylist()),
             ("p3", playlist.parse(FFMPEG_TS))]  # fmt: skip
    live = playlist.render(parts, target=2.0, ended=False, vod=False, prefix="s/r1/")
    assert live.count("#EXT-X-DISCONTINUITY") == 1  # the empty part adds none
    assert "s/r1/p1/seg-00000.ts" in live and "s/r1/p3/seg-00001.ts" in live
    assert "#EXT-X-ENDLIST" not in live and "#EXT-X-PLAYLIST-TYPE:EVENT" in live
    assert "#EXT-X-TARGETDURATION:2\n" in live
    vod = playlist.render(parts, target=2.0, ended=True, vod=True)
    assert vod.rstrip().endswith("#EXT-X-ENDLIST") and "#EXT-X-PLAYLIST-TYPE:VOD" in vod
    fmp4 = playlist.render([("p1", playlist.parse(FFMPEG_FMP4))], target=2, ended=True, vod=True)
    assert '#EXT-X-MAP:URI="p1/init.mp4"' in fmp4 and "#EXT-X-VERSION:7" in fmp4


def test_locate_maps_wall_clock_to_replay_time():
    parts = [(100.0, 10.0), (115.0, 5.0)]  # a 5 s reconnect gap between the parts
    assert playlist.locate(parts, 99.0) == 0.0
    assert playlist.locate(parts, 104.0) == 4.0
    assert playlist.locate(parts, 112.0) == 10.0  # in the gap: start of the next part
    assert playlist.locate(parts, 117.5) == 12.5
    assert playlist.locate(parts, 121.0) is None


def _replay(cards: list[Card]) -> Replay:
    rep = Replay(id="r0123456789", app="live", stream="s", state=ReplayState.FINALIZING)
    rep.parts = [PartRecord(1, "start", 1000.0, duration=60.0)]
    rep.duration = 60.0
    rep.cards = cards
    return rep


def test_plan_clips_to_next_card_clear_max_and_keyframes():
    cfg = ReplayConfig(clip_max_seconds=20.0, clip_min_seconds=1.0)
    keys = [float(k) for k in range(0, 60, 2)]
    cards = [
        Card(1, 11, 1005.5),  # until the next card at 1015
        Card(2, 12, 1015.0, cleared=1018.0),  # until its clear
        Card(3, 13, 1030.0),  # until clip_max
        Card(4, 14, 1055.0),  # until card 5
        Card(5, 15, 1059.5),  # 0.5 s before the end of the replay: too short
        Card(6, 16, 2000.0),  # after the replay
    ]
    cards.insert(3, Card(7, 17, 1052.0))  # after card 3's 20 s maximum
    plan = plan_clips(_replay(cards), keys, cfg)
    got = {cards[i].card_id: (start, round(dur, 3)) for i, start, dur in plan}
    assert got[1] == (4.0, 11.0)  # start moved back to the keyframe at 4 s; ends at 15
    assert got[2] == (14.0, 4.0)
    assert got[3] == (30.0, 20.0)
    assert got[7] == (52.0, 3.0)
    assert got[4] == (54.0, 5.5)
    assert 5 not in got and 6 not in got
    alone = plan_clips(_replay([Card(8, 18, 1045.0)]), keys, cfg)
    assert [(s, round(d, 3)) for _, s, d in alone] == [(44.0, 16.0)]  # until the end


def test_sprite_vtt_tiles():
    vtt = sprite_vtt(25.0, 10.0, 160, 90, 2, "")
    assert vtt.startswith("WEBVTT")
    assert "00:00:00.000 --> 00:00:10.000\nsprite-1.jpg#xywh=0,0,160,90" in vtt
    assert "00:00:10.000 --> 00:00:20.000\nsprite-1.jpg#xywh=160,0,160,90" in vtt
    assert "00:00:20.000 --> 00:00:25.000\nsprite-1.jpg#xywh=0,90,160,90" in vtt
    big = sprite_vtt(50.0, 10.0, 160, 90, 2, "")
    assert "sprite-2.jpg#xywh=0,0,160,90" in big


def test_record_command_is_stream_copy_hls():
    args = commands.record("ffmpeg", Path("/d/p1"), 2.0, "mpegts")
    assert args[0] == "ffmpeg" and args.index("-loglevel") < args.index("-i")
    assert args[args.index("-i") + 1] == "pipe:0" and args[args.index("-c") + 1] == "copy"
    assert args[args.index("-hls_time") + 1] == "2" and args[-1] == "/d/p1/index.m3u8"
    fmp4 = commands.record("ffmpeg", Path("/d/p1"), 2.0, "fmp4")
    assert fmp4[fmp4.index("-hls_segment_type") + 1] == "fmp4"


def test_names():
    assert REPLAY_ID_RE.match(Replay.new_id())
    for ok in ("p1/seg-00001.ts", "index.m3u8", "replay.mp4", "clip-3.mp4", "thumbs.vtt"):
        assert FILE_RE.match(ok), ok
    for bad in ("replay.json", "../x.ts", "p1/../../x.ts", "p1/seg.ts.tmp", "a/b/c.ts"):
        assert not FILE_RE.match(bad), bad


async def test_salvage_lists_segments_ffmpeg_wrote_but_did_not_list(tmp_path):
    import shutil
    import subprocess

    from core.ffmpeg import ffmpeg_exe
    from replay.finalize import PartFiles, salvage

    part = tmp_path / "p1"
    part.mkdir()
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=10",
         "-t", "1", "-c:v", "libx264", "-f", "mpegts", str(part / "seg-00000.ts")],
        check=True,
    )  # fmt: skip
    shutil.copy(part / "seg-00000.ts", part / "seg-00001.ts")
    (part / "seg-00002.ts").write_bytes(b"")  # empty: not a segment
    files = PartFiles("p1", playlist.parse("#EXTM3U\n#EXTINF:1.0,\nseg-00000.ts\n"))
    gained = await salvage(tmp_path, files, 30)
    assert 0.8 <= gained <= 1.2
    assert [s.uri for s in files.playlist.segments] == ["seg-00000.ts", "seg-00001.ts"]
    text = (part / "index.m3u8").read_text()
    assert "\nseg-00001.ts\n" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert await salvage(tmp_path, PartFiles("p1", playlist.parse(text)), 30) == 0.0
