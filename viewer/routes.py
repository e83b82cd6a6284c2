"""The viewer page's routes: the page, its files, and the two small API calls it needs.

* ``GET /watch/{app}/{stream}``: the page (one HTML file; the page reads the stream from
  its own URL).
* ``GET /viewer/assets/{file}``: its ES modules and stylesheet (``viewer/static``).
* ``GET /viewer/vendor/{file}``: hls.js, mpegts.js and socket.io-client as npm installed
  them (``viewer/node_modules``; a fixed list, nothing else of that directory is served).
* ``GET /api/watch/{app}/{stream}``: which broadcast plays there (public fields only), its
  state and where to play it.
* ``POST /api/watch/{app}/{stream}/token``: an anonymous viewer token for the broadcast's
  room, only when ``viewer.anonymous_tokens`` is on (the demo); 404 otherwise.

The viewer package does not read control's records itself: ``setup`` is handed a
:data:`BroadcastLookup` (control's ``create_app`` passes one over its broadcast service).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from core.http import ApiError, read_json
from core.routes import Op, OpDoc, RouteTable
from core.runtime import RUNTIME
from core.tokens import issue_token
from viewer.config import ViewerConfig
from viewer.directory import Directory
from viewer.files import FileCache

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
MODULES_DIR = PACKAGE_DIR / "node_modules"

VENDOR: dict[str, tuple[str, str]] = {
    "hls.min.js": ("hls.js/dist/hls.min.js", "text/javascript"),
    "socket.io.esm.min.js": ("socket.io-client/dist/socket.io.esm.min.js", "text/javascript"),
    "mpegts.js": ("mpegts.js/dist/mpegts.js", "text/javascript"),
}
"""The third-party files the page loads: name in the URL -> (path under node_modules, type)."""

_NAME = r"[A-Za-z0-9_.\-]{1,128}"
_ASSET = r"[a-z0-9_\-]{1,64}\.(?:js|css|svg)"
_NAMES = {"app": {"type": "string"}, "stream": {"type": "string"}}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ANON_NICK = "游客"
"""Anonymous viewers are "游客" (guest) and the last 4 hex digits of their id."""


class BroadcastRecord(Protocol):
    """What the page may know of a broadcast (control's record has these attributes)."""

    @property
    def id(self) -> int: ...
    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def scheduled_start(self) -> float: ...
    @property
    def started_at(self) -> float | None: ...
    @property
    def ended_at(self) -> float | None: ...
    @property
    def cover(self) -> str | None: ...
    @property
    def settings(self) -> dict[str, bool]: ...


BroadcastLookup = Callable[[web.Application, str, str], Awaitable[BroadcastRecord | None]]
"""``(app, app name, stream) -> the broadcast of that stream, or None``."""


@dataclass(frozen=True)
class WatchBroadcast:
    """The public view of a broadcast the page is given."""

    id: int
    title: str
    description: str
    state: str
    scheduled_start: str | None
    started_at: str | None
    ended_at: str | None
    cover_url: str | None
    comments: bool
    likes: bool
    sharing: bool

    @classmethod
    def of(cls, b: BroadcastRecord) -> WatchBroadcast:
        settings = b.settings or {}
        return cls(
            id=int(b.id),
            title=b.title,
            description=b.description,
            state=str(getattr(b.state, "value", b.state)),
            scheduled_start=_iso(b.scheduled_start),
            started_at=_iso(b.started_at),
            ended_at=_iso(b.ended_at),
            cover_url=f"/api/broadcasts/{int(b.id)}/cover" if b.cover else None,
            comments=bool(settings.get("comments", True)),
            likes=bool(settings.get("likes", True)),
            sharing=bool(settings.get("sharing", True)),
        )


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class ViewerState:
    config: ViewerConfig
    directory: Directory[WatchBroadcast | None] | None
    files: FileCache


VIEWER: web.AppKey[ViewerState] = web.AppKey("berrylive.viewer", ViewerState)


# -- the page and its files ---------------------------------------------------------------


async def _static(request: web.Request, path: Path, content_type: str) -> web.StreamResponse:
    """A file of the page itself (revalidated on every load); 404 if it is not there."""
    resp = await request.app[VIEWER].files.respond(request, path, content_type, "no-cache")
    if resp is None:
        raise web.HTTPNotFound()
    return resp


async def watch_page(request: web.Request) -> web.StreamResponse:
    return await _static(request, STATIC_DIR / "index.html", "text/html")


async def asset(request: web.Request) -> web.StreamResponse:
    path = STATIC_DIR / request.match_info["file"]
    return await _static(request, path, _TYPES[path.suffix])


async def vendor(request: web.Request) -> web.StreamResponse:
    entry = VENDOR.get(request.match_info["file"])
    if entry is None:
        raise web.HTTPNotFound()
    path = MODULES_DIR / entry[0]
    resp = await request.app[VIEWER].files.respond(request, path, entry[1], "public, max-age=3600")
    if resp is None:
        raise ApiError(
            503,
            "viewer_modules_missing",
            f"{path} is missing: run `npm ci` in {PACKAGE_DIR} (make demo / make test do)",
        )
    return resp


# -- the page's API -----------------------------------------------------------------------


async def _broadcast(request: web.Request, app_name: str, stream: str) -> WatchBroadcast | None:
    directory = request.app[VIEWER].directory
    return None if directory is None else await directory.get(app_name, stream)


async def watch_info(request: web.Request) -> web.Response:
    app_name, stream = request.match_info["app"], request.match_info["stream"]
    state = request.app[VIEWER]
    b = await _broadcast(request, app_name, stream)
    base = f"/{app_name}/{stream}"
    return web.json_response(
        {
            "app": app_name,
            "stream": stream,
            "room": f"{app_name}/{stream}",
            "broadcast": None if b is None else dataclasses.asdict(b),
            "play": {
                "whep": f"/whep{base}" if state.config.whep else None,
                "hls": f"{base}.m3u8",
                "flv": f"{base}.flv",
            },
            "anonymous_tokens": state.config.anonymous_tokens,
        },
        headers={"Cache-Control": "no-cache"},
    )


async def anonymous_token(request: web.Request) -> web.Response:
    state = request.app[VIEWER]
    if not state.config.anonymous_tokens:
        raise ApiError(
            404,
            "anonymous_tokens_off",
            "this server issues viewer tokens only through the site's backend "
            "(POST /api/broadcasts/{id}/viewer-token)",
        )
    app_name, stream = request.match_info["app"], request.match_info["stream"]
    body: dict[str, Any] = await read_json(request, 1024) if request.body_exists else {}
    unknown = set(body) - {"nick"}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    nick = body.get("nick")
    if nick is not None and (not isinstance(nick, str) or not 1 <= len(nick.strip()) <= 32):
        raise ApiError(400, "invalid", "nick must be 1..32 characters")
    b = await _broadcast(request, app_name, stream)
    if b is None:
        raise ApiError(404, "not_found", f"no broadcast plays at {app_name}/{stream}")
    user = "anon-" + secrets.token_hex(8)
    name = nick.strip() if isinstance(nick, str) else f"{ANON_NICK}{user[-4:]}"
    ttl = state.config.anonymous_token_ttl
    room = f"{app_name}/{stream}"
    token = issue_token(request.app[RUNTIME].secret, user, name, "viewer", ttl=ttl, room=room)
    return web.json_response(
        {
            "token": token,
            "user_id": user,
            "nick": name,
            "room": room,
            "broadcast_id": b.id,
            "expires_at": _iso(time.time() + ttl),
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


# -- the route table ----------------------------------------------------------------------


def _file_route(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], summary: str
) -> Op:
    """A public GET (and HEAD) of a file outside ``/api/``."""
    return Op("GET", path, handler, OpDoc(summary, "viewer", ("public",)), head=True)


SCHEMAS: dict[str, Any] = {
    "WatchInfo": {
        "type": "object",
        "required": ["app", "stream", "room", "broadcast", "play", "anonymous_tokens"],
        "properties": {
            "app": {"type": "string"},
            "stream": {"type": "string"},
            "room": {"type": "string", "description": "the danmaku room (app/stream)"},
            "broadcast": {
                "type": "object",
                "nullable": True,
                "description": "the broadcast of this stream (null: none scheduled here)",
                "properties": {
                    "id": {"type": "integer"},
                    "title": {"type": "string"},
                    "description": {"type": "string"},
                    "state": {"type": "string"},
                    "scheduled_start": {"type": "string", "nullable": True},
                    "started_at": {"type": "string", "nullable": True},
                    "ended_at": {"type": "string", "nullable": True},
                    "cover_url": {"type": "string", "nullable": True},
                    "comments": {"type": "boolean"},
                    "likes": {"type": "boolean"},
                    "sharing": {"type": "boolean"},
                },
            },
            "play": {
                "type": "object",
                "properties": {
                    "whep": {"type": "string", "nullable": True},
                    "hls": {"type": "string"},
                    "flv": {"type": "string"},
                },
            },
            "anonymous_tokens": {"type": "boolean"},
        },
    },
    "AnonymousViewerToken": {
        "type": "object",
        "required": ["token", "user_id", "nick", "room", "broadcast_id", "expires_at"],
        "properties": {
            "token": {"type": "string"},
            "user_id": {"type": "string"},
            "nick": {"type": "string"},
            "room": {"type": "string"},
            "broadcast_id": {"type": "integer"},
            "expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "AnonymousViewerTokenRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"nick": {"type": "string", "minLength": 1, "maxLength": 32}},
    },
}

ROUTES = RouteTable(
    "viewer",
    [
        _file_route(
            rf"/watch/{{app:{_NAME}}}/{{stream:{_NAME}}}", watch_page, "The H5 viewer page"
        ),
        _file_route(
            rf"/viewer/assets/{{file:{_ASSET}}}", asset, "The viewer page's scripts and styles"
        ),
        _file_route(
            rf"/viewer/vendor/{{file:{_NAME}}}",
            vendor,
            "hls.js, mpegts.js, socket.io-client (from npm)",
        ),
        Op(
            "GET",
            rf"/api/watch/{{app:{_NAME}}}/{{stream:{_NAME}}}",
            watch_info,
            OpDoc(
                "What the viewer page of a stream needs: its broadcast and where to play it",
                "viewer",
                ("public",),
                path_params=_NAMES,
                response="WatchInfo",
            ),
        ),
        Op(
            "POST",
            rf"/api/watch/{{app:{_NAME}}}/{{stream:{_NAME}}}/token",
            anonymous_token,
            OpDoc(
                "An anonymous viewer token for the stream's room (demo: viewer.anonymous_tokens)",
                "viewer",
                ("public",),
                body="AnonymousViewerTokenRequest",
                body_required=False,
                ok=201,
                response="AnonymousViewerToken",
                path_params=_NAMES,
                description=(
                    "Only when `viewer.anonymous_tokens` is on (`make demo`); otherwise 404 "
                    "`anonymous_tokens_off`. A site's backend issues its signed-in users' "
                    "tokens with `POST /api/broadcasts/{id}/viewer-token` (operator API token) "
                    "and opens the page as `/watch/APP/STREAM#token=...`."
                ),
            ),
        ),
    ],
    schemas=SCHEMAS,
)


def setup(
    app: web.Application, config: ViewerConfig, lookup: BroadcastLookup | None = None
) -> None:
    """Serve the viewer page on ``app``; ``lookup`` finds a stream's broadcast."""
    directory: Directory[WatchBroadcast | None] | None = None
    if lookup is not None:
        find = lookup

        async def public(app_name: str, stream: str) -> WatchBroadcast | None:
            found = await find(app, app_name, stream)
            return None if found is None else WatchBroadcast.of(found)

        directory = Directory(public)
    app[VIEWER] = ViewerState(config, directory, FileCache())
    ROUTES.install(app)
    if not (MODULES_DIR / "hls.js").is_dir():
        logger.warning(
            "viewer: %s has no npm packages (run `npm ci` there): the page cannot play or chat",
            PACKAGE_DIR,
        )
