"""Order rows on their way into the database, shared by every writer of new orders.

:func:`insert_batch_or_rows` is the one rule for a batch of new orders (all in one
transaction, or, on a conflict, one row at a time so the others still get in);
:class:`Columns` lays a table's rows out column by column for the drivers that bypass
SQLAlchemy on the buy path (:mod:`shop_bridge.sqlite_process`, :mod:`shop_bridge.pg_writer`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Integer, String, Table
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from shop_bridge.models import ORDERS, TRANSITIONS
from shop_bridge.sqlite_writer import created_log

__all__ = [
    "EXISTS",
    "INSERTED",
    "LOG_COLUMNS",
    "ORDER_COLUMNS",
    "Columns",
    "created_log",
    "insert_batch_or_rows",
]

INSERTED = "inserted"
EXISTS = "exists"


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


class Columns:
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
        self.array_types = [pg_array(c) for c in cols]

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


def pg_array(column: Column[Any]) -> str:
    """The PostgreSQL array type a column's values are sent as (``Columns.unnest_insert``)."""
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


ORDER_COLUMNS = Columns(ORDERS)
LOG_COLUMNS = Columns(TRANSITIONS, skip=("id",))
