"""Schemas of the relay API (``components.schemas`` of ``/api/openapi.json``).

The operations, with their roles, are declared in the route table of :mod:`relay.routes`.
See ``docs/cluster.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NAME_SCHEMA", "SCHEMAS"]

J = dict[str, Any]

NAME_SCHEMA: J = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,128}$"}
"""An app or stream name in a path."""


def _ref(name: str) -> J:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(key: str, item: J) -> J:
    return {
        "type": "object",
        "properties": {key: {"type": "array", "items": item}, "total": {"type": "integer"}},
        "required": [key, "total"],
    }


_COUNTS: J = {"type": "object", "additionalProperties": {"type": "integer"}}
_URLS: J = {
    "type": "array",
    "maxItems": 8,
    "items": {"type": "string", "pattern": "^rtmp://", "maxLength": 2048},
    "description": "RTMP destinations; ``{stream}`` is replaced by the stream name",
}

SCHEMAS: J = {
    "RelayStream": {
        "type": "object",
        "description": "A stream's live figures on this node",
        "properties": {
            "app": {"type": "string"},
            "name": {"type": "string"},
            "live": {"type": "boolean"},
            "video": {"type": "object", "nullable": True, "additionalProperties": True},
            "audio": {"type": "object", "nullable": True, "additionalProperties": True},
            "fps": {"type": "number"},
            "bitrate_in": {"type": "integer", "description": "bits/s"},
            "bitrate_out": {"type": "integer", "description": "bits/s"},
            "bytes_in": {"type": "integer"},
            "bytes_out": {**_COUNTS, "description": "bytes sent, per protocol"},
            "viewers": {**_COUNTS, "description": "viewers per protocol"},
            "viewers_total": {"type": "integer"},
            "consumers": {**_COUNTS, "description": "internal consumers (the recorder)"},
            "uptime": {"type": "number"},
            "publisher": {
                "type": "object",
                "nullable": True,
                "properties": {
                    "protocol": {"type": "string"},
                    "remote": {"type": "string"},
                    "since": {"type": "number"},
                },
            },
            "gop_frames": {"type": "integer"},
            "gop_bytes": {"type": "integer"},
        },
        "required": ["app", "name", "live", "viewers", "viewers_total"],
    },
    "RelayStreamList": _list("streams", _ref("RelayStream")),
    "RelayNode": {
        "type": "object",
        "properties": {
            "node": {"type": "string"},
            "role": {"type": "string", "enum": ["origin", "edge"]},
            "http": {"type": "string"},
            "rtmp": {"type": "string"},
            "ts": {"type": "number"},
            "viewers": {"type": "integer"},
            "bandwidth_out": {"type": "integer", "description": "bits/s"},
            "cpu": {"type": "number", "description": "percent of one core"},
            "streams": {"type": "integer"},
        },
        "required": ["node", "role", "http", "rtmp", "viewers"],
    },
    "RelayNodeList": _list("nodes", _ref("RelayNode")),
    "RelayClusterStream": {
        "type": "object",
        "properties": {
            "app": {"type": "string"},
            "name": {"type": "string"},
            "live": {"type": "boolean"},
            "origins": {"type": "array", "items": {"type": "string"}},
            "edges": {"type": "array", "items": {"type": "string"}},
            "viewers_total": {"type": "integer"},
            "viewers": _COUNTS,
            "bitrate_in": {"type": "integer"},
        },
        "required": ["app", "name", "live", "viewers_total"],
    },
    "RelayClusterStreamList": _list("streams", _ref("RelayClusterStream")),
    "RelayPlay": {
        "type": "object",
        "properties": {
            "url": {"type": "string"},
            "node": {"type": "string"},
            "role": {"type": "string"},
            "protocol": {"type": "string", "enum": ["flv", "ws", "rtmp", "hls", "whep"]},
            "app": {"type": "string"},
            "stream": {"type": "string"},
        },
        "required": ["url", "node", "protocol"],
    },
    "RelayForward": {
        "type": "object",
        "properties": {"app": {"type": "string"}, "stream": {"type": "string"}, "urls": _URLS},
        "required": ["app", "stream", "urls"],
    },
    "RelayForwardList": _list("forwards", _ref("RelayForward")),
    "RelayForwardPut": {
        "type": "object",
        "properties": {"urls": _URLS},
        "required": ["urls"],
    },
}
