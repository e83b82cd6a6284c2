"""The cluster's place in the app: the node's heartbeat, then edge pulls (on an edge) or
forwards (on an origin). (The scheduler's routes are in :mod:`relay.routes`.)

It sits above the modules it assembles (``cluster``, ``edge``, ``forward``), which never
import it: the import graph of ``relay`` stays acyclic.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from core.runtime import RUNTIME
from relay import edge, forward
from relay.cluster import CLUSTER, ClusterNode
from relay.config import RelayConfig
from relay.http import REGISTRY


def setup_cluster(app: web.Application, config: RelayConfig) -> None:
    """Cluster lifecycle: heartbeat, edge pulls, forwards."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]
        registry = app[REGISTRY]
        node = ClusterNode(registry, rt, config)
        app[CLUSTER] = node
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
