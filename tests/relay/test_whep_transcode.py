"""WHEP plays streams WebRTC cannot carry as they are through one transcode per stream.

Real components: ffmpeg publishes over RTMP (libx264 with B-frames, libx265), the server
transcodes with a real ffmpeg, aiortc plays over WHEP (ICE, DTLS, SRTP) and decodes.
Checked: B-frame H.264 and HEVC play (pictures decoded in presentation order, audio
arrives); two viewers share one ffmpeg; the last one leaving ends the process; a
passthrough stream starts none; ``transcode = false`` keeps the 406; ``max_transcodes``
refuses with the capacity reason and frees the slot when the viewer leaves; ffmpeg's death
closes the viewers with a reason saying so.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from core.ffmpeg import bundled_ffmpeg_exe
from relay.http import REGISTRY
from relay.rtc_stream import has_reordering, needs_transcode
from relay.whep import WHEP
from tests.mediautil import make_clip, start_publisher, stop, wait_for
from tests.relay.whep_util import publish

RTC = {"udp_port": 0, "host": "127.0.0.1"}
Factory = Callable[..., Any]


@pytest.fixture
def bframes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # libx264 Main with 3 B-frames (x264's default count), 1 s GOP, + AAC
    path = tmp_path_factory.getbasetemp() / "whep_tc_bf3.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "3"])


@pytest.fixture
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_tc_bf0.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "0"])


async def _post(url: str, body: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers={"Content-Type": "application/sdp"}) as r:
            return r.status, await r.text(), r.headers


async def _delete(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.delete(url) as resp:
            return resp.status


class Player:
    """An aiortc WHEP client."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.tracks: dict[str, Any] = {}
        self.pc.on("track", lambda t: self.tracks.__setitem__(t.kind, t))
        self.location = ""

    async def play(self, url: str) -> tuple[int, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, text, headers = await _post(url, self.pc.localDescription.sdp)
        if status == 201:
            self.location = headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(text, "answer"))
        return status, text

    async def watch(self, server: Any, name: str, pictures: int) -> list[Any]:
        """Play ``live/name`` of ``server`` (answered 201) and decode ``pictures`` pictures."""
        status, text = await self.play(f"{server.http_url}/whep/live/{name}")
        assert status == 201, text
        return await self.pictures(pictures)

    async def pictures(self, n: int) -> list[Any]:
        return [await asyncio.wait_for(self.tracks["video"].recv(), 20) for _ in range(n)]

    async def audio_samples(self, n: int) -> int:
        samples = 0
        for _ in range(n):
            samples += (await asyncio.wait_for(self.tracks["audio"].recv(), 10)).samples
        return samples

    async def close(self) -> None:
        await self.pc.close()


def _gone(pid: int) -> bool:
    """The process has exited and been reaped (no zombie left)."""
    return not Path(f"/proc/{pid}").exists()


async def test_bframes_play_through_one_shared_transcode(
    server_factory: Factory, bframes: Path
) -> None:
    server = await server_factory(webrtc=RTC)
    proc = await publish(server, "bf", bframes)
    hub = server.app[REGISTRY].get("live", "bf")
    assert has_reordering(hub.gop) and needs_transcode(hub)  # the source has B-frames
    one, two = Player(), Player()
    try:
        frames = await one.watch(server, "bf", 40)
        assert (frames[0].width, frames[0].height) == (320, 180)
        pts = [f.pts for f in frames]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)  # presentation order
        assert await one.audio_samples(20) >= 20 * 960
        service = server.app[WHEP]
        (stream,) = service.streams.streams.values()
        transcoder = stream.video_transcoder
        assert transcoder is not None and transcoder.pid is not None
        pid = transcoder.pid
        assert not _gone(pid)
        # a second viewer: same stream, same ffmpeg
        await two.watch(server, "bf", 10)
        assert list(service.streams.streams.values()) == [stream]
        assert stream.video_transcoder is transcoder and transcoder.pid == pid
        figures = stream.stats()["transcode"]
        assert figures["pid"] == pid and figures["frames_out"] > 40 and not figures["failed"]
        assert figures["added_ms"]["frames"] > 0  # live pictures timed through ffmpeg
        assert hub.stats()["viewers"].get("whep") == 2
        # the first leaving keeps it; the last leaving ends ffmpeg
        assert await _delete(server.http_url + one.location) == 200
        await two.pictures(10)
        assert not _gone(pid)
        assert await _delete(server.http_url + two.location) == 200
        await wait_for(lambda: _gone(pid), 10)
        await transcoder.wait_closed()
        assert transcoder.proc is not None and transcoder.proc.returncode is not None
        assert not service.streams.streams and service.streams.transcodes_in_use() == 0
    finally:
        await one.close()
        await two.close()
        await stop(proc)


