"""The catalog: products and their SKUs (list price, stock in the database).

Operators create and edit products here; a flash sale takes its units out of a SKU's stock
(:mod:`shop_bridge.flash`), a normal order takes them at checkout
(:mod:`shop_bridge.checkout`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from shop_bridge.context import ShopContext, primary_key
from shop_bridge.errors import conflict, not_found
from shop_bridge.models import PRODUCTS, SKUS
from shop_bridge.views import product_view, sku_view


class Catalog:
    """Products and SKUs."""

    def __init__(self, ctx: ShopContext) -> None:
        self.ctx = ctx

    async def create_product(self, data: dict[str, Any]) -> dict[str, Any]:
        now = self.ctx.now_ms()
        async with self.ctx.engine.begin() as conn:
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
            pid = primary_key(res)
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
        async with self.ctx.engine.connect() as conn:
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
            return product_view(dict(row), [dict(s) for s in skus])

    async def list_products(self, limit: int, after_id: int) -> list[dict[str, Any]]:
        async with self.ctx.engine.connect() as conn:
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
        return [product_view(r, skus[r["id"]]) for r in rows]

    async def update_product(self, product_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.engine.begin() as conn:
            res = await conn.execute(
                update(PRODUCTS)
                .where(PRODUCTS.c.id == product_id)
                .values(**changes, updated_ms=self.ctx.now_ms())
            )
            if res.rowcount != 1:
                raise not_found("product", product_id)
        product = await self.get_product(product_id)
        assert product is not None
        return product

    async def add_sku(self, product_id: int, sku: dict[str, Any]) -> dict[str, Any]:
        if await self.get_product(product_id) is None:
            raise not_found("product", product_id)
        async with self.ctx.engine.begin() as conn:
            await conn.execute(
                insert(SKUS).values(
                    product_id=product_id,
                    code=sku.get("code", ""),
                    specs=sku.get("specs", {}),
                    price_fen=sku["price_fen"],
                    stock=sku["stock"],
                    created_ms=self.ctx.now_ms(),
                )
            )
        product = await self.get_product(product_id)
        assert product is not None
        return product

    async def update_sku(self, sku_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        async with self.ctx.engine.begin() as conn:
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
        return sku_view(dict(row))

    async def sku(self, sku_id: int) -> dict[str, Any] | None:
        """The SKU's row, or None."""
        async with self.ctx.engine.connect() as conn:
            row = (await conn.execute(select(SKUS).where(SKUS.c.id == sku_id))).mappings().first()
            return dict(row) if row is not None else None
