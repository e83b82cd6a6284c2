"""Ingest CPU per stream: WHIP (ICE/DTLS/SRTP, RTP depacketizing, Opus -> AAC) next to
RTMP, in one run, on the same media.

One berrylive server runs in this process (replay off, LL-HLS packaging on demand only,
so the figure is ingest's); ``--streams`` ffmpeg publishers (separate processes, not
counted) push the same pre-encoded clip (640x360 30 fps H.264 at ``--bitrate``, no
B-frames, a 1 kHz tone) in real time over RTMP (``-c copy -f flv``, AAC) and then over
WHIP (``-c copy -f whip``, Opus). After every stream is live, the server process's CPU
time (all its threads: the event loop, the Opus/AAC codec threads) is read over
``--seconds``; an idle window of the same length is subtracted.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.whip.cpu [--streams 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from core.ffmpeg import bundled_ffmpeg_exe
from ingest import auth
from relay.http import REGISTRY
from tests.conftest import TEST_SECRET, RunningServer, make_config, start_server


def make_clips(d: Path, bitrate: str) -> tuple[Path, Path]:
    """The same H.264 in an FLV with AAC (RTMP) and an MKV with Opus (WHIP)."""
    flv, mkv = d / "clip.flv", d / "clip.mkv"
    exe = bundled_ffmpeg_exe()
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "20",
         "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", "60", "-b:v", bitrate,
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2", str(flv)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [exe, "-hide_banner", "-loglevel", "error", "-y", "-i", str(flv), "-c:v", "copy",
         "-c:a", "libopus", "-b:a", "96k", "-ar", "48000", "-ac", "2", str(mkv)],
        check=True,
    )  # fmt: skip
    return flv, mkv


async def publishers(
    server: RunningServer, protocol: str, clip: Path, n: int
) -> list[asyncio.subprocess.Process]:
    procs = []
    for i in range(n):
        stream = f"{protocol}{i}"
        query = auth.push_query(TEST_SECRET, "live", stream, int(time.time()) + 3600)
        args = [bundled_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                "-stream_loop", "-1", "-i", str(clip), "-c", "copy"]  # fmt: skip
        if protocol == "rtmp":
            args += ["-f", "flv", f"{server.rtmp_url}/live/{stream}?{query}"]
        else:
            args += ["-f", "whip", "-authorization", query, f"{server.http_url}/whip/live/{stream}"]
        procs.append(
            await asyncio.create_subprocess_exec(
                *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
        )
    return procs


async def stop(procs: list[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            p.terminate()
    for p in procs:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(p.wait(), 5)
        if p.returncode is None:
            p.kill()
            await p.wait()


async def cpu_over(seconds: float) -> float:
    t0 = time.process_time()
    await asyncio.sleep(seconds)
    return time.process_time() - t0


def frames_in(server: RunningServer, names: list[str]) -> int:
    total = 0
    for name in names:
        hub = server.app[REGISTRY].get("live", name)
        total += hub.frames_in if hub is not None else 0
    return total


async def measure(
    server: RunningServer, protocol: str, clip: Path, n: int, seconds: float
) -> dict[str, Any]:
    procs = await publishers(server, protocol, clip, n)
    registry = server.app[REGISTRY]
    try:
        deadline = time.monotonic() + 60
        names = [f"{protocol}{i}" for i in range(n)]
        while not all((h := registry.get("live", s)) is not None and h.live for s in names):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{protocol}: not every stream went live")
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # past the start (first GOP, codec threads)
        frames0 = frames_in(server, names)
        cpu = await cpu_over(seconds)
        frames = frames_in(server, names) - frames0
    finally:
        await stop(procs)
    return {"protocol": protocol, "cpu_s": cpu, "frames_in": frames}


async def run(streams: int, seconds: float, bitrate: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        flv, mkv = make_clips(Path(d), bitrate)
        server = await start_server(
            make_config(
                Path(d) / "server",
                webrtc={"udp_port": 0},
                replay={"enabled": False},
                relay={"hls_package_always": False, "publisher_linger": 1.0},
            )
        )
        try:
            await asyncio.sleep(2)
            idle = await cpu_over(seconds)
            rows = [
                await measure(server, "rtmp", flv, streams, seconds),
                await measure(server, "whip", mkv, streams, seconds),
            ]
        finally:
            await server.runner.cleanup()
    print(f"{streams} streams x {bitrate} video, {seconds:.0f} s windows; idle server "
          f"{100 * idle / seconds:.2f} % of a core (subtracted)")  # fmt: skip
    print("| ingest | % of a core per stream | frames in per s |")
    print("|---|---|---|")
    for r in rows:
        per = 100 * (r["cpu_s"] - idle) / seconds / streams
        print(f"| {r['protocol']} | {per:.2f} % | {r['frames_in'] / seconds:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--bitrate", default="2M")
    args = ap.parse_args()
    asyncio.run(run(args.streams, args.seconds, args.bitrate))


if __name__ == "__main__":
    main()
