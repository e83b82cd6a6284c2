"""The SQLite order writer, parent side: batches of new orders to the writer process.

Used by :class:`shop_bridge.order_writer.OrderWriter` when the engine is SQLite (the
embedded backend). The process itself is :mod:`shop_bridge.sqlite_writer` (standard
library only); it says why writing happens in another process at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import sqlite3
import sys
from pathlib import Path
from typing import Any, cast

from sqlalchemy import URL

from core.db import SQLITE_PRAGMAS
from shop_bridge.order_rows import LOG_COLUMNS, ORDER_COLUMNS, insert_batch_or_rows
from shop_bridge.sqlite_writer import frame

logger = logging.getLogger(__name__)


class SqliteProcess:
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

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The current writer process (None before the first batch or after close)."""
        return self._proc

    @property
    def in_flight(self) -> int:
        """Requests sent to the writer process and not answered yet (for tests, health)."""
        return len(self._waiting)

    async def insert(self, rows: list[dict[str, Any]]) -> list[str]:
        """The same as :meth:`shop_bridge.orders.OrderBook.insert_orders`, through the writer
        process: ``inserted`` or ``exists`` per row."""
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
                # a Ctrl-C reaches the server only: it drains the order writes, then this
                start_new_session=True,
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
