"""The OpenAPI 3.0 document of ``/api/``: every installed route table, merged.

Each package declares its routes, roles and operation docs in one
:class:`core.routes.RouteTable`; :func:`build_spec` merges the tables installed on the
app (their ``openapi_paths()`` and ``schemas``), so the spec and the router cannot
disagree. This module also holds control's own schemas (:data:`SCHEMAS`).
"""

from __future__ import annotations

import logging
from typing import Any

from core.routes import (
    ID,
    PAGING,
    InstalledRoutes,
    OpDoc,
    nullable,
    operation,
    query_param,
    ref,
)

__all__ = [
    "ID",
    "PAGING",
    "SCHEMAS",
    "OpDoc",
    "build_spec",
    "nullable",
    "operation",
    "query_param",
    "ref",
]

logger = logging.getLogger(__name__)

J = dict[str, Any]

TIME: J = {"type": "string", "format": "date-time"}
ROLE: J = {"type": "string", "enum": ["operator", "anchor", "moderator"]}
STATE: J = {
    "type": "string",
    "enum": ["scheduled", "live", "interrupted", "ended", "replay_ready", "cancelled", "banned"],
}
TITLE: J = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[^\x00-\x1f\x7f]*$"}
LINE: J = {"type": "string", "maxLength": 200, "pattern": r"^[^\x00-\x1f\x7f]*$"}
SETTINGS: J = {
    "type": "object",
    "additionalProperties": False,
    "properties": {k: {"type": "boolean"} for k in ("comments", "likes", "replay", "sharing")},
}
PRODUCTS: J = {"type": "array", "maxItems": 200, "items": ID, "uniqueItems": True}


def page_of(item: str) -> J:
    return {
        "type": "object",
        "required": ["items", "total", "limit", "offset"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "total": {"type": "integer", "minimum": 0},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
            "next_offset": nullable({"type": "integer"}),
        },
    }


