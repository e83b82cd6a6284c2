"""A buyer's address book: saved recipients, one of them the default.

Each entry is sealed like an order's recipient (:mod:`shop_bridge.recipients`, the
owner's user id as associated data) with a masked copy next to it. The owner reads their
own entries in full (they typed them); an order placed with ``address_id`` gets a copy
sealed for that order, so deleting or changing the book never changes an order. A book
holds at most ``shop.max_addresses`` entries; the first one saved is the default, saving
one with ``default: true`` makes it the default, deleting the default makes the newest
remaining entry the default.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from shop_bridge.context import ShopContext, primary_key
from shop_bridge.errors import ShopError, conflict, not_found
from shop_bridge.masking import Recipient, mask
from shop_bridge.models import ADDRESSES
from shop_bridge.recipients import KeyError_, Sealer, address_aad
from shop_bridge.views import iso

__all__ = ["AddressBook"]

logger = logging.getLogger(__name__)


class AddressBook:
    """Saved addresses per buyer."""

    def __init__(self, ctx: ShopContext, sealer: Sealer) -> None:
        self.ctx = ctx
        self.sealer = sealer

    def _view(self, row: dict[str, Any]) -> dict[str, Any]:
        r = self._open(row)
        return {
            "id": row["id"],
            **r.as_dict(),
            "masked": json.loads(row["masked"]),
            "default": bool(row["is_default"]),
            "created_at": iso(row["created_ms"]),
        }

    def _open(self, row: dict[str, Any]) -> Recipient:
        try:
            return self.sealer.open_recipient(row["sealed"], address_aad(row["user_id"]))
        except KeyError_ as exc:
            logger.error("address %s: unreadable: %s", row["id"], exc)
            raise ShopError(500, "recipient_unreadable", str(exc)) from None

    async def list(self, user_id: str) -> list[dict[str, Any]]:
        """The buyer's addresses, the default first, then newest first."""
        a = ADDRESSES.c
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(ADDRESSES)
                .where(a.user_id == user_id)
                .order_by(a.is_default.desc(), a.id.desc())
            )
            return [self._view(dict(r)) for r in rows.mappings()]

    async def add(self, user_id: str, r: Recipient, default: bool) -> dict[str, Any]:
        a = ADDRESSES.c
        now = self.ctx.now_ms()
        cap = self.ctx.config.max_addresses
        async with self.ctx.engine.begin() as conn:
            count = (
                await conn.execute(select(func.count()).where(a.user_id == user_id))
            ).scalar_one()
            if int(count) >= cap:
                raise conflict(
                    "address_book_full",
                    f"at most {cap} saved addresses; delete one first",
                    limit=cap,
                )
            default = default or int(count) == 0
            if default:
                await conn.execute(
                    update(ADDRESSES)
                    .where(a.user_id == user_id, a.is_default.is_(True))
                    .values(is_default=False, updated_ms=now)
                )
            res = await conn.execute(
                insert(ADDRESSES).values(
                    user_id=user_id,
                    sealed=self.sealer.seal_recipient(r, address_aad(user_id)),
                    masked=json.dumps(mask(r), ensure_ascii=False, separators=(",", ":")),
                    is_default=default,
                    created_ms=now,
                    updated_ms=now,
                )
            )
            new_id = primary_key(res)
            row = (await conn.execute(select(ADDRESSES).where(a.id == new_id))).mappings().one()
        logger.info("address %s saved for %s", new_id, user_id)
        return self._view(dict(row))

    async def _row(self, user_id: str, address_id: int) -> dict[str, Any] | None:
        """The entry if it is this buyer's (someone else's is as if it did not exist)."""
        async with self.ctx.engine.connect() as conn:
            row = (
                (await conn.execute(select(ADDRESSES).where(ADDRESSES.c.id == address_id)))
                .mappings()
                .first()
            )
        if row is None or row["user_id"] != user_id:
            return None
        return dict(row)

    async def delete(self, user_id: str, address_id: int) -> None:
        row = await self._row(user_id, address_id)
        if row is None:
            raise not_found("address", address_id)
        a = ADDRESSES.c
        async with self.ctx.engine.begin() as conn:
            await conn.execute(delete(ADDRESSES).where(a.id == address_id, a.user_id == user_id))
            if row["is_default"]:
                newest = (
                    await conn.execute(
                        select(a.id).where(a.user_id == user_id).order_by(a.id.desc()).limit(1)
                    )
                ).scalar()
                if newest is not None:
                    await conn.execute(
                        update(ADDRESSES)
                        .where(a.id == newest)
                        .values(is_default=True, updated_ms=self.ctx.now_ms())
                    )
        logger.info("address %s of %s deleted", address_id, user_id)

    async def default_recipient(self, user_id: str) -> Recipient | None:
        """The recipient of the buyer's default address (None without an address book)."""
        a = ADDRESSES.c
        async with self.ctx.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(ADDRESSES)
                        .where(a.user_id == user_id)
                        .order_by(a.is_default.desc(), a.id.desc())
                        .limit(1)
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else self._open(dict(row))

    async def recipient(self, user_id: str, address_id: int) -> Recipient:
        """The recipient of the buyer's saved address (422 ``unknown_address`` if it is
        not theirs): for an order placed with ``address_id``."""
        row = await self._row(user_id, address_id)
        if row is None:
            raise ShopError(422, "unknown_address", f"no address {address_id} in your address book")
        return self._open(row)
