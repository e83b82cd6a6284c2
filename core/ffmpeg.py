"""Locate ffmpeg: ``BERRYLIVE_FFMPEG``, then the system ``ffmpeg``, then imageio-ffmpeg's binary.

ffprobe is optional: where there is none (the imageio-ffmpeg wheel ships none),
:func:`probe_media` and :func:`video_keyframe_times` read the same facts with PyAV.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from typing import Any


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary berrylive runs."""
    explicit = os.environ.get("BERRYLIVE_FFMPEG")
    if explicit:
        return explicit
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@functools.cache
def bundled_ffmpeg_exe() -> str:
    """The imageio-ffmpeg binary (a recent ffmpeg with enhanced RTMP, HEVC and AV1)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@functools.cache
def ffprobe_exe() -> str | None:
    """Path of ffprobe, or None (the imageio-ffmpeg wheel ships none)."""
    explicit = os.environ.get("BERRYLIVE_FFPROBE")
    if explicit:
        return explicit
    return shutil.which("ffprobe")


def probe_media(path: str, container: Any = None) -> dict[str, Any]:
    """What ``ffprobe -show_format -show_streams -of json`` reports that berrylive reads,
    from PyAV (its bundled FFmpeg libraries): ``format.duration`` (seconds, a string) and
    ``format_name``; per stream ``codec_type``, ``codec_name``, ``codec_tag_string``,
    ``profile``, ``width`` and ``height`` or ``sample_rate`` (a string) and ``channels``.
    ``container``: an already opened PyAV container (``path`` is then ignored). Blocking:
    call it in a thread. Raises ``av.error.FFmpegError`` (an ``OSError``) when the file
    cannot be read."""
    import av

    with contextlib.nullcontext(container) if container is not None else av.open(path) as c:
        streams: list[dict[str, Any]] = []
        for stream in c.streams:
            ctx: Any = stream.codec_context
            entry: dict[str, Any] = {
                "index": stream.index,
                "codec_type": stream.type,
                "codec_name": ctx.name if ctx is not None else None,
                "codec_tag_string": stream.codec_tag,
                "profile": getattr(ctx, "profile", None),
            }
            if stream.type == "video":
                entry.update(width=ctx.width, height=ctx.height)
            elif stream.type == "audio":
                entry.update(sample_rate=str(ctx.sample_rate), channels=ctx.channels)
            streams.append(entry)
        fmt: dict[str, Any] = {"format_name": c.format.name}
        if c.duration is not None:
            fmt["duration"] = f"{c.duration / av.time_base:.6f}"
    return {"format": fmt, "streams": streams}


def video_keyframe_times(path: str) -> list[float]:
    """Presentation times (seconds) of the keyframes of the first video stream, from the
    packet headers (no decoding), sorted. Blocking: call it in a thread."""
    import av

    times: list[float] = []
    with av.open(path) as container:
        if not container.streams.video:
            return times
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.is_keyframe and packet.pts is not None and packet.time_base is not None:
                times.append(float(packet.pts * packet.time_base))
    return sorted(times)
