"""Chromium (headless, Playwright, fake camera and microphone) publishes over WHIP from a
page of another origin (CORS preflight, ``Location``/``Link`` read by the page), and an
HTTP-FLV viewer gets the stream: H.264 decoding cleanly, AAC audio; the page's DELETE
ends it. A bad token gets a 401 the page can read.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ingest import auth
from ingest.events import StreamPublished, StreamUnpublished
from ingest.whip import WHIP_SERVER
from relay.http import REGISTRY
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.conftest import TEST_SECRET
from tests.ingest.test_whip_media import read_stream
from tests.mediautil import wait_for

FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

PUBLISH = """
async ({ url, token }) => {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { width: 320, height: 240, frameRate: 25 }, audio: true });
  const pc = new RTCPeerConnection();
  for (const t of stream.getTracks()) pc.addTransceiver(t, { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  const resp = await fetch(url, { method: "POST", body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + token } });
  const text = await resp.text();
  if (resp.status !== 201) { pc.close(); return { status: resp.status, body: text }; }
  await pc.setRemoteDescription({ type: "answer", sdp: text });
  window.pc = pc;
  window.resource = new URL(resp.headers.get("Location"), url).href;
  return { status: resp.status, location: resp.headers.get("Location"),
           link: resp.headers.get("Link") };
}
"""

STATE = "() => window.pc.connectionState"
DELETE = "async () => (await fetch(window.resource, { method: 'DELETE' })).status"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=chromium_executable(), args=LAUNCH_ARGS + FAKE_MEDIA
        )
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_chromium_publishes_over_whip_and_flv_viewers_get_it(server_factory, page) -> None:
    server = await server_factory(
        webrtc={"udp_port": 0, "ice_servers": ("stun:stun.example.net:3478",)}
    )
    port = server.runtime.http_port
    # the page is on another origin than the WHIP endpoint (localhost vs 127.0.0.1)
    await page.goto(f"http://localhost:{port}/healthz")
    url = f"{server.http_url}/whip/live/browser"
    seen: list[Any] = []
    bus = server.runtime.bus
    offs = [bus.on(c, seen.append) for c in (StreamPublished, StreamUnpublished)]
    try:
        bad = await page.evaluate(PUBLISH, {"url": url, "token": "expire=1&sign=00"})
        assert bad["status"] == 401 and "publish refused" in bad["body"]
        tok = auth.push_query(TEST_SECRET, "live", "browser", int(time.time()) + 600)
        result = await page.evaluate(PUBLISH, {"url": url, "token": tok})
        assert result["status"] == 201, result
        assert result["location"].startswith("/whip/live/browser/")
        assert result["link"] == '<stun:stun.example.net:3478>; rel="ice-server"'

        async def connected() -> bool:
            return bool(await page.evaluate(STATE) == "connected")

        await wait_for(connected, timeout=20)
        await wait_for(
            lambda: (
                (h := server.app[REGISTRY].get("live", "browser")) is not None
                and h.live
                and h.video_header is not None
                and h.audio_header is not None
            ),
            timeout=20,
        )
        got = await asyncio.to_thread(read_stream, f"{server.http_url}/live/browser.flv", 75, 40)
        assert got["codecs"] == {"video": "h264", "audio": "aac"}
        assert got["first_keyframe"] is True
        vd = got["video_dts"]
        assert len(vd) == 75 and got["errors"] == [] and got["decoded"] >= 70
        assert all(b > a for a, b in itertools.pairwise(vd))
        assert len(got["audio_dts"]) > 20
        # Chromium's sender reports put its audio and video clocks on one timeline
        (publish,) = server.app[WHIP_SERVER].sessions.values()
        await wait_for(lambda: min(publish.sender_reports.values()) > 0, timeout=15)
        assert await page.evaluate(DELETE) == 200
        await wait_for(lambda: any(isinstance(e, StreamUnpublished) for e in seen), 15)
    finally:
        for off in offs:
            off()
    assert [(e.protocol, e.takeover) for e in seen if isinstance(e, StreamPublished)] == [
        ("whip", False)
    ]
    assert [e.reason for e in seen if isinstance(e, StreamUnpublished)] == ["unpublished"]
    assert server.app[WHIP_SERVER].sessions == {}
