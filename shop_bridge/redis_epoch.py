"""Redis is a fast copy; the database is the truth. Rebuild the flash sales' Redis state
from the orders whenever Redis may have lost writes, before taking buys again.

Redis can lose its last writes: the embedded valkey fsyncs its append-only file once a
second; an external Redis can come back from a snapshot or fail over to a replica that
missed the last writes. Stock, per-user counts and idempotency keys then roll back while
the orders stay in the database, and buys taken on that state oversell, reset per-user
limits and answer a retried key with a new order. So the shop rebuilds every live sale
from the database (:meth:`shop_bridge.flash.FlashSales.rebuild`) in these cases:

* **start-up**, before the first buy;
* **a Redis that is not the one we verified**: ``INFO server`` ``run_id`` changed (a
  restart or a failover) or our **epoch** key went back or vanished (a restore from an
  older snapshot or a replica: after each rebuild we write an epoch, a number that only
  grows, to ``{<prefix>:epoch}``). It is checked

  - on **every new connection** of the buy path (a watched pool: a connect callback, the
    public hook of redis-py, asks ``INFO server`` and the epoch on the new connection
    before its first command runs; a mismatch refuses the connection, so no buy reaches a
    Redis that restarted, even in the moment before anything else noticed), and
  - every ``redis_check_interval`` seconds (1 s) for what no reconnect shows (a restore
    into a running Redis that rolled back our epoch, a flush).

While a rebuild runs, :attr:`FlashStore.rebuilding` is set: buys are refused before they
reach Redis with ``503 rebuilding`` ("retry shortly", nothing reserved); the buys already
reserved are written first (the batcher and the order writer drain), then each sale is
rewritten under its row lock (stock = sale stock - units held by orders - reservations
still in the journal without an order; per-user counts from the same; every order's
idempotency key; the released set; the meta), the epoch is bumped, and buys resume.
The hot path pays nothing per buy but a flag test: the checks are per connection and
per interval. A rebuild that fails (Redis or the database down) leaves buys refused and
is retried by the next check.

Not covered: a rollback inside a Redis that keeps its run id and our epoch (a hand-made
``RESTORE`` of one sale's keys) is only found by the periodic audit. With several nodes
on one Redis, each checks its own connections; a node seeing a higher epoch than its own
(another node rebuilt) adopts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import select

from shop_bridge.context import ShopContext
from shop_bridge.flash import FlashSales
from shop_bridge.models import SALES
from shop_bridge.redis_store import RedisRebuilding

logger = logging.getLogger(__name__)

RUN_ID = re.compile(rb"^run_id:([0-9a-fA-F]+)\r?$", re.M)
DRAIN_TIMEOUT = 30.0
"""Longest wait for the reservations on their way to be written before a rebuild."""


class RedisEpoch:
    """Knows which Redis (run id, epoch) the sales were last rebuilt on; rebuilds when
    Redis is not that one any more (see the module's docstring)."""

    def __init__(self, ctx: ShopContext, flash: FlashSales) -> None:
        self.ctx = ctx
        self.flash = flash
        self.store = ctx.store
        self.verified: tuple[str, int] | None = None
        """(run id, epoch) of the Redis the sales were last rebuilt on."""
        self.rebuilds = 0
        """Rebuilds done (tests, health)."""
        self.last_report: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None

    async def start(self, background: bool = True) -> None:
        """Watch the buy path's connections, rebuild once (before buys are taken) and,
        with ``background``, check every ``redis_check_interval``."""
        self._client = self._watched_client()
        self.store.buy_client = self._client
        try:
            await self.rebuild("start-up")
        except Exception:
            logger.exception("start-up rebuild of the flash sales failed; retrying")
        if background:
            self._loop_task = asyncio.get_running_loop().create_task(
                self._check_loop(), name="shop:redis-epoch"
            )

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._loop_task] if self._loop_task else [])]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loop_task = None
        self.store.buy_client = None
        if self._client is not None:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()
            self._client = None

    # -- checking ----------------------------------------------------------------------

    async def identity(self) -> tuple[str, int | None]:
        """(run id, epoch) of the Redis the shop's client reaches now."""
        info = await self.ctx.redis.info("server")
        raw = await self.ctx.redis.get(self.store.epoch_key)
        return str(info.get("run_id", "")), int(raw) if raw is not None else None

    def same(self, run_id: str, epoch: int | None) -> bool:
        """True if that is the Redis we verified (adopting a higher epoch: another node
        rebuilt it after it noticed something we did not)."""
        if self.verified is None or epoch is None or run_id != self.verified[0]:
            return False
        if epoch > self.verified[1]:
            self.verified = (run_id, epoch)
        return epoch >= self.verified[1]

    async def check(self) -> bool:
        """Rebuild if Redis is not the one we verified. True if it rebuilt."""
        if not self.store.rebuilding and self.same(*await self.identity()):
            return False
        await self.rebuild("redis changed" if self.verified else "not verified yet")
        return True

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.config.redis_check_interval)
            try:
                await self.check()
            except Exception as exc:
                self.store.rebuilding = True  # Redis unreachable: no buy until checked
                logger.warning("flash sales: Redis check failed (%s); buys held", exc)

    # -- the buy path's connections ------------------------------------------------------

    def _watched_client(self) -> aioredis.Redis | None:
        """A client over a pool of its own whose every new connection is checked against
        the verified Redis before its first command (None for a client without a single
        pool, e.g. a cluster: the periodic check alone covers it)."""
        redis = self.ctx.redis
        if not isinstance(redis, aioredis.Redis):
            return None
        pool = redis.connection_pool
        on_connect = self._on_connect

        class WatchedPool(type(pool)):  # type: ignore[misc]
            def make_connection(self) -> Any:
                conn = super().make_connection()
                conn.register_connect_callback(on_connect)
                return conn

        no_retry = Retry(NoBackoff(), 0)  # a refused connection fails its buy at once
        kwargs = {**pool.connection_kwargs, "retry": no_retry}
        watched = WatchedPool(
            connection_class=pool.connection_class,
            max_connections=max(4, min(16, pool.max_connections)),
            **kwargs,
        )
        return aioredis.Redis(connection_pool=watched, retry=no_retry)

    async def _on_connect(self, conn: Any) -> None:
        """A new buy-path connection: refuse it unless Redis is the verified one."""
        if not self.store.rebuilding and self.verified is not None:
            await conn.send_command("INFO", "server")
            info = await conn.read_response()
            await conn.send_command("GET", self.store.epoch_key)
            raw = await conn.read_response()
            m = RUN_ID.search(info if isinstance(info, bytes) else str(info).encode())
            run_id = m.group(1).decode() if m else ""
            if self.same(run_id, int(raw) if raw is not None else None):
                return
            logger.warning(
                "flash sales: Redis changed under a new connection (run id %s, epoch %s); "
                "buys held while the sales are rebuilt from the database",
                run_id,
                raw,
            )
            self.store.rebuilding = True
            task = asyncio.get_running_loop().create_task(self._rebuild_quietly())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await conn.disconnect()
        raise RedisRebuilding()

    async def _rebuild_quietly(self) -> None:
        try:
            await self.rebuild("redis changed (new connection)")
        except Exception:
            logger.exception("rebuild of the flash sales failed; the next check retries")

    # -- rebuilding ----------------------------------------------------------------------

    async def rebuild(self, reason: str) -> dict[str, Any]:
        """Stop buys, let the reservations on their way be written, rewrite every live
        sale from the database, bump the epoch, resume buys. Raises (buys stay held) if
        Redis or the database fails."""
        async with self._lock:
            self.store.rebuilding = True
            async with asyncio.timeout(DRAIN_TIMEOUT):
                while not (self.flash.batcher.idle and self.flash.writer.idle):  # noqa: ASYNC110 (no event to wait on)
                    await asyncio.sleep(0.005)
            for _round in range(5):
                run_id, _epoch = await self.identity()
                sales = await self._live_sales()
                report: dict[str, Any] = {"reason": reason, "sales": {}}
                for sale_id in sales:
                    report["sales"][sale_id] = await self.flash.rebuild(sale_id)
                base = max(self.verified[1] if self.verified else 0, _epoch or 0)
                epoch = max(self.ctx.now_ms(), base + 1)
                await self.ctx.redis.set(self.store.epoch_key, epoch)
                if await self.identity() == (run_id, epoch):
                    break  # nothing changed under the rebuild
            else:
                raise RuntimeError("Redis kept changing during the rebuild")
            self.verified = (run_id, epoch)
            self.rebuilds += 1
            self.last_report = report
            self.store.rebuilding = False
        if reason != "start-up" or sales:
            logger.warning("flash sales rebuilt from the database (%s): %s", reason, report)
        return report

    async def _live_sales(self) -> list[int]:
        """The sales whose Redis keys are kept (the same set reconciliation walks)."""
        cfg = self.ctx.config
        horizon = self.ctx.now_ms() - (cfg.payment_timeout + cfg.sale_retention) * 1000
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(SALES.c.id).where(SALES.c.ends_ms >= horizon).order_by(SALES.c.id)
            )
            return [int(r[0]) for r in rows]
