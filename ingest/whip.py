"""WHIP ingest (RFC 9725): ``POST /whip/APP/STREAM`` with an SDP offer publishes a stream.

* ``POST /whip/APP/STREAM`` (``Content-Type: application/sdp``, ``Authorization: Bearer
  TOKEN``): ``201 Created`` with the SDP answer, ``Location: /whip/APP/STREAM/ID`` (the
  session resource), ``ETag``, and one ``Link: <URL>; rel="ice-server"`` per configured
  STUN/TURN server (``webrtc.ice_servers``). The token is the stream's signed, expiring
  push credential, the very one of its RTMP push URL: the query string of that URL
  (``expire=...&sign=...`` with ``nbf``/``kv`` when present, or a Tencent
  ``txSecret=...&txTime=...``), as ``berrylive push-url`` and
  ``GET /api/broadcasts/{id}/push`` print it. A client that can't send a header may put
  the same query on the URL instead. Verified exactly as an RTMP publish
  (:func:`ingest.auth.verify`, the stream's key version, then the ``on_publish`` hook).
* ``DELETE /whip/APP/STREAM/ID``: the publisher stops (``stream.unpublished`` with
  ``unpublished``). The ID is 128 random bits: knowing the resource URL is the capability,
  as RFC 9725 has it.
* ``PATCH`` (trickle ICE / ICE restart): ``405`` (allowed by the RFC; every candidate of
  ours is in the answer).
* ``OPTIONS`` on both: CORS preflight (any origin; ``Authorization`` and ``Content-Type``
  allowed; ``Location``, ``Link`` and ``ETag`` exposed), ``Accept-Post: application/sdp``.

Errors: ``401`` missing/bad/expired token (``WWW-Authenticate: Bearer``), ``400`` invalid
name or an SDP that can't be answered, ``406`` no H.264/Opus offered, ``403`` refused by
the ``on_publish`` hook or an edge node, ``413`` offer too large, ``415`` not
``application/sdp``, ``503`` WebRTC off or too many sessions, or the key version
unreadable (retry). A valid publisher that connects takes the stream over from whoever
has it (RTMP or WHIP), as a new RTMP publisher does; see :mod:`ingest.whip_session`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from core.bus import EventBus
from core.http import error_response
from core.routes import Op, OpDoc, RouteTable
from core.rtc import RTC_ENDPOINT, RtcEndpoint, RtcOfferError, WebRtcConfig
from ingest.config import IngestConfig
from ingest.hooks import Hooks
from ingest.rtmp_server import NAME_RE, authorize_publish
from ingest.whip_session import WhipPublish
from relay.hub import StreamRegistry

__all__ = ["ROUTES", "WHIP_SERVER", "WhipServer", "whip_token", "whip_url"]

logger = logging.getLogger(__name__)

MAX_OFFER_BYTES = 64 * 1024
"""Largest SDP offer accepted (browsers send 5-10 KiB)."""

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Post, Accept-Patch",
}


def whip_url(http_base: str, app: str, stream: str) -> str:
    """The WHIP endpoint URL of APP/STREAM, ``http_base`` like ``http://host:8080``."""
    return f"{http_base.rstrip('/')}/whip/{app}/{stream}"


def whip_token(push_url: str) -> str:
    """The WHIP bearer token of a signed RTMP push URL: its query string."""
    return push_url.partition("?")[2]


class WhipServer:
    """The WHIP sessions of this node and what verifying a publish needs."""

    def __init__(
        self,
        config: IngestConfig,
        registry: StreamRegistry,
        bus: EventBus,
        secret: str,
        node: str,
        *,
        endpoint: RtcEndpoint | None,
        rtc_config: WebRtcConfig | None,
        hooks: Hooks,
        key_version: Callable[[str, str], Awaitable[str | None]],
        banned: Callable[[str, str], Awaitable[str | None]] | None = None,
        role: str = "origin",
        bitrate_hint: int = 8_000_000,
    ) -> None:
        self.config = config
        self.registry = registry
        self.bus = bus
        self.secret = secret
        self.node = node
        self.endpoint = endpoint
        self.rtc_config = rtc_config
        self.hooks = hooks
        self.key_version = key_version
        self.banned = banned
        self.role = role
        self.bitrate_hint = bitrate_hint
        """Bits/s announced to browsers in REMB (lets them leave their start rate)."""
        self.sessions: dict[str, WhipPublish] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closing = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, publish: WhipPublish) -> None:
        if self.sessions.get(publish.id) is publish:
            del self.sessions[publish.id]

    def hook_payload(self, publish: WhipPublish, query: str) -> dict[str, Any]:
        return {
            "client_id": f"{self.node}-whip-{publish.id[:8]}",
            "ip": publish.client_ip,
            "vhost": "__defaultVhost__",
            "app": publish.app,
            "stream": publish.stream,
            "param": f"?{query}" if query else "",
            "tcUrl": "",
            "server_id": self.node,
            "protocol": "whip",
        }

    async def close(self) -> None:
        self.closing = True
        publishes = list(self.sessions.values())
        for p in publishes:
            p.close("server shutting down")
        tasks = [p.task for p in publishes if p.task is not None and not p.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)


