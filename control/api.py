"""The control plane on the app: its route table, its lifecycle and ``setup``.

``setup(app, config)`` (called from :func:`control.app.create_app`) adds the auth
middleware for every ``/api/`` route, installs control's route table (:data:`OPS`, put
together from the ``routes_*`` modules, one per resource; the OpenAPI document is
generated from the installed tables) and a cleanup context that opens the database,
migrates it, subscribes to the bus and runs the sweeper and webhook worker.

Where to read: ``routes_accounts`` (sign-in, users, tokens), ``routes_broadcasts`` (the
schedule, lifecycle actions, covers), ``routes_live`` (push/play URLs, stats, reminders,
danmaku tokens), ``routes_webhooks``, ``routes_meta`` (the API document, metrics, console);
``context`` holds what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from control import (
    routes_accounts,
    routes_broadcasts,
    routes_live,
    routes_meta,
    routes_streams,
    routes_webhooks,
)
from control.accounts import Accounts, LoginLimiter
from control.auth import AUTH, AuthState, auth_middleware
from control.broadcast_model import NotFound
from control.broadcasts import BroadcastService
from control.context import CONSOLE_DIR, CONTROL, MIGRATIONS, Control
from control.lifecycle import OPEN, State
from control.metrics import Metrics
from control.models import broadcasts as broadcasts_table
from control.openapi import SCHEMAS, build_spec
from control.series import HubProbe, LiveSeries
from control.settings import load_settings
from control.stats import LiveStats
from control.webhooks import WebhookService
from core.db import create_engine, migrate
from core.routes import RouteTable, installed
from core.runtime import RUNTIME
from relay.cluster import CLUSTER
from relay.http import REGISTRY
from relay.hub import INTERNAL_CONSUMERS
from shop_bridge.api import SHOP

__all__ = ["CONTROL", "OPS", "Control", "setup"]

logger = logging.getLogger(__name__)

OPS = RouteTable(
    "control",
    [
        *routes_accounts.OPS,
        *routes_broadcasts.OPS,
        *routes_live.OPS,
        *routes_streams.OPS,
        *routes_webhooks.OPS,
        *routes_meta.OPS,
    ],
    schemas=SCHEMAS,
)
"""Control's routes: every route, its roles and its API doc (see :mod:`core.routes`)."""


# -- lifecycle -------------------------------------------------------------------------


async def _relay_streams(app: web.Application) -> list[dict[str, Any]]:
    """The relay's per-stream stats (``relay.http.REGISTRY``), as ``GET /api/streams`` has them."""
    try:
        from relay.http import REGISTRY
    except ImportError:  # pragma: no cover - relay is part of berrylive
        return []
    registry = app.get(REGISTRY)
    if registry is None:
        return []
    return [hub.stats() for hub in list(registry.hubs.values())]


def _hub_probe(app: web.Application, app_name: str, stream: str) -> HubProbe | None:
    """What the series samples of this node's hub of a stream (relay's public state): its
    viewers' addresses, the last keyframe's and frame's times, who is behind."""
    registry = app.get(REGISTRY)
    hub = registry.get(app_name, stream) if registry is not None else None
    if hub is None:
        return None
    addresses: list[str] = []
    behind: set[int] = set()
    ids: set[int] = set()
    for viewer in list(hub.viewers):
        if viewer.info.protocol in INTERNAL_CONSUMERS or viewer.info.protocol == "forward":
            continue
        ids.add(id(viewer))
        if viewer.waiting_keyframe and viewer.skips > 0:
            behind.add(id(viewer))
        remote = str(viewer.info.remote or "")
        if remote:  # the host of host:port (an IPv6 address has more colons)
            addresses.append(remote.rsplit(":", 1)[0] if remote.count(":") == 1 else remote)
    keyframe = hub.gop[0].dts if hub.gop_valid and hub.gop else None
    return HubProbe(addresses, keyframe, hub.last_dts, frozenset(behind), frozenset(ids))


