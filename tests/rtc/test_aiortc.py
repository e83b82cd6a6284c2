"""The endpoint against aiortc, an independent WebRTC stack, as the remote peer.

aiortc makes the offer (it is the client), our endpoint answers ICE-lite; ICE, DTLS and
SRTP must complete with aiortc's public API only, and media must flow both ways: aiortc
publishes video + audio that our ``on_rtp`` receives decrypted with the negotiated payload
types; we send hand-packetized H.264 + Opus that aiortc's receiver decodes into frames.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import av
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack, VideoStreamTrack

from core.rtc import NegotiatedMedia, RtcEndpoint, RtcSession
from tests.mediautil import wait_for
from tests.rtc.media import audio_packets, h264_access_units, send_h264_and_opus


async def _answer(
    pc: RTCPeerConnection,
    endpoint: RtcEndpoint,
    direction: Literal["recvonly", "sendonly"],
    **kw: Any,
) -> RtcSession:
    await pc.setLocalDescription(await pc.createOffer())
    session = endpoint.open_session(pc.localDescription.sdp, direction=direction, **kw)
    await pc.setRemoteDescription(RTCSessionDescription(session.answer_sdp, "answer"))
    return session


async def test_aiortc_publishes_and_we_receive_decrypted_rtp(endpoint: RtcEndpoint) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    try:
        session = await _answer(pc, endpoint, "recvonly")
        assert "a=ice-lite" in session.answer_sdp and "a=setup:passive" in session.answer_sdp
        rtp: list[bytes] = []
        rtcp: list[bytes] = []
        session.on_rtp = rtp.append
        session.on_rtcp = rtcp.append
        assert await session.wait_connected(10)
        await wait_for(lambda: pc.connectionState == "connected")
        video, audio = session.video, session.audio
        assert video is not None and video.codec == "H264" and video.clock_rate == 90000
        assert audio is not None and audio.codec.lower() == "opus" and audio.clock_rate == 48000

        def seen(media: NegotiatedMedia) -> bool:
            return any(
                (p[1] & 0x7F) == media.payload_type
                and int.from_bytes(p[8:12], "big") in media.remote_ssrcs
                for p in rtp
            )

        await wait_for(lambda: seen(video) and seen(audio), timeout=15)
        assert all(p[0] >> 6 == 2 for p in rtp)  # decrypted RTP version 2
        await wait_for(lambda: any(p[1] == 200 for p in rtcp), timeout=15)  # aiortc's SR
        assert session.stats["srtp_errors"] == 0
    finally:
        await pc.close()


class _Inbox:
    def __init__(self) -> None:
        self.tracks: list[MediaStreamTrack] = []


@pytest.mark.parametrize("batch", [False, True])
async def test_we_send_h264_and_opus_that_aiortc_decodes(
    endpoint: RtcEndpoint, batch: bool
) -> None:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    inbox = _Inbox()
    pc.on("track", inbox.tracks.append)
    try:
        session = await _answer(pc, endpoint, "sendonly")
        assert "a=sendonly" in session.answer_sdp
        assert await session.wait_connected(10)
        video, audio = session.video, session.audio
        assert video is not None and audio is not None
        units = h264_access_units(20)
        seq = send_h264_and_opus(session, units, batch=batch)
        await wait_for(lambda: len(inbox.tracks) == 2)
        by_kind = {t.kind: t for t in inbox.tracks}
        frame = await asyncio.wait_for(by_kind["video"].recv(), 10)
        assert isinstance(frame, av.VideoFrame)
        assert (frame.width, frame.height) == (160, 120)
        sound = await asyncio.wait_for(by_kind["audio"].recv(), 10)
        assert isinstance(sound, av.AudioFrame)
        assert sound.sample_rate == 48000

        async def received() -> bool:  # aiortc's public stats count every packet we sent
            stats = await pc.getStats()
            inbound = {s.kind: s.packetsReceived for s in stats.values() if s.type == "inbound-rtp"}
            return inbound == {"video": seq, "audio": audio_packets(units)}

        await wait_for(received)
    finally:
        await pc.close()


async def test_aiortc_as_dtls_server_when_the_offer_is_passive(endpoint: RtcEndpoint) -> None:
    """ffmpeg's whip muxer offers a=setup:passive: we must then be the DTLS client."""
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp.replace("a=setup:actpass", "a=setup:passive")
        session = endpoint.open_session(offer, direction="recvonly", audio_codecs=())
        assert "a=setup:active" in session.answer_sdp
        await pc.setRemoteDescription(RTCSessionDescription(session.answer_sdp, "answer"))
        got: list[bytes] = []
        session.on_rtp = got.append
        assert await session.wait_connected(10)
        await wait_for(lambda: len(got) > 5, timeout=15)
    finally:
        await pc.close()


async def test_several_aiortc_peers_on_one_port(endpoint: RtcEndpoint) -> None:
    pcs = [RTCPeerConnection() for _ in range(4)]
    for pc in pcs:
        pc.addTrack(VideoStreamTrack())
    try:
        sessions = [await _answer(pc, endpoint, "recvonly", audio_codecs=()) for pc in pcs]
        inboxes: list[list[bytes]] = [[] for _ in sessions]
        for session, inbox in zip(sessions, inboxes, strict=True):
            session.on_rtp = inbox.append
        assert all(await asyncio.gather(*[s.wait_connected(15) for s in sessions]))
        await wait_for(lambda: all(len(i) > 3 for i in inboxes), timeout=20)
        for session, inbox in zip(sessions, inboxes, strict=True):
            ssrcs = {int.from_bytes(p[8:12], "big") for p in inbox}
            assert session.video is not None and ssrcs <= set(session.video.remote_ssrcs)
        assert len({s.stats["remote_address"] for s in sessions}) == 4
    finally:
        for pc in pcs:
            await pc.close()


@pytest.mark.parametrize("side", ["ours", "theirs"])
async def test_close_from_either_side(endpoint: RtcEndpoint, side: str) -> None:
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    try:
        session = await _answer(pc, endpoint, "recvonly", audio_codecs=())
        assert await session.wait_connected(10)
        await wait_for(lambda: pc.connectionState == "connected")
        if side == "ours":
            session.close()
            assert session.close_reason == "closed"
            await wait_for(lambda: pc.connectionState in ("closed", "failed"), timeout=15)
        else:
            await pc.close()
            assert await asyncio.wait_for(session.wait_closed(), 10) == "remote-closed"
        assert session.id not in endpoint.sessions
    finally:
        await pc.close()
