"""Recording through ffmpeg: live HLS, the VOD replay, covers, product clips, retention.

See ``docs/replay.md``. ``setup(app, config)`` installs the route table
(:data:`replay.api.ROUTES`) and a cleanup context
that starts :class:`~replay.service.ReplayService` once the runtime and the relay
registry exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from control.metrics import Metrics
from core.db import create_engine
from core.runtime import RUNTIME
from relay.http import REGISTRY
from replay.api import ROUTES, SERVICE
from replay.broadcasts import db_states
from replay.config import ReplayConfig
from replay.model import Replay, ReplayState
from replay.service import ReplayService
from replay.storage import LocalStorage, ReplayStorage

__all__ = [
    "SERVICE",
    "LocalStorage",
    "Replay",
    "ReplayConfig",
    "ReplayService",
    "ReplayState",
    "ReplayStorage",
    "setup",
]


def setup(app: web.Application, config: ReplayConfig) -> None:
    """Register this package's routes and lifecycle on ``app`` (not built yet)."""
    if config.segment_type not in ("mpegts", "fmp4"):
        raise ValueError("replay.segment_type must be 'mpegts' or 'fmp4'")

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]
        if rt.role == "edge":  # an edge's hubs are pulled copies: the origin records
            yield
            return
        storage = LocalStorage(rt.data_dir / "replay")
        engine = create_engine(rt.database_url)
        service = ReplayService(
            config, storage, app[REGISTRY], rt.bus, rt.http_base, broadcast_states=db_states(engine)
        )
        app[SERVICE] = service
        await service.start()
        try:
            yield
        finally:
            await service.stop()
            await engine.dispose()

    async def metrics(app: web.Application) -> None:
        # after every cleanup context: control's creates the /metrics registry (found by
        # its type: importing control's app key would tie control and replay in a cycle)
        service = app.get(SERVICE)
        found = [getattr(v, "metrics", None) for v in list(app.values())]
        registries = [m for m in found if isinstance(m, Metrics)]
        if service is not None and registries:
            registries[0].registry.register(ReplayCollector(service))

    app.cleanup_ctx.append(ctx)
    app.on_startup.append(metrics)
    ROUTES.install(app)


class ReplayCollector(Collector):
    """``/metrics`` figures of the replay service (read from memory when scraped)."""

    def __init__(self, service: ReplayService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        svc = self.service
        g = GaugeMetricFamily(
            "berrylive_replay_recording_paused",
            "1 while recording is paused (disk: free space below replay.min_free_bytes)",
            labels=["reason"],
        )
        g.add_metric(["disk"], 1 if svc.recording_paused == "disk" else 0)
        yield g
        g = GaugeMetricFamily(
            "berrylive_replay_disk_free_bytes", "Free bytes on the recording filesystem"
        )
        g.add_metric([], svc.disk_free if svc.disk_free is not None else float("nan"))
        yield g
        g = GaugeMetricFamily(
            "berrylive_replay_disk_floor_bytes", "Free-space floor below which recording pauses"
        )
        g.add_metric([], svc.disk_floor)
        yield g
        g = GaugeMetricFamily("berrylive_replay_bytes", "Bytes of finished replays")
        g.add_metric([], sum(r.size for r in list(svc.replays.values())))
        yield g
