"""Per-stream hub: the GOP cache and serialize-once fan-out to every viewer.

A publisher (RTMP ingest, WHIP, an edge pull) pushes :class:`~media.frame.Frame` objects.
Frames are grouped into batches: one frame each, written as it arrives, while a stream has
few viewers; once its audience is large enough for the saved system calls to matter
(``write_coalesce_min_viewers``, with hysteresis) a batch closes at each video frame (audio
waits for the next picture or the tick, whichever first). Each batch is encoded once per
wire format and the same ``bytes`` object is written to every viewer of that format. Per
viewer the only work is a buffer-size check and a ``transport.write``.

Slow viewers: a viewer whose socket buffer holds more than ``viewer_max_backlog_bytes``
stops receiving and waits for the next keyframe (it skips the rest of the GOP); if it still
has not drained by then it keeps skipping, and after ``viewer_drop_after_skips`` keyframes
it is disconnected with a log line. Server memory per viewer is bounded by the backlog
limit plus one batch.

Length: one idea kept in one file on purpose: the per-stream hot path (publisher, GOP
cache, batches, viewers, takeover) shares state that splitting would turn into calls
across modules on every frame; wire formats, HTTP, LL-HLS and the cluster are elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from media import flv
from media.frame import Frame, Kind
from media.rtp.whip_clock import Unwrap32
from relay.config import RelayConfig
from relay.formats import Format, RtmpPlay, flv_raw

logger = logging.getLogger(__name__)

TAKEOVER_GAP_MS = 40
"""Gap left on the timeline when a new publisher takes over a stream."""

HERD_JOINS = 16
"""Joins within one tick that make the next tick as long as ``write_coalesce_max_ms``."""

INTERNAL_CONSUMERS = frozenset({"record", "hls"})
"""Attached like viewers but not people watching: reported as ``consumers`` in stats."""


class Batch:
    """Frames delivered together, with their encodings cached per format.

    The cache is keyed by the format object (equal formats encode alike, see
    :class:`~relay.formats.Format`) and whether the batch starts at its keyframe; ``None``
    in place of a format is the bare FLV tags the FLV-based formats wrap.
    """

    __slots__ = ("_cache", "frames", "key_index", "size")

    def __init__(self, frames: list[Frame], key_index: int) -> None:
        self.frames = frames
        self.key_index = key_index
        """Index of the first sync point (keyframe) in ``frames``, or -1."""
        self.size = sum(len(f.payload) for f in frames)
        self._cache: dict[tuple[Format | None, bool], bytes] = {}

    def encoded(self, fmt: Format, from_key: bool = False) -> bytes:
        ck = (fmt, from_key)
        data = self._cache.get(ck)
        if data is None:
            frames = self.frames[self.key_index :] if from_key else self.frames
            raw: bytes | None = None
            if fmt.uses_flv:
                rk = (None, from_key)
                raw = self._cache.get(rk)
                if raw is None:
                    raw = self._cache[rk] = flv_raw(frames)
            data = self._cache[ck] = fmt.encode(frames, raw)
        return data


@dataclass
class ViewerInfo:
    protocol: str
    """``flv``, ``ws``, ``rtmp``, ``edge``..."""
    remote: str = ""
    started: float = field(default_factory=time.time)


class NullTransport:
    """The transport of a viewer that writes nothing through the hub's FLV path (HLS
    packager, WebRTC seat): the hub's checks see an empty, open pipe."""

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:  # pragma: no cover - never called
        pass

    def writelines(self, data: Any) -> None:  # pragma: no cover - never called
        pass


