"""The control plane's REST API, its lifecycle tasks, ``/metrics``, the docs and the console.

``setup(app, config)`` (called from :func:`control.app.create_app`) adds the auth
middleware for every ``/api/`` route, this package's routes (one table, :data:`OPS`, from
which the OpenAPI paths are generated too), and a cleanup context that opens the
database, migrates it, subscribes to the bus and runs the sweeper and webhook worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from control import qr, validate
from control.accounts import AccountError, Accounts, LoginLimiter, Role, TokenInfo, User
from control.auth import (
    AUTH,
    LEGACY_UNDECLARED,
    PUBLIC,
    AuthState,
    auth_middleware,
    principal_of,
    roles_from_spec,
)
from control.broadcasts import (
    MAX_PRODUCTS,
    Broadcast,
    BroadcastService,
    Conflict,
    Filters,
    NotFound,
)
from control.lifecycle import IllegalTransition, State, Trigger, allowed
from control.metrics import Metrics
from control.models import broadcasts as broadcasts_table
from control.openapi import SCHEMAS, build_spec, legacy_paths
from control.settings import ControlSettings, load_settings
from control.stats import LiveStats, viewers_of
from control.validate import invalid, iso, path_id
from control.webhooks import WebhookService
from core.db import create_engine, migrate
from core.http import ApiError, read_json
from core.routes import PAGING, Op, OpDoc, RouteTable, installed, query_param
from core.runtime import RUNTIME, Runtime

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
CONSOLE_DIR = Path(__file__).parent / "console"
COVER_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


@dataclass
class Control:
    """The control plane's services (filled at startup)."""

    settings: ControlSettings
    spec: dict[str, Any] = field(default_factory=dict)
    engine: AsyncEngine | None = None
    accounts: Accounts | None = None
    broadcasts: BroadcastService | None = None
    webhooks: WebhookService | None = None
    stats: LiveStats | None = None
    limiter: LoginLimiter | None = None
    metrics: Metrics | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def need(self) -> tuple[Accounts, BroadcastService, WebhookService, LiveStats]:
        if (
            self.accounts is None
            or self.broadcasts is None
            or self.webhooks is None
            or self.stats is None
        ):
            raise ApiError(503, "starting", "the control plane is starting")
        return self.accounts, self.broadcasts, self.webhooks, self.stats


CONTROL: web.AppKey[Control] = web.AppKey("berrylive.control", Control)


def _svc(request: web.Request) -> Control:
    return request.app[CONTROL]


def _bs(request: web.Request) -> BroadcastService:
    return _svc(request).need()[1]


def _accounts(request: web.Request) -> Accounts:
    return _svc(request).need()[0]


def _webhooks(request: web.Request) -> WebhookService:
    return _svc(request).need()[2]


# -- serializers ---------------------------------------------------------------------


def user_json(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "username": u.username,
        "display_name": u.display_name,
        "role": u.role.value,
        "disabled": u.disabled,
        "created_at": iso(u.created_at),
    }


def token_json(t: TokenInfo) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "kind": t.kind,
        "created_at": iso(t.created_at),
        "expires_at": iso(t.expires_at),
        "last_used_at": iso(t.last_used_at),
        "revoked_at": iso(t.revoked_at),
    }


def broadcast_json(b: Broadcast) -> dict[str, Any]:
    return {
        "id": b.id,
        "title": b.title,
        "description": b.description,
        "anchor_id": b.anchor_id,
        "app": b.app,
        "stream": b.stream,
        "state": b.state.value,
        "scheduled_start": iso(b.scheduled_start),
        "scheduled_end": iso(b.scheduled_end),
        "product_ids": b.product_ids,
        "settings": b.settings,
        "cover_url": f"/api/broadcasts/{b.id}/cover" if b.cover else None,
        "replay_url": b.replay_url,
        "ban_reason": b.ban_reason,
        "push_revoked": b.push_revoked,
        "reminder_count": b.reminder_count,
        "created_at": iso(b.created_at),
        "updated_at": iso(b.updated_at),
        "state_changed_at": iso(b.state_changed_at),
        "started_at": iso(b.started_at),
        "ended_at": iso(b.ended_at),
        "actions": [t.value for t in allowed(b.state)],
    }


def page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    nxt = offset + len(items)
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": nxt if nxt < total else None,
    }


def paging(request: web.Request) -> tuple[int, int]:
    return (
        validate.query_int(request.query, "limit", 20, 1, 100),
        validate.query_int(request.query, "offset", 0, 0, 1_000_000),
    )


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"


# -- auth ----------------------------------------------------------------------------


