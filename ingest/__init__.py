"""How streams come in: the RTMP server, WHIP, publish auth and republish takeover."""

from __future__ import annotations

from aiohttp import web

from ingest.config import IngestConfig

__all__ = ["IngestConfig", "setup"]


def setup(app: web.Application, config: IngestConfig, host: str, port: int) -> None:
    return None
