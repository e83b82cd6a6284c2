"""REST endpoints for staff under ``/api/danmaku/`` (thin handlers over the services).

Every route, its roles and its API doc are declared once, in :data:`ROUTES` (a
:class:`core.routes.RouteTable`; schemas in :mod:`danmaku.openapi`). The control plane's
auth middleware enforces the roles and puts the caller on the request
(``core.http.caller``); the audit log records it. Without one (the hub used on its own),
the body's ``actor`` field names an operator.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from core.http import ApiError, caller, read_json
from core.routes import Op, OpDoc, RouteTable, query_param, room_in_body, room_in_query
from core.tokens import Role
from danmaku.moderation import Actor, ServiceUnavailable
from danmaku.openapi import SCHEMAS
from danmaku.payloads import PayloadError, clean_text, parse_moderate, parse_room
from danmaku.service import DANMAKU, DanmakuService

__all__ = ["ROUTES"]

_STATUS = {
    "not_found": 404,
    "forbidden": 403,
    "bad_state": 409,
    "unavailable": 503,
    "busy": 503,
}


def _api_error(exc: PayloadError) -> ApiError:
    return ApiError(_STATUS.get(exc.code, 400), exc.code, str(exc), **exc.extra)


def _svc(request: web.Request) -> DanmakuService:
    svc = request.app.get(DANMAKU)
    if svc is None:
        raise ApiError(503, "unavailable", "danmaku hub is not running")
    return svc


def _actor(request: web.Request, body: dict[str, Any]) -> Actor:
    who = caller(request)
    if who is not None:
        try:
            role = Role(who.role)
        except ValueError:
            role = Role.VIEWER
        return Actor(who.username[:64] or f"user:{who.user_id}", role, "api")
    name = body.get("actor", "api")
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise ApiError(400, "bad_payload", "actor must be a string of 1..64 characters")
    return Actor(name, Role.OPERATOR, "api")


async def _guard(coro: Any) -> Any:
    try:
        return await coro
    except PayloadError as exc:
        raise _api_error(exc) from None
    except ServiceUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


async def create_lottery(request: web.Request) -> web.Response:
    body = await read_json(request)
    svc = _svc(request)
    info = await _guard(svc.lottery.create(body, _actor(request, body)))
    return web.json_response(info, status=201)


_LOTTERY_STATES = ("open", "closed", "drawn", "cancelled")


async def list_lotteries(request: web.Request) -> web.Response:
    svc = _svc(request)
    q = request.query
    try:
        room = parse_room(q.get("room"))
    except PayloadError as exc:
        raise ApiError(400, "bad_query", f"room: {exc}") from None
    state = q.get("state") or None
    if state is not None and state not in _LOTTERY_STATES:
        raise ApiError(400, "bad_query", f"state must be one of {', '.join(_LOTTERY_STATES)}")
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "bad_query", "limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise ApiError(400, "bad_query", "limit must be 1..500")
    try:
        items = await svc.lottery.list_room(room, state, limit)
    except Exception as exc:
        raise ApiError(503, "unavailable", f"lottery store unavailable: {exc}") from None
    return web.json_response({"room": room, "items": items})


async def get_lottery(request: web.Request) -> web.Response:
    svc = _svc(request)
    with_entrants = request.query.get("entrants") in ("1", "true", "yes")
    info = await _guard(svc.lottery.get(request.match_info["id"], with_entrants=with_entrants))
    return web.json_response(info)


async def draw_lottery(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    svc = _svc(request)
    info = await _guard(svc.lottery.draw_now(request.match_info["id"], _actor(request, body)))
    return web.json_response(info)


async def cancel_lottery(request: web.Request) -> web.Response:
    body = await read_json(request) if request.can_read_body else {}
    svc = _svc(request)
    info = await _guard(svc.lottery.cancel(request.match_info["id"], _actor(request, body)))
    return web.json_response(info)


async def moderate(request: web.Request) -> web.Response:
    body = await read_json(request)
    svc = _svc(request)
    try:
        room = parse_room(body.get("room"))
        cmd = parse_moderate({k: v for k, v in body.items() if k not in ("room", "actor")})
    except PayloadError as exc:
        raise _api_error(exc) from None
    result = await _guard(svc.moderation.apply(room, _actor(request, body), cmd))
    return web.json_response(result)


async def notice(request: web.Request) -> web.Response:
    body = await read_json(request)
    svc = _svc(request)
    try:
        room = parse_room(body.get("room"))
        raw = body.get("text")
        text = clean_text(raw if isinstance(raw, str) else "", 500)
    except PayloadError as exc:
        raise _api_error(exc) from None
    actor = _actor(request, body)
    data = {"text": text, "from": actor.user_id}
    await _guard(svc.announce(room, actor, data))
    return web.json_response({"ok": True, "room": room})


async def audit_log(request: web.Request) -> web.Response:
    svc = _svc(request)
    room = request.query.get("room") or None
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "bad_query", "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "bad_query", "limit must be 1..1000")
    try:
        entries = await svc.moderation.audit_log(room, limit)
    except Exception as exc:
        raise ApiError(503, "unavailable", f"audit log unavailable: {exc}") from None
    return web.json_response({"entries": entries})


async def stats(request: web.Request) -> web.Response:
    svc = _svc(request)
    return web.json_response(svc.stats())


# -- the route table -------------------------------------------------------------------

_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_LID = {"id": {"type": "string"}}
_STAFF = ("operator", "moderator")

ROUTES = RouteTable(
    "danmaku",
    [
        Op(
            "POST",
            "/api/danmaku/lotteries",
            create_lottery,
            OpDoc(
                "Create and open a lottery in a room",
                "danmaku",
                ("operator",),
                body="DanmakuLotteryCreate",
                ok=201,
                response="DanmakuLottery",
                errors=(503,),
            ),
        ),
        Op(
            "GET",
            "/api/danmaku/lotteries",
            list_lotteries,
            OpDoc(
                "A room's lotteries, newest first (operators; an anchor for their room)",
                "danmaku",
                ("operator", "anchor"),
                query=[
                    {**query_param("room", {"type": "string"}, "APP/STREAM"), "required": True},
                    query_param(
                        "state", {"type": "string", "enum": list(_LOTTERY_STATES)}, "only this"
                    ),
                    query_param(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
                    ),
                ],
                response_media=_OBJECT,
                errors=(503,),
            ),
            owner=room_in_query("room"),
        ),
        Op(
            "GET",
            "/api/danmaku/lotteries/{id}",
            get_lottery,
            OpDoc(
                "Lottery state; after the draw, the seed and (entrants=1) the audit data",
                "danmaku",
                ("public",),
                response="DanmakuLottery",
                query=[query_param("entrants", {"type": "string"}, "1: list the entrants")],
                path_params=_LID,
                errors=(503,),
            ),
        ),
        Op(
            "POST",
            "/api/danmaku/lotteries/{id}/draw",
            draw_lottery,
            OpDoc(
                "Close the window now and draw (idempotent)",
                "danmaku",
                ("operator",),
                body="DanmakuActor",
                body_required=False,
                response="DanmakuLottery",
                path_params=_LID,
                errors=(409, 503),
            ),
        ),
        Op(
            "POST",
            "/api/danmaku/lotteries/{id}/cancel",
            cancel_lottery,
            OpDoc(
                "Cancel an open or closed lottery",
                "danmaku",
                ("operator",),
                body="DanmakuActor",
                body_required=False,
                response="DanmakuLottery",
                path_params=_LID,
                errors=(409, 503),
            ),
        ),
        Op(
            "POST",
            "/api/danmaku/moderation",
            moderate,
            OpDoc(
                "Mute/unmute, ban/unban, delete a comment, slow mode, room mute",
                "danmaku",
                _STAFF,
                body="DanmakuModeration",
                response_media=_OBJECT,
                errors=(503,),
            ),
            owner=room_in_body("room"),
        ),
        Op(
            "POST",
            "/api/danmaku/notices",
            notice,
            OpDoc(
                "Post an operator announcement to a room",
                "danmaku",
                _STAFF,
                body="DanmakuNotice",
                response_media=_OBJECT,
                errors=(503,),
            ),
            owner=room_in_body("room"),
        ),
        Op(
            "GET",
            "/api/danmaku/audit",
            audit_log,
            OpDoc(
                "Audit log of moderation and lottery actions, newest first",
                "danmaku",
                _STAFF,
                query=[
                    query_param("room", {"type": "string"}, "only this room"),
                    query_param(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
                    ),
                ],
                response_media=_OBJECT,
                errors=(503,),
            ),
            owner=room_in_query("room"),
        ),
        Op(
            "GET",
            "/api/danmaku/stats",
            stats,
            OpDoc(
                "Hub counters: comments, batches, sampling, Redis losses and recovery",
                "danmaku",
                ("operator",),
                response_media=_OBJECT,
                errors=(503,),
            ),
        ),
    ],
    schemas=SCHEMAS,
)
