"""WHIP ingest end to end with a real publisher no one here wrote: the bundled ffmpeg's
``whip`` muxer (H.264 High + Opus over ICE/DTLS/SRTP on the one UDP port) publishes to
berrylive; PyAV reads the same stream back over HTTP-FLV and RTMP: every frame, monotonic
DTS, clean decode, AAC audio. Takeover (RTMP -> WHIP -> WHIP) with a viewer that never
reconnects, publisher loss (ffmpeg killed: no DELETE) and ``stream.kick`` behave like RTMP.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import av
import pytest

from core.ffmpeg import bundled_ffmpeg_exe
from ingest import auth
from ingest.events import StreamKick, StreamPublished, StreamUnpublished
from ingest.whip import WHIP_SERVER
from media.codecs import AvcDecoderConfig
from relay.http import REGISTRY
from tests.conftest import TEST_SECRET
from tests.mediautil import (
    RW_TIMEOUT,
    make_clip,
    operator_token,
    start_publisher,
    stop,
    wait_for,
)

FPS = 30


def token(stream: str, app: str = "live") -> str:
    return auth.push_query(TEST_SECRET, app, stream, int(time.time()) + 600)


async def whip_publish(
    url: str,
    tok: str,
    *,
    frames: int | None = None,
    gop: int = FPS,
    profile: str = "high",
    video: bool = True,
    audio: bool = True,
) -> asyncio.subprocess.Process:
    """The bundled ffmpeg publishing a test pattern + tone over WHIP (``frames`` then stop;
    None: until stopped)."""
    args = [bundled_ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    if video:
        args += ["-re", "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}"]
    if audio:  # -re is per input: without it the tone is read as fast as it can be made
        args += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    if frames is not None:
        args += ["-frames:v", str(frames), "-shortest"] if video else ["-t", str(frames / FPS)]
    if video:
        args += [
            "-c:v", "libx264", "-profile:v", profile, "-bf", "0", "-g", str(gop),
            "-keyint_min", str(gop), "-sc_threshold", "0", "-tune", "zerolatency",
            "-pix_fmt", "yuv420p",
        ]  # fmt: skip
    if audio:
        args += ["-c:a", "libopus", "-ar", "48000", "-ac", "2"]
    args += ["-f", "whip", "-authorization", tok, url]
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


def read_stream(
    url: str, video_frames: int, timeout: float = 60, audio_frames: int | None = None
) -> dict[str, Any]:
    """Demux and decode ``url`` until ``video_frames`` video frames (or ``audio_frames``
    audio frames, or the end)."""
    deadline = time.monotonic() + timeout
    out: dict[str, Any] = {"video_dts": [], "audio_dts": [], "decoded": 0, "errors": []}
    options = {"rw_timeout": str(int(RW_TIMEOUT * 1_000_000))}
    with av.open(url, options=options, timeout=(timeout, RW_TIMEOUT)) as container:
        out["codecs"] = {s.type: s.codec_context.name for s in container.streams}
        out["metadata"] = dict(container.metadata)
        vdec = None
        for s in container.streams.video:
            vdec = av.CodecContext.create(s.codec_context.name, "r")
            vdec.extradata = s.codec_context.extradata
        out["first_keyframe"] = None
        for packet in container.demux():
            if packet.size == 0 and packet.dts is None:
                continue
            ms = int(packet.dts * packet.time_base * 1000) if packet.dts is not None else None
            if packet.stream.type == "video":
                if out["first_keyframe"] is None:
                    out["first_keyframe"] = packet.is_keyframe
                out["video_dts"].append(ms)
                assert vdec is not None
                try:
                    out["decoded"] += len(vdec.decode(packet))
                except av.FFmpegError as exc:
                    out["errors"].append(str(exc))
                if len(out["video_dts"]) >= video_frames:
                    break
            elif packet.stream.type == "audio":
                out["audio_dts"].append(ms)
                if audio_frames is not None and len(out["audio_dts"]) >= audio_frames:
                    break
            if time.monotonic() > deadline:
                break
        if vdec is not None:
            with contextlib.suppress(av.FFmpegError):
                out["decoded"] += len(vdec.decode(None))
    return out


@pytest.fixture
async def server(server_factory):
    return await server_factory(webrtc={"udp_port": 0, "no_media_timeout": 2.0})


@contextlib.asynccontextmanager
async def events(server) -> AsyncIterator[list[Any]]:
    seen: list[Any] = []
    bus = server.runtime.bus
    offs = [bus.on(cls, seen.append) for cls in (StreamPublished, StreamUnpublished)]
    try:
        yield seen
    finally:
        for off in offs:
            off()


def hub_of(server, stream: str = "cam"):
    return server.app[REGISTRY].get("live", stream)


@pytest.mark.parametrize("protocol", ["http-flv", "rtmp"])
async def test_ffmpeg_whip_publish_reads_back_whole(server, protocol: str) -> None:
    frames = 150  # one 5 s GOP: a viewer that joins at any point gets every frame
    url = f"{server.http_url}/whip/live/cam"
    async with events(server) as seen:
        proc = await whip_publish(url, token("cam"), frames=frames, gop=frames)
        try:
            # a player joining a running stream: both tracks are there
            await wait_for(
                lambda: (
                    (h := hub_of(server)) is not None
                    and h.live
                    and h.video_header is not None
                    and h.audio_header is not None
                ),
                timeout=30,
            )
            meta = hub_of(server).meta  # onMetaData as an RTMP encoder would send it
            assert (meta["width"], meta["height"], meta["videocodecid"]) == (320, 180, 7)
            assert meta["audiocodecid"] == 10
            play = (
                f"{server.http_url}/live/cam.flv"
                if protocol == "http-flv"
                else f"{server.rtmp_url}/live/cam"
            )
            got = await asyncio.to_thread(read_stream, play, frames)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            await stop(proc)
        await wait_for(lambda: any(isinstance(e, StreamUnpublished) for e in seen), timeout=15)
    assert got["codecs"] == {"video": "h264", "audio": "aac"}
    assert got["metadata"].get("encoder") == "berrylive whip"
    assert got["first_keyframe"] is True
    vd = got["video_dts"]
    assert len(vd) == frames  # every frame, from the first keyframe
    assert all(b > a for a, b in itertools.pairwise(vd)), "video DTS not increasing"
    assert got["errors"] == [] and got["decoded"] == frames
    ad = got["audio_dts"]
    assert len(ad) > 100, "audio missing"  # ~4.5 s of 21.3 ms AAC frames while reading
    assert all(b >= a for a, b in itertools.pairwise(ad)), "audio DTS going back"
    # 30 fps on the 90 kHz clock -> 33/34 ms steps
    steps = {b - a for a, b in itertools.pairwise(vd)}
    assert steps <= {33, 34}, steps
    published = [e for e in seen if isinstance(e, StreamPublished)]
    assert [(e.protocol, e.takeover) for e in published] == [("whip", False)]
    ended = [e for e in seen if isinstance(e, StreamUnpublished)]
    assert [e.reason for e in ended] == ["unpublished"]  # ffmpeg's DELETE at its end
    assert server.app[WHIP_SERVER].sessions == {}


async def test_takeover_rtmp_then_whip_then_whip_viewer_continues(server, tmp_path) -> None:
    clip = make_clip(tmp_path / "clip.flv", seconds=4.0, gop=30)
    rtmp = await start_publisher(server.push_url("cam"), clip, loop=True)
    procs = [rtmp]
    url = f"{server.http_url}/whip/live/cam"
    try:
        async with events(server) as seen:
            await wait_for(lambda: (h := hub_of(server)) is not None and h.live, timeout=30)
            viewer = asyncio.create_task(
                asyncio.to_thread(read_stream, f"{server.http_url}/live/cam.flv", 10**6, 25)
            )
            await wait_for(lambda: hub_of(server).audience > 0, timeout=15)
            first = await whip_publish(url, token("cam"))
            procs.append(first)
            await wait_for(
                lambda: (
                    hub_of(server).publisher is not None
                    and hub_of(server).publisher.info.protocol == "whip"
                ),
                timeout=30,
            )
            whip = server.app[WHIP_SERVER]
            (first_id,) = whip.sessions
            frames_then = hub_of(server).publisher.frames_in
            await wait_for(lambda: hub_of(server).publisher.frames_in > frames_then + 60, 15)
            second = await whip_publish(url, token("cam"))
            procs.append(second)
            await wait_for(lambda: first_id not in whip.sessions and len(whip.sessions) == 1, 30)
            pub = hub_of(server).publisher
            await wait_for(lambda: pub.frames_in > 60, timeout=15)
            published = [e for e in seen if isinstance(e, StreamPublished)]
            assert [(e.protocol, e.takeover) for e in published] == [
                ("rtmp", False),
                ("whip", True),
                ("whip", True),
            ]
            assert not [e for e in seen if isinstance(e, StreamUnpublished)]
            assert hub_of(server).audience == 1  # the viewer never reconnected
            for p in procs:
                await stop(p)
            got = await viewer
    finally:
        for p in procs:
            await stop(p)
    vd = got["video_dts"]
    assert got["errors"] == []
    assert all(b > a for a, b in itertools.pairwise(vd))
    assert len(vd) > 150  # RTMP, then the first WHIP publisher, then the second


async def test_publisher_lost_is_an_rtmp_disconnect(server) -> None:
    url = f"{server.http_url}/whip/live/cam"
    async with events(server) as seen:
        proc = await whip_publish(url, token("cam"))
        try:
            await wait_for(lambda: (h := hub_of(server)) is not None and h.live, timeout=30)
            await wait_for(lambda: hub_of(server).publisher.frames_in > 30, timeout=15)
            proc.send_signal(signal.SIGKILL)  # no DELETE: the media just stops
            await proc.wait()
            await wait_for(lambda: any(isinstance(e, StreamUnpublished) for e in seen), 15)
        finally:
            await stop(proc)
    ended = [e for e in seen if isinstance(e, StreamUnpublished)]
    assert [e.reason for e in ended] == ["timed out waiting for data"]
    hub = hub_of(server)
    assert hub is not None and not hub.live  # lingering for a reconnect, like RTMP
    assert server.app[WHIP_SERVER].sessions == {}
    # a new publisher (RTMP or WHIP) continues the stream
    proc = await whip_publish(url, token("cam"), frames=45)
    try:
        await wait_for(lambda: hub_of(server) is hub and hub.live, timeout=30)
    finally:
        await stop(proc)


async def test_kick_cuts_a_whip_publisher(server) -> None:
    url = f"{server.http_url}/whip/live/cam"
    async with events(server) as seen:
        proc = await whip_publish(url, token("cam"))
        try:
            await wait_for(lambda: (h := hub_of(server)) is not None and h.live, timeout=30)
            # operators see the publish and its figures
            tok = await operator_token(server)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{server.http_url}/api/whip") as resp:
                    assert resp.status == 401
                async with http.get(
                    f"{server.http_url}/api/whip", headers={"Authorization": f"Bearer {tok}"}
                ) as resp:
                    assert resp.status == 200
                    (seen_by_api,) = (await resp.json())["sessions"]
            assert seen_by_api["stream"] == "cam" and seen_by_api["live"] is True
            assert seen_by_api["state"] == "connected"
            await server.runtime.bus.emit(StreamKick("live", "cam", "broadcast ended"))
            await wait_for(lambda: any(isinstance(e, StreamUnpublished) for e in seen), 15)
            await wait_for(lambda: server.app[WHIP_SERVER].sessions == {}, 15)
        finally:
            await stop(proc)
    assert [e.reason for e in seen if isinstance(e, StreamUnpublished)] == ["broadcast ended"]


async def test_an_edge_plays_a_whip_stream(server, server_factory) -> None:
    """The origin's WHIP-ingested stream is pulled by an edge like any other."""
    edge = await server_factory(
        "edge",
        server={"role": "edge"},
        relay={"origins": (server.http_url,)},
        webrtc={"udp_port": 0},
    )
    url = f"{server.http_url}/whip/live/cam"
    proc = await whip_publish(url, token("cam"))
    try:
        await wait_for(
            lambda: (
                (h := hub_of(server)) is not None
                and h.live
                and h.video_header is not None
                and h.audio_header is not None
            ),
            timeout=30,
        )
        got = await asyncio.to_thread(read_stream, f"{edge.http_url}/live/cam.flv", 60, 60)
    finally:
        await stop(proc)
    assert got["codecs"] == {"video": "h264", "audio": "aac"}
    assert got["first_keyframe"] is True
    vd = got["video_dts"]
    assert len(vd) == 60 and got["errors"] == [] and got["decoded"] >= 55
    assert all(b > a for a, b in itertools.pairwise(vd))
    assert got["audio_dts"]


