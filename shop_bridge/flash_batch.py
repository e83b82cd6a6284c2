"""Micro-batching of flash-sale reservations: one script run per sale per event-loop turn.

Buy requests that reach :meth:`BuyBatcher.buy` during the same turn of the event loop are
sent to Redis together, as one ``EVALSHA`` of ``buy.lua`` per sale, so the client's
per-command cost (connection pool, encoding, a round trip) is paid once per batch instead
of once per buyer. Each buy keeps its own semantics (``buy.lua`` checks and applies the
buys of a batch in order, as if each ran alone) and gets its own result.

While ``max_inflight`` batches are on their way to Redis, new buys wait for one of them
to come back and then go together: under load the batches grow instead of the number of
concurrent commands. A buy whose caller went away before its batch was sent is dropped;
one whose caller went away later keeps its reservation, which the journal records (the
reconciler completes or gives it back, as after a crash).

A buy may come with its order row and the batcher with a ``sink`` (the order writer's
:meth:`~shop_bridge.order_writer.OrderWriter.submit`): a reservation that succeeded is then handed
to the writer here, with the buyer's future, and the buyer wakes once, when its row is
committed (the future resolves with the write's outcome, ``inserted`` or ``exists``, or the
writer's error). Without a row or a sink, or when the script refused the buy, the future
resolves with the script's :class:`BuyResult`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from shop_bridge.redis_store import BuyArgs, BuyResult, FlashStore, RedisRebuilding

logger = logging.getLogger(__name__)

BuyOutcome = BuyResult | str
"""What a buy's future resolves to: the script's result, or, for a reservation handed to the
sink with its row, the outcome of the row's write."""
Sink = Callable[[dict[str, Any], "asyncio.Future[Any]"], None]
"""Takes a reserved buy's row and the future to resolve once it is written (may raise, e.g.
when the writer's queue is full: the buyer's future gets that error)."""
_Item = tuple[BuyArgs, "asyncio.Future[BuyOutcome]", dict[str, Any] | None]


class BuyBatcher:
    def __init__(
        self,
        store: FlashStore,
        max_batch: int = 256,
        max_inflight: int = 2,
        sink: Sink | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.max_batch = max(1, max_batch)
        self.max_inflight = max(1, max_inflight)
        self._pending: dict[int, list[_Item]] = {}
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0
        """Script runs sent (with :attr:`buys`, the mean batch size; for benchmarks)."""
        self.buys = 0

    def buy(
        self, sale_id: int, args: BuyArgs, row: dict[str, Any] | None = None
    ) -> asyncio.Future[BuyOutcome]:
        """Queue one reservation; the future resolves with its result (or the batch's error),
        or, with a ``row`` and a sink, with the outcome of writing ``row`` once reserved."""
        loop = self._loop
        if loop is None:  # once: get_running_loop() costs a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[BuyOutcome] = loop.create_future()
        self._pending.setdefault(sale_id, []).append((args, fut, row))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        loop = self._loop or asyncio.get_running_loop()
        while self._pending and self._inflight < self.max_inflight:
            sale_id = next(iter(self._pending))
            queue = self._pending[sale_id]
            batch = [item for item in queue[: self.max_batch] if not item[1].done()]
            rest = queue[self.max_batch :]
            if rest:
                self._pending[sale_id] = rest
            else:
                del self._pending[sale_id]
            if not batch:
                continue
            self._inflight += 1
            task = loop.create_task(self._send(sale_id, batch), name="shop:buy-batch")
            self._tasks.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._pending and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, sale_id: int, batch: list[_Item]) -> None:
        self.batches += 1
        self.buys += len(batch)
        try:
            if self.store.rebuilding:  # checked once per batch, not per buy
                raise RedisRebuilding()
            results = await self.store.buy_many(sale_id, [item[0] for item in batch])
        except BaseException as exc:
            for _, fut, _row in batch:
                if not fut.done():
                    fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        sink = self.sink
        for (_, fut, row), res in zip(batch, results, strict=True):
            if fut.done():  # the buyer went away: the journal keeps its reservation
                continue
            if row is None or sink is None or res.status != "ok":
                fut.set_result(res)
                continue
            try:
                sink(row, fut)
            except Exception as exc:
                fut.set_exception(exc)

    @property
    def idle(self) -> bool:
        """No batch queued or on its way to Redis."""
        return not self._tasks and not self._pending

    async def stop(self) -> None:
        """Wait for batches on their way; refuse what is still queued."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for queue in self._pending.values():
            for _, fut, _row in queue:
                if not fut.done():
                    fut.set_exception(RuntimeError("shutting down"))
        self._pending.clear()
