"""How streams come in: the RTMP server, WHIP, publish auth and republish takeover."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from core.runtime import RUNTIME
from ingest.config import IngestConfig
from ingest.events import StreamKick
from ingest.hooks import Hooks
from ingest.rtmp_server import RtmpServer
from ingest.whip import ROUTES as WHIP_ROUTES
from ingest.whip import WHIP_SERVER, WhipServer, endpoint_of
from relay.http import PLAY_GUARD, PLAY_STOP, REGISTRY

__all__ = ["RTMP_SERVER", "WHIP_SERVER", "IngestConfig", "RtmpServer", "WhipServer", "setup"]

logger = logging.getLogger(__name__)

RTMP_SERVER: web.AppKey[RtmpServer] = web.AppKey("ingest.rtmp_server", RtmpServer)


def setup(
    app: web.Application, config: IngestConfig, host: str, port: int, backlog: int = 1024
) -> None:
    """Start the RTMP listener and WHIP (``/whip/APP/STREAM``) with the app; listen to
    ``stream.kick`` events."""
    WHIP_ROUTES.install(app)
    hooks = Hooks(
        config.on_publish, config.on_unpublish, config.on_play, config.on_stop, config.hook_timeout
    )
    if config.on_play:

        async def guard(
            app_name: str, stream: str, protocol: str, remote: str, query: str
        ) -> tuple[bool, str]:
            return await hooks.call(
                "on_play", _play_payload(app_name, stream, protocol, remote, query)
            )

        app[PLAY_GUARD] = guard
    if config.on_stop:

        async def stopped(
            app_name: str, stream: str, protocol: str, remote: str, query: str
        ) -> None:
            await hooks.call("on_stop", _play_payload(app_name, stream, protocol, remote, query))

        app[PLAY_STOP] = stopped

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]
        server = RtmpServer(
            config,
            app[REGISTRY],
            rt.bus,
            rt.secret,
            rt.node_id,
            redis=rt.redis,
            hooks=hooks,
            role=rt.role,
        )
        _host, bound = await server.start(host, port, backlog)
        rt.rtmp_port = bound
        app[RTMP_SERVER] = server
        endpoint = endpoint_of(app)
        whip = WhipServer(
            config,
            app[REGISTRY],
            rt.bus,
            rt.secret,
            rt.node_id,
            endpoint=endpoint,
            rtc_config=endpoint.config if endpoint is not None else None,
            hooks=hooks,
            key_version=server.key_version,
            banned=server.banned,
            role=rt.role,
        )
        app[WHIP_SERVER] = whip

        def on_kick(event: StreamKick) -> None:
            a, s, reason = event.app, event.stream, event.reason or "kicked"
            if isinstance(a, str) and isinstance(s, str) and server.kick(a, s, reason):
                logger.info("kicked publisher of %s/%s: %s", a, s, reason)

        unsubscribe = rt.bus.on(StreamKick, on_kick)
        try:
            yield
        finally:
            unsubscribe()
            await whip.close()
            await server.close()

    app.cleanup_ctx.append(ctx)


def _play_payload(
    app_name: str, stream: str, protocol: str, remote: str, query: str
) -> dict[str, Any]:
    """The SRS-style body of ``on_play`` / ``on_stop`` for an HTTP viewer."""
    return {
        "app": app_name,
        "stream": stream,
        "ip": remote.rsplit(":", 1)[0],
        "param": f"?{query}" if query else "",
        "protocol": protocol,
    }