async def test_single_track_publishers(server) -> None:
    """ffmpeg publishes audio only, then video only: each plays as such over HTTP-FLV."""
    url = f"{server.http_url}/whip/live/radio"
    proc = await whip_publish(url, token("radio"), video=False)
    try:
        await wait_for(
            lambda: (
                (h := hub_of(server, "radio")) is not None and h.live and h.audio_header is not None
            ),
            timeout=30,
        )
        got = await asyncio.to_thread(
            read_stream, f"{server.http_url}/live/radio.flv", 10**6, 60, 100
        )
    finally:
        await stop(proc)
    assert got["codecs"] == {"audio": "aac"}
    ad = got["audio_dts"]
    assert len(ad) == 100 and all(b > a for a, b in itertools.pairwise(ad))
    url = f"{server.http_url}/whip/live/silent"
    proc = await whip_publish(url, token("silent"), audio=False)
    try:
        await wait_for(
            lambda: (
                (h := hub_of(server, "silent")) is not None
                and h.live
                and h.video_header is not None
            ),
            timeout=30,
        )
        got = await asyncio.to_thread(read_stream, f"{server.http_url}/live/silent.flv", 60)
    finally:
        await stop(proc)
    assert got["codecs"] == {"video": "h264"}
    vd = got["video_dts"]
    assert len(vd) == 60 and got["errors"] == [] and got["first_keyframe"] is True


