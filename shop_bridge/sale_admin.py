"""Operating a live flash sale: close it early, change it while live, settle it when over.

Where the units of a flash sale live (``docs/shop.md``, "Flash sale stock"):

* creating a sale takes ``sale_stock`` units out of the SKU's stock (``carved``);
* while the sale runs, Redis holds the unsold units (``buy.lua`` reads them); an unpaid
  order that is cancelled puts its units back on sale;
* when the sale is **over** (closed by an operator, or past its end) it is **settled**: the
  unsold units go back to the SKU's stock, exactly once, in the database transaction that
  sets ``settled_ms``; from then on a cancelled order's units go to the SKU too;
* a completed refund always gives the units back to the SKU (never to a live sale: the
  buyer's per-user count stays, so buy-refund-buy cannot dodge the limit).

Every change that touches both stores runs the Redis script **inside** the database
transaction that holds the sale's row (PostgreSQL row lock, SQLite write lock): close, edit
and settle of one sale are serialised, and a refusal from Redis rolls the database back.
The scripts are atomic with ``buy.lua``, so a buy racing an edit sees the sale either before
or after it, never half: stock can never be oversold. If a commit fails after Redis changed,
reconciliation makes Redis match the database again (``edit.lua`` in ``sync`` mode).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from control.events import BroadcastEvent
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.context import ShopContext
from shop_bridge.errors import ShopError, conflict, invalid, not_found
from shop_bridge.events import FlashSaleClosed, FlashSaleSettled, FlashSaleUpdated
from shop_bridge.flash import FlashSales
from shop_bridge.models import SALES, SKUS

logger = logging.getLogger(__name__)

SETTLE_WAIT = 2.0
"""Seconds a close waits for in-flight reservations to be written before settling (else the
sweeper settles the sale on its next run)."""


class _Refused(Exception):
    """Redis refused inside a DB transaction: roll it back and answer ``error``."""

    def __init__(self, error: ShopError) -> None:
        super().__init__(error.message)
        self.error = error


def sale_over(sale: dict[str, Any], now_ms: int) -> bool:
    return (
        sale["closed_ms"] is not None
        or sale["settled_ms"] is not None
        or (now_ms >= sale["ends_ms"])
    )


class FlashSaleAdmin:
    """Close, edit and settle flash sales (operators; the sweeper settles ended sales)."""

    def __init__(self, ctx: ShopContext, flash: FlashSales) -> None:
        self.ctx = ctx
        self.flash = flash
        self.store = ctx.store

    async def _row(self, sale_id: int) -> dict[str, Any]:
        sale = await self.flash.sale_row(sale_id)
        if sale is None:
            raise not_found("flash_sale", sale_id)
        return sale

    def subscribe(self) -> list[Callable[[], None]]:
        """Close the open sales of a broadcast that is banned or cancelled."""
        return [self.ctx.bus.on(BroadcastEvent, self.on_broadcast_event)]

    async def on_broadcast_event(self, event: BroadcastEvent) -> None:
        if event.topic not in ("broadcast.banned", "broadcast.cancelled"):
            return
        bid = event.broadcast_id if event.broadcast_id is not None else event.id
        async with self.ctx.engine.connect() as conn:
            ids = [
                int(r[0])
                for r in await conn.execute(
                    select(SALES.c.id).where(
                        SALES.c.broadcast_id == str(bid),
                        SALES.c.closed_ms.is_(None),
                        SALES.c.settled_ms.is_(None),
                    )
                )
            ]
        state = event.topic.partition(".")[2]
        for sale_id in ids:
            try:
                await self.close(sale_id, "control", f"broadcast {bid} {state}")
            except ShopError as exc:  # over meanwhile
                logger.info("flash sale %s not closed at the %s: %s", sale_id, state, exc.message)

    async def list_sales(self, broadcast_id: str | None, limit: int) -> list[dict[str, Any]]:
        """The flash sales of a broadcast (or of all, for operators), newest first, each
        with its remaining stock and status."""
        q = select(SALES.c.id).order_by(SALES.c.id.desc()).limit(limit)
        if broadcast_id is not None:
            q = q.where(SALES.c.broadcast_id == broadcast_id)
        async with self.ctx.engine.connect() as conn:
            ids = [int(r[0]) for r in await conn.execute(q)]
        return [await self.flash.get(sale_id) for sale_id in ids]

    # -- close -------------------------------------------------------------------------

    async def close(self, sale_id: int, actor: str, reason: str) -> dict[str, Any]:
        """End the sale now: buys are refused from this moment; placed orders stay valid.

        Closing a closed sale answers the same view again (nothing happens twice)."""
        sale = await self._row(sale_id)
        if sale["closed_ms"] is not None:
            return await self.flash.get(sale_id)
        if sale["settled_ms"] is not None:
            raise conflict("sale_over", "the flash sale is already over")
        await self.flash.ensure_loaded(sale_id)
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            res = await conn.execute(
                update(SALES)
                .where(
                    SALES.c.id == sale_id,
                    SALES.c.closed_ms.is_(None),
                    SALES.c.settled_ms.is_(None),
                )
                .values(closed_ms=now, closed_by=actor[:64])
            )
            if res.rowcount != 1:
                closed_now = None
            else:
                closed_now = now
                await self.ctx.redis.hset(self.store.keys(sale_id).meta, "closed", 1)
        if closed_now is None:  # another close or the settlement won the race
            sale = await self._row(sale_id)
            if sale["closed_ms"] is not None:
                return await self.flash.get(sale_id)
            raise conflict("sale_over", "the flash sale is already over")
        self.flash.forget(sale_id)
        logger.info("flash sale %s closed by %s: %s", sale_id, actor, reason)
        view = await self.flash.get(sale_id)
        ctx = await self.flash.sale_ctx(sale_id)
        await self.ctx.bus.emit(
            FlashSaleClosed(
                **view,
                room=ctx.room if ctx else "",
                anchor_id=ctx.anchor_id if ctx else "",
                actor=actor,
                reason=reason,
                ts=now / 1000,
            )
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_WAIT
        while True:
            settled = await self.settle(sale_id)
            if settled is not None or loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        return await self.flash.get(sale_id)

    # -- edit --------------------------------------------------------------------------

    async def edit(self, sale_id: int, changes: dict[str, Any], actor: str) -> dict[str, Any]:
        """Change ``ends_ms``, ``per_user_limit`` and/or ``sale_stock`` of a sale that is
        not over. The stock may grow (taken from the SKU) or shrink down to what is sold
        or held (given back to the SKU)."""
        now = self.ctx.now_ms()
        for _attempt in range(3):
            sale = await self._row(sale_id)
            if sale["closed_ms"] is not None:
                raise conflict("sale_closed", "the flash sale was closed; it cannot change")
            if sale_over(sale, now):
                raise conflict("sale_over", "the flash sale is over; it cannot change")
            ends = changes.get("ends_ms", sale["ends_ms"])
            limit = changes.get("per_user_limit", sale["per_user_limit"])
            stock = changes.get("sale_stock", sale["sale_stock"])
            if ends <= sale["starts_ms"]:
                raise invalid("ends_at", "must be after starts_at")
            if ends <= now:
                raise invalid("ends_at", "is in the past; close the sale to end it now")
            delta = stock - sale["sale_stock"]
            await self.flash.ensure_loaded(sale_id)
            try:
                async with self.ctx.engine.begin() as conn:
                    res = await conn.execute(
                        update(SALES)
                        .where(
                            SALES.c.id == sale_id,
                            SALES.c.closed_ms.is_(None),
                            SALES.c.settled_ms.is_(None),
                            SALES.c.sale_stock == sale["sale_stock"],
                            SALES.c.ends_ms == sale["ends_ms"],
                            SALES.c.per_user_limit == sale["per_user_limit"],
                        )
                        .values(ends_ms=ends, per_user_limit=limit, sale_stock=stock)
                    )
                    if res.rowcount != 1:
                        continue  # changed meanwhile: re-read and re-check
                    if delta and sale["carved"]:
                        q = (
                            update(SKUS)
                            .where(SKUS.c.id == sale["sku_id"])
                            .values(stock=SKUS.c.stock - delta)
                        )
                        if delta > 0:
                            q = q.where(SKUS.c.stock >= delta)
                        if (await conn.execute(q)).rowcount != 1:
                            raise _Refused(
                                conflict(
                                    "insufficient_stock",
                                    f"the SKU has fewer than {delta} units to add to the sale",
                                )
                            )
                    status, left = await self.store.edit(
                        sale_id,
                        ends_ms=ends,
                        limit=limit,
                        cap=stock,
                        old_cap=sale["sale_stock"],
                        now_ms=now,
                    )
                    if status == "held":
                        sold = sale["sale_stock"] - left
                        raise _Refused(
                            conflict(
                                "stock_held",
                                f"{sold} units are sold or held; sale_stock cannot go below it",
                                sold=sold,
                            )
                        )
                    if status != "ok":
                        raise _Refused(conflict("sale_over", f"the flash sale is {status}"))
            except _Refused as refused:
                raise refused.error from None
            break
        else:
            raise conflict("sale_busy", "the sale changed while editing; retry")
        self.flash.forget(sale_id)
        changed = sorted(
            k
            for k, old in (
                ("ends_at", sale["ends_ms"] != ends),
                ("per_user_limit", sale["per_user_limit"] != limit),
                ("sale_stock", sale["sale_stock"] != stock),
            )
            if old
        )
        logger.info("flash sale %s edited by %s: %s", sale_id, actor, changed)
        view = await self.flash.get(sale_id)
        ctx = await self.flash.sale_ctx(sale_id)
        await self.ctx.bus.emit(
            FlashSaleUpdated(
                **view,
                changed=tuple(changed),
                room=ctx.room if ctx else "",
                anchor_id=ctx.anchor_id if ctx else "",
                actor=actor,
                ts=now / 1000,
            )
        )
        return view

    # -- settle ------------------------------------------------------------------------

    async def settle(self, sale_id: int) -> int | None:
        """Give an over sale's unsold units back to the SKU, exactly once.

        Returns the units given back (0 if already settled), or None if the sale is not
        over or reservations are still being written (try again later)."""
        sale = await self._row(sale_id)
        if sale["settled_ms"] is not None:
            return 0
        now = self.ctx.now_ms()
        if not sale_over(sale, now):
            return None
        await self.flash.ensure_loaded(sale_id)
        try:
            async with self.ctx.engine.begin() as conn:
                res = await conn.execute(
                    update(SALES)
                    .where(SALES.c.id == sale_id, SALES.c.settled_ms.is_(None))
                    .values(settled_ms=now)
                )
                if res.rowcount != 1:
                    return 0
                status, units = await self.store.settle(sale_id)
                if status == "no_sale":
                    # Its keys are gone for good (past the retention): nobody can buy or
                    # release there any more, so the database alone says what is unsold.
                    units = await self._unsold_in_db(sale)
                elif status not in ("ok", "settled"):
                    raise _Refused(ShopError(503, "sale_busy", f"settlement: {status} {units}"))
                await conn.execute(
                    update(SALES).where(SALES.c.id == sale_id).values(returned_stock=units)
                )
                if units and sale["carved"]:
                    await conn.execute(
                        update(SKUS)
                        .where(SKUS.c.id == sale["sku_id"])
                        .values(stock=SKUS.c.stock + units)
                    )
        except _Refused as refused:
            logger.info("flash sale %s not settled yet: %s", sale_id, refused.error.message)
            return None
        self.flash.forget(sale_id)
        logger.info("flash sale %s settled: %d unsold units back to the SKU", sale_id, units)
        ctx = await self.flash.sale_ctx(sale_id)
        await self.ctx.bus.emit(
            FlashSaleSettled(
                id=sale_id,
                broadcast_id=to_wire(sale["broadcast_id"]),
                sku_id=sale["sku_id"],
                returned_stock=units if sale["carved"] else 0,
                room=ctx.room if ctx else "",
                ts=now / 1000,
            )
        )
        return units

    async def _unsold_in_db(self, sale: dict[str, Any]) -> int:
        holders = await self.flash.holders(sale["id"])
        taken = sum(int(h["quantity"]) for h in holders)  # held, or gone back to the SKU
        return max(0, int(sale["sale_stock"]) - taken)

    async def settle_due(self, limit: int) -> int:
        """Settle sales that are over and not settled yet (the sweeper calls this)."""
        now = self.ctx.now_ms()
        async with self.ctx.engine.connect() as conn:
            ids = [
                int(r[0])
                for r in await conn.execute(
                    select(SALES.c.id)
                    .where(
                        SALES.c.settled_ms.is_(None),
                        (SALES.c.closed_ms.is_not(None)) | (SALES.c.ends_ms <= now),
                    )
                    .order_by(SALES.c.id)
                    .limit(limit)
                )
            ]
        done = 0
        for sale_id in ids:
            try:
                if await self.settle(sale_id) is not None:
                    done += 1
            except Exception:
                logger.exception("settling flash sale %s failed", sale_id)
        return done

    async def sync(self, sale_id: int) -> bool:
        """Make the sale's Redis meta match the database (after a commit that failed once
        Redis had changed). Holds the sale's row like an edit. True if something changed."""
        first = await self.flash.sale_row(sale_id)
        if first is None or _meta_matches(first, await self.store.meta(sale_id)):
            return False
        async with self.ctx.engine.begin() as conn:
            await conn.execute(
                update(SALES).where(SALES.c.id == sale_id).values(id=SALES.c.id)
            )  # take the row's lock: an edit in progress commits first
            row = (
                (await conn.execute(select(SALES).where(SALES.c.id == sale_id))).mappings().first()
            )
            if row is None:
                return False
            sale = dict(row)
            meta = await self.store.meta(sale_id)
            if _meta_matches(sale, meta):
                return False
            if sale["settled_ms"] is None and meta.get("settled") == "1":
                return False  # a settlement whose commit failed: settle() finishes it
            status, _left = await self.store.edit(
                sale_id,
                ends_ms=sale["ends_ms"],
                limit=sale["per_user_limit"],
                cap=sale["sale_stock"],
                old_cap=sale["sale_stock"],
                now_ms=self.ctx.now_ms(),
                sync=True,
                closed=sale["closed_ms"] is not None,
            )
        logger.warning("flash sale %s: Redis meta %s made to match the database", sale_id, meta)
        return status == "ok"


def _meta_matches(sale: dict[str, Any], meta: dict[str, str]) -> bool:
    """True if Redis has no keys for the sale or its meta agrees with the database."""
    if not meta:
        return True
    want = {
        "end": str(sale["ends_ms"]),
        "limit": str(sale["per_user_limit"]),
        "cap": str(sale["sale_stock"]),
        "closed": "1" if sale["closed_ms"] is not None else "0",
    }
    return all(meta.get(k, v if k == "cap" else "") == v for k, v in want.items())
