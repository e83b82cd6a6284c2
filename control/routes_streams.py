"""Operator actions on a live stream by its name, with or without a broadcast: kick its
publisher now, ban the name (for a time or until lifted), list and lift bans.

The kick is ingest's ``stream.kick`` event (:class:`ingest.events.StreamKick`), obeyed by
whichever node has the publisher. A ban is a Redis key
(:func:`ingest.auth.ban_key`, ``berrylive:streamban:APP/STREAM``) with the ban's expiry,
read by every node's publish auth (RTMP and WHIP), which refuses with the ban's reason;
banning also kicks the live publisher. Handlers and their part of control's route table
(:data:`OPS`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web

from control import validate
from control.auth import principal_of
from control.context import OPS_ROLES
from control.validate import iso
from core.http import ApiError, read_json
from core.routes import Op, OpDoc, query_param
from core.runtime import RUNTIME
from ingest import auth as ingest_auth
from ingest.events import StreamKick

logger = logging.getLogger(__name__)

_SEG = r"[A-Za-z0-9_.\-]{1,128}"
_PATH = rf"/api/streams/{{app:{_SEG}}}/{{stream:{_SEG}}}"
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,128}$"}
_NAMES = {"app": _NAME, "stream": _NAME}
MAX_BAN_S = 365 * 86400
"""The longest timed ban; ``duration_s`` null (or absent) bans until lifted."""


def _names(request: web.Request) -> tuple[str, str]:
    return request.match_info["app"], request.match_info["stream"]


def _redis(request: web.Request) -> Any:
    redis = request.app[RUNTIME].redis
    if redis is None:
        raise ApiError(503, "unavailable", "stream bans need Redis")
    return redis


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body = await read_json(request, 4096)
    return body


async def kick_stream(request: web.Request) -> web.Response:
    app_name, stream = _names(request)
    body = await _body(request)
    validate.only(body, {"reason"})
    reason = validate.text(body, "reason", max_len=500) or "kicked by an operator"
    who = principal_of(request).user.username
    await request.app[RUNTIME].bus.emit(StreamKick(app_name, stream, reason))
    logger.info("stream %s/%s kicked by %s: %s", app_name, stream, who, reason)
    return web.json_response({"app": app_name, "stream": stream, "reason": reason}, status=202)


def _ban_json(app_name: str, stream: str, ban: dict[str, Any]) -> dict[str, Any]:
    until = ban.get("until")
    return {
        "app": app_name,
        "stream": stream,
        "reason": ban.get("reason", ""),
        "by": ban.get("by", ""),
        "at": iso(ban.get("at")),
        "until": iso(until) if isinstance(until, int | float) else None,
    }


async def ban_stream(request: web.Request) -> web.Response:
    app_name, stream = _names(request)
    body = await _body(request)
    validate.only(body, {"reason", "duration_s"})
    reason = validate.text(body, "reason", max_len=500) or ""
    duration = validate.integer(body, "duration_s", lo=1, hi=MAX_BAN_S)
    now = time.time()
    ban = {
        "reason": reason,
        "by": principal_of(request).user.username,
        "at": now,
        "until": now + duration if duration is not None else None,
    }
    redis = _redis(request)
    key = ingest_auth.ban_key(app_name, stream)
    value = json.dumps(ban, ensure_ascii=False)
    pipe = redis.pipeline(transaction=True)
    if duration is None:
        pipe.set(key, value)
    else:
        pipe.set(key, value, ex=duration)
    until = int(now + duration) if duration is not None else 0
    pipe.hset(ingest_auth.STREAM_BAN_INDEX, f"{app_name}/{stream}", until)
    await pipe.execute()
    kick_reason = "stream banned" + (f": {reason}" if reason else "")
    await request.app[RUNTIME].bus.emit(StreamKick(app_name, stream, kick_reason))
    logger.info(
        "stream %s/%s banned by %s (%s s): %s", app_name, stream, ban["by"], duration, reason
    )
    return web.json_response(_ban_json(app_name, stream, ban), status=201)


async def _read_ban(redis: Any, key: str) -> dict[str, Any] | None:
    raw = await redis.get(key)
    if raw is None:
        return None
    try:
        ban = json.loads(raw)
    except ValueError:
        return {}
    return ban if isinstance(ban, dict) else {}


async def get_ban(request: web.Request) -> web.Response:
    app_name, stream = _names(request)
    ban = await _read_ban(_redis(request), ingest_auth.ban_key(app_name, stream))
    if ban is None:
        raise ApiError(404, "not_found", f"{app_name}/{stream} is not banned")
    return web.json_response(_ban_json(app_name, stream, ban))


async def lift_ban(request: web.Request) -> web.Response:
    app_name, stream = _names(request)
    pipe = _redis(request).pipeline(transaction=True)
    pipe.delete(ingest_auth.ban_key(app_name, stream))
    pipe.hdel(ingest_auth.STREAM_BAN_INDEX, f"{app_name}/{stream}")
    removed, _ = await pipe.execute()
    if not removed:
        raise ApiError(404, "not_found", f"{app_name}/{stream} is not banned")
    logger.info(
        "stream %s/%s ban lifted by %s", app_name, stream, principal_of(request).user.username
    )
    return web.Response(status=204)


async def list_bans(request: web.Request) -> web.Response:
    """The bans, from the index hash (no key scan); entries whose ban expired leave it."""
    limit = validate.query_int(request.query, "limit", 200, 1, 1000)
    redis = _redis(request)
    paths = sorted(
        p.decode() if isinstance(p, bytes) else str(p)
        for p in await redis.hkeys(ingest_auth.STREAM_BAN_INDEX)
    )
    items: list[dict[str, Any]] = []
    gone: list[str] = []
    for start in range(0, len(paths), 200):
        chunk = [p for p in paths[start : start + 200] if "/" in p]
        if not chunk:
            continue
        raws = await redis.mget([ingest_auth.STREAM_BANS + p for p in chunk])
        for path, raw in zip(chunk, raws, strict=True):
            if raw is None:
                gone.append(path)
                continue
            try:
                ban = json.loads(raw)
            except ValueError:
                ban = {}
            app_name, stream = path.split("/", 1)
            if len(items) < limit:
                items.append(_ban_json(app_name, stream, ban if isinstance(ban, dict) else {}))
    if gone:
        await redis.hdel(ingest_auth.STREAM_BAN_INDEX, *gone)
    return web.json_response({"items": items})


OPS: list[Op] = [
    Op(
        "POST",
        _PATH + "/kick",
        kick_stream,
        OpDoc(
            "Cut a live stream's publisher now, with or without a broadcast (any node)",
            "streams",
            OPS_ROLES,
            body="ActionRequest",
            body_required=False,
            ok=202,
            response="StreamKicked",
            path_params=_NAMES,
        ),
    ),
    Op(
        "POST",
        _PATH + "/ban",
        ban_stream,
        OpDoc(
            "Ban a stream name: its publisher is cut and every node refuses its publish "
            "(for duration_s, or until lifted)",
            "streams",
            OPS_ROLES,
            body="StreamBanRequest",
            body_required=False,
            ok=201,
            response="StreamBan",
            path_params=_NAMES,
            errors=(503,),
        ),
    ),
    Op(
        "GET",
        _PATH + "/ban",
        get_ban,
        OpDoc(
            "A stream name's ban",
            "streams",
            OPS_ROLES,
            response="StreamBan",
            path_params=_NAMES,
            errors=(404, 503),
        ),
    ),
    Op(
        "DELETE",
        _PATH + "/ban",
        lift_ban,
        OpDoc(
            "Lift a stream name's ban",
            "streams",
            OPS_ROLES,
            ok=204,
            path_params=_NAMES,
            errors=(404, 503),
        ),
    ),
    Op(
        "GET",
        "/api/stream-bans",
        list_bans,
        OpDoc(
            "Every banned stream name",
            "streams",
            OPS_ROLES,
            query=[
                query_param(
                    "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200}
                )
            ],
            response="StreamBanList",
            errors=(503,),
        ),
    ),
]
