"""OpenAPI 3.0 fragment of the danmaku REST API, merged by the control plane.

``x-roles`` on each operation is what the control plane's auth middleware enforces. The
acting staff member recorded in the audit log is the signed-in principal.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI_COMPONENTS", "OPENAPI_PATHS"]

_ERROR = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                        "required": ["code", "message"],
                    }
                },
            }
        }
    },
}

_PRIZE: dict[str, Any] = {
    "type": "object",
    "required": ["name", "stock"],
    "properties": {
        "name": {"type": "string"},
        "stock": {"type": "integer", "minimum": 1, "maximum": 100000},
        "sku": {"type": "string", "description": "passed through to lottery.prize"},
        "coupon": {"type": "string", "description": "passed through to lottery.prize"},
    },
    "additionalProperties": True,
}

_LOTTERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "lottery_id": {"type": "string"},
        "room": {"type": "string"},
        "title": {"type": "string"},
        "prizes": {"type": "array", "items": _PRIZE},
        "entry": {"enum": ["keyword", "button"]},
        "keyword": {"type": "string"},
        "mode": {"enum": ["timed", "instant"]},
        "probability": {"type": "number"},
        "window_end": {"type": "number", "description": "Unix seconds"},
        "commitment": {"type": "string", "description": "sha256(seed), hex"},
        "state": {"enum": ["open", "closed", "drawn", "cancelled"]},
        "entrants_hash": {"type": "string", "nullable": True},
        "entrant_count": {"type": "integer"},
        "remaining": {"type": "integer"},
        "seed": {"type": "string", "description": "revealed once drawn"},
        "winners": {"type": "array", "items": {"type": "object"}},
        "entrants": {"type": "array", "items": {"type": "string"}},
        "entry_order": {"type": "array", "items": {"type": "string"}},
    },
}

OPENAPI_COMPONENTS = {"DanmakuLottery": _LOTTERY, "DanmakuPrize": _PRIZE}

_ACTOR = {
    "type": "string",
    "description": "who acts, for the audit log, when no signed-in principal is known",
    "maxLength": 64,
}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _ERROR for c in codes}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], desc: str = "ok") -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


_ID_PARAM = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

OPENAPI_PATHS: dict[str, Any] = {
    "/api/danmaku/lotteries": {
        "post": {
            "tags": ["danmaku"],
            "summary": "Create and open a lottery in a room",
            "x-roles": ["operator"],
            "requestBody": _json_body(
                {
                    "type": "object",
                    "required": ["room", "prizes"],
                    "properties": {
                        "room": {"type": "string", "example": "live/shop1"},
                        "title": {"type": "string"},
                        "prizes": {"type": "array", "items": _PRIZE, "maxItems": 20},
                        "entry": {"enum": ["keyword", "button"], "default": "keyword"},
                        "keyword": {"type": "string", "maxLength": 50},
                        "window_s": {"type": "number", "default": 60},
                        "mode": {"enum": ["timed", "instant"], "default": "timed"},
                        "probability": {
                            "type": "number",
                            "description": "instant mode: chance an entry wins",
                        },
                        "actor": _ACTOR,
                    },
                }
            ),
            "responses": {"201": _ok(_LOTTERY, "created"), **_errors(400, 401, 403, 413, 503)},
        }
    },
    "/api/danmaku/lotteries/{id}": {
        "get": {
            "tags": ["danmaku"],
            "summary": "Lottery state; after the draw, the seed and (entrants=1) the audit data",
            "x-roles": ["public"],
            "parameters": [
                *_ID_PARAM,
                {"name": "entrants", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": _ok(_LOTTERY), **_errors(400, 404, 503)},
        }
    },
    "/api/danmaku/lotteries/{id}/draw": {
        "post": {
            "tags": ["danmaku"],
            "summary": "Close the window now and draw (idempotent)",
            "x-roles": ["operator"],
            "parameters": _ID_PARAM,
            "responses": {
                "200": _ok(_LOTTERY),
                **_errors(400, 401, 403, 404, 409, 413, 503),
            },
        }
    },
    "/api/danmaku/lotteries/{id}/cancel": {
        "post": {
            "tags": ["danmaku"],
            "summary": "Cancel an open or closed lottery",
            "x-roles": ["operator"],
            "parameters": _ID_PARAM,
            "responses": {
                "200": _ok(_LOTTERY),
                **_errors(400, 401, 403, 404, 409, 413, 503),
            },
        }
    },
    "/api/danmaku/moderation": {
        "post": {
            "tags": ["danmaku"],
            "summary": "Mute/unmute, ban/unban, delete a comment, slow mode, room mute",
            "x-roles": ["operator", "moderator"],
            "requestBody": _json_body(
                {
                    "type": "object",
                    "required": ["room", "action"],
                    "properties": {
                        "room": {"type": "string"},
                        "action": {
                            "enum": [
                                "mute",
                                "unmute",
                                "ban",
                                "unban",
                                "delete",
                                "slow_mode",
                                "room_mute",
                                "room_unmute",
                            ]
                        },
                        "user_id": {"type": "string"},
                        "comment_id": {"type": "string"},
                        "duration_s": {
                            "type": "number",
                            "description": "mute/ban length (0 or absent = forever); "
                            "slow_mode interval (0 = off)",
                        },
                        "reason": {"type": "string"},
                        "actor": _ACTOR,
                    },
                }
            ),
            "responses": {
                "200": _ok({"type": "object"}),
                **_errors(400, 401, 403, 413, 503),
            },
        }
    },
    "/api/danmaku/notices": {
        "post": {
            "tags": ["danmaku"],
            "summary": "Post an operator announcement to a room",
            "x-roles": ["operator", "moderator"],
            "requestBody": _json_body(
                {
                    "type": "object",
                    "required": ["room", "text"],
                    "properties": {
                        "room": {"type": "string"},
                        "text": {"type": "string", "maxLength": 500},
                        "actor": _ACTOR,
                    },
                }
            ),
            "responses": {"200": _ok({"type": "object"}), **_errors(400, 401, 403, 413, 503)},
        }
    },
    "/api/danmaku/audit": {
        "get": {
            "tags": ["danmaku"],
            "summary": "Audit log of moderation and lottery actions, newest first",
            "x-roles": ["operator", "moderator"],
            "parameters": [
                {"name": "room", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100}},
            ],
            "responses": {"200": _ok({"type": "object"}), **_errors(400, 401, 403, 503)},
        }
    },
    "/api/danmaku/stats": {
        "get": {
            "tags": ["danmaku"],
            "summary": "Hub counters: comments, batches, sampling, Redis losses and recovery",
            "x-roles": ["operator"],
            "responses": {"200": _ok({"type": "object"}), **_errors(401, 403, 503)},
        }
    },
}
