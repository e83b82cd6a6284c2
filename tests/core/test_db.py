"""SQLite as we open it: an order a buyer was told about survives a power loss
(``synchronous=FULL`` in WAL mode), on every connection we open, the order writer
process's included."""

from __future__ import annotations

import sqlite3

from sqlalchemy import text

from core.db import create_engine, sqlite_pragmas


async def test_engine_connections_sync_every_commit(tmp_path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == 2  # FULL
    finally:
        await engine.dispose()


def test_raw_connections_get_the_same_pragmas(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "writer.db")  # as the order writer process opens it
    try:
        sqlite_pragmas(conn)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        conn.close()