async def login(request: web.Request) -> web.Response:
    ctl = _svc(request)
    accounts = ctl.need()[0]
    assert ctl.limiter is not None
    body = await read_json(request, 8192)
    validate.only(body, {"username", "password"})
    username = validate.text(body, "username", required=True, min_len=1, max_len=64) or ""
    password = body.get("password")
    if not isinstance(password, str) or not 1 <= len(password) <= 1024:
        invalid("password must be a string of 1..1024 characters")
    ip = client_ip(request)
    wait = await ctl.limiter.blocked_for(username, ip)
    if wait:
        err = ApiError(429, "too_many_attempts", f"too many failed logins; retry in {wait} s")
        err.headers["Retry-After"] = str(wait)
        raise err
    user = await accounts.authenticate(username, password)
    if user is None:
        await ctl.limiter.failed(username, ip)
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    await ctl.limiter.succeeded(username, ip)
    token, info = await accounts.issue_token(
        user.id, "session", name=f"login from {ip}", ttl=ctl.settings.session_ttl
    )
    return web.json_response(
        {"token": token, "expires_at": iso(info.expires_at), "user": user_json(user)}
    )


async def logout(request: web.Request) -> web.Response:
    p = principal_of(request)
    await _accounts(request).revoke_token(p.token_id, p.user.id)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    return web.json_response(user_json(principal_of(request).user))


# -- users ---------------------------------------------------------------------------


def _role(value: Any, name: str = "role") -> Role:
    try:
        return Role(value)
    except ValueError:
        invalid(f"{name} must be one of operator, anchor, moderator")


def _account_error(exc: AccountError) -> ApiError:
    status = 409 if exc.code == "conflict" else 400
    return ApiError(status, exc.code, str(exc))


