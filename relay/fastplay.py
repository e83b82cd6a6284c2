"""A fast path for HTTP-FLV plays, in front of aiohttp on the HTTP port.

When a live room is announced, thousands of viewers connect within a second. Through
aiohttp each play costs a request object, the middleware chain, the router and a response
object (~0.3 ms of CPU), so a herd of 2000 waits in the kernel's accept queue for the ones
before it. Real players send one plain request, ``GET /APP/STREAM.flv HTTP/1.1``, and need
only a fixed response head followed by the stream's prelude (headers + GOP cache).

:class:`PlaySniffer` is the protocol of every connection on the HTTP port. It looks at the
first request: a plain HTTP-FLV GET for a stream that is live and ready on this node is
answered here, in the same event-loop turn as its bytes arrived, without a task. Anything
else (API calls, Socket.IO, WS-FLV upgrades, HEAD, bodies, odd or oversized requests, a
stream this node must first pull or wait for, an ``on_play`` hook to ask) is handed to
aiohttp's handler untouched, which answers exactly as before. The sniffer stays in front of
it, forwarding every call, to keep the port's bounds (:mod:`relay.http_guard`): connection
caps, and deadlines on reading each request head and body (never on responses).

:func:`parse_play_request` is sans-I/O: bytes in, a :class:`PlayRequest` or a verdict out.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from ssl import SSLContext

from aiohttp import web

from core.client_address import TRUSTED_PROXIES, TrustedProxies, parse_node
from relay.formats import HTTP_FLV, HTTP_FLV_10
from relay.http import PLAY_GUARD, PLAY_STOP, REGISTRY
from relay.http_guard import HTTP_LIMITS, Admission, HttpLimits, address_key
from relay.hub import StreamRegistry, Viewer, ViewerInfo
from relay.request_watch import Phase, RequestWatch

logger = logging.getLogger(__name__)

MAX_HEAD = 8192
"""A request head longer than this is not a plain play: aiohttp takes it (and its limits)."""
MAX_TRAILING = 64 * 1024
"""Bytes a player may send after its request (it should send none) before it is cut."""

_PATH = re.compile(rb"/([A-Za-z0-9_.\-]+)/([A-Za-z0-9_.\-]+)\.flv")
_NOT_PLAIN = (b"upgrade", b"content-length", b"transfer-encoding", b"expect")

NEED_MORE = "need_more"
"""Verdict: the head is not complete yet."""
HAND_OVER = "hand_over"
"""Verdict: not a plain HTTP-FLV play; aiohttp answers it."""


@dataclass(frozen=True, slots=True)
class PlayRequest:
    app: str
    stream: str
    query: str
    http10: bool
    head_len: int
    """Bytes of the request head (anything after it was sent by the client too)."""


def parse_play_request(buf: bytes) -> PlayRequest | str:
    """A plain ``GET /APP/STREAM.flv`` request at the start of ``buf``, or a verdict.

    Never raises. Anything unusual is :data:`HAND_OVER`: the full HTTP stack decides.
    """
    if not buf.startswith(b"GET /"[: len(buf)]):
        return HAND_OVER
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        return NEED_MORE if len(buf) < MAX_HEAD else HAND_OVER
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        return HAND_OVER
    target = parts[1]
    path, _, query = target.partition(b"?")
    match = _PATH.fullmatch(path)
    if match is None or b"#" in query:
        return HAND_OVER
    for line in lines[1:]:
        name, sep, _value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name or b"\t" in name:
            return HAND_OVER  # malformed or obsolete line folding: let aiohttp refuse it
        if name.lower() in _NOT_PLAIN:
            return HAND_OVER
    try:
        query_s = query.decode("ascii")
    except UnicodeDecodeError:
        return HAND_OVER
    return PlayRequest(
        app=match.group(1).decode(),
        stream=match.group(2).decode(),
        query=query_s,
        http10=parts[2] == b"HTTP/1.0",
        head_len=end + 4,
    )


class _Date:
    """The HTTP ``Date`` value, formatted once per second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = email.utils.formatdate(now, usegmt=True).encode()
        return self.value


_date = _Date()


def response_head(http10: bool) -> bytes:
    """The response head of an HTTP-FLV play (the same fields aiohttp's route sends)."""
    framing = b"Connection: close\r\n" if http10 else b"Transfer-Encoding: chunked\r\n"
    return (
        (b"HTTP/1.0" if http10 else b"HTTP/1.1")
        + b" 200 OK\r\nContent-Type: video/x-flv\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Cache-Control: no-cache, no-store\r\n"
        + framing
        + b"Date: "
        + _date()
        + b"\r\nServer: berrylive\r\n\r\n"
    )


