"""ffmpeg 9's whip muxer (imageio-ffmpeg) publishes to the endpoint: its offer is
``a=setup:passive``, so we are the DTLS client; H.264 + Opus must reach ``on_rtp``
decrypted with the offered payload types and SSRCs.

The WHIP resource here is a minimal aiohttp handler in the test (the product's is
``ingest/whip.py``): POST -> ``open_session(recvonly)`` -> 201 + answer; DELETE closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from core.ffmpeg import bundled_ffmpeg_exe
from core.rtc import RtcEndpoint, RtcOfferError, RtcSession
from tests.mediautil import wait_for


def _payload(packet: bytes) -> bytes:
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    return packet[offset:]


def _nal_types(payload: bytes) -> set[int]:
    kind = payload[0] & 0x1F
    if kind == 28:  # FU-A
        return {payload[1] & 0x1F}
    if kind == 24:  # STAP-A
        out, pos = set(), 1
        while pos + 2 < len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            out.add(payload[pos + 2] & 0x1F)
            pos += 2 + size
        return out
    return {kind}


@pytest.fixture
async def whip(endpoint: RtcEndpoint) -> AsyncIterator[tuple[str, list[RtcSession], list[str]]]:
    sessions: list[RtcSession] = []
    deleted: list[str] = []

    async def post(request: web.Request) -> web.Response:
        try:
            session = endpoint.open_session(await request.text(), direction="recvonly")
        except RtcOfferError as exc:
            return web.Response(status=exc.status, text=exc.reason)
        sessions.append(session)
        return web.Response(
            status=201,
            text=session.answer_sdp,
            content_type="application/sdp",
            headers={"Location": f"/whip/s/{session.id}"},
        )

    async def delete(request: web.Request) -> web.Response:
        session = endpoint.sessions.get(request.match_info["id"])
        if session is not None:
            session.close()
        deleted.append(request.match_info["id"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/whip", post)
    app.router.add_delete("/whip/s/{id}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/whip", sessions, deleted
    finally:
        await runner.cleanup()


async def test_ffmpeg_whip_muxer_publishes(
    whip: tuple[str, list[RtcSession], list[str]],
) -> None:
    url, sessions, deleted = whip
    rtp: list[bytes] = []
    args = [
        bundled_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "baseline",
        "-bf", "0", "-g", "25", "-c:a", "libopus", "-ac", "2", "-ar", "48000",
        "-f", "whip", url,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for(lambda: bool(sessions), timeout=20)
        session = sessions[0]
        session.on_rtp = rtp.append
        assert "a=setup:active" in session.answer_sdp
        assert await session.wait_connected(15)
        video, audio = session.video, session.audio
        assert video is not None and audio is not None

        def arrived(pt: int, ssrcs: tuple[int, ...]) -> bool:
            return any(p[1] & 0x7F == pt and int.from_bytes(p[8:12], "big") in ssrcs for p in rtp)

        await wait_for(
            lambda: (
                arrived(video.payload_type, video.remote_ssrcs)
                and arrived(audio.payload_type, audio.remote_ssrcs)
            ),
            timeout=20,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()[-2000:]
        assert deleted == [session.id]  # ffmpeg ends its session with DELETE
        assert session.state == "closed" and session.stats["srtp_errors"] == 0
        types: set[int] = set()
        for p in rtp:
            if p[1] & 0x7F == video.payload_type:
                types |= _nal_types(_payload(p))
        assert {7, 8, 5} <= types  # SPS, PPS and an IDR slice came through whole
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
