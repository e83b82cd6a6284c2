"""HTTP helpers shared by every package's REST API.

Errors have one shape: ``{"error": {"code": "...", "message": "..."}}`` with a 4xx/5xx.
Request bodies are read with a size cap and must be JSON objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

MAX_JSON_BODY = 256 * 1024


class ApiError(web.HTTPException):
    """Raise from a handler; rendered as the standard JSON error body."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.status_code = status
        body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
        super().__init__(text=json.dumps(body), content_type="application/json")


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def fail(status: int, code: str, message: str) -> NoReturn:
    raise ApiError(status, code, message)


_JSON_READ: web.RequestKey[tuple[int, dict[str, Any]]] = web.RequestKey("berrylive.json_body")


async def read_json(request: web.Request, max_size: int = MAX_JSON_BODY) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx ApiError with a clear reason.

    Read once per request (the auth check may read it before the handler); a later call
    gets a copy of the same object, its size checked against its own ``max_size``."""
    seen = request.get(_JSON_READ)
    if seen is not None:
        if seen[0] > max_size:
            fail(413, "body_too_large", f"request body over {max_size} bytes")
        return dict(seen[1])
    if request.content_length is not None:
        if request.content_length > max_size:
            fail(413, "body_too_large", f"request body over {max_size} bytes")
        raw = await request.read()  # the HTTP parser stops at Content-Length
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > max_size:
                fail(413, "body_too_large", f"request body over {max_size} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
    if not raw:
        fail(400, "empty_body", "a JSON object is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            fail(400, "bad_encoding", "body is not valid UTF-8")
        fail(400, "bad_json", f"body is not valid JSON: {exc.msg} at {exc.pos}")
    if not isinstance(data, dict):
        fail(400, "bad_json", "body must be a JSON object")
    request[_JSON_READ] = (len(raw), data)
    return dict(data)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's own 404/405/413 under ``/api/`` into the standard JSON shape."""
    try:
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        return error_response(exc.status, code, exc.reason)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling an ``/api/`` route, as the control plane's auth middleware found it.

    Packages below ``control`` read it with :func:`caller` instead of importing control.
    """

    user_id: int
    username: str
    role: str
    """``operator``, ``anchor`` or ``moderator``."""


CALLER: web.RequestKey[Caller | None] = web.RequestKey("berrylive.caller", Caller)


def caller(request: web.Request) -> Caller | None:
    """The signed-in caller, or None (public route called without a token)."""
    return request.get(CALLER)
