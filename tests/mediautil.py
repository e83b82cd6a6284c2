"""Helpers for media tests: real ffmpeg/ffprobe, clips, waiting on conditions."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.ffmpeg import bundled_ffmpeg_exe, ffmpeg_exe, ffprobe_exe


def need_ffprobe() -> str:
    exe = ffprobe_exe()
    if exe is None:
        pytest.skip("ffprobe not installed (Debian package ffmpeg; .ci/run installs it)")
    return exe


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


def probe_packets(ffprobe: str, url: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every packet ffprobe reads from ``url`` (stream type, dts, pts, flags)."""
    out = subprocess.run(
        [
            ffprobe, "-v", "error", "-rw_timeout", "15000000", "-show_packets",
            "-show_entries", "packet=codec_type,dts,pts,flags,size",
            "-of", "json", url,
        ],
        capture_output=True, check=True, timeout=timeout,
    )  # fmt: skip
    return list(json.loads(out.stdout).get("packets", []))


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
