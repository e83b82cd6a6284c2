"""Blocking-playlist requests held per core: N LL-HLS clients on one stream, each reloading
the playlist with ``_HLS_msn``/``_HLS_part`` for the next part (the preload hint of the last
answer), as hls.js does, for ``--seconds``. Measured: the server process's CPU (utime +
stime from /proc; the clients run in this process, the publisher in ffmpeg, both apart),
answers per second, and from them the clients one core holds (N / server CPU share).

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.hls.held [--clients 200 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.hls import start_media_server, stop_all
from bench.replay.run import cpu_ticks, free_port, wait_port
from core.ffmpeg import ffmpeg_exe
from tests.mediautil import make_clip

HZ = os.sysconf("SC_CLK_TCK")


async def client(session: aiohttp.ClientSession, url: str, stop: float, counts: list[int]) -> None:
    query = ""
    while time.monotonic() < stop:
        async with session.get(url + query) as r:
            text = await r.text()
        if r.status != 200:
            counts[1] += 1
            await asyncio.sleep(0.2)
            query = ""
            continue
        counts[0] += 1
        hint = next(ln for ln in text.splitlines() if ln.startswith("#EXT-X-PRELOAD-HINT"))
        msn, part = hint.rsplit("part-", 1)[1].split(".")[:2]
        query = f"?_HLS_msn={msn}&_HLS_part={part}"


async def measure(url: str, pid: int, n: int, seconds: float) -> dict[str, float]:
    counts = [0, 0]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        warm = time.monotonic() + 3
        tasks = [asyncio.create_task(client(session, url, warm, [0, 0])) for _ in range(n)]
        await asyncio.gather(*tasks)  # all connected and following the live edge
        t0, c0 = time.monotonic(), cpu_ticks(pid)
        stop = t0 + seconds
        tasks = [asyncio.create_task(client(session, url, stop, counts)) for _ in range(n)]
        await asyncio.gather(*tasks)
        elapsed, cpu = time.monotonic() - t0, (cpu_ticks(pid) - c0) / HZ
    share = cpu / elapsed
    return {
        "clients": n,
        "answers_per_s": counts[0] / elapsed,
        "errors": counts[1],
        "server_cpu_pct": 100 * share,
        "clients_per_core": n / share if share else float("inf"),
        "answers_per_cpu_s": counts[0] / cpu if cpu else float("inf"),
    }


async def run(clients: list[int], seconds: float) -> list[dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="hlsheld-"))
    clip = make_clip(work / "clip.flv", 10.0, gop=60, size="640x360")
    http_port, rtmp_port = free_port(), free_port()
    server = start_media_server(work, http_port, rtmp_port)
    pub = None
    try:
        await wait_port(http_port)
        await wait_port(rtmp_port)
        pub = subprocess.Popen(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(clip), "-c", "copy", "-f", "flv",
             f"rtmp://127.0.0.1:{rtmp_port}/live/held"],
        )  # fmt: skip
        url = f"http://127.0.0.1:{http_port}/live/held.m3u8"
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                async with s.get(url) as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.2)
        return [await measure(url, server.pid, n, seconds) for n in clients]
    finally:
        stop_all(pub, server)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, nargs="+", default=[200, 800])
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    rows = asyncio.run(run(args.clients, args.seconds))
    print("| clients | answers/s | server CPU | clients held per core | answers per CPU s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['answers_per_s']:.0f} | {r['server_cpu_pct']:.1f} % "
            f"| {r['clients_per_core']:.0f} | {r['answers_per_cpu_s']:.0f} |"
            + (f" ({r['errors']:.0f} errors)" if r["errors"] else "")
        )


if __name__ == "__main__":
    main()
