"""Uploaded images (a broadcast's cover, a product's pictures): read a bounded body, accept
only real PNG, JPEG or WebP (by their magic bytes, whatever the declared type), store them
atomically under the data directory, serve them with their type and cache headers.

The body is the image itself (``Content-Type: image/png|jpeg|webp`` or
``application/octet-stream``) or ``multipart/form-data`` whose first file part is the image.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError

from core.http import ApiError

__all__ = [
    "IMAGE_TYPES",
    "MIME",
    "content_name",
    "image_response",
    "read_image",
    "remove_image",
    "sniff",
    "store_image",
]

IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
"""Declared types accepted (the bytes decide in any case)."""
MIME = {ext: mime for mime, ext in IMAGE_TYPES.items()}


def sniff(data: bytes) -> str | None:
    """``png``, ``jpg`` or ``webp`` from the magic bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if len(data) > 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _too_large(cap: int) -> ApiError:
    return ApiError(413, "body_too_large", f"image over {cap} bytes")


async def _bounded(read: AsyncIterable[bytes], cap: int) -> bytes:
    data = bytearray()
    async for chunk in read:
        data += chunk
        if len(data) > cap:
            raise _too_large(cap)
    return bytes(data)


async def read_image(request: web.Request, cap: int) -> tuple[bytes, str]:
    """The uploaded image's bytes and extension; 415 for another declared type, 413 over
    ``cap`` bytes, 400 ``not_an_image`` when the bytes are no PNG/JPEG/WebP."""
    ctype = request.content_type
    if request.content_length is not None and request.content_length > cap + 64 * 1024:
        raise _too_large(cap)
    if ctype == "multipart/form-data":
        data = await _from_form(request, cap)
    elif ctype in IMAGE_TYPES or ctype == "application/octet-stream":
        if request.content_length is not None and request.content_length > cap:
            raise _too_large(cap)
        data = await _bounded(request.content.iter_chunked(65536), cap)
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send a PNG, JPEG or WebP image body (or multipart/form-data with one)",
        )
    ext = sniff(data)
    if ext is None:
        raise ApiError(400, "not_an_image", "the body is not a PNG, JPEG or WebP image")
    return data, ext


async def _from_form(request: web.Request, cap: int) -> bytes:
    """The first file part of a ``multipart/form-data`` body (400 when malformed)."""
    if "boundary" not in parse_mimetype(request.headers.get("Content-Type", "")).parameters:
        raise ApiError(400, "invalid", "multipart/form-data without a boundary")
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, BodyPartReader) and part.filename is not None:
                return await _bounded(_part_chunks(part), cap)
    except ApiError:
        raise
    except (ValueError, AssertionError, RuntimeError, HttpProcessingError) as exc:
        raise ApiError(400, "invalid", f"malformed multipart/form-data: {exc}") from None
    raise ApiError(400, "invalid", "the form has no file part")


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        chunk = await part.read_chunk(65536)
        if not chunk:
            return
        yield chunk


def content_name(prefix: str, data: bytes, ext: str) -> str:
    """A file name that changes with the content (so it can be cached for good)."""
    return f"{prefix}-{hashlib.sha256(data).hexdigest()[:20]}.{ext}"


async def store_image(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` atomically (a temporary file renamed into place)."""

    def write() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(directory / name)

    await asyncio.to_thread(write)


async def remove_image(directory: Path, name: str | None) -> None:
    if name:
        await asyncio.to_thread((directory / name).unlink, True)


async def image_response(path: Path, cache_control: str) -> web.StreamResponse:
    """The stored image with its type (from its extension) and ``cache_control``; 404 when
    the file is missing."""
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not_found", "the image file is missing")
    mime = MIME.get(path.suffix.lstrip("."), "application/octet-stream")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": mime,
            "Cache-Control": cache_control,
            "X-Content-Type-Options": "nosniff",
        },
    )
