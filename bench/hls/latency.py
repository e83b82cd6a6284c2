"""Glass-to-glass latency of the hub's LL-HLS in hls.js (``lowLatencyMode``, headless Chromium).

The publisher is a live ffmpeg encode (x264 ultrafast, zerolatency, 2 s GOP, AAC) whose
frames carry the wall clock at the moment they were drawn: a strip of 16 boxes, box ``i``
white when bit ``i`` of the centisecond counter (``time(0)`` in ffmpeg's expression
evaluator, modulo 2^16) is set. The page draws the displayed frame to a canvas, reads the
boxes back and compares with ``Date.now()`` (same machine, same clock): the difference is
capture -> encode -> RTMP -> hub -> fMP4 parts -> blocking playlist -> hls.js -> display.
``hls.latency`` (the playhead behind the playlist's live edge) and the delay from
``EXT-X-PROGRAM-DATE-TIME`` (hub reception -> display) are reported next to it.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.hls.latency [--seconds 40]
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

from bench.hls import ROOT, start_media_server, stop_all
from bench.replay.run import free_port, wait_port
from core.ffmpeg import ffmpeg_exe
from tests.browser import LAUNCH_ARGS, chromium_executable

HLSJS = ROOT / "tests" / "hlsjs" / "node_modules" / "hls.js" / "dist" / "hls.min.js"
BITS = 16
BOX = 40

PAGE = """<!doctype html><html><body><video id="v" muted playsinline></video>
<canvas id="c" width="%(w)d" height="%(h)d"></canvas><script>
function start(url) {
  const v = document.getElementById('v');
  const hls = new Hls({lowLatencyMode: true, backBufferLength: 10});
  window.hls = hls;
  hls.loadSource(url); hls.attachMedia(v);
  hls.on(Hls.Events.MANIFEST_PARSED, () => v.play());
}
function sample() {
  const v = document.getElementById('v');
  if (v.readyState < 2) return null;
  const ctx = document.getElementById('c').getContext('2d', {willReadFrequently: true});
  ctx.drawImage(v, 0, 0, %(w)d, %(box)d, 0, 0, %(w)d, %(box)d);
  const now = Date.now();
  let code = 0;
  for (let i = 0; i < %(bits)d; i++) {
    const p = ctx.getImageData(i * %(box)d + %(box)d / 2, %(box)d / 2, 1, 1).data;
    if (p[0] + p[1] + p[2] > 384) code |= (1 << i);
  }
  const nowCs = Math.floor(now / 10) %% 65536;
  const g2g = ((nowCs - code + 65536) %% 65536) / 100;
  const pd = window.hls.playingDate;
  return {g2g: g2g, latency: window.hls.latency, t: v.currentTime,
          target: window.hls.targetLatency,
          pdt: pd ? (now - pd.getTime()) / 1000 : null};
}
</script></body></html>"""


def publisher_args(url: str) -> list[str]:
    boxes = [f"drawbox=x=0:y=0:w={BITS * BOX}:h={BOX}:color=black:t=fill"]
    for i in range(BITS):
        boxes.append(
            f"drawbox=x={i * BOX}:y=0:w={BOX}:h={BOX}:color=white:t=fill"
            f":enable='mod(floor(time(0)*100/{2**i}),2)'"
        )
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-vf", ",".join(boxes),
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60",
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-f", "flv", url,
    ]  # fmt: skip


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(seconds: float) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="hlsbench-"))
    http_port, rtmp_port = free_port(), free_port()
    server = start_media_server(work, http_port, rtmp_port)
    pub = None
    try:
        await wait_port(http_port)
        await wait_port(rtmp_port)
        pub = subprocess.Popen(publisher_args(f"rtmp://127.0.0.1:{rtmp_port}/live/bench"))
        samples: list[dict[str, Any]] = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(), args=LAUNCH_ARGS, headless=True
            )
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{http_port}/healthz")
            await page.set_content(PAGE % {"w": BITS * BOX, "h": BOX, "box": BOX, "bits": BITS})
            await page.add_script_tag(path=str(HLSJS))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the stream takes a moment to go live
                await asyncio.sleep(0.5)
                ok = await page.evaluate(
                    "u => fetch(u, {method: 'HEAD'}).then(r => r.status)",
                    f"http://127.0.0.1:{http_port}/live/bench.flv",  # live? (no HLS request)
                )
                if ok == 200:
                    break
            # A viewer joins a stream that has been live a while: at the very start the live
            # edge is not a hold-back ahead of the first frame yet, hls.js stalls once and
            # raises its target latency for good (liveSyncOnStallIncrease).
            await asyncio.sleep(6)
            await page.evaluate("u => start(u)", f"http://127.0.0.1:{http_port}/live/bench.m3u8")
            await asyncio.sleep(5)  # warm-up: hls.js settles on its target latency
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s = await page.evaluate("sample()")
                if s is not None:
                    samples.append(s)
                await asyncio.sleep(0.25)
            await browser.close()
    finally:
        stop_all(pub, server)
    g2g = [s["g2g"] for s in samples if s["g2g"] < 60]
    lat = [s["latency"] for s in samples if s["latency"] is not None]
    pdt = [s["pdt"] for s in samples if s["pdt"] is not None]
    return {
        "samples": len(samples),
        "target": sorted({s["target"] for s in samples}),
        "g2g": (statistics.median(g2g), pct(g2g, 0.9), max(g2g)) if g2g else None,
        "hls_latency": (statistics.median(lat), pct(lat, 0.9), max(lat)) if lat else None,
        "pdt_delay": (statistics.median(pdt), pct(pdt, 0.9), max(pdt)) if pdt else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40.0)
    args = ap.parse_args()
    out = asyncio.run(run(args.seconds))
    print(f"samples: {out['samples']} over {args.seconds:.0f} s (after a 5 s warm-up)")
    print(f"hls.js target latency: {out['target']}")
    print("| measure | median | p90 | max |")
    print("|---|---|---|---|")
    for key, label in (
        ("g2g", "glass-to-glass (clock burnt into the video)"),
        ("hls_latency", "hls.latency (playhead to live edge)"),
        ("pdt_delay", "PROGRAM-DATE-TIME to display"),
    ):
        v = out[key]
        if v is not None:
            print(f"| {label} | {v[0]:.2f} s | {v[1]:.2f} s | {v[2]:.2f} s |")


if __name__ == "__main__":
    main()
