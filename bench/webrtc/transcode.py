"""What one WHEP transcode costs: CPU of its ffmpeg and the time it adds.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.webrtc.transcode [--window 30]

One ``berrylive serve`` (transcoding on, the default) and one 720p30 ~2 Mb/s H.264 stream
*with B-frames* (libx264 veryfast, ``-bf 3``) + AAC pushed by ffmpeg over RTMP, so WHEP
plays it through the transcode. One light WHEP viewer (:mod:`bench.webrtc.loadgen`, no
decoding) starts it; over the viewer's window this samples (psutil) the CPU of the
transcode's ffmpeg (the server's child running libx264 into ``pipe:1``) and of the
server's own process, and reads ``GET /api/whep``: the transcode's figures, among them
``added_ms``, the time from a picture's ``push`` into ffmpeg's queue to its H.264 coming
out of ffmpeg, matched by timestamp (decode + scale-free encode + pipes). The same is done
first with no viewer (ingest only) for the baseline. Results:
``bench/results/webrtc-transcode-STAMP.json``.

``--g2g SECONDS`` also runs :mod:`bench.webrtc.latency` (glass-to-glass in headless
Chromium from a live encode with the wall clock burnt in) twice: the usual x264
zerolatency publisher (passed through), then the same with 3 B-frames (transcoded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

from bench.media.servers import cpu_seconds, process_tree
from bench.webrtc.run import RESULTS, LiveBench, run_loadgen
from bench.webrtc.run import source as webrtc_source


def source(duration: int = 60) -> Path:
    """The same picture as bench/webrtc's source, with 3 B-frames (WHEP transcodes it)."""
    return webrtc_source(duration, bframes=3)


def transcode_procs(server_pid: int) -> list[psutil.Process]:
    out = []
    for proc in process_tree(server_pid):
        try:
            cmd = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if cmd and "libx264" in cmd and "pipe:1" in cmd:
            out.append(proc)
    return out


def proc_cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


async def whep(http_port: int, token: str) -> dict[str, Any]:
    import aiohttp

    url = f"http://127.0.0.1:{http_port}/api/whep"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            body: dict[str, Any] = await resp.json()
    return body


async def cpu_run(window: float) -> dict[str, Any]:
    src = source()
    bench = await LiveBench.start(
        "webrtc-transcode-work",
        src,
        BERRYLIVE_REPLAY_ENABLED="false",  # no recorder ffmpeg in the process tree
    )
    pid, http, token = bench.pid, bench.http, bench.token
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "source": str(src),
    }
    try:
        await asyncio.sleep(4)
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(8)
        out["ingest_only_cpu_pct"] = round(
            100 * (cpu_seconds(pid) - c0) / (time.perf_counter() - t0), 2
        )
        marks: dict[str, Any] = {}

        async def mark() -> dict[str, Any]:
            procs = transcode_procs(pid)
            now = time.perf_counter()
            key = "end" if "start" in marks else "start"
            marks[key] = (now, cpu_seconds(pid), proc_cpu(procs), [p.pid for p in procs])
            if key == "end":  # the transcode's figures while the viewer is still there
                marks["whep"] = await whep(http, token)
            return {"packets_sent": 0, "sessions": 1}

        argv = ["--url", f"http://127.0.0.1:{http}/whep/live/bench", "--viewers", "1",
                "--window", str(window), "--warmup", "5"]  # fmt: skip
        m = await run_loadgen("bench.webrtc.loadgen", argv, pid, mark)
        (t_0, all_0, tc_0, pids_0), (t_1, all_1, tc_1, pids_1) = marks["start"], marks["end"]
        span = t_1 - t_0
        streams = marks["whep"].get("streams") or [{}]
        out.update(
            window_s=round(span, 1),
            transcode_pids=sorted(set(pids_0) | set(pids_1)),
            transcode_cpu_pct=round(100 * (tc_1 - tc_0) / span, 1),
            server_tree_cpu_pct=round(100 * (all_1 - all_0) / span, 1),
            server_python_cpu_pct=round(100 * ((all_1 - all_0) - (tc_1 - tc_0)) / span, 1),
            transcode=streams[0].get("transcode"),
            video_frames=streams[0].get("video_frames"),
            loadgen=m["loadgen"],
            load_at_end=os.getloadavg(),
        )
    finally:
        bench.stop()
    return out


def bframe_publisher(url: str) -> list[str]:
    from bench.hls.latency import publisher_args

    args = publisher_args(url)
    i = args.index("zerolatency")
    # x264 with 3 B-frames, else as zerolatency (fixed B pattern, no lookahead, sliced
    # threads): the publisher adds the B-frames' own delay (3 frames) and no more
    params = "b-adapt=0:rc-lookahead=0:sync-lookahead=0:sliced-threads=1"
    return [*args[: i - 1], "-bf", "3", "-x264-params", params, *args[i + 1 :]]


async def g2g_runs(seconds: float) -> dict[str, Any]:
    import bench.webrtc.latency as latency

    plain = await latency.run(seconds)
    # the same run with a publisher that has B-frames (latency.run calls publisher_args)
    original = vars(latency)["publisher_args"]
    vars(latency)["publisher_args"] = bframe_publisher
    try:
        bframes = await latency.run(seconds)
    finally:
        vars(latency)["publisher_args"] = original
    return {"passthrough_no_bframes": plain, "transcoded_3_bframes": bframes}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--window", type=float, default=30.0, help="0: no CPU run")
    p.add_argument("--g2g", type=float, default=0.0, help="seconds of glass-to-glass per run")
    args = p.parse_args()
    result: dict[str, Any] = {}
    if args.window:
        result["cpu"] = asyncio.run(cpu_run(args.window))
        print(json.dumps(result["cpu"], indent=1), flush=True)
    if args.g2g:
        result["g2g"] = asyncio.run(g2g_runs(args.g2g))
        print(json.dumps(result["g2g"], indent=1), flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"webrtc-transcode-{stamp}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
