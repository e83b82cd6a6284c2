"""What the WHEP tests share: publishing a clip and waiting for its GOP, and headless
Chromium playing a stream over WHEP (the page script and its ``getStats()`` reader).

The page is on another origin than the server (``about:blank``), so the CORS preflight of
the ``application/sdp`` POST is exercised as a real web page would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from relay.http import REGISTRY
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.mediautil import start_publisher, wait_for

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
"""Page script: offer recvonly video + audio, POST it to the WHEP URL given, apply the
answer, and note in ``window.whep.first`` the ms from the POST to the first decoded frame."""

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
"""Page script: the inbound video and audio figures of the page's WHEP connection."""


async def publish(
    server: Any, name: str, clip: Path, exe: str | None = None, frames: int = 8
) -> Any:
    """Publish ``clip`` in a loop to ``live/name`` over RTMP (ffmpeg) and wait until the
    stream's hub holds a valid GOP of more than ``frames`` frames; returns the publisher."""
    proc = await start_publisher(server.push_url(name), clip, loop=True, exe=exe)
    registry = server.app[REGISTRY]
    await wait_for(
        lambda: (
            (h := registry.get("live", name)) is not None and h.gop_valid and len(h.gop) > frames
        ),
        20,
    )
    return proc


class ChromiumWhep:
    """A Chromium page playing one WHEP URL (see :func:`chromium_whep`)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.log: list[str] = []
        """The page's console lines."""
        self.result: dict[str, Any] = {}
        """The POST's answer: ``status``, ``location``, ``text``."""
        self.last: dict[str, Any] = {}
        """The figures :meth:`decoding` saw last."""

    async def stats(self) -> dict[str, Any]:
        return dict(await self.page.evaluate(STATS))

    async def first_frame(self) -> dict[str, Any]:
        """Wait for the first decoded frame; the figures then."""
        await wait_for(lambda: self.page.evaluate("window.whep.first !== null"), 30, step=0.05)
        return await self.stats()

    async def decoding(self, first: dict[str, Any]) -> dict[str, Any]:
        """Wait until 50 more frames than at ``first`` are decoded and more than 50 audio
        packets received; the figures then. Fails with the figures and the console."""

        async def growing() -> bool:
            now = self.last = await self.stats()
            return bool(
                now["video"]["framesDecoded"] >= first["video"]["framesDecoded"] + 50
                and now["audio"]
                and now["audio"]["packetsReceived"] > 50
            )

        try:
            await wait_for(growing, 30, step=0.2)
        except AssertionError:
            raise AssertionError(f"{first=} last={self.last} {self.log[-20:]}") from None
        return self.last


@asynccontextmanager
async def chromium_whep(url: str) -> AsyncIterator[ChromiumWhep]:
    """Headless Chromium (autoplay allowed) with one page that has POSTed its WHEP offer to
    ``url`` and been answered 201 with the answer applied. The browser closes on leaving,
    without a DELETE (as a closed tab)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_executable(),
            args=[*LAUNCH_ARGS, "--autoplay-policy=no-user-gesture-required"],
            headless=True,
        )
        try:
            page = await browser.new_page()
            player = ChromiumWhep(page)
            page.on("console", lambda m: player.log.append(f"{m.type}: {m.text}"))
            player.result = await page.evaluate(PLAY, url)
            assert player.result["status"] == 201, (player.result, player.log)
            yield player
        finally:
            await browser.close()