async def test_hevc_plays_through_the_transcode(server_factory: Factory, tmp_path: Path) -> None:
    server = await server_factory(webrtc=RTC)
    hevc = make_clip(tmp_path / "h.flv", 3.0, fps=25, gop=25, vcodec="libx265")
    proc = await publish(server, "h", hevc, exe=bundled_ffmpeg_exe())
    player = Player()
    try:
        frames = await player.watch(server, "h", 30)
        assert frames[0].width == 320
        pts = [f.pts for f in frames]
        assert pts == sorted(pts)
        assert await player.audio_samples(10) >= 10 * 960
        (stream,) = server.app[WHEP].streams.streams.values()
        assert stream.video_transcoder is not None and stream.frame_errors == 0
    finally:
        await player.close()
        await stop(proc)


async def test_passthrough_starts_no_transcoder(server_factory: Factory, plain: Path) -> None:
    server = await server_factory(webrtc=RTC)
    proc = await publish(server, "p", plain)
    player = Player()
    try:
        await player.watch(server, "p", 10)
        (stream,) = server.app[WHEP].streams.streams.values()
        assert not stream.transcoding and stream.video_transcoder is None
        assert stream.stats()["transcode"] is None
        assert server.app[WHEP].streams.transcodes_in_use() == 0
    finally:
        await player.close()
        await stop(proc)


async def test_transcode_off_keeps_the_406(server_factory: Factory, bframes: Path) -> None:
    server = await server_factory(webrtc={**RTC, "transcode": False})
    proc = await publish(server, "bf", bframes)
    player = Player()
    try:
        status, text = await player.play(f"{server.http_url}/whep/live/bf")
        assert status == 406 and "B-frames" in text and "capacity" not in text
        assert not server.app[WHEP].streams.streams
    finally:
        await player.close()
        await stop(proc)


async def test_capacity_is_counted_per_stream(server_factory: Factory, bframes: Path) -> None:
    """``max_transcodes = 1``: a second B-frame stream is refused with the capacity reason
    (a second viewer of the transcoded stream is not: it shares the transcode); when the
    first stream's last viewer leaves, the second stream may be played."""
    server = await server_factory(webrtc={**RTC, "max_transcodes": 1})
    first = await publish(server, "a", bframes)
    second = await publish(server, "b", bframes)
    players = [Player() for _ in range(4)]
    try:
        a1, a2, b1, b2 = players
        status, text = await a1.play(f"{server.http_url}/whep/live/a")
        assert status == 201, text
        # refused at once, before a1 is even connected: the POST holds the transcode
        status, text = await b1.play(f"{server.http_url}/whep/live/b")
        assert status == 406, text
        assert "capacity" in text and "max_transcodes" in text and "B-frames" in text
        await a1.pictures(5)
        await a2.watch(server, "a", 5)
        for p in (a1, a2):
            assert await _delete(server.http_url + p.location) == 200
        service = server.app[WHEP]
        await wait_for(lambda: service.streams.transcodes_in_use() == 0, 10)
        await b2.watch(server, "b", 5)
    finally:
        for p in players:
            await p.close()
        await stop(first)
        await stop(second)


