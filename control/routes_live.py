"""A broadcast on air: push URLs and their QR codes, play URLs, live figures, the go-live
reminders viewers subscribe to, and danmaku hub tokens for staff and viewers.

Handlers and their part of control's route table (:data:`OPS`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from aiohttp import web

from control import qr, validate
from control.accounts import Role
from control.auth import PRINCIPAL, PUBLIC, principal_of
from control.broadcast_model import Broadcast, Conflict
from control.context import OPERATOR_ANCHOR, OPS_ROLES, STAFF, broadcasts_of, control_of
from control.routes_broadcasts import broadcast_json, load_broadcast
from control.stats import viewers_of
from control.validate import invalid, iso
from core.http import ApiError, read_json
from core.routes import Op, OpDoc, broadcast_in_path, query_param
from core.runtime import RUNTIME, Runtime
from core.tokens import TokenError, verify_token
from ingest.whip import whip_token, whip_url

logger = logging.getLogger(__name__)

# -- push and play URLs ------------------------------------------------------------------


def _push_json(request: web.Request, b: Broadcast) -> dict[str, Any]:
    rt = request.app[RUNTIME]
    try:
        info = broadcasts_of(request).push_info(b, rt.rtmp_base())
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return {
        "url": info.url,
        "server": info.server,
        "stream_key": info.stream_key,
        "not_before": iso(info.not_before),
        "expires_at": iso(info.expires_at),
        "qr_png": f"/api/broadcasts/{b.id}/push/qr.png",
        "qr_svg": f"/api/broadcasts/{b.id}/push/qr.svg",
        "whip_url": whip_url(rt.http_base(), b.app, b.stream),
        "whip_token": whip_token(info.url),
    }


async def get_push(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    resp = web.json_response(_push_json(request, b))
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def _new_key(request: web.Request, revoke: bool) -> Broadcast:
    """The broadcast after its push key was rotated (or revoked: no key until the next)."""
    b = await load_broadcast(request)
    try:
        return await broadcasts_of(request).rotate_key(
            b.id, revoke=revoke, actor=principal_of(request).user.username
        )
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None


async def rotate_push(request: web.Request) -> web.Response:
    resp = web.json_response(_push_json(request, await _new_key(request, revoke=False)))
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def revoke_push(request: web.Request) -> web.Response:
    return web.json_response(broadcast_json(await _new_key(request, revoke=True)))


def _scale(request: web.Request) -> int:
    return validate.query_int(request.query, "scale", 8, 1, qr.MAX_SCALE)


async def push_qr_png(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    scale = _scale(request)
    url = _push_json(request, b)["url"]
    data = await asyncio.to_thread(qr.png, url, scale)
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-store"})


async def push_qr_svg(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    scale = _scale(request)
    url = _push_json(request, b)["url"]
    data = await asyncio.to_thread(qr.svg, url, scale)
    return web.Response(
        text=data, content_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )


def play_urls(rt: Runtime, b: Broadcast) -> dict[str, str]:
    http = rt.http_base()
    ws = "ws" + http[4:]
    return {
        "rtmp": f"{rt.rtmp_base()}/{b.app}/{b.stream}",
        "http_flv": f"{http}/{b.app}/{b.stream}.flv",
        "ws_flv": f"{ws}/{b.app}/{b.stream}.flv",
        "hls": f"{http}/{b.app}/{b.stream}.m3u8",
    }


async def get_play(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    return web.json_response(play_urls(request.app[RUNTIME], b))


async def get_stats(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    stats = control_of(request).need()[3]
    stream = await stats.stream(b.app, b.stream)
    counters = await stats.counters(b.id)
    sales = (await stats.sales([b.id]))[b.id]
    viewers = viewers_of(stream)
    video = (stream or {}).get("video") if isinstance((stream or {}).get("video"), dict) else None
    audio = (stream or {}).get("audio") if isinstance((stream or {}).get("audio"), dict) else None

    def num(key: str) -> float | None:
        v = (stream or {}).get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    fps = (stream or {}).get("fps", video.get("fps") if video else None)
    return web.json_response(
        {
            "broadcast_id": b.id,
            "state": b.state.value,
            "live": bool((stream or {}).get("live")),
            "viewers": viewers,
            "viewers_total": sum(viewers.values()),
            "bitrate_in": num("bitrate_in"),
            "bitrate_out": num("bitrate_out"),
            "video": video,
            "audio": audio,
            "fps": float(fps)
            if isinstance(fps, int | float) and not isinstance(fps, bool)
            else None,
            "uptime": num("uptime"),
            "comments": counters["comments"],
            "comments_per_s": stats.comment_rate(b.id),
            "likes": counters["likes"],
            **sales,
        }
    )


# -- reminders and danmaku tokens --------------------------------------------------------


VIEWER_TOKEN_HEADER = "X-Viewer-Token"


def _reminder_subscriber(request: web.Request, named: Any) -> str:
    """Whose reminder this is: the user of the viewer token (``X-Viewer-Token``, issued by
    the app backend), or whomever an operator names. Nobody can subscribe or unsubscribe
    someone else, and an anonymous caller cannot fill the table."""
    raw = request.headers.get(VIEWER_TOKEN_HEADER)
    if raw is not None:
        try:
            uid = verify_token(request.app[RUNTIME].secret, raw).user_id
        except TokenError as exc:
            raise ApiError(401, "invalid_viewer_token", f"viewer token refused: {exc}") from None
        if named is not None and named != uid:
            raise ApiError(403, "forbidden", "subscriber does not match the viewer token")
        return _subscriber(uid)
    who = request.get(PRINCIPAL)
    if who is not None and who.role is Role.OPERATOR:
        if named is None:
            invalid("subscriber: is required (subscribing for a viewer)")
        return _subscriber(named)
    raise ApiError(
        401,
        "unauthorized",
        f"reminders need the viewer's token ({VIEWER_TOKEN_HEADER}) or an operator naming "
        "the subscriber",
    )


async def subscribe_reminder(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    body = await read_json(request, 4096)
    validate.only(body, {"subscriber"})
    sub = _reminder_subscriber(request, body.get("subscriber"))
    try:
        new = await broadcasts_of(request).subscribe(b.id, sub)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response(
        {"broadcast_id": b.id, "subscriber": sub, "subscribed": new}, status=201 if new else 200
    )


def _subscriber(value: Any) -> str:
    if not isinstance(value, str) or not SUBSCRIBER.fullmatch(value):
        invalid("subscriber must be 1..128 characters of letters, digits and _.:@-")
    return value


SUBSCRIBER = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")


async def unsubscribe_reminder(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    named = request.match_info["subscriber"]
    if len(named) > 128:
        raise ApiError(404, "not_found", "not subscribed")
    sub = _reminder_subscriber(request, named)
    if not await broadcasts_of(request).unsubscribe(b.id, sub):
        raise ApiError(404, "not_found", "not subscribed")
    return web.Response(status=204)


def _room(b: Broadcast) -> str:
    return f"{b.app}/{b.stream}"


def _issue_danmaku_token(
    request: web.Request,
    user_id: str,
    nick: str,
    role: str,
    ttl: int,
    room: str | None,
    created: int | None = None,
) -> str:
    try:
        from core.tokens import issue_token
    except ImportError:  # pragma: no cover - the danmaku package is part of berrylive
        raise ApiError(503, "unavailable", "the danmaku hub is not installed") from None
    try:
        return issue_token(
            request.app[RUNTIME].secret, user_id, nick, role, ttl=ttl, room=room, created=created
        )
    except ValueError as exc:
        invalid(str(exc))


async def staff_danmaku_token(request: web.Request) -> web.Response:
    """A hub token for the signed-in staff member, with their role in this room."""
    b = await load_broadcast(request)
    p = principal_of(request)
    ttl = 12 * 3600
    role = p.role.value
    token = _issue_danmaku_token(
        request,
        f"staff:{p.user.id}",
        (p.user.display_name or p.user.username)[:32],
        role,
        ttl,
        None if p.role is Role.OPERATOR else _room(b),
    )
    return web.json_response(
        {"token": token, "room": _room(b), "role": role, "expires_at": iso(time.time() + ttl)}
    )


async def viewer_token(request: web.Request) -> web.Response:
    """For a trusted mini-program backend (API token): a viewer's token for one room."""
    b = await load_broadcast(request)
    body = await read_json(request, 4096)
    validate.only(body, {"user_id", "nick", "ttl", "account_created_at"})
    user_id = validate.text(body, "user_id", required=True, min_len=1, max_len=64) or ""
    if any(ch.isspace() for ch in user_id):
        invalid("user_id must not contain spaces")
    nick = validate.text(body, "nick", required=True, max_len=32) or ""
    ttl = validate.integer(body, "ttl", lo=60, hi=7 * 86400) or 86400
    # when the viewer's account was created (Unix seconds): flash sales may refuse young ones
    created = validate.integer(body, "account_created_at", lo=0, hi=int(time.time()) + 60)
    token = _issue_danmaku_token(request, user_id, nick, "viewer", ttl, _room(b), created)
    return web.json_response(
        {"token": token, "room": _room(b), "role": "viewer", "expires_at": iso(time.time() + ttl)}
    )


