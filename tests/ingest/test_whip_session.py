"""ingest.whip_session on a real server and a real (unconnected) WebRTC session: when a
sender report re-anchors audio earlier on video's clock, the stretch of audio time already
sent is dropped, not squeezed into 1 ms steps by the hub."""

from __future__ import annotations

import itertools
import time

from aiortc import AudioStreamTrack, RTCPeerConnection, VideoStreamTrack

from ingest.whip import WHIP_SERVER
from ingest.whip_session import WhipPublish
from media.frame import Frame, Kind
from tests.mediautil import wait_for


def ntp(seconds: float) -> int:
    return int(seconds * (1 << 32))


async def test_audio_realigned_earlier_drops_the_overlap(server_factory) -> None:
    server = await server_factory(webrtc={"udp_port": 0})
    whip = server.app[WHIP_SERVER]
    assert whip.endpoint is not None
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    rtc = whip.endpoint.open_session(pc.localDescription.sdp, direction="recvonly")
    publish = WhipPublish(
        whip, rtc, "live", "sync", resource_id="s" * 16, client_ip="127.0.0.1", query=""
    )
    try:
        publish._go_live()
        assert publish.publisher is not None
        pushed: list[Frame] = []
        real_push = publish.publisher.push_frame

        def record(frame: Frame) -> None:
            pushed.append(frame)
            real_push(frame)

        publish.publisher.push_frame = record  # type: ignore[method-assign]
        assert publish._audio is not None
        publish._audio.start()
        await wait_for(lambda: publish._audio is not None and publish._audio.codec is not None)
        clock, now = publish._clock, time.monotonic() * 1000
        v0, a0 = 90_000, 48_000
        clock.ms("video", clock.extend("video", v0), now)
        clock.ms("audio", clock.extend("audio", a0), now)
        raw = bytes(20)
        publish._aac_frames([(a0 + 1024 * i, raw) for i in range(10)])  # 0 .. 192 ms
        # the sender says: audio sample a0 + 4800 (100 ms) was taken with video's v0
        clock.sender_report("video", ntp(1000.0), v0)
        clock.sender_report("audio", ntp(1000.0), a0 + 4800)
        assert clock.resyncs == 1
        publish._aac_frames([(a0 + 1024 * i, raw) for i in range(10, 30)])
    finally:
        publish.close("test over")
        await pc.close()
    audio = [f.dts for f in pushed if f.kind == Kind.AUDIO and not f.header]
    assert audio[:10] == [(1024 * i * 1000) // 48000 for i in range(10)]
    steps = [b - a for a, b in itertools.pairwise(audio)]
    # strictly increasing, one short step where the overlap ends, no squeezed run
    assert min(steps) > 1 and sorted(steps)[1] >= 21, steps
    assert publish.audio_overlap >= 4  # ~100 ms of audio dropped, once
    assert len(audio) == 30 - publish.audio_overlap
