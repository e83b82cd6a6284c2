"""The hot side of flash sales in Redis: stock, per-user counts, idempotency, the journal.

All keys of one sale share the hash tag ``{<prefix>:fs:<id>}`` so every script touches one
slot and runs unchanged on Redis Cluster. The same scripts run against the embedded
valkey-server and a production Redis. The journal (``...:journal``, order id -> JSON) holds
reservations made by the buy script whose order is not yet durable in the database;
reconciliation completes or gives back whatever a crash left in it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
import redis.asyncio as aioredis

logger = logging.getLogger(__name__)


def _script(name: str) -> str:
    return resources.files("shop_bridge").joinpath("lua", name).read_text()


@dataclass(frozen=True, slots=True)
class SaleKeys:
    meta: str
    stock: str
    users: str
    idem: str
    journal: str
    released: str

    @classmethod
    def for_sale(cls, prefix: str, sale_id: int) -> SaleKeys:
        tag = "{" + f"{prefix}:fs:{sale_id}" + "}"
        return cls(
            meta=f"{tag}:meta",
            stock=f"{tag}:stock",
            users=f"{tag}:users",
            idem=f"{tag}:idem",
            journal=f"{tag}:journal",
            released=f"{tag}:released",
        )

    def all(self) -> list[str]:
        return [self.meta, self.stock, self.users, self.idem, self.journal, self.released]


@dataclass(frozen=True, slots=True)
class BuyResult:
    status: str
    """``ok``, ``dup``, ``no_sale``, ``closed``, ``not_started``, ``ended``, ``limit``,
    ``sold_out``."""
    value: str
    """``ok``: stock left; ``dup``: the existing order id; otherwise context."""


@dataclass(frozen=True, slots=True)
class SaleSnapshot:
    loaded: bool
    stock: int
    users: dict[str, int]
    journal: dict[str, dict[str, Any]]
    released: set[str]


@dataclass(frozen=True, slots=True)
class BuyArgs:
    """One buyer's reservation request (the arguments of ``buy.lua`` for one buy)."""

    now_ms: int
    user: str
    qty: int
    idem_key: str
    order_id: str
    journal: dict[str, Any]


class RedisRebuilding(Exception):
    """A buy refused before it reached Redis: the sales' state is being rebuilt from the
    database (:attr:`FlashStore.rebuilding`), or a new connection found Redis changed."""


RELEASED = 1
ALREADY = 0
SETTLED = 2
NOT_LOADED = 3
"""Answers of ``release.lua`` (see :meth:`FlashStore.release_status`)."""


def idem_field(user: str, key: str) -> str:
    return f"{user}|{key}"


def buy_entry(b: BuyArgs) -> list[Any]:
    """One buy as ``buy.lua`` reads it from its packed argument (a JSON array of these)."""
    return [
        b.now_ms,
        b.user,
        b.qty,
        idem_field(b.user, b.idem_key),
        b.order_id,
        orjson.dumps(b.journal).decode(),
    ]


