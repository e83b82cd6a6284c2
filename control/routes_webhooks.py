"""Webhooks: subscriptions, their delivery log, test pings and retries.

Handlers and their part of control's route table (:data:`OPS`).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from control import validate
from control.context import OPS_ROLES, page, paging, webhooks_of
from control.validate import invalid, iso, path_id
from core.http import ApiError, read_json
from core.routes import PAGING, Op, OpDoc, query_param
from core.runtime import RUNTIME

logger = logging.getLogger(__name__)

# -- webhooks --------------------------------------------------------------------------


def webhook_json(h: Any, reveal: bool = False) -> dict[str, Any]:
    """A webhook as the API shows it. The signing secret is shown once: in the answer to
    its creation (``reveal``) and to a rotation; every other answer carries only its
    last four characters, to tell secrets apart."""
    out = {
        "id": h.id,
        "url": h.url,
        "events": h.events,
        "active": h.active,
        "secret_hint": "…" + h.secret[-4:],
        "description": h.description,
        "created_at": iso(h.created_at),
    }
    if reveal:
        out["secret"] = h.secret
    return out


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
    items, total = await webhooks_of(request).list_page(limit, offset)
    return web.json_response(page([webhook_json(h) for h in items], total, limit, offset))


async def create_webhook(request: web.Request) -> web.Response:
    body = await read_json(request)
    f = _webhook_fields(body, creating=True)
    try:
        hook = await webhooks_of(request).create(
            f["url"], f["events"], f.get("secret"), f.get("description", ""), f.get("active", True)
        )
    except OverflowError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    resp = web.json_response(webhook_json(hook, reveal=True), status=201)
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def _webhook_or_404(request: web.Request) -> Any:
    wid = path_id(request.match_info["id"])
    hook = await webhooks_of(request).get(wid)
    if hook is None:
        raise ApiError(404, "not_found", f"no webhook {wid}")
    return hook


async def get_webhook(request: web.Request) -> web.Response:
    return web.json_response(webhook_json(await _webhook_or_404(request)))


async def update_webhook(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    body = await read_json(request)
    f = _webhook_fields(body, creating=False)
    updated = await webhooks_of(request).update(hook.id, f)
    if updated is None:
        raise ApiError(404, "not_found", f"no webhook {hook.id}")
    return web.json_response(webhook_json(updated))


async def rotate_secret(request: web.Request) -> web.Response:
    """A new signing secret, answered this once; deliveries are signed with it from now on
    (a delivery being retried too)."""
    import secrets

    hook = await _webhook_or_404(request)
    updated = await webhooks_of(request).update(hook.id, {"secret": secrets.token_urlsafe(32)})
    if updated is None:
        raise ApiError(404, "not_found", f"no webhook {hook.id}")
    resp = web.json_response(webhook_json(updated, reveal=True))
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def delete_webhook(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    await webhooks_of(request).delete(hook.id)
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
    items, total = await webhooks_of(request).deliveries(hook.id, limit, offset, status)
    return web.json_response(page([delivery_json(d) for d in items], total, limit, offset))


async def ping_webhook(request: web.Request) -> web.Response:
    from core.bus import Event

    hook = await _webhook_or_404(request)
    event = Event(topic="ping", data={"webhook_id": hook.id}, node=request.app[RUNTIME].node_id)
    await webhooks_of(request).enqueue(hook.id, event)
    return web.json_response({"event_id": event.id}, status=202)


async def retry_delivery(request: web.Request) -> web.Response:
    hook = await _webhook_or_404(request)
    did = path_id(request.match_info["delivery_id"])
    if not await webhooks_of(request).retry(hook.id, did):
        raise ApiError(404, "not_found", f"no delivery {did}")
    return web.Response(status=204)


# -- routes ------------------------------------------------------------------------

OPS: list[Op] = [
    Op(
        "GET",
        "/api/webhooks",
        list_webhooks,
        OpDoc(
            "Webhook subscriptions",
            "webhooks",
            OPS_ROLES,
            response="WebhookList",
            query=PAGING,
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
        "POST",
        "/api/webhooks/{id}/rotate-secret",
        rotate_secret,
        OpDoc(
            "New signing secret (answered this once; the old one stops at once)",
            "webhooks",
            OPS_ROLES,
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
                *PAGING,
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
]
