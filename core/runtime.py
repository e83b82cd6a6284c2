"""What every package gets at startup: Redis, the event bus, the data dir, the secret.

``control.app`` fills a :class:`Runtime` in its first cleanup context and stores it under
:data:`RUNTIME`; each package's ``setup(app, section_config)`` adds its own cleanup
context after that one and reads ``app[RUNTIME]`` when it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from core.bus import EventBus


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
    extras: dict[str, Any] = field(default_factory=dict)

    def http_base(self) -> str:
        return f"http://{self.public_host}:{self.http_port}"

    def rtmp_base(self) -> str:
        return f"rtmp://{self.public_host}:{self.rtmp_port}"


RUNTIME: web.AppKey[Runtime] = web.AppKey("berrylive.runtime", Runtime)
