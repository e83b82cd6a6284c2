"""Chromium (headless, through Playwright) against the endpoint: its offers parse, ICE-lite
and DTLS connect, and SRTP flows both ways.

Transport only (engineers of WHEP/WHIP test the HTTP resources end to end): the page makes
the offer, Python answers through ``RtcEndpoint.open_session`` and hands the answer back.
Playing: we send hand-packetized H.264 + Opus, Chromium's ``getStats()`` must show frames
decoded and audio packets received. Publishing: a canvas + oscillator stream, our
``on_rtp`` must get both payload types decrypted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from core.rtc import RtcEndpoint
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.mediautil import wait_for
from tests.rtc.media import h264_access_units, send_h264_and_opus

OFFER_PLAY = """
async () => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  window.pc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  return pc.localDescription.sdp;
}
"""

OFFER_PUBLISH = """
async () => {
  const canvas = document.createElement("canvas");
  canvas.width = 160; canvas.height = 120;
  const g = canvas.getContext("2d");
  let n = 0;
  setInterval(() => { g.fillStyle = n++ % 2 ? "#c33" : "#3c3"; g.fillRect(0, 0, 160, 120); }, 40);
  const ac = new AudioContext();
  const osc = ac.createOscillator();
  const dest = ac.createMediaStreamDestination();
  osc.connect(dest); osc.start();
  const pc = new RTCPeerConnection();
  for (const t of [...canvas.captureStream(25).getVideoTracks(), ...dest.stream.getAudioTracks()])
    pc.addTransceiver(t, { direction: "sendonly" });
  window.pc = pc;
  await pc.setLocalDescription(await pc.createOffer());
  return pc.localDescription.sdp;
}
"""

ANSWER = "async (sdp) => { await window.pc.setRemoteDescription({ type: 'answer', sdp }); }"
STATE = "() => window.pc.connectionState"
INBOUND = """
async () => {
  const out = {};
  for (const s of (await window.pc.getStats()).values())
    if (s.type === "inbound-rtp")
      out[s.kind] = { frames: s.framesDecoded || 0, packets: s.packetsReceived || 0 };
  return out;
}
"""


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_executable(), args=LAUNCH_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_chromium_plays_what_we_send(endpoint: RtcEndpoint, page: Any) -> None:
    offer = await page.evaluate(OFFER_PLAY)
    session = endpoint.open_session(offer, direction="sendonly")
    assert session.video is not None and session.video.codec == "H264"
    assert "packetization-mode=1" in session.video.fmtp
    await page.evaluate(ANSWER, session.answer_sdp)
    assert await session.wait_connected(15)

    async def connected() -> bool:
        return bool(await page.evaluate(STATE) == "connected")

    await wait_for(connected, timeout=15)
    units = h264_access_units(30)
    sent = send_h264_and_opus(session, units)

    async def decoded() -> bool:
        stats = await page.evaluate(INBOUND)
        video, audio = stats.get("video", {}), stats.get("audio", {})
        return bool(video.get("frames", 0) > 0 and audio.get("packets", 0) > 0)

    await wait_for(decoded, timeout=15)
    stats = await page.evaluate(INBOUND)
    assert stats["video"]["packets"] == sent  # nothing lost on loopback, all decrypted
    assert session.stats["srtp_errors"] == 0


async def test_chromium_publishes_to_us(endpoint: RtcEndpoint, page: Any) -> None:
    offer = await page.evaluate(OFFER_PUBLISH)
    session = endpoint.open_session(offer, direction="recvonly")
    video, audio = session.video, session.audio
    assert video is not None and video.codec == "H264"
    assert audio is not None and audio.codec == "opus"
    rtp: list[bytes] = []
    rtcp: list[bytes] = []
    session.on_rtp = rtp.append
    session.on_rtcp = rtcp.append
    await page.evaluate(ANSWER, session.answer_sdp)
    assert await session.wait_connected(15)

    def pts() -> set[int]:
        return {p[1] & 0x7F for p in rtp}

    await wait_for(lambda: {video.payload_type, audio.payload_type} <= pts(), timeout=15)
    await wait_for(lambda: any(p[1] == 200 for p in rtcp), timeout=15)  # a sender report
    assert session.stats["srtp_errors"] == 0
    session.close()

    async def gone() -> bool:
        return bool(await page.evaluate(STATE) in ("closed", "failed", "disconnected"))

    await wait_for(gone, timeout=30)
