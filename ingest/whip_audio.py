"""Opus -> AAC, once per WHIP stream (PyAV), off the event loop.

Browsers and OBS publish Opus over WebRTC; FLV/RTMP/HLS players (WeChat's among them)
need AAC. :class:`OpusToAac` is the blocking codec pair (decode Opus at 48 kHz, re-chunk
to AAC's 1024-sample frames, encode AAC-LC); :class:`AudioTranscodeWorker` runs it in a
thread, one batch at a time in arrival order, behind a bounded queue (when the codec
falls behind, the oldest queued packets are dropped and counted, never the loop's time).

Timing: the AAC frames carry sample times on the Opus RTP clock (48 kHz, extended), so the
shell maps them to ms exactly as it maps the Opus packets (RTCP SR alignment included).
A gap in the Opus timestamps (a lost packet, DTX silence) is filled with silence up to
:data:`MAX_FILL_SAMPLES`; a longer one moves the AAC timeline forward by the gap.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from fractions import Fraction

import av

__all__ = ["AudioTranscodeWorker", "OpusToAac", "flv_aac_frame", "flv_aac_header"]

logger = logging.getLogger(__name__)

RATE = 48000
AAC_FRAME = 1024
MAX_FILL_SAMPLES = RATE
"""Gaps up to 1 s are filled with silence; longer ones jump the timeline."""


def flv_aac_header(asc: bytes) -> bytes:
    """FLV audio tag body of an AAC sequence header (AAC, 44 kHz flag, 16-bit, stereo)."""
    return b"\xaf\x00" + asc


def flv_aac_frame(raw: bytes) -> bytes:
    return b"\xaf\x01" + raw


class OpusToAac:
    """Blocking: Opus packets (48 kHz RTP time) in, AAC-LC raw frames (same clock) out."""

    def __init__(self, channels: int = 2, bitrate: int = 128_000) -> None:
        layout = "stereo" if channels >= 2 else "mono"
        self._dec = av.CodecContext.create("opus", "r")
        self._dec.sample_rate = RATE
        self._dec.layout = layout
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate = RATE
        enc.layout = layout
        enc.format = "fltp"
        enc.bit_rate = bitrate
        enc.time_base = Fraction(1, RATE)
        enc.open()
        self._enc = enc
        self._layout = layout
        self._resampler = av.AudioResampler(
            format="fltp", layout=layout, rate=RATE, frame_size=AAC_FRAME
        )
        self.asc = bytes(enc.extradata or b"")
        """The AudioSpecificConfig of the AAC stream (for the FLV sequence header)."""
        self._next: int | None = None
        """Opus RTP time the next packet should have."""
        self._samples = 0
        """Samples given to the encoder so far (its pts)."""
        self._offset = 0
        """Opus RTP time of encoder sample 0 (moved forward by long gaps)."""
        self.packets_in = 0
        self.frames_out = 0
        self.late = 0
        self.errors = 0
        self.filled_samples = 0

    def feed(self, ts: int, payload: bytes) -> list[tuple[int, bytes]]:
        """One Opus packet at extended RTP time ``ts``; returns ``(rtp time, AAC frame)``."""
        self.packets_in += 1
        out: list[tuple[int, bytes]] = []
        if self._next is None:
            self._next = ts
            self._offset = ts
        gap = ts - self._next
        if gap < -AAC_FRAME:  # late or repeated: its time was already filled
            self.late += 1
            return out
        if gap > MAX_FILL_SAMPLES:
            self._offset += gap
        elif gap > 0:
            self._silence(gap, out)
        try:
            frames = self._dec.decode(av.Packet(payload))
        except (av.FFmpegError, ValueError) as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                logger.warning("opus decode failed (%d so far): %s", self.errors, exc)
            frames = []
        decoded = 0
        for frame in frames:
            decoded += frame.samples
            self._encode(frame, out)
        self._next = ts + (decoded or 960)
        return out

    def _silence(self, samples: int, out: list[tuple[int, bytes]]) -> None:
        self.filled_samples += samples
        while samples > 0:
            n = min(samples, 4800)
            frame = av.AudioFrame(format="fltp", layout=self._layout, samples=n)
            for plane in frame.planes:  # planar: one plane per channel
                plane.update(bytes(plane.buffer_size))
            frame.sample_rate = RATE
            self._encode(frame, out)
            samples -= n

    def _encode(self, frame: av.AudioFrame, out: list[tuple[int, bytes]]) -> None:
        frame.pts = None
        for chunk in self._resampler.resample(frame):
            chunk.pts = self._samples
            chunk.time_base = Fraction(1, RATE)
            self._samples += chunk.samples
            for packet in self._enc.encode(chunk):
                pts = packet.pts if packet.pts is not None else self._samples - AAC_FRAME
                out.append((self._offset + int(pts), bytes(packet)))
                self.frames_out += 1


class AudioTranscodeWorker:
    """Runs one :class:`OpusToAac` in a thread for one stream, in order, bounded."""

    def __init__(
        self,
        deliver: Callable[[list[tuple[int, bytes]]], None],
        *,
        channels: int = 2,
        max_queue: int = 250,
    ) -> None:
        self._deliver = deliver
        self._channels = channels
        self._queue: collections.deque[tuple[int, bytes]] = collections.deque()
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.codec: OpusToAac | None = None
        self.dropped = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def put(self, ts: int, payload: bytes) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 500 == 0:
                logger.warning("opus->aac falls behind: %d packets dropped", self.dropped)
        self._queue.append((ts, payload))
        self._wake.set()

    async def _run(self) -> None:
        try:
            self.codec = await asyncio.to_thread(OpusToAac, self._channels)
            while not self._closed:
                await self._wake.wait()
                self._wake.clear()
                while self._queue and not self._closed:
                    batch = list(self._queue)
                    self._queue.clear()
                    frames = await asyncio.to_thread(self._feed_all, self.codec, batch)
                    if frames and not self._closed:
                        self._deliver(frames)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("opus->aac transcoder failed: the stream continues without audio")

    @staticmethod
    def _feed_all(codec: OpusToAac, batch: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for ts, payload in batch:
            out += codec.feed(ts, payload)
        return out

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
