"""One stream's video transcode for WebRTC playback: an ffmpeg subprocess, FLV in and out.

WHEP passes H.264 through as it is; a stream WebRTC cannot carry that way (H.264 with
B-frames, which browsers' WebRTC receivers do not reorder; HEVC, AV1 or other video) plays
through one :class:`VideoTranscoder` per stream, shared by all its WHEP viewers: started by
the stream's :class:`relay.rtc_stream.RtpStream` with its first viewer, stopped with its
last. It is video only: the stream's audio keeps its own path (AAC -> Opus in
:mod:`relay.rtc_audio`).

In: the hub's video frames, FLV tags (each frame's cached ``flv_tag()``, the bytes FLV
viewers get) written to ffmpeg's stdin by one writer task from a bounded queue. ``push``
never blocks and never waits: when ffmpeg falls behind (the queue holds more than
``MAX_LAG_MS`` of video beyond the starting GOP, or ``MAX_QUEUE_BYTES``) new frames are
dropped until the next keyframe (counted in ``frames_dropped``), so neither the event loop
nor the hub's fan-out ever waits for the encoder.

Out: ffmpeg encodes with libx264 (``-bf 0 -tune zerolatency``, Main profile, keyframes where
the source has them and at least every 2 s, no scene-cut keyframes, CBR at the source's
measured bitrate) and writes FLV to stdout, read by a reader task through the sans-I/O
:class:`media.flv.FlvDemuxer` into :class:`media.frame.Frame` objects handed to
``on_frames``. ``-copyts`` keeps the input's timestamps: an output picture has the hub
time (ms) of its source picture, so the RTP stream's video and audio share one clock as
in passthrough. Decoding and encoding happen in ffmpeg's process, never on the event loop.

Death: when ffmpeg exits or its output cannot be parsed while the transcode is wanted,
``on_exit(reason)`` is called once (the stream closes its viewers with it) and the tail of
ffmpeg's stderr is logged. ``close()`` kills the process; :meth:`wait_closed` awaits its
exit, so no process outlives the stream (asyncio reaps it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.ffmpeg import ffmpeg_exe
from media import flv
from media.errors import FLVError
from media.frame import Frame, Kind
from relay.timings import quantiles_ms

logger = logging.getLogger(__name__)

__all__ = ["TranscodeSettings", "VideoTranscoder", "source_rates"]

MAX_QUEUE_BYTES = 16 * 1024 * 1024
"""Bytes of video waiting for ffmpeg's stdin, at most (the starting GOP included)."""
MAX_LAG_MS = 2000
"""Media time the queue may hold beyond the starting GOP before frames are dropped."""
STDERR_LINES = 20
"""Lines of ffmpeg's stderr kept for the log when it dies."""
READ_SIZE = 65536
LATENCY_SAMPLES = 512
"""Pictures whose time through ffmpeg ``stats()`` summarizes (~17 s at 30 fps)."""
DEFAULT_KBPS = 2000
DEFAULT_FPS = 30.0


@dataclass(frozen=True, slots=True)
class TranscodeSettings:
    """What WHEP transcodes and how (from ``webrtc.*``, :class:`core.rtc.WebRtcConfig`)."""

    enabled: bool = False
    max_transcodes: int = 2
    preset: str = "veryfast"
    bitrate_kbps: int = 0
    """0: the source's measured bitrate."""

    @classmethod
    def of(cls, config: Any) -> TranscodeSettings:
        return cls(
            enabled=bool(config.transcode),
            max_transcodes=int(config.max_transcodes),
            preset=str(config.transcode_preset),
            bitrate_kbps=int(config.transcode_bitrate),
        )


def source_rates(frames: list[Frame], meta: dict[str, Any]) -> tuple[int, float]:
    """(video kbit/s, frames per second) of a stream, measured over its cached GOP
    ``frames``; else from its ``onMetaData`` (``videodatarate``, ``framerate``); else
    2000 kbit/s and 30 fps."""
    video = [f for f in frames if f.kind == Kind.VIDEO and not f.header]
    kbps: int | None = None
    fps: float | None = None
    if len(video) >= 8:
        dts = sorted(f.dts for f in video)
        span = dts[-1] - dts[0]
        if span >= 250:
            step = span / (len(video) - 1)
            fps = 1000 / step
            nbytes = sum(len(f.payload) for f in video)
            kbps = round(nbytes * 8 / (span + step))
    if kbps is None:
        rate = meta.get("videodatarate")
        if isinstance(rate, int | float) and rate > 0:
            kbps = round(rate)
    if fps is None:
        rate = meta.get("framerate")
        if isinstance(rate, int | float) and 0 < rate <= 240:
            fps = float(rate)
    kbps = min(max(kbps or DEFAULT_KBPS, 100), 50_000)
    return kbps, fps or DEFAULT_FPS