class FlashStore:
    """Runs the flash-sale Lua scripts; holds no state besides the clients and script objects.

    The buy batches go over ``lanes`` connections held for the store's life (taken from the
    client's pool on first use, given back by :meth:`close`): a command through the pool pays
    a checkout and a check-in, each under a lock and a timeout (~25 µs of event-loop time
    per batch here), and under a moderate load most batches are one or two buys. When every
    lane is busy, or with a cluster client, a batch goes through the pool as before.
    """

    def __init__(self, redis: Any, prefix: str, lanes: int = 2) -> None:
        self.redis = redis
        self.prefix = prefix
        self._lanes: list[Any] = []
        self._lanes_made = 0
        self._max_lanes = lanes if isinstance(redis, aioredis.Redis) else 0
        self._buy = redis.register_script(_script("buy.lua"))
        self._release = redis.register_script(_script("release.lua"))
        self._load = redis.register_script(_script("load.lua"))
        self._edit = redis.register_script(_script("edit.lua"))
        self._settle = redis.register_script(_script("settle.lua"))
        self._rebuild = redis.register_script(_script("rebuild.lua"))
        self.rebuilding = True
        """While True, no buy reaches Redis (buyers get ``503 rebuilding``): the sales'
        state is being rebuilt from the database (:mod:`shop_bridge.redis_epoch`). True
        until the start-up rebuild is done."""
        self.buy_client: Any = None
        """The client buys go through when set (the epoch guard's watched pool: every new
        connection is checked against the Redis it was verified on); else ``redis``."""

    def keys(self, sale_id: int) -> SaleKeys:
        return SaleKeys.for_sale(self.prefix, sale_id)

    @property
    def epoch_key(self) -> str:
        """Where the last rebuild's epoch is written (see :mod:`shop_bridge.redis_epoch`)."""
        return "{" + f"{self.prefix}:epoch" + "}"

    @property
    def buy_sha(self) -> str:
        """The SHA1 of ``buy.lua`` (an ``EVALSHA`` of it with hand-made arguments: tests)."""
        return str(self._buy.sha)

    @property
    def idle_lanes(self) -> list[Any]:
        """The lanes not sending a batch right now (health, tests)."""
        return list(self._lanes)

    async def buy(
        self,
        sale_id: int,
        *,
        now_ms: int,
        user: str,
        qty: int,
        idem_key: str,
        order_id: str,
        journal: dict[str, Any],
    ) -> BuyResult:
        """Reserve for one buyer (see :meth:`buy_many`)."""
        (res,) = await self.buy_many(
            sale_id, [BuyArgs(now_ms, user, qty, idem_key, order_id, journal)]
        )
        return res

    async def buy_many(self, sale_id: int, buys: Sequence[BuyArgs]) -> list[BuyResult]:
        """Reserve for several buyers of one sale in one script run (one round trip).

        Each buy is checked and applied in order as if it ran alone; the results are in the
        order of ``buys``.
        """
        k = self.keys(sale_id)
        packed = orjson.dumps([buy_entry(b) for b in buys])
        lane = self._lane()
        try:
            raw = await self._buy(
                keys=[k.meta, k.stock, k.users, k.idem, k.journal],
                args=[packed],
                client=lane if lane is not None else self.buy_client,
            )
        finally:
            if lane is not None:
                self._lanes.append(lane)
        try:
            res = orjson.loads(raw)
        except orjson.JSONDecodeError:
            res = None
        if not isinstance(res, list) or len(res) != 2 * len(buys):
            raise RuntimeError(f"buy script answered {str(raw)[:80]!r} for {len(buys)} buys")
        return [BuyResult(str(res[i]), str(res[i + 1])) for i in range(0, len(res), 2)]

    def _lane(self) -> Any:
        """A free lane (a client on one held connection), or None: use the pool."""
        if self._lanes:
            return self._lanes.pop()
        if self._lanes_made < self._max_lanes:
            self._lanes_made += 1
            client = self.buy_client if self.buy_client is not None else self.redis
            return aioredis.Redis(
                connection_pool=client.connection_pool,
                single_connection_client=True,
                retry=client.get_retry(),
            )
        return None

    async def close(self) -> None:
        """Give the lanes' connections back to the pool (batches on their way finish first:
        call after the batcher stopped)."""
        lanes, self._lanes = self._lanes, []
        self._lanes_made -= len(lanes)
        for lane in lanes:
            await lane.aclose()

    async def release(
        self, sale_id: int, *, order_id: str, user: str, qty: int, now_ms: int
    ) -> bool:
        """Return ``qty`` to the sale and the user's allowance; False if already done (or if
        the sale is settled or not in Redis: see :meth:`release_status`)."""
        return (
            await self.release_status(sale_id, order_id=order_id, user=user, qty=qty, now_ms=now_ms)
            == RELEASED
        )

    async def release_status(
        self, sale_id: int, *, order_id: str, user: str, qty: int, now_ms: int
    ) -> int:
        """``RELEASED`` (back on sale), ``ALREADY`` (done before), ``SETTLED`` (the sale's
        unsold stock went to the SKU: return the order's units there) or ``NOT_LOADED``."""
        k = self.keys(sale_id)
        res = await self._release(
            keys=[k.stock, k.users, k.released, k.journal, k.meta],
            args=[order_id, user, qty, now_ms],
        )
        return int(res)

    async def edit(
        self,
        sale_id: int,
        *,
        ends_ms: int,
        limit: int,
        cap: int,
        old_cap: int,
        now_ms: int,
        sync: bool = False,
        closed: bool = False,
    ) -> tuple[str, int]:
        """Apply a sale's end, per-user limit and total stock (``edit.lua``)."""
        k = self.keys(sale_id)
        res = await self._edit(
            keys=[k.meta, k.stock],
            args=[ends_ms, limit, cap, old_cap, now_ms, "sync" if sync else "edit", int(closed)],
        )
        return _s(res[0]), int(res[1])

    async def settle(self, sale_id: int) -> tuple[str, int]:
        """Take the unsold stock out of an over sale (``settle.lua``)."""
        k = self.keys(sale_id)
        res = await self._settle(keys=[k.meta, k.stock, k.journal])
        return _s(res[0]), int(res[1])

    async def meta(self, sale_id: int) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys(sale_id).meta)
        return {_s(a): _s(b) for a, b in raw.items()}

    async def forget_journal(self, by_sale: dict[int, list[str]]) -> None:
        """Drop journal entries whose orders are now durable (one round trip)."""
        if not by_sale:
            return
        if len(by_sale) == 1:  # the usual case: one command, no pipeline to build
            ((sale_id, order_ids),) = by_sale.items()
            await self.redis.hdel(self.keys(sale_id).journal, *order_ids)
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for sale_id, order_ids in by_sale.items():
                pipe.hdel(self.keys(sale_id).journal, *order_ids)
            await pipe.execute()

    async def load(
        self,
        sale_id: int,
        *,
        starts_ms: int,
        ends_ms: int,
        limit: int,
        price_fen: int,
        stock_left: int,
        expire_at: int,
        closed: bool,
        holders: list[tuple[str, int, str, str]],
        settled: bool = False,
        cap: int | None = None,
    ) -> bool:
        """Create the sale's keys from DB truth if absent. ``holders``: (user, qty, idem, id)
        of the orders counted against the per-user limit; ``cap``: the sale's total stock."""
        k = self.keys(sale_id)
        args: list[Any] = [
            starts_ms,
            ends_ms,
            limit,
            price_fen,
            stock_left,
            expire_at,
            int(closed),
            int(settled),
            "" if cap is None else cap,
        ]
        for user, qty, idem, order_id in holders:
            args.extend([user, qty, idem_field(user, idem), order_id])
        res = await self._load(keys=k.all(), args=args)
        return bool(int(res))

    async def rebuild(
        self,
        sale_id: int,
        *,
        starts_ms: int,
        ends_ms: int,
        limit: int,
        price_fen: int,
        stock_left: int,
        expire_at: int,
        closed: bool,
        settled: bool,
        returned: int | None,
        cap: int,
        holders: list[tuple[str, int, str, str]],
        idem_only: list[tuple[str, str, str]],
        released: list[str],
    ) -> None:
        """Rewrite the sale's keys from the database whatever Redis holds (``rebuild.lua``;
        the journal is kept). ``holders``: (user, qty, idem key, order id) counted against
        the limit; ``idem_only``: (user, idem key, order id) of the sale's other orders;
        ``released``: the orders whose units went back on sale."""
        k = self.keys(sale_id)
        args: list[Any] = [
            starts_ms,
            ends_ms,
            limit,
            price_fen,
            stock_left,
            expire_at,
            int(closed),
            int(settled),
            cap,
            "" if returned is None else returned,
            len(holders),
            len(idem_only),
            len(released),
        ]
        for user, qty, idem, order_id in holders:
            args.extend([user, qty, idem_field(user, idem), order_id])
        for user, idem, order_id in idem_only:
            args.extend([idem_field(user, idem), order_id])
        args.extend(released)
        await self._rebuild(keys=k.all(), args=args)

    async def set_closed(self, sale_id: int, closed: bool) -> None:
        k = self.keys(sale_id)
        if await self.redis.exists(k.meta):
            await self.redis.hset(k.meta, "closed", int(closed))

    async def snapshot(self, sale_id: int) -> SaleSnapshot:
        k = self.keys(sale_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(k.meta)
            pipe.get(k.stock)
            pipe.hgetall(k.users)
            pipe.hgetall(k.journal)
            pipe.hkeys(k.released)
            exists, stock, users, journal, released = await pipe.execute()
        parsed: dict[str, dict[str, Any]] = {}
        for oid, raw in journal.items():
            try:
                parsed[_s(oid)] = json.loads(raw)
            except ValueError:
                logger.error("flash sale %s: unreadable journal entry %r", sale_id, oid)
        return SaleSnapshot(
            loaded=bool(exists),
            stock=int(stock or 0),
            users={_s(u): int(q) for u, q in users.items()},
            journal=parsed,
            released={_s(x) for x in released},
        )

    async def stock(self, sale_id: int) -> int | None:
        raw = await self.redis.get(self.keys(sale_id).stock)
        return None if raw is None else int(raw)

    async def drop(self, sale_id: int) -> None:
        """Delete the sale's keys (tests and Redis-loss drills; the DB can rebuild them)."""
        await self.redis.delete(*self.keys(sale_id).all())


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
