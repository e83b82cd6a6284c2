"""Glass-to-glass latency of WHEP playback in headless Chromium.

The publisher is a live ffmpeg encode (x264 ultrafast, zerolatency: no B-frames, 2 s GOP,
AAC) over RTMP whose frames carry the wall clock at the moment they were drawn (a strip
of 16 boxes, box ``i`` white when bit ``i`` of the centisecond counter is set, as in
:mod:`bench.hls.latency`). The page plays the stream over WHEP, draws the displayed frame
to a canvas, reads the boxes back and compares with ``Date.now()`` (same machine, same
clock): capture -> encode -> RTMP -> hub -> RTP/SRTP -> Chromium's jitter buffer and
decoder -> display. ``getStats()``'s video jitter-buffer delay is reported next to it.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.webrtc.latency [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.hls import ROOT, stop_all
from bench.hls.latency import BITS, BOX, pct, publisher_args
from bench.replay.run import free_port, wait_port
from bench.webrtc.run import free_udp_port
from tests.browser import LAUNCH_ARGS, chromium_executable

PAGE = """<!doctype html><html><body><video id="v" muted autoplay playsinline></video>
<canvas id="c" width="%(w)d" height="%(h)d"></canvas><script>
async function start(url) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  const v = document.getElementById('v');
  const stream = new MediaStream();
  pc.ontrack = (e) => { stream.addTrack(e.track); v.srcObject = stream; };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/sdp"},
                              body: pc.localDescription.sdp});
  if (r.status !== 201) throw new Error("WHEP " + r.status);
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
  window.pc = pc;
  v.play();
}
async function sample() {
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
  let jb = null;
  for (const s of (await window.pc.getStats()).values()) {
    if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount)
      jb = s.jitterBufferDelay / s.jitterBufferEmittedCount;
  }
  return {g2g: ((nowCs - code + 65536) %% 65536) / 100, jb: jb};
}
</script></body></html>"""


def start_server(
    work: Path, http_port: int, rtmp_port: int, udp_port: int, coalesce_ms: int | None
) -> Any:
    env = {
        **os.environ,
        "BERRYLIVE_INGEST_REQUIRE_AUTH": "false",
        "BERRYLIVE_DANMAKU_ENABLED": "false",
        "BERRYLIVE_SHOP_ENABLED": "false",
        "BERRYLIVE_REPLAY_ENABLED": "false",
        "BERRYLIVE_SERVER_LOG_LEVEL": "warning",
        "BERRYLIVE_WEBRTC_UDP_PORT": str(udp_port),
        "BERRYLIVE_WEBRTC_HOST": "127.0.0.1",
    }
    if coalesce_ms is not None:  # the hub's write tick (relay.write_coalesce_ms)
        env["BERRYLIVE_RELAY_WRITE_COALESCE_MS"] = str(coalesce_ms)
    with open(work / "server.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "control.cli", "serve", "--data-dir", str(work),
             "--host", "127.0.0.1", "--rtmp-port", str(rtmp_port),
             "--http-port", str(http_port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


async def run(seconds: float, coalesce_ms: int | None = None) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="whepbench-"))
    http_port, rtmp_port = free_port(), free_port()
    server = start_server(work, http_port, rtmp_port, free_udp_port(), coalesce_ms)
    pub = None
    try:
        await wait_port(http_port)
        await wait_port(rtmp_port)
        pub = subprocess.Popen(publisher_args(f"rtmp://127.0.0.1:{rtmp_port}/live/bench"))
        samples: list[dict[str, Any]] = []
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_executable(),
                args=[*LAUNCH_ARGS, "--autoplay-policy=no-user-gesture-required"],
                headless=True,
            )
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{http_port}/healthz")
            await page.set_content(PAGE % {"w": BITS * BOX, "h": BOX, "box": BOX, "bits": BITS})
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the stream takes a moment to go live
                await asyncio.sleep(0.5)
                ok = await page.evaluate(
                    "u => fetch(u, {method: 'HEAD'}).then(r => r.status)",
                    f"http://127.0.0.1:{http_port}/live/bench.flv",
                )
                if ok == 200:
                    break
            await asyncio.sleep(3)  # joins mid-GOP: starts at the cached keyframe
            await page.evaluate("u => start(u)", f"http://127.0.0.1:{http_port}/whep/live/bench")
            await asyncio.sleep(3)  # warm-up
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s = await page.evaluate("sample()")
                if s is not None:
                    samples.append(s)
                await asyncio.sleep(0.1)
            await browser.close()
    finally:
        stop_all(pub, server)
    g2g = [s["g2g"] for s in samples if s["g2g"] < 60]
    jb = [s["jb"] for s in samples if s["jb"] is not None]
    return {
        "samples": len(samples),
        "g2g_s": (statistics.median(g2g), pct(g2g, 0.9), pct(g2g, 0.99)) if g2g else None,
        "video_jitter_buffer_s": statistics.median(jb) if jb else None,
        "write_coalesce_ms": coalesce_ms,
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--coalesce-ms", type=int, default=None, help="relay.write_coalesce_ms")
    args = ap.parse_args()
    out = asyncio.run(run(args.seconds, args.coalesce_ms))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
