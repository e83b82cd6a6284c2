"""Drill 3: SIGTERM of the origin during a live broadcast with viewers, recording and an edge.

Promised: the origin exits 0 in bounded time and leaves no process behind (valkey, the
recorder's ffmpeg, the order writer); its viewers' connections end at once (cut: a
player retries); the edge keeps its viewers through the origin's
absence for ``relay.publisher_linger`` and then ends their streams properly; after the
restart the broadcast is not left ``live`` (interrupted, then ended by the sweeper) and
its replay is finalised (VOD playlist with ``#EXT-X-ENDLIST``, an MP4 that ffprobe reads,
as long as what was recorded up to the stop, less at most the segment in progress).

Driven: ``berrylive serve`` origin + ``--role edge`` node (real processes), an operator's
broadcast through the API, ffmpeg publishing a looped clip to its push URL, raw HTTP-FLV
viewers on the origin and on the edge, SIGTERM, restart.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.faults.live_sigterm
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.faults.harness import Node, api, clean_env, login, run_drill, wait_for
from bench.faults.origin_failover import Viewer
from core.ffmpeg import ffmpeg_exe
from tests.mediautil import make_clip, start_publisher, stop

LINGER = 3.0
"""relay.publisher_linger on the edge for the drill (10 s by default)."""


async def ffprobe_duration(path: Path) -> float:
    """Seconds of media ffmpeg reads from ``path`` (decoding nothing: -c copy to null)."""
    proc = await asyncio.create_subprocess_exec(
        ffmpeg_exe(), "-hide_banner", "-nostats", "-i", str(path), "-c", "copy", "-f", "null",
        "-", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    times = re.findall(rb"time=(\d+):(\d+):(\d+\.\d+)", err)
    if proc.returncode != 0 or not times:
        return 0.0
    h, m, s = times[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


async def drill(root: Path, clip: Path, live_seconds: float = 6.0) -> dict[str, Any]:
    root = root.resolve()
    env = clean_env(
        BERRYLIVE_CONTROL_INTERRUPT_GRACE="2",  # 120 s by default: the drill waits for it
        BERRYLIVE_CONTROL_SWEEP_INTERVAL="0.2",
        BERRYLIVE_REPLAY_SEGMENT_SECONDS="1",
    )
    origin = Node(root / "origin", env)
    edge = Node(
        root / "edge",
        clean_env(BERRYLIVE_RELAY_PUBLISHER_LINGER=str(LINGER)),
        args=("--role", "edge", "--origin", ""),
    )
    edge.args = ("--role", "edge", "--origin", origin.url)
    await origin.add_operator()
    await origin.start()
    await edge.start()
    publisher = None
    figures: dict[str, Any] = {"drill": "live_sigterm"}
    async with aiohttp.ClientSession() as session:
        try:
            token = await login(origin)
            start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
            b = await api(
                origin, token, "POST", "/api/broadcasts",
                {"title": "drill", "scheduled_start": start}, 201,
            )  # fmt: skip
            bid = b["id"]
            push = (await api(origin, token, "GET", f"/api/broadcasts/{bid}/push"))["url"]
            push = re.sub(r"rtmp://[^/]+/", f"rtmp://127.0.0.1:{origin.rtmp_port}/", push)
            app, stream = push.split("?")[0].rsplit("/", 2)[-2:]
            publisher = await start_publisher(push, clip, loop=True)

            async def state() -> str:
                return str((await api(origin, token, "GET", f"/api/broadcasts/{bid}"))["state"])

            await wait_for(lambda: _is(state, "live"), 30, "the broadcast to go live")
            at_origin = [Viewer(session, f"{origin.url}/{app}/{stream}.flv") for _ in range(2)]
            at_edge = [Viewer(session, f"{edge.url}/{app}/{stream}.flv") for _ in range(2)]
            viewers = at_origin + at_edge
            await wait_for(lambda: all(len(v.video()) > 30 for v in viewers), 30, "viewers")
            await asyncio.sleep(live_seconds)  # the recording grows
            kids = origin.children()
            t0 = time.perf_counter()
            code = await origin.terminate(60)
            figures["exit_code"] = code
            figures["exit_s"] = round(time.perf_counter() - t0, 2)
            _, alive = psutil.wait_procs(kids, timeout=5)
            figures["stray_processes"] = [p.name() for p in alive if p.is_running()]
            for p in alive:
                p.kill()
            await wait_for(lambda: all(v.ended for v in at_origin), 10, "origin viewers' end")
            figures["origin_viewers_ended"] = [v.ended for v in at_origin]
            t_edge = time.perf_counter()
            await wait_for(lambda: all(v.ended for v in at_edge), LINGER + 30, "edge viewers")
            figures["edge_viewers_ended"] = [v.ended for v in at_edge]
            figures["edge_viewers_kept_s"] = round(time.perf_counter() - t_edge, 2)
            await stop(publisher)
            recorded = max(t.ts for v in at_origin for t in v.video()) / 1000

            await origin.start()
            token = await login(origin)
            figures["broadcast_after_restart"] = await state()
            try:  # ended, and replay_ready once its replay is
                await wait_for(lambda: _is(state, "ended", "replay_ready"), 30, "the end")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {await state()}\n{origin.tail()}") from None
            figures["broadcast_at_end"] = await state()

            async def replay() -> dict[str, Any] | None:
                page = await api(origin, token, "GET", f"/api/replays?broadcast_id={bid}")
                items = [r for r in page["items"] if r["state"] not in ("recording", "finalizing")]
                return items[0] if items else None

            rec = await wait_for(replay, 60, "the replay to be finalised")
            figures["replay_state"] = rec["state"]
            rdir = root / "origin" / "replay" / rec["id"]
            playlist = (rdir / "index.m3u8").read_text() if (rdir / "index.m3u8").exists() else ""
            figures["vod_endlist"] = "#EXT-X-ENDLIST" in playlist
            figures["stream_seconds_sent"] = round(recorded, 2)
            figures["mp4_seconds"] = round(await ffprobe_duration(rdir / "replay.mp4"), 2)
            figures["hls_seconds"] = round(
                sum(float(x) for x in re.findall(r"#EXTINF:([\d.]+)", playlist)), 2
            )
            await origin.terminate()
        finally:
            if publisher is not None:
                await stop(publisher)
            await origin.kill()
            await edge.terminate()
    failures = []
    if figures.get("exit_code") != 0:
        failures.append("origin did not exit 0 on SIGTERM")
    if figures.get("stray_processes"):
        failures.append("processes left behind")
    # The origin's own viewers: their connections end at once; the HTTP-FLV response is
    # cut (no last chunk), so a player retries (RELIABILITY.md: a decision, not a loss).
    if not all(figures.get("origin_viewers_ended", [])):
        failures.append("an origin viewer's connection did not end")
    if any(e != "eof" for e in figures.get("edge_viewers_ended", [])):
        failures.append("an edge viewer's stream was cut, not ended")
    if figures.get("replay_state") != "ready" or not figures.get("vod_endlist"):
        failures.append("replay not finalised")
    # what was lost: at most the segment ffmpeg was writing and a GOP
    if figures.get("mp4_seconds", 0) < figures.get("stream_seconds_sent", 0) - 3.5:
        failures.append("the replay lost more than the segment in progress")
    figures["failures"] = failures
    return figures


async def _is(state: Any, *want: str) -> bool:
    return bool(await state() in want)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--live-seconds", type=float, default=8.0)
    a = p.parse_args()
    run_drill(
        lambda tmp: drill(tmp / "run", make_clip(tmp / "clip.flv", 6.0, gop=30), a.live_seconds)
    )


if __name__ == "__main__":
    main()
