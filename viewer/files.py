"""The page's files, read and gzip-compressed once, served from memory.

A phone on a mobile network should not fetch hls.js (543 kB) uncompressed, and compressing
per request would cost every viewer's join a few milliseconds of CPU. So each file is read
and compressed once (in a thread), kept with its ETag, and served as gzip to clients that
accept it; a changed file (its size or modification time) is read again. ``If-None-Match``
answers 304. Bounded: only the files the route table names are ever loaded.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

__all__ = ["FileCache"]


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[int, int]
    raw: bytes
    gz: bytes
    etag: str


def _load(path: Path) -> _Entry | None:
    try:
        st = os.stat(path)
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    return _Entry((st.st_mtime_ns, st.st_size), raw, gzip.compress(raw, 9, mtime=0), etag)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_mtime_ns, st.st_size)


class FileCache:
    def __init__(self) -> None:
        self._entries: dict[Path, _Entry] = {}
        self._locks: dict[Path, asyncio.Lock] = {}

    async def get(self, path: Path) -> _Entry | None:
        entry = self._entries.get(path)
        stamp = await asyncio.to_thread(_stamp, path)
        if stamp is None:
            self._entries.pop(path, None)
            return None
        if entry is not None and entry.stamp == stamp:
            return entry
        lock = self._locks.setdefault(path, asyncio.Lock())
        async with lock:  # one read and compression per file, however many ask at once
            entry = self._entries.get(path)
            if entry is None or entry.stamp != stamp:
                loaded = await asyncio.to_thread(_load, path)
                if loaded is None:
                    return None
                self._entries[path] = entry = loaded
        return entry

    async def respond(
        self, request: web.Request, path: Path, content_type: str, cache_control: str
    ) -> web.Response | None:
        """The file as a response (gzip when accepted; 304 when unchanged), or None."""
        entry = await self.get(path)
        if entry is None:
            return None
        headers = {
            "Cache-Control": cache_control,
            "ETag": entry.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if entry.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        body = entry.raw
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            body = entry.gz
            headers["Content-Encoding"] = "gzip"
        charset = "utf-8" if content_type.startswith("text/") else None
        return web.Response(body=body, headers=headers, content_type=content_type, charset=charset)
