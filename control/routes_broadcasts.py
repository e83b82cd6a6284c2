"""Broadcasts: the schedule (create, list, edit, delete), lifecycle actions and their
history, and the cover image.

Handlers and their part of control's route table (:data:`OPS`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from control import validate
from control.accounts import Role
from control.auth import PUBLIC, principal_of
from control.broadcast_model import MAX_PRODUCTS, Broadcast, Conflict, Filters, NotFound
from control.context import (
    OPERATOR_ANCHOR,
    OPS_ROLES,
    STAFF,
    accounts_of,
    broadcasts_of,
    control_of,
    page,
    paging,
)
from control.lifecycle import IllegalTransition, State, Trigger, allowed
from control.validate import invalid, iso, path_id
from core import images
from core.http import ApiError, read_json
from core.routes import PAGING, Op, OpDoc, Owner, broadcast_in_path, query_param
from core.runtime import RUNTIME

logger = logging.getLogger(__name__)

COVER_TYPES = images.IMAGE_TYPES


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


# -- broadcasts ----------------------------------------------------------------------


async def load_broadcast(request: web.Request) -> Broadcast:
    bid = path_id(request.match_info["id"])
    try:
        return await broadcasts_of(request).get(bid)
    except NotFound:
        raise ApiError(404, "not_found", f"no broadcast {bid}") from None


async def _check_anchor(request: web.Request, anchor_id: int | None) -> None:
    if anchor_id is None:
        return
    user = await accounts_of(request).get_user(anchor_id)
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
    items, total = await broadcasts_of(request).list_page(f, limit, offset)
    return web.json_response(page([broadcast_json(b) for b in items], total, limit, offset))


async def create_broadcast(request: web.Request) -> web.Response:
    body = await read_json(request)
    fields = _broadcast_fields(body, creating=True)
    end = fields.get("scheduled_end")
    if end is not None and end <= fields["scheduled_start"]:
        invalid("scheduled_end must be after scheduled_start")
    await _check_anchor(request, fields.get("anchor_id"))
    b = await broadcasts_of(request).create(
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
    return web.json_response(broadcast_json(await load_broadcast(request)))


async def update_broadcast(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    body = await read_json(request)
    fields = _broadcast_fields(body, creating=False)
    if "anchor_id" in fields:
        await _check_anchor(request, fields["anchor_id"])
    try:
        b = await broadcasts_of(request).update(
            b.id, fields, actor=principal_of(request).user.username
        )
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except ValueError as exc:
        invalid(str(exc))
    return web.json_response(broadcast_json(b))


async def delete_broadcast(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    try:
        await broadcasts_of(request).delete(b.id)
    except Conflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    await _remove_cover_file(request, b.cover)
    return web.Response(status=204)


def _action(trigger: Trigger) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        b = await load_broadcast(request)
        reason = ""
        if request.can_read_body:
            body = await read_json(request, 8192)
            validate.only(body, {"reason"})
            reason = validate.text(body, "reason", max_len=500) or ""
        try:
            after = await broadcasts_of(request).apply(
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
    b = await load_broadcast(request)
    limit, offset = paging(request)
    items, total = await broadcasts_of(request).history(b.id, limit, offset)
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


# -- the live room's series and the show's summary ---------------------------------------


def _series_of(request: web.Request) -> Any:
    series = control_of(request).series
    if series is None:
        raise ApiError(503, "starting", "the control plane is starting")
    return series


async def broadcast_series(request: web.Request) -> web.Response:
    """Points step by step since the broadcast went live (``?since=``: points whose step
    starts at or after it; the last one may have grown since it was last read)."""
    b = await load_broadcast(request)
    since = None
    if "since" in request.query:
        since = int(validate.parse_time("since", request.query["since"]))
    series = _series_of(request)
    points = await series.points(b.id, since)
    return web.json_response(
        {
            "broadcast_id": b.id,
            "step_s": series.step,
            "state": b.state.value,
            "started_at": iso(b.started_at),
            "ended_at": iso(b.ended_at),
            "points": points,
        },
        headers={"Cache-Control": "no-store"},
    )


async def broadcast_summary(request: web.Request) -> web.Response:
    """The show in figures: peak concurrent and unique viewers, comments, likes and
    sales (by the one definition, docs/shop.md); stored at its end, so far while live."""
    b = await load_broadcast(request)
    series = _series_of(request)
    stored = await series.summary(b.id)
    figures = stored if stored is not None else await series.live_summary(b.id)
    figures.pop("broadcast_id", None)
    duration = None
    if b.started_at is not None:
        duration = round((b.ended_at or time.time()) - b.started_at, 3)
    return web.json_response(
        {
            "broadcast_id": b.id,
            "state": b.state.value,
            "final": stored is not None,
            "started_at": iso(b.started_at),
            "ended_at": iso(b.ended_at),
            "duration_s": duration,
            **figures,
        }
    )


# -- covers ----------------------------------------------------------------------------


def _covers_dir(request: web.Request) -> Path:
    return request.app[RUNTIME].data_dir / "covers"


async def _remove_cover_file(request: web.Request, name: str | None) -> None:
    await images.remove_image(_covers_dir(request), name)


async def put_cover(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    data, ext = await images.read_image(request, control_of(request).settings.cover_max_bytes)
    if b.state in (State.CANCELLED, State.BANNED):
        raise ApiError(409, "conflict", f"a {b.state.value} broadcast cannot be edited")
    name = f"{b.id}-{secrets.token_hex(6)}.{ext}"
    await images.store_image(_covers_dir(request), name, data)
    after = await broadcasts_of(request).set_cover(b.id, name)
    await _remove_cover_file(request, b.cover)
    return web.json_response(broadcast_json(after))


async def get_cover(request: web.Request) -> web.StreamResponse:
    b = await load_broadcast(request)
    if not b.cover:
        raise ApiError(404, "not_found", "this broadcast has no cover")
    return await images.image_response(_covers_dir(request) / b.cover, "no-cache")


async def delete_cover(request: web.Request) -> web.Response:
    b = await load_broadcast(request)
    if b.cover:
        await broadcasts_of(request).set_cover(b.id, None)
        await _remove_cover_file(request, b.cover)
    return web.Response(status=204)


# -- routes ------------------------------------------------------------------------

_ACTION_DOC = {
    Trigger.CANCEL: ("Cancel a scheduled broadcast", OPS_ROLES),
    Trigger.END: ("End a live or interrupted broadcast (cuts the publisher)", OPERATOR_ANCHOR),
    Trigger.BAN: ("Take a broadcast down: cut the publisher, no replay", OPS_ROLES),
}

LISTED = Owner((), "a list the handler filters: an anchor's own broadcasts, all for others")

OPS: list[Op] = [
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
                *PAGING,
                query_param("state", {"type": "string", "enum": [s.value for s in State]}),
                query_param("anchor_id", {"type": "integer", "minimum": 1, "maximum": 2**53}),
                query_param("from", {"type": "string", "format": "date-time"}, "start at or after"),
                query_param("to", {"type": "string", "format": "date-time"}, "start before"),
            ],
        ),
        owner=LISTED,
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
        owner=broadcast_in_path("id"),
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
            owner=broadcast_in_path("id"),
        )
        for t, (summary, roles) in _ACTION_DOC.items()
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
            query=PAGING,
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "GET",
        "/api/broadcasts/{id}/series",
        broadcast_series,
        OpDoc(
            "The live room's figures step by step (a minute) since it went live",
            "broadcasts",
            OPERATOR_ANCHOR,
            response="Series",
            query=[
                query_param(
                    "since",
                    {"type": "string", "format": "date-time"},
                    "only points whose step starts at or after this time",
                )
            ],
        ),
        owner=broadcast_in_path("id"),
    ),
    Op(
        "GET",
        "/api/broadcasts/{id}/summary",
        broadcast_summary,
        OpDoc(
            "The show in figures: peak and unique viewers, comments, likes, sales",
            "broadcasts",
            OPERATOR_ANCHOR,
            response="BroadcastSummary",
        ),
        owner=broadcast_in_path("id"),
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
        owner=broadcast_in_path("id"),
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
        owner=broadcast_in_path("id"),
    ),
]