# -- routes ------------------------------------------------------------------------

OPS: list[Op] = [
    Op(
        "GET",
        "/api/broadcasts/{id}/push",
        get_push,
        OpDoc(
            "The signed push URL (valid from before the start to after the end)",
            "push",
            OPERATOR_ANCHOR,
            response="PushInfo",
            errors=(409,),
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "POST",
        "/api/broadcasts/{id}/push/rotate",
        rotate_push,
        OpDoc(
            "New push key: old URLs refused, a live publisher is cut",
            "push",
            OPERATOR_ANCHOR,
            response="PushInfo",
            errors=(409,),
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "POST",
        "/api/broadcasts/{id}/push/revoke",
        revoke_push,
        OpDoc(
            "Revoke the push key (cuts a live publisher) until the next rotation",
            "push",
            OPS_ROLES,
            response="Broadcast",
            errors=(409,),
        ),
    ),
    Op(
        "GET",
        "/api/broadcasts/{id}/push/qr.png",
        push_qr_png,
        OpDoc(
            "QR code of the push URL (PNG)",
            "push",
            OPERATOR_ANCHOR,
            query=[
                query_param("scale", {"type": "integer", "minimum": 1, "maximum": qr.MAX_SCALE})
            ],
            response_media={"image/png": {"schema": {"type": "string", "format": "binary"}}},
            errors=(409,),
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "GET",
        "/api/broadcasts/{id}/push/qr.svg",
        push_qr_svg,
        OpDoc(
            "QR code of the push URL (SVG)",
            "push",
            OPERATOR_ANCHOR,
            query=[
                query_param("scale", {"type": "integer", "minimum": 1, "maximum": qr.MAX_SCALE})
            ],
            response_media={"image/svg+xml": {"schema": {"type": "string"}}},
            errors=(409,),
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "GET",
        "/api/broadcasts/{id}/play",
        get_play,
        OpDoc(
            "Play URLs for every protocol",
            "broadcasts",
            STAFF,
            response="PlayUrls",
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "GET",
        "/api/broadcasts/{id}/stats",
        get_stats,
        OpDoc(
            "Live figures for the dashboard",
            "broadcasts",
            STAFF,
            response="Stats",
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "POST",
        "/api/broadcasts/{id}/reminders",
        subscribe_reminder,
        OpDoc(
            "A viewer subscribes to the go-live reminder (their X-Viewer-Token, or an "
            "operator naming the subscriber)",
            "reminders",
            (PUBLIC,),
            body="ReminderRequest",
            ok=201,
            also_ok=(200,),
            response="Reminder",
            errors=(401, 403, 409),
        ),
    ),
    Op(
        "DELETE",
        "/api/broadcasts/{id}/reminders/{subscriber}",
        unsubscribe_reminder,
        OpDoc(
            "A viewer unsubscribes (only their own reminder; operators any; 400 a "
            "subscriber name that is not 1..128 of letters, digits and _.:@-)",
            "reminders",
            (PUBLIC,),
            ok=204,
            errors=(400, 401, 403, 404),
            path_params={"subscriber": {"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,128}$"}},
        ),
    ),
    Op(
        "POST",
        "/api/broadcasts/{id}/danmaku-token",
        staff_danmaku_token,
        OpDoc(
            "A danmaku hub token for the signed-in staff member in this room",
            "danmaku",
            STAFF,
            response="DanmakuToken",
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "POST",
        "/api/broadcasts/{id}/viewer-token",
        viewer_token,
        OpDoc(
            "A viewer's danmaku hub token (for the mini-program backend's API token)",
            "danmaku",
            OPS_ROLES,
            body="ViewerTokenRequest",
            response="DanmakuToken",
        ),
    ),
]
