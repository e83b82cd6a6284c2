"""Schemas of the danmaku REST API (``components.schemas``); the operations, their roles
and docs are declared with the routes in :data:`danmaku.api.ROUTES`."""

from __future__ import annotations

from typing import Any

__all__ = ["SCHEMAS"]

J = dict[str, Any]

_PRIZE: J = {
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

_LOTTERY: J = {
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

_ACTOR: J = {
    "type": "string",
    "description": "who acts, for the audit log, when no signed-in principal is known",
    "maxLength": 64,
}

_LOTTERY_CREATE: J = {
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

_MODERATION: J = {
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
            "description": "mute/ban length (0 or absent = forever); slow_mode interval (0 = off)",
        },
        "reason": {"type": "string"},
        "actor": _ACTOR,
    },
}

_NOTICE: J = {
    "type": "object",
    "required": ["room", "text"],
    "properties": {
        "room": {"type": "string"},
        "text": {"type": "string", "maxLength": 500},
        "actor": _ACTOR,
    },
}

_ACTOR_ONLY: J = {"type": "object", "properties": {"actor": _ACTOR}}

SCHEMAS: J = {
    "DanmakuLottery": _LOTTERY,
    "DanmakuPrize": _PRIZE,
    "DanmakuLotteryCreate": _LOTTERY_CREATE,
    "DanmakuModeration": _MODERATION,
    "DanmakuNotice": _NOTICE,
    "DanmakuActor": _ACTOR_ONLY,
}
