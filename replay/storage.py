"""Where replays live. Local disk under the data dir now; object storage later.

ffmpeg always writes to a local working directory (``work_dir``). A storage backend
decides where finished files are kept and how they are served: the local backend keeps
them in place and serves them from disk; an object-storage backend would upload in
``publish`` and answer ``url`` with a CDN / presigned address. Every method that touches
the disk runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

REPLAY_ID_RE = re.compile(r"^r[0-9a-f]{8,32}$")
FILE_RE = re.compile(r"^(?:p\d{1,4}/)?[A-Za-z0-9_\-]{1,64}\.(?:ts|m4s|mp4|m3u8|jpg|vtt)$")
"""Files a replay may serve: segments, playlists, MP4s, covers, sprites, WebVTT."""

MANIFEST = "replay.json"


class ReplayStorage(Protocol):
    """The storage interface the recorder and the API use."""

    def work_dir(self, replay_id: str) -> Path:
        """Local directory ffmpeg writes this replay into."""
        ...

    async def publish(self, replay_id: str) -> None:
        """The replay is final: make its files durable where they are served from."""
        ...

    def url(self, replay_id: str, name: str) -> str | None:
        """An absolute URL for a file (object storage), or None to serve it locally."""
        ...

    def local_file(self, replay_id: str, name: str) -> Path | None:
        """A local path for a servable file, or None."""
        ...

    async def save_manifest(self, replay_id: str, data: dict[str, Any]) -> None: ...

    async def load_manifests(self) -> list[dict[str, Any]]: ...

    async def delete(self, replay_id: str) -> None: ...

    async def size(self, replay_id: str) -> int: ...

    async def disk_space(self) -> tuple[int, int] | None:
        """``(free, size)`` in bytes of the local filesystem ffmpeg writes to."""
        ...


class LocalStorage:
    """Replays as directories under ``root`` (``<data_dir>/replay``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def work_dir(self, replay_id: str) -> Path:
        if not REPLAY_ID_RE.match(replay_id):
            raise ValueError(f"bad replay id {replay_id!r}")
        return self.root / replay_id

    async def publish(self, replay_id: str) -> None:
        return None

    def url(self, replay_id: str, name: str) -> str | None:
        return None

    def local_file(self, replay_id: str, name: str) -> Path | None:
        if not REPLAY_ID_RE.match(replay_id) or not FILE_RE.match(name):
            return None
        return self.root / replay_id / name

    async def save_manifest(self, replay_id: str, data: dict[str, Any]) -> None:
        path = self.work_dir(replay_id) / MANIFEST
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        await asyncio.to_thread(_atomic_write, path, text)

    async def load_manifests(self) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._load_all)

    def _load_all(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return out
        for entry in self.root.iterdir():
            if not REPLAY_ID_RE.match(entry.name):
                continue
            try:
                data = json.loads((entry / MANIFEST).read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("id") == entry.name:
                out.append(data)
        return out

    async def delete(self, replay_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.work_dir(replay_id), True)

    async def size(self, replay_id: str) -> int:
        return await asyncio.to_thread(dir_size, self.work_dir(replay_id))

    async def disk_space(self) -> tuple[int, int] | None:
        return await asyncio.to_thread(disk_space, self.root)


def disk_space(path: Path) -> tuple[int, int]:
    """``(free bytes for an unprivileged writer, filesystem size)`` of the filesystem
    holding ``path`` (its nearest existing ancestor)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
