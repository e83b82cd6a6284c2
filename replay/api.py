"""HTTP: live HLS, replay files, and the replay REST API.

* the live playlist ``GET /{app}/{stream}.m3u8`` is the relay hub's LL-HLS
  (:mod:`relay.hls`); the recording's ffmpeg writes the replay only.
* ``GET /{app}/{stream}/{replay_id}/{file}``: segments (``p1/seg-00000.ts``), the VOD
  playlist ``index.m3u8``, ``replay.mp4``, ``cover.jpg``, sprites, ``thumbs.vtt``, clips.
* ``/api/replays``: list, get, delete.

Every route, its roles and its API doc are declared once, in :data:`ROUTES` (a
:class:`core.routes.RouteTable`; schemas in :mod:`replay.openapi`). The ``{app}`` pattern
refuses ``api`` so these routes never shadow ``/api/...``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.http import ApiError
from core.routes import Op, OpDoc, RouteTable, query_param, ref
from replay.model import ReplayState
from replay.openapi import SCHEMAS
from replay.service import ReplayService
from replay.storage import FILE_RE, REPLAY_ID_RE

SERVICE: web.AppKey[ReplayService] = web.AppKey("replay.service", ReplayService)

NAME = r"[A-Za-z0-9_.\-]+"
APP = r"(?!api/)[A-Za-z0-9_.\-]+"
CONTENT_TYPES = {
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
    "jpg": "image/jpeg",
    "vtt": "text/vtt",
}
MAX_LIMIT = 200


def _service(request: web.Request) -> ReplayService:
    service = request.app.get(SERVICE)
    if service is None:
        raise ApiError(404, "not_recorded", "this node does not record (an edge): ask the origin")
    return service


def _cors(headers: Any) -> None:
    headers["Access-Control-Allow-Origin"] = "*"


async def replay_file(request: web.Request) -> web.StreamResponse:
    service = _service(request)
    rid, name = request.match_info["rid"], request.match_info["file"]
    rep = service.replays.get(rid)
    if (
        rep is None
        or rep.app != request.match_info["app"]
        or rep.stream != request.match_info["stream"]
        or not FILE_RE.match(name)
        or name.endswith(".tmp")
        or not await service.is_public(rep)  # its broadcast is banned or deleted
    ):
        raise web.HTTPNotFound()
    external = service.storage.url(rid, name)
    if external is not None:
        raise web.HTTPFound(external)
    path = service.storage.local_file(rid, name)
    if path is None:
        raise web.HTTPNotFound()
    ext = name.rsplit(".", 1)[-1]
    resp = web.FileResponse(path, headers={"Content-Type": CONTENT_TYPES[ext]})
    # Segments and finished files never change; playlists may (live, re-finalised).
    if ext == "m3u8" or (rep.state is not ReplayState.READY and ext in ("jpg", "vtt")):
        resp.headers["Cache-Control"] = "no-cache"
    else:
        resp.headers["Cache-Control"] = "public, max-age=86400"
    _cors(resp.headers)
    return resp


def _int_query(
    request: web.Request, name: str, default: int | None, lo: int, hi: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name}: expected an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_query", f"{name}: must be between {lo} and {hi}")
    return value


async def list_replays(request: web.Request) -> web.Response:
    service = _service(request)
    q = request.query
    limit = _int_query(request, "limit", 50, 1, MAX_LIMIT) or 50
    offset = _int_query(request, "offset", 0, 0, 2**31) or 0
    broadcast = _int_query(request, "broadcast_id", None, 1, 2**53)
    state = q.get("state")
    if state is not None and state not in {s.value for s in ReplayState}:
        raise ApiError(400, "invalid_query", "state: unknown state")
    items = [
        r
        for r in service.replays.values()
        if (broadcast is None or r.broadcast_id == broadcast)
        and ("app" not in q or r.app == q["app"])
        and ("stream" not in q or r.stream == q["stream"])
        and (state is None or r.state.value == state)
    ]
    items = await service.public(items)
    items.sort(key=lambda r: r.created, reverse=True)
    page = items[offset : offset + limit]
    return web.json_response(
        {
            "items": [service.view(r) for r in page],
            "total": len(items),
            "limit": limit,
            "offset": offset,
        }
    )


async def list_clips(request: web.Request) -> web.Response:
    """Product clips ("讲解回放"), newest replay first."""
    service = _service(request)
    product = _int_query(request, "product_id", None, 1, 2**53)
    broadcast = _int_query(request, "broadcast_id", None, 1, 2**53)
    limit = _int_query(request, "limit", 50, 1, MAX_LIMIT) or 50
    out: list[dict[str, Any]] = []
    ready = [r for r in service.replays.values() if r.state is ReplayState.READY]
    reps = sorted(await service.public(ready), key=lambda r: r.created, reverse=True)
    for rep in reps:
        if broadcast is not None and rep.broadcast_id != broadcast:
            continue
        for clip in service.view(rep)["clips"]:
            if product is None or clip["product_id"] == product:
                out.append({**clip, "replay_id": rep.id, "broadcast_id": rep.broadcast_id})
    return web.json_response({"items": out[:limit], "total": len(out)})


def _replay_id(request: web.Request) -> str:
    rid = request.match_info["replay_id"]
    if not REPLAY_ID_RE.match(rid) or rid not in _service(request).replays:
        raise ApiError(404, "replay_not_found", "no such replay")
    return rid


async def get_replay(request: web.Request) -> web.Response:
    service = _service(request)
    rep = service.replays[_replay_id(request)]
    if not await service.is_public(rep):  # its broadcast is banned or deleted
        raise ApiError(404, "replay_not_found", "no such replay")
    return web.json_response(service.view(rep))


async def delete_replay(request: web.Request) -> web.Response:
    service = _service(request)
    rid = _replay_id(request)
    rep = service.replays[rid]
    if rep.state in (ReplayState.RECORDING, ReplayState.FINALIZING):
        raise ApiError(409, "replay_busy", f"the replay is {rep.state.value}; delete it after")
    await service.delete(rid)
    return web.Response(status=204)


# -- the route table -------------------------------------------------------------------

_BID: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2**53}
_STATES: dict[str, Any] = {"type": "string", "enum": [s.value for s in ReplayState]}
_RID = {"replay_id": {"type": "string"}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


ROUTES = RouteTable(
    "replay",
    [
        Op(
            "GET",
            "/api/replays",
            list_replays,
            OpDoc(
                "Replays, newest first (per broadcast, stream or state)",
                "replay",
                ("public",),
                operation_id="replay_list",
                query=[
                    query_param("broadcast_id", _BID, "only this broadcast's replays"),
                    query_param("app", {"type": "string"}, "only this app"),
                    query_param("stream", {"type": "string"}, "only this stream"),
                    query_param("state", _STATES, "only replays in this state"),
                    query_param(
                        "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "page"
                    ),
                    query_param(
                        "offset", {"type": "integer", "minimum": 0, "maximum": 2**31}, "skip"
                    ),
                ],
                response_media=_json(
                    {
                        "type": "object",
                        "required": ["items", "total", "limit", "offset"],
                        "properties": {
                            "items": {"type": "array", "items": ref("Replay")},
                            "total": {"type": "integer"},
                            "limit": {"type": "integer"},
                            "offset": {"type": "integer"},
                        },
                    }
                ),
                errors=(404,),
            ),
            head=True,
        ),
        Op(
            "GET",
            "/api/replays/clips",
            list_clips,
            OpDoc(
                "Product clips cut from finished replays (讲解回放)",
                "replay",
                ("public",),
                operation_id="replay_clips",
                query=[
                    query_param("product_id", _BID, "only this product's clips"),
                    query_param("broadcast_id", _BID, "only this broadcast's clips"),
                    query_param(
                        "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "at most"
                    ),
                ],
                response_media=_json(
                    {
                        "type": "object",
                        "required": ["items", "total"],
                        "properties": {
                            "items": {"type": "array", "items": ref("ReplayClip")},
                            "total": {"type": "integer"},
                        },
                    }
                ),
                errors=(404,),
            ),
            head=True,
        ),
        Op(
            "GET",
            "/api/replays/{replay_id}",
            get_replay,
            OpDoc(
                "One replay with its URLs (HLS, MP4, cover, thumbnails, clips)",
                "replay",
                ("public",),
                operation_id="replay_get",
                path_params=_RID,
                response="Replay",
            ),
            head=True,
        ),
        Op(
            "DELETE",
            "/api/replays/{replay_id}",
            delete_replay,
            OpDoc(
                "Delete a finished replay and its files",
                "replay",
                ("operator",),
                operation_id="replay_delete",
                path_params=_RID,
                ok=204,
                errors=(409,),
            ),
        ),
        Op(
            "GET",
            f"/{{app:{APP}}}/{{stream:{NAME}}}/{{rid:r[0-9a-f]+}}"
            r"/{file:(?:p[0-9]+/)?[A-Za-z0-9_.\-]+}",
            replay_file,
            OpDoc(
                "A replay's file: segment, playlist, MP4, cover, sprite, clip",
                "replay",
                ("public",),
            ),
            head=True,
        ),
    ],
    schemas=SCHEMAS,
)
