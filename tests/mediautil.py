"""Helpers for media tests: real ffmpeg, clips, reading media back, waiting on conditions.

Media is read back with PyAV (its bundled FFmpeg libraries: files, HLS playlists, MP4,
``http://.../x.flv`` and ``rtmp://`` URLs), in the shapes ffprobe's JSON had, so no
ffprobe binary is needed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import av

from core.ffmpeg import bundled_ffmpeg_exe, ffmpeg_exe, probe_media

RW_TIMEOUT = 15.0
"""Seconds a network read may stall before the reader gives up (ffprobe's -rw_timeout)."""


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, step: float = 0.02
) -> None:
    """Poll ``predicate`` until true; fail the test with a message after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)


def make_clip(
    path: Path,
    seconds: float = 4.0,
    *,
    fps: int = 30,
    gop: int | None = None,
    size: str = "320x180",
    audio: bool = True,
    video: bool = True,
    vcodec: str = "libx264",
    extra: list[str] | None = None,
) -> Path:
    """Encode a synthetic clip (test pattern + tone) into FLV, once per path."""
    if path.exists():
        return path
    exe = bundled_ffmpeg_exe() if vcodec != "libx264" else ffmpeg_exe()
    args = [exe, "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-t", str(seconds)]
    if video:
        args += ["-c:v", vcodec, "-g", str(gop or fps * 2), "-pix_fmt", "yuv420p"]
        if vcodec == "libx264":
            args += ["-preset", "ultrafast", "-bf", "2", "-profile:v", "main"]
        elif vcodec == "libx265":
            args += ["-preset", "ultrafast", "-x265-params", "log-level=error"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "64k"]
    args += extra or []
    args += ["-f", "flv", str(path)]
    subprocess.run(args, check=True, timeout=120)
    return path


def _open(url: str, timeout: float) -> Any:
    options = {"rw_timeout": str(int(RW_TIMEOUT * 1_000_000))} if "://" in url else {}
    return av.open(url, options=options, timeout=(timeout, RW_TIMEOUT))


def _flags(packet: Any) -> str:
    return (
        ("K" if packet.is_keyframe else "_")
        + ("D" if packet.is_discard else "_")
        + ("C" if packet.is_corrupt else "_")
    )


def probe_packets(
    url: str, timeout: float = 60, seconds: float | None = None
) -> list[dict[str, Any]]:
    """Every packet PyAV demuxes from ``url`` (a file, an HLS/MP4 URL, ``http://.../x.flv``,
    ``rtmp://``): ``codec_type``, ``dts``, ``pts`` (ints in the stream's time base, absent
    when unset), ``flags`` (``K__`` for a keyframe) and ``size``, as ffprobe -show_packets
    gave. ``seconds``: stop after that much stream time from the first packet (a live URL);
    ``timeout`` bounds the whole read."""
    deadline = time.monotonic() + timeout
    packets: list[dict[str, Any]] = []
    with _open(url, timeout) as container:
        start: float | None = None
        for packet in container.demux():
            if packet.size == 0 and packet.dts is None:
                continue  # the demuxer's end-of-stream flush packet
            info: dict[str, Any] = {
                "codec_type": packet.stream.type,
                "flags": _flags(packet),
                "size": packet.size,
            }
            if packet.dts is not None:
                info["dts"] = int(packet.dts)
            if packet.pts is not None:
                info["pts"] = int(packet.pts)
            packets.append(info)
            if seconds is not None and packet.dts is not None and packet.time_base:
                at = float(packet.dts * packet.time_base)
                start = at if start is None else start
                if at - start >= seconds:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {url} took more than {timeout}s")
    return packets


def probe(url: str, timeout: float = 60) -> dict[str, Any]:
    """``{"format": {...}, "streams": [...]}`` of ``url``, as ffprobe -show_format
    -show_streams gave (the product's own :func:`core.ffmpeg.probe_media`, with network
    timeouts for URLs)."""
    with _open(url, timeout) as container:
        return probe_media(url, container)


def frame_sizes(url: str, timeout: float = 90) -> set[tuple[int, int]]:
    """The (width, height) of every decoded video frame of ``url``."""
    sizes: set[tuple[int, int]] = set()
    with _open(url, timeout) as container:
        for frame in container.decode(video=0):
            sizes.add((frame.width, frame.height))
    return sizes


def stream_types(info: dict[str, Any]) -> set[str]:
    return {s["codec_type"] for s in info.get("streams", [])}


def duration(info: dict[str, Any]) -> float:
    return float(info["format"]["duration"])


def decode_all(url: str, timeout: float = 90) -> str:
    """Read every packet of ``url`` end to end with ffmpeg (-c copy to null); fail the test
    on an error, return stderr."""
    out = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", url, "-map", "0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, timeout=timeout,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return out.stderr.decode()


async def start_publisher(
    url: str,
    clip: Path,
    *,
    realtime: bool = True,
    loop: bool = False,
    exe: str | None = None,
) -> asyncio.subprocess.Process:
    args = [exe or ffmpeg_exe(), "-hide_banner", "-loglevel", "error"]
    if realtime:
        args += ["-re"]
    if loop:
        args += ["-stream_loop", "-1"]
    args += ["-i", str(clip), "-c", "copy", "-f", "flv", url]
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def have(binary: str) -> bool:
    return shutil.which(binary) is not None


async def operator_token(server: Any) -> str:
    """An API token of a fresh operator account on ``server`` (for operator-only routes)."""
    import uuid

    from control.accounts import Role
    from control.api import CONTROL

    accounts = server.app[CONTROL].accounts
    user = await accounts.create_user(
        f"op-{uuid.uuid4().hex[:8]}", "correct horse battery", Role.OPERATOR
    )
    token, _info = await accounts.issue_token(user.id, "api", "tests")
    return str(token)
