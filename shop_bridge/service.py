"""The shop's service layer: catalog, goods shelf, explaining cards, flash sales, orders,
payments, timeouts, reconciliation, lottery prizes and sales figures.

HTTP handlers (``shop_bridge.api``) only decode and validate requests and call methods
here; everything raises :class:`~shop_bridge.errors.ShopError` (or IllegalTransition) for
refusals. The database is the record of truth; Redis holds hot flash-sale stock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from core.bus import Event, EventBus
from core.ids import random_hex
from shop_bridge import payments
from shop_bridge.cache import BoundedCache
from shop_bridge.config import ShopConfig
from shop_bridge.errors import ProviderUnavailable, ShopError, conflict, not_found, unknown_ref
from shop_bridge.flash_batch import BuyBatcher
from shop_bridge.models import (
    BROADCASTS,
    CARDS,
    COUPONS,
    GRANTS,
    NOTIFICATIONS,
    ORDERS,
    PRODUCTS,
    SALES,
    SHELF,
    SKUS,
    TRANSITIONS,
)
from shop_bridge.orders import (
    EXISTS,
    OrderBook,
    OrderWriter,
    QueueFull,
    WriteFailed,
    order_event,
)
from shop_bridge.redis_store import BuyArgs, FlashStore, idem_field
from shop_bridge.sale_admin import FlashSaleAdmin
from shop_bridge.state import PAID_STATES, IllegalTransition, OrderState

logger = logging.getLogger(__name__)

T = TypeVar("T")


MAX_SALE_STOCK = 100_000
MAX_SHELF = 500


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class CardRef:
    card_id: int
    product_id: int


NO_CARD = CardRef(0, 0)


@dataclass(frozen=True, slots=True)
class SaleCtx:
    sale: dict[str, Any]
    anchor_id: str
    room: str


class ShopService:
    def __init__(
        self,
        config: ShopConfig,
        engine: AsyncEngine,
        redis: Any,
        bus: EventBus,
        provider: payments.PaymentProvider,
        payment_key: bytes,
        notify_url: Callable[[], str],
        clock: Callable[[], float] = time.time,
        write_workers: int = 1,
    ) -> None:
        self.config = config
        self.engine = engine
        self.redis = redis
        self.bus = bus
        self.provider = provider
        self.payment_key = payment_key
        self.notify_url = notify_url
        self.clock = clock
        self.flash = FlashStore(redis, config.redis_prefix)
        self.book = OrderBook(engine, bus, self.flash, clock, loader=self._load_sale_by_id)
        self.sale_admin = FlashSaleAdmin(self)
        self.writer = OrderWriter(
            self.book,
            config.write_batch,
            config.write_queue,
            write_workers,
            on_durable=self._forget_journal,
        )
        self.batcher = BuyBatcher(self.flash, sink=self.writer.submit)
        self._loading: dict[tuple[str, Any], asyncio.Future[Any]] = {}
        self._cards: BoundedCache[str, CardRef] = BoundedCache(config.card_cache_rooms, ttl=30.0)
        self._sales: BoundedCache[int, SaleCtx] = BoundedCache(1000, ttl=10.0)
        self._tasks: list[asyncio.Task[None]] = []
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(10000)
        self.outbox_dropped = 0
        self._unsubscribe: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use another wall clock (tests and drills); seconds since the epoch."""
        self.clock = clock
        self.book.clock = clock

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, background: bool = True) -> None:
        self.writer.start()
        self._tasks.append(asyncio.get_running_loop().create_task(self._drain_outbox()))
        self._unsubscribe.append(self.bus.subscribe("lottery.prize", self._on_prize))
        self._unsubscribe.append(self.bus.subscribe("card.*", self._on_card_event))
        self._unsubscribe.append(self.bus.subscribe("broadcast.*", self._on_broadcast_event))
        try:
            report = await self.reconcile()
            if report["completed"] or report["restored"] or report["released"]:
                logger.warning("startup reconciliation: %s", report)
        except Exception:
            logger.exception("startup reconciliation failed; the periodic one will retry")
        if background:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._sweep_loop(), name="shop:sweeper"))
            self._tasks.append(loop.create_task(self._reconcile_loop(), name="shop:reconcile"))

    async def stop(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush_events(), 5)
        for unsub in self._unsubscribe:
            unsub()
        self._unsubscribe.clear()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await self.batcher.stop()
        await self.flash.close()
        await self.writer.stop()

    def _emit(self, topic: str, data: dict[str, Any]) -> None:
        """Publish later from one task: a burst of buyers never opens a burst of bus calls."""
        try:
            self._outbox.put_nowait((topic, data))
        except asyncio.QueueFull:
            self.outbox_dropped += 1
            if self.outbox_dropped == 1 or self.outbox_dropped % 1000 == 0:
                logger.warning("event outbox full: %d events dropped", self.outbox_dropped)

    async def _drain_outbox(self) -> None:
        """Hand queued events to the bus, everything queued so far in one call (with the
        Redis bus: one pipelined round trip per batch, not one per event)."""
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < 1000 and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                await self.bus.publish_many(batch)
            except Exception:
                logger.exception("publishing %d events failed", len(batch))
            finally:
                for _ in batch:
                    self._outbox.task_done()

    async def flush_events(self) -> None:
        """Wait until queued events are handed to the bus (tests, shutdown)."""
        await self._outbox.join()

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("payment timeout sweep failed")

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:
                logger.exception("reconciliation failed")

    # -- products ----------------------------------------------------------------------

    async def create_product(self, data: dict[str, Any]) -> dict[str, Any]:
        now = self.now_ms()
        async with self.engine.begin() as conn:
            res = await conn.execute(
                insert(PRODUCTS).values(
                    title=data["title"],
                    description=data.get("description", ""),
                    images=data.get("images", []),
                    page_path=data.get("page_path", ""),
                    created_ms=now,
                    updated_ms=now,
                )
            )
            pid = _pk(res)
            for sku in data["skus"]:
                await conn.execute(
                    insert(SKUS).values(
                        product_id=pid,
                        code=sku.get("code", ""),
                        specs=sku.get("specs", {}),
                        price_fen=sku["price_fen"],
                        stock=sku["stock"],
                        created_ms=now,
                    )
                )
        product = await self.get_product(pid)
        assert product is not None
        return product

    async def get_product(self, product_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(PRODUCTS).where(PRODUCTS.c.id == product_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            skus = (
                await conn.execute(
                    select(SKUS).where(SKUS.c.product_id == product_id).order_by(SKUS.c.id)
                )
            ).mappings()
            return _product_view(dict(row), [dict(s) for s in skus])

    async def list_products(self, limit: int, after_id: int) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(PRODUCTS)
                        .where(PRODUCTS.c.id > after_id)
                        .order_by(PRODUCTS.c.id)
                        .limit(limit)
                    )
                ).mappings()
            ]
            ids = [r["id"] for r in rows]
            skus: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                for s in (
                    await conn.execute(
                        select(SKUS).where(SKUS.c.product_id.in_(ids)).order_by(SKUS.c.id)
                    )
                ).mappings():
                    skus[s["product_id"]].append(dict(s))
        return [_product_view(r, skus[r["id"]]) for r in rows]

    async def update_product(self, product_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(PRODUCTS)
                .where(PRODUCTS.c.id == product_id)
                .values(**changes, updated_ms=self.now_ms())
            )
            if res.rowcount != 1:
                raise not_found("product", product_id)
        product = await self.get_product(product_id)
        assert product is not None
        return product

    async def add_sku(self, product_id: int, sku: dict[str, Any]) -> dict[str, Any]:
        if await self.get_product(product_id) is None:
            raise not_found("product", product_id)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(SKUS).values(
                    product_id=product_id,
                    code=sku.get("code", ""),
                    specs=sku.get("specs", {}),
                    price_fen=sku["price_fen"],
                    stock=sku["stock"],
                    created_ms=self.now_ms(),
                )
            )
        product = await self.get_product(product_id)
        assert product is not None
        return product

    async def update_sku(self, sku_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.engine.begin() as conn:
            values: dict[str, Any] = {
                k: v for k, v in changes.items() if k in ("price_fen", "stock", "specs", "code")
            }
            if "stock_delta" in changes:
                values["stock"] = SKUS.c.stock + changes["stock_delta"]
            q = update(SKUS).where(SKUS.c.id == sku_id).values(**values)
            if changes.get("stock_delta", 0) < 0:
                q = q.where(SKUS.c.stock >= -changes["stock_delta"])
            res = await conn.execute(q)
            if res.rowcount != 1:
                exists = (await conn.execute(select(SKUS.c.id).where(SKUS.c.id == sku_id))).first()
                if exists is None:
                    raise not_found("sku", sku_id)
                raise conflict("insufficient_stock", "stock would go below zero")
            row = (await conn.execute(select(SKUS).where(SKUS.c.id == sku_id))).mappings().one()
        return _sku_view(dict(row))

    async def _sku(self, sku_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(SKUS).where(SKUS.c.id == sku_id))).mappings().first()
            return dict(row) if row is not None else None

    # -- broadcasts (what control tells us) ---------------------------------------------

    async def set_broadcast(self, broadcast_id: str, anchor_id: str, room: str) -> dict[str, Any]:
        values = {"anchor_id": anchor_id, "room": room or broadcast_id, "updated_ms": self.now_ms()}
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(BROADCASTS).where(BROADCASTS.c.broadcast_id == broadcast_id).values(**values)
            )
            if res.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(BROADCASTS).values(broadcast_id=broadcast_id, **values)
                        )
                except IntegrityError:
                    await conn.execute(
                        update(BROADCASTS)
                        .where(BROADCASTS.c.broadcast_id == broadcast_id)
                        .values(**values)
                    )
        for sale_id in await self._sale_ids(broadcast_id):
            self._sales.pop(sale_id)
        return {"broadcast_id": broadcast_id, **values}

    async def broadcast_info(self, broadcast_id: str) -> tuple[str, str]:
        """(anchor_id, room) of a broadcast; the room defaults to the broadcast id."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(BROADCASTS.c.anchor_id, BROADCASTS.c.room).where(
                        BROADCASTS.c.broadcast_id == broadcast_id
                    )
                )
            ).first()
        if row is None:
            return "", broadcast_id
        return str(row[0]), str(row[1] or broadcast_id)

    async def _on_broadcast_event(self, event: Event) -> None:
        """Learn a broadcast's anchor and danmaku room from control's ``broadcast.*`` events
        (``{broadcast_id, anchor_id, app, stream, ...}``; the room is ``<app>/<stream>``)."""
        if event.topic not in ("broadcast.created", "broadcast.updated"):
            return
        data = event.data
        bid = data.get("broadcast_id", data.get("id"))
        anchor = data.get("anchor_id")
        if not isinstance(bid, str | int) or isinstance(bid, bool) or anchor is None:
            return
        room = data.get("room")
        if not isinstance(room, str):
            stream = data.get("stream")
            app = data.get("app") if isinstance(data.get("app"), str) else "live"
            room = f"{app}/{stream}" if isinstance(stream, str) and stream else ""
        await self.set_broadcast(str(bid)[:64], str(anchor)[:64], room[:128])
        pids = data.get("product_ids")
        changed = data.get("changed")
        if isinstance(pids, list) and (
            (event.topic == "broadcast.created" and pids)
            or (isinstance(changed, list) and "product_ids" in changed)
        ):
            await self.shelf_from_broadcast(str(bid)[:64], pids)

    async def shelf_from_broadcast(self, broadcast_id: str, product_ids: list[Any]) -> None:
        """Fill the shelf from the products control planned for the broadcast: the shelf
        becomes that list in that order; products already on it keep their on/off-shelf
        flag; ids the shop does not know are skipped (logged)."""
        wanted: list[int] = []
        for p in product_ids[:MAX_SHELF]:
            if isinstance(p, int) and not isinstance(p, bool) and p > 0 and p not in wanted:
                wanted.append(p)
        async with self.engine.connect() as conn:
            known = (
                {
                    int(r[0])
                    for r in await conn.execute(
                        select(PRODUCTS.c.id).where(PRODUCTS.c.id.in_(wanted))
                    )
                }
                if wanted
                else set()
            )
            flags = {
                int(r[0]): bool(r[1])
                for r in await conn.execute(
                    select(SHELF.c.product_id, SHELF.c.on_shelf)
                    .where(SHELF.c.broadcast_id == broadcast_id)
                    .order_by(SHELF.c.position)
                )
            }
        missing = [p for p in wanted if p not in known]
        if missing:
            logger.warning(
                "broadcast %s lists products the shop does not know: %s", broadcast_id, missing
            )
        items = [(p, flags.get(p, True)) for p in wanted if p in known]
        if [p for p, _ in items] == list(flags) and all(flags[p] == on for p, on in items):
            return  # already that shelf (a repeated or unrelated update)
        await self.put_shelf(broadcast_id, items, "control")

    async def _sale_ids(self, broadcast_id: str) -> list[int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(SALES.c.id).where(SALES.c.broadcast_id == broadcast_id)
            )
            return [int(r[0]) for r in rows]

    # -- goods shelf ---------------------------------------------------------------------

    async def put_shelf(
        self, broadcast_id: str, items: list[tuple[int, bool]], actor: str
    ) -> list[dict[str, Any]]:
        """Replace the shelf: products in display order with their on/off-shelf flag."""
        ids = [pid for pid, _ in items]
        if len(set(ids)) != len(ids):
            raise ShopError(400, "invalid_field", "items: a product appears twice")
        now = self.now_ms()
        async with self.engine.begin() as conn:
            if ids:
                found = {
                    r[0]
                    for r in await conn.execute(select(PRODUCTS.c.id).where(PRODUCTS.c.id.in_(ids)))
                }
                missing = [i for i in ids if i not in found]
                if missing:
                    raise unknown_ref("product", missing[0])
            old = {
                r[0]: r[1]
                for r in await conn.execute(
                    select(SHELF.c.product_id, SHELF.c.added_ms).where(
                        SHELF.c.broadcast_id == broadcast_id
                    )
                )
            }
            await conn.execute(delete(SHELF).where(SHELF.c.broadcast_id == broadcast_id))
            if items:
                await conn.execute(
                    insert(SHELF),
                    [
                        {
                            "broadcast_id": broadcast_id,
                            "product_id": pid,
                            "position": pos,
                            "on_shelf": on,
                            "added_ms": old.get(pid, now),
                            "updated_ms": now,
                        }
                        for pos, (pid, on) in enumerate(items)
                    ],
                )
        shelf = await self.get_shelf(broadcast_id)
        await self.bus.publish(
            "shelf.updated",
            {"broadcast_id": broadcast_id, "product_ids": ids, "actor": actor, "ts": now / 1000},
        )
        return shelf

    async def set_on_shelf(
        self, broadcast_id: str, product_id: int, on_shelf: bool, actor: str
    ) -> list[dict[str, Any]]:
        now = self.now_ms()
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(SHELF)
                .where(SHELF.c.broadcast_id == broadcast_id, SHELF.c.product_id == product_id)
                .values(on_shelf=on_shelf, updated_ms=now)
            )
            if res.rowcount != 1:
                raise not_found("shelf_item", f"{broadcast_id}/{product_id}")
        await self.bus.publish(
            "shelf.updated",
            {
                "broadcast_id": broadcast_id,
                "product_id": product_id,
                "on_shelf": on_shelf,
                "actor": actor,
                "ts": now / 1000,
            },
        )
        return await self.get_shelf(broadcast_id)

    async def get_shelf(self, broadcast_id: str) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(SHELF)
                        .where(SHELF.c.broadcast_id == broadcast_id)
                        .order_by(SHELF.c.position)
                        .limit(MAX_SHELF)
                    )
                ).mappings()
            ]
        out = []
        for r in rows:
            product = await self.get_product(r["product_id"])
            out.append(
                {
                    "position": r["position"],
                    "on_shelf": r["on_shelf"],
                    "product": product,
                }
            )
        return out

    # -- the "now explaining" card ---------------------------------------------------------

    async def push_card(
        self,
        broadcast_id: str,
        product_id: int,
        sku_id: int | None,
        flash_sale_id: int | None,
        actor: str,
    ) -> dict[str, Any]:
        anchor_id, room = await self.broadcast_info(broadcast_id)
        async with self.engine.connect() as conn:
            shelf = (
                await conn.execute(
                    select(SHELF.c.on_shelf).where(
                        SHELF.c.broadcast_id == broadcast_id, SHELF.c.product_id == product_id
                    )
                )
            ).first()
        if shelf is None:
            raise conflict("not_on_shelf", f"product {product_id} is not on this broadcast's shelf")
        if not shelf[0]:
            raise conflict("off_shelf", f"product {product_id} is off shelf")
        if sku_id is not None:
            sku = await self._sku(sku_id)
            if sku is None or sku["product_id"] != product_id:
                raise unknown_ref("sku", sku_id)
        if flash_sale_id is not None:
            ctx = await self._sale_ctx(flash_sale_id)
            if ctx is None or ctx.sale["product_id"] != product_id:
                raise unknown_ref("flash_sale", flash_sale_id)
        previous: dict[str, Any] | None = None
        for _attempt in range(5):
            now = self.now_ms()
            try:
                async with self.engine.begin() as conn:
                    prev = (
                        (
                            await conn.execute(
                                select(CARDS).where(
                                    CARDS.c.room == room, CARDS.c.cleared_ms.is_(None)
                                )
                            )
                        )
                        .mappings()
                        .first()
                    )
                    if prev is not None:
                        await conn.execute(
                            update(CARDS)
                            .where(CARDS.c.id == prev["id"])
                            .values(cleared_ms=now, cleared_by=actor)
                        )
                    res = await conn.execute(
                        insert(CARDS).values(
                            broadcast_id=broadcast_id,
                            room=room,
                            product_id=product_id,
                            sku_id=sku_id,
                            flash_sale_id=flash_sale_id,
                            actor=actor,
                            pushed_ms=now,
                        )
                    )
                    card_id = _pk(res)
                previous = dict(prev) if prev is not None else None
                break
            except IntegrityError:
                await asyncio.sleep(0.005)  # another push for this room won; go again
        else:
            raise conflict("card_busy", "another card is being pushed to this room; retry")
        self._cards.put(room, CardRef(card_id, product_id))
        if previous is not None:
            previous.update(cleared_ms=now, cleared_by=actor)
            await self.bus.publish("card.cleared", _card_event(previous, "replaced", anchor_id))
        card = await self._card(card_id)
        await self.bus.publish("card.pushed", _card_event(card, "", anchor_id))
        return _card_view(card)

    async def clear_card(self, broadcast_id: str, actor: str) -> dict[str, Any]:
        anchor_id, room = await self.broadcast_info(broadcast_id)
        now = self.now_ms()
        async with self.engine.begin() as conn:
            prev = await _active_card(conn, room)
            if prev is None:
                raise not_found("card", f"shown in room {room}")
            res = await conn.execute(
                update(CARDS)
                .where(CARDS.c.id == prev["id"], CARDS.c.cleared_ms.is_(None))
                .values(cleared_ms=now, cleared_by=actor)
            )
            if res.rowcount != 1:
                raise not_found("card", f"shown in room {room}")
        self._cards.put(room, NO_CARD)
        card = {**dict(prev), "cleared_ms": now, "cleared_by": actor}
        await self.bus.publish("card.cleared", _card_event(card, "cleared", anchor_id))
        return _card_view(card)

    async def _card(self, card_id: int) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(CARDS).where(CARDS.c.id == card_id))).mappings().one()
            return dict(row)

    async def current_card(self, broadcast_id: str) -> dict[str, Any] | None:
        _anchor, room = await self.broadcast_info(broadcast_id)
        async with self.engine.connect() as conn:
            row = await _active_card(conn, room)
        return _card_view(dict(row)) if row is not None else None

    async def card_history(self, broadcast_id: str, limit: int) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(CARDS)
                    .where(CARDS.c.broadcast_id == broadcast_id)
                    .order_by(CARDS.c.pushed_ms.desc(), CARDS.c.id.desc())
                    .limit(limit)
                )
            ).mappings()
            return [_card_view(dict(r)) for r in rows]

    async def _card_for_room(self, room: str) -> CardRef:
        ref = self._cards.get(room)
        if ref is not None:
            return ref
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(CARDS.c.id, CARDS.c.product_id).where(
                        CARDS.c.room == room, CARDS.c.cleared_ms.is_(None)
                    )
                )
            ).first()
        ref = CardRef(int(row[0]), int(row[1])) if row is not None else NO_CARD
        self._cards.put(room, ref)
        return ref

    def _on_card_event(self, event: Event) -> None:
        """Keep the attribution cache right when another node pushes or clears a card."""
        room = event.data.get("room")
        if not isinstance(room, str):
            return
        if event.topic == "card.pushed":
            cid, pid = event.data.get("card_id"), event.data.get("product_id")
            if isinstance(cid, int) and isinstance(pid, int):
                self._cards.put(room, CardRef(cid, pid))
        elif event.topic == "card.cleared" and event.data.get("reason") != "replaced":
            current = self._cards.get(room)
            if current is None or current.card_id == event.data.get("card_id"):
                self._cards.put(room, NO_CARD)

    # -- flash sales ---------------------------------------------------------------------

    async def create_flash_sale(self, data: dict[str, Any], actor: str) -> dict[str, Any]:
        sku = await self._sku(data["sku_id"])
        if sku is None:
            raise unknown_ref("sku", data["sku_id"])
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
        now = self.now_ms()
        async with self.engine.begin() as conn:
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
            sale_id = _pk(res)
        ctx = await self._sale_ctx(sale_id)
        assert ctx is not None
        await self._load_sale(ctx.sale)
        view = await self.get_flash_sale(sale_id)
        await self.bus.publish(
            "flash_sale.created",
            {**view, "room": ctx.room, "anchor_id": ctx.anchor_id, "ts": now / 1000},
        )
        return view

    async def _sale_row(self, sale_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(SALES).where(SALES.c.id == sale_id))).mappings().first()
            )
            return dict(row) if row is not None else None

    async def _sale_ctx(self, sale_id: int) -> SaleCtx | None:
        ctx = self._sales.get(sale_id)
        if ctx is not None:
            return ctx
        sale = await self._sale_row(sale_id)
        if sale is None:
            return None
        anchor_id, room = await self.broadcast_info(sale["broadcast_id"])
        ctx = SaleCtx(sale, anchor_id, room)
        self._sales.put(sale_id, ctx)
        return ctx

    async def get_flash_sale(self, sale_id: int) -> dict[str, Any]:
        sale = await self._sale_row(sale_id)
        if sale is None:
            raise not_found("flash_sale", sale_id)
        remaining = await self.flash.stock(sale_id)
        if remaining is None:
            await self._load_sale(sale)
            remaining = await self.flash.stock(sale_id)
        return _sale_view(sale, remaining, self.now_ms())

    async def _holders(self, sale_id: int) -> list[dict[str, Any]]:
        """Orders of a sale that count against the per-user limit: those holding stock
        (not released yet) and those whose units went back to the SKU (a refund, or a
        cancellation after settlement: Redis keeps counting them for the buyer)."""
        async with self.engine.connect() as conn:
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

    async def _load_sale_by_id(self, sale_id: int) -> bool:
        sale = await self._sale_row(sale_id)
        return False if sale is None else await self._load_sale(sale)

    async def _load_sale(self, sale: dict[str, Any]) -> bool:
        """Create the sale's Redis keys from the database if they are missing."""
        fresh = await self._sale_row(sale["id"])  # never a cached copy: edits change it
        sale = fresh if fresh is not None else sale
        holders = await self._holders(sale["id"])
        held = sum(h["quantity"] for h in holders if not h["stock_released"])
        gone = sum(h["quantity"] for h in holders if h["stock_released"])
        settled = sale.get("settled_ms") is not None
        left = 0 if settled else sale["sale_stock"] - held - gone
        expire_at = (
            (sale["ends_ms"] // 1000) + self.config.payment_timeout + self.config.sale_retention
        )
        loaded = await self.flash.load(
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
                await self.redis.hset(
                    self.flash.keys(sale["id"]).meta, "returned", sale["returned_stock"]
                )
            logger.info("flash sale %s loaded into Redis (%d held)", sale["id"], held)
        return loaded

    async def buy(
        self, sale_id: int, user_id: str, quantity: int, idem_key: str, channel: str
    ) -> tuple[dict[str, Any], bool]:
        """Reserve in Redis, write the order durably, then answer. Returns (order, created).

        The sale's context and the room's card come from memory; when a cache entry has
        expired, the buyers arriving meanwhile share one database read (no herd of reads
        every expiry under a flash-sale burst)."""
        ctx = self._sales.get(sale_id)
        if ctx is None:
            ctx = await self._once(("sale", sale_id), lambda: self._sale_ctx(sale_id))
            if ctx is None:
                raise not_found("flash_sale", sale_id)
        sale = ctx.sale
        room = ctx.room
        card = self._cards.get(room)
        if card is None:
            card = await self._once(("card", room), lambda: self._card_for_room(room))
        now = self.now_ms()
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
        # the row goes with the reservation: once reserved, the batcher hands it straight to
        # the order writer and this buyer wakes once, when it is committed
        row = self._flash_row(ctx, order_id, journal, OrderState.PENDING_PAYMENT)
        args = BuyArgs(now, user_id, quantity, idem_key, order_id, journal)
        for _attempt in range(2):
            try:
                res = await self.batcher.buy(sale_id, args, row)
            except (QueueFull, WriteFailed) as exc:
                await self._not_written(ctx, row, exc)
            if isinstance(res, str) or res.status != "no_sale":
                break
            await self._once(("load", sale_id), lambda: self._load_sale(sale))
        if isinstance(res, str):  # reserved and written (or already there)
            return await self._written(row, res)
        if res.status == "ok":  # reserved, not handed over (no sink): write it here
            return await self._commit_flash(ctx, row)
        if res.status == "dup":
            return await self._durable(ctx, res.value, user_id, idem_key), False
        raise _buy_refusal(res.status, res.value, sale)

    async def _once(self, key: tuple[str, Any], load: Callable[[], Awaitable[T]]) -> T:
        """Run ``load()`` once for all callers asking for ``key`` at the same time."""
        fut = self._loading.get(key)
        if fut is None:
            fut = asyncio.ensure_future(load())
            self._loading[key] = fut
            fut.add_done_callback(lambda _f: self._loading.pop(key, None))
        return cast(T, await asyncio.shield(fut))

    def _flash_row(
        self, ctx: SaleCtx, order_id: str, j: dict[str, Any], state: OrderState
    ) -> dict[str, Any]:
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
            "expires_ms": created + self.config.payment_timeout * 1000,
            "paid_ms": None,
            "transaction_id": "",
            "stock_released": False,
        }

    async def _commit_flash(self, ctx: SaleCtx, row: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Write a reserved order's row and answer with it (see :meth:`_written`)."""
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
            await self.flash.release(
                ctx.sale["id"],
                order_id=row["id"],
                user=row["user_id"],
                qty=row["quantity"],
                now_ms=self.now_ms(),
            )
            await self.redis.hdel(
                self.flash.keys(ctx.sale["id"]).idem,
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
        self._emit("order.created", order_event(row, row["user_id"]))
        return row, True

    async def _forget_journal(self, rows: list[dict[str, Any]]) -> None:
        """After a commit: drop the rows' reservations from the journal (one round trip)."""
        by_sale: dict[int, list[str]] = {}
        for row in rows:
            if row["kind"] == "flash" and row["flash_sale_id"] is not None:
                by_sale.setdefault(row["flash_sale_id"], []).append(row["id"])
        await self.flash.forget_journal(by_sale)

    async def _durable(
        self, ctx: SaleCtx, order_id: str, user_id: str, idem_key: str
    ) -> dict[str, Any]:
        """The order of an earlier identical request, writing it from the journal if needed."""
        for _ in range(3):
            order = await self.book.get(order_id)
            if order is not None:
                return order
            raw = await self.redis.hget(self.flash.keys(ctx.sale["id"]).journal, order_id)
            if raw is None:
                await asyncio.sleep(0.05)
                continue
            row = self._flash_row(ctx, order_id, json.loads(raw), OrderState.PENDING_PAYMENT)
            order, _created = await self._commit_flash(ctx, row)
            return order
        raise ShopError(
            503, "order_pending", "the first request is still being written; retry shortly"
        )

    # -- normal orders (stock in the database) ----------------------------------------------

    async def place_order(
        self,
        user_id: str,
        sku_id: int,
        quantity: int,
        broadcast_id: str,
        idem_key: str,
        channel: str,
        coupon_id: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Place an order at list price, less a coupon of the buyer's if one is given.

        The coupon is taken in the same transaction as the stock (of two orders with the
        same coupon, one wins: 409 ``coupon_used`` for the other). An order whose amount is
        0 after the coupon is paid at once (there is nothing to pay)."""
        existing = await self.book.get_by_idem(user_id, idem_key)
        if existing is not None:
            return existing, False
        sku = await self._sku(sku_id)
        if sku is None:
            raise unknown_ref("sku", sku_id)
        anchor_id, room = ("", "")
        card = NO_CARD
        if broadcast_id:
            anchor_id, room = await self.broadcast_info(broadcast_id)
            card = await self._card_for_room(room)
        now = self.now_ms()
        row = {
            "id": new_id(),
            "kind": "normal",
            "state": OrderState.PENDING_PAYMENT.value,
            "user_id": user_id,
            "idempotency_key": idem_key,
            "product_id": sku["product_id"],
            "sku_id": sku_id,
            "flash_sale_id": None,
            "quantity": quantity,
            "unit_price_fen": sku["price_fen"],
            "amount_fen": sku["price_fen"] * quantity,
            "broadcast_id": broadcast_id,
            "anchor_id": anchor_id,
            "card_id": card.card_id or None,
            "card_product_id": card.product_id or None,
            "channel": channel,
            "created_ms": now,
            "updated_ms": now,
            "expires_ms": now + self.config.payment_timeout * 1000,
            "paid_ms": None,
            "transaction_id": "",
            "stock_released": False,
            "coupon_id": coupon_id,
            "discount_fen": 0,
        }
        try:
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    update(SKUS)
                    .where(SKUS.c.id == sku_id, SKUS.c.stock >= quantity)
                    .values(stock=SKUS.c.stock - quantity)
                )
                if res.rowcount != 1:
                    raise conflict("sold_out", f"SKU {sku_id} has fewer than {quantity} in stock")
                if coupon_id is not None:
                    value = await _take_coupon(conn, coupon_id, user_id, row["id"])
                    row["discount_fen"] = min(value, row["amount_fen"])
                    row["amount_fen"] -= row["discount_fen"]
                free = row["amount_fen"] == 0
                if free:
                    row.update(state=OrderState.PAID.value, paid_ms=now, expires_ms=None)
                await conn.execute(insert(ORDERS).values(**row))
                await conn.execute(
                    insert(TRANSITIONS),
                    [
                        {
                            "order_id": row["id"],
                            "from_state": None,
                            "to_state": OrderState.PENDING_PAYMENT.value,
                            "actor": user_id,
                            "reason": "placed",
                            "at_ms": now,
                        }
                    ]
                    + [
                        {
                            "order_id": row["id"],
                            "from_state": OrderState.PENDING_PAYMENT.value,
                            "to_state": OrderState.PAID.value,
                            "actor": "checkout",
                            "reason": f"nothing to pay: coupon {coupon_id} covers it",
                            "at_ms": now,
                        }
                    ]
                    * free,
                )
        except IntegrityError:
            existing = await self.book.get_by_idem(user_id, idem_key)
            if existing is None:
                raise
            return existing, False
        if row["state"] == OrderState.PAID.value:
            await self.bus.publish(
                "order.created", order_event({**row, "state": "pending_payment"}, user_id)
            )
            await self.bus.publish("order.paid", order_event(row, "checkout"))
        else:
            await self.book.publish_created([row])
        return row, True

    # -- order actions -------------------------------------------------------------------

    async def order(self, order_id: str) -> dict[str, Any]:
        order = await self.book.get(order_id)
        if order is None:
            raise not_found("order", order_id)
        return order

    async def order_with_history(self, order_id: str) -> dict[str, Any]:
        order = await self.order(order_id)
        return {**order_view(order), "history": await self.book.history(order_id)}

    async def move(
        self, order_id: str, target: OrderState, actor: str, reason: str = ""
    ) -> dict[str, Any]:
        try:
            return await self.book.move(order_id, target, actor, reason)
        except LookupError:
            raise not_found("order", order_id) from None

    async def start_payment(self, order_id: str, user_id: str | None) -> dict[str, Any]:
        order = await self.order(order_id)
        if user_id is not None and order["user_id"] != user_id:
            raise not_found("order", order_id)
        if order["state"] != OrderState.PENDING_PAYMENT.value:
            raise IllegalTransition(OrderState(order["state"]), OrderState.PAID)
        if order["expires_ms"] is not None and order["expires_ms"] <= self.now_ms():
            raise conflict("payment_expired", "the time to pay this order is over")
        try:
            prepay = await self.provider.create(
                order_id, order["amount_fen"], f"berrylive order {order_id}", self.notify_url()
            )
        except ProviderUnavailable as exc:
            logger.warning("payment provider unavailable: %s", exc)
            raise ShopError(503, "provider_unavailable", "payment provider unavailable") from None
        return {"order_id": order_id, "amount_fen": order["amount_fen"], "payment": prepay}

    async def cancel_by_buyer(self, order_id: str, actor: str) -> dict[str, Any]:
        order = await self.order(order_id)
        if order["state"] != OrderState.PENDING_PAYMENT.value:
            raise IllegalTransition(OrderState(order["state"]), OrderState.CANCELLED)
        return await self._close_and_cancel(order, actor, "cancelled by buyer")

    async def _close_and_cancel(
        self, order: dict[str, Any], actor: str, reason: str
    ) -> dict[str, Any]:
        """Cancel only once the provider confirms nothing was or can be paid."""
        try:
            result = await self.provider.close(order["id"])
        except ProviderUnavailable as exc:
            raise ShopError(
                503, "provider_unavailable", f"payment state unknown, not cancelled: {exc}"
            ) from None
        if result.state == payments.CLOSED or result.state == payments.NOTFOUND:
            return await self.move(order["id"], OrderState.CANCELLED, actor, reason)
        if result.state in (payments.SUCCESS, payments.REFUND):
            return await self._paid_from_provider(order, result, actor)
        raise ShopError(503, "provider_unsure", f"provider says {result.state}; not cancelled")

    async def _paid_from_provider(
        self, order: dict[str, Any], result: payments.ProviderPayment, actor: str
    ) -> dict[str, Any]:
        if result.amount_fen != order["amount_fen"]:
            logger.error(
                "order %s: provider reports %d fen paid, order is %d fen",
                order["id"],
                result.amount_fen,
                order["amount_fen"],
            )
            raise conflict("amount_mismatch", "provider amount differs from the order")
        return await self.book.move(
            order["id"],
            OrderState.PAID,
            actor,
            "provider reports paid",
            values={"paid_ms": self.now_ms(), "transaction_id": result.transaction_id[:64]},
            expect=OrderState.PENDING_PAYMENT,
        )

    async def refund(self, order_id: str, actor: str, reason: str) -> dict[str, Any]:
        """Refund a paid or shipped order. When the provider confirms, the order becomes
        ``refunded`` and its units go back to the SKU's stock (once)."""
        order = await self.order(order_id)
        state = OrderState(order["state"])
        if state not in (OrderState.PAID, OrderState.SHIPPED):
            raise IllegalTransition(state, OrderState.REFUNDING)
        order = await self.book.move(order_id, OrderState.REFUNDING, actor, reason, expect=state)
        await self._try_refund(order, actor)
        return await self.order(order_id)

    async def _try_refund(self, order: dict[str, Any], actor: str) -> bool:
        """Ask the provider to pay back; move to ``refunded`` once it has. Safe to repeat
        and to race (the sweeper, an API call): the move happens once, the stock with it."""
        if order["amount_fen"] == 0:
            reason = "nothing to pay back"
        else:
            try:
                status = await self.provider.refund(
                    order["id"], "R" + order["id"][:31], order["amount_fen"], order["amount_fen"]
                )
            except ProviderUnavailable as exc:
                logger.warning("refund of %s not started yet: %s", order["id"], exc)
                return False
            if status != "SUCCESS":
                return False
            reason = "provider refunded"
        try:
            await self.book.move(
                order["id"], OrderState.REFUNDED, actor, reason, expect=OrderState.REFUNDING
            )
        except IllegalTransition as exc:
            if exc.current is not OrderState.REFUNDED:
                raise
            return False
        return True

    # -- payment notifications ---------------------------------------------------------------

    async def handle_notification(
        self, headers: dict[str, str], body: bytes, remote: str
    ) -> tuple[int, dict[str, Any]]:
        """Verify and apply one payment notification. Returns (HTTP status, JSON body)."""
        now = self.now_ms()
        ts = headers.get(payments.TS_HEADER, "")
        nonce = headers.get(payments.NONCE_HEADER, "")
        sig = headers.get(payments.SIG_HEADER, "")
        if not (ts and nonce and sig) or not payments.verify(
            self.payment_key, ts, nonce, body, sig
        ):
            await self._log_notification(
                now, "", "", "", "forged", "bad or missing signature", remote
            )
            logger.warning("payment notification with a bad signature from %s refused", remote)
            return 401, _err("bad_signature", "signature verification failed")
        try:
            ts_s = int(ts)
        except ValueError:
            ts_s = 0
        if abs(now / 1000 - ts_s) > self.config.notify_max_skew:
            await self._log_notification(now, "", "", "", "stale", f"timestamp {ts[:20]}", remote)
            return 401, _err("stale_timestamp", "notification timestamp out of range")
        try:
            data = json.loads(body)
            resource = data["resource"]
            order_id = resource["out_trade_no"]
            txn = resource["transaction_id"]
            trade_state = resource["trade_state"]
            total = resource["amount"]["total"]
            notify_id = str(data.get("id", ""))[:64]
            if not (
                isinstance(order_id, str)
                and isinstance(txn, str)
                and isinstance(trade_state, str)
                and isinstance(total, int)
                and not isinstance(total, bool)
            ):
                raise TypeError("field types")
        except (ValueError, KeyError, TypeError) as exc:
            await self._log_notification(now, "", "", "", "malformed", repr(exc)[:200], remote)
            return 400, _err("malformed", "notification body is not a payment result")
        order_id, txn = order_id[:64], txn[:64]
        order = await self.book.get(order_id)
        if order is None:
            await self._log_notification(now, order_id, txn, notify_id, "unknown_order", "", remote)
            logger.warning("payment notification for unknown order %r from %s", order_id, remote)
            return 404, _err("order_not_found", "unknown out_trade_no")
        if total != order["amount_fen"]:
            detail = f"notified {total} fen, order is {order['amount_fen']} fen"
            await self._log_notification(
                now, order_id, txn, notify_id, "wrong_amount", detail, remote
            )
            logger.error("payment notification for %s refused: %s", order_id, detail)
            return 400, _err("amount_mismatch", detail)
        if trade_state != payments.SUCCESS:
            await self._log_notification(
                now, order_id, txn, notify_id, "ignored", trade_state, remote
            )
            return 200, {"code": "SUCCESS", "message": "noted"}
        state = OrderState(order["state"])
        if state is OrderState.PENDING_PAYMENT:
            try:
                await self.book.move(
                    order_id,
                    OrderState.PAID,
                    "payment-notify",
                    f"transaction {txn}",
                    values={"paid_ms": now, "transaction_id": txn},
                    expect=OrderState.PENDING_PAYMENT,
                )
                await self._log_notification(now, order_id, txn, notify_id, "accepted", "", remote)
                return 200, {"code": "SUCCESS", "message": "paid"}
            except IllegalTransition:
                order = await self.book.get(order_id) or order
                state = OrderState(order["state"])
        if state in PAID_STATES or state is OrderState.REFUNDED:
            outcome = "duplicate" if order["transaction_id"] in ("", txn) else "other_transaction"
            if outcome != "duplicate":
                logger.error(
                    "order %s paid by %s, notified again with %s",
                    order_id,
                    order["transaction_id"],
                    txn,
                )
            await self._log_notification(now, order_id, txn, notify_id, outcome, "", remote)
            return 200, {"code": "SUCCESS", "message": "already paid"}
        # Cancelled: money arrived anyway (the buyer paid in a race with the close, or the
        # order was cancelled without the provider). Never resurrect the order: record the
        # payment and pay it back. Its stock went back at the cancellation and stays there.
        return await self._refund_late_payment(order, txn, notify_id, total, now, remote)

    async def _refund_late_payment(
        self, order: dict[str, Any], txn: str, notify_id: str, total: int, now: int, remote: str
    ) -> tuple[int, dict[str, Any]]:
        order_id = order["id"]
        try:
            moved = await self.book.move(
                order_id,
                OrderState.REFUNDING,
                "payment-notify",
                f"payment {txn} arrived after the cancellation: paying it back",
                values={"transaction_id": txn, "paid_ms": now},
                expect=OrderState.CANCELLED,
            )
        except IllegalTransition:
            # A repeat of this notification got there first (or another transaction).
            again = await self.book.get(order_id) or order
            outcome = "duplicate" if again["transaction_id"] == txn else "other_transaction"
            await self._log_notification(now, order_id, txn, notify_id, outcome, "", remote)
            return 200, {"code": "SUCCESS", "message": "order cancelled; payment being refunded"}
        await self._log_notification(
            now,
            order_id,
            txn,
            notify_id,
            "late",
            "payment for a cancelled order: refunding",
            remote,
        )
        logger.warning("payment %s arrived for cancelled order %s: refunding it", txn, order_id)
        await self.bus.publish(
            "order.payment_late",
            {
                "order_id": order_id,
                "transaction_id": txn,
                "amount_fen": total,
                "refund": "started",
                "ts": now / 1000,
            },
        )
        await self._try_refund(moved, "payment-notify")
        return 200, {"code": "SUCCESS", "message": "order cancelled; payment refunded"}

    async def _log_notification(
        self,
        now: int,
        order_id: str,
        txn: str,
        notify_id: str,
        outcome: str,
        detail: str,
        remote: str,
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(NOTIFICATIONS).values(
                    received_ms=now,
                    order_id=order_id,
                    transaction_id=txn,
                    notify_id=notify_id,
                    outcome=outcome,
                    detail=detail[:500],
                    remote=remote[:64],
                )
            )

    async def prune_notifications(self) -> int:
        """Bound the notification log by age and by count (oldest first, in batches)."""
        cfg = self.config
        deleted = 0
        n = NOTIFICATIONS
        for _round in range(20):
            cut: Any = None
            if cfg.notification_retention > 0:
                cut = n.c.received_ms < self.now_ms() - cfg.notification_retention * 1000
            async with self.engine.begin() as conn:
                if cfg.notification_max_rows > 0:
                    edge = (
                        await conn.execute(
                            select(n.c.id)
                            .order_by(n.c.id.desc())
                            .offset(cfg.notification_max_rows)
                            .limit(1)
                        )
                    ).scalar()
                    if edge is not None:
                        cut = n.c.id <= edge if cut is None else (cut | (n.c.id <= edge))
                if cut is None:
                    break
                oldest = select(n.c.id).where(cut).order_by(n.c.id).limit(cfg.prune_batch)
                res = await conn.execute(delete(n).where(n.c.id.in_(oldest)))
            deleted += res.rowcount
            if res.rowcount < cfg.prune_batch:
                break
        if deleted:
            logger.info("payment notification log: %d old entries pruned", deleted)
        return deleted

    async def notifications(self, order_id: str | None, limit: int) -> list[dict[str, Any]]:
        q = select(NOTIFICATIONS).order_by(NOTIFICATIONS.c.id.desc()).limit(limit)
        if order_id is not None:
            q = q.where(NOTIFICATIONS.c.order_id == order_id)
        async with self.engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(q)).mappings()]

    # -- payment timeouts -------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """Cancel unpaid orders past their deadline, each only after the provider closed it."""
        now = self.now_ms()
        report = {"cancelled": 0, "paid": 0, "skipped": 0, "refunded": 0}
        report["settled"] = await self.sale_admin.settle_due(self.config.sweep_batch)
        report["pruned"] = await self.prune_notifications()
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ORDERS)
                    .where(
                        ORDERS.c.state == OrderState.PENDING_PAYMENT.value,
                        ORDERS.c.expires_ms <= now,
                    )
                    .order_by(ORDERS.c.expires_ms)
                    .limit(self.config.sweep_batch)
                )
            ).mappings()
            expired = [dict(r) for r in rows]
        for order in expired:
            try:
                moved = await self._close_and_cancel(order, "timeout", "payment timeout")
            except (ShopError, IllegalTransition) as exc:
                report["skipped"] += 1
                logger.info("timeout of %s skipped: %s", order["id"], exc)
                continue
            report["cancelled" if moved["state"] == OrderState.CANCELLED.value else "paid"] += 1
        async with self.engine.connect() as conn:
            refunding = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(ORDERS)
                        .where(ORDERS.c.state == OrderState.REFUNDING.value)
                        .limit(self.config.sweep_batch)
                    )
                ).mappings()
            ]
        for order in refunding:
            try:
                result = await self.provider.query(order["id"])
            except ProviderUnavailable:
                continue
            if result.state == payments.REFUND:
                with contextlib.suppress(IllegalTransition):
                    await self.book.move(
                        order["id"], OrderState.REFUNDED, "sweeper", "provider refunded"
                    )
                    report["refunded"] += 1
            elif await self._try_refund(order, "sweeper"):
                report["refunded"] += 1
        return report

    # -- reconciliation -----------------------------------------------------------------------

    async def reconcile(self) -> dict[str, Any]:
        """Match Redis reservations with DB orders; repair what a crash left behind.

        For each flash sale still live in Redis: reservations in the journal older than
        ``reservation_grace`` whose order is missing are completed (written as pending
        orders while they can still be paid) or given back (a cancelled tombstone is
        written first, so a late original write cannot also succeed). Cancelled orders
        whose stock was not yet returned are returned (idempotently).
        """
        now = self.now_ms()
        report: dict[str, Any] = {"completed": 0, "restored": 0, "released": 0, "mismatch": []}
        horizon = now - (self.config.payment_timeout + self.config.sale_retention) * 1000
        async with self.engine.connect() as conn:
            sales = [
                dict(r)
                for r in (
                    await conn.execute(
                        select(SALES)
                        .where(SALES.c.ends_ms >= horizon)
                        .order_by(SALES.c.id)
                        .limit(1000)
                    )
                ).mappings()
            ]
        grace = int(self.config.reservation_grace * 1000)
        for sale in sales:
            snap = await self.flash.snapshot(sale["id"])
            if not snap.loaded:
                await self._load_sale(sale)
                continue
            await self.sale_admin.sync(sale["id"])
            ctx = await self._sale_ctx(sale["id"])
            if ctx is None:
                continue
            done: list[str] = []
            for order_id, entry in snap.journal.items():
                if now - int(entry.get("t", 0)) < grace:
                    continue
                if await self.book.get(order_id) is not None:
                    done.append(order_id)
                    continue
                if int(entry["t"]) + self.config.payment_timeout * 1000 > now:
                    row = self._flash_row(ctx, order_id, entry, OrderState.PENDING_PAYMENT)
                    out = await self.book.insert_orders(
                        [row], actor="reconciler", reason="completed after a crash"
                    )
                    if out[0] != EXISTS:
                        report["completed"] += 1
                        await self.book.publish_created([row])
                        logger.warning("reconciliation completed order %s", order_id)
                    done.append(order_id)
                else:
                    row = self._flash_row(ctx, order_id, entry, OrderState.CANCELLED)
                    row["updated_ms"] = now
                    out = await self.book.insert_orders(
                        [row], actor="reconciler", reason="reservation never confirmed"
                    )
                    existing = await self.book.get(order_id)
                    if existing is not None and await self.book.release_stock(existing):
                        report["restored"] += 1
                        logger.warning("reconciliation gave back the stock of %s", order_id)
                    if existing is not None and existing["state"] != OrderState.CANCELLED.value:
                        done.append(order_id)
            if done:
                await self.flash.forget_journal({sale["id"]: done})
        for order in await self.book.unreleased_cancellations():
            if await self.book.release_stock(order):
                report["released"] += 1
        for sale in sales:
            audit = await self.audit_sale(sale["id"])
            if audit["loaded"] and not audit["consistent"]:
                report["mismatch"].append(audit)
                logger.error("flash sale %s: Redis and DB disagree: %s", sale["id"], audit)
        return report

    async def audit_sale(self, sale_id: int) -> dict[str, Any]:
        """Compare Redis stock and per-user counts with the orders in the database."""
        sale = await self._sale_row(sale_id)
        if sale is None:
            raise not_found("flash_sale", sale_id)
        snap = await self.flash.snapshot(sale_id)
        holders = await self._holders(sale_id)
        held_ids = {h["id"] for h in holders}
        db_held = sum(h["quantity"] for h in holders if not h["stock_released"])
        to_sku = sum(h["quantity"] for h in holders if h["stock_released"])
        returned = (sale["returned_stock"] or 0) if sale["settled_ms"] is not None else 0
        in_flight = sum(
            int(e.get("q", 0)) for oid, e in snap.journal.items() if oid not in held_ids
        )
        per_user: dict[str, int] = {}
        for h in holders:
            per_user[h["user_id"]] = per_user.get(h["user_id"], 0) + h["quantity"]
        for oid, e in snap.journal.items():
            if oid not in held_ids:
                per_user[str(e.get("u"))] = per_user.get(str(e.get("u")), 0) + int(e.get("q", 0))
        consistent = (
            snap.stock + db_held + in_flight + returned + to_sku == sale["sale_stock"]
            and per_user == snap.users
        )
        return {
            "flash_sale_id": sale_id,
            "loaded": snap.loaded,
            "sale_stock": sale["sale_stock"],
            "redis_stock": snap.stock,
            "db_held": db_held,
            "in_flight": in_flight,
            "returned_at_settlement": returned,
            "returned_to_sku": to_sku,
            "users_over_limit": sorted(
                u for u, q in per_user.items() if q > sale["per_user_limit"]
            ),
            "consistent": consistent,
        }

    # -- lottery prizes --------------------------------------------------------------------------

    async def _on_prize(self, event: Event) -> None:
        try:
            result = await self.grant_prize(event.data)
            logger.info("lottery prize handled: %s", result)
        except ShopError as exc:
            logger.error("lottery prize event refused (%s): %s", exc.message, event.data)

    async def grant_prize(self, data: dict[str, Any]) -> dict[str, Any]:
        """Give a lottery winner a coupon or a zero-price order, exactly once per grant key.

        Accepts the danmaku hub's ``lottery.prize`` payload: ``{lottery_id, room, user_id,
        nick, prize: {name, sku?, coupon?, ...}, prize_index, n}``. ``prize.sku`` (a SKU id
        or code) gives a zero-price order of that SKU; ``prize.coupon`` (a value in fen, or
        a coupon code) or ``prize.value_fen`` gives a coupon; anything else is recorded as
        ``manual`` for the operators. The grant key (``grant_id``, else
        ``<lottery_id>:<n>``) is a primary key, so a repeated event grants nothing twice.
        """
        lottery_id = data.get("lottery_id")
        user_id = data.get("user_id") or data.get("user")
        raw_prize = data.get("prize")
        prize: dict[str, Any] = raw_prize if isinstance(raw_prize, dict) else {}
        if not isinstance(lottery_id, str | int) or not isinstance(user_id, str) or not user_id:
            raise ShopError(400, "invalid_prize", "lottery_id and user_id are required")
        lottery_id, user_id = str(lottery_id)[:64], user_id[:64]
        broadcast_id = str(data.get("broadcast_id") or "")[:64]
        room = data.get("room")
        if not broadcast_id and isinstance(room, str):
            broadcast_id = await self._broadcast_of_room(room)
        n = data.get("n")
        if data.get("grant_id"):
            grant_key = str(data["grant_id"])
        elif isinstance(n, int) and not isinstance(n, bool):
            grant_key = f"{lottery_id}:{n}"
        else:
            grant_key = f"{lottery_id}:{user_id}:{data.get('prize_index', 0)}"
        grant_key = grant_key[:200]
        kind = prize.get("kind")
        if kind not in ("coupon", "product"):
            if prize.get("sku") or prize.get("sku_id"):
                kind = "product"
            elif prize.get("coupon") or prize.get("value_fen"):
                kind = "coupon"
            else:
                kind = "manual"
        now = self.now_ms()
        grant: dict[str, Any] = {
            "grant_key": grant_key,
            "lottery_id": lottery_id,
            "user_id": user_id,
            "kind": str(kind)[:16],
            "coupon_id": None,
            "order_id": None,
            "status": "granted",
            "created_ms": now,
        }
        order_row: dict[str, Any] | None = None
        try:
            async with self.engine.begin() as conn:
                if kind == "coupon":
                    value, code = _coupon_of(prize)
                    grant["coupon_id"] = new_id()
                    await conn.execute(insert(GRANTS).values(**grant))
                    await conn.execute(
                        insert(COUPONS).values(
                            id=grant["coupon_id"],
                            user_id=user_id,
                            value_fen=value,
                            broadcast_id=broadcast_id,
                            source=f"lottery:{grant_key}:{code}"[:200],
                            created_ms=now,
                        )
                    )
                elif kind == "product":
                    ref = prize.get("sku_id", prize.get("sku"))
                    q = select(SKUS)
                    if isinstance(ref, int) and not isinstance(ref, bool):
                        q = q.where(SKUS.c.id == ref)
                    elif isinstance(ref, str) and ref.isdigit() and len(ref) < 12:
                        q = q.where(SKUS.c.id == int(ref))
                    elif isinstance(ref, str) and ref:
                        q = q.where(SKUS.c.code == ref[:64])
                    else:
                        raise ShopError(400, "invalid_prize", "product prize needs a sku")
                    sku = (await conn.execute(q.limit(1))).mappings().first()
                    if sku is None:
                        raise ShopError(422, "unknown_sku", f"no sku {str(ref)[:40]!r}")
                    sku_id = sku["id"]
                    res = await conn.execute(
                        update(SKUS)
                        .where(SKUS.c.id == sku_id, SKUS.c.stock >= 1)
                        .values(stock=SKUS.c.stock - 1)
                    )
                    if res.rowcount != 1:
                        grant["status"] = "failed_no_stock"
                        await conn.execute(insert(GRANTS).values(**grant))
                    else:
                        anchor_id = ""
                        if broadcast_id:
                            anchor_id = (await self.broadcast_info(broadcast_id))[0]
                        order_row = {
                            "id": new_id(),
                            "kind": "prize",
                            "state": OrderState.PAID.value,
                            "user_id": user_id,
                            "idempotency_key": f"prize:{grant_key}"[:64],
                            "product_id": sku["product_id"],
                            "sku_id": sku_id,
                            "flash_sale_id": None,
                            "quantity": 1,
                            "unit_price_fen": 0,
                            "amount_fen": 0,
                            "broadcast_id": broadcast_id,
                            "anchor_id": anchor_id,
                            "card_id": None,
                            "card_product_id": None,
                            "channel": "lottery",
                            "created_ms": now,
                            "updated_ms": now,
                            "expires_ms": None,
                            "paid_ms": now,
                            "transaction_id": "",
                            "stock_released": False,
                        }
                        grant["order_id"] = order_row["id"]
                        await conn.execute(insert(GRANTS).values(**grant))
                        await conn.execute(insert(ORDERS).values(**order_row))
                        await conn.execute(
                            insert(TRANSITIONS).values(
                                order_id=order_row["id"],
                                from_state=None,
                                to_state=OrderState.PAID.value,
                                actor=f"lottery:{lottery_id}"[:64],
                                reason="lottery prize (zero price)",
                                at_ms=now,
                            )
                        )
                else:
                    grant["status"] = "manual"
                    await conn.execute(insert(GRANTS).values(**grant))
        except IntegrityError:
            async with self.engine.connect() as conn:
                row = (
                    (await conn.execute(select(GRANTS).where(GRANTS.c.grant_key == grant_key)))
                    .mappings()
                    .first()
                )
            if row is None:
                raise
            return {**dict(row), "duplicate": True}
        if grant["status"] != "granted":
            logger.warning("lottery prize %s could not be granted: %s", grant_key, grant["status"])
        if order_row is not None:
            await self.bus.publish("order.created", order_event(order_row, "lottery"))
            await self.bus.publish("order.paid", order_event(order_row, "lottery"))
        await self.bus.publish("prize.granted", {**grant, "broadcast_id": broadcast_id})
        return {**grant, "duplicate": False}

    async def _broadcast_of_room(self, room: str) -> str:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(BROADCASTS.c.broadcast_id).where(BROADCASTS.c.room == room).limit(1)
                )
            ).first()
        return str(row[0]) if row is not None else ""

    async def coupons(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(COUPONS)
                .where(COUPONS.c.user_id == user_id)
                .order_by(COUPONS.c.created_ms.desc())
                .limit(limit)
            )
            return [dict(r) for r in rows.mappings()]

    # -- sales figures ------------------------------------------------------------------------

    async def sales(self, broadcast_id: str) -> dict[str, Any]:
        paid = [s.value for s in PAID_STATES]
        o = ORDERS
        async with self.engine.connect() as conn:
            per_state = (
                await conn.execute(
                    select(
                        o.c.product_id,
                        o.c.state,
                        func.count(),
                        func.coalesce(func.sum(o.c.amount_fen), 0),
                        func.coalesce(func.sum(o.c.quantity), 0),
                    )
                    .where(o.c.broadcast_id == broadcast_id)
                    .group_by(o.c.product_id, o.c.state)
                )
            ).all()
            card_orders = (
                await conn.execute(
                    select(o.c.product_id, func.count())
                    .where(
                        o.c.broadcast_id == broadcast_id,
                        o.c.state.in_(paid),
                        o.c.card_product_id == o.c.product_id,
                    )
                    .group_by(o.c.product_id)
                )
            ).all()
            buyers_total = (
                await conn.execute(
                    select(func.count(func.distinct(o.c.user_id))).where(
                        o.c.broadcast_id == broadcast_id, o.c.state.in_(paid)
                    )
                )
            ).scalar_one()
            buyers_by_product = (
                await conn.execute(
                    select(o.c.product_id, func.count(func.distinct(o.c.user_id)))
                    .where(o.c.broadcast_id == broadcast_id, o.c.state.in_(paid))
                    .group_by(o.c.product_id)
                )
            ).all()
            cards = (
                await conn.execute(
                    select(
                        CARDS.c.product_id,
                        func.count(),
                        func.coalesce(
                            func.sum(
                                func.coalesce(CARDS.c.cleared_ms, self.now_ms()) - CARDS.c.pushed_ms
                            ),
                            0,
                        ),
                    )
                    .where(CARDS.c.broadcast_id == broadcast_id)
                    .group_by(CARDS.c.product_id)
                )
            ).all()
            any_card = (
                await conn.execute(
                    select(func.count()).where(
                        and_(
                            o.c.broadcast_id == broadcast_id,
                            o.c.state.in_(paid),
                            o.c.card_id.is_not(None),
                        )
                    )
                )
            ).scalar_one()
        products: dict[int, dict[str, Any]] = {}

        def entry(pid: int) -> dict[str, Any]:
            return products.setdefault(
                pid,
                {
                    "product_id": pid,
                    "gmv_fen": 0,
                    "orders": 0,
                    "units": 0,
                    "orders_placed": 0,
                    "cancelled": 0,
                    "refunded_fen": 0,
                    "buyers": 0,
                    "times_explained": 0,
                    "explained_seconds": 0.0,
                    "card_orders": 0,
                },
            )

        for pid, state, count, amount, units in per_state:
            e = entry(int(pid))
            e["orders_placed"] += int(count)
            if state in paid:
                e["gmv_fen"] += int(amount)
                e["orders"] += int(count)
                e["units"] += int(units)
            elif state == OrderState.CANCELLED.value:
                e["cancelled"] += int(count)
            elif state == OrderState.REFUNDED.value:
                e["refunded_fen"] += int(amount)
        for pid, count in card_orders:
            entry(int(pid))["card_orders"] = int(count)
        for pid, count in buyers_by_product:
            entry(int(pid))["buyers"] = int(count)
        for pid, count, ms in cards:
            e = entry(int(pid))
            e["times_explained"] = int(count)
            e["explained_seconds"] = round(int(ms) / 1000, 3)
        for e in products.values():
            e["card_conversion"] = round(e["card_orders"] / e["orders"], 4) if e["orders"] else 0.0
            e["orders_per_explain"] = (
                round(e["card_orders"] / e["times_explained"], 4) if e["times_explained"] else 0.0
            )
        total_orders = sum(e["orders"] for e in products.values())
        return {
            "broadcast_id": broadcast_id,
            "gmv_fen": sum(e["gmv_fen"] for e in products.values()),
            "orders": total_orders,
            "orders_placed": sum(e["orders_placed"] for e in products.values()),
            "buyers": int(buyers_total),
            "refunded_fen": sum(e["refunded_fen"] for e in products.values()),
            "card_orders": int(any_card),
            "card_conversion": round(int(any_card) / total_orders, 4) if total_orders else 0.0,
            "products": sorted(products.values(), key=lambda e: -e["gmv_fen"]),
        }