async def test_ffmpeg_dying_closes_the_viewers_with_the_reason(
    server_factory: Factory, bframes: Path
) -> None:
    server = await server_factory(webrtc=RTC)
    proc = await publish(server, "bf", bframes)
    player = Player()
    try:
        await player.watch(server, "bf", 5)
        service = server.app[WHEP]
        (viewing,) = service.viewings.values()
        viewer = viewing.viewer
        assert viewer is not None
        transcoder = viewer.stream.video_transcoder
        assert transcoder is not None and transcoder.pid is not None
        pid = transcoder.pid
        os.kill(pid, 9)
        await wait_for(lambda: viewer.closed, 10)
        assert "transcode stopped" in viewer.close_reason and "reconnect" in viewer.close_reason
        await wait_for(lambda: viewing.session.state in ("closed", "failed"), 10)
        assert not service.viewings and not service.streams.streams
        await wait_for(lambda: _gone(pid), 10)
        # a new viewer gets a new transcode
        again = Player()
        try:
            await again.watch(server, "bf", 5)
            (stream,) = service.streams.streams.values()
            assert stream.video_transcoder is not None and stream.video_transcoder.pid != pid
        finally:
            await again.close()
    finally:
        await player.close()
        await stop(proc)


async def test_a_stalled_transcode_drops_to_the_next_keyframe(plain: Path) -> None:
    """ffmpeg stopped (SIGSTOP) while the stream goes on: ``push`` never waits; beyond the
    queue's bound frames are dropped (counted) up to a keyframe; once ffmpeg runs again
    every frame taken is encoded, in order, and the output goes on."""
    from media.flv import TAG_VIDEO, FlvDemuxer, FlvTag
    from media.frame import Frame, Kind
    from relay.rtc_transcode import TranscodeSettings, VideoTranscoder

    tags = FlvDemuxer().feed(plain.read_bytes())
    video = [
        Frame.from_payload(Kind.VIDEO, t.timestamp, t.body)
        for t in tags
        if isinstance(t, FlvTag) and t.tag_type == TAG_VIDEO
    ]
    header, pictures = video[0], video[1:]
    assert header.header and pictures[0].keyframe
    span = pictures[-1].dts + 40

    def looped(n: int) -> list[Frame]:  # the clip again, later on the timeline
        return [
            Frame(Kind.VIDEO, f.dts + n * span, f.payload, keyframe=f.keyframe, cts=f.cts)
            for f in pictures
        ]

    out: list[Frame] = []
    exits: list[str] = []
    settings = TranscodeSettings(enabled=True, preset="ultrafast")
    transcoder = VideoTranscoder("test/stall", settings, out.extend, exits.append)
    transcoder.start([header, *looped(0)], {})
    try:
        await wait_for(lambda: len(out) > 50, 20)
        assert transcoder.pid is not None
        os.kill(transcoder.pid, signal.SIGSTOP)
        for n in range(1, 8):  # 28 s of stream while ffmpeg sleeps
            for frame in looped(n):
                transcoder.push(frame)
        assert transcoder.frames_dropped > 0
        taken = transcoder.frames_in
        os.kill(transcoder.pid, signal.SIGCONT)
        await wait_for(lambda: transcoder.stats()["queued_bytes"] == 0, 20)
        for frame in looped(8):
            transcoder.push(frame)

        def pictures_out() -> list[Frame]:
            return [f for f in out if not f.header]

        await wait_for(lambda: len(pictures_out()) >= transcoder.frames_in - 2, 30)
        assert transcoder.frames_in > taken and not exits
        pts = [f.pts for f in pictures_out()]
        assert pts == sorted(pts)
        # what follows a gap starts at a keyframe (the source's keyframes are kept)
        for before, after in zip(pictures_out(), pictures_out()[1:], strict=False):
            if after.pts - before.pts > 100:
                assert after.keyframe
    finally:
        if transcoder.pid is not None:
            os.kill(transcoder.pid, signal.SIGCONT)
        transcoder.close()
        await transcoder.wait_closed()
    assert transcoder.proc is not None and transcoder.proc.returncode is not None