def ffmpeg_args(preset: str, kbps: int, fps: float) -> list[str]:
    """The ffmpeg command line: FLV video on stdin, H.264 without B-frames as FLV on stdout."""
    gop = max(1, round(2 * fps))
    rate = f"{kbps}k"
    return [
        ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        # start at once: a small probe (the sequence header says what the stream is); no
        # "-fflags nobuffer": it discards the probed packets, i.e. the starting GOP
        "-probesize",
        "32",
        "-analyzeduration",
        "0",
        "-thread_type",
        "slice",  # frame threads would hold pictures back
        "-f",
        "flv",
        "-i",
        "pipe:0",
        "-map",
        "0:v:0",
        "-copyts",  # output pictures keep the hub's timestamps
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-tune",
        "zerolatency",
        "-profile:v",
        "main",
        "-pix_fmt",
        "yuv420p",
        "-bf",
        "0",
        "-g",
        str(gop),
        "-force_key_frames",
        "source",
        "-sc_threshold",
        "0",
        "-b:v",
        rate,
        "-maxrate",
        rate,
        "-bufsize",
        rate,
        "-f",
        "flv",
        "-flvflags",
        "no_duration_filesize",
        "-flush_packets",
        "1",
        "pipe:1",
    ]


class VideoTranscoder:
    """One stream's ffmpeg: ``start(frames)`` then ``push(frame)``; out via ``on_frames``."""

    def __init__(
        self,
        name: str,
        settings: TranscodeSettings,
        on_frames: Callable[[list[Frame]], None],
        on_exit: Callable[[str], None],
    ) -> None:
        self.name = name
        self.settings = settings
        self._on_frames = on_frames
        self._on_exit = on_exit
        self._queue: deque[tuple[bytes, int]] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._dropping = False
        self._waiting_keyframe = False
        self._lag_limit = MAX_LAG_MS
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._task: asyncio.Task[None] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.closed = False
        self.failed: str | None = None
        self.kbps = 0
        self.fps = 0.0
        self.frames_in = 0
        self.frames_dropped = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.started_at = 0.0
        self.first_frame_s: float | None = None
        """Seconds from start to ffmpeg's first picture."""
        self.first_pts: int | None = None
        """Presentation time (hub ms) of ffmpeg's first picture."""
        self._pushed: dict[int, float] = {}
        """PTS -> when a live picture was queued (bounded), to time it through ffmpeg."""
        self.added_s: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        """Seconds each of the latest live pictures took from ``push`` to ffmpeg's output."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -------------------------------------------------------------- in

    def start(
        self,
        frames: list[Frame],
        meta: dict[str, Any],
        *,
        measure: list[Frame] | None = None,
        wait_keyframe: bool = False,
    ) -> None:
        """Start ffmpeg; ``frames``: the hub's video header and cached GOP (video only),
        queued first so the first picture comes at once; ``measure``: frames to measure
        the source's rates on (default ``frames``); ``wait_keyframe``: ``push`` takes
        pictures from the next keyframe on (a switch from passthrough mid-GOP)."""
        gop = [f for f in frames if f.kind == Kind.VIDEO]
        kbps, fps = source_rates(measure if measure is not None else gop, meta)
        self._waiting_keyframe = wait_keyframe
        self.kbps = self.settings.bitrate_kbps or kbps
        self.fps = fps
        pictures = [f.dts for f in gop if not f.header]
        if pictures:
            self._lag_limit = MAX_LAG_MS + max(pictures) - min(pictures)
        for frame in gop:
            self.push(frame)
        self.started_at = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def push(self, frame: Frame) -> None:
        """Queue one of the hub's video frames for ffmpeg (never blocks; see the module)."""
        if self.closed:
            return
        if not frame.header:
            if self._waiting_keyframe:
                if not frame.keyframe:
                    return
                self._waiting_keyframe = False
            if self._dropping and not frame.keyframe:
                self.frames_dropped += 1
                return
            self._dropping = False
            queue = self._queue
            if queue and (
                self._queued_bytes > MAX_QUEUE_BYTES or frame.dts - queue[0][1] > self._lag_limit
            ):
                if self.frames_dropped == 0:
                    logger.warning(
                        "whep %s: the transcode falls behind; dropping to the next keyframe",
                        self.name,
                    )
                self._dropping = True
                self.frames_dropped += 1
                return
            self.frames_in += 1
            if self._task is not None:  # live (the starting GOP goes through in a burst)
                pushed = self._pushed
                pushed[frame.pts] = time.monotonic()
                if len(pushed) > 2 * LATENCY_SAMPLES:
                    del pushed[next(iter(pushed))]
        data = frame.flv_tag()
        self._queue.append((data, frame.dts))
        self._queued_bytes += len(data)
        self._wake.set()

    async def _write(self, stdin: asyncio.StreamWriter) -> None:
        try:
            stdin.write(flv.file_header(False, True))
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                chunks = [data for data, _dts in self._queue]
                self._queue.clear()
                self._queued_bytes = 0
                stdin.write(b"".join(chunks))
                await stdin.drain()  # ffmpeg takes it at its pace; the queue above is bounded
                self._lag_limit = MAX_LAG_MS  # the starting GOP is through
        except (BrokenPipeError, ConnectionResetError):
            return  # ffmpeg died: the reader sees it and says why

    # -------------------------------------------------------------- out

    async def _run(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *ffmpeg_args(self.settings.preset, self.kbps, self.fps),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C reaches the server, which stops it
            )
        except OSError as exc:
            self._fail(f"ffmpeg did not start ({exc})")
            return
        self.proc = proc
        if self.closed:
            proc.kill()
            await proc.wait()
            return
        logger.info(
            "whep %s: transcoding to H.264 for WebRTC (ffmpeg pid %d, %s, %d kbit/s)",
            self.name,
            proc.pid,
            self.settings.preset,
            self.kbps,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        writer = asyncio.create_task(self._write(proc.stdin))
        errors = asyncio.create_task(self._read_stderr(proc.stderr))
        reason = ""
        try:
            reason = await self._read(proc.stdout)
            if reason:
                proc.kill()
            code = await proc.wait()
            await asyncio.wait({errors}, timeout=1)
        finally:
            writer.cancel()
            errors.cancel()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if not self.closed:
            tail = [line for line in self._stderr if line.strip()]
            why = reason or f"ffmpeg exited with code {code}"
            if tail:
                why += f": {tail[-1].strip()}"
            logger.warning(
                "whep %s: the WebRTC transcode stopped (%s); ffmpeg's stderr:\n%s",
                self.name,
                why,
                "\n".join(tail) or "(nothing)",
            )
            self._fail(why)

    async def _read(self, stdout: asyncio.StreamReader) -> str:
        """Frames from ffmpeg's FLV until it ends; a reason when its output is broken."""
        demuxer = flv.FlvDemuxer()
        while True:
            data = await stdout.read(READ_SIZE)
            if not data:
                return ""
            try:
                items = demuxer.feed(data)
            except FLVError as exc:
                return f"ffmpeg's output is not FLV ({exc})"
            frames = [
                Frame.from_payload(Kind.VIDEO, item.timestamp, item.body)
                for item in items
                if isinstance(item, flv.FlvTag) and item.tag_type == flv.TAG_VIDEO
            ]
            if not frames or self.closed:
                continue
            now = time.monotonic()
            if self.first_frame_s is None:
                self.first_frame_s = now - self.started_at
            for frame in frames:
                if self.first_pts is None and not frame.header:
                    self.first_pts = frame.pts
                pushed = self._pushed.pop(frame.pts, None)
                if pushed is not None and not frame.header:
                    self.added_s.append(now - pushed)
            self.frames_out += len(frames)
            self.bytes_out += sum(len(f.payload) for f in frames)
            try:
                self._on_frames(frames)
            except Exception:
                logger.exception("whep %s: transcoded frames not taken", self.name)

    async def _read_stderr(self, stderr: asyncio.StreamReader) -> None:
        while True:
            line = await stderr.readline()
            if not line:
                return
            self._stderr.append(line.decode("utf-8", "replace").rstrip()[:500])

    def _fail(self, reason: str) -> None:
        if self.closed or self.failed is not None:
            return
        self.failed = reason
        self.closed = True
        try:
            self._on_exit(reason)
        except Exception:
            logger.exception("whep %s: transcode exit callback failed", self.name)

    # -------------------------------------------------------------- stop

    def close(self) -> None:
        """Stop: kill ffmpeg (its exit is awaited by the run task; see :meth:`wait_closed`)."""
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Wait until ffmpeg has exited (after :meth:`close` or its death)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "preset": self.settings.preset,
            "kbps": self.kbps,
            "frames_in": self.frames_in,
            "frames_dropped": self.frames_dropped,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "queued_bytes": self._queued_bytes,
            "added_ms": quantiles_ms(self.added_s, 1),
            "first_frame_ms": (
                round(self.first_frame_s * 1000, 1) if self.first_frame_s is not None else None
            ),
            "failed": self.failed,
        }
