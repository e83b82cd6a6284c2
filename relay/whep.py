"""WHEP playback (draft-ietf-wish-whep): ``POST /whep/{app}/{stream}`` with an SDP offer.

The answer is ``201 Created`` with the SDP answer, ``Location`` (the session resource,
``/whep/{app}/{stream}/{id}``) and ``Link`` headers for the configured ICE servers.
``DELETE`` on the resource ends the viewing; ``PATCH`` (trickle ICE) is answered ``405``:
the server is ICE-lite and every candidate is in the answer. ``OPTIONS`` answers the CORS
preflight of browsers (``Access-Control-Expose-Headers: Location, Link``).

A viewer gets exactly the checks an HTTP-FLV viewer gets (:mod:`relay.http`): the stream
is found on this node or pulled from an origin (edges), the ``on_play`` hook is asked
(protocol ``whep``) and ``on_stop`` is called when the viewer leaves. Then:

* ``404``: no such live stream; ``403``: the play hook refused;
* ``415``: the body is not ``application/sdp``; ``413``: an offer over ``MAX_OFFER``;
* ``406``: the stream cannot be carried over WebRTC (HEVC/AV1 video, H.264 with
  B-frames; the text says which and why) and transcoding is off
  (``webrtc.transcode``) or this node's ``webrtc.max_transcodes`` streams are already
  transcoded, or the offer has no codec we can send;
* ``400``: an SDP that cannot be answered (the transport says why);
* ``503``: too many WebRTC sessions on this node, or WebRTC is off.

The media: :class:`relay.rtc_stream.RtpStreams` (packets built once per stream; a stream
that cannot pass through plays through one transcode per stream,
:mod:`relay.rtc_transcode`, the same answer as for passthrough); the
transport (ICE-lite, DTLS, SRTP on the node's one UDP port): :mod:`core.rtc`. A viewer
is attached to its stream once its session is connected, so the burst of the cached GOP
is not sent into a session that cannot carry it yet.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from core.client_address import remote_label
from core.rtc import RTC_ENDPOINT, RtcEndpoint, RtcOfferError, RtcSession
from relay.http import PLAY_GUARD, PLAY_STOP, REGISTRY, WAIT_READY
from relay.rtc_stream import NegotiatedTrack, RtcViewer, RtpStreams
from relay.rtc_transcode import TranscodeSettings

logger = logging.getLogger(__name__)

__all__ = ["WHEP", "WhepService", "setup"]

MAX_OFFER = 64 * 1024
"""Bytes an SDP offer may have (browsers send 4-8 KiB)."""
CONNECT_TIMEOUT = 15.0
"""Seconds a session may take to connect before the resource is dropped (the transport
has its own, usually shorter, deadline)."""
ALLOW_COLLECTION = "POST, OPTIONS"
ALLOW_RESOURCE = "DELETE, OPTIONS"
_HOOK_TASKS: set[asyncio.Task[None]] = set()


@dataclass
class WhepViewing:
    """One WHEP resource: a session and (once connected) its viewer."""

    id: str
    app: str
    stream: str
    session: RtcSession
    remote: str
    query: str
    viewer: RtcViewer | None = None
    task: asyncio.Task[None] | None = None
    ended: bool = False
    created: float = field(default=0.0)
    reserved: str | None = None
    """Stream key of the transcode held for this viewing until it joins or ends."""


class WhepService:
    """This node's WHEP resources and the RTP streams they play."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        endpoint = app.get(RTC_ENDPOINT)
        self.streams = RtpStreams(
            transcode=TranscodeSettings.of(endpoint.config) if endpoint is not None else None
        )
        self.viewings: dict[str, WhepViewing] = {}

    async def start_viewing(
        self,
        app_name: str,
        name: str,
        session: RtcSession,
        remote: str,
        query: str,
        reserved: str | None = None,
    ) -> WhepViewing:
        rid = secrets.token_urlsafe(18)
        viewing = WhepViewing(rid, app_name, name, session, remote, query, reserved=reserved)
        self.viewings[rid] = viewing
        session.on_close = lambda reason: self.end(viewing, f"session {reason}")
        viewing.task = asyncio.create_task(self._attach(viewing))
        return viewing

    async def _attach(self, viewing: WhepViewing) -> None:
        session = viewing.session
        if not await session.wait_connected(CONNECT_TIMEOUT):
            self.end(viewing, "not connected in time")
            return
        if viewing.ended:
            return
        registry = self.app[REGISTRY]
        hub = registry.get(viewing.app, viewing.stream)
        if hub is None:
            self.end(viewing, "stream ended")
            return
        video = (
            NegotiatedTrack(session.video.payload_type, session.video.local_ssrc)
            if session.video is not None
            else None
        )
        audio = (
            NegotiatedTrack(session.audio.payload_type, session.audio.local_ssrc)
            if session.audio is not None
            else None
        )
        viewer = self.streams.join(
            hub,
            session,
            video,
            audio,
            viewing.remote,
            on_close=lambda reason: self.end(viewing, reason),
        )
        self._release(viewing)  # the stream (and its transcode, if any) exists now
        if session.video is not None and session.video.rtx_payload_type is not None:
            rtx_ssrc = session.video.local_rtx_ssrc
            if rtx_ssrc is not None:
                viewer.set_rtx(session.video.rtx_payload_type, rtx_ssrc)
        viewing.viewer = viewer
        session.on_rtcp = viewer.on_rtcp
        logger.info(
            "whep %s/%s: viewer %s connected (%s)",
            viewing.app,
            viewing.stream,
            viewing.remote,
            viewing.id,
        )

    def end(self, viewing: WhepViewing, reason: str) -> None:
        """End a viewing (DELETE, the session closed, the stream ended); idempotent."""
        if viewing.ended:
            return
        viewing.ended = True
        self.viewings.pop(viewing.id, None)
        self._release(viewing)
        if viewing.task is not None and not viewing.task.done():
            viewing.task.cancel()
        if viewing.viewer is not None:
            viewing.viewer.close(reason)
        viewing.session.close("closed")
        logger.info(
            "whep %s/%s: viewer %s left (%s)", viewing.app, viewing.stream, viewing.remote, reason
        )
        stopped = self.app.get(PLAY_STOP)
        if stopped is not None:
            task = asyncio.create_task(
                stopped(viewing.app, viewing.stream, "whep", viewing.remote, viewing.query)
            )
            _HOOK_TASKS.add(task)
            task.add_done_callback(_HOOK_TASKS.discard)

    def _release(self, viewing: WhepViewing) -> None:
        if viewing.reserved is not None:
            self.streams.release(viewing.reserved)
            viewing.reserved = None

    async def close(self) -> None:
        """End every viewing; wait for the transcodes' ffmpeg processes to exit."""
        for viewing in list(self.viewings.values()):
            self.end(viewing, "server shutting down")
        await self.streams.aclose()

    def stats(self) -> dict[str, Any]:
        """Per stream: its RTP figures and its viewers' (sends, drops, NACKs...)."""
        streams = []
        for stream in self.streams.streams.values():
            item = stream.stats()
            item["viewer_figures"] = [v.stats() for v in stream.viewers]
            streams.append(item)
        connecting = sum(1 for v in self.viewings.values() if v.viewer is None)
        return {"sessions": len(self.viewings), "connecting": connecting, "streams": streams}


