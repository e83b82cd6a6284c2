"""Drill 5: the origin under an edge is SIGKILLed; the anchor republishes to a second origin.

Promised: the edge's viewers keep their connection and keep decoding; the timeline they
get never goes back and never repeats a timestamp across the splice (per track, DTS
strictly increasing), so a player or a remuxer downstream sees no discontinuity error.

Driven: real ``berrylive serve`` processes on 127.0.0.1 (origins A and B, one edge
pulling from the directory / ``--origin A,B``) sharing a Redis; ffmpeg publishes a looped
clip with B-frames to A; on the edge: raw HTTP-FLV viewers (every tag's timestamp kept),
an ``ffmpeg -c copy`` remuxing viewer and an ``ffmpeg`` decoding viewer (their warnings
kept); SIGKILL of A, the anchor republishes to B; the splice is checked in every viewer.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.faults.origin_failover --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from core.ffmpeg import ffmpeg_exe
from media import flv
from tests.cluster.harness import cluster
from tests.mediautil import make_clip, start_publisher, stop, wait_for

DTS_WARNINGS = ("non monotonically increasing dts", "non monotonous dts", "out of order")


@dataclass
class Tag:
    at: float
    kind: int
    ts: int
    header: bool
    """A codec configuration (AVC/HEVC sequence header, AAC AudioSpecificConfig): not a
    frame, it shares the timestamp of the frame after it."""


class Viewer:
    """A raw HTTP-FLV viewer on one connection: every tag's type, timestamp, arrival."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.tags: list[Tag] = []
        self.ended: str | None = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        demux = flv.FlvDemuxer()
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
            async with self.session.get(self.url, timeout=timeout) as resp:
                if resp.status != 200:
                    self.ended = f"status {resp.status}"
                    return
                async for data in resp.content.iter_any():
                    now = time.perf_counter()
                    for item in demux.feed(data):
                        if isinstance(item, flv.FlvTag) and item.tag_type in (8, 9):
                            b = item.body
                            if item.tag_type == 9:  # AVC/HEVC packet type 0
                                header = len(b) > 1 and (b[0] & 0x0F) in (7, 12) and b[1] == 0
                            else:  # AAC packet type 0
                                header = len(b) > 1 and (b[0] >> 4) == 10 and b[1] == 0
                            self.tags.append(Tag(now, item.tag_type, item.timestamp, header))
                self.ended = "eof"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # (TimeoutError: OSError)
            self.ended = f"error {exc!r}"

    def video(self) -> list[Tag]:
        return [t for t in self.tags if t.kind == 9 and not t.header]

    def video_after(self, t0: float) -> list[Tag]:
        return [t for t in self.video() if t.at >= t0]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


def dts_faults(viewer: Viewer) -> list[tuple[int, int, int]]:
    """(tag type, previous ts, ts) wherever a track's frame timestamps did not strictly
    grow (codec configuration tags left out)."""
    last: dict[int, int] = {}
    bad = []
    for t in viewer.tags:
        if t.header:
            continue
        prev = last.get(t.kind)
        if prev is not None and t.ts <= prev:
            bad.append((t.kind, prev, t.ts))
        last[t.kind] = t.ts
    return bad


async def ffmpeg_viewer(url: str, decode: bool) -> asyncio.subprocess.Process:
    args = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "warning", "-i", url]
    args += ["-f", "null", "-"] if decode else ["-c", "copy", "-f", "null", "-"]
    return await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _read_all(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode(errors="replace")


def _working_tree_first() -> None:
    """The nodes import berrylive from this working tree (a package added since the
    editable install is found too); the cluster harness passes the environment on."""
    root = str(Path(__file__).resolve().parents[2])
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, *paths]))


async def drill(root: Path, clip: Path, viewers: int = 2, after: float = 4.0) -> dict[str, Any]:
    _working_tree_first()
    async with cluster(root) as c, aiohttp.ClientSession() as session:
        # every node: WebRTC's default UDP port may be taken on this machine
        origin_a = await c.start("origin-a", "origin", BERRYLIVE_WEBRTC_UDP_PORT="0")
        origin_b = await c.start("origin-b", "origin", BERRYLIVE_WEBRTC_UDP_PORT="0")
        edge = await c.start(
            "edge", "edge", origins=[origin_a, origin_b], BERRYLIVE_WEBRTC_UDP_PORT="0"
        )
        anchor = await start_publisher(origin_a.push_url("s"), clip, loop=True)
        anchor2 = None
        players: list[asyncio.subprocess.Process] = []
        try:

            async def on_a() -> bool:
                return await c.directory.stream_owner("live/s") == "origin-a"

            await wait_for(on_a, 20)
            raw = [Viewer(session, edge.flv_url("s")) for _ in range(viewers)]
            players = [await ffmpeg_viewer(edge.flv_url("s"), d) for d in (False, True)]
            stderr = [asyncio.ensure_future(_read_all(p)) for p in players]
            await wait_for(lambda: all(len(v.video()) > 60 for v in raw), 30)

            await origin_a.kill(signal.SIGKILL)
            await stop(anchor)
            t0 = time.perf_counter()
            anchor2 = await start_publisher(origin_b.push_url("s"), clip, loop=True)
            await wait_for(lambda: all(len(v.video_after(t0)) > 30 * after for v in raw), 30)
            resumed = [round(v.video_after(t0)[0].at - t0, 2) for v in raw]
            alive = [p.returncode is None for p in players]
            for p in players:
                if p.returncode is None:
                    p.send_signal(signal.SIGINT)
            logs = [await asyncio.wait_for(s, 15) for s in stderr]
            for p in players:
                await p.wait()
            figures: dict[str, Any] = {
                "drill": "origin_failover",
                "viewers": viewers,
                "resumed_after_republish_s": resumed,
                "viewer_connections_ended": [v.ended for v in raw],
                "dts_not_increasing": [dts_faults(v)[:5] for v in raw],
                "ffmpeg_alive_at_end": alive,
                "ffmpeg_dts_warnings": [
                    [ln for ln in log.splitlines() if any(w in ln for w in DTS_WARNINGS)][:5]
                    for log in logs
                ],
            }
            for v in raw:
                await v.close()
        finally:
            for p in players:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
            await stop(anchor)
            if anchor2 is not None:
                await stop(anchor2)
    failures = []
    if any(figures["viewer_connections_ended"]):
        failures.append("an edge viewer's connection ended")
    if any(figures["dts_not_increasing"]):
        failures.append("DTS not strictly increasing across the splice")
    if not all(figures["ffmpeg_alive_at_end"]):
        failures.append("an ffmpeg viewer stopped")
    if any(figures["ffmpeg_dts_warnings"]):
        failures.append("ffmpeg reported DTS warnings")
    figures["failures"] = failures
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--viewers", type=int, default=2)
    a = p.parse_args()
    failed = 0
    with tempfile.TemporaryDirectory(prefix="berrylive-drill-") as tmp:
        clip = make_clip(Path(tmp) / "clip.flv", 6.0, gop=30)
        for i in range(a.rounds):
            figures = asyncio.run(drill(Path(tmp) / f"r{i}", clip, a.viewers))
            print(json.dumps(figures), flush=True)
            failed += bool(figures["failures"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
