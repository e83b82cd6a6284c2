"""WHEP viewers vs HTTP-FLV viewers: server CPU per viewer-second, in one run.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.webrtc.run --viewers 50,100

One berrylive (``berrylive serve`` on loopback, the WebRTC UDP port chosen here) and one
720p30 ~2 Mb/s H.264 (no B-frames: WebRTC cannot carry them) + AAC stream pushed by
ffmpeg over RTMP. For each N, N WHEP viewers (:mod:`bench.webrtc.loadgen`: ICE + DTLS +
SRTP each, counting media) then N HTTP-FLV viewers (:mod:`bench.media.loadgen`), each
load generator in its own process; the server's process tree is sampled (psutil) exactly
over the load generator's window. *µs / viewer·s* = server CPU / (N x window);
*marginal* subtracts the rate measured with no viewer. Results: ``bench/results/webrtc-STAMP.json``
and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.media.servers import REPO, Berrylive, cpu_seconds, rss_bytes, stop_process
from core.ffmpeg import ffmpeg_exe

CACHE = REPO / "bench" / "results" / "cache"
RESULTS = REPO / "bench" / "results"


def source(duration: int = 60, bframes: int = 0) -> Path:
    """bench/webrtc's 720p30 ~2 Mb/s H.264 + AAC source (made once, cached); ``bframes``
    0 for passthrough over WebRTC, more for a stream WHEP has to transcode."""
    tag = "nobf" if bframes == 0 else f"bf{bframes}"
    out = CACHE / f"webrtc-720p30-{tag}-{duration}s.flv"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    cbr = ["-x264-params", "nal-hrd=cbr:force-cfr=1"] if bframes == 0 else []
    subprocess.run(
        [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-t", str(duration),
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "high",
            "-bf", str(bframes), "-b:v", "1870k", "-maxrate", "1870k", "-bufsize", "1870k",
            *cbr,
            "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2",
            "-f", "flv", str(out),
        ],
        check=True,
        timeout=600,
    )  # fmt: skip
    return out


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_loadgen(
    module: str, argv: list[str], server_pid: int, on_end: Any = None
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(REPO),
    )  # fmt: skip
    assert proc.stdout is not None
    window: dict[str, float] = {}
    events: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 300)
        if not line:
            break
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        now = time.perf_counter()
        events.append(ev)
        if ev["event"] == "measure_start":
            window["cpu0"], window["t0"] = cpu_seconds(server_pid), now
            if on_end is not None:
                events.append({"event": "server_figures_start", **(await on_end())})
        elif ev["event"] == "measure_end":
            window["cpu1"], window["t1"] = cpu_seconds(server_pid), now
            window["wall1"] = time.time()
            window["rss"] = rss_bytes(server_pid)
            if on_end is not None:
                window_figures = await on_end()
                events.append({"event": "server_figures", **window_figures})
        elif ev["event"] == "result":
            result = ev
    await proc.wait()
    if "cpu1" not in window:
        err = (await proc.stderr.read()).decode()[-2000:] if proc.stderr else ""
        raise RuntimeError(f"{module} gave no window: {events[-3:]} {err}")
    span = window["t1"] - window["t0"]
    cpu = window["cpu1"] - window["cpu0"]
    figures = next((e for e in events if e["event"] == "server_figures"), None)
    start = next((e for e in events if e["event"] == "server_figures_start"), None)
    if figures is not None and start is not None:
        # what the server sent over the window, per viewer and second (the load generator
        # may read behind it on a busy machine: its own figures would then be lower)
        viewers = max(1, figures.get("sessions", 0))
        sent = figures["packets_sent"] - start["packets_sent"]
        figures["server_pkts_per_viewer_s"] = round(sent / viewers / span, 1)
    return {
        "cpu_s": cpu,
        "span_s": span,
        "end_wall": window["wall1"],
        "rss_mb": window["rss"] / 1e6,
        "loadgen": result,
        "server_figures": figures,
    }


async def operator_token(server: Berrylive) -> str:
    """An operator's API token on the server under test (for ``GET /api/whep``)."""
    exe = str(REPO / ".venv" / "bin" / "berrylive")
    data = ["--data-dir", str(server.data_dir)]
    subprocess.run(
        [exe, "user", "add", "bench-op", "--role", "operator", "--password-stdin", *data],
        input=b"bench operator password\n", env=server.env, check=True, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [exe, "token", "create", "bench-op", "--name", "bench", *data],
        env=server.env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return out.stdout.strip().split()[-1]


async def whep_figures(http_port: int, token: str) -> dict[str, Any]:
    """Sums over the server's WHEP viewers: packets sent, send drops, NACKs, resends."""
    import aiohttp

    url = f"http://127.0.0.1:{http_port}/api/whep"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.json()
    keys = ("packets_sent", "send_drops", "nacks", "retransmits", "nack_refused")
    sums = dict.fromkeys(keys, 0)
    for stream in body.get("streams", []):
        for v in stream.get("viewer_figures", []):
            for k in keys:
                sums[k] += v.get(k) or 0
    sums["sessions"] = body.get("sessions", 0)
    streams = body.get("streams") or [{}]
    sums["opus"] = streams[0].get("opus")
    sums["video_frames"] = streams[0].get("video_frames")
    sums["fanout_ms"] = streams[0].get("fanout_ms")
    return sums


@dataclass
class LiveBench:
    """A fresh ``berrylive serve`` (its WebRTC UDP port on loopback) with ``src`` pushed over
    RTMP in a loop by ffmpeg, and an operator's token for ``GET /api/whep``."""

    server: Berrylive
    pub: subprocess.Popen[bytes]
    token: str

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    @property
    def http(self) -> int:
        return self.server.ports["http"]

    @classmethod
    async def start(cls, name: str, src: Path, **env: str) -> LiveBench:
        workdir = RESULTS / name
        shutil.rmtree(workdir, ignore_errors=True)  # a fresh server: data dir, accounts, logs
        workdir.mkdir(parents=True)
        server = Berrylive(workdir)
        server.env.update(
            BERRYLIVE_WEBRTC_UDP_PORT=str(free_udp_port()),
            BERRYLIVE_WEBRTC_HOST="127.0.0.1",
            PYTHONPATH=str(REPO),  # the packages as in this tree, even those not installed yet
            **env,
        )
        await server.start()
        push = await server.push_url("bench")
        token = await operator_token(server)
        pub = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(src), "-c", "copy", "-f", "flv", push],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return cls(server, pub, token)

    def stop(self) -> None:
        stop_process(self.pub)
        self.server.stop()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    src = source()
    bench = await LiveBench.start("webrtc-work", src, BERRYLIVE_WEBRTC_MAX_SESSIONS="5000")
    pid, http, token = bench.pid, bench.http, bench.token
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "load_at_start": os.getloadavg(),
        "source": str(src),
        "rows": rows,
    }
    try:
        await asyncio.sleep(4)  # the stream is live and its GOP cached
        c0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(5)
        base_pct = 100 * (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
        out["ingest_only_cpu_pct"] = round(base_pct, 2)
        for n in args.viewers:
            for proto in args.protocols:
                if proto == "whep":
                    module = "bench.webrtc.loadgen"
                    argv = ["--url", f"http://127.0.0.1:{http}/whep/live/bench",
                            "--viewers", str(n), "--window", str(args.window),
                            "--video-bitrate", "1700000",
                            "--procs", str(args.whep_procs or -(-n // 200))]  # fmt: skip
                else:
                    module = "bench.media.loadgen"
                    argv = ["--url", f"http://127.0.0.1:{http}/live/bench.flv",
                            "--viewers", str(n), "--window", str(args.window),
                            "--bitrate", "2000000"]  # fmt: skip
                started = time.monotonic()
                on_end = (lambda: whep_figures(http, token)) if proto == "whep" else None
                m = await run_loadgen(module, argv, pid, on_end)
                span = m["span_s"]
                per = 1e6 * m["cpu_s"] / (n * span)
                marginal = 1e6 * (m["cpu_s"] - base_pct / 100 * span) / (n * span)
                row = {
                    "protocol": proto,
                    "viewers": n,
                    "cpu_us_per_viewer_s": round(per, 1),
                    "marginal_us_per_viewer_s": round(marginal, 1),
                    "server_cpu_pct": round(100 * m["cpu_s"] / span, 1),
                    "rss_mb": round(m["rss_mb"], 1),
                    "loadgen": m["loadgen"],
                    "server_figures": m["server_figures"],
                    "wall_s": round(time.monotonic() - started, 1),
                    "load_avg": os.getloadavg(),
                }
                rows.append(row)
                lg = m["loadgen"]
                print(
                    f"{proto:5} N={n:4} {per:8.1f} µs/viewer·s (marginal {marginal:8.1f}) "
                    f"server {row['server_cpu_pct']:5.1f} % rss {row['rss_mb']:.0f} MB | "
                    f"loadgen: {json.dumps({k: v for k, v in lg.items() if k != 'event'})[:400]}"
                    f" | server: {m['server_figures']}",
                    flush=True,
                )
                await asyncio.sleep(2)  # sessions torn down before the next row
    finally:
        bench.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--viewers", default="50,100", help="comma-separated N")
    p.add_argument("--window", type=float, default=15.0)
    p.add_argument("--protocols", default="whep,flv")
    p.add_argument(
        "--whep-procs",
        type=int,
        default=0,
        help="WHEP load generator processes (default: one per 200 viewers)",
    )
    args = p.parse_args()
    args.viewers = [int(x) for x in args.viewers.split(",")]
    args.protocols = args.protocols.split(",")
    result = asyncio.run(main_async(args))
    result["machine"] = {
        "cpu_count": psutil.cpu_count(),
        "mem_gb": round(psutil.virtual_memory().total / 1e9, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"webrtc-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
