"""Durable records: SQLAlchemy 2 (async) engines and per-package Alembic migrations.

SQLite under the data dir by default, PostgreSQL (asyncpg) with ``DATABASE_URL``. Each
package owns its tables, its ``MetaData`` and its own Alembic script directory, tracked
in its own version table (``alembic_version_<package>``), so domains migrate
independently and never fight over one revision chain.

Usage in a package::

    engine = create_engine(runtime.database_url)
    await migrate(engine, Path(__file__).parent / "migrations", "shop")
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

logger = logging.getLogger(__name__)


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
)
"""What every SQLite connection of ours runs first (the order writer process's too): WAL,
``synchronous=FULL``, foreign keys and a busy timeout.

``FULL``: a commit returns once the WAL is synced to disk, so an order a buyer was told
about survives a power loss too (``NORMAL`` in WAL mode survives a crash of the process,
not of the machine). The order writer commits a batch per transaction (group commit), so
the sync is paid once per batch, not per order; while it syncs, the next batch gathers."""


def sqlite_pragmas(dbapi_conn: Any) -> None:
    """Run :data:`SQLITE_PRAGMAS` on a new connection."""
    cur = dbapi_conn.cursor()
    for statement in SQLITE_PRAGMAS:
        cur.execute(statement)
    cur.close()


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            sqlite_pragmas(dbapi_conn)

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def _upgrade(conn: Connection, script_location: str, version_table: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", script_location)
    cfg.attributes["connection"] = conn
    cfg.attributes["version_table"] = version_table
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine, script_location: Path | str, package: str) -> None:
    """Upgrade ``package``'s tables to head using its Alembic scripts.

    The package's ``env.py`` must run migrations on ``config.attributes["connection"]``
    with ``version_table=config.attributes["version_table"]`` (see :func:`run_env`).
    """
    version_table = f"alembic_version_{package}"
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, str(script_location), version_table)
    logger.info("database schema for %s is at head", package)


def run_env(target_metadata: Any) -> None:
    """Body of a package's Alembic ``env.py``: ``from core.db import run_env; run_env(md)``."""
    from alembic import context

    config = context.config
    conn = config.attributes.get("connection")
    if conn is None:
        raise RuntimeError("berrylive migrations run through core.db.migrate()")
    context.configure(
        connection=conn,
        target_metadata=target_metadata,
        version_table=config.attributes["version_table"],
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
