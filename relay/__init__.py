"""How streams go out: per-stream hubs with a GOP cache and serialize-once fan-out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from relay.config import RelayConfig
from relay.http import REGISTRY
from relay.hub import Publisher, PublisherInfo, StreamHub, StreamRegistry, Viewer, ViewerInfo
from relay.routes import ROUTES
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
    """The stream registry (created at once, so ingest can find it), the HTTP routes
    (:data:`relay.routes.ROUTES`) and the cluster (:mod:`relay.wiring`)."""
    registry = StreamRegistry(config, linger_seconds=config.publisher_linger)
    app[REGISTRY] = registry

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        registry.close()

    app.cleanup_ctx.append(ctx)
    ROUTES.install(app)  # HTTP-FLV / WS-FLV, /api/streams, /api/play, /api/cluster/*
    setup_cluster(app, config)  # heartbeat, edge pulls, forwards (docs/cluster.md)
