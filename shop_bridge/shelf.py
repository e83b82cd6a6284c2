"""A broadcast's goods shelf and its "now explaining" card, and what the shop knows of
the broadcast itself (its anchor and danmaku room, told by control).

The card shown in a room is what an order is attributed to (``card_id``,
``card_product_id``): :meth:`Shelf.card_for_room` answers from :attr:`Shelf.card_cache`,
which pushes and clears on this node and ``card.*`` events of other nodes keep right.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from control.events import BroadcastEvent
from shop_bridge.broadcast_ids import to_wire
from shop_bridge.broadcast_rules import (
    CLOSED_FOR_ORDERS,
    CLOSED_FOR_SELLING,
    check_on_shelf,
    sku_not_of_product,
)
from shop_bridge.cache import BoundedCache
from shop_bridge.catalog import Catalog
from shop_bridge.context import ShopContext, primary_key
from shop_bridge.errors import ShopError, conflict, not_found, unknown_ref
from shop_bridge.events import CardEvent, ShelfUpdated
from shop_bridge.models import BROADCASTS, CARDS, PRODUCTS, SALES, SHELF
from shop_bridge.views import card_view

logger = logging.getLogger(__name__)

MAX_SHELF = 500

BroadcastLookup = Callable[[str], Awaitable[dict[str, Any] | None]]
"""A broadcast id -> ``{"anchor_id", "room", "state"}`` from its owner (None: no such)."""


@dataclass(frozen=True, slots=True)
class CardRef:
    """The card shown in a room, as an order records it."""

    card_id: int
    product_id: int


NO_CARD = CardRef(0, 0)


class Shelf:
    """Broadcasts, shelves and cards."""

    def __init__(self, ctx: ShopContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.card_cache: BoundedCache[str, CardRef] = BoundedCache(
            ctx.config.card_cache_rooms, ttl=30.0
        )
        """room -> the card shown there (read on every buy)."""
        self._broadcast_changed: list[Callable[[str], Awaitable[None]]] = []
        self.lookup: BroadcastLookup | None = None
        """Asks the owner of broadcasts (control, installed by the app's assembly) about one
        the shop has not heard of yet: its ``broadcast.created`` event may still be on its
        way when the next request comes (a shelf put right after the broadcast is made)."""

    def on_broadcast_changed(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Call ``listener(broadcast_id)`` after a broadcast's anchor or room changed (the
        flash sales drop what they cached of them)."""
        self._broadcast_changed.append(listener)

    def subscribe(self) -> list[Callable[[], None]]:
        """Follow control's broadcasts and other nodes' cards; the unsubscribers."""
        bus = self.ctx.bus
        return [
            bus.on(CardEvent, self.on_card_event),
            bus.on(BroadcastEvent, self.on_broadcast_event),
        ]

    # -- broadcasts (what control tells us) ---------------------------------------------

    async def set_broadcast(
        self,
        broadcast_id: str,
        anchor_id: str,
        room: str,
        *,
        state: str | None = None,
        source: str = "operator",
    ) -> dict[str, Any]:
        """Record a broadcast's anchor and room (and, from control, its state). ``source``
        ``control`` (its events) or ``operator`` (``PUT .../shop``); a row control told
        of stays ``control``."""
        values: dict[str, Any] = {
            "anchor_id": anchor_id,
            "room": room or broadcast_id,
            "updated_ms": self.ctx.now_ms(),
        }
        if state is not None:
            values["state"] = state[:24]
        async with self.ctx.engine.begin() as conn:
            res = await conn.execute(
                update(BROADCASTS)
                .where(BROADCASTS.c.broadcast_id == broadcast_id)
                .values(
                    **values,
                    source=case((BROADCASTS.c.source == "control", "control"), else_=source),
                )
            )
            if res.rowcount == 0:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(BROADCASTS).values(
                                broadcast_id=broadcast_id, source=source, **values
                            )
                        )
                except IntegrityError:
                    await conn.execute(
                        update(BROADCASTS)
                        .where(BROADCASTS.c.broadcast_id == broadcast_id)
                        .values(**values, source=source)
                    )
        for changed in self._broadcast_changed:
            await changed(broadcast_id)
        return {"broadcast_id": broadcast_id, **values}

    async def broadcast_row(self, broadcast_id: str) -> dict[str, Any] | None:
        """What the shop knows of a broadcast: ``anchor_id, room, state, source``."""
        async with self.ctx.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(BROADCASTS).where(BROADCASTS.c.broadcast_id == broadcast_id)
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    async def fresh_row(self, broadcast_id: str) -> dict[str, Any] | None:
        """:meth:`broadcast_row`, first made to agree with control's record when the app
        has control (its ``broadcast.*`` events may still be on their way: a shelf put, or
        a card pushed, right after the broadcast was made or ended)."""
        row = await self.broadcast_row(broadcast_id)
        if self.lookup is not None:
            found = await self.lookup(broadcast_id)
            if found is not None:
                anchor = str(found.get("anchor_id") or "")
                room = str(found.get("room") or "")
                state = str(found.get("state") or "")
                if row is None or (row["source"], row["state"], row["anchor_id"], row["room"]) != (
                    "control",
                    state,
                    anchor,
                    room,
                ):
                    await self.set_broadcast(
                        broadcast_id, anchor, room, state=state, source="control"
                    )
                    row = await self.broadcast_row(broadcast_id)
            elif row is not None and row["source"] == "control":
                row = None  # control no longer has it (deleted)
        return row

    async def check_broadcast(self, broadcast_id: str, action: str) -> dict[str, Any]:
        """Refuse to sell for a broadcast the shop does not know or that is over.

        ``action``: ``card`` and ``flash_sale`` need a broadcast that is not over
        (scheduled, live or interrupted); ``order`` one that is not banned, cancelled or
        deleted (a replay still sells). 404 ``broadcast_not_found``; 409
        ``broadcast_ended`` / ``broadcast_banned`` / ``broadcast_cancelled``."""
        row = await self.fresh_row(broadcast_id)
        if row is None or not row["source"] or row["state"] == "deleted":
            raise not_found("broadcast", broadcast_id)
        state = row["state"]
        refused = CLOSED_FOR_ORDERS if action == "order" else CLOSED_FOR_SELLING
        if state in refused:
            code = "broadcast_ended" if state == "replay_ready" else f"broadcast_{state}"
            raise conflict(
                code,
                f"broadcast {broadcast_id} is {state}: no {action.replace('_', ' ')} for it",
                state=state,
            )
        return row

    async def check_on_shelf(self, broadcast_id: str, product_id: int) -> None:
        """409 ``not_on_shelf`` / ``off_shelf`` unless the product is on sale there."""
        await check_on_shelf(self.ctx.engine, broadcast_id, product_id)

    async def broadcast_info(self, broadcast_id: str) -> tuple[str, str]:
        """(anchor_id, room) of a broadcast; the room defaults to the broadcast id."""
        async with self.ctx.engine.connect() as conn:
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

    async def broadcast_of_room(self, room: str) -> str:
        """The broadcast shown in a danmaku room ("" if none)."""
        async with self.ctx.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(BROADCASTS.c.broadcast_id).where(BROADCASTS.c.room == room).limit(1)
                )
            ).first()
        return str(row[0]) if row is not None else ""

    async def on_broadcast_event(self, event: BroadcastEvent) -> None:
        """Learn every broadcast control announces: its anchor, danmaku room
        (``<app>/<stream>``) and lifecycle state, from every ``broadcast.*`` event
        (``broadcast.deleted`` marks it gone); its ``product_ids`` (on creation, or when an
        update changed them) become the shelf."""
        if event.topic == "broadcast.reminder":
            return
        bid = event.broadcast_id if event.broadcast_id is not None else event.id
        if not isinstance(bid, int) or isinstance(bid, bool):
            return
        state = "deleted" if event.topic == "broadcast.deleted" else event.state
        if not state:
            state = event.topic.partition(".")[2]
        room = f"{event.app}/{event.stream}" if event.stream else ""
        anchor = "" if event.anchor_id is None else str(event.anchor_id)[:64]
        await self.set_broadcast(str(bid), anchor, room[:128], state=state, source="control")
        if event.topic not in ("broadcast.created", "broadcast.updated"):
            return
        pids = list(event.product_ids)
        if (event.topic == "broadcast.created" and pids) or (
            event.changed is not None and "product_ids" in event.changed
        ):
            await self.shelf_from_broadcast(str(bid), pids)

    async def shelf_from_broadcast(self, broadcast_id: str, product_ids: list[Any]) -> None:
        """Fill the shelf from the products control planned for the broadcast: the shelf
        becomes that list in that order; products already on it keep their on/off-shelf
        flag; ids the shop does not know are skipped (logged)."""
        wanted: list[int] = []
        for p in product_ids[:MAX_SHELF]:
            if isinstance(p, int) and not isinstance(p, bool) and p > 0 and p not in wanted:
                wanted.append(p)
        async with self.ctx.engine.connect() as conn:
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

    # -- goods shelf ---------------------------------------------------------------------

    async def put_shelf(
        self, broadcast_id: str, items: list[tuple[int, bool]], actor: str
    ) -> list[dict[str, Any]]:
        """Replace the shelf: products in display order with their on/off-shelf flag (of a
        broadcast the shop knows, not banned or cancelled)."""
        await self.check_broadcast(broadcast_id, "order")
        ids = [pid for pid, _ in items]
        if len(set(ids)) != len(ids):
            raise ShopError(400, "invalid_field", "items: a product appears twice")
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            await self._lock_broadcast(conn, broadcast_id, now)
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
        await self.ctx.bus.emit(
            ShelfUpdated(
                broadcast_id=to_wire(broadcast_id),
                product_ids=tuple(ids),
                actor=actor,
                ts=now / 1000,
            )
        )
        return shelf

    async def _lock_broadcast(self, conn: Any, broadcast_id: str, now: int) -> None:
        """Serialise the shelf replaces of one broadcast: the first statement of the
        replace's transaction makes sure the broadcast's ``shop_broadcasts`` row exists
        (``INSERT ... ON CONFLICT DO NOTHING``: a row like the one an unknown broadcast
        reads as, room = its id) and locks it (``SELECT ... FOR UPDATE``). On PostgreSQL a
        second replace waits for the first to commit (two delete-then-insert replaces
        in parallel both found the shelf empty and one failed on pk_shop_shelf); on
        SQLite the INSERT takes the database's write lock (FOR UPDATE is not emitted
        there), which serialises it the same way. One code path for both."""
        dialect = self.ctx.engine.dialect.name
        ins: Any = pg_insert(BROADCASTS) if dialect == "postgresql" else sqlite_insert(BROADCASTS)
        await conn.execute(
            ins.values(
                broadcast_id=broadcast_id, anchor_id="", room=broadcast_id, updated_ms=now
            ).on_conflict_do_nothing(index_elements=["broadcast_id"])
        )
        await conn.execute(
            select(BROADCASTS.c.broadcast_id)
            .where(BROADCASTS.c.broadcast_id == broadcast_id)
            .with_for_update()
        )

    async def set_on_shelf(
        self, broadcast_id: str, product_id: int, on_shelf: bool, actor: str
    ) -> list[dict[str, Any]]:
        """Put one product of the shelf on or off sale: the same broadcast rules as
        :meth:`put_shelf` (404 ``broadcast_not_found``; 409 ``broadcast_banned`` /
        ``broadcast_cancelled``), then 404 ``shelf_item_not_found`` if it is not there."""
        await self.check_broadcast(broadcast_id, "order")
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            res = await conn.execute(
                update(SHELF)
                .where(SHELF.c.broadcast_id == broadcast_id, SHELF.c.product_id == product_id)
                .values(on_shelf=on_shelf, updated_ms=now)
            )
            if res.rowcount != 1:
                raise not_found("shelf_item", f"{broadcast_id}/{product_id}")
        await self.ctx.bus.emit(
            ShelfUpdated(
                broadcast_id=to_wire(broadcast_id),
                product_id=product_id,
                on_shelf=on_shelf,
                actor=actor,
                ts=now / 1000,
            )
        )
        return await self.get_shelf(broadcast_id)

    async def get_shelf(self, broadcast_id: str) -> list[dict[str, Any]]:
        async with self.ctx.engine.connect() as conn:
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
            product = await self.catalog.get_product(r["product_id"])
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
        await self.check_broadcast(broadcast_id, "card")
        anchor_id, room = await self.broadcast_info(broadcast_id)
        await self.check_on_shelf(broadcast_id, product_id)
        if sku_id is not None:
            sku = await self.catalog.sku(sku_id)
            if sku is None:
                raise unknown_ref("sku", sku_id)
            if sku["product_id"] != product_id:
                raise sku_not_of_product(sku_id, sku["product_id"], product_id)
        if flash_sale_id is not None:
            async with self.ctx.engine.connect() as conn:
                sale_product = (
                    await conn.execute(
                        select(SALES.c.product_id).where(SALES.c.id == flash_sale_id)
                    )
                ).scalar()
            if sale_product != product_id:
                raise unknown_ref("flash_sale", flash_sale_id)
        previous: dict[str, Any] | None = None
        for _attempt in range(5):
            now = self.ctx.now_ms()
            try:
                async with self.ctx.engine.begin() as conn:
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
                    card_id = primary_key(res)
                previous = dict(prev) if prev is not None else None
                break
            except IntegrityError:
                await asyncio.sleep(0.005)  # another push for this room won; go again
        else:
            raise conflict("card_busy", "another card is being pushed to this room; retry")
        self.card_cache.put(room, CardRef(card_id, product_id))
        if previous is not None:
            previous.update(cleared_ms=now, cleared_by=actor)
            await self.ctx.bus.emit(card_event(previous, "replaced", anchor_id))
        card = await self.card(card_id)
        await self.ctx.bus.emit(card_event(card, "", anchor_id))
        return card_view(card)

    async def clear_card(self, broadcast_id: str, actor: str) -> dict[str, Any]:
        anchor_id, room = await self.broadcast_info(broadcast_id)
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
            prev = await active_card(conn, room)
            if prev is None:
                raise not_found("card", f"shown in room {room}")
            res = await conn.execute(
                update(CARDS)
                .where(CARDS.c.id == prev["id"], CARDS.c.cleared_ms.is_(None))
                .values(cleared_ms=now, cleared_by=actor)
            )
            if res.rowcount != 1:
                raise not_found("card", f"shown in room {room}")
        self.card_cache.put(room, NO_CARD)
        card = {**dict(prev), "cleared_ms": now, "cleared_by": actor}
        await self.ctx.bus.emit(card_event(card, "cleared", anchor_id))
        return card_view(card)

    async def card(self, card_id: int) -> dict[str, Any]:
        async with self.ctx.engine.connect() as conn:
            row = (await conn.execute(select(CARDS).where(CARDS.c.id == card_id))).mappings().one()
            return dict(row)

    async def current_card(self, broadcast_id: str) -> dict[str, Any] | None:
        _anchor, room = await self.broadcast_info(broadcast_id)
        async with self.ctx.engine.connect() as conn:
            row = await active_card(conn, room)
        return card_view(dict(row)) if row is not None else None

    async def card_history(self, broadcast_id: str, limit: int) -> list[dict[str, Any]]:
        async with self.ctx.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(CARDS)
                    .where(CARDS.c.broadcast_id == broadcast_id)
                    .order_by(CARDS.c.pushed_ms.desc(), CARDS.c.id.desc())
                    .limit(limit)
                )
            ).mappings()
            return [card_view(dict(r)) for r in rows]

    async def card_for_room(self, room: str) -> CardRef:
        """The card shown in ``room`` (cached; :data:`NO_CARD` if none): what an order
        placed now is attributed to."""
        ref = self.card_cache.get(room)
        if ref is not None:
            return ref
        async with self.ctx.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(CARDS.c.id, CARDS.c.product_id).where(
                        CARDS.c.room == room, CARDS.c.cleared_ms.is_(None)
                    )
                )
            ).first()
        ref = CardRef(int(row[0]), int(row[1])) if row is not None else NO_CARD
        self.card_cache.put(room, ref)
        return ref

    def on_card_event(self, event: CardEvent) -> None:
        """Keep the attribution cache right when another node pushes or clears a card."""
        room = event.room
        if not isinstance(room, str):
            return
        if event.topic == "card.pushed":
            cid, pid = event.card_id, event.product_id
            if isinstance(cid, int) and isinstance(pid, int):
                self.card_cache.put(room, CardRef(cid, pid))
        elif event.topic == "card.cleared" and event.reason != "replaced":
            current = self.card_cache.get(room)
            if current is None or current.card_id == event.card_id:
                self.card_cache.put(room, NO_CARD)


def card_event(c: dict[str, Any], reason: str, anchor_id: str) -> CardEvent:
    """The ``card.pushed`` (no ``reason``) or ``card.cleared`` event of a card's row."""
    return CardEvent(
        topic="card.cleared" if reason else "card.pushed",
        card_id=c["id"],
        broadcast_id=to_wire(c["broadcast_id"]),
        room=c["room"],
        anchor_id=anchor_id,
        product_id=c["product_id"],
        sku_id=c["sku_id"],
        flash_sale_id=c["flash_sale_id"],
        actor=c["actor"] if not reason else c["cleared_by"],
        ts=(c["cleared_ms"] if reason else c["pushed_ms"]) / 1000,
        pushed_ts=c["pushed_ms"] / 1000,
        reason=reason or None,
    )


async def active_card(conn: Any, room: str) -> Any:
    """The card being explained in ``room`` (not cleared yet), or None."""
    result = await conn.execute(
        select(CARDS).where(CARDS.c.room == room, CARDS.c.cleared_ms.is_(None))
    )
    return result.mappings().first()