WHIP_SERVER: web.AppKey[WhipServer] = web.AppKey("ingest.whip_server", WhipServer)


# ---------------------------------------------------------------------- handlers


def _fail(status: int, code: str, message: str, **headers: str) -> web.Response:
    resp = error_response(status, code, message)
    resp.headers.update(CORS_HEADERS)
    resp.headers.update(headers)
    return resp


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip().lstrip("?")
    return None


def _client_ip(request: web.Request) -> str:
    """The publisher's address (behind a trusted proxy, the one it reports)."""
    return request.remote or ""


async def post_whip(request: web.Request) -> web.Response:
    srv = request.app.get(WHIP_SERVER)
    app_name, stream = request.match_info["app"], request.match_info["stream"]
    if srv is None or srv.closing:
        return _fail(503, "unavailable", "WHIP is not running on this node")
    if not NAME_RE.match(app_name) or not NAME_RE.match(stream):
        return _fail(400, "invalid_name", f"invalid app or stream name {app_name}/{stream}")
    if srv.role != "origin":
        return _fail(403, "edge", "this node is an edge: publish to an origin")
    token = _bearer(request)
    query = token if token is not None else request.query_string
    banned = await srv.banned(app_name, stream) if srv.banned is not None else None
    if banned is not None:
        logger.warning(
            "whip (%s): publish %s/%s refused: %s", _client_ip(request), app_name, stream, banned
        )
        return _fail(403, "banned", f"publish refused: {banned}")
    if srv.config.require_auth and not query:
        return _fail(
            401,
            "unauthorized",
            "a push token is required: Authorization: Bearer <token>",
            **{"WWW-Authenticate": 'Bearer realm="whip"'},
        )
    refusal = await authorize_publish(
        srv.config, srv.secret, srv.key_version, app_name, stream, query
    )
    if refusal is not None and refusal.retry:
        return _fail(
            503,
            "retry",
            f"publish refused: {refusal.reason}; retry shortly",
            **{"Retry-After": "2"},
        )
    if refusal is not None:
        logger.warning(
            "whip (%s): publish %s/%s refused: %s",
            _client_ip(request),
            app_name,
            stream,
            refusal.reason,
        )
        return _fail(
            401,
            "unauthorized",
            f"publish refused: {refusal.reason}",
            **{"WWW-Authenticate": 'Bearer realm="whip", error="invalid_token"'},
        )
    ctype = request.content_type
    if ctype != "application/sdp":
        return _fail(415, "unsupported_media_type", "the offer must be application/sdp")
    if request.content_length is not None and request.content_length > MAX_OFFER_BYTES:
        return _fail(413, "too_large", f"SDP offer over {MAX_OFFER_BYTES} bytes")
    body = await request.content.read(MAX_OFFER_BYTES + 1)
    if len(body) > MAX_OFFER_BYTES:
        return _fail(413, "too_large", f"SDP offer over {MAX_OFFER_BYTES} bytes")
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        return _fail(400, "bad_sdp", "the SDP offer is not UTF-8 text")
    if srv.endpoint is None:
        return _fail(503, "unavailable", "WebRTC is disabled on this node")
    try:
        rtc = srv.endpoint.open_session(
            offer, direction="recvonly", video_codecs=("H264",), audio_codecs=("opus",)
        )
    except RtcOfferError as exc:
        code = {400: "bad_sdp", 406: "no_codec", 415: "no_codec", 503: "unavailable"}
        extra = {"Retry-After": "5"} if exc.status == 503 else {}
        return _fail(exc.status, code.get(exc.status, "refused"), exc.reason, **extra)
    resource = secrets.token_urlsafe(16)
    publish = WhipPublish(
        srv,
        rtc,
        app_name,
        stream,
        resource_id=resource,
        client_ip=_client_ip(request),
        query=query,
    )
    ok, reason = await srv.hooks.call("on_publish", srv.hook_payload(publish, query))
    if not ok:
        rtc.close("closed")
        logger.warning("whip: publish %s/%s refused by on_publish: %s", app_name, stream, reason)
        return _fail(403, "forbidden", f"publish refused: {reason}")
    if rtc.state in ("closed", "failed"):
        return _fail(503, "unavailable", "the WebRTC session ended before it was answered")
    srv.sessions[resource] = publish
    publish.start()
    answer = rtc.answer_sdp
    location = f"/whip/{app_name}/{stream}/{resource}"
    resp = web.Response(status=201, text=answer, content_type="application/sdp")
    resp.headers.update(CORS_HEADERS)
    resp.headers["Location"] = location
    resp.headers["ETag"] = '"' + hashlib.sha256(answer.encode()).hexdigest()[:16] + '"'
    resp.headers["Cache-Control"] = "no-store"
    for link in srv.endpoint.link_headers():
        resp.headers.add("Link", link)
    logger.info(
        "whip %s (%s): offer for %s/%s answered (video %s, audio %s)",
        resource,
        publish.client_ip,
        app_name,
        stream,
        rtc.video.codec if rtc.video else "-",
        rtc.audio.codec if rtc.audio else "-",
    )
    return resp


