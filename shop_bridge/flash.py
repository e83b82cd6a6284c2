"""Flash sales: creating them, and the buy pipeline, reserve -> write -> answer.

Start reading at :meth:`FlashSales.buy`; a buy goes through three steps, each in its own
piece, and the buyer's task waits exactly twice (the batch's script, then nothing more
until its row is committed):

1. **Reserve** in Redis (:class:`~shop_bridge.flash_batch.BuyBatcher` over
   :class:`~shop_bridge.redis_store.FlashStore`, ``lua/buy.lua``). The buys of one sale
   that arrive during the same turn of the event loop go to Redis as one script run
   (at most two runs in flight; buys arriving meanwhile wait and go together, so under
   load the batches grow instead of the number of commands). The script applies each buy
   of the batch in order, as if it ran alone: idempotency key, sale window, per-user
   limit, stock; a reserved buy is written to the sale's *journal* (order id -> who, how
   many, when, card), which is what reconciliation completes or gives back after a crash.
2. **Write** the order durably (:class:`~shop_bridge.order_writer.OrderWriter`). The order
   row is built before the reservation (:meth:`FlashSales.order_row`) and travels with
   it: the batcher hands each reserved row to the writer's queue itself (its ``sink``),
   with the buyer's future. Writer tasks commit whatever is queued as one transaction
   (the SQLite writer process or one asyncpg statement); after the commit a background
   task drops the rows' journal entries (:meth:`FlashSales.forget_journal`, the
   writer's ``on_durable``), never delaying a buyer.
3. **Answer**: the buyer's future resolves with its row's outcome (``inserted``, or
   ``exists`` for an order already written) and :meth:`FlashSales.buy` returns the order;
   ``order.created`` goes to the bus through the context's outbox (no await here).
   Refusals (sold out, over the limit, closed...) come back from step 1 as script
   statuses and become :class:`~shop_bridge.errors.ShopError` (:func:`buy_refusal`); a
   full writer queue gives the reservation back and answers ``503 busy``; a failed write
   keeps it in the journal and answers ``503 order_pending`` (retry with the same key).

Redis is a copy the database can rebuild: while :attr:`FlashStore.rebuilding` is set (at
start-up, and after Redis restarted, failed over or went back to an older state, see
:mod:`shop_bridge.redis_epoch`) a buy answers ``503 rebuilding`` before it reaches Redis;
:meth:`FlashSales.rebuild` rewrites a sale from its orders. The buy path pays one flag
test for it.

The sale's row with its broadcast's anchor and room (:class:`SaleCtx`) and the room's
card come from memory on the hot path; when an entry has expired, the buyers arriving
meanwhile share one database read (:meth:`FlashSales._once`). Closing, editing and
settling a live sale are in :mod:`shop_bridge.sale_admin`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import insert, select, update

from core.ids import random_hex
from shop_bridge.cache import BoundedCache
from shop_bridge.catalog import Catalog
from shop_bridge.context import ShopContext, primary_key
from shop_bridge.errors import ShopError, conflict, not_found, unknown_ref
from shop_bridge.events import FlashSaleCreated, OrderCreated, order_payload
from shop_bridge.flash_batch import BuyBatcher
from shop_bridge.models import ORDERS, SALES, SKUS
from shop_bridge.order_rows import EXISTS
from shop_bridge.order_writer import OrderWriter, QueueFull, WriteFailed
from shop_bridge.redis_store import BuyArgs, RedisRebuilding, idem_field
from shop_bridge.shelf import CardRef, Shelf
from shop_bridge.state import OrderState
from shop_bridge.views import sale_view

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SaleCtx:
    """A sale's row with its broadcast's anchor and danmaku room (what a buy needs)."""

    sale: dict[str, Any]
    anchor_id: str
    room: str


class FlashSales:
    """Flash sales and their buy pipeline (see the module's docstring)."""

    def __init__(
        self, ctx: ShopContext, catalog: Catalog, shelf: Shelf, write_workers: int = 1
    ) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.shelf = shelf
        self.store = ctx.store
        self.book = ctx.book
        config = ctx.config
        # step 2, the writer; after each commit it drops the rows' journal entries
        self.writer = OrderWriter(
            ctx.book,
            config.write_batch,
            config.write_queue,
            write_workers,
            on_durable=self.forget_journal,
        )
        # step 1, the batcher; it hands each reserved row to the writer
        self.batcher = BuyBatcher(ctx.store, sink=self.writer.submit)
        # a cancelled order's units go back to its sale, whose keys may have to be loaded
        ctx.book.loader = self.load_by_id
        self._sales: BoundedCache[int, SaleCtx] = BoundedCache(1000, ttl=10.0)
        self._cards: BoundedCache[str, CardRef] = shelf.card_cache
        self._loading: dict[tuple[str, Any], asyncio.Future[Any]] = {}
        shelf.on_broadcast_changed(self.forget_broadcast)

    def start(self) -> None:
        self.writer.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        await self.store.close()
        await self.writer.stop()

    # -- the sales ---------------------------------------------------------------------

    async def create(self, data: dict[str, Any], actor: str) -> dict[str, Any]:
        sku = await self.catalog.sku(data["sku_id"])
        if sku is None:
            raise unknown_ref("sku", data["sku_id"])
        await self.shelf.check_broadcast(data["broadcast_id"], "flash_sale")
        # anchors may not take stock from any SKU of the catalog: only from their shelf's
        await self.shelf.check_on_shelf(data["broadcast_id"], sku["product_id"])
        if data["ends_ms"] <= data["starts_ms"]:
            raise ShopError(
                400, "invalid_field", "ends_at: must be after starts_at", field="ends_at"
            )
        if data["sale_price_fen"] > sku["price_fen"]:
            raise ShopError(
                400,
                "invalid_field",
                "sale_price_fen: above the SKU's list price",
                field="sale_price_fen",
            )
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            carved = await conn.execute(
                update(SKUS)
                .where(SKUS.c.id == sku["id"], SKUS.c.stock >= data["sale_stock"])
                .values(stock=SKUS.c.stock - data["sale_stock"])
            )
            if carved.rowcount != 1:
                raise conflict(
                    "insufficient_stock",
                    f"sale_stock: the SKU has fewer than {data['sale_stock']} units "
                    "(a flash sale's stock is taken from the SKU's stock)",
                )
            res = await conn.execute(
                insert(SALES).values(
                    broadcast_id=data["broadcast_id"],
                    product_id=sku["product_id"],
                    sku_id=sku["id"],
                    sale_price_fen=data["sale_price_fen"],
                    sale_stock=data["sale_stock"],
                    per_user_limit=data["per_user_limit"],
                    starts_ms=data["starts_ms"],
                    ends_ms=data["ends_ms"],
                    created_ms=now,
                    created_by=actor,
                    carved=True,
                )
            )
            sale_id = primary_key(res)
        ctx = await self.sale_ctx(sale_id)
        assert ctx is not None
        await self.load(ctx.sale)
        view = await self.get(sale_id)
        await self.ctx.bus.emit(
            FlashSaleCreated(**view, room=ctx.room, anchor_id=ctx.anchor_id, ts=now / 1000)
        )
        return view

    async def sale_row(self, sale_id: int) -> dict[str, Any] | None:
        """The sale's row, read from the database (never a cached copy)."""
        async with self.ctx.engine.connect() as conn:
            row = (
                (await conn.execute(select(SALES).where(SALES.c.id == sale_id))).mappings().first()
            )
            return dict(row) if row is not None else None

    async def sale_ctx(self, sale_id: int) -> SaleCtx | None:
        """The sale with its broadcast's anchor and room (cached for a few seconds)."""
        ctx = self._sales.get(sale_id)
        if ctx is not None:
            return ctx
        sale = await self.sale_row(sale_id)
        if sale is None:
            return None
        anchor_id, room = await self.shelf.broadcast_info(sale["broadcast_id"])
        ctx = SaleCtx(sale, anchor_id, room)
        self._sales.put(sale_id, ctx)
        return ctx

    async def get(self, sale_id: int) -> dict[str, Any]:
        """The sale's API view with its remaining stock (from Redis, loading it if needed)."""
        sale = await self.sale_row(sale_id)
        if sale is None:
            raise not_found("flash_sale", sale_id)
        remaining = await self.store.stock(sale_id)
        if remaining is None:
            await self.load(sale)
            remaining = await self.store.stock(sale_id)
        return sale_view(sale, remaining, self.ctx.now_ms())

    async def holders(self, sale_id: int) -> list[dict[str, Any]]:
        """Orders of a sale that count against the per-user limit: those holding stock
        (not released yet) and those whose units went back to the SKU (a refund, or a
        cancellation after settlement: Redis keeps counting them for the buyer)."""
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    ORDERS.c.id,
                    ORDERS.c.user_id,
                    ORDERS.c.quantity,
                    ORDERS.c.idempotency_key,
                    ORDERS.c.state,
                    ORDERS.c.stock_released,
                    ORDERS.c.restock,
                ).where(ORDERS.c.flash_sale_id == sale_id)
            )
            return [
                dict(r)
                for r in rows.mappings()
                if not r["stock_released"] or r["restock"] in ("sku", "none")
            ]

    async def load_by_id(self, sale_id: int) -> bool:
        """:meth:`load` by id (False if there is no such sale or it was loaded)."""
        sale = await self.sale_row(sale_id)
        return False if sale is None else await self.load(sale)

    async def load(self, sale: dict[str, Any]) -> bool:
        """Create the sale's Redis keys from the database if they are missing."""
        fresh = await self.sale_row(sale["id"])  # never a cached copy: edits change it
        sale = fresh if fresh is not None else sale
        holders = await self.holders(sale["id"])
        held = sum(h["quantity"] for h in holders if not h["stock_released"])
        gone = sum(h["quantity"] for h in holders if h["stock_released"])
        settled = sale.get("settled_ms") is not None
        left = 0 if settled else sale["sale_stock"] - held - gone
        expire_at = self.expire_at(sale)
        loaded = await self.store.load(
            sale["id"],
            starts_ms=sale["starts_ms"],
            ends_ms=sale["ends_ms"],
            limit=sale["per_user_limit"],
            price_fen=sale["sale_price_fen"],
            stock_left=max(0, left),
            expire_at=expire_at,
            closed=sale.get("closed_ms") is not None,
            holders=[(h["user_id"], h["quantity"], h["idempotency_key"], h["id"]) for h in holders],
            settled=settled,
            cap=sale["sale_stock"],
        )
        if loaded:
            if settled:
                await self.ctx.redis.hset(
                    self.store.keys(sale["id"]).meta, "returned", sale["returned_stock"]
                )
            logger.info("flash sale %s loaded into Redis (%d held)", sale["id"], held)
        return loaded

    async def rebuild(self, sale_id: int) -> dict[str, int] | None:
        """Rewrite the sale's Redis state from the database, whatever Redis holds now (a
        restart, a failover or an older snapshot may have rolled it back): stock, per-user
        counts, idempotency keys, released orders and meta. Reservations still in the
        journal without an order count as held; a cancelled order whose units have not
        been marked released yet counts as back on sale (its release, before or after the
        rebuild, then finds it done: no unit lost or given back twice). Runs holding the
        sale's row (like an edit, a close or a settlement), with buys stopped
        (:mod:`shop_bridge.redis_epoch`).
        Returns what it wrote (None: no such sale)."""
        async with self.ctx.engine.begin() as conn:
            await conn.execute(
                update(SALES).where(SALES.c.id == sale_id).values(id=SALES.c.id)
            )  # the row's lock: an edit, close or settlement in progress commits first
            row = (await conn.execute(select(SALES).where(SALES.c.id == sale_id))).mappings()
            found = row.first()
            if found is None:
                return None
            sale = dict(found)
            o = ORDERS.c
            orders = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(
                            o.id,
                            o.user_id,
                            o.quantity,
                            o.idempotency_key,
                            o.stock_released,
                            o.restock,
                            o.state,
                            o.cancelled_ms,
                        ).where(o.flash_sale_id == sale_id)
                    )
                ).mappings()
            ]
            journal = (await self.store.snapshot(sale_id)).journal
            known = {r["id"] for r in orders}
            holders: list[tuple[str, int, str, str]] = []
            idem_only: list[tuple[str, str, str]] = []
            released: list[str] = []
            held = 0
            settled = sale["settled_ms"] is not None
            for r in orders:
                cancelled = r["state"] == OrderState.CANCELLED.value or r["cancelled_ms"]
                # a cancelled order whose release is under way (or not yet done) is counted
                # back on sale: its release then finds it done (``released``) and only marks
                # the row, whether its script ran before this rebuild or runs after it
                to_sale = not settled and cancelled and not r["stock_released"]
                if (r["stock_released"] and r["restock"] == "sale") or to_sale:
                    idem_only.append((r["user_id"], r["idempotency_key"], r["id"]))
                    released.append(r["id"])
                    continue
                holders.append((r["user_id"], r["quantity"], r["idempotency_key"], r["id"]))
                held += r["quantity"]
            for oid, e in journal.items():
                if oid not in known:  # reserved, not written yet: it holds its units
                    qty = int(e.get("q", 0))
                    holders.append((str(e.get("u")), qty, str(e.get("k")), oid))
                    held += qty
            left = 0 if settled else max(0, sale["sale_stock"] - held)
            await self.store.rebuild(
                sale_id,
                starts_ms=sale["starts_ms"],
                ends_ms=sale["ends_ms"],
                limit=sale["per_user_limit"],
                price_fen=sale["sale_price_fen"],
                stock_left=left,
                expire_at=self.expire_at(sale),
                closed=sale["closed_ms"] is not None,
                settled=settled,
                returned=(sale["returned_stock"] or 0) if settled else None,
                cap=sale["sale_stock"],
                holders=holders,
                idem_only=idem_only,
                released=released,
            )
        self.forget(sale_id)
        return {"stock": left, "held": held, "orders": len(orders), "in_flight": len(journal)}

    def expire_at(self, sale: dict[str, Any]) -> int:
        """When a sale's Redis keys expire (unix seconds)."""
        cfg = self.ctx.config
        return int(sale["ends_ms"] // 1000 + cfg.payment_timeout + cfg.sale_retention)

    def forget(self, sale_id: int) -> None:
        """Drop the cached context of a sale (it changed)."""
        self._sales.pop(sale_id)

    async def forget_broadcast(self, broadcast_id: str) -> None:
        """Drop the cached contexts of a broadcast's sales (its anchor or room changed)."""
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(SALES.c.id).where(SALES.c.broadcast_id == broadcast_id)
            )
            for row in rows:
                self._sales.pop(int(row[0]))

    async def ensure_loaded(self, sale_id: int) -> None:
        """Load the sale's Redis keys from the database if they are missing."""
        if not await self.ctx.redis.exists(self.store.keys(sale_id).meta):
            await self.load_by_id(sale_id)

    # -- buying: reserve -> write -> answer ----------------------------------------------

    async def buy(
        self,
        sale_id: int,
        user_id: str,
        quantity: int,
        idem_key: str,
        channel: str,
        extra: Callable[[str], dict[str, Any]] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Reserve in Redis, write the order durably, then answer. Returns (order, created).

        The sale's context and the room's card come from memory; when a cache entry has
        expired, the buyers arriving meanwhile share one database read (no herd of reads
        every expiry under a flash-sale burst)."""
        if self.store.rebuilding:  # Redis is being rebuilt from the database: no buys
            raise rebuilding()
        # what the order needs: the sale, its broadcast, the card shown in its room
        ctx = self._sales.get(sale_id)
        if ctx is None:
            ctx = await self._once(("sale", sale_id), lambda: self.sale_ctx(sale_id))
            if ctx is None:
                raise not_found("flash_sale", sale_id)
        sale = ctx.sale
        room = ctx.room
        card = self._cards.get(room)
        if card is None:
            card = await self._once(("card", room), lambda: self.shelf.card_for_room(room))
        now = self.ctx.now_ms()
        # 32 hex digits like before: the time first (orders of a burst land next to each
        # other in the primary-key and order-id indexes, not on random pages), then 80
        # random bits (ids stay unguessable)
        order_id = f"{now:012x}{random_hex(10)}"
        journal = {
            "u": user_id,
            "q": quantity,
            "k": idem_key,
            "t": now,
            "c": card.card_id or None,
            "cp": card.product_id or None,
            "ch": channel,
        }
        if extra is not None:  # sealed recipient, sharer: computed here, outside the batch
            journal["x"] = extra(order_id)
        # the row goes with the reservation: once reserved, the batcher hands it straight to
        # the order writer and this buyer wakes once, when it is committed
        row = self.order_row(ctx, order_id, journal, OrderState.PENDING_PAYMENT)
        args = BuyArgs(now, user_id, quantity, idem_key, order_id, journal)
        # 1. reserve (batched with the buys of this loop turn) -> 2. write (the batcher
        # hands the reserved row to the writer) -> the future resolves after the commit
        for _attempt in range(2):
            try:
                res = await self.batcher.buy(sale_id, args, row)
            except (QueueFull, WriteFailed) as exc:
                await self._not_written(ctx, row, exc)
            except (RedisRebuilding, RedisConnectionError):
                if self.store.rebuilding:  # refused before the script ran: nothing reserved
                    raise rebuilding() from None
                raise
            if isinstance(res, str) or res.status != "no_sale":
                break
            await self._once(("load", sale_id), lambda: self.load(sale))  # keys missing
        # 3. answer
        if isinstance(res, str):  # reserved and written (or already there)
            return await self._written(row, res)
        if res.status == "ok":  # reserved, not handed over (no sink): write it here
            return await self.commit(ctx, row)
        if res.status == "dup":
            return await self.durable(ctx, res.value, user_id, idem_key), False
        raise buy_refusal(res.status, res.value, sale)

    async def _once(self, key: tuple[str, Any], load: Callable[[], Awaitable[T]]) -> T:
        """Run ``load()`` once for all callers asking for ``key`` at the same time."""
        fut = self._loading.get(key)
        if fut is None:
            fut = asyncio.ensure_future(load())
            self._loading[key] = fut
            fut.add_done_callback(lambda _f: self._loading.pop(key, None))
        return cast(T, await asyncio.shield(fut))

    def order_row(
        self, ctx: SaleCtx, order_id: str, j: dict[str, Any], state: OrderState
    ) -> dict[str, Any]:
        """The order row of a reservation from its journal entry ``j`` (the buy path, and
        reconciliation completing a reservation after a crash)."""
        sale = ctx.sale
        created = int(j["t"])
        qty = int(j["q"])
        return {
            "id": order_id,
            "kind": "flash",
            "state": state.value,
            "user_id": str(j["u"]),
            "idempotency_key": str(j["k"]),
            "product_id": sale["product_id"],
            "sku_id": sale["sku_id"],
            "flash_sale_id": sale["id"],
            "quantity": qty,
            "unit_price_fen": sale["sale_price_fen"],
            "amount_fen": sale["sale_price_fen"] * qty,
            "broadcast_id": sale["broadcast_id"],
            "anchor_id": ctx.anchor_id,
            "card_id": j.get("c"),
            "card_product_id": j.get("cp"),
            "channel": str(j.get("ch") or ""),
            "created_ms": created,
            "updated_ms": created,
            "expires_ms": created + self.ctx.config.payment_timeout * 1000,
            "paid_ms": None,
            "transaction_id": "",
            "stock_released": False,
            **(j.get("x") or {}),
        }

    async def commit(self, ctx: SaleCtx, row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Write a reserved order's row and answer with it (see :meth:`_written`); the path
        of a reservation not handed to the writer by the batcher."""
        try:
            outcome = await self.writer.write(row)
        except (QueueFull, WriteFailed) as exc:
            await self._not_written(ctx, row, exc)
        return await self._written(row, outcome)

    async def _not_written(self, ctx: SaleCtx, row: dict[str, Any], exc: Exception) -> NoReturn:
        """A reserved order whose row was not written: the buyer is told to retry (after
        the reservation is given back, when nothing was queued)."""
        if isinstance(exc, QueueFull):
            # Nothing was written: give the reservation back and let the buyer retry.
            await self.store.release(
                ctx.sale["id"],
                order_id=row["id"],
                user=row["user_id"],
                qty=row["quantity"],
                now_ms=self.ctx.now_ms(),
            )
            await self.ctx.redis.hdel(
                self.store.keys(ctx.sale["id"]).idem,
                idem_field(row["user_id"], row["idempotency_key"]),
            )
            raise ShopError(503, "busy", "too many orders in flight; retry shortly") from None
        logger.error("order %s not written (%s); reconciliation will finish it", row["id"], exc)
        raise ShopError(
            503,
            "order_pending",
            "the order could not be confirmed yet; retry with the same idempotency_key",
        ) from None

    async def _written(self, row: dict[str, Any], outcome: str) -> tuple[dict[str, Any], bool]:
        """The answer for a committed row: the new order, or the one already written."""
        if outcome == EXISTS:
            existing = await self.book.get(row["id"]) or await self.book.get_by_idem(
                row["user_id"], row["idempotency_key"]
            )
            if existing is None:
                raise ShopError(503, "order_pending", "retry with the same idempotency_key")
            return existing, False
        # the payload as a dict (no dataclass per buy): OrderCreated's JSON
        self.ctx.emit_later(OrderCreated.TOPIC, order_payload(row, row["user_id"]))
        return row, True

    async def forget_journal(self, rows: list[dict[str, Any]]) -> None:
        """After a commit: drop the rows' reservations from the journal (one round trip)."""
        by_sale: dict[int, list[str]] = {}
        for row in rows:
            if row["kind"] == "flash" and row["flash_sale_id"] is not None:
                by_sale.setdefault(row["flash_sale_id"], []).append(row["id"])
        await self.store.forget_journal(by_sale)

    async def durable(
        self, ctx: SaleCtx, order_id: str, user_id: str, idem_key: str
    ) -> dict[str, Any]:
        """The order of an earlier identical request, writing it from the journal if needed."""
        for _ in range(3):
            order = await self.book.get(order_id)
            if order is not None:
                return order
            raw = await self.ctx.redis.hget(self.store.keys(ctx.sale["id"]).journal, order_id)
            if raw is None:
                await asyncio.sleep(0.05)
                continue
            row = self.order_row(ctx, order_id, json.loads(raw), OrderState.PENDING_PAYMENT)
            order, _created = await self.commit(ctx, row)
            return order
        raise ShopError(
            503, "order_pending", "the first request is still being written; retry shortly"
        )


def rebuilding() -> ShopError:
    return ShopError(
        503, "rebuilding", "flash sales are being checked against the orders; retry shortly"
    )


def buy_refusal(status: str, value: str, sale: dict[str, Any]) -> ShopError:
    """The refusal a buyer gets for a script status other than ok/dup."""
    if status == "sold_out":
        return conflict("sold_out", "the flash sale is sold out")
    if status == "limit":
        return conflict(
            "limit_reached",
            f"at most {sale['per_user_limit']} per buyer; you already have {value}",
        )
    if status == "not_started":
        return conflict("sale_not_started", "the flash sale has not started yet")
    if status == "closed":
        return conflict("sale_closed", "the flash sale was closed by the seller")
    if status == "ended":
        return conflict("sale_ended", "the flash sale is over")
    return ShopError(503, "sale_unavailable", f"flash sale state unknown ({status})")
