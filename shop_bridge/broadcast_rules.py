"""The rules of which broadcast the shop sells for and what (docs/shop.md, "Which
broadcast the shop sells for"): the states that take no card, flash sale or order, the
shelf check, the error of a SKU named with another product. :class:`shop_bridge.shelf.Shelf`
applies them with what it knows of the broadcasts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from shop_bridge.errors import ShopError, conflict
from shop_bridge.models import SHELF

CLOSED_FOR_SELLING = frozenset({"ended", "replay_ready", "cancelled", "banned"})
"""States of a broadcast that take no new card or flash sale."""
CLOSED_FOR_ORDERS = frozenset({"cancelled", "banned"})
"""States of a broadcast that take no order (an ended show still sells from its replay)."""


def sku_not_of_product(sku_id: int, owner: int, product_id: int) -> ShopError:
    """422: the SKU exists but belongs to another product (both named)."""
    return ShopError(
        422,
        "sku_not_of_product",
        f"SKU {sku_id} belongs to product {owner}, not to product {product_id}",
        sku_id=sku_id,
        sku_product_id=owner,
        product_id=product_id,
    )


async def check_on_shelf(engine: AsyncEngine, broadcast_id: str, product_id: int) -> None:
    """409 ``not_on_shelf`` / ``off_shelf`` unless the product is on sale on the
    broadcast's shelf."""
    async with engine.connect() as conn:
        shelf = (
            await conn.execute(
                select(SHELF.c.on_shelf).where(
                    SHELF.c.broadcast_id == broadcast_id, SHELF.c.product_id == product_id
                )
            )
        ).first()
    if shelf is None:
        raise conflict(
            "not_on_shelf",
            f"product {product_id} is not on broadcast {broadcast_id}'s shelf",
            product_id=product_id,
        )
    if not shelf[0]:
        raise conflict(
            "off_shelf",
            f"product {product_id} is off broadcast {broadcast_id}'s shelf",
            product_id=product_id,
        )
