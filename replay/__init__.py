"""Recording through ffmpeg: live HLS, the VOD replay, covers, product clips, retention.

See ``docs/replay.md``. ``setup(app, config)`` installs the route table
(:data:`replay.api.ROUTES`) and a cleanup context
that starts :class:`~replay.service.ReplayService` once the runtime and the relay
registry exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

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

    app.cleanup_ctx.append(ctx)
    ROUTES.install(app)
