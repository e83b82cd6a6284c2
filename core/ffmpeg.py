"""Locate ffmpeg: ``BERRYLIVE_FFMPEG``, then the system ``ffmpeg``, then imageio-ffmpeg's binary."""

from __future__ import annotations

import functools
import os
import shutil


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
