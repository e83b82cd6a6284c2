"""More of the media path: hooks, key rotation and kicks, HEVC (Enhanced RTMP),
audio-only / video-only streams, coalesced writes."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from aiohttp import web

from core.ffmpeg import bundled_ffmpeg_exe
from ingest import auth
from media import flv
from relay import REGISTRY
from tests.conftest import TEST_SECRET
from tests.integration.test_media_path import FlvReader, _push_and_capture, _read_http
from tests.mediautil import make_clip, start_publisher, stop, wait_for


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("more_clips")
    return {
        "av": make_clip(d / "av.flv", 3.0, gop=30),
        "audio": make_clip(d / "audio.flv", 3.0, video=False),
        "video": make_clip(d / "video.flv", 3.0, gop=30, audio=False),
        "hevc": make_clip(d / "hevc.flv", 3.0, gop=30, vcodec="libx265"),
    }


async def _hook_server(answers: dict[str, tuple[int, str]]):
    calls: list[dict] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append(body)
        status, text = answers.get(body["action"], (200, "0"))
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]  # public: the bound (host, port) of each site
    return runner, f"http://127.0.0.1:{port}/hook", calls


async def test_srs_style_hooks_allow_refuse_and_notify(server_factory, clips):
    runner, url, calls = await _hook_server({"on_play": (200, '{"code": 1}')})
    try:
        hooks = {"on_publish": url, "on_unpublish": url, "on_play": url, "on_stop": url}
        srv = await server_factory(ingest=hooks, relay={"publisher_linger": 0.2})
        rc, err = await _push_and_capture(srv.push_url("hk"), clips["av"])
        assert rc == 0, err
        await wait_for(lambda: any(c["action"] == "on_unpublish" for c in calls), 5)
        pub = next(c for c in calls if c["action"] == "on_publish")
        assert (
            pub["app"] == "live" and pub["stream"] == "hk" and pub["param"].startswith("?expire=")
        )
        # on_play answers a non-zero code: HTTP-FLV viewers are refused with 403
        p = await start_publisher(srv.push_url("hk2"), clips["av"], loop=True)
        try:
            await wait_for(lambda: srv.app[REGISTRY].get("live", "hk2") is not None, 10)
            import aiohttp

            async with aiohttp.ClientSession() as s:
                async with s.get(f"{srv.http_url}/live/hk2.flv") as r:
                    assert r.status == 403
                    assert "play refused" in await r.text()
        finally:
            await stop(p)
    finally:
        await runner.cleanup()


async def test_on_publish_hook_refusal_is_reported_to_the_publisher(server_factory, clips):
    runner, url, _calls = await _hook_server({"on_publish": (200, "1")})
    try:
        srv = await server_factory(ingest={"on_publish": url})
        rc, err = await _push_and_capture(srv.push_url("no"), clips["av"])
        assert rc != 0 and "on_publish hook refused" in err
        assert srv.app[REGISTRY].get("live", "no") is None
    finally:
        await runner.cleanup()


async def test_key_rotation_refuses_old_urls_and_kick_cuts_the_publisher(server, clips):
    redis = server.runtime.redis
    await redis.hset(auth.KEY_VERSIONS, "live/rot", "v2")
    old = server.push_url("rot")  # issued without the new key version
    rc, err = await _push_and_capture(old, clips["av"])
    assert rc != 0 and "revoked" in err
    expire = int(time.time()) + 600
    new = auth.push_url(server.rtmp_url, TEST_SECRET, "live", "rot", expire, kv="v2")
    pub = await start_publisher(new, clips["av"], loop=True)
    events = []
    server.runtime.bus.subscribe("stream.unpublished", events.append)
    try:
        await wait_for(
            lambda: (h := server.app[REGISTRY].get("live", "rot")) is not None and h.live, 10
        )
        await server.runtime.bus.publish(
            "stream.kick", {"app": "live", "stream": "rot", "reason": "revoked"}
        )
        await asyncio.wait_for(pub.wait(), 10)  # the publisher's connection was cut
        await wait_for(lambda: bool(events), 5)
        assert events[0].data["reason"] == "revoked"
    finally:
        await stop(pub)


async def test_not_before_is_enforced(server, clips):
    now = int(time.time())
    url = auth.push_url(server.rtmp_url, TEST_SECRET, "live", "nbf", now + 600, nbf=now + 300)
    rc, err = await _push_and_capture(url, clips["av"])
    assert rc != 0 and "not valid before" in err


@pytest.mark.parametrize(
    ("name", "has_audio", "has_video"), [("audio", True, False), ("video", False, True)]
)
async def test_single_track_streams_get_correct_flv_header(
    server, clips, name, has_audio, has_video
):
    pub = await start_publisher(server.push_url(name), clips[name], loop=True)
    try:
        await wait_for(
            lambda: (h := server.app[REGISTRY].get("live", name)) is not None and h.gop_valid, 10
        )
        reader = FlvReader()
        await asyncio.wait_for(
            _read_http(f"{server.http_url}/live/{name}.flv", reader, lambda r: len(r.tags) > 20), 10
        )
        assert reader.header == flv.FlvHeader(has_audio=has_audio, has_video=has_video)
        types = {t.tag_type for t in reader.tags}
        assert (flv.TAG_AUDIO in types) == has_audio and (flv.TAG_VIDEO in types) == has_video
    finally:
        await stop(pub)


async def test_hevc_enhanced_rtmp_passes_through(server, clips, tmp_path):
    pub = await start_publisher(
        server.push_url("hevc"), clips["hevc"], loop=True, exe=bundled_ffmpeg_exe()
    )
    try:
        await wait_for(
            lambda: (h := server.app[REGISTRY].get("live", "hevc")) is not None and h.gop_valid, 15
        )
        reader = FlvReader()
        await asyncio.wait_for(
            _read_http(f"{server.http_url}/live/hevc.flv", reader, lambda r: len(r.video()) > 10),
            10,
        )
        infos = [i for _, i in reader.video()]
        assert infos[0].sequence_header and infos[0].codec == "hvc1" and infos[0].enhanced
        assert infos[1].keyframe
        stats = server.app[REGISTRY].get("live", "hevc").stats()
        assert stats["video"]["codec"].startswith("hvc1") and stats["video"]["width"] == 320
        # a recent ffmpeg reads it back as HEVC
        out = tmp_path / "hevc_out.flv"
        proc = await asyncio.create_subprocess_exec(
            bundled_ffmpeg_exe(), "-v", "error", "-i", f"{server.http_url}/live/hevc.flv",
            "-t", "1", "-c", "copy", "-f", "flv", str(out),
        )  # fmt: skip
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        await stop(pub)


async def test_coalesced_writes_deliver_every_frame_in_order(server_factory, clips):
    # batched from the first viewer (the relay writes at once below 200 viewers otherwise)
    srv = await server_factory(relay={"write_coalesce_ms": 40, "write_coalesce_min_viewers": 0})
    pub = await start_publisher(srv.push_url("co"), clips["av"], loop=True)
    try:
        await wait_for(
            lambda: (h := srv.app[REGISTRY].get("live", "co")) is not None and h.gop_valid, 10
        )
        reader = FlvReader()
        await asyncio.wait_for(
            _read_http(f"{srv.http_url}/live/co.flv", reader, lambda r: len(r.video()) > 90), 15
        )
        coded = [(t.timestamp, i) for t, i in reader.video() if not i.sequence_header]
        ts = [t for t, _ in coded]
        assert ts == sorted(ts)
        # 30 fps: no gaps larger than a couple of frames in the video timeline
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert max(gaps) <= 100, max(gaps)
    finally:
        await stop(pub)