def _coupon_of(prize: dict[str, Any]) -> tuple[int, str]:
    """(value in fen, coupon code) of a coupon prize."""
    value = prize.get("value_fen")
    code = prize.get("coupon")
    code_s = str(code)[:64] if isinstance(code, str | int) and not isinstance(code, bool) else ""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 10**9:
        return value, code_s
    if code_s.isdigit() and 0 < int(code_s) <= 10**9:
        return int(code_s), code_s
    if code_s:
        return 0, code_s  # a coupon template named by code; its value lives with the template
    raise ShopError(400, "invalid_prize", "coupon prize needs value_fen or a coupon code")


async def _take_coupon(conn: Any, coupon_id: str, user_id: str, order_id: str) -> int:
    """Mark the buyer's coupon used by ``order_id`` (in the caller's transaction); its value."""
    row = (
        await conn.execute(
            select(COUPONS.c.user_id, COUPONS.c.value_fen, COUPONS.c.used_order_id).where(
                COUPONS.c.id == coupon_id
            )
        )
    ).first()
    if row is None or row[0] != user_id:
        raise unknown_ref("coupon", coupon_id)  # someone else's coupon: as if it did not exist
    if int(row[1]) <= 0:
        raise ShopError(
            422, "coupon_not_redeemable", f"coupon {coupon_id} has no value to deduct at checkout"
        )
    res = await conn.execute(
        update(COUPONS)
        .where(COUPONS.c.id == coupon_id, COUPONS.c.used_order_id.is_(None))
        .values(used_order_id=order_id)
    )
    if res.rowcount != 1:
        raise conflict("coupon_used", f"coupon {coupon_id} is already used by another order")
    return int(row[1])


