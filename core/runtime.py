"""What every package gets at startup: Redis, the event bus, the data dir, the secret.

``control.app`` fills a :class:`Runtime` in its first cleanup context and stores it under
:data:`RUNTIME`; each package's ``setup(app, section_config)`` adds its own cleanup
context after that one and reads ``app[RUNTIME]`` when it starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from core.bus import EventBus
from core.redis import EmbeddedValkey


@dataclass
class Runtime:
    redis: Any
    """``redis.asyncio.Redis`` client (decode_responses=False)."""
    redis_url: str
    bus: EventBus
    data_dir: Path
    secret: str
    node_id: str
    database_url: str
    public_host: str
    role: str = "origin"
    http_port: int = 0
    rtmp_port: int = 0
    valkey: EmbeddedValkey | None = None
    """The valkey-server berrylive runs itself (no ``REDIS_URL``); it counts its restarts."""

    @property
    def valkey_restarts(self) -> int:
        """Restarts of the embedded valkey-server after it died (0 with ``REDIS_URL``)."""
        return self.valkey.restarts if self.valkey is not None else 0

    def http_base(self) -> str:
        return f"http://{self.public_host}:{self.http_port}"

    def rtmp_base(self) -> str:
        return f"rtmp://{self.public_host}:{self.rtmp_port}"


def prepare_data_dir(path: str | os.PathLike[str]) -> Path:
    """The data dir as an absolute path, created (with its parents) if missing.

    Called once at startup, before anything opens a file in it (the SQLite database, the
    embedded valkey-server, recordings); absolute so that child processes that change
    directory (valkey-server does) or run elsewhere get the same path.
    """
    data_dir = Path(os.path.abspath(os.path.expanduser(path)))
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


RUNTIME: web.AppKey[Runtime] = web.AppKey("berrylive.runtime", Runtime)
