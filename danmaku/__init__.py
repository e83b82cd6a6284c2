"""danmaku package (see ../shared/ARCHITECTURE.md)."""

from __future__ import annotations

from aiohttp import web

from danmaku.config import DanmakuConfig

__all__ = ["DanmakuConfig", "setup"]


def setup(app: web.Application, config: DanmakuConfig) -> None:
    """Register this package's routes and lifecycle on ``app`` (not built yet)."""
    return None