_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Retry-After: 5\r\nContent-Length: 23\r\n\r\ntoo many connections.\r\n"
)
_TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 26\r\n\r\nno request head in time.\r\n"
)
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\n"
    b"Connection: close\r\nContent-Length: 24\r\n\r\nrequest head too large.\r\n"
)
PAUSED_RECHECK = 1.0
"""Seconds a deadline is pushed back while the server itself holds a connection's reading
(aiohttp pauses it when a handler does not consume): that delay is not the client's."""


class PlaySniffer(asyncio.Protocol):
    """The protocol of every connection on the HTTP port (see the module docstring).

    Besides the fast path it keeps the port's bounds (:mod:`relay.http_guard`): the
    connection caps, and deadlines on reading each request. The first request head must be
    complete ``head_timeout`` after the accept, whatever its bytes; after the hand-over this
    protocol stays in front of aiohttp's handler, forwarding every call, and follows the
    framing (:class:`~relay.request_watch.RequestWatch`): a later head must be complete
    ``head_timeout`` after its first byte, a body must keep ``body_min_rate`` after a grace
    of ``body_timeout``. Responses are never timed. Idle keep-alive connections are
    aiohttp's (``keepalive_timeout``).
    """

    __slots__ = (
        "_admission",
        "_bodies_seen",
        "_body_start",
        "_buf",
        "_handler",
        "_handler_factory",
        "_head_start",
        "_heads_seen",
        "_hooked",
        "_key",
        "_limits",
        "_loop",
        "_peer",
        "_pending",
        "_proxied",
        "_registry",
        "_timer",
        "_trailing",
        "_trusted",
        "_watch",
        "transport",
        "viewer",
    )

    def __init__(
        self,
        handler_factory: Callable[[], asyncio.Protocol],
        registry: StreamRegistry | None,
        hooked: bool,
        limits: HttpLimits,
        admission: Admission,
        trusted: TrustedProxies | None = None,
    ) -> None:
        self._handler_factory = handler_factory
        self._trusted = trusted
        """``server.trusted_proxies``: a play through one of them takes the full path, where
        the client the proxy reports is read (:mod:`core.client_address`)."""
        self._proxied = False
        self._registry = registry
        """None: no relay in this app, every request goes to aiohttp."""
        self._hooked = hooked
        """Play hooks are configured: every play takes the full path (they are async)."""
        self._limits = limits
        self._admission = admission
        self._key: str | None = None
        """The address this connection is counted under (None: not counted: refused or
        evicted)."""
        self._pending = False
        """Counted, and its first request head not complete yet: the admission may close it
        to make room at the total cap (:meth:`evict`)."""
        self._peer: object = None
        self._buf = b""
        self._trailing = 0
        self._timer: asyncio.TimerHandle | None = None
        self._handler: asyncio.Protocol | None = None
        self._watch: RequestWatch | None = None
        self._head_start = 0.0
        self._body_start = 0.0
        self._heads_seen = 1
        self._bodies_seen = 0
        self.transport: asyncio.Transport | None = None
        self.viewer: Viewer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = peer
        trusted = self._trusted
        if trusted and isinstance(peer, tuple):
            addr = parse_node(str(peer[0]))
            self._proxied = addr is not None and trusted.trusts(addr)
        key = address_key(str(peer[0])) if isinstance(peer, tuple) else ""
        refused = self._admission.admit(key, self)
        if refused is not None:
            logger.debug("http connection from %s refused: %s", key, refused)
            transport.write(_REFUSED)  # type: ignore[attr-defined]
            transport.close()
            return
        self._key = key
        self._pending = True
        loop = self._loop = asyncio.get_running_loop()
        # The first head is due from the accept, whatever its bytes (slowloris).
        self._head_start = loop.time()
        self._timer = loop.call_at(self._head_start + self._limits.head_timeout, self._expire)
        if self._registry is None:
            self._hand_over(b"")

    # -- the total cap ------------------------------------------------------------------------
    def evict(self) -> None:
        """Closed by the admission to make room for a new connection at the total cap (no
        complete request head yet: nothing was answered on it); already uncounted."""
        self._key = None
        self._pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self.transport
        if transport is not None and not transport.is_closing():
            logger.debug("http connection from %s closed to make room", self._peer)
            transport.write(_REFUSED)
            transport.close()

    def _established(self) -> None:
        """The first request head is complete: a real client; never evicted."""
        if self._pending:
            self._pending = False
            self._admission.established(self)

    # -- deadlines ---------------------------------------------------------------------------
    def _deadline(self) -> float | None:
        """When the request being read must be complete; None when none is being read."""
        watch = self._watch
        if watch is None:  # still sniffing the first request
            return self._head_start + self._limits.head_timeout
        phase = watch.phase
        if phase is Phase.HEAD:
            return self._head_start + self._limits.head_timeout
        if phase is Phase.BODY:
            limits = self._limits
            rate = limits.body_min_rate
            allowance = watch.body_received / rate if rate > 0 else 0.0
            return self._body_start + limits.body_timeout + allowance
        return None

    def _watched(self, watch: RequestWatch) -> bool:
        """Deadlines after the watch was fed; False if the connection was cut."""
        if watch.heads_done and self._pending:
            self._established()
        phase = watch.phase
        if phase is Phase.HEAD:
            if watch.heads_begun != self._heads_seen:  # a later request's first byte: now
                self._heads_seen = watch.heads_begun
                self._head_start = self._loop.time()
        elif phase is Phase.BODY:
            if watch.bodies_begun != self._bodies_seen:
                self._bodies_seen = watch.bodies_begun
                self._body_start = self._loop.time()
        elif phase is Phase.TOO_LARGE:
            self._cut(phase)
            return False
        deadline = self._deadline()
        timer = self._timer
        if deadline is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
        elif timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)
        return True

    def _expire(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or self.viewer is not None:
            return
        deadline = self._deadline()
        if deadline is None:
            return
        loop = self._loop
        if loop.time() < deadline:  # the body kept its rate, or a new request began
            self._timer = loop.call_at(deadline, self._expire)
            return
        if self._handler is not None and not transport.is_reading():
            self._head_start += PAUSED_RECHECK
            self._body_start += PAUSED_RECHECK
            self._timer = loop.call_later(PAUSED_RECHECK, self._expire)
            return
        watch = self._watch
        self._cut(watch.phase if watch is not None else Phase.HEAD)

    def _cut(self, phase: Phase) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        watch = self._watch
        first = watch is None or watch.heads_done == 0
        logger.debug("http connection from %s cut: %s", self._key, phase.value)
        if first and phase is Phase.HEAD:
            transport.write(_TOO_SLOW)  # nothing was answered on it yet
            transport.close()
        elif first and phase is Phase.TOO_LARGE:
            transport.write(_TOO_LARGE)
            transport.close()
        else:  # a response may be under way: no status of ours, and nothing left to flush
            transport.abort()

    # -- the connection -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        viewer = self.viewer
        if viewer is not None:
            # A player has nothing to say after its request; a peer that keeps talking is cut.
            self._trailing += len(data)
            if self._trailing > MAX_TRAILING:
                viewer.close("client sent data after its request")
            return
        handler = self._handler
        if handler is not None:
            watch = self._watch
            if watch is not None and watch.phase is not Phase.DONE:
                watch.feed(data)
                if not self._watched(watch):
                    return
            handler.data_received(data)
            return
        if self._key is None:
            return  # refused
        buf = self._buf + data if self._buf else data
        verdict = parse_play_request(buf)
        if verdict is NEED_MORE:
            self._buf = buf
            return
        self._buf = b""
        if isinstance(verdict, PlayRequest) and self._play(verdict, len(buf) - verdict.head_len):
            return
        self._hand_over(buf)

    def eof_received(self) -> bool | None:
        if self.viewer is not None:
            self.viewer.close("client closed")
            return None
        handler = self._handler
        if handler is None:
            if self._key is None:
                return None
            # Half-closed before a full head: the HTTP stack decides what that means.
            handler = self._hand_over(self._buf)
            self._buf = b""
            if handler is None:
                return None
        return handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._key is not None:
            self._admission.release(self._key, self)
            self._key = None
            self._pending = False
        if self.viewer is not None:
            self.viewer.close("client gone")
        handler = self._handler
        if handler is not None:
            handler.connection_lost(exc)

    def _hand_over(self, buf: bytes) -> asyncio.Protocol | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        handler = self._handler_factory()
        self._handler = handler
        watch = self._watch = RequestWatch()
        handler.connection_made(transport)
        if buf:
            watch.feed(buf)
            if not self._watched(watch):
                return None
            handler.data_received(buf)
        return handler

    def _play(self, req: PlayRequest, trailing: int) -> bool:
        """Serve ``req`` here if this node can at once; False hands it to aiohttp."""
        transport = self.transport
        registry = self._registry
        if transport is None or trailing or registry is None:
            return False
        hub = registry.get(req.app, req.stream)
        if hub is None or not hub.ready or self._hooked or self._proxied:
            # 404 / edge pull / waiting for codecs / play hooks / a trusted proxy's request
            # (the client it names is read there): the full path
            return False
        fmt = HTTP_FLV_10 if req.http10 else HTTP_FLV
        peer = self._peer
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        viewer = Viewer(transport, fmt, ViewerInfo("flv", remote))
        self.viewer = viewer
        self._established()
        if self._timer is not None:  # a response is under way: nothing more is read
            self._timer.cancel()
            self._timer = None
        hub.add_viewer(viewer, hub.flv_prelude(fmt), head=response_head(req.http10))
        viewer.done.add_done_callback(self._finished)
        return True

    def _finished(self, done: asyncio.Future[str]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        reason = done.result()
        viewer = self.viewer
        if reason.startswith("stream ended") and viewer is not None and viewer.fmt is HTTP_FLV:
            transport.write(b"0\r\n\r\n")  # the last chunk: a clean end of the response
        transport.close()

    # Writes of a fast-path viewer are paced by the hub (it reads the transport's buffer
    # size), not by pausing; aiohttp's handler gets these calls (its writers drain on them).
    def pause_writing(self) -> None:
        handler = self._handler
        if handler is not None:
            handler.pause_writing()

    def resume_writing(self) -> None:
        handler = self._handler
        if handler is not None:
            handler.resume_writing()


class PlaySite(web.BaseSite):
    """The HTTP listener: each connection has a :class:`PlaySniffer` in front of aiohttp's
    handler (the fast path, the caps and the deadlines on reading requests). Apps without a
    stream registry (no relay) have no fast path; the bounds hold for them too.

    Built on public APIs only, so an aiohttp upgrade cannot silently break it: a
    ``web.BaseSite`` (the runner knows it, ``runner.cleanup()`` stops it), the runner's
    ``server`` (aiohttp's low-level ``web.Server``, documented as a protocol factory for
    ``loop.create_server``) and an ``asyncio.Server`` of this class's own.
    """

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None = None,
        port: int = 8080,
        *,
        ssl_context: SSLContext | None = None,
        backlog: int = 128,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self.limits = limits
        """Deadlines and caps; None: the app's (:data:`relay.http_guard.HTTP_LIMITS`, set by
        the relay's setup) or the defaults."""
        self.admission: Admission | None = None
        """The connections open on this site (counted once it started)."""
        self.runner = runner
        self.host = host
        self.requested_port = port
        self.ssl_context = ssl_context
        self.listen_backlog = backlog
        self.reuse_address = reuse_address
        self.reuse_port = reuse_port
        self.listener: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) listened on: the bound port once started (``port=0`` asks the
        system for one), the requested one before."""
        if self.listener is not None and self.listener.sockets:
            host, port = self.listener.sockets[0].getsockname()[:2]
            return str(host), int(port)
        return self.host or "0.0.0.0", self.requested_port

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def name(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host, port = self.address
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        handler_factory = self.runner.server
        if handler_factory is None:
            raise RuntimeError("call runner.setup() before starting a site")
        app = self.runner.app if isinstance(self.runner, web.AppRunner) else None
        registry = app.get(REGISTRY) if app is not None else None
        limits = self.limits or (app.get(HTTP_LIMITS) if app is not None else None) or HttpLimits()
        self.limits = limits
        admission = self.admission = Admission(
            limits.max_connections, limits.max_connections_per_ip
        )
        hooked = app is not None and (
            app.get(PLAY_GUARD) is not None or app.get(PLAY_STOP) is not None
        )

        trusted = app.get(TRUSTED_PROXIES) if app is not None else None

        def factory() -> asyncio.BaseProtocol:
            return PlaySniffer(handler_factory, registry, hooked, limits, admission, trusted)

        self.listener = await asyncio.get_running_loop().create_server(
            factory,
            self.host,
            self.requested_port,
            ssl=self.ssl_context,
            backlog=self.listen_backlog,
            reuse_address=self.reuse_address,
            reuse_port=self.reuse_port,
        )

    async def stop(self) -> None:
        """Stop listening (connections already accepted are the app's to end)."""
        if self.listener is not None:
            self.listener.close()
        await super().stop()  # unregisters the site
