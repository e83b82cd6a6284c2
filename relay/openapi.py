"""OpenAPI 3.0 fragment of the relay cluster routes, merged by the control plane.

``x-roles`` is what the control plane's auth middleware enforces (``/api/play`` also marks
its handler public). See ``docs/cluster.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI_COMPONENTS", "OPENAPI_PATHS"]

J = dict[str, Any]

_ERROR: J = {
    "description": "error",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        "required": ["code", "message"],
                    }
                },
                "required": ["error"],
            }
        }
    },
}


def _errors(*codes: int) -> J:
    return {str(c): _ERROR for c in codes}


def _ok(schema: J, description: str = "OK") -> J:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,128}$"}
_PATH = [
    {"name": "app", "in": "path", "required": True, "schema": _NAME},
    {"name": "stream", "in": "path", "required": True, "schema": _NAME},
]
_URLS: J = {
    "type": "array",
    "maxItems": 8,
    "items": {"type": "string", "pattern": "^rtmp://", "maxLength": 2048},
    "description": "RTMP destinations; ``{stream}`` is replaced by the stream name",
}
_FORWARD: J = {
    "type": "object",
    "properties": {"app": {"type": "string"}, "stream": {"type": "string"}, "urls": _URLS},
    "required": ["app", "stream", "urls"],
}
_NODE: J = {
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
}
_CLUSTER_STREAM: J = {
    "type": "object",
    "properties": {
        "app": {"type": "string"},
        "name": {"type": "string"},
        "live": {"type": "boolean"},
        "origins": {"type": "array", "items": {"type": "string"}},
        "edges": {"type": "array", "items": {"type": "string"}},
        "viewers_total": {"type": "integer"},
        "viewers": {"type": "object", "additionalProperties": {"type": "integer"}},
        "bitrate_in": {"type": "integer"},
    },
    "required": ["app", "name", "live", "viewers_total"],
}
_PLAY: J = {
    "type": "object",
    "properties": {
        "url": {"type": "string"},
        "node": {"type": "string"},
        "role": {"type": "string"},
        "protocol": {"type": "string", "enum": ["flv", "ws", "rtmp", "hls"]},
        "app": {"type": "string"},
        "stream": {"type": "string"},
    },
    "required": ["url", "node", "protocol"],
}


def _list(key: str, item: J) -> J:
    return {
        "type": "object",
        "properties": {key: {"type": "array", "items": item}, "total": {"type": "integer"}},
        "required": [key, "total"],
    }


OPENAPI_PATHS: J = {
    "/api/play/{app}/{stream}": {
        "get": {
            "tags": ["cluster"],
            "summary": "Where to play a stream: the least-loaded live edge (CDN scheduler)",
            "operationId": "relay_play",
            "x-roles": ["public"],
            "security": [],
            "parameters": [
                *_PATH,
                {
                    "name": "protocol",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["flv", "ws", "rtmp", "hls"]},
                },
                {
                    "name": "redirect",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["0", "1"]},
                    "description": "1: answer 302 to the URL",
                },
            ],
            "responses": {
                "200": _ok(_PLAY),
                "302": {"description": "redirect to the chosen node's URL (redirect=1)"},
                **_errors(400, 404, 503),
            },
        }
    },
    "/api/cluster/nodes": {
        "get": {
            "tags": ["cluster"],
            "summary": "Live nodes of the cluster with their load",
            "operationId": "relay_cluster_nodes",
            "x-roles": ["operator"],
            "responses": {"200": _ok(_list("nodes", _NODE))},
        }
    },
    "/api/cluster/streams": {
        "get": {
            "tags": ["cluster"],
            "summary": "Streams across the cluster, viewers summed per node",
            "operationId": "relay_cluster_streams",
            "x-roles": ["operator"],
            "responses": {"200": _ok(_list("streams", _CLUSTER_STREAM))},
        }
    },
    "/api/cluster/forwards": {
        "get": {
            "tags": ["cluster"],
            "summary": "Per-broadcast RTMP forwarding rules",
            "operationId": "relay_forwards",
            "x-roles": ["operator"],
            "responses": {"200": _ok(_list("forwards", _FORWARD))},
        }
    },
    "/api/cluster/forwards/{app}/{stream}": {
        "put": {
            "tags": ["cluster"],
            "summary": "Set the RTMP destinations of one broadcast (empty list removes them)",
            "operationId": "relay_forward_put",
            "x-roles": ["operator"],
            "parameters": _PATH,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {"urls": _URLS},
                            "required": ["urls"],
                        }
                    }
                },
            },
            "responses": {"200": _ok(_FORWARD), **_errors(400, 404, 413)},
        },
        "delete": {
            "tags": ["cluster"],
            "summary": "Remove the forwarding rules of one broadcast",
            "operationId": "relay_forward_delete",
            "x-roles": ["operator"],
            "parameters": _PATH,
            "responses": {"204": {"description": "removed"}, **_errors(404)},
        },
    },
}

OPENAPI_COMPONENTS: J = {}
