"""The relay's place in the app: ``setup(app, config)`` creates the stream registry,
installs the routes (:data:`relay.routes.ROUTES`) and starts the cluster: the node's
heartbeat, then edge pulls (on an edge) or forwards (on an origin).

It sits above the modules it assembles (``cluster``, ``edge``, ``forward``, ``routes``),
which never import it: the import graph of ``relay`` stays acyclic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from core.runtime import RUNTIME
from relay import edge, forward, whep
from relay.cluster import CLUSTER, ClusterNode
from relay.config import RelayConfig
from relay.hls import HlsService
from relay.hls_http import HLS
from relay.http import REGISTRY
from relay.http_guard import HTTP_LIMITS, HttpLimits
from relay.hub import StreamRegistry
from relay.routes import ROUTES


def setup(app: web.Application, config: RelayConfig) -> None:
    """The stream registry (created at once, so ingest can find it), the HTTP routes
    (HTTP-FLV / WS-FLV, ``/api/streams``, ``/api/play``, ``/api/cluster/*``) and the
    cluster's lifecycle (docs/cluster.md)."""
    registry = StreamRegistry(config, linger_seconds=config.publisher_linger)
    app[REGISTRY] = registry
    app[HTTP_LIMITS] = HttpLimits.of(config)  # the HTTP port's deadlines and caps (PlaySite)

    hls = app[HLS] = HlsService(registry, config)  # LL-HLS packaging (relay.hls)

    async def registry_ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        hls.close()
        registry.close()

    app.cleanup_ctx.append(registry_ctx)
    whep.setup(app)  # WebRTC playback (relay.whep): its viewings end before the registry
    ROUTES.install(app)
    setup_cluster(app, config)


def setup_cluster(app: web.Application, config: RelayConfig) -> None:
    """Cluster lifecycle: heartbeat, edge pulls, forwards."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]
        registry = app[REGISTRY]
        node = ClusterNode(registry, rt, config)
        app[CLUSTER] = node
        app[HLS].package_always(config.hls_package_always and rt.role != "edge")
        await node.start()
        puller: edge.EdgePuller | None = None
        forwarder: forward.Forwarder | None = None
        if rt.role == "edge":
            puller = edge.EdgePuller(registry, node.directory, rt, config)
            await puller.start()
            app[edge.PULLER] = puller
        else:  # origins forward (static rules and per-broadcast rules from Redis)
            forwarder = forward.Forwarder(registry, rt, config)
            await forwarder.start()
        try:
            yield
        finally:
            if forwarder is not None:
                await forwarder.close()
            if puller is not None:
                await puller.close()
            await node.close()

    app.cleanup_ctx.append(ctx)
