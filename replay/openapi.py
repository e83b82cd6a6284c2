"""Schemas of the replay API (``components.schemas`` of ``/api/openapi.json``).

The operations, with their roles, are declared in the route table of :mod:`replay.api`.
"""

from __future__ import annotations

from typing import Any

J = dict[str, Any]


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: J) -> J:
    return {**schema, "nullable": True}


_URL: J = {"type": "string"}
_ERR: J = {"content": {"application/json": {"schema": _ref("Error")}}}

SCHEMAS: J = {
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
            "paused": _nullable(
                {"type": "string", "description": "why recording is paused (disk: no room)"}
            ),
        },
    },
}
