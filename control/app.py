"""App assembly: ``create_app(config)`` wires every package onto one aiohttp application.

Lifecycles are cleanup contexts, started in order and torn down in reverse:
runtime (Redis + event bus) -> control's records (database, broadcasts following
``stream.*``) -> relay registry -> ingest (RTMP server) -> danmaku -> shop -> replay ->
control (API, sweeper, webhooks). So on shutdown ingest ends its RTMP sessions and
publishes ``stream.unpublished`` while control still listens (the broadcasts become
``interrupted``, not stuck ``live``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

import core.rtc
import danmaku
import ingest
import relay.wiring
import replay
import shop_bridge
import viewer
from control import api as control_api
from control.broadcast_model import Broadcast
from control.config import Config
from control.context import CONTROL
from core.bus import EventBus, InProcessBus, RedisBus
from core.client_address import TRUSTED_PROXIES, TrustedProxies, client_address_middleware
from core.http import error_middleware
from core.redis import EmbeddedValkey, connect
from core.runtime import RUNTIME, Runtime, prepare_data_dir

logger = logging.getLogger(__name__)

CONFIG: web.AppKey[Config] = web.AppKey("berrylive.config", Config)
STARTED_AT: web.AppKey[float] = web.AppKey("berrylive.started_at", float)


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[error_middleware])
    proxies = TrustedProxies(config.server.trusted_proxies, config.server.trusted_proxy_header)
    if proxies:  # before control's auth and every handler: they all read request.remote
        app.middlewares.append(client_address_middleware(proxies))
    app[TRUSTED_PROXIES] = proxies
    app[CONFIG] = config
    app[STARTED_AT] = time.time()
    app.cleanup_ctx.append(_runtime_ctx)
    app.cleanup_ctx.append(control_api.records_ctx)  # outlives ingest (see above)
    core.rtc.setup(app, config.webrtc, default_host=config.server.host)  # the WebRTC UDP port
    relay.wiring.setup(app, config.relay)  # registry, routes, cluster (relay/wiring.py)
    ingest.setup(
        app,
        config.ingest,
        host=config.server.host,
        port=config.server.rtmp_port,
        backlog=config.server.listen_backlog,
    )
    if config.danmaku.enabled:
        danmaku.setup(app, config.danmaku)
    if config.shop.enabled:
        shop_bridge.setup(app, config.shop)
    if config.replay.enabled:
        replay.setup(app, config.replay)
    if config.viewer.enabled:
        viewer.setup(app, config.viewer, _watch_broadcast)  # /watch/APP/STREAM
    control_api.setup(app, config)
    app.router.add_get("/healthz", _healthz)
    return app


async def _watch_broadcast(app: web.Application, app_name: str, stream: str) -> Broadcast | None:
    """The viewer page's lookup: the broadcast of ``app_name/stream`` (None: none yet)."""
    broadcasts = app[CONTROL].broadcasts
    return None if broadcasts is None else await broadcasts.find_by_stream(app_name, stream)


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    embedded: EmbeddedValkey | None = None
    data_dir = await asyncio.to_thread(prepare_data_dir, config.data_path)
    if config.redis.url:
        redis_url = config.redis.url
    else:
        embedded = EmbeddedValkey(data_dir, port=config.redis.embedded_port)
        await embedded.start()
        redis_url = embedded.url
    client = connect(redis_url)
    node_id = config.server.node_id or f"{config.server.role}-{uuid.uuid4().hex[:8]}"
    bus: EventBus
    if config.redis.url:
        bus = RedisBus(client, node=node_id)
    else:
        bus = InProcessBus(node=node_id)
    await bus.start()
    app[RUNTIME] = Runtime(
        redis=client,
        redis_url=redis_url,
        bus=bus,
        data_dir=data_dir,
        secret=config.server.secret,
        node_id=node_id,
        database_url=config.database_url,
        public_host=config.public_host(),
        role=config.server.role,
        http_port=config.server.http_port,
        rtmp_port=config.server.rtmp_port,
        valkey=embedded,
    )
    try:
        yield
    finally:
        await bus.close()
        await client.aclose()
        if embedded is not None:
            await embedded.stop()


async def _healthz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    try:
        redis_ok = bool(await rt.redis.ping())
    except Exception:
        redis_ok = False
    body = {
        "status": "ok" if redis_ok else "degraded",
        "node": rt.node_id,
        "role": rt.role,
        "redis": redis_ok,
        "uptime": round(time.time() - request.app[STARTED_AT], 3),
    }
    return web.json_response(body, status=200 if redis_ok else 503)
