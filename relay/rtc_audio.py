"""AAC (or MP3) -> Opus, once per stream, for every WebRTC viewer of it.

Browsers take Opus over WebRTC, not AAC. :class:`OpusTranscoder` decodes the stream's
audio with PyAV, resamples it to 48 kHz stereo and encodes 20 ms Opus packets with
libopus. The work runs on one worker thread per transcoder (never on the event loop);
frames reach it through a bounded queue (a transcoder that falls behind drops input and
counts it, it never grows) and packets come back to the loop with
``call_soon_threadsafe``. One transcoder serves every WHEP viewer of a stream:
:class:`relay.rtc_stream.RtpStream` starts it with its first viewer and stops it with
its last.

Timing: each Opus packet carries its timestamp in 48 kHz units on the stream's own
timeline (the hub's milliseconds x 48), so audio and video share one clock and the
sender reports can map both to wall-clock time. A gap in the input (a takeover, a lost
frame run) of more than ``RESYNC_MS`` restarts the timeline at the new frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av

logger = logging.getLogger(__name__)

__all__ = ["OPUS_CLOCK", "OpusTranscoder"]

OPUS_CLOCK = 48_000
FRAME_SAMPLES = 960
"""20 ms at 48 kHz: the Opus frame size (the ptime browsers expect)."""
RESYNC_MS = 200
MAX_QUEUE = 200
"""Audio frames waiting for the worker at most (about 4 s of AAC); beyond, input drops."""
_STOP = object()

DECODERS = {"mp4a": "aac", "mp3": "mp3", "mp3_8k": "mp3"}
"""FLV audio codecs (as :func:`media.flv.parse_audio_header` names them) -> PyAV decoders."""


class OpusTranscoder:
    """One stream's audio to Opus packets, on a worker thread.

    ``on_packet(payload, timestamp_48k)`` is called on the event loop for each packet.
    """

    def __init__(
        self,
        codec: str,
        config: bytes,
        on_packet: Callable[[bytes, int], None],
        *,
        bitrate: int = 64_000,
        name: str = "",
    ) -> None:
        if codec not in DECODERS:
            raise ValueError(f"no decoder for {codec} audio")
        self.codec = codec
        self.config = config
        self.bitrate = bitrate
        self.name = name
        self._on_packet = on_packet
        self._loop = asyncio.get_running_loop()
        self._queue: queue.Queue[Any] = queue.Queue(MAX_QUEUE)
        self.frames_in = 0
        self.frames_dropped = 0
        self.packets_out = 0
        self.errors = 0
        self.cpu_seconds = 0.0
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=f"opus-{name or codec}", daemon=True)
        self._thread.start()

    def push(self, payload: bytes, dts_ms: int) -> None:
        """Queue one raw audio frame (AAC access unit or MP3 frame) at ``dts_ms``."""
        if self.closed:
            return
        self.frames_in += 1
        try:
            self._queue.put_nowait((payload, dts_ms))
        except queue.Full:
            self.frames_dropped += 1
            if self.frames_dropped == 1 or self.frames_dropped % 500 == 0:
                logger.warning(
                    "opus %s: transcoder behind; %d frames dropped", self.name, self.frames_dropped
                )

    def close(self) -> None:
        """Stop the worker (it finishes the frame in hand); packets stop at once."""
        if self.closed:
            return
        self.closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self._thread.join, timeout)

    # ------------------------------------------------------------------ worker thread

    def _open(self) -> tuple[Any, Any, Any]:
        decoder = av.CodecContext.create(DECODERS[self.codec], "r")
        if self.config:
            decoder.extradata = self.config
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_CLOCK)
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = OPUS_CLOCK
        encoder.layout = "stereo"
        encoder.format = "s16"
        encoder.bit_rate = self.bitrate
        encoder.time_base = Fraction(1, OPUS_CLOCK)
        encoder.options = {"frame_duration": "20", "application": "lowdelay"}
        encoder.open()
        return decoder, resampler, encoder

    def _run(self) -> None:
        try:
            decoder, resampler, encoder = self._open()
        except Exception:
            logger.exception(
                "opus %s: cannot open the %s decoder / opus encoder", self.name, self.codec
            )
            self.closed = True
            return
        fifo = av.AudioFifo()
        next_pts: int | None = None  # 48 kHz timestamp of the fifo's first sample
        expect_ms: int | None = None
        while True:
            item = self._queue.get()
            if item is _STOP or self.closed:
                return
            payload, dts_ms = item
            started = time.thread_time()
            try:
                if expect_ms is None or abs(dts_ms - expect_ms) > RESYNC_MS:
                    fifo = av.AudioFifo()
                    next_pts = dts_ms * (OPUS_CLOCK // 1000)
                packet = av.Packet(payload)
                decoded = decoder.decode(packet)
                for frame in decoded:
                    expect_ms = dts_ms + int(frame.samples * 1000 / frame.sample_rate)
                    for out in resampler.resample(frame):
                        out.pts = None
                        fifo.write(out)
                while fifo.samples >= FRAME_SAMPLES and next_pts is not None:
                    chunk = fifo.read(FRAME_SAMPLES)
                    if chunk is None:
                        break
                    chunk.pts = next_pts
                    chunk.time_base = Fraction(1, OPUS_CLOCK)
                    next_pts += FRAME_SAMPLES
                    for encoded in encoder.encode(chunk):
                        ts = int(encoded.pts) if encoded.pts is not None else next_pts
                        self._emit(bytes(encoded), ts)
            except (av.FFmpegError, ValueError) as exc:
                self.errors += 1
                if self.errors == 1 or self.errors % 500 == 0:
                    logger.warning("opus %s: frame not transcoded (%s)", self.name, exc)
            finally:
                self.cpu_seconds += time.thread_time() - started

    def _emit(self, payload: bytes, ts: int) -> None:
        if self.closed:
            return
        self.packets_out += 1
        try:
            self._loop.call_soon_threadsafe(self._on_packet, payload, ts)
        except RuntimeError:  # the loop is closed: nobody to deliver to
            self.closed = True
