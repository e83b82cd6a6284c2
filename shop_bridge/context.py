"""What every part of the shop shares: configuration, database, Redis, bus, clock.

Each service of the package (:mod:`~shop_bridge.catalog`, :mod:`~shop_bridge.shelf`,
:mod:`~shop_bridge.flash`, :mod:`~shop_bridge.checkout`, ...) is a small object built over
one :class:`ShopContext`; they share the stores below and nothing else. The context owns
the event outbox: events of the buy path are queued here and handed to the bus by one task
(a burst of buyers never opens a burst of bus calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from core.bus import EventBus
from shop_bridge.config import ShopConfig
from shop_bridge.orders import OrderBook
from shop_bridge.redis_store import FlashStore

logger = logging.getLogger(__name__)

OUTBOX_SIZE = 10_000
"""Events waiting for the bus at most; beyond it new ones are dropped (counted, logged)."""


def new_id() -> str:
    """A random 32-hex-digit id (orders outside the buy path, coupons)."""
    return uuid.uuid4().hex


async def stop_worker(
    unsubscribe: list[Callable[[], None]], task: asyncio.Task[Any] | None
) -> None:
    """Drop a service's bus subscriptions (``unsubscribe`` is emptied) and cancel its
    background task, waiting for it to end. The caller forgets the task afterwards."""
    for unsub in unsubscribe:
        unsub()
    unsubscribe.clear()
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def primary_key(result: Any) -> int:
    """The integer primary key an INSERT produced."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("insert returned no primary key")
    return int(key[0])


class ShopContext:
    """The shared stores of the shop and its wall clock (seconds since the epoch).

    ``store`` holds the hot flash-sale state in Redis; ``book`` the order records in the
    database (the record of truth)."""

    def __init__(
        self,
        config: ShopConfig,
        engine: AsyncEngine,
        redis: Any,
        bus: EventBus,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.engine = engine
        self.redis = redis
        self.bus = bus
        self.clock = clock
        self.store = FlashStore(redis, config.redis_prefix)
        self.book = OrderBook(engine, bus, self.store, clock)
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(OUTBOX_SIZE)
        self._drainer: asyncio.Task[None] | None = None
        self.outbox_dropped = 0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use another wall clock (tests and drills); seconds since the epoch."""
        self.clock = clock
        self.book.clock = clock

    # -- the event outbox ------------------------------------------------------------

    def emit_later(self, topic: str, data: dict[str, Any]) -> None:
        """Queue an event for the bus (no await: for the buy path, whose payloads are built
        as plain dicts; cold paths ``await bus.emit(...)`` typed events directly)."""
        try:
            self._outbox.put_nowait((topic, data))
        except asyncio.QueueFull:
            self.outbox_dropped += 1
            if self.outbox_dropped == 1 or self.outbox_dropped % 1000 == 0:
                logger.warning("event outbox full: %d events dropped", self.outbox_dropped)

    def start(self) -> None:
        self._drainer = asyncio.get_running_loop().create_task(
            self._drain_outbox(), name="shop:outbox"
        )

    async def _drain_outbox(self) -> None:
        """Hand queued events to the bus, everything queued so far in one call (with the
        Redis bus: one pipelined round trip per batch, not one per event)."""
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < 1000 and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                await self.bus.publish_many(batch)
            except Exception:
                logger.exception("publishing %d events failed", len(batch))
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def flush_events(self) -> None:
        """Wait until queued events are handed to the bus (tests, shutdown)."""
        await self._outbox.join()

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            try:
                await self._drainer
            except asyncio.CancelledError:
                pass
            self._drainer = None