def _pk(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise RuntimeError("insert returned no primary key")
    return int(key[0])


def _buy_refusal(status: str, value: str, sale: dict[str, Any]) -> ShopError:
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


def _err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    seconds, rest = divmod(ms, 1000)
    return f"{_iso_second(seconds)}.{rest:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    """The UTC time of a Unix second (orders of a burst share a few: cached)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _sku_view(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": s["id"],
        "product_id": s["product_id"],
        "code": s["code"],
        "specs": s["specs"],
        "price_fen": s["price_fen"],
        "stock": s["stock"],
    }


def _product_view(p: dict[str, Any], skus: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": p["id"],
        "title": p["title"],
        "description": p["description"],
        "images": p["images"],
        "page_path": p["page_path"],
        "created_at": _iso(p["created_ms"]),
        "updated_at": _iso(p["updated_ms"]),
        "skus": [_sku_view(s) for s in skus],
    }


def _card_view(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": c["id"],
        "broadcast_id": c["broadcast_id"],
        "room": c["room"],
        "product_id": c["product_id"],
        "sku_id": c["sku_id"],
        "flash_sale_id": c["flash_sale_id"],
        "pushed_by": c["actor"],
        "pushed_at": _iso(c["pushed_ms"]),
        "cleared_at": _iso(c["cleared_ms"]),
        "cleared_by": c["cleared_by"] or None,
    }


def _card_event(c: dict[str, Any], reason: str, anchor_id: str) -> dict[str, Any]:
    out = {
        "card_id": c["id"],
        "broadcast_id": c["broadcast_id"],
        "room": c["room"],
        "anchor_id": anchor_id,
        "product_id": c["product_id"],
        "sku_id": c["sku_id"],
        "flash_sale_id": c["flash_sale_id"],
        "actor": c["actor"] if not reason else c["cleared_by"],
        "ts": (c["cleared_ms"] if reason else c["pushed_ms"]) / 1000,
        "pushed_ts": c["pushed_ms"] / 1000,
    }
    if reason:
        out["reason"] = reason
    return out


def _sale_view(s: dict[str, Any], remaining: int | None, now_ms: int) -> dict[str, Any]:
    if s.get("closed_ms") is not None:
        status = "closed"
    elif now_ms < s["starts_ms"]:
        status = "scheduled"
    elif now_ms >= s["ends_ms"]:
        status = "ended"
    else:
        status = "sold_out" if remaining == 0 else "open"
    return {
        "id": s["id"],
        "broadcast_id": s["broadcast_id"],
        "product_id": s["product_id"],
        "sku_id": s["sku_id"],
        "sale_price_fen": s["sale_price_fen"],
        "sale_stock": s["sale_stock"],
        "remaining": remaining,
        "per_user_limit": s["per_user_limit"],
        "starts_at": _iso(s["starts_ms"]),
        "ends_at": _iso(s["ends_ms"]),
        "status": status,
        "closed_at": _iso(s.get("closed_ms")),
        "closed_by": s.get("closed_by") or None,
        "settled_at": _iso(s.get("settled_ms")),
        "returned_stock": s.get("returned_stock", 0) if s.get("carved", True) else 0,
    }


def order_view(o: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": o["id"],
        "kind": o["kind"],
        "state": o["state"],
        "user_id": o["user_id"],
        "product_id": o["product_id"],
        "sku_id": o["sku_id"],
        "flash_sale_id": o["flash_sale_id"],
        "quantity": o["quantity"],
        "unit_price_fen": o["unit_price_fen"],
        "amount_fen": o["amount_fen"],
        "discount_fen": o.get("discount_fen") or 0,
        "coupon_id": o.get("coupon_id"),
        "broadcast_id": o["broadcast_id"],
        "anchor_id": o["anchor_id"],
        "card_id": o["card_id"],
        "channel": o["channel"],
        "created_at": _iso(o["created_ms"]),
        "pay_before": _iso(o["expires_ms"]),
        "paid_at": _iso(o["paid_ms"]),
        "transaction_id": o["transaction_id"] or None,
    }


async def _active_card(conn: Any, room: str) -> Any:
    """The card being explained in ``room`` (not cleared yet), or None."""
    result = await conn.execute(
        select(CARDS).where(CARDS.c.room == room, CARDS.c.cleared_ms.is_(None))
    )
    return result.mappings().first()
