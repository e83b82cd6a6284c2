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


async def test_garbage_rtp_and_rtcp_never_break_a_publish(server_factory) -> None:
    """Whatever a publisher's decrypted packets hold (any payload type, SSRC, RTX with
    short payloads, broken RTCP), the publish keeps going and stays within its bounds."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    server = await server_factory(webrtc={"udp_port": 0})
    whip = server.app[WHIP_SERVER]
    assert whip.endpoint is not None
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    rtc = whip.endpoint.open_session(pc.localDescription.sdp, direction="recvonly")
    publish = WhipPublish(
        whip, rtc, "live", "junk", resource_id="j" * 16, client_ip="127.0.0.1", query=""
    )
    pts = [p for p in (publish.video_pt, publish.audio_pt, publish._rtx_pt) if p is not None]
    assert len(pts) == 3  # aiortc offers RTX: its branch is fed too

    def rtp(pt: int, seq: int, ts: int, ssrc: int, marker: bool, payload: bytes) -> bytes:
        head = bytes((0x80, (0x80 if marker else 0) | pt)) + seq.to_bytes(2, "big")
        return head + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload

    packet = st.builds(
        rtp,
        st.sampled_from(pts) | st.integers(0, 127),
        st.integers(0, 0xFFFF),
        st.integers(0, 2**32 - 1),
        st.sampled_from([1, 2, 3]),
        st.booleans(),
        st.binary(max_size=80),
    )

    @settings(max_examples=200, suppress_health_check=list(HealthCheck), deadline=None)
    @given(st.lists(packet | st.binary(max_size=40), max_size=40), st.lists(st.binary(max_size=60)))
    def feed(packets: list[bytes], rtcp: list[bytes]) -> None:
        for p in packets:
            publish._on_rtp(p)
        for r in rtcp:
            publish._on_rtcp(r)

    try:
        publish._go_live()
        assert publish._audio is not None
        publish._audio.start()
        feed()
        assert publish.publisher is not None and publish.publisher.active
        assert publish._depacketizer.holding <= publish._depacketizer.reorder_window
        assert len(publish._nacked) <= 4 * 64 + 64
    finally:
        publish.close("test over")
        await pc.close()