WHEP: web.AppKey[WhepService] = web.AppKey("relay.whep", WhepService)


def setup(app: web.Application) -> None:
    """Create the WHEP service (routes are in :data:`relay.routes.ROUTES`)."""
    service = WhepService(app)
    app[WHEP] = service

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        await service.close()

    app.cleanup_ctx.append(ctx)


# ------------------------------------------------------------------------ HTTP


def _cors(headers: dict[str, str] | Any, allow: str) -> None:
    headers["Access-Control-Allow-Origin"] = "*"
    headers["Access-Control-Allow-Methods"] = allow
    headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization, If-Match"
    headers["Access-Control-Expose-Headers"] = "Location, Link"
    headers["Cache-Control"] = "no-store"


def _error(status: int, reason: str, allow: str = ALLOW_COLLECTION) -> web.Response:
    resp = web.Response(status=status, text=reason.rstrip("\n") + "\n")
    _cors(resp.headers, allow)
    return resp


async def post_handler(request: web.Request) -> web.StreamResponse:
    app_name = request.match_info["app"]
    name = request.match_info["stream"]
    endpoint: RtcEndpoint | None = request.app.get(RTC_ENDPOINT)
    service = request.app.get(WHEP)
    if endpoint is None or service is None:
        return _error(503, "WebRTC is not enabled on this node")
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        return _error(415, f"the offer must be application/sdp, not {ctype or 'nothing'}")
    if request.content_length is not None and request.content_length > MAX_OFFER:
        return _error(413, f"an SDP offer is at most {MAX_OFFER} bytes")
    body = await request.content.read(MAX_OFFER + 1)
    if len(body) > MAX_OFFER:
        return _error(413, f"an SDP offer is at most {MAX_OFFER} bytes")
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "the SDP offer is not UTF-8 text")
    registry = request.app[REGISTRY]
    hub = await registry.find(app_name, name)
    if hub is None:
        return _error(404, f"stream {app_name}/{name} is not live")
    remote = remote_label(request)
    guard = request.app.get(PLAY_GUARD)
    if guard is not None:
        ok, reason = await guard(app_name, name, "whep", remote, request.query_string)
        if not ok:
            return _error(403, f"play refused: {reason}")
    await hub.wait_ready(WAIT_READY)
    if registry.get(app_name, name) is not hub:
        return _error(404, f"stream {app_name}/{name} ended")
    refusal, transcode = service.streams.admit(hub)
    if refusal is not None:
        return _error(406, refusal)
    if transcode:  # held until the viewer joins (or goes): capacity is counted at once
        service.streams.reserve(hub.key)
    try:
        session = endpoint.open_session(
            offer,
            direction="sendonly",
            video_codecs=("H264",) if hub.has_video else (),
            audio_codecs=("opus",) if hub.has_audio else (),
            ssrcs=service.streams.ssrcs(hub.key),
        )
    except RtcOfferError as exc:
        if transcode:
            service.streams.release(hub.key)
        return _error(exc.status, exc.reason)
    viewing = await service.start_viewing(
        app_name, name, session, remote, request.query_string, hub.key if transcode else None
    )
    resp = web.Response(status=201, text=session.answer_sdp, content_type="application/sdp")
    _cors(resp.headers, ALLOW_COLLECTION)
    resp.headers["Location"] = f"/whep/{app_name}/{name}/{viewing.id}"
    for link in endpoint.link_headers():
        resp.headers.add("Link", link)
    return resp


