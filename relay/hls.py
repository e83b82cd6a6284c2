"""LL-HLS packaging by the hub: one :class:`HlsPackager` per stream someone asks HLS for.

The packager is an internal consumer of its hub (a :class:`relay.hub.Viewer` of protocol
``hls``, counted as a consumer, not a viewer): the hub hands it the same frame batches it
writes to FLV viewers; it feeds them to a :class:`media.fmp4.PartCutter` (parts within
``PART-TARGET``, segments at keyframes) and the parts to a
:class:`relay.hls_playlist.LivePlaylist` (a sliding window in memory). Nothing is
encoded per HLS client: a playlist, part or segment request reads what is there.

When: an origin packages every live stream from its first frame (``hls_package_always``).
Otherwise (edges, or the option off) the first HLS request attaches the packager, which
starts from the hub's GOP cache (its cached frames are cut at once, so the first playlist
already holds the current GOP); it detaches ``hls_idle_timeout`` seconds after the last
HLS request. An edge packages from its own hub the same way (the first
request starts the edge's pull; the packager, a hub consumer, keeps it going).

Blocking playlist reload (``_HLS_msn`` / ``_HLS_part``): a request waits on a future
resolved when the part it names exists, bounded in time (``block_timeout``) and in number
(per stream and in total: over either, 503 at once).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from typing import Any

from media.fmp4 import PartCutter
from media.frame import Frame, Kind
from relay.config import RelayConfig
from relay.hls_playlist import LivePlaylist
from relay.hls_viewers import HlsAudience, client_key
from relay.hub import (
    Batch,
    NullTransport,
    Publisher,
    StreamHub,
    StreamRegistry,
    Viewer,
    ViewerInfo,
)

logger = logging.getLogger(__name__)

__all__ = ["HlsPackager", "HlsService", "TooManyWaiters"]


class TooManyWaiters(Exception):
    """A blocking request over the per-stream or total cap."""


class _Sink(Viewer):
    """The hub's hook: batches of frames go to the packager instead of a socket."""

    __slots__ = ("packager",)

    def __init__(self, packager: HlsPackager) -> None:
        super().__init__(NullTransport(), _HLS_FORMAT, ViewerInfo("hls"))
        self.packager = packager

    def deliver(self, batch: Batch, drop_after: int) -> None:
        frames = batch.frames
        if self.skip_pending:
            skip, self.skip_pending = self.skip_pending, 0
            frames = frames[skip:]
            key = batch.key_index - skip if batch.key_index >= skip else -1
        else:
            key = batch.key_index
        if self.waiting_keyframe:
            # Sequence headers and metadata pass (a packager attached before the stream's
            # first frame needs them); media waits for the first keyframe.
            head = [
                f
                for f in (frames if key < 0 else frames[:key])
                if f.header or f.kind == Kind.SCRIPT
            ]
            if key < 0:
                self.packager.push(head)
                return
            self.waiting_keyframe = False
            frames = head + frames[key:]
        try:
            self.packager.push(frames)
        except Exception:
            # Never let packaging break the hub's fan-out to the other viewers: this
            # stream's packaging stops (the next HLS request starts it afresh).
            logger.exception("hls: packaging %s failed; stopped", self.packager.hub.key)
            self.packager.close()


class _HlsFormat:
    """Placeholder format of the sink (the sink never asks a batch to encode)."""

    uses_flv = False
    name = "hls"

    def encode(self, frames: list[Frame], raw: bytes | None) -> bytes:  # pragma: no cover
        return b""


_HLS_FORMAT: Any = _HlsFormat()


class HlsPackager:
    """One stream's packager: cutter, playlist, blocking-reload waiters."""

    def __init__(self, service: HlsService, hub: StreamHub) -> None:
        cfg = service.config
        self.service = service
        self.hub = hub
        self.cutter = PartCutter(
            part_target=cfg.hls_part_target,
            segment_target=cfg.hls_segment_target,
            segment_max=cfg.hls_segment_max,
        )
        self.playlist = LivePlaylist(
            name=hub.name,
            token=secrets.token_hex(4),
            part_target=cfg.hls_part_target,
            segment_max=cfg.hls_segment_max,
            window=cfg.hls_window,
        )
        self.block_timeout = cfg.hls_block_timeout or 3.0 * self.playlist.target_duration
        self.waiters: list[tuple[int, int | None, asyncio.Future[None]]] = []
        self.last_request = time.monotonic()
        self.cpu_seconds = 0.0
        """Thread CPU time spent cutting (for the figures and the benchmark)."""
        self._publisher: Publisher | None = hub.publisher
        self._takeover = False
        self._sink = _Sink(self)
        self.closed = False

    def start(self) -> None:
        """Attach to the hub, starting from its GOP cache (a warm start)."""
        hub = self.hub
        frames, ok = hub.prelude_frames()
        # The cached frames arrived up to a GOP ago: anchor the wall clock on the newest.
        self.push(frames, now=time.time())
        hub.add_viewer(self._sink, None)
        self._sink.waiting_keyframe = not ok

    def push(self, frames: list[Frame], now: float | None = None) -> None:
        if self.closed or not frames:
            return
        t0 = time.thread_time()
        now = time.time() if now is None else now
        playlist = self.playlist
        before = playlist.parts_total
        pub = self.hub.publisher
        if pub is not None and pub is not self._publisher:
            # A new publisher (takeover, reconnect). The hub drops its frames until its
            # first keyframe, so what comes before a header or keyframe is the old one's
            # tail: the discontinuity goes where the new publisher's media starts.
            self._publisher = pub
            self._takeover = True
        for frame in frames:
            if self._takeover and (frame.header or frame.keyframe or not self.hub.has_video):
                self._takeover = False
                for cut in self.cutter.finish():  # the old publisher's tail
                    playlist.add(cut.part, cut.new_segment, now)
                playlist.mark_discontinuity()
            for cut in self.cutter.push(frame):
                playlist.add(cut.part, cut.new_segment, now)
        self.cpu_seconds += time.thread_time() - t0
        if playlist.parts_total != before:
            self._wake()

    def finish(self, now: float | None = None) -> None:
        """The publisher left: the parts left in the muxer, then the segment closes."""
        now = time.time() if now is None else now
        for cut in self.cutter.finish():
            self.playlist.add(cut.part, cut.new_segment, now)
        self.playlist.close_segment()
        self._wake()

    # ------------------------------------------------------------ blocking reload

    async def wait_for(self, msn: int, part: int | None) -> bool:
        """Wait until the playlist holds (msn, part); False on timeout or close."""
        if self.playlist.has(msn, part):
            return True
        self.service.reserve_waiter(self)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (msn, part, fut)
        self.waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.block_timeout)
        except TimeoutError:
            pass
        finally:
            self.waiters.remove(entry)
            self.service.release_waiter()
        return self.playlist.has(msn, part)

    def _wake(self) -> None:
        if not self.waiters:
            return
        playlist = self.playlist
        for msn, part, fut in self.waiters:
            if not fut.done() and (self.closed or playlist.has(msn, part)):
                fut.set_result(None)

    def touch(self) -> None:
        self.last_request = time.monotonic()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._sink.close("hls packaging stopped")
        self._wake()