async def list_users(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    role = _role(request.query["role"]) if "role" in request.query else None
    items, total = await _accounts(request).list_users(limit, offset, role)
    return web.json_response(page([user_json(u) for u in items], total, limit, offset))


async def create_user(request: web.Request) -> web.Response:
    body = await read_json(request)
    validate.only(body, {"username", "password", "role", "display_name"})
    username = validate.text(body, "username", required=True, max_len=64) or ""
    password = body.get("password")
    if not isinstance(password, str):
        invalid("password is required (a string)")
    role = _role(body.get("role"))
    display = validate.text(body, "display_name", max_len=128) or ""
    try:
        user = await _accounts(request).create_user(username, password, role, display)
    except AccountError as exc:
        raise _account_error(exc) from None
    return web.json_response(user_json(user), status=201)


async def _user_or_404(request: web.Request) -> User:
    uid = path_id(request.match_info["id"])
    user = await _accounts(request).get_user(uid)
    if user is None:
        raise ApiError(404, "not_found", f"no user {uid}")
    return user


async def get_user(request: web.Request) -> web.Response:
    return web.json_response(user_json(await _user_or_404(request)))


async def update_user(request: web.Request) -> web.Response:
    user = await _user_or_404(request)
    body = await read_json(request)
    validate.only(body, {"password", "role", "display_name", "disabled"})
    password = body.get("password")
    if password is not None and not isinstance(password, str):
        invalid("password must be a string")
    role = _role(body["role"]) if body.get("role") is not None else None
    disabled = validate.boolean(body, "disabled")
    me_ = principal_of(request).user
    if user.id == me_.id and (disabled or (role is not None and role is not Role.OPERATOR)):
        raise ApiError(409, "conflict", "you cannot disable or demote yourself")
    try:
        updated = await _accounts(request).update_user(
            user.id,
            display_name=validate.text(body, "display_name", max_len=128),
            role=role,
            password=password,
            disabled=disabled,
        )
    except AccountError as exc:
        raise _account_error(exc) from None
    assert updated is not None
    return web.json_response(user_json(updated))


async def delete_user(request: web.Request) -> web.Response:
    user = await _user_or_404(request)
    if user.id == principal_of(request).user.id:
        raise ApiError(409, "conflict", "you cannot delete yourself")
    try:
        await _accounts(request).delete_user(user.id)
    except IntegrityError:
        raise ApiError(
            409, "conflict", "the user anchors broadcasts; disable the account instead"
        ) from None
    return web.Response(status=204)


# -- API tokens ------------------------------------------------------------------------


async def list_tokens(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    items, total = await _accounts(request).list_tokens(
        principal_of(request).user.id, limit, offset
    )
    return web.json_response(page([token_json(t) for t in items], total, limit, offset))


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request)
    validate.only(body, {"name", "expires_in"})
    name = validate.text(body, "name", required=True, min_len=1, max_len=128) or ""
    ttl = validate.integer(body, "expires_in", lo=60, hi=10 * 365 * 86400)
    token, info = await _accounts(request).issue_token(
        principal_of(request).user.id, "api", name=name, ttl=ttl
    )
    return web.json_response({**token_json(info), "token": token}, status=201)


async def delete_token(request: web.Request) -> web.Response:
    tid = path_id(request.match_info["id"])
    p = principal_of(request)
    owner = None if p.role is Role.OPERATOR else p.user.id
    if not await _accounts(request).revoke_token(tid, owner):
        raise ApiError(404, "not_found", f"no active token {tid}")
    return web.Response(status=204)


# -- broadcasts ----------------------------------------------------------------------


async def _broadcast(request: web.Request) -> Broadcast:
    bid = path_id(request.match_info["id"])
    try:
        return await _bs(request).get(bid)
    except NotFound:
        raise ApiError(404, "not_found", f"no broadcast {bid}") from None


async def _check_anchor(request: web.Request, anchor_id: int | None) -> None:
    if anchor_id is None:
        return
    user = await _accounts(request).get_user(anchor_id)
    if user is None or user.role is not Role.ANCHOR:
        invalid(f"anchor_id {anchor_id} is not an anchor's account")


def _broadcast_fields(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    allowed_keys = {
        "title",
        "description",
        "anchor_id",
        "scheduled_start",
        "scheduled_end",
        "product_ids",
        "settings",
    }
    validate.only(body, allowed_keys)
    out: dict[str, Any] = {}
    title = validate.text(body, "title", required=creating, min_len=1, max_len=200)
    if title is not None:
        out["title"] = title
    desc = validate.text(body, "description", max_len=5000, multiline=True)
    if desc is not None:
        out["description"] = desc
    if "anchor_id" in body:
        out["anchor_id"] = validate.integer(body, "anchor_id")
    start = validate.time_field(body, "scheduled_start", required=creating)
    if start is not None:
        out["scheduled_start"] = start
    if "scheduled_end" in body:
        out["scheduled_end"] = validate.time_field(body, "scheduled_end")
    if "product_ids" in body:
        pids = body["product_ids"]
        if not isinstance(pids, list) or len(pids) > MAX_PRODUCTS:
            invalid(f"product_ids must be a list of at most {MAX_PRODUCTS} ids")
        checked = [
            validate.integer({"product_ids[]": p}, "product_ids[]", required=True) for p in pids
        ]
        if len(set(checked)) != len(checked):
            invalid("product_ids must not repeat an id")
        out["product_ids"] = checked
    if "settings" in body:
        s = body["settings"]
        if not isinstance(s, dict):
            invalid("settings must be an object")
        validate.only(s, {"comments", "likes", "replay", "sharing"})
        out["settings"] = {k: validate.boolean(s, k) for k in s if s[k] is not None}
    return out


async def list_broadcasts(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    q = request.query
    f = Filters()
    for raw in q.getall("state", []):
        for part in raw.split(","):
            try:
                f.state.append(State(part))
            except ValueError:
                invalid(f"state must be one of {', '.join(s.value for s in State)}")
    if "anchor_id" in q:
        f.anchor_id = validate.query_int(q, "anchor_id", 0, 1, 2**53)
    if "from" in q:
        f.start_from = validate.parse_time("from", q["from"])
    if "to" in q:
        f.start_to = validate.parse_time("to", q["to"])
    p = principal_of(request)
    if p.role is Role.ANCHOR:
        f.anchor_id = p.user.id  # anchors see only their broadcasts
    items, total = await _bs(request).list_page(f, limit, offset)
    return web.json_response(page([broadcast_json(b) for b in items], total, limit, offset))


async def create_broadcast(request: web.Request) -> web.Response:
    body = await read_json(request)
    fields = _broadcast_fields(body, creating=True)
    end = fields.get("scheduled_end")
    if end is not None and end <= fields["scheduled_start"]:
        invalid("scheduled_end must be after scheduled_start")
    await _check_anchor(request, fields.get("anchor_id"))
    b = await _bs(request).create(
        title=fields["title"],
        scheduled_start=fields["scheduled_start"],
        scheduled_end=end,
        description=fields.get("description", ""),
        anchor_id=fields.get("anchor_id"),
        product_ids=fields.get("product_ids"),
        settings=fields.get("settings"),
        actor=principal_of(request).user.username,
    )
    return web.json_response(broadcast_json(b), status=201)


async def get_broadcast(request: web.Request) -> web.Response:
    return web.json_response(broadcast_json(await _broadcast(request)))


async def update_broadcast(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    body = await read_json(request)
    fields = _broadcast_fields(body, creating=False)
    if "anchor_id" in fields:
        await _check_anchor(request, fields["anchor_id"])
    try:
        b = await _bs(request).update(b.id, fields, actor=principal_of(request).user.username)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except ValueError as exc:
        invalid(str(exc))
    return web.json_response(broadcast_json(b))


async def delete_broadcast(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    try:
        await _bs(request).delete(b.id)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    await _remove_cover_file(request, b.cover)
    return web.Response(status=204)


def _action(trigger: Trigger) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        b = await _broadcast(request)
        reason = ""
        if request.can_read_body:
            body = await read_json(request, 8192)
            validate.only(body, {"reason"})
            reason = validate.text(body, "reason", max_len=500) or ""
        try:
            after = await _bs(request).apply(
                b.id, trigger, reason=reason, actor=principal_of(request).user.username
            )
        except IllegalTransition as exc:
            raise ApiError(409, "illegal_transition", str(exc)) from None
        except Conflict as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        return web.json_response(broadcast_json(after))

    handler.__name__ = f"broadcast_{trigger.value}"
    return handler


async def broadcast_history(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    limit, offset = paging(request)
    items, total = await _bs(request).history(b.id, limit, offset)
    out = [
        {
            "id": t.id,
            "previous": t.previous.value if t.previous else None,
            "state": t.state.value,
            "trigger": t.trigger,
            "reason": t.reason,
            "actor": t.actor,
            "at": iso(t.at),
        }
        for t in items
    ]
    return web.json_response(page(out, total, limit, offset))


# -- covers ----------------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if len(data) > 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _covers_dir(request: web.Request) -> Path:
    return request.app[RUNTIME].data_dir / "covers"


async def _remove_cover_file(request: web.Request, name: str | None) -> None:
    if name:
        path = _covers_dir(request) / name
        await asyncio.to_thread(path.unlink, True)


async def put_cover(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    ctype = request.content_type
    if ctype not in COVER_TYPES and ctype != "application/octet-stream":
        raise ApiError(415, "unsupported_media_type", "send a PNG, JPEG or WebP image body")
    cap = _svc(request).settings.cover_max_bytes
    if request.content_length is not None and request.content_length > cap:
        raise ApiError(413, "body_too_large", f"cover over {cap} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        data += chunk
        if len(data) > cap:
            raise ApiError(413, "body_too_large", f"cover over {cap} bytes")
    ext = _sniff(bytes(data))
    if ext is None:
        invalid("the body is not a PNG, JPEG or WebP image", code="not_an_image")
    if b.state in (State.CANCELLED, State.BANNED):
        raise ApiError(409, "conflict", f"a {b.state.value} broadcast cannot be edited")
    name = f"{b.id}-{secrets.token_hex(6)}.{ext}"
    directory = _covers_dir(request)

    def write() -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(directory / name)

    await asyncio.to_thread(write)
    after = await _bs(request).set_cover(b.id, name)
    await _remove_cover_file(request, b.cover)
    return web.json_response(broadcast_json(after))


async def get_cover(request: web.Request) -> web.StreamResponse:
    b = await _broadcast(request)
    if not b.cover:
        raise ApiError(404, "not_found", "this broadcast has no cover")
    path = _covers_dir(request) / b.cover
    if not await asyncio.to_thread(path.is_file):
        raise ApiError(404, "not_found", "the cover file is missing")
    ext = b.cover.rsplit(".", 1)[-1]
    mime = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}.get(ext, "image/png")
    return web.FileResponse(path, headers={"Content-Type": mime, "Cache-Control": "no-cache"})


async def delete_cover(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    if b.cover:
        await _bs(request).set_cover(b.id, None)
        await _remove_cover_file(request, b.cover)
    return web.Response(status=204)


# -- push and play URLs ------------------------------------------------------------------


def _push_json(request: web.Request, b: Broadcast) -> dict[str, Any]:
    rt = request.app[RUNTIME]
    try:
        info = _bs(request).push_info(b, rt.rtmp_base())
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
    }


async def get_push(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    resp = web.json_response(_push_json(request, b))
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def rotate_push(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    try:
        after = await _bs(request).rotate_key(
            b.id, revoke=False, actor=principal_of(request).user.username
        )
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    resp = web.json_response(_push_json(request, after))
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def revoke_push(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    try:
        after = await _bs(request).rotate_key(
            b.id, revoke=True, actor=principal_of(request).user.username
        )
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response(broadcast_json(after))


def _scale(request: web.Request) -> int:
    return validate.query_int(request.query, "scale", 8, 1, qr.MAX_SCALE)


async def push_qr_png(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    scale = _scale(request)
    url = _push_json(request, b)["url"]
    data = await asyncio.to_thread(qr.png, url, scale)
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-store"})


async def push_qr_svg(request: web.Request) -> web.Response:
    b = await _broadcast(request)
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
    b = await _broadcast(request)
    return web.json_response(play_urls(request.app[RUNTIME], b))


async def get_stats(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    stats = _svc(request).need()[3]
    stream = await stats.stream(b.app, b.stream)
    counters = await stats.counters(b.id)
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
            "comments_per_s": stats.comment_rate(b.id, counters["comments"]),
            "likes": counters["likes"],
            "orders": counters["orders"],
            "gmv_fen": counters["gmv_fen"],
        }
    )


# -- reminders and danmaku tokens --------------------------------------------------------


async def subscribe_reminder(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    body = await read_json(request, 4096)
    validate.only(body, {"subscriber"})
    sub = _subscriber(body.get("subscriber"))
    try:
        new = await _bs(request).subscribe(b.id, sub)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response(
        {"broadcast_id": b.id, "subscriber": sub, "subscribed": new}, status=201 if new else 200
    )


def _subscriber(value: Any) -> str:
    import re

    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,128}", value):
        invalid("subscriber must be 1..128 characters of letters, digits and _.:@-")
    return value


async def unsubscribe_reminder(request: web.Request) -> web.Response:
    b = await _broadcast(request)
    sub = request.match_info["subscriber"]
    if len(sub) > 128 or not await _bs(request).unsubscribe(b.id, sub):
        raise ApiError(404, "not_found", "not subscribed")
    return web.Response(status=204)


def _room(b: Broadcast) -> str:
    return f"{b.app}/{b.stream}"


def _issue_danmaku_token(
    request: web.Request, user_id: str, nick: str, role: str, ttl: int, room: str | None
) -> str:
    try:
        from core.tokens import issue_token
    except ImportError:  # pragma: no cover - the danmaku package is part of berrylive
        raise ApiError(503, "unavailable", "the danmaku hub is not installed") from None
    try:
        return issue_token(request.app[RUNTIME].secret, user_id, nick, role, ttl=ttl, room=room)
    except ValueError as exc:
        invalid(str(exc))


async def staff_danmaku_token(request: web.Request) -> web.Response:
    """A hub token for the signed-in staff member, with their role in this room."""
    b = await _broadcast(request)
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
    b = await _broadcast(request)
    body = await read_json(request, 4096)
    validate.only(body, {"user_id", "nick", "ttl"})
    user_id = validate.text(body, "user_id", required=True, min_len=1, max_len=64) or ""
    if any(ch.isspace() for ch in user_id):
        invalid("user_id must not contain spaces")
    nick = validate.text(body, "nick", required=True, max_len=32) or ""
    ttl = validate.integer(body, "ttl", lo=60, hi=7 * 86400) or 86400
    token = _issue_danmaku_token(request, user_id, nick, "viewer", ttl, _room(b))
    return web.json_response(
        {"token": token, "room": _room(b), "role": "viewer", "expires_at": iso(time.time() + ttl)}
    )


# -- webhooks --------------------------------------------------------------------------


def webhook_json(h: Any) -> dict[str, Any]:
    return {
        "id": h.id,
        "url": h.url,
        "events": h.events,
        "active": h.active,
        "secret": h.secret,
        "description": h.description,
        "created_at": iso(h.created_at),
    }


def _webhook_fields(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    import re

    validate.only(body, {"url", "events", "secret", "description", "active"})
    out: dict[str, Any] = {}
    url = validate.text(body, "url", required=creating, min_len=8, max_len=1024)
    if url is not None:
        from yarl import URL

        try:
            parsed = URL(url)
        except ValueError:
            invalid("url is not a URL")
        if parsed.scheme not in ("http", "https") or not parsed.host:
            invalid("url must be an http:// or https:// URL with a host")
        out["url"] = url
    if "events" in body or creating:
        events = body.get("events")
        if not isinstance(events, list) or not 1 <= len(events) <= 50:
            invalid("events must be a list of 1..50 topic patterns")
        for e in events:
            if not isinstance(e, str) or not re.fullmatch(r"\*|[a-z_]+(\.[a-z_]+)*(\.\*)?", e):
                invalid(f"events: {e!r} is not a topic pattern like broadcast.* or order.paid")
        out["events"] = list(dict.fromkeys(events))
    secret = validate.text(body, "secret", min_len=16, max_len=128)
    if secret is not None:
        out["secret"] = secret
    desc = validate.text(body, "description", max_len=200)
    if desc is not None:
        out["description"] = desc
    active = validate.boolean(body, "active")
    if active is not None:
        out["active"] = active
    return out


async def list_webhooks(request: web.Request) -> web.Response:
    limit, offset = paging(request)
    items, total = await _webhooks(request).list_page(limit, offset)
    return web.json_response(page([webhook_json(h) for h in items], total, limit, offset))


async def create_webhook(request: web.Request) -> web.Response:
    body = await read_json(request)
    f = _webhook_fields(body, creating=True)
    try:
        hook = await _webhooks(request).create(
            f["url"], f["events"], f.get("secret"), f.get("description", ""), f.get("active", True)
        )
    except OverflowError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return web.json_response(webhook_json(hook), status=201)


async def _webhook_or_404(request: web.Request) -> Any:
    wid = path_id(request.match_info["id"])
    hook = await _webhooks(request).get(wid)
    if hook is None:
        raise ApiError(404, "not_found", f"no webhook {wid}")
    return hook


async def get_webhook(request: web.Request) -> web.Response:
    return web.json_response(webhook_json(await _webhook_or_404(request)))


async def update_webhook(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    body = await read_json(request)
    f = _webhook_fields(body, creating=False)
    updated = await _webhooks(request).update(hook.id, f)
    if updated is None:
        raise ApiError(404, "not_found", f"no webhook {hook.id}")
    return web.json_response(webhook_json(updated))


async def delete_webhook(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    await _webhooks(request).delete(hook.id)
    return web.Response(status=204)


def delivery_json(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": d["id"],
        "event_id": d["event_id"],
        "topic": d["topic"],
        "status": d["status"],
        "attempts": d["attempts"],
        "last_status": d["last_status"],
        "last_error": d["last_error"],
        "next_attempt_at": iso(d["next_attempt_at"]) if d["status"] == "pending" else None,
        "created_at": iso(d["created_at"]),
        "delivered_at": iso(d["delivered_at"]),
    }


async def list_deliveries(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    limit, offset = paging(request)
    status = request.query.get("status")
    if status is not None and status not in ("pending", "delivered", "failed", "dropped"):
        invalid("status must be pending, delivered, failed or dropped")
    items, total = await _webhooks(request).deliveries(hook.id, limit, offset, status)
    return web.json_response(page([delivery_json(d) for d in items], total, limit, offset))


async def ping_webhook(request: web.Request) -> web.Response:
    from core.bus import Event

    hook = await _webhook_or_404(request)
    event = Event(topic="ping", data={"webhook_id": hook.id}, node=request.app[RUNTIME].node_id)
    await _webhooks(request).enqueue(hook.id, event)
    return web.json_response({"event_id": event.id}, status=202)


async def retry_delivery(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    did = path_id(request.match_info["delivery_id"])
    if not await _webhooks(request).retry(hook.id, did):
        raise ApiError(404, "not_found", f"no delivery {did}")
    return web.Response(status=204)


# -- docs ----------------------------------------------------------------------------


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_svc(request).spec)


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=(CONSOLE_DIR / "docs.html").read_text(), content_type="text/html")


# -- metrics and console ------------------------------------------------------------


async def _metrics(request: web.Request) -> web.Response:
    m = _svc(request).metrics
    if m is None:
        raise ApiError(503, "starting", "the control plane is starting")
    return await m.handle(request)


async def _console_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


async def _console_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# -- the route table ---------------------------------------------------------------------

OPS_ROLES = ("operator",)
STAFF = ("operator", "moderator", "anchor")
OPERATOR_ANCHOR = ("operator", "anchor")


def _ops() -> list[Op]:
    lim = PAGING
    action_doc = {
        Trigger.CANCEL: ("Cancel a scheduled broadcast", OPS_ROLES),
        Trigger.END: ("End a live or interrupted broadcast (cuts the publisher)", OPERATOR_ANCHOR),
        Trigger.BAN: ("Take a broadcast down: cut the publisher, no replay", OPS_ROLES),
    }
    ops = [
        Op(
            "POST",
            "/api/auth/login",
            login,
            OpDoc(
                "Sign in; returns a session token",
                "auth",
                (PUBLIC,),
                body="LoginRequest",
                response="LoginResponse",
                errors=(401, 429),
            ),
        ),
        Op(
            "POST",
            "/api/auth/logout",
            logout,
            OpDoc(
                "Revoke the token used for this call",
                "auth",
                ("any",),
                ok=204,
            ),
        ),
        Op("GET", "/api/me", me, OpDoc("The signed-in user", "auth", ("any",), response="User")),
        Op(
            "GET",
            "/api/users",
            list_users,
            OpDoc(
                "List accounts",
                "users",
                OPS_ROLES,
                response="UserList",
                query=[
                    *lim,
                    query_param(
                        "role", {"type": "string", "enum": ["operator", "anchor", "moderator"]}
                    ),
                ],
            ),
        ),
        Op(
            "POST",
            "/api/users",
            create_user,
            OpDoc(
                "Create an account",
                "users",
                OPS_ROLES,
                body="UserCreate",
                ok=201,
                response="User",
                errors=(409,),
            ),
        ),
        Op(
            "GET",
            "/api/users/{id}",
            get_user,
            OpDoc("One account", "users", OPS_ROLES, response="User"),
        ),
        Op(
            "PATCH",
            "/api/users/{id}",
            update_user,
            OpDoc(
                "Change role, password, name or disable",
                "users",
                OPS_ROLES,
                body="UserUpdate",
                response="User",
                errors=(409,),
            ),
        ),
        Op(
            "DELETE",
            "/api/users/{id}",
            delete_user,
            OpDoc(
                "Delete an account",
                "users",
                OPS_ROLES,
                ok=204,
                errors=(409,),
            ),
        ),
        Op(
            "GET",
            "/api/tokens",
            list_tokens,
            OpDoc(
                "My API tokens",
                "auth",
                ("any",),
                response="TokenList",
                query=lim,
            ),
        ),
        Op(
            "POST",
            "/api/tokens",
            create_token,
            OpDoc(
                "Create an API token (shown once)",
                "auth",
                ("any",),
                body="TokenCreate",
                ok=201,
                response="TokenCreated",
            ),
        ),
        Op(
            "DELETE",
            "/api/tokens/{id}",
            delete_token,
            OpDoc(
                "Revoke an API token",
                "auth",
                ("any",),
                ok=204,
            ),
        ),
        Op(
            "GET",
            "/api/broadcasts",
            list_broadcasts,
            OpDoc(
                "The schedule (anchors: their own broadcasts)",
                "broadcasts",
                STAFF,
                response="BroadcastList",
                query=[
                    *lim,
                    query_param("state", {"type": "string", "enum": [s.value for s in State]}),
                    query_param("anchor_id", {"type": "integer", "minimum": 1, "maximum": 2**53}),
                    query_param(
                        "from", {"type": "string", "format": "date-time"}, "start at or after"
                    ),
                    query_param("to", {"type": "string", "format": "date-time"}, "start before"),
                ],
            ),
        ),
        Op(
            "POST",
            "/api/broadcasts",
            create_broadcast,
            OpDoc(
                "Schedule a broadcast",
                "broadcasts",
                OPS_ROLES,
                body="BroadcastCreate",
                ok=201,
                response="Broadcast",
            ),
        ),
        Op(
            "GET",
            "/api/broadcasts/{id}",
            get_broadcast,
            OpDoc(
                "One broadcast",
                "broadcasts",
                STAFF,
                response="Broadcast",
            ),
        ),
        Op(
            "PATCH",
            "/api/broadcasts/{id}",
            update_broadcast,
            OpDoc(
                "Edit a broadcast",
                "broadcasts",
                OPS_ROLES,
                body="BroadcastUpdate",
                response="Broadcast",
                errors=(409,),
            ),
        ),
        Op(
            "DELETE",
            "/api/broadcasts/{id}",
            delete_broadcast,
            OpDoc(
                "Delete a scheduled or cancelled broadcast",
                "broadcasts",
                OPS_ROLES,
                ok=204,
                errors=(409,),
            ),
        ),
        *[
            Op(
                "POST",
                f"/api/broadcasts/{{id}}/{t.value}",
                _action(t),
                OpDoc(
                    summary,
                    "lifecycle",
                    roles,
                    body="ActionRequest",
                    body_required=False,
                    response="Broadcast",
                    errors=(409,),
                ),
            )
            for t, (summary, roles) in action_doc.items()
        ],
        Op(
            "GET",
            "/api/broadcasts/{id}/history",
            broadcast_history,
            OpDoc(
                "Every state change, timestamped",
                "lifecycle",
                STAFF,
                response="TransitionList",
                query=lim,
            ),
        ),
        Op(
            "PUT",
            "/api/broadcasts/{id}/cover",
            put_cover,
            OpDoc(
                "Upload the cover image (PNG, JPEG or WebP body)",
                "broadcasts",
                OPERATOR_ANCHOR,
                body_media={
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                response="Broadcast",
                errors=(409, 415),
            ),
        ),
        Op(
            "GET",
            "/api/broadcasts/{id}/cover",
            get_cover,
            OpDoc(
                "The cover image",
                "broadcasts",
                (PUBLIC,),
                response_media={"image/*": {"schema": {"type": "string", "format": "binary"}}},
            ),
        ),
        Op(
            "DELETE",
            "/api/broadcasts/{id}/cover",
            delete_cover,
            OpDoc(
                "Remove the cover",
                "broadcasts",
                OPERATOR_ANCHOR,
                ok=204,
            ),
        ),
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
        ),
        Op(
            "POST",
            "/api/broadcasts/{id}/reminders",
            subscribe_reminder,
            OpDoc(
                "A viewer subscribes to the go-live reminder",
                "reminders",
                (PUBLIC,),
                body="ReminderRequest",
                ok=201,
                also_ok=(200,),
                response="Reminder",
                errors=(409,),
            ),
        ),
        Op(
            "DELETE",
            "/api/broadcasts/{id}/reminders/{subscriber}",
            unsubscribe_reminder,
            OpDoc(
                "A viewer unsubscribes",
                "reminders",
                (PUBLIC,),
                ok=204,
                path_params={
                    "subscriber": {"type": "string", "pattern": r"^[A-Za-z0-9_.:@-]{1,128}$"}
                },
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
        Op(
            "GET",
            "/api/webhooks",
            list_webhooks,
            OpDoc(
                "Webhook subscriptions",
                "webhooks",
                OPS_ROLES,
                response="WebhookList",
                query=lim,
            ),
        ),
        Op(
            "POST",
            "/api/webhooks",
            create_webhook,
            OpDoc(
                "Subscribe a URL to events",
                "webhooks",
                OPS_ROLES,
                body="WebhookCreate",
                ok=201,
                response="Webhook",
                errors=(409,),
            ),
        ),
        Op(
            "GET",
            "/api/webhooks/{id}",
            get_webhook,
            OpDoc(
                "One webhook",
                "webhooks",
                OPS_ROLES,
                response="Webhook",
            ),
        ),
        Op(
            "PATCH",
            "/api/webhooks/{id}",
            update_webhook,
            OpDoc(
                "Edit a webhook",
                "webhooks",
                OPS_ROLES,
                body="WebhookUpdate",
                response="Webhook",
            ),
        ),
        Op(
            "DELETE",
            "/api/webhooks/{id}",
            delete_webhook,
            OpDoc(
                "Delete a webhook and its delivery log",
                "webhooks",
                OPS_ROLES,
                ok=204,
            ),
        ),
        Op(
            "GET",
            "/api/webhooks/{id}/deliveries",
            list_deliveries,
            OpDoc(
                "Delivery log, newest first",
                "webhooks",
                OPS_ROLES,
                response="DeliveryList",
                query=[
                    *lim,
                    query_param(
                        "status",
                        {"type": "string", "enum": ["pending", "delivered", "failed", "dropped"]},
                    ),
                ],
            ),
        ),
        Op(
            "POST",
            "/api/webhooks/{id}/ping",
            ping_webhook,
            OpDoc(
                "Send a test event",
                "webhooks",
                OPS_ROLES,
                ok=202,
                response="Ping",
            ),
        ),
        Op(
            "POST",
            "/api/webhooks/{id}/deliveries/{delivery_id}/retry",
            retry_delivery,
            OpDoc(
                "Send a delivery again",
                "webhooks",
                OPS_ROLES,
                ok=204,
            ),
        ),
        Op(
            "GET",
            "/api/openapi.json",
            openapi_json,
            OpDoc(
                "This document",
                "meta",
                (PUBLIC,),
                response_media={"application/json": {"schema": {"type": "object"}}},
            ),
        ),
        Op(
            "GET",
            "/api/docs",
            docs_page,
            OpDoc(
                "The API reference page (renders this document)",
                "meta",
                (PUBLIC,),
                response_media={"text/html": {"schema": {"type": "string"}}},
            ),
        ),
        Op("GET", "/metrics", _metrics, OpDoc("Prometheus metrics", "meta", (PUBLIC,)), head=True),
        Op(
            "GET",
            "/console",
            _console_redirect,
            OpDoc("To the console", "console", (PUBLIC,)),
            head=True,
        ),
        Op(
            "GET",
            "/console/",
            _console_index,
            OpDoc("The operator console (its API calls need a token)", "console", (PUBLIC,)),
            head=True,
        ),
    ]
    return ops


OPS = RouteTable("control", _ops(), schemas=SCHEMAS)
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
    counts = {s.value: 0 for s in State}
    counts.update({r[0]: int(r[1]) for r in rows})
    return {
        "streams": await stats.streams(),
        "broadcasts": counts,
        "totals": dict(stats.totals),
        "webhooks": {
            "delivered": wh.counters.delivered,
            "failed_attempts": wh.counters.failed_attempts,
            "gave_up": wh.counters.gave_up,
            "pending": wh._pending_estimate,
        },
        "bus_published": app[RUNTIME].bus.published,
    }


async def _sweeper(bs: BroadcastService, interval: float) -> None:
    while True:
        try:
            await bs.sweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("lifecycle sweeper failed; retrying")
        await asyncio.sleep(interval)


async def _control_ctx(app: web.Application) -> AsyncIterator[None]:
    ctl = app[CONTROL]
    rt = app[RUNTIME]
    settings = ctl.settings
    engine = create_engine(rt.database_url)
    await migrate(engine, MIGRATIONS, "control")
    ctl.engine = engine
    ctl.accounts = Accounts(engine, settings.session_ttl)
    ctl.broadcasts = BroadcastService(engine, rt.redis, rt.bus, settings, rt.secret)
    ctl.webhooks = WebhookService(engine, settings)
    ctl.stats = LiveStats(rt.redis, lambda: _relay_streams(app))
    ctl.limiter = LoginLimiter(
        rt.redis, settings.login_max_failures, settings.login_max_failures_ip, settings.login_window
    )
    ctl.metrics = Metrics(lambda: _gather_metrics(app))
    auth = app[AUTH]
    auth.accounts = ctl.accounts

    async def owner_check(broadcast_id: int, user_id: int) -> bool:
        assert ctl.broadcasts is not None
        try:
            b = await ctl.broadcasts.get(broadcast_id)
        except NotFound:
            return False
        return b.anchor_id == user_id

    auth.owner_check = owner_check
    await ctl.broadcasts.sync_keys()
    unsubscribe = [
        rt.bus.subscribe("stream.*", ctl.broadcasts.on_event),
        rt.bus.subscribe("replay.ready", ctl.broadcasts.on_event),
        rt.bus.subscribe("*", ctl.webhooks.on_event),
        rt.bus.subscribe("order.paid", ctl.stats.on_event),
        rt.bus.subscribe("danmaku.*", ctl.stats.on_event),
        rt.bus.subscribe("comment.posted", ctl.stats.on_event),
        rt.bus.subscribe("like.added", ctl.stats.on_event),
    ]
    await ctl.webhooks.start()
    ctl.tasks.append(
        asyncio.get_running_loop().create_task(
            _sweeper(ctl.broadcasts, settings.sweep_interval), name="control:sweeper"
        )
    )
    try:
        yield
    finally:
        for unsub in unsubscribe:
            unsub()
        for task in ctl.tasks:
            task.cancel()
        for task in ctl.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ctl.tasks.clear()
        await ctl.webhooks.close()
        auth.accounts = None
        await engine.dispose()


def setup(app: web.Application, config: Any) -> None:
    """Mount the control plane on ``app`` (``config``: the composed :class:`Config`)."""
    settings = load_settings(config)
    app[CONTROL] = Control(settings=settings)
    app[AUTH] = AuthState()
    app.middlewares.append(auth_middleware)
    OPS.install(app)
    app.router.add_static("/console/", CONSOLE_DIR, follow_symlinks=False)
    app.on_startup.append(_document)
    app.cleanup_ctx.append(_control_ctx)


async def _document(app: web.Application) -> None:
    """Every package's routes are on the router now: build the spec (and legacy roles)."""
    routes = installed(app)
    app[CONTROL].spec = build_spec(routes)
    # COMPAT (issue 16): roles of packages that still ship OPENAPI_PATHS
    packages = {t.package for t in routes.tables}
    old, _ = legacy_paths(packages)
    legacy = roles_from_spec(old)
    if "relay" not in packages:
        legacy = {**LEGACY_UNDECLARED, **legacy}
    app[AUTH].legacy_roles = legacy