async def _gather_metrics(app: web.Application) -> dict[str, Any]:
    ctl = app[CONTROL]
    _, _, wh, stats = ctl.need()
    assert ctl.engine is not None
    async with ctl.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(broadcasts_table.c.state, sa.func.count()).group_by(
                    broadcasts_table.c.state
                )
            )
        ).all()
        on_air = (
            await conn.scalars(
                sa.select(broadcasts_table.c.id)
                .where(broadcasts_table.c.state.in_([s.value for s in OPEN]))
                .order_by(broadcasts_table.c.id.desc())
                .limit(MAX_METRIC_BROADCASTS)
            )
        ).all()
    counts = {s.value: 0 for s in State}
    counts.update({r[0]: int(r[1]) for r in rows})
    return {
        "streams": await stats.streams(),
        "broadcasts": counts,
        "totals": dict(stats.totals),
        "sales": await stats.sales([int(b) for b in on_air]),
        "webhooks": {
            "delivered": wh.counters.delivered,
            "failed_attempts": wh.counters.failed_attempts,
            "gave_up": wh.counters.gave_up,
            "pending": wh.pending,
        },
        "bus_published": app[RUNTIME].bus.published,
        "valkey_restarts": app[RUNTIME].valkey_restarts,
    }


MAX_METRIC_BROADCASTS = 500
"""Broadcasts not over yet (scheduled, live, interrupted; the newest first) whose sales
``/metrics`` labels at most (a label set each)."""


async def _shop_sales(app: web.Application, ids: list[int]) -> dict[int, dict[str, int]]:
    """The shop's figures of these broadcasts (:mod:`shop_bridge.gmv`, the one definition)."""
    shop = app.get(SHOP)
    if shop is None:
        return {}
    figs = await shop.reports.figures([str(i) for i in ids])
    return {int(k): v.as_dict() for k, v in figs.items()}


RECONCILE_EVERY = 30.0
"""Seconds between checks that every ``live`` broadcast's stream is live somewhere."""


async def stream_live(app: web.Application, app_name: str, stream: str) -> bool:
    """Whether ``app_name/stream`` is live on this node (the relay registry) or on a live
    node of the cluster (the directory's claim, held by a node still beating)."""
    registry = app.get(REGISTRY)
    hub = registry.get(app_name, stream) if registry is not None else None
    if hub is not None and hub.live:
        return True
    node = app.get(CLUSTER)
    if node is None:
        return False
    owner = await node.directory.stream_owner(f"{app_name}/{stream}")
    if owner is None or owner == app[RUNTIME].node_id:
        return False
    return await node.directory.node(owner) is not None


async def _sweeper(app: web.Application, bs: BroadcastService, interval: float) -> None:
    next_reconcile = 0.0
    loop = asyncio.get_running_loop()
    while True:
        try:
            if loop.time() >= next_reconcile:
                next_reconcile = loop.time() + RECONCILE_EVERY
                n = await bs.reconcile_live(lambda a, s: stream_live(app, a, s))
                if n:
                    logger.warning("%d live broadcast(s) had no stream: now interrupted", n)
            await bs.sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("lifecycle sweeper failed; retrying")
        await asyncio.sleep(interval)


async def records_ctx(app: web.Application) -> AsyncIterator[None]:
    """Control's records and its reactions to ingest: the database, accounts, broadcasts
    and their ``stream.*`` / ``replay.ready`` subscriptions.

    Placed right after the runtime (``create_app``), so it starts before ingest accepts a
    publisher and stops after ingest has ended every RTMP session: the
    ``stream.unpublished`` a shutdown publishes is still handled (the broadcast becomes
    ``interrupted``), then the bus is drained, then the subscriptions end."""
    ctl = app[CONTROL]
    rt = app[RUNTIME]
    engine = create_engine(rt.database_url)
    await migrate(engine, MIGRATIONS, "control")
    ctl.engine = engine
    ctl.accounts = Accounts(engine, ctl.settings.session_ttl)
    ctl.broadcasts = BroadcastService(engine, rt.redis, rt.bus, ctl.settings, rt.secret)
    # webhooks record every event from here (a row per delivery, in the database), so the
    # broadcast.interrupted of a shutdown is recorded too; the worker that posts them runs
    # in _control_ctx and picks up whatever is pending when it starts again
    ctl.webhooks = WebhookService(engine, ctl.settings)
    unsubscribe = [
        *ctl.broadcasts.subscribe_events(),
        rt.bus.subscribe("*", ctl.webhooks.on_event),  # webhooks forward every event as is
    ]
    try:
        yield
    finally:
        try:
            await asyncio.wait_for(rt.bus.drain(), 10)
        except TimeoutError:
            logger.warning("shutdown: events still queued after 10 s; not handled")
        for unsub in unsubscribe:
            unsub()
        await engine.dispose()


