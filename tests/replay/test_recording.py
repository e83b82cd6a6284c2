"""Recording with real ffmpeg: publish over RTMP, read live HLS, the VOD playlist and the
MP4 with PyAV/ffmpeg."""

from __future__ import annotations

import asyncio

from replay import ReplayState
from tests.mediautil import make_clip, probe_packets, start_publisher, wait_for
from tests.replay.helpers import (
    LINGER,
    decode_all,
    duration,
    get_json,
    get_text,
    probe,
    service_of,
    stream_types,
    wait_done,
    wait_replay,
)

GOP = 1.0  # seconds (30 frames at 30 fps)


async def test_twenty_second_show_live_hls_then_vod_and_mp4(server_factory, clip_dir):
    clip = make_clip(clip_dir / "av20.flv", 20.0, gop=30)
    server = await server_factory(relay={"publisher_linger": LINGER})
    ready: list[dict] = []
    server.runtime.bus.subscribe("replay.ready", lambda e: ready.append(e.data))
    pub = await start_publisher(server.push_url("show"), clip)
    rep = await wait_replay(server, "live", "show")
    svc = service_of(server)

    # live: an LL-HLS playlist without an end, PyAV reads it
    def live_segments() -> int:
        rec = svc.live_recording("live", "show")
        return rec.segment_count if rec is not None else 0

    await wait_for(lambda: live_segments() >= 2, 20)
    live = f"{server.http_url}/live/show.m3u8"
    status, text = await get_text(live)
    assert status == 200, text
    # the live playlist is the hub's LL-HLS (relay.hls), the recording is ffmpeg's
    assert "#EXT-X-PART-INF" in text and "#EXT-X-ENDLIST" not in text
    info = await asyncio.to_thread(probe, live)
    assert stream_types(info) == {"video", "audio"}
    status, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    assert status == 200 and view["state"] == "recording" and view["hls"] == live
    assert rep.state is ReplayState.RECORDING

    _, err = await asyncio.wait_for(pub.communicate(), 60)
    assert pub.returncode == 0, err
    await wait_done(rep)
    assert rep.state is ReplayState.READY, rep.error
    assert rep.error is None
    status, view = await get_json(f"{server.http_url}/api/replays/{rep.id}")
    assert status == 200 and view["state"] == "ready"
    assert view["hls"].endswith(f"/live/show/{rep.id}/index.m3u8")
    status, vod_text = await get_text(view["hls"])
    assert status == 200 and "#EXT-X-ENDLIST" in vod_text and "#EXT-X-PLAYLIST-TYPE:VOD" in vod_text
    assert "#EXT-X-DISCONTINUITY" not in vod_text

    for url in (view["hls"], view["mp4"]):
        info = await asyncio.to_thread(probe, url)
        assert stream_types(info) == {"video", "audio"}, url
        assert abs(duration(info) - 20.0) <= GOP, (url, duration(info))
        await asyncio.to_thread(decode_all, url)
        packets = await asyncio.to_thread(probe_packets, url)
        video = [p for p in packets if p["codec_type"] == "video"]
        audio = [p for p in packets if p["codec_type"] == "audio"]
        assert abs(len(video) - 600) <= 30, (url, len(video))
        assert abs(len(audio) - 20 * 44100 / 1024) <= 44, (url, len(audio))
        assert video[0]["flags"].startswith("K")
    mp4 = await asyncio.to_thread(probe, view["mp4"])
    assert mp4["format"]["format_name"].startswith("mov,mp4")
    assert abs(view["duration"] - 20.0) <= GOP
    assert view["codecs"]["video"]["codec"] == "h264"
    assert view["codecs"]["audio"]["codec"] == "aac"
    assert view["codecs"]["video"]["width"] == 320
    # covers: a snapshot and a sprite with its WebVTT
    status, _ = await get_text(view["thumbnails"])
    assert status == 200
    _, vtt = await get_text(view["thumbnails"])
    assert vtt.startswith("WEBVTT") and "sprite-1.jpg#xywh=0,0,160,90" in vtt
    async with __import__("aiohttp").ClientSession() as s:
        async with s.get(view["cover"]) as r:
            assert r.status == 200 and r.content_type == "image/jpeg"
            assert (await r.read())[:2] == b"\xff\xd8"
        async with s.get(view["mp4"], headers={"Range": "bytes=0-99"}) as r:
            assert r.status == 206 and len(await r.read()) == 100
    # the event the control plane waits for
    await wait_for(lambda: bool(ready), 5)
    event = ready[0]
    assert event["replay_id"] == rep.id and event["app"] == "live" and event["stream"] == "show"
    assert event["hls"] == view["hls"] == event["url"] and event["mp4"] == view["mp4"]
    assert abs(event["duration"] - 20.0) <= GOP and event["size"] > 0
    assert set(event["codecs"]) == {"video", "audio"}
    # the stream ended: its live LL-HLS URL is gone (404); the replay has its VOD URL
    status, text = await get_text(live)
    assert status == 404, text
