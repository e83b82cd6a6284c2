"""The viewer page (``/watch/APP/STREAM``) in headless Chromium, per way it can play
(WHEP, LL-HLS with hls.js, WS-FLV with mpegts.js): the time from opening the page to the
first played frames, and glass-to-glass while it plays.

The publisher is bench/hls/latency.py's: a live ffmpeg encode (x264 ultrafast,
zerolatency: no B-frames, so WebRTC can carry it; 2 s GOP) whose frames carry the wall
clock in a strip of 16 boxes; the page's video is drawn to a canvas, the boxes read back and
compared with ``Date.now()`` (same machine, same clock). Each way gets a fresh browser
context; ``?player=`` forces the way.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.viewer.latency [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.hls import start_media_server, stop_all
from bench.hls.latency import BITS, BOX, pct, publisher_args
from bench.replay.run import free_port, wait_port
from tests.browser import LAUNCH_ARGS, chromium_executable

WAYS = ("whep", "hls", "flv")

SAMPLE = """() => {
  const v = document.getElementById('video');
  if (!v || v.readyState < 2 || !v.videoWidth) return null;
  let c = window.__benchCanvas;
  if (!c) {
    c = window.__benchCanvas = document.createElement('canvas');
    c.width = @W; c.height = @BOX;
  }
  const ctx = c.getContext('2d', {willReadFrequently: true});
  ctx.drawImage(v, 0, 0, @W, @BOX, 0, 0, @W, @BOX);
  const now = Date.now();
  let code = 0;
  for (let i = 0; i < @BITS; i++) {
    const p = ctx.getImageData(i * @BOX + @BOX / 2, @BOX / 2, 1, 1).data;
    if (p[0] + p[1] + p[2] > 384) code |= (1 << i);
  }
  const nowCs = Math.floor(now / 10) % 65536;
  return ((nowCs - code + 65536) % 65536) / 100;
}"""
for _name, _value in (("@W", BITS * BOX), ("@BOX", BOX), ("@BITS", BITS)):
    SAMPLE = SAMPLE.replace(_name, str(_value))


async def run(seconds: float, ways: tuple[str, ...] = WAYS) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="viewerbench-"))
    http_port, rtmp_port = free_port(), free_port()
    server = start_media_server(work, http_port, rtmp_port)
    pub = None
    out: dict[str, Any] = {}
    try:
        await wait_port(http_port)
        await wait_port(rtmp_port)
        pub = subprocess.Popen(publisher_args(f"rtmp://127.0.0.1:{rtmp_port}/live/bench"))
        base = f"http://127.0.0.1:{http_port}"
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(),
                args=[*LAUNCH_ARGS, "--autoplay-policy=no-user-gesture-required"],
                headless=True,
            )
            await asyncio.sleep(8)  # live for a while, as a viewer joining a show finds it
            for way in ways:
                context = await browser.new_context(viewport={"width": 390, "height": 844})
                page = await context.new_page()
                t0 = time.monotonic()
                await page.goto(f"{base}/watch/live/bench?player={way}")
                first = None
                while time.monotonic() - t0 < 40:
                    if await page.evaluate("window.berrylive?.player?.state === 'playing'"):
                        first = time.monotonic() - t0
                        break
                    await asyncio.sleep(0.02)
                g2g: list[float] = []
                if first is not None:
                    await asyncio.sleep(5)  # warm-up: the players settle on their latency
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        v = await page.evaluate(SAMPLE)
                        if v is not None and v < 60:
                            g2g.append(v)
                        await asyncio.sleep(0.25)
                target = await page.evaluate("berrylive.player.handle?.hls?.targetLatency ?? null")
                out[way] = {"first": first, "g2g": g2g, "hls_target": target}
                await context.close()
            await browser.close()
    finally:
        stop_all(pub, server)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--ways", default=",".join(WAYS), help="comma-separated: whep,hls,flv")
    args = ap.parse_args()
    out = asyncio.run(run(args.seconds, tuple(args.ways.split(","))))
    print("| way | first frames after | g2g median | p90 | max | samples | hls.js target |")
    print("|---|---|---|---|---|---|---|")
    for way, r in out.items():
        target = "-" if r["hls_target"] is None else f"{r['hls_target']} s"
        g = r["g2g"]
        first = "never" if r["first"] is None else f"{r['first']:.2f} s"
        if g:
            print(
                f"| {way} | {first} | {statistics.median(g):.2f} s | {pct(g, 0.9):.2f} s "
                f"| {max(g):.2f} s | {len(g)} | {target} |"
            )
        else:
            print(f"| {way} | {first} | - | - | - | 0 | {target} |")


if __name__ == "__main__":
    main()
