"""Durable delivery of typed events: what must not be lost goes through an outbox.

The event bus (:mod:`core.bus`) is at-most-once: a subscriber that is down, slow (its
queue full) or on a node that crashed misses the event. Some events carry something a
user was promised (a lottery prize), so they are *also* put into an outbox: a Redis
stream per topic (``<prefix><topic>``). Each consuming package reads it through its own
consumer group and acknowledges an entry only after its handler succeeded, so an entry is
delivered until some node of that package has handled it:

- a handler that raises leaves the entry pending; it is claimed again (by this node or
  any other of the group) once it has been pending for ``claim_idle_s``;
- a node that dies with entries in hand leaves them pending; another node claims them;
- handlers must be idempotent (an entry can be handled twice when a node dies between
  handling and acknowledging): the receiver keys its effect on the event's identity (the
  shop's prize grant key ``<lottery_id>:<n>`` is a primary key), which makes delivery
  exactly-once in effect.

The stream is trimmed to the oldest entry some group still has to handle, never past it.
An entry whose handler raises :class:`Rejected` is acknowledged and counted (it can never
succeed: retrying it would only block the log of errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from core.events import BusEvent, EventDecodeError

__all__ = ["OUTBOX_PREFIX", "Consumer", "Outbox", "Rejected"]

logger = logging.getLogger(__name__)

OUTBOX_PREFIX = "berrylive:outbox:"
"""Key prefix of the outbox streams (next to the bus channels, ``berrylive:events:``)."""

E = TypeVar("E", bound=BusEvent)


class Rejected(Exception):
    """The handler refuses this entry for good (malformed, or not ours to act on)."""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Outbox:
    """Puts events into their topic's stream. ``redis`` is a ``redis.asyncio.Redis``."""

    def __init__(self, redis: Any, prefix: str = OUTBOX_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, cls: type[BusEvent] | str) -> str:
        topic = cls if isinstance(cls, str) else cls.TOPIC
        return self.prefix + topic

    async def put(self, *events: BusEvent) -> list[str]:
        """Append ``events`` (one round trip); their stream ids. Raises on a Redis error:
        the caller keeps its own record until this succeeds."""
        if not events:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.key(event.event_topic), {"data": orjson.dumps(event.to_data())})
        return [_text(x) for x in await pipe.execute()]


@dataclass
class ConsumerStats:
    handled: int = 0
    rejected: int = 0
    failed: int = 0
    claimed: int = 0


class Consumer(Generic[E]):
    """One node's reader of ``cls``'s stream in consumer group ``group``.

    ``start()`` runs the loop in a task until ``stop()``. ``handler`` gets the decoded
    event; it returns to acknowledge, raises :class:`Rejected` to drop the entry for good,
    and raises anything else to have it retried after ``claim_idle_s``.
    """

    def __init__(
        self,
        outbox: Outbox,
        cls: type[E],
        group: str,
        consumer: str,
        handler: Callable[[E], Awaitable[None]],
        *,
        claim_idle_s: float = 30.0,
        block_s: float = 1.0,
        batch: int = 64,
    ) -> None:
        self.outbox = outbox
        self.cls = cls
        self.key = outbox.key(cls)
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.claim_idle_ms = max(1, int(claim_idle_s * 1000))
        self.block_ms = max(1, int(block_s * 1000))
        self.batch = batch
        self.stats = ConsumerStats()
        self._task: asyncio.Task[None] | None = None
        self._group_ready = False
        self._stopping = False

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # redis-py may turn the cancellation of a blocking XREADGROUP into a
            # ConnectionError: the flag ends the loop whatever the read raises
            self._stopping = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:  # from the stream's start: entries put before any consumer existed count
            await self.outbox.redis.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping:
            try:
                await self._ensure_group()
                await self.poll()
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down or restarted: retry with a back-off
                if self._stopping:
                    return
                self._group_ready = False
                logger.warning("outbox %s/%s: %s; retrying", self.key, self.group, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def poll(self) -> int:
        """Claim entries left pending too long, then read new ones (blocking up to
        ``block_s``); handle them all. Returns how many were handled."""
        redis = self.outbox.redis
        done = 0
        claimed = await redis.xautoclaim(
            self.key, self.group, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        entries = list(claimed[1]) if claimed else []
        self.stats.claimed += len(entries)
        if entries:
            done += await self._handle(entries)
        reply = await redis.xreadgroup(
            self.group, self.consumer, {self.key: ">"}, count=self.batch, block=self.block_ms
        )
        for _stream, fresh in reply or []:
            done += await self._handle(list(fresh))
        if done:
            await self._trim()
        return done

    async def _handle(self, entries: list[Any]) -> int:
        acked: list[str] = []
        for entry_id, fields in entries:
            eid = _text(entry_id)
            if not fields:  # trimmed or deleted while pending
                acked.append(eid)
                continue
            try:
                raw = fields.get(b"data", fields.get("data"))
                event = self.cls.from_data(orjson.loads(raw), self.cls.TOPIC)
            except (EventDecodeError, ValueError, TypeError) as exc:
                logger.error("outbox %s: entry %s is not a %s: %s", self.key, eid, self.cls, exc)
                self.stats.rejected += 1
                acked.append(eid)
                continue
            try:
                await self.handler(event)
            except Rejected as exc:
                logger.error("outbox %s: entry %s refused: %s", self.key, eid, exc)
                self.stats.rejected += 1
                acked.append(eid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("outbox %s: entry %s not handled yet: %s", self.key, eid, exc)
                self.stats.failed += 1
            else:
                self.stats.handled += 1
                acked.append(eid)
        if acked:
            await self.outbox.redis.xack(self.key, self.group, *acked)
        return len(acked)

    async def _trim(self) -> None:
        """Drop entries every group has handled (never one some group still owes)."""
        redis = self.outbox.redis
        floor: str | None = None
        for info in await redis.xinfo_groups(self.key):
            name = _text(info.get("name", info.get(b"name", b"")))
            pending = await redis.xpending(self.key, name)
            oldest = pending.get("min") if isinstance(pending, dict) else None
            if oldest is None:
                last = _text(info.get("last-delivered-id", info.get(b"last-delivered-id", "0-0")))
                ms, _, seq = last.partition("-")
                mark = f"{ms}-{int(seq or 0) + 1}"
            else:
                mark = _text(oldest)
            if floor is None or _id_key(mark) < _id_key(floor):
                floor = mark
        if floor is not None:
            await redis.xtrim(self.key, minid=floor)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
