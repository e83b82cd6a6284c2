"""A product's uploaded images: ``POST /api/products/{id}/images`` (operators; the image as
the body, or ``multipart/form-data``; PNG, JPEG or WebP by their magic bytes; at most
:data:`MAX_IMAGE_BYTES`), served at a stable URL named by the content
(``GET /api/products/{id}/images/{name}``, cached for good) and listed in the product's
``images`` with any URLs given by hand; ``DELETE`` one. Files live under
``DATA_DIR/product-images``. The reading, checking and storing is :mod:`core.images`
(shared with control's broadcast covers)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from aiohttp import web

from core import images
from core.routes import Op, OpDoc
from core.runtime import RUNTIME
from shop_bridge.api import SHOP, api
from shop_bridge.errors import ShopError
from shop_bridge.openapi import J

__all__ = ["MAX_IMAGE_BYTES", "ops"]

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_IMAGES = 20
"""As many as ``PATCH /api/products/{id}`` takes in ``images``."""
CACHE = "public, max-age=31536000, immutable"
"""The name changes with the content, so a URL's bytes never change."""
_NAME = re.compile(r"^(\d{1,12})-[0-9a-f]{20}\.(png|jpg|webp)$")
_locks: dict[int, asyncio.Lock] = {}


def _dir(request: web.Request) -> Path:
    return request.app[RUNTIME].data_dir / "product-images"


def _pid(request: web.Request) -> int:
    raw = request.match_info["product_id"]
    if not raw.isdigit() or len(raw) > 12:
        raise ShopError(404, "not_found", f"product_id {raw[:20]!r} does not exist")
    return int(raw)


def _url(pid: int, name: str) -> str:
    return f"/api/products/{pid}/images/{name}"


def _lock(pid: int) -> asyncio.Lock:
    """One change of a product's image list at a time on this node."""
    if len(_locks) > 1000:
        for k in [k for k, v in _locks.items() if not v.locked()]:
            del _locks[k]
    return _locks.setdefault(pid, asyncio.Lock())


@api
async def upload_image(request: web.Request) -> web.Response:
    pid = _pid(request)
    catalog = request.app[SHOP].catalog
    if await catalog.get_product(pid) is None:
        raise ShopError(404, "product_not_found", f"no product {pid}")
    data, ext = await images.read_image(request, MAX_IMAGE_BYTES)
    name = images.content_name(str(pid), data, ext)
    url = _url(pid, name)
    async with _lock(pid):
        product = await catalog.get_product(pid)
        if product is None:
            raise ShopError(404, "product_not_found", f"no product {pid}")
        have = list(product["images"])
        created = url not in have
        if created and len(have) >= MAX_IMAGES:
            raise ShopError(409, "too_many_images", f"a product has at most {MAX_IMAGES} images")
        await images.store_image(_dir(request), name, data)
        if created:
            product = await catalog.update_product(pid, {"images": [*have, url]})
    return web.json_response(
        {"url": url, "content_type": images.MIME[ext], "bytes": len(data), "product": product},
        status=201 if created else 200,
    )


def _name(request: web.Request, pid: int) -> str:
    name = request.match_info["name"]
    m = _NAME.match(name)
    if m is None or int(m.group(1)) != pid:
        raise ShopError(404, "not_found", "no such image")
    return name


@api
async def get_image(request: web.Request) -> web.StreamResponse:
    pid = _pid(request)
    name = _name(request, pid)
    return await images.image_response(_dir(request) / name, CACHE)


@api
async def delete_image(request: web.Request) -> web.Response:
    pid = _pid(request)
    name = _name(request, pid)
    catalog = request.app[SHOP].catalog
    async with _lock(pid):
        product = await catalog.get_product(pid)
        if product is None:
            raise ShopError(404, "product_not_found", f"no product {pid}")
        url = _url(pid, name)
        if url not in product["images"]:
            raise ShopError(404, "not_found", "this product has no such image")
        product = await catalog.update_product(
            pid, {"images": [u for u in product["images"] if u != url]}
        )
        await images.remove_image(_dir(request), name)
    return web.json_response(product)


def ops(
    doc: Callable[..., OpDoc], path: Callable[..., J], query: Callable[[str, J], J]
) -> list[Op]:
    """The routes, documented with the shop table's ``doc`` and ``path`` helpers."""
    pid = path("product_id", {"type": "integer"})
    name = path("name", {"type": "string", "pattern": _NAME.pattern})
    upload = doc(
        f"Upload a product image (PNG, JPEG or WebP, at most {MAX_IMAGE_BYTES} bytes): "
        "added to the product's images at a URL named by its content",
        ["operator"],
        {"type": "object"},
        status="201",
        params=[pid],
        errors=(400, 404, 409, 413, 415),
        also_ok=("200",),  # the same image again: already there
    )
    binary = {"schema": {"type": "string", "format": "binary"}}
    extra = dict(upload.extra or {})
    extra["requestBody"] = {
        "required": True,
        "content": {
            **{t: binary for t in images.IMAGE_TYPES},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
    extra["responses"] = {
        **extra["responses"],
        "200": {"description": "the same image was there already"},
    }
    upload = replace(upload, extra=extra, also_ok=(200,))
    served = doc("A product image (cached for good)", ["public"], params=[pid, name])
    served_extra = dict(served.extra or {})
    served_extra["responses"] = {
        **served_extra["responses"],
        "200": {"description": "the image", "content": {t: binary for t in images.IMAGE_TYPES}},
    }
    served = replace(served, extra=served_extra)
    return [
        Op("POST", "/api/products/{product_id}/images", upload_image, upload),
        Op("GET", "/api/products/{product_id}/images/{name}", get_image, served),
        Op(
            "DELETE",
            "/api/products/{product_id}/images/{name}",
            delete_image,
            doc("Remove an uploaded image", ["operator"], {"type": "object"}, params=[pid, name]),
        ),
    ]