async def stats_handler(request: web.Request) -> web.Response:
    service = request.app.get(WHEP)
    body = service.stats() if service is not None else {"sessions": 0, "streams": []}
    return web.json_response(body)


def _viewing(request: web.Request) -> WhepViewing | None:
    service = request.app.get(WHEP)
    if service is None:
        return None
    viewing = service.viewings.get(request.match_info["session"])
    if viewing is None or (viewing.app, viewing.stream) != (
        request.match_info["app"],
        request.match_info["stream"],
    ):
        return None
    return viewing


async def delete_handler(request: web.Request) -> web.StreamResponse:
    viewing = _viewing(request)
    if viewing is None:
        return _error(404, "no such WHEP session", ALLOW_RESOURCE)
    request.app[WHEP].end(viewing, "deleted")
    resp = web.Response(status=200)
    _cors(resp.headers, ALLOW_RESOURCE)
    return resp


async def patch_handler(request: web.Request) -> web.StreamResponse:
    """Trickle ICE / ICE restart: not supported (ICE-lite; the answer has every candidate)."""
    resp = _error(
        405, "trickle ICE is not supported: every candidate is in the answer", ALLOW_RESOURCE
    )
    resp.headers["Allow"] = ALLOW_RESOURCE
    return resp


async def options_handler(request: web.Request) -> web.StreamResponse:
    allow = ALLOW_RESOURCE if "session" in request.match_info else ALLOW_COLLECTION
    resp = web.Response(status=204)
    _cors(resp.headers, allow)
    resp.headers["Allow"] = allow
    resp.headers["Access-Control-Max-Age"] = "86400"
    return resp