async def _control_ctx(app: web.Application) -> AsyncIterator[None]:
    ctl = app[CONTROL]
    rt = app[RUNTIME]
    settings = ctl.settings
    if ctl.engine is None or ctl.accounts is None or ctl.broadcasts is None:
        raise RuntimeError("control.api.records_ctx must start before control's context")
    if ctl.webhooks is None:
        raise RuntimeError("control.api.records_ctx must start before control's context")
    webhooks = ctl.webhooks
    broadcasts = ctl.broadcasts

    async def room_broadcast(room: str) -> int | None:
        app_name, _, stream = room.partition("/")
        if not app_name or not stream or len(room) > 256:
            return None
        found = await broadcasts.find_by_stream(app_name, stream)
        return found.id if found is not None else None

    ctl.stats = LiveStats(
        rt.redis,
        lambda: _relay_streams(app),
        lambda ids: _shop_sales(app, ids),
        room_broadcast,
    )
    ctl.limiter = LoginLimiter(
        rt.redis, settings.login_max_failures, settings.login_max_failures_ip, settings.login_window
    )
    ctl.metrics = Metrics(lambda: _gather_metrics(app))
    ctl.series = LiveSeries(
        ctl.engine,
        rt.redis,
        ctl.stats,
        settings,
        rt.node_id,
        lambda a, s: _hub_probe(app, a, s),
    )
    auth = app[AUTH]
    auth.accounts = ctl.accounts

    async def anchor_of(broadcast_id: int) -> int | None:
        try:
            return (await broadcasts.get(broadcast_id)).anchor_id
        except NotFound:
            return None

    auth.anchor_of = anchor_of
    auth.room_broadcast = room_broadcast
    shop = app.get(SHOP)
    if shop is not None:

        async def broadcast_for_shop(raw: str) -> dict[str, Any] | None:
            if not raw.isdigit() or not 0 < int(raw) < 2**31:  # control's ids are INTEGER
                return None
            try:
                b = await broadcasts.get(int(raw))
            except NotFound:
                return None
            return {
                "anchor_id": "" if b.anchor_id is None else str(b.anchor_id),
                "room": b.stream_path,
                "state": b.state.value,
            }

        shop.shelf.lookup = broadcast_for_shop
    await broadcasts.sync_keys()
    unsubscribe = [
        *ctl.stats.subscribe_events(rt.bus),
        ctl.series.start(rt.bus),
    ]
    await webhooks.start()
    ctl.tasks.append(
        asyncio.get_running_loop().create_task(
            _sweeper(app, broadcasts, settings.sweep_interval), name="control:sweeper"
        )
    )
    try:
        yield
    finally:
        for unsub in unsubscribe:
            unsub()
        await ctl.series.stop()
        if shop is not None:
            shop.shelf.lookup = None
        for task in ctl.tasks:
            task.cancel()
        for task in ctl.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ctl.tasks.clear()
        await webhooks.close()  # stops posting; what is pending stays in the database
        auth.accounts = None


def setup(app: web.Application, config: Any) -> None:
    """Mount the control plane on ``app`` (``config``: the composed :class:`Config`)."""
    settings = load_settings(config)
    app[CONTROL] = Control(settings=settings)
    app[AUTH] = AuthState()
    app.middlewares.append(auth_middleware)
    if records_ctx not in app.cleanup_ctx:  # create_app puts it right after the runtime
        app.cleanup_ctx.append(records_ctx)
    OPS.install(app)
    app.router.add_static("/console/", CONSOLE_DIR, follow_symlinks=False)
    app.on_startup.append(_document)
    app.cleanup_ctx.append(_control_ctx)


async def _document(app: web.Application) -> None:
    """Every package's routes are on the router now: build the spec."""
    app[CONTROL].spec = build_spec(installed(app))