class Viewer:
    """One connected viewer: a transport, a format and its catch-up state."""

    __slots__ = (
        "_on_close",
        "bytes_sent",
        "closed",
        "done",
        "fmt",
        "hub",
        "info",
        "max_backlog",
        "skip_pending",
        "skips",
        "transport",
        "waiting_keyframe",
        "writes",
    )

    def __init__(
        self,
        transport: asyncio.WriteTransport | Any,
        fmt: Format,
        info: ViewerInfo,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.transport = transport
        self.fmt = fmt
        self.info = info
        self.hub: StreamHub | None = None
        self.waiting_keyframe = True
        self.skips = 0
        self.skip_pending = 0
        """Frames at the head of the next batch this viewer already got in its prelude."""
        self.closed = False
        self.bytes_sent = 0
        self.writes = 0
        """Media writes (batches delivered) since the viewer joined, prelude not counted."""
        self.max_backlog = 4 * 1024 * 1024
        self._on_close = on_close
        self.done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def write(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self.transport.write(data)

    def write_parts(self, *parts: bytes) -> None:
        self.bytes_sent += sum(len(p) for p in parts)
        self.transport.writelines(parts)

    def deliver(self, batch: Batch, drop_after: int) -> None:
        if self.skip_pending:
            # Joined mid-tick: the head of this batch was in the GOP cache it was sent.
            skip, self.skip_pending = self.skip_pending, 0
            if skip >= len(batch.frames):
                return
            key = batch.key_index - skip if batch.key_index >= skip else -1
            batch = Batch(batch.frames[skip:], key)
        transport = self.transport
        if transport.is_closing():
            self.close("client gone")
            return
        backlog = transport.get_write_buffer_size()
        if self.waiting_keyframe:
            if batch.key_index < 0:
                return
            if backlog > self.max_backlog // 2:
                self.skips += 1
                if self.skips >= drop_after:
                    logger.warning(
                        "dropping slow %s viewer %s of %s: %d bytes unsent after %d keyframes",
                        self.info.protocol,
                        self.info.remote,
                        self.hub.key if self.hub else "?",
                        backlog,
                        self.skips,
                    )
                    self.close("too slow")
                return
            self.waiting_keyframe = False
            data = batch.encoded(self.fmt, from_key=batch.key_index > 0)
        elif backlog > self.max_backlog:
            self.waiting_keyframe = True
            self.skips += 1
            logger.info(
                "%s viewer %s of %s is behind (%d bytes queued): skipping to next keyframe",
                self.info.protocol,
                self.info.remote,
                self.hub.key if self.hub else "?",
                backlog,
            )
            return
        else:
            if backlog == 0:
                self.skips = 0
            data = batch.encoded(self.fmt)
        self.bytes_sent += len(data)
        self.writes += 1
        transport.write(data)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.hub is not None:
            self.hub.remove_viewer(self)
        if not self.done.done():
            self.done.set_result(reason)
        if self._on_close is not None:
            try:
                self._on_close(reason)
            except Exception:
                logger.exception("viewer close callback failed")


@dataclass
class PublisherInfo:
    protocol: str
    remote: str = ""
    node: str = ""


class Publisher:
    """The handle a publisher uses to feed a hub. A takeover kicks the previous one."""

    def __init__(
        self, hub: StreamHub, info: PublisherInfo, on_kick: Callable[[str], None] | None
    ) -> None:
        self.hub = hub
        self.info = info
        self.on_kick = on_kick
        self.active = True
        self.started = time.time()
        self._unwrap = {
            Kind.AUDIO: Unwrap32(),
            Kind.VIDEO: Unwrap32(),
            Kind.SCRIPT: Unwrap32(),
        }
        self._offset: int | None = None
        self._start = 0
        self.first_dts: int | None = None
        """Where this publisher's first frame landed on the stream's timeline."""
        self.frames_in = 0
        self.bytes_in = 0

    def _timeline(self, kind: Kind, raw_ts: int) -> int:
        unwrap = self._unwrap[kind]
        first_of_track = unwrap.last is None and kind != Kind.SCRIPT
        ext = unwrap(raw_ts)
        if self._offset is None:
            self._start = self.hub.continue_at()
            self._offset = self._start - ext
            self.first_dts = max(0, ext + self._offset)
        elif first_of_track and ext + self._offset < self._start:
            # this track starts behind the one that placed the timeline (video behind
            # audio): move the timeline on so it too lands after what viewers have
            self._offset = self._start - ext
        return max(0, ext + self._offset)

    def push(self, kind: Kind, raw_ts: int, payload: bytes) -> None:
        """Feed one audio/video message (FLV tag body, RTMP timestamp)."""
        if not self.active:
            return
        self.frames_in += 1
        self.bytes_in += len(payload)
        frame = Frame.from_payload(kind, self._timeline(kind, raw_ts), payload)
        self.hub.push(frame)

    def push_frame(self, frame: Frame) -> None:
        """Feed a frame already on this publisher's own timeline (edge pulls, WHIP)."""
        if not self.active:
            return
        self.frames_in += 1
        self.bytes_in += len(frame.payload)
        self.hub.push(frame.with_dts(self._timeline(frame.kind, frame.dts)))

    def metadata(self, payload: bytes, meta: dict[str, Any]) -> None:
        if self.active:
            self.hub.set_metadata(payload, meta)

    def kick(self, reason: str) -> None:
        """Cut this publisher: replaced by another (``takeover``) or stopped by an operator."""
        if not self.active:
            return
        self.active = False
        if reason != "takeover":
            self.hub.publisher_left(self, reason)
        if self.on_kick is not None:
            try:
                self.on_kick(reason)
            except Exception:
                logger.exception("publisher kick callback failed")

    def close(self, reason: str = "closed") -> None:
        """The publisher went away. The hub lingers so viewers survive a reconnect."""
        if not self.active:
            return
        self.active = False
        self.hub.publisher_left(self, reason)


class _Rate:
    """Bytes and frames per second over a sliding window of 1-second buckets."""

    __slots__ = ("buckets", "window")

    def __init__(self, window: int = 5) -> None:
        self.window = window
        self.buckets: deque[list[float]] = deque(maxlen=window + 1)

    def add(self, now: float, nbytes: int, frames: int = 1) -> None:
        sec = int(now)
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0.0, 0.0])
        b = self.buckets[-1]
        b[1] += nbytes
        b[2] += frames

    def rate(self, now: float) -> tuple[float, float]:
        """(bytes/s, frames/s) over the last complete seconds."""
        sec = int(now)
        full = [b for b in self.buckets if sec - self.window <= b[0] < sec]
        if not full:
            return 0.0, 0.0
        span = max(1, sec - int(full[0][0]))
        return sum(b[1] for b in full) / span, sum(b[2] for b in full) / span


