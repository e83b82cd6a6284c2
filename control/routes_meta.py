"""The API document and its reference page, ``/metrics`` and the console's entry points.

Handlers and their part of control's route table (:data:`OPS`).
"""

from __future__ import annotations

import logging

from aiohttp import web

from control.auth import PUBLIC
from control.context import CONSOLE_DIR, control_of
from core.http import ApiError
from core.routes import Op, OpDoc

logger = logging.getLogger(__name__)

# -- docs ----------------------------------------------------------------------------


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(control_of(request).spec)


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=(CONSOLE_DIR / "docs.html").read_text(), content_type="text/html")


# -- metrics and console ------------------------------------------------------------


async def _metrics(request: web.Request) -> web.Response:
    m = control_of(request).metrics
    if m is None:
        raise ApiError(503, "starting", "the control plane is starting")
    return await m.handle(request)


async def _console_redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console/")


async def _console_index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(CONSOLE_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# -- routes ------------------------------------------------------------------------

OPS: list[Op] = [
    Op(
        "GET",
        "/api/openapi.json",
        openapi_json,
        OpDoc(
            "This document",
            "meta",
            (PUBLIC,),
            response_media={"application/json": {"schema": {"type": "object"}}},
        ),
    ),
    Op(
        "GET",
        "/api/docs",
        docs_page,
        OpDoc(
            "The API reference page (renders this document)",
            "meta",
            (PUBLIC,),
            response_media={"text/html": {"schema": {"type": "string"}}},
        ),
    ),
    Op("GET", "/metrics", _metrics, OpDoc("Prometheus metrics", "meta", (PUBLIC,)), head=True),
    Op(
        "GET",
        "/console",
        _console_redirect,
        OpDoc("To the console", "console", (PUBLIC,)),
        head=True,
    ),
    Op(
        "GET",
        "/console/",
        _console_index,
        OpDoc("The operator console (its API calls need a token)", "console", (PUBLIC,)),
        head=True,
    ),
]
