"""shop_bridge package (see ../shared/ARCHITECTURE.md)."""

from __future__ import annotations

from aiohttp import web

from shop_bridge.config import ShopConfig

__all__ = ["ShopConfig", "setup"]


def setup(app: web.Application, config: ShopConfig) -> None:
    """Register this package's routes and lifecycle on ``app`` (not built yet)."""
    return None
