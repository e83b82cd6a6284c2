"""ffmpeg command lines, built with ``ffmpeg-python``. Pure functions: no I/O here.

Global options go first (``ffmpeg-python`` appends them last, which recent ffmpeg treats
as trailing options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ffmpeg  # ffmpeg-python

from core.ffmpeg import bundled_ffmpeg_exe, ffmpeg_exe

GLOBAL = ("-hide_banner", "-nostats", "-loglevel", "warning", "-y")

ENHANCED_CODECS = frozenset({"hvc1", "av01", "vp09"})
"""FLV video codecs only a recent ffmpeg demuxes (Enhanced RTMP)."""


def pick_exe(configured: str, video_codec: str | None) -> str:
    """The ffmpeg for a stream: the configured one, else the bundled recent ffmpeg for
    Enhanced-RTMP codecs (Debian's ffmpeg 5 cannot demux them), else the system one."""
    if configured:
        return configured
    if video_codec in ENHANCED_CODECS:
        return bundled_ffmpeg_exe()
    return ffmpeg_exe()


def _cmd(exe: str, stream: Any) -> list[str]:
    return [exe, *GLOBAL, *stream.get_args()]


def segment_ext(segment_type: str) -> str:
    return "m4s" if segment_type == "fmp4" else "ts"


def record(exe: str, part_dir: Path, segment_seconds: float, segment_type: str) -> list[str]:
    """FLV on stdin -> HLS (stream copy) in ``part_dir``: ``index.m3u8`` + segments."""
    ext = segment_ext(segment_type)
    out_opts: dict[str, Any] = {
        "f": "hls",
        "c": "copy",
        "hls_time": f"{segment_seconds:g}",
        "hls_list_size": 0,
        "hls_playlist_type": "event",
        "hls_segment_type": "fmp4" if segment_type == "fmp4" else "mpegts",
        "hls_segment_filename": str(part_dir / f"seg-%05d.{ext}"),
        "hls_flags": "temp_file+independent_segments",
    }
    if segment_type == "fmp4":
        out_opts["hls_fmp4_init_filename"] = "init.mp4"
    stream = ffmpeg.input("pipe:0", f="flv", analyzeduration=1_000_000, probesize=5_000_000).output(
        str(part_dir / "index.m3u8"), **out_opts
    )
    return _cmd(exe, stream)


def remux_mp4(exe: str, concat_list: Path, out: Path, has_audio: bool, hevc: bool) -> list[str]:
    """Parts (one stream-copy input each, listed in an ffconcat file) -> one faststart MP4."""
    opts: dict[str, Any] = {"c": "copy", "movflags": "+faststart", "f": "mp4"}
    if has_audio:
        opts["bsf:a"] = "aac_adtstoasc"
    if hevc:
        opts["tag:v"] = "hvc1"
    stream = ffmpeg.input(str(concat_list), f="concat", safe=0).output(str(out), **opts)
    return _cmd(exe, stream)


def snapshot(exe: str, source: Path, out: Path) -> list[str]:
    """The first (key)frame of ``source`` as a JPEG cover."""
    stream = ffmpeg.input(str(source)).output(str(out), vframes=1, **{"q:v": 3, "an": None})
    return _cmd(exe, stream)


def sprites(
    exe: str, source: Path, out_pattern: Path, interval: float, width: int, columns: int
) -> list[str]:
    """Scrubbing thumbnails: one every ``interval`` s, keyframes only (no full decode),
    tiled ``columns`` x ``columns`` per JPEG sprite."""
    stream = (
        ffmpeg.input(str(source), skip_frame="nokey")
        .video.filter("fps", fps=f"1/{interval:g}")
        .filter("scale", width, -2)
        .filter("tile", f"{columns}x{columns}")
        .output(str(out_pattern), **{"q:v": 5, "fps_mode": "vfr"})
    )
    return _cmd(exe, stream)


def cut(exe: str, source: Path, out: Path, start: float, duration: float) -> list[str]:
    """A stream-copied clip starting at the keyframe at ``start``."""
    stream = ffmpeg.input(str(source), ss=f"{start:.3f}").output(
        str(out), t=f"{duration:.3f}", c="copy", movflags="+faststart", f="mp4"
    )
    return _cmd(exe, stream)
