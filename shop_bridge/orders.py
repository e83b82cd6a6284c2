"""Order records: creation through a group-commit writer, state moves, stock release.

All state moves go through :meth:`OrderBook.move`, which checks the table in
:mod:`shop_bridge.state`, applies the move with ``UPDATE ... WHERE id = ? AND state = <from>``
(so two racing moves cannot both win), logs it in ``shop_order_transitions`` in the same
transaction, and publishes ``order.<state>`` after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import asyncpg
from sqlalchemy import (
    URL,
    BigInteger,
    Boolean,
    Column,
    Integer,
    String,
    Table,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from core.bus import EventBus
from core.db import SQLITE_PRAGMAS
from shop_bridge.models import COUPONS, ORDERS, SALES, SKUS, TRANSITIONS
from shop_bridge.redis_store import NOT_LOADED, RELEASED, SETTLED, FlashStore
from shop_bridge.sqlite_writer import created_log, frame
from shop_bridge.state import EVENT_TOPICS, IllegalTransition, OrderState, transition

logger = logging.getLogger(__name__)


INSERTED = "inserted"
EXISTS = "exists"


def order_event(order: dict[str, Any], actor: str) -> dict[str, Any]:
    return {
        "order_id": order["id"],
        "state": order["state"],
        "kind": order["kind"],
        "user_id": order["user_id"],
        "broadcast_id": order["broadcast_id"],
        "anchor_id": order["anchor_id"],
        "product_id": order["product_id"],
        "sku_id": order["sku_id"],
        "flash_sale_id": order["flash_sale_id"],
        "quantity": order["quantity"],
        "amount_fen": order["amount_fen"],
        "card_id": order["card_id"],
        "channel": order["channel"],
        "actor": actor,
        "ts": order["updated_ms"] / 1000,
    }


class OrderBook:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        flash: FlashStore,
        clock: Callable[[], float] = time.time,
        loader: Callable[[int], Awaitable[Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.flash = flash
        self.clock = clock
        self.loader = loader
        """Loads a flash sale into Redis from the database (when its keys are missing)."""

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- creation ------------------------------------------------------------------

    async def insert_orders(
        self, rows: list[dict[str, Any]], actor: str = "", reason: str = "placed"
    ) -> list[str]:
        """Insert orders with their "created" log rows (see :func:`insert_batch_or_rows`)."""
        if not rows:
            return []
        async with self.engine.connect() as conn:

            async def write(batch: list[dict[str, Any]]) -> None:
                async with conn.begin():
                    await conn.execute(insert(ORDERS), batch)
                    logs = [created_log(r, actor, reason) for r in batch]
                    await conn.execute(insert(TRANSITIONS), logs)

            return await insert_batch_or_rows(write, rows, IntegrityError)

    async def publish_created(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            await self.bus.publish("order.created", order_event(row, row["user_id"]))

    # -- reading -------------------------------------------------------------------

    async def get(self, order_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(ORDERS).where(ORDERS.c.id == order_id))).mappings()
            first = row.first()
            return dict(first) if first is not None else None

    async def get_by_idem(self, user_id: str, key: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            res = await conn.execute(
                select(ORDERS).where(ORDERS.c.user_id == user_id, ORDERS.c.idempotency_key == key)
            )
            first = res.mappings().first()
            return dict(first) if first is not None else None

    async def history(self, order_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            res = await conn.execute(
                select(TRANSITIONS)
                .where(TRANSITIONS.c.order_id == order_id)
                .order_by(TRANSITIONS.c.id)
            )
            return [dict(r) for r in res.mappings()]

    async def list_orders(
        self,
        *,
        user_id: str | None = None,
        broadcast_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        before_ms: int | None = None,
    ) -> list[dict[str, Any]]:
        q = select(ORDERS).order_by(ORDERS.c.created_ms.desc(), ORDERS.c.id).limit(limit)
        if user_id is not None:
            q = q.where(ORDERS.c.user_id == user_id)
        if broadcast_id is not None:
            q = q.where(ORDERS.c.broadcast_id == broadcast_id)
        if state is not None:
            q = q.where(ORDERS.c.state == state)
        if before_ms is not None:
            q = q.where(ORDERS.c.created_ms < before_ms)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(q)).mappings()]

    # -- moving --------------------------------------------------------------------

    async def move(
        self,
        order_id: str,
        target: OrderState,
        actor: str,
        reason: str = "",
        values: dict[str, Any] | None = None,
        expect: OrderState | None = None,
    ) -> dict[str, Any]:
        """Move an order to ``target`` (raises IllegalTransition, LookupError if unknown).

        In the same transaction as the move: a cancellation gives the order's coupon back,
        and a completed refund of a never-cancelled order gives its units back to the SKU
        (``stock_released``, exactly once). A cancellation's stock goes back after the
        commit (flash-sale stock lives in Redis) through :meth:`release_stock`.
        """
        current = OrderState.PENDING_PAYMENT
        for _attempt in range(3):
            order = await self.get(order_id)
            if order is None:
                raise LookupError(order_id)
            current = OrderState(order["state"])
            if expect is not None and current is not expect:
                raise IllegalTransition(current, target)
            transition(current, target)
            now = self.now_ms()
            changes = {"state": target.value, "updated_ms": now, **(values or {})}
            if target is OrderState.CANCELLED:
                changes["cancelled_ms"] = now
            elif current is OrderState.CANCELLED and order.get("cancelled_ms") is None:
                changes["cancelled_ms"] = order["updated_ms"]
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    update(ORDERS)
                    .where(ORDERS.c.id == order_id, ORDERS.c.state == current.value)
                    .values(**changes)
                )
                if res.rowcount != 1:
                    continue  # someone moved it first: re-read and re-check
                await conn.execute(
                    insert(TRANSITIONS).values(
                        order_id=order_id,
                        from_state=current.value,
                        to_state=target.value,
                        actor=actor[:64],
                        reason=reason[:200],
                        at_ms=now,
                    )
                )
                if target is OrderState.CANCELLED and order.get("coupon_id"):
                    await conn.execute(
                        update(COUPONS)
                        .where(
                            COUPONS.c.id == order["coupon_id"],
                            COUPONS.c.used_order_id == order_id,
                        )
                        .values(used_order_id=None)
                    )
                restocked = ""
                if (
                    target is OrderState.REFUNDED
                    and changes.get("cancelled_ms", order.get("cancelled_ms")) is None
                ):
                    restocked = await self._restock_sku(conn, order)
            order.update(changes)
            if restocked:
                order["stock_released"], order["restock"] = True, restocked
            logger.info("order %s: %s -> %s by %s %s", order_id, current, target, actor, reason)
            await self.bus.publish(EVENT_TOPICS[target], order_event(order, actor))
            if target is OrderState.CANCELLED:
                await self.release_stock(order)
            return order
        raise IllegalTransition(current, target)

    async def _restock_sku(self, conn: Any, order: dict[str, Any]) -> str:
        """Give the order's units back to the SKU once (``stock_released`` guards it).

        Returns where they went (``sku``, or ``none`` for a flash sale that did not take its
        stock from the SKU), or ``""`` if they had already gone back."""
        target = "sku"
        if order["kind"] == "flash" and order["flash_sale_id"] is not None:
            carved = (
                await conn.execute(
                    select(SALES.c.carved).where(SALES.c.id == order["flash_sale_id"])
                )
            ).scalar()
            target = "sku" if carved else "none"
        res = await conn.execute(
            update(ORDERS)
            .where(ORDERS.c.id == order["id"], ORDERS.c.stock_released.is_(False))
            .values(stock_released=True, restock=target)
        )
        if res.rowcount != 1:
            return ""
        if target == "sku":
            await conn.execute(
                update(SKUS)
                .where(SKUS.c.id == order["sku_id"])
                .values(stock=SKUS.c.stock + order["quantity"])
            )
        logger.info("order %s: %d returned to the SKU's stock", order["id"], order["quantity"])
        return target

    async def release_stock(self, order: dict[str, Any]) -> bool:
        """Give a cancelled order's stock back, exactly once. False if already done.

        Flash-sale units go back on sale while the sale is not settled, else to the SKU;
        normal and prize orders go back to the SKU. An order that was cancelled and then
        refunded (a late payment) is released here, never by the refund."""
        if order.get("stock_released"):
            return False
        if order["state"] != OrderState.CANCELLED.value and order.get("cancelled_ms") is None:
            return False
        if order["kind"] == "flash" and order["flash_sale_id"] is not None:
            sale_id = order["flash_sale_id"]
            args = {
                "order_id": order["id"],
                "user": order["user_id"],
                "qty": order["quantity"],
                "now_ms": self.now_ms(),
            }
            status = await self.flash.release_status(sale_id, **args)
            if status == NOT_LOADED and self.loader is not None:
                await self.loader(sale_id)
                status = await self.flash.release_status(sale_id, **args)
            if status == NOT_LOADED:
                logger.warning(
                    "order %s: sale %s not in Redis; release later", order["id"], sale_id
                )
                return False
            if status == SETTLED:
                async with self.engine.begin() as conn:
                    done = bool(await self._restock_sku(conn, order))
            else:
                done = status == RELEASED
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(ORDERS)
                        .where(ORDERS.c.id == order["id"], ORDERS.c.stock_released.is_(False))
                        .values(stock_released=True, restock="sale")
                    )
                if done:
                    logger.info("order %s: %d back on sale", order["id"], order["quantity"])
        else:
            async with self.engine.begin() as conn:
                done = bool(await self._restock_sku(conn, order))
        order["stock_released"] = True
        return done

    async def unreleased_cancellations(self, limit: int = 500) -> list[dict[str, Any]]:
        """Cancelled orders (including ones refunded after a late payment) whose stock has
        not gone back yet (a crash between the move and the release)."""
        async with self.engine.connect() as conn:
            res = await conn.execute(
                select(ORDERS)
                .where(
                    or_(
                        ORDERS.c.state == OrderState.CANCELLED.value,
                        ORDERS.c.cancelled_ms.is_not(None),
                    ),
                    ORDERS.c.stock_released.is_(False),
                )
                .limit(limit)
            )
            return [dict(r) for r in res.mappings()]


async def insert_batch_or_rows(
    write: Callable[[list[dict[str, Any]]], Awaitable[None]],
    rows: list[dict[str, Any]],
    conflict: type[Exception],
) -> list[str]:
    """Write ``rows`` in one transaction (``write``) if possible.

    Returns ``inserted`` or ``exists`` per row. A conflict (the same order id written by
    reconciliation, or a reused idempotency key) makes the batch fall back to one
    transaction per row so the other rows are unaffected.
    """
    try:
        await write(rows)
        return [INSERTED] * len(rows)
    except conflict:
        if len(rows) == 1:
            return [EXISTS]
    out: list[str] = []
    for row in rows:
        try:
            await write([row])
            out.append(INSERTED)
        except conflict:
            out.append(EXISTS)
    return out


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

    On SQLite a batch goes to the database in one hand-off to a dedicated thread holding
    its own connection (both INSERTs and the COMMIT in one call), instead of one hand-off
    through aiosqlite per statement; under load each hand-off waits for a busy event loop
    and the GIL, so this is what bounds the writer's latency.
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
        self._sqlite: _SqliteProcess | None = None
        self._pg: _PgWriter | None = None
        self._durable: list[dict[str, Any]] = []
        self._durable_ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.committed = 0
        self.batches = 0
        """Transactions written (``committed / batches`` is the mean batch; for benchmarks)."""
        self.insert_seconds = 0.0
        """Total time from a batch's start to its commit (for benchmarks)."""

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        dialect = self.book.engine.dialect
        if dialect.name == "sqlite":
            self._sqlite = _SqliteProcess(self.book.engine.url)
        elif dialect.name == "postgresql" and dialect.driver == "asyncpg":
            self._pg = _PgWriter(self.book.engine)
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
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None

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
        if self._sqlite is not None:
            return await self._sqlite.insert(rows)
        if self._pg is not None:
            return await self._pg.insert(rows)
        return await self.book.insert_orders(rows)

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            while len(batch) < self.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            rows = [p.row for p in batch]
            t0 = time.perf_counter()
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


