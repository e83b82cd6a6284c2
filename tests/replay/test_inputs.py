"""Streams that are not plain H.264 + AAC: video only, audio only, HEVC, a codec change."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.ffmpeg import bundled_ffmpeg_exe
from media import flv
from replay import ReplayState
from tests.mediautil import frame_sizes, make_clip, start_publisher, wait_for
from tests.replay.helpers import (
    LINGER,
    decode_all,
    duration,
    get_json,
    get_text,
    probe,
    run_publisher,
    service_of,
    stream_types,
    wait_done,
    wait_replay,
)

GOP = 1.0


async def _record(server_factory, clip: Path, stream: str, exe: str | None = None):
    server = await server_factory(relay={"publisher_linger": LINGER})
    await run_publisher(server.push_url(stream), clip, exe=exe)
    rep = await wait_replay(server, "live", stream)
    await wait_done(rep)
    _, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    return server, rep, view


async def test_video_without_audio(server_factory, clip_dir):
    clip = make_clip(clip_dir / "v3.flv", 3.0, gop=30, audio=False)
    _server, rep, view = await _record(server_factory, clip, "mute")
    assert rep.state is ReplayState.READY, rep.error
    assert set(view["codecs"]) == {"video"}
    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video"}
        assert abs(duration(info) - 3.0) <= GOP
        await asyncio.to_thread(decode_all, url)
    assert view["cover"] is not None


async def test_audio_only(server_factory, clip_dir):
    clip = make_clip(clip_dir / "a3.flv", 3.0, video=False)
    _server, rep, view = await _record(server_factory, clip, "radio")
    assert rep.state is ReplayState.READY, rep.error
    assert set(view["codecs"]) == {"audio"}
    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"audio"}
        assert abs(duration(info) - 3.0) <= 0.5
        await asyncio.to_thread(decode_all, url)
    assert view["cover"] is None and view["thumbnails"] is None


async def test_hevc_enhanced_rtmp(server_factory, clip_dir):
    clip = make_clip(clip_dir / "hevc3.flv", 3.0, gop=30, vcodec="libx265")
    _server, rep, view = await _record(server_factory, clip, "hevc", exe=bundled_ffmpeg_exe())
    assert rep.state is ReplayState.READY, rep.error
    assert rep.parts[0].video_codec == "hvc1"
    assert view["codecs"]["video"]["codec"] == "hevc"
    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video", "audio"}
        assert abs(duration(info) - 3.0) <= GOP
        await asyncio.to_thread(decode_all, url)
    mp4 = await asyncio.to_thread(probe, view["mp4"])
    video = next(s for s in mp4["streams"] if s["codec_type"] == "video")
    assert video["codec_tag_string"] == "hvc1"  # plays on Apple devices


def _splice(a: Path, b: Path, out: Path) -> Path:
    """One FLV: ``a`` then ``b`` (other resolution) with ``b``'s sequence headers mid-stream."""
    if out.exists():
        return out
    tags = []
    end = 0
    for src in (a, b):
        demux = flv.FlvDemuxer()
        items = [t for t in demux.feed(src.read_bytes()) if isinstance(t, flv.FlvTag)]
        base = end
        for t in items:
            if t.tag_type == 18 and base:
                continue  # one onMetaData
            tags.append(flv.tag(t.tag_type, base + t.timestamp, t.body))
            end = max(end, base + t.timestamp + 34)
    out.write_bytes(flv.file_header(True, True) + b"".join(tags))
    return out


async def test_codec_change_mid_stream(server_factory, clip_dir):
    small = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    big = make_clip(clip_dir / "av3_big.flv", 3.0, gop=30, size="480x270")
    clip = _splice(small, big, clip_dir / "change.flv")
    _server, rep, view = await _record(server_factory, clip, "change")
    assert rep.state is ReplayState.READY, rep.error
    assert [p.reason for p in rep.parts] == ["start", "codec"]
    _, text = await get_text(view["hls"])
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    info = await asyncio.to_thread(probe, view["hls"])
    assert stream_types(info) == {"video", "audio"}
    assert abs(duration(info) - 6.0) <= 2 * GOP
    await asyncio.to_thread(decode_all, view["hls"])
    # both resolutions are in the replay
    sizes = await asyncio.to_thread(frame_sizes, view["mp4"] or view["hls"])
    assert {(320, 180), (480, 270)} <= sizes, sizes


async def test_fmp4_segments(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av4.flv", 4.0, gop=30)
    server = await server_factory(
        relay={"publisher_linger": LINGER}, replay={"segment_type": "fmp4"}
    )
    pub = await start_publisher(server.push_url("frag"), clip)
    rep = await wait_replay(server, "live", "frag")
    rec = service_of(server).recordings["live/frag"]
    await wait_for(lambda: rec.segment_count >= 1, 15)
    live = f"{server.http_url}/live/frag.m3u8"
    _, text = await get_text(live)
    assert '#EXT-X-MAP:URI="frag.hls/' in text and ".m4s" in text  # the hub's LL-HLS
    info = await asyncio.to_thread(probe, live)
    assert stream_types(info) == {"video", "audio"}
    _, err = await asyncio.wait_for(pub.communicate(), 30)
    assert pub.returncode == 0, err
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    _, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video", "audio"}
        assert abs(duration(info) - 4.0) <= GOP, (url, duration(info))
        await asyncio.to_thread(decode_all, url)
    assert view["cover"] is not None


async def test_codec_family_change_keeps_hls_and_explains_the_missing_mp4(server_factory, clip_dir):
    """H.264 then HEVC in one broadcast (the anchor switched encoder): both parts are in the
    HLS replay; one MP4 track cannot hold both, so no MP4 and a reason."""
    h264 = make_clip(clip_dir / "av3.flv", 3.0, gop=30)
    hevc = make_clip(clip_dir / "hevc3.flv", 3.0, gop=30, vcodec="libx265")
    server = await server_factory(relay={"publisher_linger": LINGER})
    await run_publisher(server.push_url("switch"), h264)
    rep = await wait_replay(server, "live", "switch")
    await run_publisher(server.push_url("switch"), hevc, exe=bundled_ffmpeg_exe())
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    assert [p.video_codec for p in rep.parts] == ["avc1", "hvc1"]
    assert rep.mp4 is None and rep.error and "codecs change" in rep.error
    _, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    _, text = await get_text(view["hls"])
    assert text.count("#EXT-X-DISCONTINUITY") == 1
    base = view["hls"].rsplit("/", 1)[0]
    for part, codec in (("p1", "h264"), ("p2", "hevc")):
        info = await asyncio.to_thread(probe, f"{base}/{part}/index.m3u8")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert video["codec_name"] == codec
        assert abs(duration(info) - 3.0) <= GOP
