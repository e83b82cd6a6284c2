"""Chromium plays WHEP for an RTMP-published H.264 + AAC stream.

The page is on another origin than the server (``about:blank``), so the CORS preflight of
the ``application/sdp`` POST is exercised as a real web page would. ``getStats()`` must show
frames decoded growing and audio packets received; the time from the POST to the first
decoded frame is printed (a figure, not asserted: speed belongs to bench/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.http import REGISTRY
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.mediautil import make_clip, start_publisher, stop, wait_for

PLAY = """
async (url) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); video.srcObject = stream; };
  await pc.setLocalDescription(await pc.createOffer());
  const t0 = performance.now();
  const r = await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
  });
  const answer = await r.text();
  const out = { status: r.status, location: r.headers.get("Location"), text: answer };
  if (r.status !== 201) return out;
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  window.whep = { pc, t0, first: null };
  const poll = async () => {
    const stats = await pc.getStats();
    for (const s of stats.values()) {
      if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0) {
        window.whep.first = performance.now() - t0;
        return;
      }
    }
    setTimeout(poll, 5);
  };
  poll();
  return out;
}
"""

STATS = """
async () => {
  const out = { video: null, audio: null, state: window.whep.pc.connectionState,
                first: window.whep.first };
  for (const s of (await window.whep.pc.getStats()).values()) {
    if (s.type === "inbound-rtp") out[s.kind] = {
      framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
      packetsLost: s.packetsLost || 0, nackCount: s.nackCount || 0,
      jitterBufferMs: s.jitterBufferEmittedCount
        ? Math.round(1000 * s.jitterBufferDelay / s.jitterBufferEmittedCount) : null,
    };
  }
  return out;
}
"""


@pytest.fixture
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "whep_browser.flv"
    return make_clip(path, 4.0, fps=25, gop=25, extra=["-bf", "0"])


async def test_chromium_plays_whep(server_factory, clip) -> None:
    from playwright.async_api import async_playwright

    server = await server_factory(
        webrtc={"udp_port": 0, "host": "127.0.0.1", "consent_timeout": 5.0}
    )
    proc = await start_publisher(server.push_url("tv"), clip, loop=True)
    registry = server.app[REGISTRY]
    await wait_for(lambda: (h := registry.get("live", "tv")) is not None and h.gop_valid, 20)
    log: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(),
                args=[*LAUNCH_ARGS, "--autoplay-policy=no-user-gesture-required"],
                headless=True,
            )
            try:
                page = await browser.new_page()
                page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
                result: dict[str, Any] = await page.evaluate(
                    PLAY, f"{server.http_url}/whep/live/tv"
                )
                assert result["status"] == 201, (result, log)
                assert result["location"].startswith("/whep/live/tv/")

                async def stats() -> dict[str, Any]:
                    return dict(await page.evaluate(STATS))

                await wait_for(lambda: page.evaluate("window.whep.first !== null"), 30, step=0.05)
                first = await stats()
                print(f"\nWHEP POST -> first frame decoded (Chromium): {first['first']:.0f} ms")

                async def growing() -> bool:
                    now = await stats()
                    return bool(
                        now["video"]["framesDecoded"] >= first["video"]["framesDecoded"] + 50
                        and now["audio"]
                        and now["audio"]["packetsReceived"] > 50
                    )

                await wait_for(growing, 30, step=0.2)
                final = await stats()
                print(f"Chromium getStats: {final}")
                hub = registry.get("live", "tv")
                assert hub.stats()["viewers"].get("whep") == 1
            finally:
                await browser.close()
        # the browser is gone without a DELETE: the session ends on its own
        await wait_for(lambda: hub.stats()["viewers"].get("whep") is None, 60, step=0.2)
    finally:
        await stop(proc)
