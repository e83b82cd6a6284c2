"""HTTP outputs: HTTP-FLV and WS-FLV on ``/{app}/{stream}.flv``, ``GET /api/streams``
(routes declared in :mod:`relay.routes`).

Headers go through aiohttp; after that the hub writes shared, pre-framed bytes (HTTP
chunks or WebSocket frames) straight to the connection's transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import WSMsgType, web

from core.client_address import remote_label
from core.http import ApiError
from relay.formats import HTTP_FLV, HTTP_FLV_10, WS_FLV, Format
from relay.hub import StreamRegistry, Viewer, ViewerInfo

logger = logging.getLogger(__name__)

REGISTRY: web.AppKey[StreamRegistry] = web.AppKey("relay.registry", StreamRegistry)
PLAY_GUARD: web.AppKey[Any] = web.AppKey("relay.play_guard", object)
"""Optional ``async (app, stream, protocol, remote, query) -> (ok, reason)`` (on_play hook)."""
PLAY_STOP: web.AppKey[Any] = web.AppKey("relay.play_stop", object)
"""Optional ``async (app, stream, protocol, remote, query) -> None`` (on_stop hook), awaited
when an HTTP-FLV or WS-FLV viewer leaves."""

WAIT_READY = 3.0
_HOOK_TASKS: set[asyncio.Task[None]] = set()


async def flv_handler(request: web.Request) -> web.StreamResponse:
    registry = request.app[REGISTRY]
    app = request.match_info["app"]
    name = request.match_info["stream"]
    hub = await registry.find(app, name)
    if hub is None:
        raise web.HTTPNotFound(text=f"stream {app}/{name} is not live\n")
    is_ws = request.headers.get("Upgrade", "").lower() == "websocket"
    protocol = "ws" if is_ws else "flv"
    guard = request.app.get(PLAY_GUARD)
    if guard is not None:
        ok, reason = await guard(app, name, protocol, remote_label(request), request.query_string)
        if not ok:
            raise web.HTTPForbidden(text=f"play refused: {reason}\n")
    await hub.wait_ready(WAIT_READY)
    if registry.get(app, name) is not hub:
        raise web.HTTPNotFound(text=f"stream {app}/{name} ended\n")
    if request.method == "HEAD":  # is it live? (no viewer: nobody would read the body)
        head = web.Response(headers={"Content-Type": "video/x-flv"})
        _cors(head)
        return head
    try:
        if is_ws:
            return await _serve_ws(request, registry, app, name)
        return await _serve_http(request, registry, app, name)
    finally:
        stopped = request.app.get(PLAY_STOP)
        if stopped is not None:
            # A task of its own: the hook must run even when this handler is cancelled.
            task = asyncio.create_task(
                stopped(app, name, protocol, remote_label(request), request.query_string)
            )
            _HOOK_TASKS.add(task)
            task.add_done_callback(_HOOK_TASKS.discard)


def _cors(resp: web.StreamResponse) -> None:
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Cache-Control"] = "no-cache, no-store"


async def _serve_http(
    request: web.Request, registry: StreamRegistry, app: str, name: str
) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "video/x-flv"})
    _cors(resp)
    chunked = request.version >= (1, 1)
    fmt: Format = HTTP_FLV if chunked else HTTP_FLV_10
    if chunked:
        resp.enable_chunked_encoding()
    else:
        resp.force_close()
    await resp.prepare(request)
    transport = request.transport
    hub = registry.get(app, name)
    if transport is None or hub is None:
        return resp
    viewer = Viewer(transport, fmt, ViewerInfo("flv", remote_label(request)))
    hub.add_viewer(viewer, hub.flv_prelude(fmt))
    try:
        reason = await viewer.done
    finally:
        viewer.close("request ended")
    if reason.startswith("stream ended") and not transport.is_closing():
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
    else:
        transport.close()
    return resp


async def _serve_ws(
    request: web.Request, registry: StreamRegistry, app: str, name: str
) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024, autoping=True)
    await ws.prepare(request)
    transport = request.transport
    hub = registry.get(app, name)
    if transport is None or hub is None:
        await ws.close()
        return ws
    viewer = Viewer(transport, WS_FLV, ViewerInfo("ws", remote_label(request)))
    hub.add_viewer(viewer, hub.flv_prelude(WS_FLV))

    async def read_client() -> None:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        viewer.close("client closed")

    reader = asyncio.create_task(read_client())
    try:
        reason = await viewer.done
    finally:
        viewer.close("request ended")
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    if not transport.is_closing():
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(message=reason[:100].encode()), 2)
    return ws


async def streams_handler(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    items = [hub.stats() for hub in registry.hubs.values()]
    items.sort(key=lambda s: (s["app"], s["name"]))
    return web.json_response({"streams": items, "total": len(items)})


async def stream_handler(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    hub = registry.get(request.match_info["app"], request.match_info["stream"])
    if hub is None:
        raise ApiError(404, "stream_not_found", "no such live stream on this node")
    return web.json_response(hub.stats())