async def _transcoded_pictures(player: Player, viewer: Any, n: int) -> int:
    """Decode pictures until ``n`` of them came out of the stream's current transcode (the
    RTP timestamps from its first picture on, as aiortc counts them); how many did."""
    stream = viewer.stream
    await wait_for(
        lambda: (
            stream.video_transcoder is not None and stream.video_transcoder.first_pts is not None
        ),
        20,
    )
    threshold = (
        stream.video_transcoder.first_pts * 90 + stream.video_offset - viewer.first_video_timestamp
    ) & 0xFFFFFFFF
    got, last = 0, -1
    deadline = asyncio.get_running_loop().time() + 30
    while got < n and asyncio.get_running_loop().time() < deadline:
        frame = await asyncio.wait_for(player.tracks["video"].recv(), 10)
        assert frame.pts > last  # presentation order, across the switch
        last = frame.pts
        if frame.pts >= threshold:
            got += 1
    return got


async def test_passthrough_switches_to_the_transcode_in_place(
    server_factory: Factory, plain: Path, bframes: Path, tmp_path: Path
) -> None:
    """A passthrough stream taken over by a publisher with B-frames: its WebRTC viewer
    stays (same session) and decodes the transcode's pictures from the next keyframe on;
    then an HEVC publisher takes over: the transcode restarts (a new ffmpeg) and the
    viewer goes on again."""
    server = await server_factory(webrtc=RTC)
    first = await publish(server, "t", plain)
    player = Player()
    second = third = None
    try:
        await player.watch(server, "t", 5)
        service = server.app[WHEP]
        (viewing,) = service.viewings.values()
        viewer = viewing.viewer
        assert viewer is not None and not viewer.stream.transcoding
        second = await start_publisher(server.push_url("t"), bframes, loop=True)
        await stop(first)
        assert await _transcoded_pictures(player, viewer, 20) == 20
        assert not viewer.closed and viewing.session.state == "connected"
        stream = viewer.stream
        assert stream.switches == 1 and stream.video_transcoder is not None
        pid = stream.video_transcoder.pid
        assert pid is not None
        # a takeover by HEVC: another video header -> a new ffmpeg, the viewer stays
        hevc = make_clip(tmp_path / "h.flv", 3.0, fps=25, gop=25, vcodec="libx265")
        third = await start_publisher(
            server.push_url("t"), hevc, loop=True, exe=bundled_ffmpeg_exe()
        )
        await stop(second)
        await wait_for(lambda: _gone(pid), 20)
        assert stream.video_transcoder.pid != pid
        assert await _transcoded_pictures(player, viewer, 20) == 20
        assert not viewer.closed and list(service.viewings.values()) == [viewing]
        assert service.streams.transcodes_in_use() == 1
    finally:
        await player.close()
        for proc in (first, second, third):
            if proc is not None:
                await stop(proc)


async def test_a_switch_without_capacity_closes_the_viewers_with_the_reason(
    server_factory: Factory, plain: Path, bframes: Path
) -> None:
    """``max_transcodes = 1``, taken by one stream: another, passed through, taken over
    by a publisher with B-frames closes its viewers with the capacity reason."""
    server = await server_factory(webrtc={**RTC, "max_transcodes": 1})
    busy = await publish(server, "busy", bframes)
    first = await publish(server, "p", plain)
    holder, player = Player(), Player()
    second = None
    try:
        await holder.watch(server, "busy", 3)
        await player.watch(server, "p", 3)
        service = server.app[WHEP]
        viewer = next(v.viewer for v in service.viewings.values() if v.stream == "p")
        assert viewer is not None
        second = await start_publisher(server.push_url("p"), bframes, loop=True)
        await wait_for(lambda: viewer.closed, 20)
        assert "capacity" in viewer.close_reason and "B-frames" in viewer.close_reason
        assert service.streams.transcodes_in_use() == 1  # the busy stream's, still playing
        await holder.pictures(3)
    finally:
        await holder.close()
        await player.close()
        for proc in (busy, first, second):
            if proc is not None:
                await stop(proc)
