"""How streams go out: per-stream hubs with a GOP cache and serialize-once fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from relay.config import RelayConfig
from relay.http import REGISTRY, add_routes
from relay.hub import Publisher, PublisherInfo, StreamHub, StreamRegistry, Viewer, ViewerInfo
from relay.wiring import setup_cluster

__all__ = [
    "REGISTRY",
    "Publisher",
    "PublisherInfo",
    "RelayConfig",
    "StreamHub",
    "StreamRegistry",
    "Viewer",
    "ViewerInfo",
    "setup",
]


def setup(app: web.Application, config: RelayConfig) -> None:
    """The stream registry (created at once, so ingest can find it) and the HTTP outputs."""
    registry = StreamRegistry(config, linger_seconds=config.publisher_linger)
    app[REGISTRY] = registry

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        registry.close()

    app.cleanup_ctx.append(ctx)
    add_routes(app)
    setup_cluster(app, config)  # heartbeat, edge pulls, forwards, /api/play (docs/cluster.md)
