"""The PostgreSQL order writer: batches of new orders through asyncpg, one statement each.

Used by :class:`shop_bridge.order_writer.OrderWriter` when the engine is PostgreSQL with
asyncpg (the production backend); see :class:`PgWriter` for why it bypasses SQLAlchemy.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shop_bridge.order_rows import LOG_COLUMNS, ORDER_COLUMNS, created_log, insert_batch_or_rows

PG_BATCH = f"WITH placed AS ({ORDER_COLUMNS.unnest_insert(1)}) " + LOG_COLUMNS.unnest_insert(
    len(ORDER_COLUMNS.pairs) + 1
)
"""A batch of orders and their "created" log rows in one statement, so one round trip and
no explicit transaction (a statement is atomic; its data-modifying WITH part runs once)."""


class PgWriter:
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

    @property
    def held(self) -> list[asyncpg.Connection]:
        """The asyncpg connections held between batches (health, tests)."""
        return [raw for _conn, raw in self._idle]

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
        raw = await driver_connection(conn)
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


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    raw = (await conn.get_raw_connection()).driver_connection
    if raw is None:
        raise RuntimeError("the connection was closed")
    return cast(asyncpg.Connection, raw)