class HlsService:
    """The packagers of this node, their caps and their idle clock."""

    def __init__(self, registry: StreamRegistry, config: RelayConfig) -> None:
        self.registry = registry
        self.config = config
        self.packagers: dict[str, HlsPackager] = {}
        self.waiting = 0
        self.always = False
        """Package every stream of this node from its creation (origins, see
        ``RelayConfig.hls_package_always``), never stopped for idleness."""
        self._idle_task: asyncio.Task[None] | None = None
        registry.hub_listeners.append(self._on_hub)
        target = max(1, math.floor(config.hls_segment_max + config.hls_part_target + 0.5))
        self.audience = HlsAudience(window=2 * target)
        """HLS viewers: client keys seen in the last two target durations."""
        registry.viewer_counters.append(self._count)

    def seen(self, hub: StreamHub, remote: str | None, user_agent: str | None) -> None:
        """A playlist, part or segment request of ``hub`` by this client."""
        self.audience.see(hub.key, client_key(remote, user_agent))

    def _count(self, hub: StreamHub) -> dict[str, int]:
        return {"hls": self.audience.count(hub.key)}

    def package_always(self, on: bool) -> None:
        """Called once the node's role is known (origins: the config's choice)."""
        self.always = on
        if on:
            for hub in list(self.registry.hubs.values()):
                self.ensure(hub)

    def packager(self, hub: StreamHub) -> HlsPackager | None:
        pkg = self.packagers.get(hub.key)
        if pkg is not None and pkg.hub is hub and not pkg.closed:
            return pkg
        return None

    def ensure(self, hub: StreamHub) -> HlsPackager:
        """The stream's packager, attached now if it was not (requires a live hub)."""
        pkg = self.packager(hub)
        if pkg is None:
            old = self.packagers.pop(hub.key, None)
            if old is not None:
                old.close()
            pkg = self.packagers[hub.key] = HlsPackager(self, hub)
            pkg.start()
            logger.info("hls: packaging %s", hub.key)
            if self._idle_task is None and not self.always:
                self._idle_task = asyncio.create_task(self._idle_loop())
        pkg.touch()
        return pkg

    def reserve_waiter(self, pkg: HlsPackager) -> None:
        cfg = self.config
        if self.waiting >= cfg.hls_max_waiters or len(pkg.waiters) >= cfg.hls_max_waiters_stream:
            raise TooManyWaiters
        self.waiting += 1

    def release_waiter(self) -> None:
        self.waiting -= 1

    def _on_hub(self, hub: StreamHub, what: str) -> None:
        if what == "created" and self.always:
            self.ensure(hub)  # before its publisher attaches: it starts at the first keyframe
        elif what == "removed":
            self.audience.forget(hub.key)
            pkg = self.packager(hub)
            if pkg is not None:
                del self.packagers[hub.key]
                pkg.close()

    async def _idle_loop(self) -> None:
        idle = self.config.hls_idle_timeout
        while self.packagers:
            await asyncio.sleep(max(0.5, idle / 4))
            now = time.monotonic()
            for key, pkg in list(self.packagers.items()):
                if pkg.closed:
                    self.packagers.pop(key, None)
                elif not self.always and now - pkg.last_request > idle and not pkg.waiters:
                    logger.info("hls: nobody asked for %s for %.0fs; stop packaging", key, idle)
                    self.packagers.pop(key, None)
                    pkg.close()
        self._idle_task = None

    def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        for pkg in self.packagers.values():
            pkg.close()
        self.packagers.clear()
        if self._on_hub in self.registry.hub_listeners:
            self.registry.hub_listeners.remove(self._on_hub)
        if self._count in self.registry.viewer_counters:
            self.registry.viewer_counters.remove(self._count)

    def stats(self) -> dict[str, Any]:
        return {
            "streams": len(self.packagers),
            "waiting": self.waiting,
            "viewers": sum(self.audience.counts().values()),
            "cpu_seconds": round(sum(p.cpu_seconds for p in self.packagers.values()), 6),
        }