class _Columns:
    """A table's columns in a fixed order and the value of each for a row dict: columns
    missing from a row take the column's Python-side scalar default (as SQLAlchemy's
    ``insert()`` would), else NULL. Used to write batches through the drivers directly."""

    def __init__(self, table: Table, skip: tuple[str, ...] = ()) -> None:
        cols = [c for c in table.columns if c.name not in skip]
        self.pairs = [
            (
                str(c.name),
                c.default.arg if isinstance(c.default, ScalarElementColumnDefault) else None,
            )
            for c in cols
        ]
        self.table = table.name
        self.names = ", ".join(c.name for c in cols)
        self.head = f"INSERT INTO {self.table} ({self.names}) VALUES "
        self.array_types = [_pg_array(c) for c in cols]

    def unnest_insert(self, first: int) -> str:
        """An INSERT of any number of rows from one array per column (PostgreSQL), the
        arrays being parameters ``$first, $first+1, ...``: the statement is the same for
        every batch size, so it is prepared once per connection. Text columns travel as
        ``text[]``: an over-long value then fails the insert, where a cast to
        ``varchar(n)[]`` would cut it silently."""
        arrays = ", ".join(f"${first + i}::{t}" for i, t in enumerate(self.array_types))
        return f"INSERT INTO {self.table} ({self.names}) SELECT * FROM unnest({arrays})"

    def arrays(self, rows: list[dict[str, Any]]) -> list[list[Any]]:
        """The rows column by column, for :meth:`unnest_insert`."""
        return [[row.get(name, default) for row in rows] for name, default in self.pairs]


