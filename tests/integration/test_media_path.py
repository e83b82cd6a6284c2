"""The media path with real clients: ffmpeg publishes over RTMP, ffmpeg/PyAV play
HTTP-FLV, WS-FLV and RTMP from a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from core.bus import Event
from core.ffmpeg import ffmpeg_exe
from ingest import auth
from media import flv
from media.frame import Kind
from tests.conftest import TEST_SECRET
from tests.mediautil import (
    make_clip,
    operator_token,
    probe_packets,
    start_publisher,
    stop,
    wait_for,
)

FAST = {"publisher_linger": 0.5}


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One GOP for the whole clip: a viewer joining late still gets every frame from the cache.
    return make_clip(tmp_path_factory.mktemp("clips") / "one_gop.flv", 4.0, gop=150)


@pytest.fixture(scope="session")
def looping_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "loop.flv", 4.0, gop=30)


async def _record(url: str, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-rw_timeout", "15000000",
        "-i", url, "-c", "copy", "-f", "flv", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def _split(packets: list[dict]) -> tuple[list[dict], list[dict]]:
    v = [p for p in packets if p["codec_type"] == "video"]
    a = [p for p in packets if p["codec_type"] == "audio"]
    return v, a


def _decode_errors(path: Path) -> str:
    res = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return res.stderr.strip()


async def test_publish_then_play_http_flv_and_rtmp_complete(server_factory, clip, tmp_path):
    srv = await server_factory(relay=FAST)
    published: list[Event] = []
    srv.runtime.bus.subscribe("stream.*", published.append)
    registry = srv.app[__import__("relay").REGISTRY]
    pub = await start_publisher(srv.push_url("clip"), clip)
    try:
        await wait_for(lambda: registry.get("live", "clip") is not None, 10)
        out_flv, out_rtmp = tmp_path / "via_flv.flv", tmp_path / "via_rtmp.flv"
        rec_flv = await _record(f"{srv.http_url}/live/clip.flv", out_flv)
        rec_rtmp = await _record(f"{srv.rtmp_url}/live/clip", out_rtmp)
        assert await asyncio.wait_for(pub.wait(), 30) == 0
        for rec in (rec_flv, rec_rtmp):
            await asyncio.wait_for(rec.wait(), 30)
            assert rec.returncode == 0, (await rec.stderr.read()).decode()
    finally:
        await stop(pub)

    src_v, src_a = _split(probe_packets(str(clip)))
    for out in (out_flv, out_rtmp):
        got_v, got_a = _split(probe_packets(str(out)))
        assert len(got_v) == len(src_v), f"{out.name}: video frames {len(got_v)} != {len(src_v)}"
        # audio before the first keyframe may precede the GOP; allow a frame or two
        assert len(src_a) - 2 <= len(got_a) <= len(src_a), f"{out.name}: audio {len(got_a)}"
        for track in (got_v, got_a):
            dts = [int(p["dts"]) for p in track]
            assert dts == sorted(dts), f"{out.name}: DTS not monotonic"
        assert got_v[0]["flags"].startswith("K")
        assert abs(int(got_v[0]["pts"]) - int(got_a[0]["pts"])) <= 34, "A/V start out of sync"
        assert abs(int(got_v[-1]["pts"]) - int(got_a[-1]["pts"])) <= 100
        assert _decode_errors(out) == "", f"{out.name} does not decode cleanly"
    await srv.runtime.bus.drain()
    topics = [e.topic for e in published]
    assert topics[:1] == ["stream.published"] and "stream.unpublished" in topics
    assert published[0].data["app"] == "live" and published[0].data["stream"] == "clip"


async def _push_and_capture(url: str, clip: Path) -> tuple[int, str]:
    proc = await start_publisher(url, clip, realtime=False)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, err.decode(errors="replace")


async def test_publish_refused_with_bad_or_expired_signature(server, clip):
    registry = server.app[__import__("relay").REGISTRY]
    good = server.push_url("s1")
    tampered = good[:-4] + ("0000" if not good.endswith("0000") else "1111")
    rc, err = await _push_and_capture(tampered, clip)
    assert rc != 0
    assert "signature does not match" in err, err
    expired = auth.push_url(server.rtmp_url, TEST_SECRET, "live", "s1", int(time.time()) - 5)
    rc, err = await _push_and_capture(expired, clip)
    assert rc != 0 and "expired" in err, err
    rc, err = await _push_and_capture(f"{server.rtmp_url}/live/s1", clip)
    assert rc != 0 and "not signed" in err, err
    # signed for another stream name
    other = auth.push_url(server.rtmp_url, TEST_SECRET, "live", "s2", int(time.time()) + 60)
    rc, err = await _push_and_capture(other.replace("/s2?", "/s1?"), clip)
    assert rc != 0 and "signature" in err
    assert registry.get("live", "s1") is None


async def test_tencent_style_push_url(server_factory, clip):
    srv = await server_factory(ingest={"tencent_key": "tkey"})
    expire = int(time.time()) + 600
    secret, tx_time = auth.tencent_sign("tkey", "tx1", expire)
    url = f"{srv.rtmp_url}/live/tx1?txSecret={secret}&txTime={tx_time}"
    rc, err = await _push_and_capture(url, clip)
    assert rc == 0, err
    bad = f"{srv.rtmp_url}/live/tx1?txSecret={'0' * 32}&txTime={tx_time}"
    rc, err = await _push_and_capture(bad, clip)
    assert rc != 0 and "txSecret" in err


class FlvReader:
    """Reads an HTTP-FLV or WS-FLV stream with the FLV demuxer."""

    def __init__(self) -> None:
        self.demux = flv.FlvDemuxer()
        self.header: flv.FlvHeader | None = None
        self.tags: list[flv.FlvTag] = []
        self.first_bytes_at: float | None = None

    def feed(self, data: bytes) -> None:
        if self.first_bytes_at is None:
            self.first_bytes_at = time.monotonic()
        for item in self.demux.feed(data):
            if isinstance(item, flv.FlvHeader):
                self.header = item
            else:
                self.tags.append(item)

    def video(self) -> list[tuple[flv.FlvTag, flv.VideoTagInfo]]:
        return [
            (t, flv.parse_video_header(t.body)) for t in self.tags if t.tag_type == flv.TAG_VIDEO
        ]


async def _read_http(url: str, reader: FlvReader, stop_when) -> None:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "video/x-flv"
        async for chunk in r.content.iter_any():
            reader.feed(chunk)
            if stop_when(reader):
                return


GOP_FRAMES = 30  # looping_clip: one keyframe a second at 30 fps


@pytest.mark.parametrize("where", ["just_after_a_keyframe", "late_in_the_gop"])
async def test_gop_cache_gives_instant_start(server, looping_clip, where):
    """A viewer joining anywhere in a GOP gets the headers, then at once every frame the
    GOP cache held when it joined (so its first coded video frame is the keyframe that
    opens the GOP), then the live frames. The cache is read through the registry's
    viewer listener, which runs in the same step as the join."""
    registry = server.app[__import__("relay").REGISTRY]
    pub = await start_publisher(server.push_url("gop"), looping_clip, loop=True)
    try:
        await wait_for(lambda: (h := registry.get("live", "gop")) is not None and h.gop_valid, 10)
        hub = registry.get("live", "gop")

        def video_in_cache() -> int:
            return sum(f.kind == Kind.VIDEO for f in hub.gop) if hub.gop_valid else 0

        # where in the GOP to join: conditions on the cache, never a fixed wait
        if where == "just_after_a_keyframe":
            await wait_for(lambda: video_in_cache() >= GOP_FRAMES - 2, 10, step=0.005)
            await wait_for(lambda: 1 <= video_in_cache() <= 2, 10, step=0.002)
        else:
            await wait_for(lambda: video_in_cache() >= GOP_FRAMES * 2 // 3, 10, step=0.005)
        present = set(hub.viewers)
        at_join: list[list[tuple[int, int]]] = []

        def on_viewers(h) -> None:
            joined = [v for v in h.viewers if v not in present and v.info.protocol == "flv"]
            if h is hub and joined and not at_join:
                at_join.append([(int(f.kind), f.dts) for f in h.gop] if h.gop_valid else [])

        registry.on_viewers_changed(on_viewers)
        reader = FlvReader()
        await asyncio.wait_for(
            _read_http(
                f"{server.http_url}/live/gop.flv",
                reader,
                lambda r: bool(at_join) and len(r.tags) >= 3 + len(at_join[0]) + 3,
            ),
            10,
        )
        (cached,) = at_join
        assert reader.header == flv.FlvHeader(has_audio=True, has_video=True)
        kinds = [t.tag_type for t in reader.tags[:3]]
        assert kinds == [flv.TAG_SCRIPT, flv.TAG_VIDEO, flv.TAG_AUDIO]  # metadata, both headers
        assert reader.tags[0].timestamp == 0
        video = reader.video()
        assert video[0][1].sequence_header
        assert video[1][1].keyframe, "first coded video frame must be a keyframe"
        # the cache at the join: it opens with a keyframe, and the viewer got all of it first
        assert cached and cached[0][0] == flv.TAG_VIDEO, cached[:3]
        burst = [(t.tag_type, t.timestamp) for t in reader.tags[3 : 3 + len(cached)]]
        assert burst == cached
        assert reader.tags[3].timestamp == video[1][0].timestamp == cached[0][1]
    finally:
        await stop(pub)


async def test_ws_flv_delivers_binary_flv(server, looping_clip):
    registry = server.app[__import__("relay").REGISTRY]
    pub = await start_publisher(server.push_url("ws"), looping_clip, loop=True)
    try:
        await wait_for(lambda: registry.get("live", "ws") is not None, 10)
        reader = FlvReader()
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{server.http_url}/live/ws.flv") as ws:
                await wait_for(
                    lambda: registry.get("live", "ws").stats()["viewers"].get("ws") == 1, 5
                )
                while len(reader.video()) < 40:
                    msg = await asyncio.wait_for(ws.receive(), 10)
                    assert msg.type == aiohttp.WSMsgType.BINARY
                    reader.feed(msg.data)
        assert reader.header is not None and reader.header.has_video
        assert any(info.keyframe for _, info in reader.video())
        ts = [t.timestamp for t, info in reader.video() if not info.sequence_header]
        assert ts == sorted(ts)
    finally:
        await stop(pub)


async def test_unknown_stream_is_404_and_healthz(server):
    headers = {"Authorization": f"Bearer {await operator_token(server)}"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{server.http_url}/live/nothing.flv") as r:
            assert r.status == 404
        async with s.get(f"{server.http_url}/api/streams") as r:
            assert r.status == 401  # operators only: it shows publisher addresses
        async with s.get(f"{server.http_url}/api/streams", headers=headers) as r:
            assert (await r.json()) == {"streams": [], "total": 0}
        async with s.get(f"{server.http_url}/healthz") as r:
            assert r.status == 200


async def test_takeover_keeps_viewers_connected(server, looping_clip):
    registry = server.app[__import__("relay").REGISTRY]
    events: list[Event] = []
    server.runtime.bus.subscribe("stream.*", events.append)
    first = await start_publisher(server.push_url("tk"), looping_clip, loop=True)
    second = None
    reader = FlvReader()
    try:
        await wait_for(lambda: (h := registry.get("live", "tk")) is not None and h.gop_valid, 10)
        read = asyncio.create_task(
            _read_http(f"{server.http_url}/live/tk.flv", reader, lambda r: False)
        )
        await wait_for(lambda: len(reader.video()) > 20, 10)
        before = len(reader.tags)
        first_remote = registry.get("live", "tk").publisher.info.remote
        second = await start_publisher(server.push_url("tk"), looping_clip, loop=True)
        # the stale publisher is cut at once, the new one owns the stream
        await asyncio.wait_for(first.wait(), 10)
        await wait_for(
            lambda: (
                registry.get("live", "tk").publisher is not None
                and registry.get("live", "tk").publisher.info.remote != first_remote
            ),
            10,
        )
        await wait_for(lambda: registry.get("live", "tk").publisher.first_dts is not None, 10)
        new_start = registry.get("live", "tk").publisher.first_dts
        await wait_for(lambda: sum(t.timestamp >= new_start for t in reader.tags) > 60, 15)
        assert not read.done(), "viewer was disconnected by the takeover"
        read.cancel()
        tail = reader.tags[before:]
        after = [
            flv.parse_video_header(t.body)
            for t in reader.tags
            if t.tag_type == 9 and t.timestamp >= new_start
        ]
        coded = [v for v in after if not v.sequence_header]
        assert coded and coded[0].keyframe, "after takeover the viewer resumes at a keyframe"
        ts = [t.timestamp for t in tail if t.tag_type == 9]
        assert ts == sorted(ts), "timeline goes back after takeover"
        await server.runtime.bus.drain()
        pubs = [e for e in events if e.topic == "stream.published"]
        assert len(pubs) == 2 and pubs[1].data["takeover"] is True
        assert not [e for e in events if e.topic == "stream.unpublished"]
    finally:
        await stop(first)
        if second is not None:
            await stop(second)


async def test_streams_api_reports_live_figures(server, looping_clip):
    registry = server.app[__import__("relay").REGISTRY]
    pub = await start_publisher(server.push_url("stats"), looping_clip, loop=True)
    try:
        await wait_for(lambda: registry.get("live", "stats") is not None, 10)
        reader = FlvReader()
        read = asyncio.create_task(
            _read_http(f"{server.http_url}/live/stats.flv", reader, lambda r: False)
        )
        headers = {"Authorization": f"Bearer {await operator_token(server)}"}
        body: dict = {}

        async def figures_in() -> bool:
            """The API shows the running figures (measured over its window: polled)."""
            nonlocal body
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{server.http_url}/api/streams", headers=headers) as r:
                    body = await r.json()
            st = body["streams"][0] if body.get("streams") else {}
            return (
                st.get("viewers_total") == 1
                and st.get("uptime", 0) > 1
                and 20 <= (st.get("fps") or 0) <= 40  # the clip's 30 fps, measured
                and st.get("bitrate_in", 0) > 0
            )

        await wait_for(figures_in, 20, step=0.2)
        read.cancel()
        (st,) = body["streams"]
        assert st["app"] == "live" and st["name"] == "stats" and st["live"]
        assert st["video"]["codec"].startswith("avc1") and st["video"]["width"] == 320
        assert st["video"]["height"] == 180
        assert st["audio"]["codec"] == "mp4a.40.2" and st["audio"]["sample_rate"] == 44100
        assert 20 <= st["fps"] <= 40
        assert st["bitrate_in"] > 0
        assert st["viewers"] == {"flv": 1} and st["viewers_total"] == 1
        assert st["publisher"]["protocol"] == "rtmp"
        assert st["uptime"] > 1
        json.dumps(st)
    finally:
        await stop(pub)
