"""Turning recorded parts into the finished replay: VOD playlist, MP4, covers, clips.

Everything here runs ffmpeg/ffprobe as asyncio subprocesses (with a timeout) and file
work in threads. It works from the files and the record alone, so a replay left in
``recording`` by a crash is finalised the same way on the next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.ffmpeg import ffprobe_exe, probe_media, video_keyframe_times
from replay import commands, playlist
from replay.config import ReplayConfig
from replay.model import Clip, Replay

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

VOD_PLAYLIST = "index.m3u8"
MP4_FILE = "replay.mp4"
COVER_FILE = "cover.jpg"
SPRITES_VTT = "thumbs.vtt"


class StepFailed(Exception):
    pass


async def run(args: list[str], timeout: float) -> tuple[int, bytes, str]:
    """Run a command; (exit code, stdout, last lines of stderr). Killed after ``timeout``."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C during shutdown must not cut the finalization
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -9, b"", "timed out"
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    tail = " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-5:])
    return int(proc.returncode or 0), out, tail


@dataclass
class PartFiles:
    dir: str
    playlist: playlist.PartPlaylist


def read_parts(root: Path, replay: Replay) -> list[PartFiles]:
    """Each part's final playlist (thread). A part ffmpeg never finished (killed, server
    crash) still lists every segment it completed."""
    out = []
    for part in replay.parts:
        path = root / part.dir / "index.m3u8"
        try:
            pl = playlist.parse(path.read_text("utf-8"))
        except OSError:
            pl = playlist.PartPlaylist()
        part.duration = pl.duration
        out.append(PartFiles(part.dir, pl))
    return out


def _unlisted(root: Path, part: PartFiles) -> list[Path]:
    """Segment files of a part that its playlist does not list (ffmpeg died between writing
    a segment and rewriting its playlist), in order."""
    listed = {seg.uri for seg in part.playlist.segments}
    found = []
    for path in sorted((root / part.dir).glob("seg-*.ts*")):
        name = path.name.removesuffix(".tmp")
        if name.endswith(".ts") and name not in listed:
            found.append(path)
    return found


async def salvage(root: Path, part: PartFiles, timeout: float) -> float:
    """Add segments a killed ffmpeg wrote but did not list to the part's playlist (TS
    only); returns the seconds recovered. ffmpeg's HLS muxer keeps the segment it is
    writing in memory, so that one is lost with the process (at most a segment + a GOP)."""
    if part.playlist.ended or part.playlist.init_uri:
        return 0.0
    gained = 0.0
    for path in await asyncio.to_thread(_unlisted, root, part):
        info = await probe(path, timeout)
        try:
            seconds = float((info or {}).get("format", {}).get("duration", 0))
        except (TypeError, ValueError):
            seconds = 0.0
        if seconds < 0.1:
            continue
        name = path.name.removesuffix(".tmp")
        await asyncio.to_thread(path.replace, path.with_name(name))
        part.playlist.segments.append(playlist.Segment(name, seconds))
        gained += seconds
    if gained:
        text = playlist.render([("", part.playlist)], target=0, ended=True, vod=True)
        await asyncio.to_thread(_write, root / part.dir / "index.m3u8", text)
    return gained


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)


async def probe(path: Path, timeout: float) -> dict[str, Any] | None:
    exe = ffprobe_exe()
    if exe is None:  # no ffprobe: the same facts from PyAV
        return await _in_thread(probe_media, path, timeout)
    args = [exe, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)]
    code, out, _ = await run(args, timeout)
    if code != 0:
        return None
    try:
        data = json.loads(out)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def keyframes(path: Path, timeout: float) -> list[float] | None:
    """Presentation times of the video keyframes of an MP4 (packet headers only)."""
    exe = ffprobe_exe()
    if exe is None:  # no ffprobe: the same facts from PyAV
        return await _in_thread(video_keyframe_times, path, timeout)
    args = [
        exe, "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
        "-of", "csv=p=0", str(path),
    ]  # fmt: skip
    code, out, _ = await run(args, timeout)
    if code != 0:
        return None
    times = []
    for line in out.decode().splitlines():
        t, _, flags = line.partition(",")
        if "K" in flags:
            try:
                times.append(float(t))
            except ValueError:
                pass
    return sorted(times)