def _pg_array(column: Column[Any]) -> str:
    """The PostgreSQL array type a column's values are sent as (``_Columns.unnest_insert``)."""
    kind = column.type
    if isinstance(kind, Boolean):
        return "boolean[]"
    if isinstance(kind, BigInteger):
        return "bigint[]"
    if isinstance(kind, Integer):
        return "integer[]"
    if isinstance(kind, String):
        return "text[]"
    raise TypeError(f"no PostgreSQL array type for {column.table.name}.{column.name}: {kind}")


ORDER_COLUMNS = _Columns(ORDERS)
LOG_COLUMNS = _Columns(TRANSITIONS, skip=("id",))
PG_BATCH = f"WITH placed AS ({ORDER_COLUMNS.unnest_insert(1)}) " + LOG_COLUMNS.unnest_insert(
    len(ORDER_COLUMNS.pairs) + 1
)
"""A batch of orders and their "created" log rows in one statement, so one round trip and
no explicit transaction (a statement is atomic; its data-modifying WITH part runs once)."""


class _SqliteProcess:
    """Batches to SQLite through the writer process (:mod:`shop_bridge.sqlite_writer`):
    the rows are packed here and written there, one transaction per batch, off this
    process's GIL. Batches sent while one is being written wait in the pipe.

    If the process dies, the batches on their way fail (their buyers get an error; the
    reservation journal lets reconciliation finish them) and the next batch starts a new
    process.
    """

    WRITER = Path(__file__).with_name("sqlite_writer.py")

    def __init__(self, url: URL) -> None:
        self.path = url.database or ""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next = 0
        self.started = 0
        """Writer processes started (for tests and health)."""

    async def insert(self, rows: list[dict[str, Any]]) -> list[str]:
        """The same as :meth:`OrderBook.insert_orders`, through the writer process."""
        return await insert_batch_or_rows(self._write, rows, sqlite3.IntegrityError)

    async def _write(self, batch: list[dict[str, Any]]) -> None:
        await self._request("write", batch)

    async def stats(self) -> dict[str, int]:
        """The writer process's commits, checkpoints and ``wal_autocheckpoint``."""
        return cast(dict[str, int], await self._request("stats", None))

    async def _request(self, kind: str, body: Any) -> Any:
        rid = self._next
        self._next += 1
        data = frame((kind, rid, body))  # ValueError for a value marshal cannot carry
        proc = await self._process()
        assert proc.stdin is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        proc.stdin.write(data)
        try:
            await proc.stdin.drain()
        except ConnectionError:
            pass  # the reader fails the waiting requests
        return await fut

    async def _process(self) -> asyncio.subprocess.Process:
        if self._proc is not None and self._proc.returncode is None:
            return self._proc
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._proc is not None and self._proc.returncode is None:
                return self._proc
            if self._reader is not None:
                await self._reader  # fails what waited on the old process
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(self.WRITER),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None
            hello = {
                "path": self.path,
                "pragmas": list(SQLITE_PRAGMAS),
                "orders": (ORDER_COLUMNS.head, ORDER_COLUMNS.pairs),
                "log": (LOG_COLUMNS.head, LOG_COLUMNS.pairs),
            }
            proc.stdin.write(frame(hello))
            self._proc = proc
            self._reader = asyncio.get_running_loop().create_task(
                self._read_replies(proc), name="shop:sqlite-writer-replies"
            )
            self.started += 1
            if self.started > 1:
                logger.warning("order writer process restarted (%d starts)", self.started)
            return proc

    async def _read_replies(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                head = await proc.stdout.readexactly(4)
                rid, code, value = marshal.loads(
                    await proc.stdout.readexactly(int.from_bytes(head, "big"))
                )
                fut = self._waiting.pop(rid, None)
                if fut is None or fut.done():
                    continue
                if code == "ok":
                    fut.set_result(value)
                elif code == "conflict":
                    fut.set_exception(sqlite3.IntegrityError(value))
                else:
                    fut.set_exception(sqlite3.OperationalError(f"order writer: {value}"))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, TypeError, EOFError):
            pass  # the process exited (or spoke garbage): fail what waits, restart on demand
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            waiting, self._waiting = self._waiting, {}
            for fut in waiting.values():
                if not fut.done():
                    fut.set_exception(
                        sqlite3.OperationalError(
                            f"order writer process exited ({proc.returncode}); batch not written"
                        )
                    )

    async def close(self) -> None:
        """Let the process finish what it was sent, then stop it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
        if self._reader is not None:
            await self._reader
            self._reader = None


class _PgWriter:
    """Batches to PostgreSQL through asyncpg directly: each writer task holds a connection
    of the engine's pool (no checkout and ping per batch) and writes a batch as one
    statement (:data:`PG_BATCH`: both INSERTs from column arrays, prepared once per
    connection), i.e. one round trip where BEGIN, two pipelined ``executemany`` and COMMIT
    took four; under load each round trip waits for a turn of the busy event loop. Through
    SQLAlchemy each row's parameters went through Python on the event loop.

    A connection that failed (other than by a duplicate) is dropped from the pool; the
    next batch opens another.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._idle: list[tuple[AsyncConnection, asyncpg.Connection]] = []
        """Held connections with their asyncpg connection (looked up once each)."""

    async def insert(self, rows: list[dict[str, Any]]) -> list[str]:
        conn, raw = await self._connection()
        try:

            async def write(batch: list[dict[str, Any]]) -> None:
                logs = [created_log(r, "", "placed") for r in batch]
                await raw.execute(PG_BATCH, *ORDER_COLUMNS.arrays(batch), *LOG_COLUMNS.arrays(logs))

            out = await insert_batch_or_rows(write, rows, asyncpg.UniqueViolationError)
        except BaseException:
            await self._drop(conn)
            raise
        self._idle.append((conn, raw))
        return out

    async def _connection(self) -> tuple[AsyncConnection, asyncpg.Connection]:
        """A held connection that is still open, else a new one from the pool. Never one
        inside a transaction: a batch is one statement in autocommit, which would then
        not commit."""
        while self._idle:
            conn, raw = self._idle.pop()
            if not raw.is_closed() and not raw.is_in_transaction():
                return conn, raw
            await self._drop(conn)
        conn = await self.engine.connect()
        raw = await _driver(conn)
        if raw.is_in_transaction():
            await self._drop(conn)
            raise RuntimeError("the pool gave a connection inside a transaction")
        return conn, raw

    async def _drop(self, conn: AsyncConnection) -> None:
        with contextlib.suppress(Exception):
            await conn.invalidate()
            await conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _raw in idle:
            with contextlib.suppress(Exception):
                await conn.close()


async def _driver(conn: AsyncConnection) -> asyncpg.Connection:
    raw = (await conn.get_raw_connection()).driver_connection
    if raw is None:
        raise RuntimeError("the connection was closed")
    return cast(asyncpg.Connection, raw)
