"""HTTP of LL-HLS (routes declared in :mod:`relay.routes`):

* ``GET /{app}/{stream}.m3u8[?_HLS_msn=M[&_HLS_part=P]]``: the live playlist; with
  ``_HLS_msn`` a blocking reload (held until that segment, or part, exists; 503 after the
  block timeout or when too many requests wait; 400 for a segment more than two ahead);
* ``GET /{app}/{stream}.hls/{token}/{file}``: ``init-N.mp4``, ``seg-M.m4s``,
  ``part-M.P.m4s`` from memory, cacheable for ever (the token names the packager
  instance); the next part (the preload hint) is held until it exists.

Each of them marks its client (address + User-Agent hash) as a viewer of the stream for two
target durations (:mod:`relay.hls_viewers`): the hub's stats report them as ``hls`` viewers.

A stream that is not live on this node (after an edge pull was tried) is 404.
"""

from __future__ import annotations

from aiohttp import web

from relay.hls import HlsPackager, HlsService, TooManyWaiters
from relay.hls_playlist import FILE_RE
from relay.http import REGISTRY

__all__ = ["HLS", "file_handler", "playlist_handler"]

HLS: web.AppKey[HlsService] = web.AppKey("relay.hls", HlsService)

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"


def _headers(cache: str) -> dict[str, str]:
    return {"Cache-Control": cache, "Access-Control-Allow-Origin": "*"}


def _query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 12:
        raise web.HTTPBadRequest(text=f"{name}: expected a non-negative integer\n")
    return int(raw)


def _unavailable(reason: str, retry: float) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(
        text=reason + "\n",
        headers={"Retry-After": str(max(1, round(retry))), **_headers("no-cache")},
    )


async def playlist_handler(request: web.Request) -> web.Response:
    app, name = request.match_info["app"], request.match_info["stream"]
    msn = _query_int(request, "_HLS_msn")
    part = _query_int(request, "_HLS_part")
    if part is not None and msn is None:
        raise web.HTTPBadRequest(text="_HLS_part needs _HLS_msn\n")
    registry = request.app[REGISTRY]
    service = request.app[HLS]
    hub = await registry.find(app, name)
    if hub is None:
        raise web.HTTPNotFound(text=f"stream {app}/{name} is not live\n")
    pkg = service.packager(hub)
    if pkg is None:
        if not hub.live:
            raise web.HTTPNotFound(text=f"stream {app}/{name} is not live\n")
        pkg = service.ensure(hub)
    else:
        pkg.touch()
    service.seen(hub, request.remote, request.headers.get("User-Agent"))
    playlist = pkg.playlist
    if msn is not None:
        if playlist.too_far(msn):
            raise web.HTTPBadRequest(text=f"_HLS_msn={msn} is too far ahead\n")
        await _wait(pkg, msn, part)
    elif not playlist.has(playlist.segments[0].msn if playlist.segments else 0, None):
        # Warm-up: a plain player needs a complete segment (an open one lists parts only),
        # so the first playlist waits for it like a blocking request (a GOP at most).
        await _wait(pkg, playlist.segments[0].msn if playlist.segments else 0, None)
    if request.method == "HEAD":
        return web.Response(content_type=PLAYLIST_TYPE, headers=_headers("no-cache"))
    resp = web.Response(
        text=playlist.render(), content_type=PLAYLIST_TYPE, headers=_headers("no-cache")
    )
    return resp


async def _wait(pkg: HlsPackager, msn: int, part: int | None) -> None:
    try:
        ok = await pkg.wait_for(msn, part)
    except TooManyWaiters:
        raise _unavailable("too many blocking requests", 1) from None
    if not ok:
        raise _unavailable("the requested part did not come in time", 1)


async def file_handler(request: web.Request) -> web.Response:
    app, name = request.match_info["app"], request.match_info["stream"]
    registry = request.app[REGISTRY]
    hub = registry.get(app, name)
    pkg = request.app[HLS].packager(hub) if hub is not None else None
    match = FILE_RE.match(request.match_info["file"])
    if pkg is None or match is None or request.match_info["token"] != pkg.playlist.token:
        raise web.HTTPNotFound()
    pkg.touch()
    request.app[HLS].seen(pkg.hub, request.remote, request.headers.get("User-Agent"))
    playlist = pkg.playlist
    init, seg, pmsn, pidx = match.groups()
    data: bytes | None
    if init is not None:
        data, ctype = playlist.init_data(int(init)), "video/mp4"
    elif seg is not None:
        data, ctype = playlist.segment_data(int(seg)), "video/iso.segment"
    else:
        msn, idx = int(pmsn), int(pidx)
        ctype = "video/iso.segment"
        data = playlist.part_data(msn, idx)
        if data is None and (msn, idx) == playlist.next_position():
            await _wait(pkg, msn, idx)  # the preload hint: served as it completes
            data = playlist.part_data(msn, idx)
            if data is None:  # the segment closed before this part came: it never will
                raise web.HTTPNotFound()
    if data is None:
        raise web.HTTPNotFound()
    if request.method == "HEAD":
        return web.Response(content_type=ctype, headers=_headers(IMMUTABLE))
    return web.Response(body=data, content_type=ctype, headers=_headers(IMMUTABLE))
