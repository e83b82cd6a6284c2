"""Group commit of new orders: buyers hand over their order row and wait for its commit.

The buy path (:mod:`shop_bridge.flash`) submits each reserved buy's row here; worker tasks
write whatever is queued as one batch through the backend's driver
(:mod:`shop_bridge.sqlite_process` or :mod:`shop_bridge.pg_writer`; any other engine goes
through SQLAlchemy in :meth:`shop_bridge.orders.OrderBook.insert_orders`), then resolve each
buyer's future with its own row's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shop_bridge.order_rows import INSERTED
from shop_bridge.orders import OrderBook
from shop_bridge.pg_writer import PgWriter
from shop_bridge.sqlite_process import SqliteProcess

logger = logging.getLogger(__name__)


class _Pending:
    __slots__ = ("future", "row")

    def __init__(self, row: dict[str, Any], future: asyncio.Future[Any]) -> None:
        self.row = row
        self.future = future


class QueueFull(Exception):
    """The writer's queue is full: nothing was written (the caller gives the stock back)."""


class WriteFailed(Exception):
    """An order's batch could not be written (its reservation stays in the journal, where
    reconciliation finds it); ``__cause__`` is the database's error."""


DURABLE_LINGER = 0.05
"""Seconds the post-commit hook waits after a commit for more commits to take together."""


class OrderWriter:
    """Group commit: buy requests hand over their order row and wait for its commit.

    Batches of up to ``batch`` rows are written in one transaction by ``workers`` tasks;
    each buyer learns the outcome of its own row only after the commit. ``on_durable``
    (dropping the rows' reservation journal entries) runs after the buyers are answered,
    in one background task that takes whatever batches committed within ``durable_linger``
    seconds: the journal is only a hint once the rows are durable, so it never delays a
    buyer or the next batch.

    On SQLite a batch goes to the writer process (:class:`SqliteProcess`: both INSERTs and
    the COMMIT there, off this process's GIL), on PostgreSQL through asyncpg as one
    statement (:class:`PgWriter`), instead of one hand-off through SQLAlchemy per statement;
    under load each hand-off waits for a busy event loop, so this is what bounds the
    writer's latency.
    """

    def __init__(
        self,
        book: OrderBook,
        batch: int,
        queue_size: int,
        workers: int,
        on_durable: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None,
        durable_linger: float = DURABLE_LINGER,
    ) -> None:
        self.book = book
        self.on_durable = on_durable
        self.durable_linger = durable_linger
        self.batch = batch
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size)
        self.workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self.sqlite: SqliteProcess | None = None
        """The SQLite driver while started on SQLite (tests reach the process through it)."""
        self.pg: PgWriter | None = None
        """The PostgreSQL driver while started on PostgreSQL with asyncpg."""
        self._durable: list[dict[str, Any]] = []
        self._durable_ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writing = 0
        self.committed = 0
        self.batches = 0
        """Transactions written (``committed / batches`` is the mean batch; for benchmarks)."""
        self.insert_seconds = 0.0
        """Total time from a batch's start to its commit (for benchmarks)."""

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        dialect = self.book.engine.dialect
        if dialect.name == "sqlite":
            self.sqlite = SqliteProcess(self.book.engine.url)
        elif dialect.name == "postgresql" and dialect.driver == "asyncpg":
            self.pg = PgWriter(self.book.engine)
        self._tasks = [
            loop.create_task(self._run(), name=f"shop:writer:{i}") for i in range(self.workers)
        ]
        if self.on_durable is not None:
            self._tasks.append(loop.create_task(self._after_commit(), name="shop:writer:hook"))

    async def stop(self) -> None:
        for _ in range(50):
            if self.queue.empty():
                break
            await asyncio.sleep(0.02)
        if self._durable and self.on_durable is not None:
            with contextlib.suppress(Exception):
                rows, self._durable = self._durable, []
                await self.on_durable(rows)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(WriteFailed("shutting down"))
        if self.sqlite is not None:
            await self.sqlite.close()
            self.sqlite = None
        if self.pg is not None:
            await self.pg.close()
            self.pg = None

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being written (every handed-over row answered)."""
        return self.queue.empty() and self._writing == 0

    async def write(self, row: dict[str, Any]) -> str:
        """Queue ``row`` and wait for its commit: ``inserted`` or ``exists`` (the same order
        or idempotency key is already written). Raises :class:`QueueFull` (nothing queued)
        or :class:`WriteFailed`."""
        loop = self._loop
        if loop is None:  # once: get_running_loop() costs a getpid() system call
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self.submit(row, future)
        return await future

    def submit(self, row: dict[str, Any], future: asyncio.Future[Any]) -> None:
        """Queue ``row``; ``future`` gets its outcome (or :class:`WriteFailed`) after the
        commit. Raises :class:`QueueFull` at once when the queue is full."""
        try:
            self.queue.put_nowait(_Pending(row, future))
        except asyncio.QueueFull:
            raise QueueFull() from None

    async def _insert(self, rows: list[dict[str, Any]]) -> list[str]:
        if self.sqlite is not None:
            return await self.sqlite.insert(rows)
        if self.pg is not None:
            return await self.pg.insert(rows)
        return await self.book.insert_orders(rows)

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < self.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            rows = [p.row for p in batch]
            t0 = time.perf_counter()
            self._writing += 1
            try:
                outcomes = await self._insert(rows)
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(WriteFailed("shutting down"))
                raise
            except Exception as exc:
                logger.error("order write of %d rows failed: %s", len(rows), exc)
                for p in batch:
                    if not p.future.done():
                        failed = WriteFailed(f"order write failed: {exc}")
                        failed.__cause__ = exc
                        p.future.set_exception(failed)
                continue
            finally:
                self._writing -= 1
            self.committed += outcomes.count(INSERTED)
            self.batches += 1
            self.insert_seconds += time.perf_counter() - t0
            for p, outcome in zip(batch, outcomes, strict=True):
                if not p.future.done():
                    p.future.set_result(outcome)
            if self.on_durable is not None:
                self._durable.extend(rows)
                self._durable_ready.set()

    async def _after_commit(self) -> None:
        assert self.on_durable is not None
        while True:
            await self._durable_ready.wait()
            # The hook is a tidy-up (a hint once the rows are durable): waiting a moment
            # lets one call take the commits of many batches. Under a moderate load the
            # batches are small (a few rows, ~1000 commits/s) and one call per commit cost
            # more than the commits.
            await asyncio.sleep(self.durable_linger)
            self._durable_ready.clear()
            rows, self._durable = self._durable, []
            if not rows:
                continue
            try:
                await self.on_durable(rows)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the journal is only a hint once rows are durable
                logger.warning("post-commit hook failed (reconciliation will tidy): %s", exc)
