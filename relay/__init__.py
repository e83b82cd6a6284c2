"""How streams go out: per-stream hubs with a GOP cache and serialize-once fan-out."""

from __future__ import annotations

from aiohttp import web

from relay.config import RelayConfig

__all__ = ["RelayConfig", "setup"]


def setup(app: web.Application, config: RelayConfig) -> None:
    return None
