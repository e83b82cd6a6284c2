"""The API document and its reference page, ``/metrics`` and the console's entry points.

Handlers and their part of control's route table (:data:`OPS`).
"""

from __future__ import annotations

import hmac
import ipaddress
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


def _metrics_allowed(request: web.Request) -> bool:
    """The token, or a client address in ``metrics_allow`` (figures like GMV and stream
    names are not public)."""
    settings = control_of(request).settings
    header = request.headers.get("Authorization", "")
    if settings.metrics_token and header[:7].lower() == "bearer ":
        given = header[7:].strip().encode("utf-8", "replace")
        if hmac.compare_digest(given, settings.metrics_token.encode()):
            return True
    try:
        peer = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    for net in settings.metrics_allow:
        try:
            if peer in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            logger.warning("control.metrics_allow: %r is not a network; ignored", net)
    return False


async def _metrics(request: web.Request) -> web.Response:
    if not _metrics_allowed(request):
        if control_of(request).settings.metrics_token:
            err = ApiError(401, "unauthorized", "send Authorization: Bearer <metrics_token>")
            err.headers["WWW-Authenticate"] = 'Bearer realm="berrylive-metrics"'
            raise err
        raise ApiError(403, "forbidden", "this address may not read the metrics")
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
    Op(
        "GET",
        "/metrics",
        _metrics,
        OpDoc("Prometheus metrics (metrics_token or metrics_allow)", "meta", (PUBLIC,)),
        head=True,
    ),
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
