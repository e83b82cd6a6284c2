"""OpenAPI fragment of the replay API (merged by ``control.openapi``; ``x-roles`` enforced
by the control plane's auth middleware)."""

from __future__ import annotations

from typing import Any

J = dict[str, Any]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: J) -> J:
    return {**schema, "nullable": True}


_URL: J = {"type": "string"}
_ERR: J = {"content": {"application/json": {"schema": _ref("Error")}}}

OPENAPI_COMPONENTS: J = {
    "ReplayClip": {
        "type": "object",
        "required": ["card_id", "product_id", "start", "duration", "url"],
        "properties": {
            "card_id": _nullable({"type": "integer"}),
            "product_id": _nullable({"type": "integer"}),
            "start": {"type": "number", "description": "seconds into the replay (a keyframe)"},
            "duration": {"type": "number"},
            "url": _nullable(_URL),
            "replay_id": {"type": "string"},
            "broadcast_id": _nullable({"type": "integer"}),
        },
    },
    "Replay": {
        "type": "object",
        "required": [
            "id",
            "app",
            "stream",
            "broadcast_id",
            "state",
            "created",
            "ended",
            "duration",
            "size",
            "codecs",
            "parts",
            "hls",
            "mp4",
            "cover",
            "thumbnails",
            "clips",
            "error",
        ],
        "properties": {
            "id": {"type": "string"},
            "app": {"type": "string"},
            "stream": {"type": "string"},
            "broadcast_id": _nullable({"type": "integer"}),
            "state": {"type": "string", "enum": ["recording", "finalizing", "ready", "failed"]},
            "created": {"type": "number", "description": "Unix time"},
            "ended": _nullable({"type": "number"}),
            "duration": {"type": "number", "description": "seconds"},
            "size": {"type": "integer", "description": "bytes on storage"},
            "codecs": {"type": "object"},
            "parts": {
                "type": "integer",
                "description": "recorded parts (one more per reconnect, ffmpeg restart or "
                "codec change; HLS discontinuities between them)",
            },
            "hls": _nullable(
                {**_URL, "description": "live playlist while recording, then the VOD playlist"}
            ),
            "mp4": _nullable(_URL),
            "cover": _nullable(_URL),
            "thumbnails": _nullable({**_URL, "description": "WebVTT of sprite tiles"}),
            "clips": {"type": "array", "items": _ref("ReplayClip")},
            "error": _nullable({"type": "string"}),
        },
    },
}


def _q(name: str, schema: J, description: str) -> J:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_ID_PARAM: J = {
    "name": "replay_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_BID: J = {"type": "integer", "minimum": 1, "maximum": 2**53}

OPENAPI_PATHS: J = {
    "/api/replays": {
        "get": {
            "operationId": "replay_list",
            "summary": "Replays, newest first (per broadcast, stream or state)",
            "tags": ["replay"],
            "x-roles": ["public"],
            "parameters": [
                _q("broadcast_id", _BID, "only this broadcast's replays"),
                _q("app", {"type": "string"}, "only this app"),
                _q("stream", {"type": "string"}, "only this stream"),
                _q(
                    "state",
                    {"type": "string", "enum": ["recording", "finalizing", "ready", "failed"]},
                    "only replays in this state",
                ),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "page size"),
                _q("offset", {"type": "integer", "minimum": 0, "maximum": 2**31}, "skip"),
            ],
            "responses": {
                "200": {
                    "description": "a page of replays",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["items", "total", "limit", "offset"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("Replay")},
                                    "total": {"type": "integer"},
                                    "limit": {"type": "integer"},
                                    "offset": {"type": "integer"},
                                },
                            }
                        }
                    },
                },
                "400": {"description": "bad query", **_ERR},
            },
        }
    },
    "/api/replays/clips": {
        "get": {
            "operationId": "replay_clips",
            "summary": "Product clips cut from finished replays (讲解回放)",
            "tags": ["replay"],
            "x-roles": ["public"],
            "parameters": [
                _q("product_id", _BID, "only this product's clips"),
                _q("broadcast_id", _BID, "only this broadcast's clips"),
                _q("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "at most"),
            ],
            "responses": {
                "200": {
                    "description": "clips",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["items", "total"],
                                "properties": {
                                    "items": {"type": "array", "items": _ref("ReplayClip")},
                                    "total": {"type": "integer"},
                                },
                            }
                        }
                    },
                },
                "400": {"description": "bad query", **_ERR},
            },
        }
    },
    "/api/replays/{replay_id}": {
        "get": {
            "operationId": "replay_get",
            "summary": "One replay with its URLs (HLS, MP4, cover, thumbnails, clips)",
            "tags": ["replay"],
            "x-roles": ["public"],
            "parameters": [_ID_PARAM],
            "responses": {
                "200": {
                    "description": "the replay",
                    "content": {"application/json": {"schema": _ref("Replay")}},
                },
                "404": {"description": "no such replay", **_ERR},
            },
        },
        "delete": {
            "operationId": "replay_delete",
            "summary": "Delete a finished replay and its files",
            "tags": ["replay"],
            "x-roles": ["operator"],
            "parameters": [_ID_PARAM],
            "responses": {
                "204": {"description": "deleted"},
                "404": {"description": "no such replay", **_ERR},
                "409": {"description": "still recording or finalising", **_ERR},
            },
        },
    },
}
