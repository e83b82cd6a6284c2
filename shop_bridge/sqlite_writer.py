"""The SQLite order writer's own process: batches of order rows in, one commit each.

Run by :class:`shop_bridge.sqlite_process.SqliteProcess` as ``python -I <this file>``; it
imports the standard library only (no package import, so it starts in tens of ms and holds
a few MB). It speaks over its stdin and stdout in frames: a 4-byte big-endian length, then
a :mod:`marshal` payload (the parent is its only peer).

- First frame, from the parent: ``{"path", "pragmas", "orders": (head, columns), "log":
  (head, columns)}``: per table, the INSERT up to ``VALUES`` and its ``(name, default)``
  columns in order (a row dict without a column takes its default).
- Then requests ``(kind, id, body)`` and one reply ``(id, code, value)`` each, in order:
  ``("write", id, [order row dict, ...])`` writes the orders and their "created" log rows
  (:func:`created_log`) in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) and
  answers ``ok``, ``conflict`` (a constraint refused a row: nothing of the batch was
  written) or ``error``; ``("stats", id, None)`` answers ``{"commits", "checkpoints",
  "autocheckpoint"}``.

Why a process: in a thread of the server, binding a batch's values held the GIL (the event
loop waited) and every GIL hand-back queued behind the busy loop, so a 100-row batch took
~17 ms of wall time for ~4 ms of work and slowed every buyer. Here the writing runs on
another core; the parent only hands over the row dicts (one ``marshal.dumps``, in C).

Its connection never checkpoints on commit (``wal_autocheckpoint=0``): a thread of this
process runs a PASSIVE checkpoint every ``CHECKPOINT_INTERVAL`` seconds after commits, so
the copy into the database file and its fsync never hold up a batch of buyers. The server's
other connections keep SQLite's automatic checkpoint as a backstop.

The process ignores SIGINT (the parent drains the queue on Ctrl-C and then closes the
pipe) and exits when its stdin closes, so it never outlives the server.
"""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
import sys
import threading
from typing import Any, BinaryIO

CHECKPOINT_INTERVAL = 1.0
SQLITE_MAX_VARIABLES = 32766
"""SQLite's host-parameter limit (3.32+): a larger batch goes in several statements."""
MAX_FRAME = 256 * 1024 * 1024


def created_log(row: dict[str, Any], actor: str, reason: str) -> dict[str, Any]:
    """The "created" transition log row of a new order (every writer of orders uses it)."""
    return {
        "order_id": row["id"],
        "from_state": None,
        "to_state": row["state"],
        "actor": (actor or row["user_id"])[:64],
        "reason": reason[:200],
        "at_ms": row["created_ms"],
    }


def read_frame(inp: BinaryIO) -> Any:
    """The next frame's value; None at the end of the input."""
    head = inp.read(4)
    if len(head) < 4:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    body = inp.read(size)
    if len(body) < size:
        return None
    return marshal.loads(body)


def frame(value: Any) -> bytes:
    body = marshal.dumps(value)
    return len(body).to_bytes(4, "big") + body


class _Table:
    def __init__(self, head: str, columns: list[tuple[str, Any]]) -> None:
        self.head = head
        self.columns = columns
        self.one = "(" + ", ".join("?" * len(columns)) + ")"
        self.per_statement = SQLITE_MAX_VARIABLES // len(columns)

    def insert(self, cur: sqlite3.Cursor, rows: list[dict[str, Any]]) -> None:
        """``INSERT ... VALUES (...), (...), ...``: one statement per batch, bound in C."""
        columns = self.columns
        step = self.per_statement
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            values = [row.get(name, default) for row in chunk for name, default in columns]
            cur.execute(self.head + ", ".join([self.one] * len(chunk)), values)


class Writer:
    def __init__(self, hello: dict[str, Any]) -> None:
        self.path = str(hello["path"])
        self.pragmas = [str(p) for p in hello["pragmas"]]
        self.orders = _Table(*hello["orders"])
        self.log = _Table(*hello["log"])
        self.conn = self.connect()
        self.commits = 0
        self.checkpoints = 0
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, daemon=True)
        self._checkpointer.start()

    def connect(self) -> sqlite3.Connection:
        # Autocommit mode: the transactions are the explicit BEGIN / COMMIT below.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        for statement in (*self.pragmas, "PRAGMA wal_autocheckpoint=0"):
            conn.execute(statement).fetchall()
        return conn

    def write(self, rows: list[dict[str, Any]]) -> None:
        logs = [created_log(r, "", "placed") for r in rows]
        cur = self.conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            try:
                self.orders.insert(cur, rows)
                self.log.insert(cur, logs)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            self.commits += 1
        finally:
            cur.close()

    def stats(self) -> dict[str, int]:
        auto = self.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        return {"commits": self.commits, "checkpoints": self.checkpoints, "autocheckpoint": auto}

    def _checkpoint_loop(self) -> None:
        seen = 0
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                if self.commits == seen:
                    continue
                seen = self.commits
                try:
                    if conn is None:
                        conn = self.connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the next round (or SQLite's own) retries
                    print(f"sqlite writer: WAL checkpoint failed: {exc}", file=sys.stderr)
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._checkpointer.join(timeout=30)
        self.conn.close()


def handle(writer: Writer, kind: str, body: Any) -> tuple[str, Any]:
    if kind == "stats":
        return "ok", writer.stats()
    if kind != "write":
        return "error", f"unknown request {kind!r}"
    try:
        writer.write(body)
    except sqlite3.IntegrityError as exc:
        return "conflict", str(exc)
    except Exception as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    return "ok", None


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Frames own fd 1; anything else that prints goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    hello = read_frame(inp)
    if not isinstance(hello, dict):
        return 2
    writer = Writer(hello)
    try:
        while (request := read_frame(inp)) is not None:
            kind, rid, body = request
            code, value = handle(writer, kind, body)
            out.write(frame((rid, code, value)))
            out.flush()
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
