"""The replay service: starts a recording per live hub, finalises replays, keeps the index,
maps product cards to clips and applies retention.

Hooks: ``StreamRegistry.hub_listeners`` (a hub is created / removed: a broadcast session
begins / ends after the publisher linger), and bus events ``stream.*`` (wake the
recorder at once), ``broadcast.*`` (which broadcast a stream belongs to, and whether its
replay is wanted), ``card.pushed`` / ``card.cleared`` (product clips). It publishes
``replay.ready`` and ``replay.clip``.

Length: one idea, the replay's lifecycle across events (stream up/down, broadcast state,
cards, disk pauses); recording, storage, finalising and the HTTP side are their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from control.events import BroadcastEvent
from core.bus import Event, EventBus
from ingest.events import StreamPublished, StreamUnpublished
from relay.hub import StreamHub, StreamRegistry
from replay import commands, finalize
from replay.broadcasts import WITHHELD_STATES, BroadcastStates
from replay.config import ReplayConfig
from replay.events import ReplayClip, ReplayReady
from replay.model import Card, Replay, ReplayState
from replay.recorder import Recording
from replay.storage import ReplayStorage

logger = logging.getLogger(__name__)

LIVE_TAIL = 60.0
"""Seconds a finished recording stays findable by ``live_recording`` after the end (the
live ``/APP/STREAM.m3u8`` is the relay's LL-HLS now, see docs/hls.md)."""
MAX_CARDS = 2000
"""Cards remembered per replay."""


CONTINUING = frozenset({"scheduled", "live", "interrupted"})
"""Broadcast states in which a publisher may still come back."""


@dataclass
class BroadcastInfo:
    broadcast_id: int | None
    replay: bool
    state: str = ""


class ReplayService:
    def __init__(
        self,
        config: ReplayConfig,
        storage: ReplayStorage,
        registry: StreamRegistry,
        bus: EventBus,
        base_url: Callable[[], str],
        broadcast_states: BroadcastStates | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.registry = registry
        self.bus = bus
        self.base_url = base_url
        self.replays: dict[str, Replay] = {}
        self.recordings: dict[str, Recording] = {}
        """By ``app/stream``: the recording in progress, or just ended (live tail)."""
        self._ended_at: dict[str, float] = {}
        self.broadcasts: dict[str, BroadcastInfo] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsub: list[Callable[[], None]] = []
        self._save_locks: dict[str, asyncio.Lock] = {}
        self._stopping = False
        self._finalizing = asyncio.Semaphore(max(1, config.finalize_concurrency))
        self.broadcast_states = broadcast_states
        self.recording_paused: str | None = None
        """Why every recording is paused (``disk``), or None."""
        self.disk_free: int | None = None
        """Free bytes on the recording filesystem at the last check."""
        self.disk_floor = 0
        self._state_seen: dict[int, tuple[float, str | None]] = {}
        """broadcast id -> (monotonic time read, state or None = no record) from control."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for data in await self.storage.load_manifests():
            try:
                rep = Replay.from_dict(data)
            except (TypeError, ValueError, KeyError) as exc:
                logger.warning("ignoring unreadable replay record %s: %s", data.get("id"), exc)
                continue
            self.replays[rep.id] = rep
        unfinished = [
            r
            for r in self.replays.values()
            if r.state in (ReplayState.RECORDING, ReplayState.FINALIZING)
        ]
        for rep in unfinished:
            logger.warning("replay %s was left %s: finalising it", rep.id, rep.state.value)
            self._spawn(self._finalize(rep))
        self.registry.hub_listeners.append(self._on_hub)
        self._unsub.append(
            self.bus.on_each(
                {StreamPublished: self._on_stream_event, StreamUnpublished: self._on_stream_event}
            )
        )
        self._unsub.append(self.bus.on(BroadcastEvent, self._on_broadcast_event))
        # raw, read leniently: only card_id, product_id, room/broadcast_id and the times
        # matter here (shop_bridge.events.CardEvent requires every field of the card)
        self._unsub.append(self.bus.subscribe("card.*", self._on_card_event))
        await self.check_disk()
        self._spawn(self._disk_loop())
        for hub in list(self.registry.hubs.values()):
            self._on_hub(hub, "created")
        if self.config.max_age_days > 0 or self.config.max_total_bytes > 0:
            self._spawn(self._retention_loop())

    async def stop(self) -> None:
        """Server shutdown: ffmpeg writes its last segment; the replay stays ``recording``
        and is finalised on the next start."""
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.registry.hub_listeners.remove(self._on_hub)
        for unsub in self._unsub:
            unsub()
        recs = [r for r in self.recordings.values() if r.replay.state is ReplayState.RECORDING]
        await asyncio.gather(*(r.stop("server shutting down") for r in recs))
        for rec in recs:
            await self.save(rec.replay)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def save(self, replay: Replay) -> None:
        lock = self._save_locks.setdefault(replay.id, asyncio.Lock())
        async with lock:
            await self.storage.save_manifest(replay.id, replay.to_dict())

    # ------------------------------------------------------------------ recordings

    def wants(self, app: str, stream: str) -> bool:
        if self.config.apps and app not in self.config.apps:
            return False
        info = self.broadcasts.get(f"{app}/{stream}")
        return info is None or info.replay

    def _on_hub(self, hub: StreamHub, what: str) -> None:
        if self._stopping:
            return
        if what == "created":
            if not self.wants(hub.app, hub.name):
                return
            old = self.recordings.get(hub.key)
            if old is not None and old.hub_gone and not old.ending:
                if self._continues(old):
                    logger.info(
                        "%s: broadcast continues: replay %s resumes", hub.key, old.replay.id
                    )
                    old.resume(hub)
                    return
                self._spawn(self._end(old))  # another broadcast now: close the old one
            rep = Replay(id=Replay.new_id(), app=hub.app, stream=hub.name)
            rep.segment_type = self.config.segment_type
            info = self.broadcasts.get(hub.key)
            if info is not None and (info.state in CONTINUING or not info.state):
                rep.broadcast_id = info.broadcast_id  # (an ended one is a past broadcast)
            self.replays[rep.id] = rep
            rec = Recording(rep, hub, self.config, self.storage, self.save, self._on_segment)
            self.recordings[hub.key] = rec
            self._ended_at.pop(hub.key, None)
            rec.start()
            if self.recording_paused is not None:
                rec.pause(self.recording_paused)
            logger.info("%s: recording replay %s", hub.key, rep.id)
        elif what == "removed":
            ended = self.recordings.get(hub.key)
            if ended is not None and ended.hub is hub:
                if self._continues(ended):
                    self._suspend(ended)
                else:
                    self._spawn(self._end(ended))

    def _continues(self, rec: Recording) -> bool:
        """Is ``rec``'s broadcast known and not over (its publisher may come back)?"""
        info = self.broadcasts.get(rec.hub.key)
        return (
            info is not None
            and rec.replay.broadcast_id is not None
            and info.broadcast_id == rec.replay.broadcast_id
            and info.state in CONTINUING
        )

    def _suspend(self, rec: Recording) -> None:
        logger.info(
            "%s: stream gone, broadcast %s not ended: replay %s stays open up to %.0fs",
            rec.hub.key,
            rec.replay.broadcast_id,
            rec.replay.id,
            self.config.resume_window,
        )
        rec.suspend("publisher gone")

        async def expire() -> None:
            await asyncio.sleep(self.config.resume_window)
            if rec.hub_gone:
                await self._end(rec)

        rec.expiry = self._spawn(expire())

    async def _end(self, rec: Recording) -> None:
        if rec.ending:
            return
        rec.ending = True
        if rec.expiry is not None and rec.expiry is not asyncio.current_task():
            rec.expiry.cancel()
        key = rec.hub.key
        await rec.stop("broadcast ended")
        if self.recordings.get(key) is rec:
            self._ended_at[key] = time.monotonic()
        await self._finalize(rec.replay)
        await asyncio.sleep(LIVE_TAIL)
        if self.recordings.get(key) is rec:  # no new session of this stream meanwhile
            del self.recordings[key]
            self._ended_at.pop(key, None)

    def _on_segment(self, rec: Recording) -> None:
        rep = rec.replay
        if rep.cover is None and rep.segment_type != "fmp4" and not rec.cover_pending:
            part = next((p for p in rep.parts if rec.playlists.get(p.index)), None)
            if part is None or part.video_codec is None:
                return
            pl = rec.playlists[part.index]
            if not pl.segments:
                return
            rec.cover_pending = True
            self._spawn(self._live_cover(rec, part.dir, pl.segments[0].uri, part.exe))

    async def _live_cover(self, rec: Recording, part_dir: str, seg: str, exe: str) -> None:
        root = self.storage.work_dir(rec.replay.id)
        args = commands.snapshot(exe, root / part_dir / seg, root / finalize.COVER_FILE)
        code, _out, tail = await finalize.run(args, self.config.process_timeout)
        if code == 0:
            rec.replay.cover = finalize.COVER_FILE
            await self.save(rec.replay)
        else:
            logger.warning("replay %s: cover failed: %s", rec.replay.id, tail)

    async def _finalize(self, rep: Replay) -> None:
        rep.state = ReplayState.FINALIZING
        rep.ended = rep.ended or time.time()
        await self.save(rep)
        root = self.storage.work_dir(rep.id)
        try:
            async with self._finalizing:
                await finalize.finalize(rep, root, self.config)
        except finalize.StepFailed as exc:
            if not any(p.duration > 0 for p in rep.parts):
                # the publisher left before a single segment: nothing worth listing
                logger.info(
                    "replay %s of %s/%s: nothing recorded; removed", rep.id, rep.app, rep.stream
                )
                self.replays.pop(rep.id, None)
                await self.storage.delete(rep.id)
                return
            rep.state = ReplayState.FAILED
            rep.error = str(exc)
            rep.size = await self.storage.size(rep.id)
            await self.save(rep)
            logger.warning("replay %s of %s/%s: %s", rep.id, rep.app, rep.stream, exc)
            return
        except Exception as exc:
            logger.exception("replay %s: finalising failed", rep.id)
            rep.state = ReplayState.FAILED
            rep.error = f"finalising failed: {exc}"
            await self.save(rep)
            return
        rep.size = await self.storage.size(rep.id)
        await self.storage.publish(rep.id)
        rep.state = ReplayState.READY
        await self.save(rep)
        view = self.view(rep)
        logger.info(
            "replay %s of %s/%s ready: %.1fs, %d parts, %d bytes, %d clips",
            rep.id,
            rep.app,
            rep.stream,
            rep.duration,
            len([p for p in rep.parts if p.duration > 0]),
            rep.size,
            len(rep.clips),
        )
        clips = view["clips"]
        await self.bus.emit(
            ReplayReady(
                rep.app,
                rep.stream,
                broadcast_id=rep.broadcast_id,
                replay_id=rep.id,
                url=view["hls"],
                hls=view["hls"],
                mp4=view["mp4"],
                cover=view["cover"],
                duration=rep.duration,
                size=rep.size,
                codecs=rep.codecs,
                clips=tuple(clips),
            ),
            *(
                ReplayClip(
                    rep.app,
                    rep.stream,
                    broadcast_id=rep.broadcast_id,
                    replay_id=rep.id,
                    card_id=clip["card_id"],
                    product_id=clip["product_id"],
                    start=clip["start"],
                    duration=clip["duration"],
                    url=clip["url"],
                )
                for clip in clips
            ),
        )

    # ------------------------------------------------------------------ events

    def _on_stream_event(self, event: StreamPublished | StreamUnpublished) -> None:
        key = f"{event.app}/{event.stream}"
        rec = self.recordings.get(key)
        if rec is not None:
            rec.wake()

    def _on_broadcast_event(self, event: BroadcastEvent) -> None:
        app, stream = event.app, event.stream
        if not isinstance(app, str) or not isinstance(stream, str):
            return
        bid: Any = event.broadcast_id if event.broadcast_id is not None else event.id
        bid = bid if isinstance(bid, int) and not isinstance(bid, bool) else None
        settings = event.settings
        wanted = not (isinstance(settings, dict) and settings.get("replay") is False)
        key = f"{app}/{stream}"
        state = event.state if isinstance(event.state, str) else ""
        if not state:
            state = event.topic.split(".", 1)[1]
        if bid is not None:
            deleted = event.topic == "broadcast.deleted"
            if deleted or state in WITHHELD_STATES:
                self._state_seen[bid] = (time.monotonic(), None if deleted else state)
                for rep in list(self.replays.values()):
                    if rep.broadcast_id == bid:
                        self._withhold(rep, "deleted" if deleted else state)
        if event.topic == "broadcast.deleted":
            self.broadcasts.pop(key, None)
            return
        self.broadcasts[key] = BroadcastInfo(bid, wanted, str(state))
        rec = self.recordings.get(key)
        if rec is None or rec.replay.state is not ReplayState.RECORDING or rec.ending:
            return
        if rec.replay.broadcast_id is None and bid is not None and not rec.hub_gone:
            rec.replay.broadcast_id = bid
        if rec.replay.broadcast_id != bid:
            return
        if not wanted or state == "banned":
            logger.info("%s: broadcast %s is %s: replay dropped", key, bid, state or "replay-off")
            self.recordings.pop(key, None)
            self._spawn(self._drop(rec))
        elif rec.hub_gone and state not in CONTINUING:
            self._spawn(self._end(rec))  # ended while the stream was gone: finalise now

    async def _drop(self, rec: Recording) -> None:
        rec.ending = True
        if rec.expiry is not None:
            rec.expiry.cancel()
        await rec.stop("replay disabled")
        self.replays.pop(rec.replay.id, None)
        await self.storage.delete(rec.replay.id)

    def _withhold(self, rep: Replay, reason: str) -> None:
        """``rep``'s broadcast is banned or deleted: no public URL serves it from now on."""
        if rep.withheld is not None:
            return
        rep.withheld = reason
        logger.info(
            "replay %s of %s/%s withheld: broadcast %s %s",
            rep.id,
            rep.app,
            rep.stream,
            rep.broadcast_id,
            reason,
        )
        if self.replays.get(rep.id) is rep:
            self._spawn(self.save(rep))

    async def public(self, reps: list[Replay]) -> list[Replay]:
        """The replays of ``reps`` that may be served publicly: not withheld, and whose
        broadcast control's records (read at most ``broadcast_check_interval`` ago) do not
        show banned or deleted (an event may have been missed, e.g. this node was down)."""
        now = time.monotonic()
        ttl = self.config.broadcast_check_interval
        stale = {
            r.broadcast_id
            for r in reps
            if r.withheld is None
            and r.broadcast_id is not None
            and (
                r.broadcast_id not in self._state_seen
                or now - self._state_seen[r.broadcast_id][0] > ttl
            )
        }
        if stale and self.broadcast_states is not None:
            try:
                found = await self.broadcast_states(sorted(stale))
            except Exception as exc:  # control's tables not there (yet): events decide
                logger.warning("replay: cannot read broadcast states: %s", exc)
            else:
                now = time.monotonic()
                for bid in stale:
                    self._state_seen[bid] = (now, found.get(bid))
        out: list[Replay] = []
        for rep in reps:
            if rep.withheld is None and rep.broadcast_id is not None:
                seen = self._state_seen.get(rep.broadcast_id)
                if seen is not None and seen[1] is None:
                    self._withhold(rep, "deleted")
                elif seen is not None and seen[1] in WITHHELD_STATES:
                    self._withhold(rep, str(seen[1]))
            if rep.withheld is None:
                out.append(rep)
        return out

    async def is_public(self, rep: Replay) -> bool:
        return bool(await self.public([rep]))

    def _recording_for_card(self, data: dict[str, Any]) -> Recording | None:
        room = data.get("room")
        if isinstance(room, str) and room in self.recordings:
            return self.recordings[room]
        bid = data.get("broadcast_id")
        for rec in self.recordings.values():
            if bid is not None and str(rec.replay.broadcast_id) == str(bid):
                return rec
        return None

    def _on_card_event(self, event: Event) -> None:
        data = event.data
        rec = self._recording_for_card(data)
        if rec is None or rec.replay.state is not ReplayState.RECORDING:
            return
        cards = rec.replay.cards
        ts = data.get("ts")
        if not isinstance(ts, int | float):
            return
        card_id = data.get("card_id") if isinstance(data.get("card_id"), int) else None
        if event.topic == "card.pushed":
            if len(cards) >= MAX_CARDS:
                return
            product = data.get("product_id") if isinstance(data.get("product_id"), int) else None
            pushed = data.get("pushed_ts", ts)
            cards.append(
                Card(card_id, product, float(pushed if isinstance(pushed, int | float) else ts))
            )
        elif event.topic == "card.cleared":
            for card in reversed(cards):
                if card.cleared is None and (card_id is None or card.card_id == card_id):
                    card.cleared = float(ts)
                    break
        self._spawn(self.save(rec.replay))  # a server crash must not lose the cards

    # ------------------------------------------------------------------ queries

    def live_recording(self, app: str, stream: str) -> Recording | None:
        key = f"{app}/{stream}"
        rec = self.recordings.get(key)
        if rec is None:
            return None
        ended = self._ended_at.get(key)
        if ended is not None and time.monotonic() - ended > LIVE_TAIL:
            return None
        return rec

    def file_url(self, rep: Replay, name: str | None) -> str | None:
        if name is None:
            return None
        external = self.storage.url(rep.id, name)
        if external is not None:
            return external
        return f"{self.base_url()}/{rep.app}/{rep.stream}/{rep.id}/{name}"

    def view(self, rep: Replay) -> dict[str, Any]:
        recording = rep.state is ReplayState.RECORDING
        hls = (
            f"{self.base_url()}/{rep.app}/{rep.stream}.m3u8"
            if recording
            else self.file_url(rep, finalize.VOD_PLAYLIST)
            if rep.state is ReplayState.READY or rep.duration > 0
            else None
        )
        recorded = [p for p in rep.parts if p.duration > 0 or p.ended is None]
        return {
            "id": rep.id,
            "app": rep.app,
            "stream": rep.stream,
            "broadcast_id": rep.broadcast_id,
            "state": rep.state.value,
            "created": rep.created,
            "ended": rep.ended,
            "duration": rep.duration
            if not recording
            else round(sum(p.duration for p in rep.parts), 3),
            "size": rep.size,
            "codecs": rep.codecs,
            "parts": len(recorded),
            "hls": hls,
            "mp4": self.file_url(rep, rep.mp4),
            "cover": self.file_url(rep, rep.cover),
            "thumbnails": self.file_url(rep, rep.sprites),
            "clips": [
                {
                    "card_id": c.card_id,
                    "product_id": c.product_id,
                    "start": c.start,
                    "duration": c.duration,
                    "url": self.file_url(rep, c.file),
                }
                for c in rep.clips
            ],
            "error": rep.error,
            "paused": rep.paused if recording else None,
        }

    async def delete(self, replay_id: str) -> None:
        rep = self.replays.pop(replay_id)
        for key, rec in list(self.recordings.items()):
            if rec.replay is rep:
                del self.recordings[key]
        await self.storage.delete(replay_id)
        logger.info("replay %s of %s/%s deleted", rep.id, rep.app, rep.stream)

    # ------------------------------------------------------------------ disk space

    async def _disk_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.disk_check_interval)
            try:
                await self.check_disk()
            except Exception:
                logger.exception("replay free-space check failed")

    async def check_disk(self) -> None:
        """Pause every recording while free space on the recording filesystem is below
        the floor (``min_free_bytes`` / ``min_free_percent``); resume when it is back. The
        database and Redis's append-only file usually share that filesystem: recordings
        must not be what fills it."""
        got = await self.storage.disk_space()
        if got is None:
            return
        free, size = got
        floor = max(self.config.min_free_bytes, int(size * self.config.min_free_percent / 100))
        self.disk_free, self.disk_floor = free, floor
        low = floor > 0 and free < floor
        if low and self.recording_paused is None:
            self.recording_paused = "disk"
            logger.error(
                "replay: %d MiB free on the recording disk, below the floor of %d MiB: "
                "recording paused (replays keep what they have)",
                free >> 20,
                floor >> 20,
            )
        elif not low and self.recording_paused == "disk":
            self.recording_paused = None
            logger.warning(
                "replay: %d MiB free on the recording disk again (floor %d MiB): recording resumes",
                free >> 20,
                floor >> 20,
            )
        for rec in list(self.recordings.values()):
            if rec.ending or rec.replay.state is not ReplayState.RECORDING:
                continue
            before = rec.paused
            if self.recording_paused is not None:
                rec.pause(self.recording_paused)
            else:
                rec.unpause()
            if rec.paused != before:
                self._spawn(self.save(rec.replay))

    # ------------------------------------------------------------------ retention

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.apply_retention()
            except Exception:
                logger.exception("replay retention sweep failed")
            await asyncio.sleep(self.config.retention_interval)

    async def apply_retention(self, now: float | None = None) -> list[str]:
        """Delete finished replays past ``max_age_days``, then the oldest finished ones
        while the total exceeds ``max_total_bytes``. Returns the ids deleted."""
        now = time.time() if now is None else now
        done = (ReplayState.READY, ReplayState.FAILED)
        finished = sorted(
            (r for r in self.replays.values() if r.state in done), key=lambda r: r.created
        )
        deleted: list[str] = []
        if self.config.max_age_days > 0:
            limit = now - self.config.max_age_days * 86400
            for rep in finished:
                if (rep.ended or rep.created) < limit:
                    deleted.append(rep.id)
        if self.config.max_total_bytes > 0:
            total = 0
            for rep in list(self.replays.values()):
                if rep.id in deleted:
                    continue
                if rep.state in done:
                    total += rep.size
                else:  # recording or finalising: counts, on disk so far; never deleted
                    total += max(rep.size, await self.storage.size(rep.id))
            for rep in finished:
                if total <= self.config.max_total_bytes:
                    break
                if rep.id not in deleted:
                    deleted.append(rep.id)
                    total -= rep.size
        for rid in deleted:
            if rid in self.replays:
                await self.delete(rid)
        if deleted:
            logger.info("replay retention deleted %d replay(s)", len(deleted))
        return deleted
