"""How streams go out: per-stream hubs with a GOP cache and serialize-once fan-out.

The relay's place in the app is :func:`relay.wiring.setup` (the registry, the routes,
the cluster). It is not re-exported here: this package's ``__init__`` stays a leaf that
ingest can import (for :data:`REGISTRY`) while the cluster listens to ingest's events
(``ingest.events``), so the import graph has no cycle.
"""

from __future__ import annotations

from relay.config import RelayConfig
from relay.http import REGISTRY
from relay.hub import Publisher, PublisherInfo, StreamHub, StreamRegistry, Viewer, ViewerInfo

__all__ = [
    "REGISTRY",
    "Publisher",
    "PublisherInfo",
    "RelayConfig",
    "StreamHub",
    "StreamRegistry",
    "Viewer",
    "ViewerInfo",
]
