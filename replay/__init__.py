"""replay package (see ../shared/ARCHITECTURE.md)."""

from __future__ import annotations

from aiohttp import web

from replay.config import ReplayConfig

__all__ = ["ReplayConfig", "setup"]


def setup(app: web.Application, config: ReplayConfig) -> None:
    """Register this package's routes and lifecycle on ``app`` (not built yet)."""
    return None
