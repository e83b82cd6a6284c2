"""hls.js (npm, tests/hlsjs) with ``lowLatencyMode`` in headless Chromium plays the hub's
LL-HLS from a real ffmpeg publisher and stays near live.

What is asserted: frames are decoded and the playhead advances the whole time; the latency
hls.js reports (``hls.latency``: playhead to the live edge of the playlist) stays within 3 s
for 30 s of playback after the start. The PDT-based delay (``hls.playingDate`` to the wall
clock: hub reception to display) is printed, not asserted (bench/hls measures it)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from relay.http import REGISTRY
from tests.browser import LAUNCH_ARGS, chromium_executable
from tests.mediautil import make_clip, start_publisher, stop, wait_for

HLSJS = Path(__file__).resolve().parent.parent / "hlsjs" / "node_modules" / "hls.js" / "dist"
WATCH_SECONDS = 30
MAX_LATENCY = 3.0

PAGE = """<!doctype html><html><body><video id="v" muted playsinline></video><script>
window.samples = []; window.errors = [];
function start(url) {
  const v = document.getElementById('v');
  const hls = new Hls({lowLatencyMode: true, backBufferLength: 10});
  window.hls = hls;
  hls.on(Hls.Events.ERROR, (_e, d) => {
    if (d.fatal) window.errors.push(d.type + ':' + d.details);
  });
  hls.loadSource(url);
  hls.attachMedia(v);
  hls.on(Hls.Events.MANIFEST_PARSED, () => v.play());
}
function sample() {
  const v = document.getElementById('v');
  const q = v.getVideoPlaybackQuality();
  const pd = window.hls.playingDate;
  return {t: v.currentTime, frames: q.totalVideoFrames, latency: window.hls.latency,
          paused: v.paused, pdt_delay: pd ? (Date.now() - pd.getTime()) / 1000 : null,
          target: window.hls.targetLatency};
}
</script></body></html>"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hlsjs") / "gop2.flv", 10.0, gop=60, size="640x360")


async def test_hlsjs_low_latency_plays_within_3s_of_live(server_factory: Any, clip: Path) -> None:
    from playwright.async_api import async_playwright

    script = HLSJS / "hls.min.js"
    assert script.is_file(), f"{script} missing: make test runs npm ci in tests/hlsjs"
    server = await server_factory(relay={"publisher_linger": 5.0})
    pub = await start_publisher(server.push_url("b"), clip, loop=True)
    try:
        registry = server.app[REGISTRY]
        await wait_for(lambda: (h := registry.get("live", "b")) is not None and h.gop_valid, 20)
        hub = registry.get("live", "b")
        # A viewer joins a stream live for a while (at the very first seconds the live edge
        # is not a hold-back ahead of the first frame: hls.js stalls once and raises its
        # target latency for the rest of the session).
        await wait_for(lambda: hub.live_since is not None and time.time() - hub.live_since > 6, 20)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(), args=LAUNCH_ARGS, headless=True
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{server.http_url}/healthz")
                await page.set_content(PAGE)
                await page.add_script_tag(path=str(script))
                await page.evaluate("url => start(url)", f"{server.http_url}/live/b.m3u8")

                async def playing() -> bool:
                    s = await page.evaluate("sample()")
                    return bool(s["frames"] > 0 and s["t"] > 0.5 and s["latency"])

                await wait_for(playing, 30, step=0.2)
                samples: list[dict[str, Any]] = []
                end = time.monotonic() + WATCH_SECONDS
                while time.monotonic() < end:
                    await asyncio.sleep(1.0)  # the sampling period, not a wait for a condition
                    samples.append(await page.evaluate("sample()"))
                errors = await page.evaluate("window.errors")
            finally:
                await browser.close()
    finally:
        await stop(pub)
    print(json.dumps(samples[-3:]))
    assert errors == [], errors
    times = [s["t"] for s in samples]
    frames = [s["frames"] for s in samples]
    assert all(b > a for a, b in itertools.pairwise(times)), times  # never stalls
    assert frames[-1] - frames[0] >= 20 * (WATCH_SECONDS - 2), frames  # ~30 fps decoded
    latencies = [s["latency"] for s in samples]
    assert max(latencies) <= MAX_LATENCY, latencies
    delays = [s["pdt_delay"] for s in samples if s["pdt_delay"] is not None]
    median = sorted(delays)[len(delays) // 2]
    print(f"hls.latency max {max(latencies):.2f}s; PDT delay median {median:.2f}s")