def _session_of(request: web.Request) -> WhipPublish | None:
    srv = request.app.get(WHIP_SERVER)
    if srv is None:
        return None
    publish = srv.sessions.get(request.match_info["session"])
    if publish is None:
        return None
    if (publish.app, publish.stream) != (request.match_info["app"], request.match_info["stream"]):
        return None
    return publish


async def delete_whip(request: web.Request) -> web.Response:
    publish = _session_of(request)
    if publish is None:
        return _fail(404, "not_found", "no such WHIP session")
    publish.close("unpublished")
    if publish.task is not None:
        await asyncio.wait([publish.task], timeout=5)
    # (ffmpeg 9's whip muxer logs "Failed to read response from DELETE" whatever the
    # answer: it reads before the response head; the session is ended all the same)
    resp = web.Response(status=200)
    resp.headers.update(CORS_HEADERS)
    return resp


async def patch_whip(request: web.Request) -> web.Response:
    return _fail(
        405,
        "method_not_allowed",
        "trickle ICE and ICE restarts are not supported: every candidate is in the answer",
        Allow="DELETE, OPTIONS",
    )


def _preflight(methods: str) -> web.Response:
    resp = web.Response(status=204)
    resp.headers.update(CORS_HEADERS)
    resp.headers["Access-Control-Allow-Methods"] = methods
    resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, If-Match"
    resp.headers["Access-Control-Max-Age"] = "86400"
    resp.headers["Allow"] = methods
    return resp


async def options_whip(request: web.Request) -> web.Response:
    resp = _preflight("POST, OPTIONS")
    resp.headers["Accept-Post"] = "application/sdp"
    return resp


async def options_session(request: web.Request) -> web.Response:
    return _preflight("DELETE, PATCH, OPTIONS")


async def stats_handler(request: web.Request) -> web.Response:
    """Operators: this node's WHIP sessions and their figures (connection state, frames,
    keyframes, depacketizer counters, NACK/PLI/RTX, sender reports)."""
    srv = request.app.get(WHIP_SERVER)
    sessions = [] if srv is None else [p.describe() for p in srv.sessions.values()]
    return web.json_response({"sessions": sessions})


# ---------------------------------------------------------------------- routes

_SEG = r"[A-Za-z0-9_.\-]+"
_BASE = rf"/whip/{{app:{_SEG}}}/{{stream:{_SEG}}}"
_RESOURCE = _BASE + r"/{session:[A-Za-z0-9_\-]{8,64}}"
_PUBLIC = ("public",)

ROUTES = RouteTable(
    "ingest",
    [
        Op(
            "POST",
            _BASE,
            post_whip,
            OpDoc("WHIP: publish with an SDP offer (Bearer push token)", "ingest", _PUBLIC),
        ),
        Op("OPTIONS", _BASE, options_whip, OpDoc("WHIP: CORS preflight", "ingest", _PUBLIC)),
        Op(
            "DELETE",
            _RESOURCE,
            delete_whip,
            OpDoc("WHIP: end the publishing session", "ingest", _PUBLIC),
        ),
        Op(
            "PATCH",
            _RESOURCE,
            patch_whip,
            OpDoc("WHIP: trickle ICE (not supported: 405)", "ingest", _PUBLIC),
        ),
        Op(
            "OPTIONS",
            _RESOURCE,
            options_session,
            OpDoc("WHIP session: CORS preflight", "ingest", _PUBLIC),
        ),
        Op(
            "GET",
            "/api/whip",
            stats_handler,
            OpDoc(
                "WHIP publishers on this node and their figures",
                "ingest",
                ("operator",),
                operation_id="ingest_whip",
                response_media={"application/json": {"schema": {"type": "object"}}},
            ),
            head=True,
        ),
    ],
)


def endpoint_of(app: web.Application) -> RtcEndpoint | None:
    return app.get(RTC_ENDPOINT)