async def test_obs_style_offer_42e01f_carrying_high(server) -> None:
    """OBS offers ``profile-level-id=42e01f`` and sends High. The publisher here is ffmpeg
    (libx264 High) behind a small HTTP front that rewrites its offer the way OBS writes
    it; the stream must play with the High profile it really carries."""
    from aiohttp import web

    seen_offer: list[str] = []

    async def front(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST":
            text = re.sub(
                r"profile-level-id=[0-9a-fA-F]{6}", "profile-level-id=42e01f", body.decode()
            )
            seen_offer.append(text)
            body = text.encode()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() in ("authorization", "content-type")
        }
        async with aiohttp.ClientSession() as http:
            async with http.request(
                request.method, server.http_url + request.path_qs, data=body, headers=headers
            ) as resp:
                out = web.Response(status=resp.status, body=await resp.read())
                for k in ("Content-Type", "Location", "ETag"):
                    if k in resp.headers:
                        out.headers[k] = resp.headers[k]
                return out

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", front)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    proc = await whip_publish(f"http://127.0.0.1:{port}/whip/live/obs", token("obs"), frames=90)
    try:
        await wait_for(
            lambda: (
                (h := hub_of(server, "obs")) is not None and h.live and h.video_header is not None
            ),
            timeout=30,
        )
        header = hub_of(server, "obs").video_header
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        await stop(proc)
        await runner.cleanup()
    assert seen_offer and "profile-level-id=42e01f" in seen_offer[0]
    record = AvcDecoderConfig.parse(header.payload[5:])
    assert record.profile_idc == 100  # High, as sent, whatever the offer said
    assert hub_of(server, "obs").frames_in > 0
