"""WHEP playback end to end: ffmpeg publishes H.264 + AAC over RTMP, aiortc plays it over
WHEP (ICE, DTLS, SRTP on the node's one UDP port) and decodes video and audio; the errors
(404, 400, 406, 415, 503, 405) and the CORS preflight; DELETE ends the session.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from relay.http import REGISTRY
from relay.whep import WHEP
from tests.mediautil import make_clip, operator_token, start_publisher, stop, wait_for

RTC = {"udp_port": 0, "host": "127.0.0.1"}


@pytest.fixture
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_e2e.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "0"])


async def _publish(server: Any, name: str, clip: Path) -> Any:
    proc = await start_publisher(server.push_url(name), clip, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", name)) is not None and h.gop_valid, 20)
    return proc


async def _offer(video: bool = True, audio: bool = True) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    if video:
        pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def _post(url: str, body: str, ctype: str = "application/sdp") -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"Content-Type": ctype}) as resp:
            return resp.status, await resp.text(), resp.headers


async def test_aiortc_plays_an_rtmp_stream_over_whep(server_factory, clip) -> None:
    server = await server_factory(webrtc=RTC)
    proc = await _publish(server, "cam", clip)
    pc, offer = await _offer()
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    try:
        posted = time.monotonic()
        status, answer, headers = await _post(f"{server.http_url}/whep/live/cam", offer)
        assert status == 201, answer
        assert headers["Content-Type"].startswith("application/sdp")
        location = headers["Location"]
        assert location.startswith("/whep/live/cam/")
        assert "Location" in headers["Access-Control-Expose-Headers"]
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert set(tracks) == {"video", "audio"}
        frame = await asyncio.wait_for(tracks["video"].recv(), 20)
        first = time.monotonic() - posted
        print(f"\nWHEP POST -> first decoded video frame (aiortc): {first * 1000:.0f} ms")
        assert (frame.width, frame.height) == (320, 180)
        pts = [frame.pts]
        for _ in range(30):
            pts.append((await asyncio.wait_for(tracks["video"].recv(), 10)).pts)
        assert pts == sorted(pts)
        samples = 0
        for _ in range(20):
            a = await asyncio.wait_for(tracks["audio"].recv(), 10)
            samples += a.samples
            assert a.sample_rate == 48000
        assert samples >= 20 * 960
        hub = server.app[REGISTRY].get("live", "cam")
        assert hub.stats()["viewers"].get("whep") == 1
        service = server.app[WHEP]
        (viewing,) = service.viewings.values()
        assert viewing.viewer is not None and viewing.viewer.packets_sent > 100
        # the answer signalled the stream's own SSRCs: its packets go out without a copy
        stream = viewing.viewer.stream
        signalled = {int(x) for x in re.findall(r"a=ssrc:(\d+) cname", answer)}
        assert {stream.video_seq.ssrc, stream.audio_seq.ssrc} <= signalled
        # operators see the session's figures; others do not
        token = await operator_token(server)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.http_url}/api/whep") as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{server.http_url}/api/whep", headers=auth) as resp:
                figures = await resp.json()
        assert figures["sessions"] == 1
        (stream_figures,) = figures["streams"]
        assert stream_figures["stream"] == "live/cam" and stream_figures["opus"]["packets_out"] > 0
        assert stream_figures["viewer_figures"][0]["packets_sent"] > 100
        # DELETE ends the session: the hub forgets the viewer
        async with aiohttp.ClientSession() as http:
            async with http.delete(server.http_url + location) as resp:
                assert resp.status == 200
            async with http.delete(server.http_url + location) as resp:
                assert resp.status == 404
        await wait_for(lambda: hub.stats()["viewers"].get("whep") is None, 5)
        assert not service.viewings and not service.streams.streams
    finally:
        await pc.close()
        await stop(proc)


async def test_errors_are_clear_and_disturb_nothing(server_factory, clip, tmp_path) -> None:
    # transcode off: a B-frame stream is refused (with it on, tests/relay/test_whep_transcode)
    server = await server_factory(webrtc={**RTC, "max_sessions": 1, "transcode": False})
    proc = await _publish(server, "ok", clip)
    bframes = make_clip(tmp_path / "bf.flv", 3.0, fps=25, gop=25)  # x264 main, B-frames
    bproc = await _publish(server, "bf", bframes)
    pcs: list[RTCPeerConnection] = []
    try:
        pc, offer = await _offer()
        pcs.append(pc)
        base = f"{server.http_url}/whep/live"
        status, text, _ = await _post(f"{base}/nosuch", offer)
        assert status == 404 and "not live" in text
        status, text, _ = await _post(f"{base}/ok", "this is not sdp")
        assert status == 400, text
        status, text, _ = await _post(f"{base}/ok", offer, "application/json")
        assert status == 415
        status, text, _ = await _post(f"{base}/bf", offer)
        assert status == 406 and "B-frames" in text
        status, answer, headers = await _post(f"{base}/ok", offer)
        assert status == 201
        pc2, offer2 = await _offer()
        pcs.append(pc2)
        status, text, _ = await _post(f"{base}/ok", offer2)
        assert status == 503 and "too many" in text
        location = headers["Location"]
        async with aiohttp.ClientSession() as http:
            async with http.patch(server.http_url + location, data="a=candidate") as resp:
                assert resp.status == 405
            async with http.options(f"{base}/ok") as resp:
                assert resp.status == 204
                assert "POST" in resp.headers["Access-Control-Allow-Methods"]
                assert "Link" in resp.headers["Access-Control-Expose-Headers"]
        # the one session that was admitted still plays
        tracks: dict[str, Any] = {}
        pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(tracks["video"].recv(), 20)
    finally:
        for p in pcs:
            await p.close()
        await stop(proc)
        await stop(bproc)


async def test_hevc_is_refused_with_the_reason_without_transcode(server_factory, tmp_path) -> None:
    from core.ffmpeg import bundled_ffmpeg_exe

    server = await server_factory(webrtc={**RTC, "transcode": False})
    hevc = make_clip(tmp_path / "h.flv", 2.0, fps=25, gop=25, vcodec="libx265")
    proc = await start_publisher(server.push_url("h"), hevc, loop=True, exe=bundled_ffmpeg_exe())
    pc, offer = await _offer()
    try:
        registry = server.app[REGISTRY]
        await wait_for(lambda: (h := registry.get("live", "h")) is not None and h.gop_valid, 20)
        status, text, _ = await _post(f"{server.http_url}/whep/live/h", offer)
        assert status == 406 and "HEVC" in text
    finally:
        await pc.close()
        await stop(proc)


async def test_an_edge_plays_whep_from_its_own_pull(server_factory, clip) -> None:
    """WHEP on an edge: the edge's hub pulls the stream from the origin (as for any viewer)
    and packetizes it itself; the origin sees one edge viewer, no WebRTC session."""
    origin = await server_factory("origin", webrtc=RTC)
    proc = await _publish(origin, "e", clip)
    edge = await server_factory(
        "edge", server={"role": "edge"}, relay={"origins": (origin.http_url,)}, webrtc=RTC
    )
    pc, offer = await _offer()
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    try:
        status, answer, _ = await _post(f"{edge.http_url}/whep/live/e", offer)
        assert status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        frame = await asyncio.wait_for(tracks["video"].recv(), 20)
        assert frame.width == 320
        await asyncio.wait_for(tracks["audio"].recv(), 10)
        edge_hub = edge.app[REGISTRY].get("live", "e")
        assert edge_hub.stats()["viewers"].get("whep") == 1
        # the scheduler names the URL to POST the offer to (once the edge's heartbeat
        # has registered it)
        play: dict[str, Any] = {}

        async def scheduled() -> bool:
            async with aiohttp.ClientSession() as http:
                url = f"{edge.http_url}/api/play/live/e?protocol=whep"
                async with http.get(url) as resp:
                    if resp.status == 200:
                        play.update(await resp.json())
                    return resp.status == 200

        await wait_for(scheduled, 10, step=0.2)
        assert play["url"] == f"{edge.http_url}/whep/live/e" and play["protocol"] == "whep"
        origin_viewers = origin.app[REGISTRY].get("live", "e").stats()["viewers"]
        assert "whep" not in origin_viewers and sum(origin_viewers.values()) == 1
        assert not origin.app[WHEP].viewings
    finally:
        await pc.close()
        await stop(proc)


async def test_play_hooks_apply_to_whep(server_factory, clip) -> None:
    """The on_play hook decides as for HTTP-FLV (protocol whep): a refusal is 403 with its
    reason, an allowed viewer plays; on_stop is called when it leaves."""
    from aiohttp import web

    calls: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append(body)
        allowed = body["action"] != "on_play" or "token=good" in body["param"]
        return web.Response(text="0" if allowed else '{"code": 1}')

    hook_app = web.Application()
    hook_app.router.add_post("/hook", hook)
    runner = web.AppRunner(hook_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/hook"
    server = await server_factory(webrtc=RTC, ingest={"on_play": url, "on_stop": url})
    proc = await _publish(server, "h", clip)
    pc, offer = await _offer()
    try:
        status, text, _ = await _post(f"{server.http_url}/whep/live/h?token=bad", offer)
        assert status == 403 and "refused" in text
        assert calls[-1]["protocol"] == "whep" and calls[-1]["stream"] == "h"
        status, _, headers = await _post(f"{server.http_url}/whep/live/h?token=good", offer)
        assert status == 201
        async with aiohttp.ClientSession() as http:
            async with http.delete(server.http_url + headers["Location"]) as resp:
                assert resp.status == 200
        await wait_for(lambda: any(c["action"] == "on_stop" for c in calls), 10)
        stop_call = next(c for c in calls if c["action"] == "on_stop")
        assert stop_call["protocol"] == "whep" and stop_call["param"] == "?token=good"
    finally:
        await pc.close()
        await stop(proc)
        await runner.cleanup()


async def test_whep_viewer_survives_a_publisher_reconnect(server_factory, clip) -> None:
    """The publisher goes away and another one takes the stream over: the WHEP viewer
    keeps its session and decodes the new publisher's pictures (the same RTP stream goes
    on: sequence numbers and timestamps continue, SPS/PPS come again before the IDR)."""
    server = await server_factory(webrtc=RTC)
    first = await _publish(server, "t", clip)
    pc, offer = await _offer()
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    second = None
    try:
        status, answer, _ = await _post(f"{server.http_url}/whep/live/t", offer)
        assert status == 201
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(tracks["video"].recv(), 20)
        hub = server.app[REGISTRY].get("live", "t")
        await stop(first)
        await wait_for(lambda: hub.publisher is None, 10)
        # drain what the first publisher sent, then the new one's pictures must come
        stream = next(iter(server.app[WHEP].streams.streams.values()))
        frames_before = stream.frames
        second = await start_publisher(server.push_url("t"), clip, loop=True)
        await wait_for(lambda: stream.frames > frames_before + 25, 20)
        assert hub.publisher is not None and hub.publisher.first_dts is not None
        # the RTP timestamp where the new publisher's pictures begin, as aiortc counts it
        # (from the first timestamp it received)
        (viewing,) = server.app[WHEP].viewings.values()
        assert viewing.viewer is not None and viewing.viewer.first_video_timestamp is not None
        threshold = (
            hub.publisher.first_dts * 90
            + stream.video_offset
            - viewing.viewer.first_video_timestamp
        ) & 0xFFFFFFFF
        got = 0
        deadline = asyncio.get_running_loop().time() + 30
        while got < 25 and asyncio.get_running_loop().time() < deadline:
            frame = await asyncio.wait_for(tracks["video"].recv(), 10)
            if frame.pts >= threshold:
                got += 1  # a picture of the new publisher, decoded
        assert got >= 25
        assert hub.stats()["viewers"].get("whep") == 1
        assert len(server.app[WHEP].viewings) == 1
    finally:
        await pc.close()
        await stop(first)
        if second is not None:
            await stop(second)


async def test_audio_only_stream_plays_opus(server_factory, tmp_path) -> None:
    """A stream without video: an audio-only offer gets Opus. (An offer with video too is
    answered with the video section declined, but aiortc refuses a declined section
    without ICE credentials, so aiortc offers audio only here.)"""
    server = await server_factory(webrtc=RTC)
    clip = make_clip(tmp_path / "a.flv", 3.0, video=False)
    proc = await start_publisher(server.push_url("radio"), clip, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", "radio")) is not None and h.gop_valid, 20)
    pc, offer = await _offer(video=False)
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    try:
        _pc, both = await _offer()
        status, answer, _ = await _post(f"{server.http_url}/whep/live/radio", both)
        await _pc.close()
        assert status == 201 and "m=video 0 " in answer  # declined
        status, answer, _ = await _post(f"{server.http_url}/whep/live/radio", offer)
        assert status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        samples = 0
        for _ in range(25):
            samples += (await asyncio.wait_for(tracks["audio"].recv(), 10)).samples
        assert samples >= 25 * 960
    finally:
        await pc.close()
        await stop(proc)


async def test_takeover_by_hevc_closes_whep_viewers_with_the_reason(server_factory, clip, tmp_path):
    """Without the transcode (``webrtc.transcode = false``), an H.264 stream taken over by an
    HEVC publisher: its WebRTC viewers are closed (the transport session ends), and a new
    POST gets 406 saying HEVC."""
    from core.ffmpeg import bundled_ffmpeg_exe

    server = await server_factory(webrtc={**RTC, "transcode": False})
    first = await _publish(server, "x", clip)
    pc, offer = await _offer()
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    hevc_proc = None
    try:
        status, answer, _ = await _post(f"{server.http_url}/whep/live/x", offer)
        assert status == 201
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(tracks["video"].recv(), 20)
        service = server.app[WHEP]
        (viewing,) = service.viewings.values()
        session = viewing.session
        hevc = make_clip(tmp_path / "h.flv", 2.0, fps=25, gop=25, vcodec="libx265")
        exe = bundled_ffmpeg_exe()
        hevc_proc = await start_publisher(server.push_url("x"), hevc, loop=True, exe=exe)
        await wait_for(lambda: session.state in ("closed", "failed"), 20)
        assert not service.viewings
        assert "HEVC" in (viewing.viewer.close_reason if viewing.viewer else "")
        hub = server.app[REGISTRY].get("live", "x")
        await wait_for(lambda: hub.gop_valid and len(hub.gop) > 2, 10)
        pc2, offer2 = await _offer()
        status, text, _ = await _post(f"{server.http_url}/whep/live/x", offer2)
        await pc2.close()
        assert status == 406 and "HEVC" in text
    finally:
        await pc.close()
        await stop(first)
        if hevc_proc is not None:
            await stop(hevc_proc)


async def test_a_whip_stream_plays_over_whep(server_factory) -> None:
    """ffmpeg's whip muxer publishes H.264 + Opus (Opus -> AAC in the hub, as for every
    viewer); an aiortc WHEP viewer of the same stream decodes its video and audio."""
    from tests.ingest.test_whip_media import token, whip_publish

    server = await server_factory(webrtc=RTC)
    pub = await whip_publish(f"{server.http_url}/whip/live/w", token("w"))
    registry = server.app[REGISTRY]
    pc, offer = await _offer()
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    try:
        await wait_for(lambda: (h := registry.get("live", "w")) is not None and h.gop_valid, 30)
        hub = registry.get("live", "w")
        assert hub.publisher is not None and hub.publisher.info.protocol == "whip"
        await wait_for(lambda: hub.audio_header is not None, 15)
        status, answer, _ = await _post(f"{server.http_url}/whep/live/w", offer)
        assert status == 201, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        frame = await asyncio.wait_for(tracks["video"].recv(), 20)
        assert (frame.width, frame.height) == (320, 180)
        for _ in range(30):
            await asyncio.wait_for(tracks["video"].recv(), 10)
        samples = 0
        for _ in range(10):
            samples += (await asyncio.wait_for(tracks["audio"].recv(), 10)).samples
        assert samples >= 10 * 960
    finally:
        await pc.close()
        await stop(pub)


class LossyDownlink(asyncio.DatagramProtocol):
    """A UDP relay between a viewer and the server: forwards both ways, and drops the next
    ``drop`` video RTP packets (payload type ``pt``) from the server once armed (the
    network is the outside world: a real relay, the answer's candidate pointed at it)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.client: tuple[str, int] | None = None
        self.transport: Any = None
        self.pt: int | None = None
        self.drop = 0
        self.dropped: list[int] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr != self.target:
            self.client = addr
            self.transport.sendto(data, self.target)
            return
        is_rtp = len(data) > 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
        if is_rtp and self.drop > 0 and data[1] & 0x7F == self.pt:
            self.drop -= 1
            self.dropped.append(int.from_bytes(data[2:4], "big"))
            return
        if self.client is not None:
            self.transport.sendto(data, self.client)


async def test_lost_packets_come_back_on_nack(server_factory, clip) -> None:
    """aiortc plays through a relay that drops a burst of video packets: aiortc NACKs
    them, the server resends them from the stream's history (on RTX, which aiortc
    offered), and every picture decodes: no frame is missing from the timeline."""
    import re

    from core.rtc import RTC_ENDPOINT

    server = await server_factory(webrtc=RTC)
    proc = await _publish(server, "n", clip)
    loop = asyncio.get_running_loop()
    endpoint = server.app[RTC_ENDPOINT]
    transport, relay = await loop.create_datagram_endpoint(
        lambda: LossyDownlink(("127.0.0.1", endpoint.port)), local_addr=("127.0.0.1", 0)
    )
    relay_port = transport.get_extra_info("sockname")[1]
    pc, offer = await _offer()
    tracks: dict[str, Any] = {}
    pc.on("track", lambda t: tracks.__setitem__(t.kind, t))
    pts: list[int] = []

    async def read() -> None:
        while True:
            pts.append((await tracks["video"].recv()).pts)

    reader: asyncio.Task[None] | None = None
    try:
        status, answer, _ = await _post(f"{server.http_url}/whep/live/n", offer)
        assert status == 201
        answer = re.sub(
            r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1 )\d+", rf"\g<1>{relay_port}", answer
        )
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        reader = asyncio.create_task(read())
        await wait_for(lambda: len(pts) >= 30, 20)
        (viewing,) = server.app[WHEP].viewings.values()
        viewer = viewing.viewer
        assert viewer is not None and viewer.video is not None
        assert viewer.rtx is not None  # aiortc offered RTX: resends go there
        relay.pt = viewer.video.payload_type
        relay.drop = 3
        await wait_for(lambda: relay.drop == 0, 10)
        await wait_for(lambda: viewer.retransmits >= 3, 10)
        seen = len(pts)
        await wait_for(lambda: len(pts) >= seen + 40, 20)
    finally:
        if reader is not None:
            reader.cancel()
        await pc.close()
        transport.close()
        await stop(proc)
    assert viewer.nacks >= 1 and len(relay.dropped) == 3
    steps = {b - a for a, b in itertools.pairwise(pts)}
    assert steps == {90_000 // 25}, sorted(steps)  # every picture, none lost
