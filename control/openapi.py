"""The OpenAPI 3.0 document of ``/api/``: every installed route table, merged.

Each package declares its routes, roles and operation docs in one
:class:`core.routes.RouteTable`; :func:`build_spec` merges the tables installed on the
app (their ``openapi_paths()`` and ``schemas``), so the spec and the router cannot
disagree. This module also holds control's own schemas (:data:`SCHEMAS`).

COMPAT (issue 16): packages not yet converted to a route table still expose
``<package>/openapi.py`` with ``OPENAPI_PATHS`` (operations carrying ``x-roles``) and
``OPENAPI_COMPONENTS``; :func:`legacy_paths` reads them for packages that installed no
table, and :mod:`control.auth` enforces their ``x-roles`` by path. Remove both once
shop_bridge, relay and danmaku have route tables.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from core.routes import (
    ERROR_TEXT,
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
    "legacy_paths",
    "nullable",
    "operation",
    "query_param",
    "ref",
]

logger = logging.getLogger(__name__)

PACKAGES = ("ingest", "relay", "replay", "danmaku", "shop_bridge")

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
            "orders": {"type": "integer"},
            "gmv_fen": {"type": "integer"},
        },
    },
    "ReminderRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["subscriber"],
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
        },
    },
    "Webhook": {
        "type": "object",
        "required": ["id", "url", "events", "active", "secret", "created_at"],
        "properties": {
            "id": ID,
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "string"}},
            "active": {"type": "boolean"},
            "secret": {"type": "string"},
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

# -- COMPAT (issue 16): packages without a route table -------------------------------


def legacy_paths(skip: set[str]) -> tuple[J, J]:
    """``OPENAPI_PATHS`` and ``OPENAPI_COMPONENTS`` of the packages not in ``skip``."""
    paths: J = {}
    schemas: J = {}
    for pkg in PACKAGES:
        if pkg in skip:
            continue
        try:
            mod = importlib.import_module(f"{pkg}.openapi")
        except ModuleNotFoundError as exc:
            if exc.name not in (f"{pkg}.openapi", pkg):
                logger.warning("%s.openapi failed to import: %s", pkg, exc)
            continue
        except Exception as exc:
            logger.warning("%s.openapi failed to import: %s", pkg, exc)
            continue
        legacy = getattr(mod, "OPENAPI_PATHS", None)
        if not legacy:
            continue
        for path, item in dict(legacy).items():
            if path in paths:
                logger.warning("OpenAPI path %s declared twice; keeping the first", path)
                continue
            paths[path] = item
        schemas.update(dict(getattr(mod, "OPENAPI_COMPONENTS", {}) or {}))
    return with_auth_errors(paths), schemas


def with_auth_errors(paths: J) -> J:
    """Every non-public operation may answer 401/403 (the auth middleware), say so."""
    out: J = {}
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        new_item: J = {}
        for method, op in item.items():
            if not isinstance(op, dict) or method.startswith("x-") or method == "parameters":
                new_item[method] = op
                continue
            roles = op.get("x-roles") or ["operator"]
            op = {**op, "x-roles": roles}
            if "public" not in roles:
                responses = dict(op.get("responses") or {})
                for status in (401, 403):
                    responses.setdefault(
                        str(status),
                        {
                            "description": ERROR_TEXT[status],
                            "content": {"application/json": {"schema": ref("Error")}},
                        },
                    )
                op["responses"] = responses
                op.setdefault("security", [{"bearer": []}])
            new_item[method] = op
        out[path] = new_item
    return out


# -- end of COMPAT --------------------------------------------------------------------


def build_spec(routes: InstalledRoutes, version: str = "0.1.0") -> J:
    """The whole document: the installed tables (and, COMPAT, legacy package fragments)."""
    old_paths, old_schemas = legacy_paths({t.package for t in routes.tables})
    paths = {**old_paths, **routes.openapi_paths()}  # a table wins over a legacy fragment
    schemas = {**old_schemas, **routes.schemas()}
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
