"""Product images uploaded (issue 20, catalog): a real PNG as the body, a JPEG in a
multipart form, the same bytes again (no duplicate), served publicly at a stable URL with
cache headers; refused: a text file calling itself a PNG, a GIF, another declared type,
an image over the cap, an anchor, a product that does not exist; one deleted (file and
URL gone). The magic-byte check (``core.images.sniff``) under hypothesis."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import aiohttp
from hypothesis import given
from hypothesis import strategies as st

from core import images
from shop_bridge import image_routes
from tests.shop.conftest import make_product


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64


async def _post(shop: Any, path: str, token: str | None, **kw: Any) -> tuple[int, Any]:
    headers = dict(kw.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with shop.api.session.post(shop.api.base + path, headers=headers, **kw) as r:
        return r.status, await r.json(content_type=None)


async def test_upload_serve_and_delete_product_images(shop, monkeypatch) -> None:
    product = await make_product(shop.api)
    pid = product["id"]
    op = shop.api.token
    path = f"/api/products/{pid}/images"
    image = png()

    status, up = await _post(shop, path, op, data=image, headers={"Content-Type": "image/png"})
    assert status == 201, up
    url = up["url"]
    assert url.startswith(f"/api/products/{pid}/images/") and url.endswith(".png")
    assert up["product"]["images"] == ["https://img.example/scarf.jpg", url]
    async with shop.api.session.get(shop.api.base + url) as r:  # public: the shop's pages
        assert r.status == 200
        assert await r.read() == image
        assert r.headers["Content-Type"] == "image/png"
        assert "immutable" in r.headers["Cache-Control"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    # the same bytes again: the same URL, not a second entry
    status, again = await _post(shop, path, op, data=image, headers={"Content-Type": "image/png"})
    assert status == 200 and again["url"] == url and len(again["product"]["images"]) == 2

    form = aiohttp.FormData()
    form.add_field("file", JPEG, filename="photo.jpg", content_type="image/jpeg")
    status, up2 = await _post(shop, path, op, data=form)
    assert status == 201 and up2["url"].endswith(".jpg"), up2
    assert up2["content_type"] == "image/jpeg"

    refused = [
        (b"hello, I am a PNG", "image/png", 400, "not_an_image"),
        (image, "multipart/form-data", 400, "invalid"),  # no boundary
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", 400, "invalid"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/png", 400, "not_an_image"),
        (image, "text/plain", 415, "unsupported_media_type"),
    ]
    for body, ctype, want, code in refused:
        status, err = await _post(shop, path, op, data=body, headers={"Content-Type": ctype})
        assert (status, err["error"]["code"]) == (want, code), (ctype, err)
    monkeypatch.setattr(image_routes, "MAX_IMAGE_BYTES", 1000)
    big = image + bytes(2000)  # a PNG signature, over the cap
    assert len(big) > 1000
    status, err = await _post(shop, path, op, data=big, headers={"Content-Type": "image/png"})
    assert status == 413, err
    monkeypatch.undo()
    status, _ = await _post(
        shop, path, shop.api.tokens["anchor"], data=image, headers={"Content-Type": "image/png"}
    )
    assert status == 403
    status, _ = await _post(shop, path, None, data=image, headers={"Content-Type": "image/png"})
    assert status == 401
    status, _ = await _post(
        shop, "/api/products/999999/images", op, data=image, headers={"Content-Type": "image/png"}
    )
    assert status == 404
    got = await shop.api.ok("GET", f"/api/products/{pid}")
    assert got["images"] == ["https://img.example/scarf.jpg", url, up2["url"]]

    # deleted: out of the list, the file and its URL gone
    name = url.rsplit("/", 1)[1]
    stored = shop.server.runtime.data_dir / "product-images" / name
    assert stored.is_file()
    after = await shop.api.ok("DELETE", url)
    assert after["images"] == ["https://img.example/scarf.jpg", up2["url"]]
    assert not stored.exists()
    async with shop.api.session.get(shop.api.base + url) as r:
        assert r.status == 404
    status, _ = await shop.api.call("DELETE", url)
    assert status == 404
    status, _ = await shop.api.call("DELETE", f"/api/products/{pid}/images/..%2F..%2Fetc")
    assert status == 404


@given(st.binary(max_size=64))
def test_sniff_knows_only_the_three_signatures(data: bytes) -> None:
    got = images.sniff(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        assert got == "png"
    elif data.startswith(b"\xff\xd8\xff"):
        assert got == "jpg"
    elif len(data) > 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        assert got == "webp"
    else:
        assert got is None


@given(
    st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
    st.binary(max_size=32),
)
def test_sniff_accepts_each_signature(head: bytes, tail: bytes) -> None:
    assert images.sniff(head + tail) in ("png", "jpg", "webp")
