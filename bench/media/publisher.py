"""The benchmark stream: a 720p30 ~2 Mbps H.264 + AAC source file, pushed in a loop.

The file is encoded once (CBR with filler so the rate is steady, a keyframe every 2 s) and
cached under ``bench/results/cache/``; each run pushes it with
``ffmpeg -re -stream_loop -1 -i SOURCE -c copy -f flv PUSH_URL``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.media.servers import REPO, stop_process
from core.ffmpeg import ffmpeg_exe

CACHE = REPO / "bench" / "results" / "cache"
VIDEO_KBPS = 1870
AUDIO_KBPS = 128


@dataclass(frozen=True)
class Source:
    path: Path
    duration_s: float
    bitrate_bps: float  # FLV bytes per second of media time, as an HTTP-FLV viewer gets it
    encode_command: str


def encode_command(out: Path, duration: int) -> list[str]:
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
        "-t", str(duration),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-profile:v", "high",
        "-b:v", f"{VIDEO_KBPS}k", "-maxrate", f"{VIDEO_KBPS}k", "-bufsize", f"{VIDEO_KBPS}k",
        "-x264-params", "nal-hrd=cbr:force-cfr=1",
        "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
        "-c:a", "aac", "-b:a", f"{AUDIO_KBPS}k", "-ac", "2",
        "-f", "flv", str(out),
    ]  # fmt: skip


def flv_duration(path: Path) -> float:
    """Media duration of an FLV file: the last audio/video tag timestamp plus one frame."""
    data = path.read_bytes()
    if data[:3] != b"FLV":
        raise ValueError(f"{path} is not FLV")
    pos = int.from_bytes(data[5:9], "big") + 4
    last_ms = 0
    while pos + 11 <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        ts = int.from_bytes(data[pos + 4 : pos + 7], "big") | (data[pos + 7] << 24)
        if tag_type in (8, 9):
            last_ms = max(last_ms, ts)
        pos += 11 + size + 4
    return last_ms / 1000 + 1 / 30


def ensure_source(duration: int = 60) -> Source:
    """Encode the source once per duration; reuse the cached file afterwards."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"source-720p30-{duration}s.flv"
    meta = path.with_suffix(".json")
    cmd = encode_command(path, duration)
    if not (path.exists() and meta.exists()):
        subprocess.run(cmd, check=True)
        media = flv_duration(path)
        info = Source(path, media, path.stat().st_size * 8 / media, " ".join(cmd))
        meta.write_text(json.dumps({**asdict(info), "path": str(path)}, indent=2))
    raw = json.loads(meta.read_text())
    return Source(Path(raw["path"]), raw["duration_s"], raw["bitrate_bps"], raw["encode_command"])


class Publisher:
    """ffmpeg pushing the source in a loop, at its own pace (``-re``)."""

    def __init__(self, source: Source, push_url: str, log_path: Path) -> None:
        self.progress_path = log_path.with_suffix(".progress")
        self.cmd = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "warning", "-nostdin",
            "-progress", str(self.progress_path), "-stats_period", "0.5",
            "-re", "-stream_loop", "-1", "-i", str(source.path),
            "-c", "copy", "-f", "flv", push_url,
        ]  # fmt: skip
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def media_time(self) -> float | None:
        """Seconds of media pushed so far (ffmpeg's last progress report, every 0.5 s)."""
        try:
            with self.progress_path.open("rb") as f:
                f.seek(max(0, f.seek(0, 2) - 4096))
                tail = f.read().decode(errors="replace")
        except OSError:
            return None
        values = [line.split("=", 1)[1] for line in tail.splitlines()
                  if line.startswith("out_time_us=")]  # fmt: skip
        for value in reversed(values):
            if value.strip().isdigit():
                return int(value) / 1e6
        return None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=3)