async def _in_thread(fn: Callable[[str], _T], path: Path, timeout: float) -> _T | None:
    try:
        return await asyncio.wait_for(asyncio.to_thread(fn, str(path)), timeout)
    except (OSError, ValueError, TimeoutError):  # av.error.FFmpegError is an OSError
        return None


def codecs_from_probe(info: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in info.get("streams", []):
        kind = s.get("codec_type")
        if kind == "video" and "video" not in out:
            out["video"] = {
                "codec": s.get("codec_name"),
                "width": s.get("width"),
                "height": s.get("height"),
                "profile": s.get("profile"),
            }
        elif kind == "audio" and "audio" not in out:
            rate = s.get("sample_rate")
            out["audio"] = {
                "codec": s.get("codec_name"),
                "sample_rate": int(rate) if isinstance(rate, str) and rate.isdigit() else rate,
                "channels": s.get("channels"),
            }
    return out


def plan_clips(
    replay: Replay, keys: list[float], config: ReplayConfig
) -> list[tuple[int, float, float]]:
    """``(card index, start, duration)`` per card: from the push to the next card, a clear,
    the end or ``clip_max_seconds``; the start moved back to the keyframe at or before it."""
    spans = [(p.wall_start, p.duration) for p in replay.parts if p.duration > 0]
    cards = sorted(enumerate(replay.cards), key=lambda ic: ic[1].pushed)
    out = []
    for n, (i, card) in enumerate(cards):
        end_wall = card.pushed + config.clip_max_seconds
        if card.cleared is not None:
            end_wall = min(end_wall, card.cleared)
        if n + 1 < len(cards):
            end_wall = min(end_wall, cards[n + 1][1].pushed)
        start = playlist.locate(spans, card.pushed)
        if start is None:
            continue
        end = playlist.locate(spans, end_wall)
        if end is None:
            end = replay.duration
        aligned = max((k for k in keys if k <= start + 0.001), default=0.0)
        duration = end - aligned
        if end - start < config.clip_min_seconds or duration <= 0:
            continue
        out.append((i, aligned, duration))
    return out


def sprite_vtt(
    duration: float, interval: float, width: int, height: int, columns: int, base: str
) -> str:
    """WebVTT cues ``sprite-N.jpg#xywh=x,y,w,h`` for each thumbnail interval."""
    lines = ["WEBVTT", ""]
    count = max(1, math.ceil(duration / interval))
    per_sprite = columns * columns
    for i in range(count):
        start, end = i * interval, min(duration, (i + 1) * interval)
        sprite, pos = divmod(i, per_sprite)
        y, x = divmod(pos, columns)
        lines.append(f"{_ts(start)} --> {_ts(end)}")
        lines.append(
            f"{base}sprite-{sprite + 1}.jpg#xywh={x * width},{y * height},{width},{height}"
        )
        lines.append("")
    return "\n".join(lines)


def _ts(t: float) -> str:
    ms = round(t * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


async def finalize(replay: Replay, root: Path, config: ReplayConfig) -> None:
    """Build the VOD playlist, MP4, cover, sprites and clips of ``replay`` in ``root``.

    Updates ``replay`` in place (duration, codecs, files, clips, error); raises
    :class:`StepFailed` only when nothing playable was recorded.
    """
    timeout = config.process_timeout
    parts = await asyncio.to_thread(read_parts, root, replay)
    for record, part in zip(replay.parts, parts, strict=True):
        gained = await salvage(root, part, timeout)
        if gained:
            record.duration = part.playlist.duration
            logger.info(
                "replay %s: %.1fs of an unfinished segment recovered in %s",
                replay.id,
                gained,
                part.dir,
            )
    filled = [p for p in parts if p.playlist.segments]
    if not filled:
        raise StepFailed("nothing was recorded")
    text = playlist.render(
        [(p.dir, p.playlist) for p in parts], target=config.segment_seconds, ended=True, vod=True
    )
    await asyncio.to_thread(_write, root / VOD_PLAYLIST, text)
    replay.duration = round(sum(p.playlist.duration for p in parts), 3)
    recorded = [r for r in replay.parts if r.duration > 0]
    exe = next((r.exe for r in recorded if r.exe), "") or commands.pick_exe(config.ffmpeg, None)
    video = next((r.video_codec for r in recorded if r.video_codec), None)
    has_audio = any(r.audio_codec for r in recorded)
    codec_sets = {(r.video_codec, r.audio_codec) for r in recorded}
    errors: list[str] = []
    mp4 = root / MP4_FILE
    if config.mp4 and len(codec_sets) > 1:
        errors.append(
            "no MP4: the codecs change between parts "
            f"({', '.join(sorted(f'{v}/{a}' for v, a in codec_sets))}); the HLS replay has all"
        )
    elif config.mp4:
        # Each part's own (final) playlist is one concat input: no copy of the segments.
        for p in filled:
            if not p.playlist.ended:  # ffmpeg died: close its playlist for the HLS demuxer
                text = playlist.render([("", p.playlist)], target=0, ended=True, vod=True)
                await asyncio.to_thread(_write, root / p.dir / "index.m3u8", text)
        concat = root / "concat.txt"
        entries = "".join(f"file '{p.dir}/index.m3u8'\n" for p in filled)
        await asyncio.to_thread(_write, concat, "ffconcat version 1.0\n" + entries)
        ts = not any(p.playlist.init_uri for p in filled)
        args = commands.remux_mp4(exe, concat, mp4, has_audio and ts, video == "hvc1")
        code, _out, tail = await run(args, timeout)
        await asyncio.to_thread(concat.unlink, True)
        if code == 0 and mp4.exists():
            replay.mp4 = MP4_FILE
        else:
            await asyncio.to_thread(mp4.unlink, True)
            errors.append(f"MP4 remux failed ({code}): {tail}")
            logger.warning("replay %s: MP4 remux failed (%d): %s", replay.id, code, tail)
    source = mp4 if replay.mp4 else root / VOD_PLAYLIST
    info = await probe(source, timeout)
    if info is not None:
        replay.codecs = codecs_from_probe(info)
        fmt_duration = info.get("format", {}).get("duration")
        if replay.mp4 and fmt_duration:
            replay.duration = round(float(fmt_duration), 3)
    else:
        replay.codecs = {
            k: {"codec": v}
            for k, v in (
                ("video", video),
                ("audio", next((r.audio_codec for r in recorded if r.audio_codec), None)),
            )
            if v
        }
    has_video = "video" in replay.codecs
    first_seg = root / filled[0].dir / filled[0].playlist.segments[0].uri
    if has_video and replay.cover is None:
        cover_src = mp4 if replay.mp4 else first_seg
        code, _out, tail = await run(commands.snapshot(exe, cover_src, root / COVER_FILE), timeout)
        if code == 0:
            replay.cover = COVER_FILE
        else:
            errors.append(f"cover failed: {tail}")
    if has_video and replay.mp4 and config.thumbnail_interval > 0:
        await _sprites(replay, root, config, exe, errors)
    if replay.cards and replay.mp4:
        await _clips(replay, root, config, exe, errors)
    replay.error = "; ".join(errors) or None


async def _sprites(
    replay: Replay, root: Path, config: ReplayConfig, exe: str, errors: list[str]
) -> None:
    video = replay.codecs.get("video") or {}
    w, h = video.get("width"), video.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        return
    tw = config.thumbnail_width
    th = max(2, round(tw * h / w / 2) * 2)
    cols = config.sprite_columns
    args = commands.sprites(
        exe, root / MP4_FILE, root / "sprite-%d.jpg", config.thumbnail_interval, tw, cols
    )
    code, _out, tail = await run(args, config.process_timeout)
    if code != 0:
        errors.append(f"thumbnails failed: {tail}")
        return
    vtt = sprite_vtt(replay.duration, config.thumbnail_interval, tw, th, cols, "")
    await asyncio.to_thread(_write, root / SPRITES_VTT, vtt)
    replay.sprites = SPRITES_VTT


async def _clips(
    replay: Replay, root: Path, config: ReplayConfig, exe: str, errors: list[str]
) -> None:
    mp4 = root / MP4_FILE
    keys = await keyframes(mp4, config.process_timeout)
    if keys is None:  # no ffprobe: segments start on keyframes
        keys, t = [], 0.0
        for p in replay.parts:
            keys.append(t)
            t += p.duration
    replay.clips = []
    for n, (i, start, duration) in enumerate(plan_clips(replay, keys, config), 1):
        card = replay.cards[i]
        name = f"clip-{n}.mp4"
        code, _out, tail = await run(
            commands.cut(exe, mp4, root / name, start, duration), config.process_timeout
        )
        if code != 0:
            errors.append(f"clip {n} failed: {tail}")
            continue
        replay.clips.append(
            Clip(card.card_id, card.product_id, round(start, 3), round(duration, 3), name)
        )
