"""Broadcasts: storing them, the lifecycle applied to them, push keys and reminders
(the record types themselves are in :mod:`control.broadcast_model`).

Every state change goes through :meth:`BroadcastService.apply`: the move is checked
against :mod:`control.lifecycle`, written with a compare-and-set on the stored state (so
two nodes receiving the same ingest event never both apply it), logged in
``control_transitions`` with its time, and published on the bus as
``broadcast.<new state>``.

A broadcast publishes to ``<stream_app>/b<id>`` (``live/b42``). Its push key version
lives in the database and in the Redis hash :data:`ingest.auth.KEY_VERSIONS`, which
ingest checks on every publish; rotating it (or closing the broadcast) refuses old URLs
and a ``stream.kick`` cuts a live publisher.

Length: one idea, the broadcast's lifecycle (the state machine's service side: create,
edit, transitions, push keys, reminders, reconciliation with the streams actually live);
the record types live in :mod:`control.broadcast_model`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control.broadcast_model import (
    Broadcast,
    Conflict,
    Filters,
    NotFound,
    PushInfo,
    TransitionRecord,
    broadcast_event,
    broadcast_of_row,
    new_key_version,
    settings_of,
)
from control.events import BroadcastReminder
from control.lifecycle import OPEN, TERMINAL, IllegalTransition, State, Trigger, next_state
from control.models import broadcasts, reminders, transitions
from control.settings import ControlSettings
from core.bus import EventBus
from ingest import auth as ingest_auth
from ingest.events import StreamKick, StreamPublished, StreamUnpublished
from replay.events import ReplayReady

logger = logging.getLogger(__name__)

REMINDER_BATCH = 500
MAX_REMINDERS_PER_BROADCAST = 1_000_000


class BroadcastService:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Any,
        bus: EventBus,
        settings: ControlSettings,
        secret: str,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.bus = bus
        self.settings = settings
        self.secret = secret

    # -- reading ---------------------------------------------------------------------
    def _select(self) -> sa.Select[Any]:
        count = (
            sa.select(sa.func.count())
            .select_from(reminders)
            .where(reminders.c.broadcast_id == broadcasts.c.id)
            .scalar_subquery()
        )
        return sa.select(broadcasts, count.label("reminder_count"))

    async def get(self, broadcast_id: int, conn: AsyncConnection | None = None) -> Broadcast:
        q = self._select().where(broadcasts.c.id == broadcast_id)
        if conn is None:
            async with self.engine.connect() as c:
                row = (await c.execute(q)).first()
        else:
            row = (await conn.execute(q)).first()
        if row is None:
            raise NotFound(f"no broadcast {broadcast_id}")
        return broadcast_of_row(row, int(row.reminder_count or 0))

    async def find_by_stream(self, app: str, stream: str) -> Broadcast | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    self._select().where(broadcasts.c.app == app, broadcasts.c.stream == stream)
                )
            ).first()
        return broadcast_of_row(row, int(row.reminder_count or 0)) if row else None

    async def list_page(
        self, filters: Filters, limit: int, offset: int
    ) -> tuple[list[Broadcast], int]:
        cond: list[Any] = []
        if filters.state:
            cond.append(broadcasts.c.state.in_([s.value for s in filters.state]))
        if filters.anchor_id is not None:
            cond.append(broadcasts.c.anchor_id == filters.anchor_id)
        if filters.start_from is not None:
            cond.append(broadcasts.c.scheduled_start >= filters.start_from)
        if filters.start_to is not None:
            cond.append(broadcasts.c.scheduled_start < filters.start_to)
        q = self._select().where(*cond).order_by(broadcasts.c.scheduled_start, broadcasts.c.id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.limit(limit).offset(offset))).all()
            total = int(
                await conn.scalar(sa.select(sa.func.count()).select_from(broadcasts).where(*cond))
                or 0
            )
        return [broadcast_of_row(r, int(r.reminder_count or 0)) for r in rows], total

    async def history(
        self, broadcast_id: int, limit: int, offset: int
    ) -> tuple[list[TransitionRecord], int]:
        cond = transitions.c.broadcast_id == broadcast_id
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    transitions.select()
                    .where(cond)
                    .order_by(transitions.c.id)
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = int(
                await conn.scalar(sa.select(sa.func.count()).select_from(transitions).where(cond))
                or 0
            )
        return [
            TransitionRecord(
                id=r.id,
                broadcast_id=r.broadcast_id,
                previous=State(r.previous) if r.previous else None,
                state=State(r.state),
                trigger=r.trigger,
                reason=r.reason,
                actor=r.actor,
                at=r.at,
            )
            for r in rows
        ], total

    # -- writing ---------------------------------------------------------------------
    async def create(
        self,
        *,
        title: str,
        scheduled_start: float,
        scheduled_end: float | None = None,
        description: str = "",
        anchor_id: int | None = None,
        product_ids: list[int] | None = None,
        settings: dict[str, bool] | None = None,
        actor: str = "",
    ) -> Broadcast:
        now = time.time()
        kv = new_key_version()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                broadcasts.insert().values(
                    title=title,
                    description=description,
                    anchor_id=anchor_id,
                    app=self.settings.stream_app,
                    stream="new-" + secrets.token_hex(8),
                    state=State.SCHEDULED.value,
                    scheduled_start=scheduled_start,
                    scheduled_end=scheduled_end,
                    product_ids=list(product_ids or []),
                    settings=settings_of(settings or {}),
                    key_version=kv,
                    push_revoked=False,
                    created_at=now,
                    updated_at=now,
                    state_changed_at=now,
                )
            )
            bid = int(result.inserted_primary_key[0])  # type: ignore[index]
            await conn.execute(
                broadcasts.update().where(broadcasts.c.id == bid).values(stream=f"b{bid}")
            )
            await conn.execute(
                transitions.insert().values(
                    broadcast_id=bid,
                    previous=None,
                    state=State.SCHEDULED.value,
                    trigger="create",
                    reason="",
                    actor=actor,
                    at=now,
                )
            )
            b = await self.get(bid, conn)
        await self._set_key_version(b, kv)
        await self.bus.emit(broadcast_event("broadcast.created", b, now))
        return b

    async def update(
        self, broadcast_id: int, changes: dict[str, Any], actor: str = ""
    ) -> Broadcast:
        b = await self.get(broadcast_id)
        if b.state in TERMINAL:
            raise Conflict(f"a {b.state.value} broadcast cannot be edited")
        values: dict[str, Any] = {}
        for key in ("title", "description", "anchor_id", "product_ids"):
            if key in changes:
                values[key] = changes[key]
        if "settings" in changes:
            values["settings"] = {**b.settings, **changes["settings"]}
        if "scheduled_start" in changes:
            if b.state is not State.SCHEDULED:
                raise Conflict("the start can only be moved before the broadcast goes live")
            values["scheduled_start"] = changes["scheduled_start"]
        if "scheduled_end" in changes:
            if b.state not in OPEN:
                raise Conflict(f"the end of a {b.state.value} broadcast cannot be moved")
            values["scheduled_end"] = changes["scheduled_end"]
        start = values.get("scheduled_start", b.scheduled_start)
        end = values.get("scheduled_end", b.scheduled_end)
        if end is not None and end <= start:
            raise ValueError("scheduled_end must be after scheduled_start")
        if not values:
            return b
        values["updated_at"] = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(
                broadcasts.update().where(broadcasts.c.id == broadcast_id).values(**values)
            )
            b = await self.get(broadcast_id, conn)
        await self.bus.emit(
            broadcast_event(
                "broadcast.updated", b, time.time(), changed=tuple(sorted(changes)), actor=actor
            )
        )
        return b

    async def set_cover(self, broadcast_id: int, name: str | None) -> Broadcast:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                broadcasts.update()
                .where(broadcasts.c.id == broadcast_id)
                .values(cover=name, updated_at=time.time())
            )
            if not result.rowcount:
                raise NotFound(f"no broadcast {broadcast_id}")
            return await self.get(broadcast_id, conn)

    async def delete(self, broadcast_id: int) -> None:
        b = await self.get(broadcast_id)
        if b.state not in (State.SCHEDULED, State.CANCELLED):
            raise Conflict(f"a {b.state.value} broadcast cannot be deleted (end or ban it)")
        async with self.engine.begin() as conn:
            await conn.execute(transitions.delete().where(transitions.c.broadcast_id == b.id))
            await conn.execute(reminders.delete().where(reminders.c.broadcast_id == b.id))
            await conn.execute(broadcasts.delete().where(broadcasts.c.id == b.id))
        await self.redis.hset(ingest_auth.KEY_VERSIONS, b.stream_path, new_key_version(True))
        await self.bus.emit(broadcast_event("broadcast.deleted", b, time.time()))

    # -- the lifecycle ---------------------------------------------------------------
    async def apply(
        self,
        broadcast_id: int,
        trigger: Trigger,
        *,
        reason: str = "",
        actor: str = "",
        now: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Broadcast:
        """Apply ``trigger``; raises :class:`IllegalTransition` or :class:`NotFound`."""
        for _ in range(5):
            b = await self.get(broadcast_id)
            new = next_state(b.state, trigger)
            at = time.time() if now is None else now
            values: dict[str, Any] = {"state": new.value, "state_changed_at": at, "updated_at": at}
            if new is State.LIVE and b.started_at is None:
                values["started_at"] = at
            if new in (State.ENDED, State.CANCELLED, State.BANNED) and b.ended_at is None:
                values["ended_at"] = at
            closing = new not in OPEN and b.state in OPEN
            if closing:
                values["key_version"] = new_key_version(closed=True)
            if new is State.BANNED:
                values["ban_reason"] = reason[:500]
                values["replay_url"] = None
            if extra:
                values.update(extra)
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    broadcasts.update()
                    .where(broadcasts.c.id == broadcast_id, broadcasts.c.state == b.state.value)
                    .values(**values)
                )
                if result.rowcount != 1:
                    continue  # someone else moved it first: re-read and re-check
                await conn.execute(
                    transitions.insert().values(
                        broadcast_id=broadcast_id,
                        previous=b.state.value,
                        state=new.value,
                        trigger=trigger.value,
                        reason=reason[:500],
                        actor=actor[:128],
                        at=at,
                    )
                )
                after = await self.get(broadcast_id, conn)
            if closing:
                await self._set_key_version(after, after.key_version)
                if b.state in (State.LIVE, State.INTERRUPTED) and trigger is not Trigger.UNPUBLISH:
                    await self.kick(after, f"broadcast {new.value}")
            await self.bus.emit(
                broadcast_event(
                    f"broadcast.{new.value}",
                    after,
                    at,
                    previous=b.state.value,
                    trigger=trigger.value,
                    reason=reason,
                    actor=actor,
                )
            )
            if new is State.LIVE and b.state is State.SCHEDULED:
                await self._fire_reminders(after, at)
            logger.info(
                "broadcast %d: %s -> %s (%s%s)",
                broadcast_id,
                b.state.value,
                new.value,
                trigger.value,
                f": {reason}" if reason else "",
            )
            return after
        raise Conflict("the broadcast changed concurrently; try again")

    async def sweep(self, now: float | None = None, limit: int = 100) -> int:
        """End broadcasts whose publisher did not return within the grace period."""
        now = time.time() if now is None else now
        deadline = now - self.settings.interrupt_grace
        async with self.engine.connect() as conn:
            ids = (
                await conn.scalars(
                    sa.select(broadcasts.c.id)
                    .where(
                        broadcasts.c.state == State.INTERRUPTED.value,
                        broadcasts.c.state_changed_at <= deadline,
                    )
                    .limit(limit)
                )
            ).all()
        done = 0
        for bid in ids:
            try:
                await self.apply(
                    bid, Trigger.GRACE_EXPIRED, reason="publisher did not return", now=now
                )
                done += 1
            except (IllegalTransition, NotFound, Conflict):
                pass
        return done

    async def reconcile_live(
        self,
        is_live: Callable[[str, str], Awaitable[bool]],
        now: float | None = None,
        settle: float = 15.0,
        limit: int = 500,
    ) -> int:
        """A ``live`` broadcast whose stream is live nowhere becomes ``interrupted`` (the
        sweeper then ends it after the grace period as usual): left by a crash, or by a
        shutdown whose ``stream.unpublished`` was never handled. Broadcasts that changed
        state less than ``settle`` seconds ago are left alone (their stream may be on its
        way into the cluster directory)."""
        now = time.time() if now is None else now
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(broadcasts.c.id, broadcasts.c.app, broadcasts.c.stream)
                    .where(
                        broadcasts.c.state == State.LIVE.value,
                        broadcasts.c.state_changed_at <= now - settle,
                    )
                    .limit(limit)
                )
            ).all()
        done = 0
        for bid, app_name, stream in rows:
            if await is_live(app_name, stream):
                continue
            try:
                await self.apply(
                    bid, Trigger.UNPUBLISH, reason="stream not live on any node", actor="control"
                )
                done += 1
            except (IllegalTransition, NotFound, Conflict):
                pass
        return done

    # -- ingest and replay events ------------------------------------------------------
    def subscribe_events(self) -> list[Callable[[], None]]:
        """Follow ingest (publisher up/down, in the order they happened) and replay
        (replay ready); returns the unsubscribers."""
        return [
            self.bus.on_each(
                {StreamPublished: self.on_published, StreamUnpublished: self.on_unpublished}
            ),
            self.bus.on(ReplayReady, self.on_replay_ready),
        ]

    async def on_published(self, event: StreamPublished) -> None:
        b = await self.find_by_stream(event.app, event.stream)
        if b is None:
            return
        if b.state is State.LIVE:
            return  # a takeover by a new publisher: still live
        if b.state not in (State.SCHEDULED, State.INTERRUPTED):
            await self.kick(b, f"broadcast is {b.state.value}")
            return
        client = event.client_ip
        try:
            await self.apply(
                b.id, Trigger.PUBLISH, reason=f"publisher {client}".strip(), actor="ingest"
            )
        except (IllegalTransition, Conflict) as exc:
            logger.debug("broadcast %d: publish ignored: %s", b.id, exc)

    async def on_unpublished(self, event: StreamUnpublished) -> None:
        b = await self.find_by_stream(event.app, event.stream)
        if b is None:
            return
        reason = event.reason
        if reason == "takeover" or b.state is not State.LIVE:
            return
        try:
            await self.apply(b.id, Trigger.UNPUBLISH, reason=reason, actor="ingest")
        except (IllegalTransition, Conflict) as exc:
            logger.debug("broadcast %d: unpublish ignored: %s", b.id, exc)

    async def on_replay_ready(self, event: ReplayReady) -> None:
        bid = event.broadcast_id
        b: Broadcast | None = None
        if isinstance(bid, int) and not isinstance(bid, bool):
            try:
                b = await self.get(bid)
            except NotFound:
                b = None
        if b is None:
            b = await self.find_by_stream(event.app, event.stream)
        if b is None or b.state is not State.ENDED or not b.settings.get("replay", True):
            return
        url = event.url
        extra = {"replay_url": str(url)[:1024]} if isinstance(url, str) else None
        try:
            await self.apply(b.id, Trigger.REPLAY_READY, actor="replay", extra=extra)
        except (IllegalTransition, Conflict) as exc:
            logger.debug("broadcast %d: replay.ready ignored: %s", b.id, exc)

    # -- push keys -------------------------------------------------------------------
    async def _set_key_version(self, b: Broadcast, kv: str) -> None:
        await self.redis.hset(ingest_auth.KEY_VERSIONS, b.stream_path, kv)

    async def sync_keys(self, batch: int = 500) -> None:
        """Make Redis agree with the database (after a Redis restart or data loss)."""
        last = 0
        while True:
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        sa.select(
                            broadcasts.c.id,
                            broadcasts.c.app,
                            broadcasts.c.stream,
                            broadcasts.c.key_version,
                        )
                        .where(broadcasts.c.id > last)
                        .order_by(broadcasts.c.id)
                        .limit(batch)
                    )
                ).all()
            if not rows:
                return
            await self.redis.hset(
                ingest_auth.KEY_VERSIONS,
                mapping={f"{r.app}/{r.stream}": r.key_version for r in rows},
            )
            last = rows[-1].id

    async def kick(self, b: Broadcast, reason: str) -> None:
        await self.bus.emit(StreamKick(b.app, b.stream, reason))

    def push_window(self, b: Broadcast) -> tuple[int, int]:
        s = self.settings
        nbf = int(b.scheduled_start - s.push_lead)
        end = (
            b.scheduled_end
            if b.scheduled_end is not None
            else b.scheduled_start + s.default_duration
        )
        return max(nbf, 0), int(end + s.push_grace)

    def push_info(self, b: Broadcast, rtmp_base: str) -> PushInfo:
        if b.state not in OPEN:
            raise Conflict(f"a {b.state.value} broadcast has no push URL")
        if b.push_revoked:
            raise Conflict("the push key was revoked; rotate it to issue a new URL")
        nbf, expire = self.push_window(b)
        query = ingest_auth.push_query(self.secret, b.app, b.stream, expire, nbf, b.key_version)
        server = f"{rtmp_base.rstrip('/')}/{b.app}"
        return PushInfo(
            url=f"{server}/{b.stream}?{query}",
            server=server,
            stream_key=f"{b.stream}?{query}",
            not_before=nbf,
            expires_at=expire,
            key_version=b.key_version,
        )

    async def rotate_key(self, broadcast_id: int, *, revoke: bool, actor: str = "") -> Broadcast:
        """New key version: every URL issued before is refused and a live publisher is cut.

        ``revoke``: no new URL is handed out until the next rotation.
        """
        b = await self.get(broadcast_id)
        if b.state not in OPEN:
            raise Conflict(f"a {b.state.value} broadcast has no push key")
        kv = new_key_version(closed=revoke)
        async with self.engine.begin() as conn:
            await conn.execute(
                broadcasts.update()
                .where(broadcasts.c.id == b.id)
                .values(key_version=kv, push_revoked=revoke, updated_at=time.time())
            )
            after = await self.get(b.id, conn)
        await self._set_key_version(after, kv)
        await self.kick(after, "push key revoked" if revoke else "push key rotated")
        topic = "broadcast.key_revoked" if revoke else "broadcast.key_rotated"
        await self.bus.emit(broadcast_event(topic, after, time.time(), actor=actor))
        return after

    # -- reminders -------------------------------------------------------------------
    async def subscribe(self, broadcast_id: int, subscriber: str) -> bool:
        """True if newly subscribed. Only a scheduled broadcast takes reminders."""
        b = await self.get(broadcast_id)
        if b.state is not State.SCHEDULED:
            raise Conflict(f"a {b.state.value} broadcast takes no reminders")
        if b.reminder_count >= MAX_REMINDERS_PER_BROADCAST:
            raise Conflict("this broadcast has too many reminders")
        async with self.engine.begin() as conn:
            exists = await conn.scalar(
                sa.select(reminders.c.subscriber).where(
                    reminders.c.broadcast_id == broadcast_id, reminders.c.subscriber == subscriber
                )
            )
            if exists is not None:
                return False
            await conn.execute(
                reminders.insert().values(
                    broadcast_id=broadcast_id, subscriber=subscriber, created_at=time.time()
                )
            )
        return True

    async def unsubscribe(self, broadcast_id: int, subscriber: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                reminders.delete().where(
                    reminders.c.broadcast_id == broadcast_id, reminders.c.subscriber == subscriber
                )
            )
        return bool(result.rowcount)

    async def _fire_reminders(self, b: Broadcast, at: float) -> None:
        """``broadcast.reminder`` events, ``REMINDER_BATCH`` subscribers each."""
        last = ""
        while True:
            async with self.engine.begin() as conn:
                subs = (
                    await conn.scalars(
                        sa.select(reminders.c.subscriber)
                        .where(
                            reminders.c.broadcast_id == b.id,
                            reminders.c.notified_at.is_(None),
                            reminders.c.subscriber > last,
                        )
                        .order_by(reminders.c.subscriber)
                        .limit(REMINDER_BATCH)
                    )
                ).all()
                if not subs:
                    return
                await conn.execute(
                    reminders.update()
                    .where(reminders.c.broadcast_id == b.id, reminders.c.subscriber.in_(subs))
                    .values(notified_at=at)
                )
            last = subs[-1]
            await self.bus.emit(BroadcastReminder(b.id, b.app, b.stream, b.title, tuple(subs), at))