SCHEMAS: J = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "LoginRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["username", "password"],
        "properties": {
            "username": {"type": "string", "minLength": 1, "maxLength": 64},
            "password": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
    },
    "LoginResponse": {
        "type": "object",
        "required": ["token", "expires_at", "user"],
        "properties": {"token": {"type": "string"}, "expires_at": TIME, "user": ref("User")},
    },
    "User": {
        "type": "object",
        "required": ["id", "username", "display_name", "role", "disabled", "created_at"],
        "properties": {
            "id": ID,
            "username": {"type": "string"},
            "display_name": {"type": "string"},
            "role": ROLE,
            "disabled": {"type": "boolean"},
            "created_at": TIME,
        },
    },
    "UserCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["username", "password", "role"],
        "properties": {
            "username": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{2,64}$"},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
            "role": ROLE,
            "display_name": {**LINE, "maxLength": 128},
        },
    },
    "UserUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
            "role": ROLE,
            "display_name": {**LINE, "maxLength": 128},
            "disabled": {"type": "boolean"},
        },
    },
    "UserList": page_of("User"),
    "Token": {
        "type": "object",
        "required": ["id", "name", "kind", "created_at", "expires_at", "last_used_at"],
        "properties": {
            "id": ID,
            "name": {"type": "string"},
            "kind": {"type": "string", "enum": ["api", "session"]},
            "created_at": TIME,
            "expires_at": nullable(TIME),
            "last_used_at": nullable(TIME),
            "revoked_at": nullable(TIME),
        },
    },
    "TokenCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {**TITLE, "maxLength": 128},
            "expires_in": {"type": "integer", "minimum": 60, "maximum": 10 * 365 * 86400},
        },
    },
    "TokenCreated": {
        "allOf": [
            ref("Token"),
            {
                "type": "object",
                "required": ["token"],
                "properties": {"token": {"type": "string"}},
            },
        ]
    },
    "TokenList": page_of("Token"),
    "BroadcastSettings": SETTINGS,
    "Broadcast": {
        "type": "object",
        "required": [
            "id",
            "title",
            "state",
            "app",
            "stream",
            "scheduled_start",
            "settings",
            "product_ids",
            "actions",
        ],
        "properties": {
            "id": ID,
            "title": {"type": "string"},
            "description": {"type": "string"},
            "anchor_id": nullable(ID),
            "app": {"type": "string"},
            "stream": {"type": "string"},
            "state": STATE,
            "scheduled_start": TIME,
            "scheduled_end": nullable(TIME),
            "product_ids": {"type": "array", "items": {"type": "integer"}},
            "settings": ref("BroadcastSettings"),
            "cover_url": nullable({"type": "string"}),
            "replay_url": nullable({"type": "string"}),
            "ban_reason": nullable({"type": "string"}),
            "push_revoked": {"type": "boolean"},
            "reminder_count": {"type": "integer", "minimum": 0},
            "created_at": TIME,
            "updated_at": TIME,
            "state_changed_at": TIME,
            "started_at": nullable(TIME),
            "ended_at": nullable(TIME),
            "actions": {
                "type": "array",
                "description": "lifecycle triggers accepted in the current state",
                "items": {"type": "string"},
            },
        },
    },
    "BroadcastCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["title", "scheduled_start"],
        "properties": {
            "title": TITLE,
            "description": {"type": "string", "maxLength": 5000},
            "anchor_id": nullable(ID),
            "scheduled_start": TIME,
            "scheduled_end": nullable(TIME),
            "product_ids": PRODUCTS,
            "settings": ref("BroadcastSettings"),
        },
    },
    "BroadcastUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "title": TITLE,
            "description": {"type": "string", "maxLength": 5000},
            "anchor_id": nullable(ID),
            "scheduled_start": TIME,
            "scheduled_end": nullable(TIME),
            "product_ids": PRODUCTS,
            "settings": ref("BroadcastSettings"),
        },
    },
    "BroadcastList": page_of("Broadcast"),
    "ActionRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"reason": {**LINE, "maxLength": 500}},
    },
    "StreamKicked": {
        "type": "object",
        "required": ["app", "stream", "reason"],
        "properties": {
            "app": {"type": "string"},
            "stream": {"type": "string"},
            "reason": {"type": "string"},
        },
    },
    "StreamBanRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "reason": {**LINE, "maxLength": 500},
            "duration_s": nullable({"type": "integer", "minimum": 1, "maximum": 365 * 86400}),
        },
    },
    "StreamBan": {
        "type": "object",
        "required": ["app", "stream", "reason", "by", "at", "until"],
        "properties": {
            "app": {"type": "string"},
            "stream": {"type": "string"},
            "reason": {"type": "string"},
            "by": {"type": "string"},
            "at": nullable(TIME),
            "until": nullable(TIME),
        },
    },
    "StreamBanList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": ref("StreamBan")}},
    },
    "Transition": {
        "type": "object",
        "required": ["id", "state", "trigger", "at"],
        "properties": {
            "id": ID,
            "previous": nullable(STATE),
            "state": STATE,
            "trigger": {"type": "string"},
            "reason": {"type": "string"},
            "actor": {"type": "string"},
            "at": TIME,
        },
    },
    "TransitionList": page_of("Transition"),
    "PushInfo": {
        "type": "object",
        "required": ["url", "server", "stream_key", "not_before", "expires_at", "qr_png", "qr_svg"],
        "properties": {
            "url": {"type": "string", "description": "full RTMP push URL (mini-program, ffmpeg)"},
            "server": {"type": "string", "description": "OBS: server"},
            "stream_key": {"type": "string", "description": "OBS: stream key"},
            "not_before": TIME,
            "expires_at": TIME,
            "qr_png": {"type": "string"},
            "qr_svg": {"type": "string"},
            "whip_url": {"type": "string", "description": "WHIP endpoint (OBS, browsers)"},
            "whip_token": {
                "type": "string",
                "description": "WHIP Bearer token: the same credential as the RTMP URL",
            },
        },
    },
    "PlayUrls": {
        "type": "object",
        "required": ["rtmp", "http_flv", "ws_flv", "hls"],
        "properties": {
            "rtmp": {"type": "string"},
            "http_flv": {"type": "string"},
            "ws_flv": {"type": "string"},
            "hls": {"type": "string"},
        },
    },
    "Stats": {
        "type": "object",
        "required": ["broadcast_id", "state", "live", "viewers", "comments", "likes", "orders"],
        "properties": {
            "broadcast_id": ID,
            "state": STATE,
            "live": {"type": "boolean", "description": "a publisher is on the relay now"},
            "viewers": {"type": "object", "additionalProperties": {"type": "integer"}},
            "viewers_total": {"type": "integer"},
            "bitrate_in": nullable({"type": "number"}),
            "bitrate_out": nullable({"type": "number"}),
            "video": nullable({"type": "object"}),
            "audio": nullable({"type": "object"}),
            "fps": nullable({"type": "number"}),
            "uptime": nullable({"type": "number"}),
            "comments": {"type": "integer"},
            "comments_per_s": {"type": "number"},
            "likes": {"type": "integer"},
            "orders": {
                "type": "integer",
                "description": "sales not refunded in full, lottery prizes excluded "
                "(docs/shop.md, GMV, orders and buyers)",
            },
            "buyers": {"type": "integer"},
            "units": {"type": "integer"},
            "gmv_fen": {"type": "integer", "description": "paid_fen - refunded_fen"},
            "paid_fen": {"type": "integer"},
            "refunded_fen": {"type": "integer"},
        },
    },
    "SeriesPoint": {
        "type": "object",
        "required": ["t", "viewers", "viewers_by_protocol", "comments", "likes", "orders"],
        "properties": {
            "t": {"type": "string", "format": "date-time", "description": "the step's start"},
            "viewers": {"type": "integer", "description": "peak concurrent in the step"},
            "viewers_by_protocol": {
                "type": "object",
                "additionalProperties": {"type": "integer"},
                "description": "flv, ws-flv, rtmp, hls, whep",
            },
            "comments": {"type": "integer"},
            "likes": {"type": "integer"},
            "orders": {"type": "integer"},
            "gmv_fen": {"type": "integer", "description": "net of refunds: can be negative"},
            "refunded_fen": {"type": "integer"},
            "bitrate_in_kbps": nullable({"type": "number"}),
            "fps": nullable({"type": "number"}),
            "keyframe_interval_s": nullable({"type": "number"}),
            "dropped_viewers": {"type": "integer"},
        },
    },
    "Series": {
        "type": "object",
        "required": ["broadcast_id", "step_s", "points"],
        "properties": {
            "broadcast_id": ID,
            "step_s": {"type": "integer"},
            "state": STATE,
            "started_at": nullable(TIME),
            "ended_at": nullable(TIME),
            "points": {"type": "array", "items": ref("SeriesPoint")},
        },
    },
    "BroadcastSummary": {
        "type": "object",
        "required": ["broadcast_id", "final", "peak_viewers", "unique_viewers"],
        "properties": {
            "broadcast_id": ID,
            "state": STATE,
            "final": {"type": "boolean", "description": "stored at the show's end"},
            "started_at": nullable(TIME),
            "ended_at": nullable(TIME),
            "duration_s": nullable({"type": "number"}),
            "peak_viewers": {"type": "integer"},
            "peak_at": nullable(TIME),
            "unique_viewers": {"type": "integer", "description": "client addresses (estimate)"},
            "points": {"type": "integer"},
            "comments": {"type": "integer"},
            "likes": {"type": "integer"},
            "orders": {"type": "integer"},
            "buyers": {"type": "integer"},
            "units": {"type": "integer"},
            "gmv_fen": {"type": "integer"},
            "paid_fen": {"type": "integer"},
            "refunded_fen": {"type": "integer"},
        },
    },
    "ReminderRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": "A viewer (X-Viewer-Token) may omit subscriber or name themselves; "
        "an operator names it.",
        "properties": {
            "subscriber": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9_.:@-]{1,128}$",
                "description": "the viewer's id in the mini-program (e.g. an openid)",
            }
        },
    },
    "Reminder": {
        "type": "object",
        "required": ["broadcast_id", "subscriber", "subscribed"],
        "properties": {
            "broadcast_id": ID,
            "subscriber": {"type": "string"},
            "subscribed": {"type": "boolean", "description": "false: was already subscribed"},
        },
    },
    "DanmakuToken": {
        "type": "object",
        "required": ["token", "room", "role", "expires_at"],
        "properties": {
            "token": {"type": "string"},
            "room": {"type": "string"},
            "role": {"type": "string"},
            "expires_at": TIME,
        },
    },
    "ViewerTokenRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["user_id", "nick"],
        "properties": {
            "user_id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^\S+$"},
            "nick": {**LINE, "maxLength": 32},
            "ttl": {"type": "integer", "minimum": 60, "maximum": 7 * 86400},
            "account_created_at": {
                "type": "integer",
                "minimum": 0,
                "description": "when the viewer's account was created (Unix seconds): "
                "flash sales may refuse accounts younger than shop.flash_min_account_age",
            },
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "active", "secret_hint", "created_at"],
        "properties": {
            "id": ID,
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "active": {"type": "boolean"},
            "secret": {
                "type": "string",
                "description": "the signing secret: only in the answers to the creation "
                "and to POST /api/webhooks/{id}/rotate-secret",
            },
            "secret_hint": {"type": "string", "description": "its last four characters"},
            "description": {"type": "string"},
            "created_at": TIME,
        },
    },
    "WebhookCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url", "events"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "maxLength": 1024},
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "items": {"type": "string", "pattern": r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$"},
            },
            "secret": {"type": "string", "minLength": 16, "maxLength": 128},
            "description": LINE,
            "active": {"type": "boolean"},
        },
    },
    "WebhookUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "maxLength": 1024},
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": 50,
                "items": {"type": "string", "pattern": r"^(\*|[a-z_]+(\.[a-z_]+)*(\.\*)?)$"},
            },
            "secret": {"type": "string", "minLength": 16, "maxLength": 128},
            "description": LINE,
            "active": {"type": "boolean"},
        },
    },
    "WebhookList": page_of("Webhook"),
    "Delivery": {
        "type": "object",
        "required": ["id", "event_id", "topic", "status", "attempts", "created_at"],
        "properties": {
            "id": ID,
            "event_id": {"type": "string"},
            "topic": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "delivered", "failed", "dropped"]},
            "attempts": {"type": "integer"},
            "last_status": nullable({"type": "integer"}),
            "last_error": nullable({"type": "string"}),
            "next_attempt_at": nullable(TIME),
            "created_at": TIME,
            "delivered_at": nullable(TIME),
        },
    },
    "DeliveryList": page_of("Delivery"),
    "Ping": {
        "type": "object",
        "required": ["event_id"],
        "properties": {"event_id": {"type": "string"}},
    },
}


def build_spec(routes: InstalledRoutes, version: str = "0.1.0") -> J:
    """The whole document: the paths and schemas of every installed route table."""
    paths = routes.openapi_paths()
    schemas = routes.schemas()
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "berrylive API",
            "version": version,
            "description": (
                "Control plane and package APIs of berrylive. Authenticate with "
                "`Authorization: Bearer <token>` (POST /api/auth/login, or an API token). "
                "Errors: `{error: {code, message}}`. Lists: `limit`/`offset`. Each operation "
                "lists the roles it accepts in `x-roles`."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
