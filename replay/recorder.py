"""One recording: a live stream's hub feeding one ffmpeg at a time.

The recorder is a :class:`relay.hub.Viewer` (protocol ``record``) whose transport is
ffmpeg's stdin pipe, wrapped by :class:`PipeWriter`. The hub writes the same shared FLV
bytes it writes to HTTP-FLV viewers (``HTTP_FLV_10``: raw FLV); the pipe transport
buffers without blocking, and the Viewer's backlog check makes a slow ffmpeg skip to the
next keyframe (logged), then cuts it after ``relay.viewer_drop_after_skips`` skips; the
recording then starts a new ffmpeg.

A recording is a list of *parts*, one per ffmpeg run, each in its own directory
(``p1/``, ``p2/``...). A new part begins when the publisher changes (reconnect or
takeover), when the sequence headers change (codec / resolution change), or when ffmpeg
died or was cut. The replay playlist joins the parts with ``#EXT-X-DISCONTINUITY``. What
a part wrote stays: a new part never overwrites an older one.

A part starts from the hub's GOP cache, so it begins on a keyframe. After a publisher or
codec change it waits for a GOP newer than anything the previous part received (no frame
is recorded twice, no frame of the old codec reaches the new ffmpeg).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from media import flv
from media.errors import FLVError
from media.frame import Frame
from relay.formats import HTTP_FLV_10
from relay.hub import Publisher, StreamHub, Viewer, ViewerInfo
from replay import commands, playlist
from replay.config import ReplayConfig
from replay.model import PartRecord, Replay
from replay.storage import ReplayStorage

logger = logging.getLogger(__name__)

POLL = 0.25
"""Seconds between checks of the hub and ffmpeg (events wake the loop sooner)."""
HEADER_WAIT = 2.0
"""Longest a part waits for the sequence headers the metadata announces."""
CLOSE_TIMEOUT = 10.0
"""Seconds ffmpeg gets to write its last segment after stdin closes, before a kill."""
MAX_BACKOFF = 30.0


class PipeWriter:
    """The transport the recorder Viewer writes to: ffmpeg's stdin, plus bookkeeping.

    It stops forwarding (and marks itself stale) the moment the hub's publisher or
    sequence headers differ from those this ffmpeg started with.
    """

    __slots__ = (
        "audio_header",
        "bytes",
        "hub",
        "last_dts",
        "pipe",
        "publisher",
        "reason",
        "stale",
        "video_header",
        "wake",
    )

    def __init__(self, hub: StreamHub, pipe: Any, wake: Callable[[], None]) -> None:
        self.hub = hub
        self.pipe = pipe
        self.wake = wake
        self.publisher: Publisher | None = hub.publisher
        self.video_header: Frame | None = hub.video_header
        self.audio_header: Frame | None = hub.audio_header
        self.stale = False
        self.reason = ""
        self.last_dts = -1
        self.bytes = 0

    def write(self, data: bytes) -> None:
        if self.stale:
            return
        hub = self.hub
        if hub.publisher is not self.publisher:
            self._retire("publisher")
            return
        vh = hub.video_header
        if vh is not self.video_header:
            if self.video_header is None or vh is None or vh.payload != self.video_header.payload:
                self._retire("codec")
                return
            self.video_header = vh
        ah = hub.audio_header
        if ah is not self.audio_header:
            if self.audio_header is None or ah is None or ah.payload != self.audio_header.payload:
                self._retire("codec")
                return
            self.audio_header = ah
        self.pipe.write(data)
        self.bytes += len(data)
        self.last_dts = hub.last_dts

    def get_write_buffer_size(self) -> int:
        return int(self.pipe.get_write_buffer_size())

    def is_closing(self) -> bool:
        return bool(self.pipe.is_closing())

    def _retire(self, reason: str) -> None:
        self.stale = True
        self.reason = reason
        self.wake()


class LivePart:
    """A running ffmpeg and the Viewer feeding it."""

    def __init__(
        self,
        record: PartRecord,
        proc: asyncio.subprocess.Process,
        writer: PipeWriter,
        viewer: Viewer,
    ) -> None:
        self.record = record
        self.proc = proc
        self.writer = writer
        self.viewer = viewer
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self.stderr_task: asyncio.Task[None] | None = None
        self.closing = False


def video_codec(hub: StreamHub) -> str | None:
    if hub.video_header is None:
        return None
    try:
        return flv.parse_video_header(hub.video_header.payload).codec
    except FLVError:
        return None


def audio_codec(hub: StreamHub) -> str | None:
    if hub.audio_header is None:
        return None
    try:
        return flv.parse_audio_header(hub.audio_header.payload).codec
    except FLVError:
        return None


class Recording:
    """Records one hub into one replay until the hub goes away."""

    def __init__(
        self,
        replay: Replay,
        hub: StreamHub,
        config: ReplayConfig,
        storage: ReplayStorage,
        save: Callable[[Replay], Awaitable[None]],
        on_segment: Callable[[Recording], None] | None = None,
    ) -> None:
        self.replay = replay
        self.hub = hub
        self.config = config
        self.storage = storage
        self._save = save
        self._on_segment = on_segment
        self.current: LivePart | None = None
        self.playlists: dict[int, playlist.PartPlaylist] = {}
        self._mtimes: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.stopping = False
        self.last_dts = -1
        """Newest hub timestamp handed to any part's ffmpeg."""
        self._next_reason = "start"
        self._next_start = 0.0
        self._waiting_since: float | None = None
        self.crashes = 0
        self.gave_up = False
        self.cover_pending = False
        self.paused: str | None = None
        """Why recording is paused (``disk``); no part runs meanwhile."""
        self.hub_gone = False
        """The hub went away but the broadcast may continue on a new one (see ``resume``)."""
        self.ending = False
        self.expiry: asyncio.Task[None] | None = None
        self._rendered: tuple[tuple[str, bool, int, int], str] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"replay:{self.hub.key}"
        )

    def wake(self) -> None:
        self._wake.set()

    def suspend(self, reason: str) -> None:
        """The hub is gone, the broadcast is not over: end the part, keep the replay open."""
        self.hub_gone = True
        if self.current is not None:
            self._end_part(self.current, reason)
        self.wake()

    def pause(self, why: str) -> None:
        """Stop writing (ffmpeg ends its part cleanly) until :meth:`unpause`."""
        if self.paused is not None:
            return
        self.paused = self.replay.paused = why
        if self.current is not None:
            self._end_part(self.current, f"paused: {why}")
        if self.replay.parts:
            self._next_reason = "unpaused"
        self.wake()

    def unpause(self) -> None:
        """Record again (a new part, from the next keyframe)."""
        if self.paused is None:
            return
        self.paused = self.replay.paused = None
        if self.replay.parts:
            self._next_reason = "unpaused"
        self.wake()

    def resume(self, hub: StreamHub) -> None:
        """The broadcast continues on a new hub (the publisher came back after the linger)."""
        self.hub = hub
        self.hub_gone = False
        self.last_dts = -1  # a new hub has a new timeline
        self._next_reason = "publisher"
        self._next_start = 0.0
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.wake()

    async def stop(self, reason: str) -> None:
        """End the current part (ffmpeg writes its last segment) and stop recording."""
        self.stopping = True
        self.wake()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.current is not None:
            self._end_part(self.current, reason)
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
        await self._refresh(force=True)

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: recorder step failed", self.hub.key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL)
            self._wake.clear()

    # ------------------------------------------------------------------ the loop

    async def _step(self) -> None:
        part = self.current
        hub = self.hub
        if part is not None:
            reason = ""
            if part.proc.returncode is not None:
                reason = f"ffmpeg exited ({part.proc.returncode})"
            elif part.viewer.closed:
                reason = "ffmpeg fell behind"
            elif part.writer.stale:
                reason = part.writer.reason
            elif hub.publisher is not part.writer.publisher or not hub.live:
                reason = "publisher"
            if reason:
                self._end_part(part, reason)
        await self._refresh()
        if (
            self.current is None
            and not self.stopping
            and not self.gave_up
            and self.paused is None
            and hub.live
        ):
            now = time.monotonic()
            if now >= self._next_start and self._can_start(hub, now):
                await self._start_part()
        else:
            self._waiting_since = None

    def _can_start(self, hub: StreamHub, now: float) -> bool:
        if not hub.gop_valid or not hub.gop:
            return False
        crash = self._next_reason == "restart"
        if not crash and hub.gop[0].dts <= self.last_dts:
            return False  # wait for a GOP the previous part has not seen
        if self._waiting_since is None:
            self._waiting_since = now
        headers_known = (not hub.has_video or hub.video_header is not None) and (
            not hub.has_audio or hub.audio_header is not None
        )
        return headers_known or now - self._waiting_since > HEADER_WAIT

    async def _start_part(self) -> None:
        hub = self.hub
        replay = self.replay
        index = len(replay.parts) + 1
        vcodec, acodec = video_codec(hub), audio_codec(hub)
        exe = commands.pick_exe(self.config.ffmpeg, vcodec)
        part_dir = self.storage.work_dir(replay.id) / f"p{index}"
        await asyncio.to_thread(part_dir.mkdir, parents=True, exist_ok=True)
        args = commands.record(exe, part_dir, self.config.segment_seconds, self.config.segment_type)
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C reaches the server; it ends the recording
        )
        assert proc.stdin is not None  # PIPE requested
        if self.stopping or not hub.live or not hub.gop_valid or not hub.gop:
            proc.stdin.close()
            self._reap(proc, None)
            return
        gop_start = hub.gop[0].dts
        wall_start = time.time() - max(0, hub.last_dts - gop_start) / 1000
        record = PartRecord(
            index=index,
            reason=self._next_reason,
            wall_start=wall_start,
            video_codec=vcodec,
            audio_codec=acodec,
            exe=exe,
        )
        writer = PipeWriter(hub, proc.stdin.transport, self.wake)
        viewer = Viewer(
            writer,
            HTTP_FLV_10,
            ViewerInfo("record", f"ffmpeg:{proc.pid}"),
            on_close=lambda _reason: self.wake(),
        )
        part = LivePart(record, proc, writer, viewer)
        part.stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr(part))
        replay.parts.append(record)
        self.current = part
        self._waiting_since = None
        hub.add_viewer(viewer, hub.flv_prelude(HTTP_FLV_10))
        viewer.max_backlog = self.config.max_backlog_bytes
        logger.info(
            "%s: recording part %d of %s (%s, video %s, audio %s) with %s",
            hub.key,
            index,
            replay.id,
            record.reason,
            vcodec,
            acodec,
            Path(exe).name,
        )
        await self._save(replay)

    def _end_part(self, part: LivePart, reason: str) -> None:
        if part.closing:
            return
        part.closing = True
        if self.current is part:
            self.current = None
        part.viewer.close("recording part ended")
        self.last_dts = max(self.last_dts, part.writer.last_dts)
        part.record.ended = time.time()
        part.record.end_reason = reason
        crashed = part.proc.returncode is not None or reason == "ffmpeg fell behind"
        if crashed and not self.stopping:
            self.crashes += 1
            backoff = min(MAX_BACKOFF, self.config.restart_backoff * 2 ** (self.crashes - 1))
            self._next_start = time.monotonic() + backoff
            self._next_reason = "restart"
            tail = " | ".join(part.stderr_tail)
            logger.warning(
                "%s: recorder ffmpeg part %d ended: %s; restarting in %.1fs%s",
                self.hub.key,
                part.record.index,
                reason,
                backoff,
                f" (ffmpeg said: {tail})" if tail else "",
            )
            if self.crashes > self.config.max_restarts:
                self.gave_up = True
                logger.error("%s: recorder gave up after %d crashes", self.hub.key, self.crashes)
        else:
            self._next_reason = "codec" if reason == "codec" else "publisher"
            logger.info("%s: recording part %d ended: %s", self.hub.key, part.record.index, reason)
        kill = reason == "ffmpeg fell behind"
        self._reap(part.proc, part, kill=kill)

    def _reap(
        self, proc: asyncio.subprocess.Process, part: LivePart | None, kill: bool = False
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._close_proc(proc, part, kill))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_proc(
        self, proc: asyncio.subprocess.Process, part: LivePart | None, kill: bool
    ) -> None:
        if proc.returncode is None:
            if kill:
                proc.kill()
            elif proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                logger.warning("%s: recorder ffmpeg did not finish; killed", self.hub.key)
                proc.kill()
                await proc.wait()
        if part is not None:
            if part.stderr_task is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(part.stderr_task, 2)
            await self._refresh(force=True)
            await self._save(self.replay)

    async def _drain_stderr(self, part: LivePart) -> None:
        stream = part.proc.stderr
        if stream is None:
            return
        while True:
            try:
                line = await stream.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            text = line.decode("utf-8", "replace").strip()
            if text:
                part.stderr_tail.append(text[:300])
                logger.debug("%s ffmpeg: %s", self.hub.key, text)

    # ------------------------------------------------------------------ playlists

    async def _refresh(self, force: bool = False) -> None:
        """Re-read the playlists ffmpeg changed (the current part, parts being closed)."""
        base = self.storage.work_dir(self.replay.id)
        open_parts = [p for p in self.replay.parts if p.ended is None or force]
        if not force:
            open_parts += [
                p for p in self.replay.parts if p.ended is not None and p.index not in self._mtimes
            ]
        if not open_parts:
            return
        changed = await asyncio.to_thread(_read_changed, base, open_parts, dict(self._mtimes))
        grew = False
        for index, (mtime, pl) in changed.items():
            self._mtimes[index] = mtime
            old = self.playlists.get(index)
            if old is None or len(old.segments) != len(pl.segments):
                grew = True
            self.playlists[index] = pl
            for part in self.replay.parts:
                if part.index == index:
                    part.duration = pl.duration
        if grew and self._on_segment is not None:
            self._on_segment(self)

    def render(self, prefix: str) -> str:
        """The live playlist; rebuilt only when a segment or part was added (every viewer
        polls it every few seconds, and a long show has thousands of segments)."""
        ended = self.stopping and self.current is None
        key = (prefix, ended, len(self.replay.parts), self.segment_count)
        cached = self._rendered
        if cached is not None and cached[0] == key:
            return cached[1]
        parts = [
            (p.dir, self.playlists.get(p.index, playlist.PartPlaylist())) for p in self.replay.parts
        ]
        text = playlist.render(
            parts, target=self.config.segment_seconds, ended=ended, vod=False, prefix=prefix
        )
        self._rendered = (key, text)
        return text

    @property
    def segment_count(self) -> int:
        return sum(len(p.segments) for p in self.playlists.values())


def _read_changed(
    base: Path, parts: list[PartRecord], mtimes: dict[int, float]
) -> dict[int, tuple[float, playlist.PartPlaylist]]:
    out: dict[int, tuple[float, playlist.PartPlaylist]] = {}
    for part in parts:
        path = base / part.dir / "index.m3u8"
        try:
            mtime = path.stat().st_mtime
            if mtimes.get(part.index) == mtime:
                continue
            out[part.index] = (mtime, playlist.parse(path.read_text("utf-8")))
        except OSError:
            continue
    return out
