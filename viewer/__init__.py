"""The H5 viewer page: ``/watch/APP/STREAM`` (watch, chat, buy and win in one page).

Static ES-module JavaScript, CSS and HTML under ``viewer/static`` served as they are (no
build step), the third-party browser code (hls.js, mpegts.js, socket.io-client) from
``viewer/node_modules`` (``npm ci`` from ``make``), and a small public API the page needs:
``GET /api/watch/APP/STREAM`` (which broadcast plays there, its state, where to play it) and,
when ``viewer.anonymous_tokens`` is on (the demo), ``POST /api/watch/APP/STREAM/token``.
Everything else the page does goes through the other packages' public APIs (danmaku's
Socket.IO hub, the shop's buyer routes, replays). See ``docs/viewer.md``.
"""

from __future__ import annotations

from viewer.config import ViewerConfig
from viewer.routes import ROUTES, BroadcastLookup, WatchBroadcast, setup

__all__ = ["ROUTES", "BroadcastLookup", "ViewerConfig", "WatchBroadcast", "setup"]
