"""danmaku: the Socket.IO hub for bullet comments, likes, presence, moderation and lotteries.

Mounted at ``/socket.io/`` (namespace ``/live``) by :func:`setup`; see ``docs/danmaku.md``.
The control plane mints viewer tokens with :func:`issue_token`.
"""

from __future__ import annotations

from aiohttp import web

from core.tokens import Role, TokenError, Viewer, issue_token, verify_token
from danmaku.config import DanmakuConfig

__all__ = [
    "DanmakuConfig",
    "Role",
    "TokenError",
    "Viewer",
    "issue_token",
    "setup",
    "verify_token",
]


def setup(app: web.Application, config: DanmakuConfig) -> None:
    """Attach the Socket.IO server and REST routes; the hub starts in a cleanup context."""
    from danmaku.api import ROUTES
    from danmaku.service import LIVE_WS, SIO, make_ctx, make_sio
    from danmaku.websocket import LiveEndpoint

    sio = make_sio(config)
    endpoint = LiveEndpoint(config, sio)
    endpoint.add_routes(app)  # websocket-only clients: owned path; the rest: python-socketio
    app[SIO] = sio
    app[LIVE_WS] = endpoint
    ROUTES.install(app)
    app.cleanup_ctx.append(make_ctx(config))