class StreamHub:
    """One stream: current publisher, headers, GOP cache, viewers."""

    def __init__(self, registry: StreamRegistry, app: str, name: str) -> None:
        self.registry = registry
        self.config = registry.config
        self.app = app
        self.name = name
        self.key = f"{app}/{name}"
        self.publisher: Publisher | None = None
        self.meta_payload: bytes | None = None
        self.meta: dict[str, Any] = {}
        self.video_header: Frame | None = None
        self.audio_header: Frame | None = None
        self.gop: list[Frame] = []
        self.gop_bytes = 0
        self.gop_valid = False
        self.viewers: set[Viewer] = set()
        self.last_dts = -1
        self._last_dts_kind: dict[Kind, int] = {}
        self._last_pts = -1
        """Latest presentation time sent (DTS + composition offset): with B-frames, pictures
        are shown up to a few frames after the last DTS."""
        self._video_seen = False
        self._await_keyframe = False
        self._pending: list[Frame] = []
        self._pending_key = -1
        self._joins = 0
        """Viewers who joined since the last flush (a herd stretches the tick)."""
        self._coalescing = False
        """Frames are merged per tick (the audience reached ``write_coalesce_min_viewers``
        and has not fallen below three quarters of it since)."""
        self._flush_handle: asyncio.TimerHandle | None = None
        self._linger_handle: asyncio.TimerHandle | None = None
        self.created = time.time()
        self.live_since: float | None = None
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.rate_in = _Rate()
        self.rate_video = _Rate()
        self.bytes_in = 0
        self.frames_in = 0
        self.bytes_out_closed: dict[str, int] = {}
        self.gop_resets = 0
        self._preludes: dict[Format, tuple[int, bytes]] = {}
        self._version = 0
        """Bumped whenever what a new viewer would get (headers, metadata, GOP) changes."""

    # ------------------------------------------------------------ publisher side

    @property
    def live(self) -> bool:
        return self.publisher is not None and self.publisher.active

    def continue_at(self) -> int:
        """Where a new publisher's first frame lands on the timeline."""
        if self.last_dts < 0:
            return 0
        # after the last picture *shown*, not only the last decoded: the new publisher's
        # first keyframe must not be presented before frames already sent (B-frames)
        return max(self.last_dts, self._last_pts) + TAKEOVER_GAP_MS

    def attach(self, info: PublisherInfo, on_kick: Callable[[str], None] | None) -> Publisher:
        old = self.publisher
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        pub = Publisher(self, info, on_kick)
        self.publisher = pub
        if old is not None and old.active:
            logger.info(
                "%s: new publisher %s takes over from %s", self.key, info.remote, old.info.remote
            )
            old.kick("takeover")
        if self.last_dts >= 0:
            # Viewers continue on the new publisher from its first keyframe.
            self._await_keyframe = True
        self.live_since = self.live_since or time.time()
        return pub

    def publisher_left(self, pub: Publisher, reason: str) -> None:
        if pub is not self.publisher:
            return
        self._flush()
        self.publisher = None
        linger = self.registry.linger_seconds
        logger.info(
            "%s: publisher left (%s); lingering %.1fs for a reconnect", self.key, reason, linger
        )
        self._linger_handle = self._loop.call_later(linger, self._expire, reason)

    def _expire(self, reason: str) -> None:
        self._linger_handle = None
        if self.publisher is not None:
            return
        self.registry.remove(self)
        for viewer in list(self.viewers):
            viewer.close(f"stream ended ({reason})")

    def set_metadata(self, payload: bytes, meta: dict[str, Any]) -> None:
        self._version += 1
        self.meta_payload = payload
        self.meta = meta
        self._maybe_ready()

    def push(self, frame: Frame) -> None:
        kind = frame.kind
        last = self._last_dts_kind.get(kind, -1)
        if frame.header:  # a configuration shares the time of the frame after it
            if frame.dts < last:
                frame = frame.with_dts(last)
        else:
            if frame.dts <= last:  # each track strictly increasing, as muxers require
                frame = frame.with_dts(last + 1)
            self._last_dts_kind[kind] = frame.dts
            if frame.pts > self._last_pts:
                self._last_pts = frame.pts
        if frame.dts > self.last_dts:
            self.last_dts = frame.dts
        now = time.time()
        size = len(frame.payload)
        self.bytes_in += size
        self.frames_in += 1
        self.rate_in.add(now, size)
        if kind == Kind.VIDEO:
            self._video_seen = True
            if frame.header:
                changed = self.video_header is None or self.video_header.payload != frame.payload
                self.video_header = frame
                self._version += 1
                self._maybe_ready()
                if changed and self.viewers:
                    self._enqueue(frame, sync=False)  # new parameters before the next IDR
                return
            self.rate_video.add(now, size)
            if frame.keyframe:
                self._await_keyframe = False
                self._reset_gop(frame)
                self._enqueue(frame, sync=True)
                self._maybe_ready()
                return
            if self._await_keyframe:
                return
        elif kind == Kind.AUDIO:
            if frame.header:
                changed = self.audio_header is None or self.audio_header.payload != frame.payload
                self.audio_header = frame
                self._version += 1
                self._maybe_ready()
                if changed and self.viewers:
                    self._enqueue(frame, sync=False)
                return
            if not self.has_video:
                # Audio-only stream: every audio frame is a sync point; keep a window.
                self._cache_audio_only(frame)
                self._enqueue(frame, sync=True)
                self._maybe_ready()
                return
            if self._await_keyframe:
                return
        self._cache(frame)
        self._enqueue(frame, sync=False)

    @property
    def has_video(self) -> bool:
        if self.video_header is not None or self._video_seen:
            return True
        return bool(self.meta.get("videocodecid"))

    @property
    def has_audio(self) -> bool:
        if self.audio_header is not None:
            return True
        return bool(self.meta.get("audiocodecid"))

    def _reset_gop(self, key: Frame) -> None:
        self._version += 1
        self.gop = [key]
        self.gop_bytes = len(key.payload)
        self.gop_valid = True

    def _cache_audio_only(self, frame: Frame) -> None:
        """The last ``audio_only_cache_ms`` of an audio-only stream (bounded like a GOP)."""
        if not self.gop_valid or not self.gop:
            self._reset_gop(frame)
            return
        self._version += 1
        gop = self.gop
        gop.append(frame)
        self.gop_bytes += len(frame.payload)
        cfg = self.config
        drop = 0
        while len(gop) - drop > 1 and (
            frame.dts - gop[drop].dts > cfg.audio_only_cache_ms
            or len(gop) - drop > cfg.gop_max_frames
            or self.gop_bytes > cfg.gop_max_bytes
        ):
            self.gop_bytes -= len(gop[drop].payload)
            drop += 1
        if drop:
            del gop[:drop]

    def _cache(self, frame: Frame) -> None:
        if not self.gop_valid:
            return
        self._version += 1
        self.gop.append(frame)
        self.gop_bytes += len(frame.payload)
        cfg = self.config
        if len(self.gop) > cfg.gop_max_frames or self.gop_bytes > cfg.gop_max_bytes:
            # No keyframe in sight: stop caching rather than grow without bound.
            self.gop = []
            self.gop_bytes = 0
            self.gop_valid = False
            self.gop_resets += 1
            if self.gop_resets == 1 or self.gop_resets % 100 == 0:
                logger.warning(
                    "%s: GOP cache limit reached without a keyframe; cache cut", self.key
                )

    def _maybe_ready(self) -> None:
        if self._ready.is_set():
            return
        if self.gop_valid or (self.video_header is not None and self.audio_header is not None):
            self._ready.set()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until a viewer can be given a correct FLV header (codecs known)."""
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            pass

    # ------------------------------------------------------------ fan-out

    def _coalesce_now(self) -> bool:
        """Whether this stream's frames are merged per tick (there is load to save) or
        written at once; the mode flips with hysteresis on the number of viewers."""
        cfg = self.config
        if cfg.write_coalesce_ms <= 0:
            return False
        threshold = cfg.write_coalesce_min_viewers
        n = len(self.viewers)
        if self._coalescing:
            if n < threshold * 3 // 4:
                self._coalescing = False
        elif n >= threshold:
            self._coalescing = True
        return self._coalescing

    def _enqueue(self, frame: Frame, sync: bool) -> None:
        if not self.viewers:
            return
        if not self._coalesce_now():
            if self._pending:  # the audience just shrank below the threshold
                self._flush()
            self._joins = 0
            self._deliver(Batch([frame], 0 if sync else -1))
            return
        if sync and self._pending_key < 0:
            self._pending_key = len(self._pending)
        self._pending.append(frame)
        if frame.kind is Kind.VIDEO and self._joins < HERD_JOINS:
            # A picture closes the batch: video goes out at once, the audio since the last
            # picture with it (one write per viewer per picture, fewer than per tick).
            self._flush()
            return
        if self._flush_handle is None:
            coalesce = self.config.write_coalesce_ms
            per_viewer = self.config.write_coalesce_per_viewer_us
            if self._joins >= HERD_JOINS:
                # Viewers are pouring in: merge as much as allowed, so the loop spends its
                # time starting them (their prelude already holds the pending frames).
                coalesce = max(coalesce, self.config.write_coalesce_max_ms)
            elif per_viewer > 0:
                grown = min(
                    self.config.write_coalesce_max_ms, len(self.viewers) * per_viewer // 1000
                )
                coalesce = max(coalesce, grown)
            self._flush_handle = self._loop.call_later(coalesce / 1000, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        batch = Batch(self._pending, self._pending_key)
        self._joins = 0
        self._pending = []
        self._pending_key = -1
        self._deliver(batch)

    def _deliver(self, batch: Batch) -> None:
        drop_after = self.config.viewer_drop_after_skips
        for viewer in list(self.viewers):
            viewer.deliver(batch, drop_after)

    # ------------------------------------------------------------ viewers

    def prelude_frames(self) -> tuple[list[Frame], bool]:
        """Metadata, sequence headers and the cached GOP for a new viewer, and whether the
        viewer can start at once (False: it waits for the next keyframe)."""
        frames: list[Frame] = []
        start = self.gop[0].dts if self.gop_valid and self.gop else max(self.last_dts, 0)
        if self.meta_payload is not None:
            # Timestamp 0: ffmpeg's FLV demuxer turns a later onMetaData into a data stream.
            frames.append(Frame(Kind.SCRIPT, 0, self.meta_payload))
        if self.video_header is not None:
            frames.append(self.video_header.with_dts(start))
        if self.audio_header is not None:
            frames.append(self.audio_header.with_dts(start))
        if self.gop_valid:
            frames.extend(self.gop)
        return frames, self.gop_valid

    @property
    def ready(self) -> bool:
        """A viewer can be given a correct FLV header now (codecs known)."""
        return self._ready.is_set()

    def add_viewer(self, viewer: Viewer, prelude: bytes | None, head: bytes = b"") -> None:
        """Attach a viewer; ``prelude`` (already wrapped for its format) is written first,
        after ``head`` (a response head) if given, in one system call.

        The tick's pending frames are not flushed (that would cost a write to every viewer
        per join); the prelude already holds them, so the newcomer skips them at the flush.
        """
        viewer.hub = self
        self._joins += 1
        viewer.skip_pending = len(self._pending)
        viewer.max_backlog = self.config.viewer_max_backlog_bytes
        frames_ok = self.gop_valid
        if head:
            viewer.write_parts(head, prelude or b"")
        elif prelude:
            viewer.write(prelude)
        viewer.waiting_keyframe = not frames_ok
        self.viewers.add(viewer)
        self.registry.viewer_count_changed(self)

    @property
    def audience(self) -> int:
        """Viewers who are people (or edges), not internal consumers like the recorder."""
        return sum(v.info.protocol not in INTERNAL_CONSUMERS for v in self.viewers)

    def counted_viewers(self) -> dict[str, int]:
        """Viewers that are not connections of this hub (HLS clients, counted by request),
        by protocol; protocols at 0 are left out."""
        out: dict[str, int] = {}
        for counter in self.registry.viewer_counters:
            for proto, n in counter(self).items():
                if n > 0:
                    out[proto] = out.get(proto, 0) + n
        return out

    def remove_viewer(self, viewer: Viewer) -> None:
        if viewer in self.viewers:
            self.viewers.discard(viewer)
            proto = viewer.info.protocol
            self.bytes_out_closed[proto] = self.bytes_out_closed.get(proto, 0) + viewer.bytes_sent
            self.registry.viewer_count_changed(self)

    def _cached_prelude(self, fmt: Format, build: Callable[[], bytes]) -> bytes:
        """Viewers joining between two frames share one prelude object (per format)."""
        hit = self._preludes.get(fmt)
        if hit is not None and hit[0] == self._version:
            return hit[1]
        data = build()
        self._preludes[fmt] = (self._version, data)
        return data

    def flv_prelude(self, fmt: Format) -> bytes:
        def build() -> bytes:
            frames, _ok = self.prelude_frames()
            raw = flv.file_header(self.has_audio, self.has_video) + flv_raw(frames)
            return fmt.wrap_prelude(raw)

        return self._cached_prelude(fmt, build)

    def rtmp_prelude(self, chunk_size: int) -> bytes:
        def build() -> bytes:
            frames, _ok = self.prelude_frames()
            return b"".join(f.rtmp_message(chunk_size) for f in frames)

        return self._cached_prelude(RtmpPlay(chunk_size), build)

    def close(self, reason: str) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._linger_handle is not None:
            self._linger_handle.cancel()
        if self.publisher is not None:
            self.publisher.kick(reason)
        for viewer in list(self.viewers):
            viewer.close(reason)

    # ------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        now = time.time()
        bps_in, _ = self.rate_in.rate(now)
        _, fps = self.rate_video.rate(now)
        viewers: dict[str, int] = {}
        consumers: dict[str, int] = {}
        out = dict(self.bytes_out_closed)
        for v in self.viewers:
            proto = v.info.protocol
            bucket = consumers if proto in INTERNAL_CONSUMERS else viewers
            bucket[proto] = bucket.get(proto, 0) + 1
            out[proto] = out.get(proto, 0) + v.bytes_sent
        for proto, n in self.counted_viewers().items():
            viewers[proto] = viewers.get(proto, 0) + n
        video = self.registry.describe_video(self)
        audio = self.registry.describe_audio(self)
        if fps == 0 and isinstance(self.meta.get("framerate"), int | float):
            fps = float(self.meta["framerate"])
        pub = self.publisher
        return {
            "app": self.app,
            "name": self.name,
            "live": self.live,
            "video": video,
            "audio": audio,
            "fps": round(fps, 2),
            "bitrate_in": int(bps_in * 8),
            "bitrate_out": int(bps_in * 8 * sum(viewers.values())),
            "bytes_in": self.bytes_in,
            "bytes_out": out,
            "viewers": viewers,
            "viewers_total": sum(viewers.values()),
            "consumers": consumers,
            "uptime": round(now - self.live_since, 3) if self.live_since else 0.0,
            "publisher": (
                {"protocol": pub.info.protocol, "remote": pub.info.remote, "since": pub.started}
                if pub is not None
                else None
            ),
            "gop_frames": len(self.gop) if self.gop_valid else 0,
            "gop_bytes": self.gop_bytes if self.gop_valid else 0,
        }


class StreamRegistry:
    """All hubs of this node, by ``app/name``."""

    def __init__(self, config: RelayConfig, linger_seconds: float = 10.0) -> None:
        self.config = config
        self.linger_seconds = linger_seconds
        self.hubs: dict[str, StreamHub] = {}
        self._listeners: list[Callable[[StreamHub], None]] = []
        self.resolver: Callable[[str, str], Awaitable[StreamHub | None]] | None = None
        """Finds a stream this node does not hold (an edge pulls it from an origin)."""
        self.hub_listeners: list[Callable[[StreamHub, str], None]] = []
        """Called with (hub, "created" | "removed")."""
        self.viewer_counters: list[Callable[[StreamHub], dict[str, int]]] = []
        """Viewers that are not hub connections (HLS clients, counted by request):
        ``hub -> {protocol: n}``, added to the hub's ``viewers`` in its stats."""

    def get(self, app: str, name: str) -> StreamHub | None:
        return self.hubs.get(f"{app}/{name}")

    def get_or_create(self, app: str, name: str) -> StreamHub:
        key = f"{app}/{name}"
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = StreamHub(self, app, name)
            self._hub_event(hub, "created")
        return hub

    async def find(self, app: str, name: str) -> StreamHub | None:
        """The hub for APP/NAME, asking the resolver (edge pull) when this node has none."""
        hub = self.get(app, name)
        if hub is None and self.resolver is not None:
            hub = await self.resolver(app, name)
        return hub

    def _hub_event(self, hub: StreamHub, what: str) -> None:
        for listener in self.hub_listeners:
            try:
                listener(hub, what)
            except Exception:
                logger.exception("hub listener failed")

    def publish(
        self, app: str, name: str, info: PublisherInfo, on_kick: Callable[[str], None] | None = None
    ) -> Publisher:
        return self.get_or_create(app, name).attach(info, on_kick)

    def remove(self, hub: StreamHub) -> None:
        """Forget ``hub`` (it ended, or an edge stopped pulling it); listeners are told."""
        if self.hubs.get(hub.key) is hub:
            del self.hubs[hub.key]
            self._hub_event(hub, "removed")

    def on_viewers_changed(self, listener: Callable[[StreamHub], None]) -> None:
        self._listeners.append(listener)

    def viewer_count_changed(self, hub: StreamHub) -> None:
        for listener in self._listeners:
            try:
                listener(hub)
            except Exception:
                logger.exception("viewer listener failed")

    def describe_video(self, hub: StreamHub) -> dict[str, Any] | None:
        if hub.video_header is None and not hub.meta.get("videocodecid"):
            return None
        out: dict[str, Any] = {}
        if hub.video_header is not None:
            info = flv.parse_video_header(hub.video_header.payload)
            out["codec"] = info.codec
            try:
                from media import codecs

                vcfg = codecs.video_config(info.codec, hub.video_header.payload[info.data_offset :])
                out.update(
                    codec=vcfg.codec,
                    width=vcfg.width,
                    height=vcfg.height,
                    profile=vcfg.profile_name,
                    level=vcfg.level,
                    bit_depth=vcfg.bit_depth,
                )
                if vcfg.fps:
                    out["fps"] = vcfg.fps
            except (ValueError, ImportError):
                pass
        for key, meta_key in (("width", "width"), ("height", "height")):
            v = hub.meta.get(meta_key)
            if key not in out and isinstance(v, int | float) and v > 0:
                out[key] = int(v)
        return out

    def describe_audio(self, hub: StreamHub) -> dict[str, Any] | None:
        if hub.audio_header is None and not hub.meta.get("audiocodecid"):
            return None
        out: dict[str, Any] = {}
        if hub.audio_header is not None:
            info = flv.parse_audio_header(hub.audio_header.payload)
            out["codec"] = info.codec
            try:
                from media import codecs

                if info.codec == "mp4a":
                    acfg = codecs.audio_config(hub.audio_header.payload[info.data_offset :])
                    out.update(
                        codec=acfg.codec, sample_rate=acfg.sample_rate, channels=acfg.channels
                    )
            except (ValueError, ImportError):
                pass
        rate = hub.meta.get("audiosamplerate")
        if "sample_rate" not in out and isinstance(rate, int | float) and rate > 0:
            out["sample_rate"] = int(rate)
        return out

    def close(self) -> None:
        for hub in list(self.hubs.values()):
            hub.close("server shutting down")
        self.hubs.clear()
