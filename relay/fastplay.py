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
aiohttp's handler untouched, which answers exactly as before.

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

from relay.formats import HTTP_FLV, HTTP_FLV_10
from relay.http import PLAY_GUARD, PLAY_STOP, REGISTRY
from relay.hub import StreamRegistry, Viewer, ViewerInfo

logger = logging.getLogger(__name__)

MAX_HEAD = 8192
"""A request head longer than this is not a plain play: aiohttp takes it (and its limits)."""
HEAD_TIMEOUT = 30.0
"""Seconds a connection may take to send its first request head; then it gets a 408."""
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


class PlaySniffer(asyncio.Protocol):
    """The first protocol of each HTTP connection (see the module docstring)."""

    __slots__ = (
        "_buf",
        "_handler_factory",
        "_hooked",
        "_registry",
        "_timer",
        "_trailing",
        "transport",
        "viewer",
    )

    def __init__(
        self,
        handler_factory: Callable[[], asyncio.Protocol],
        registry: StreamRegistry,
        hooked: bool,
    ) -> None:
        self._handler_factory = handler_factory
        self._registry = registry
        self._hooked = hooked
        """Play hooks are configured: every play takes the full path (they are async)."""
        self._buf = b""
        self._trailing = 0
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.Transport | None = None
        self.viewer: Viewer | None = None

    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # A connection that never completes a request head must not be held forever
        # (slowloris); aiohttp itself waits without limit for a first request.
        self._timer = asyncio.get_running_loop().call_later(self.head_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is not None and self.viewer is None and not transport.is_closing():
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n"
                b"Connection: close\r\nContent-Length: 26\r\n\r\nno request head in time.\r\n"
            )
            transport.close()

    def _decided(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        viewer = self.viewer
        if viewer is not None:
            # A player has nothing to say after its request; a peer that keeps talking is cut.
            self._trailing += len(data)
            if self._trailing > MAX_TRAILING:
                viewer.close("client sent data after its request")
            return
        buf = self._buf + data if self._buf else data
        verdict = parse_play_request(buf)
        if verdict is NEED_MORE:
            self._buf = buf
            return
        self._buf = b""
        self._decided()
        if isinstance(verdict, PlayRequest) and self._play(verdict, len(buf) - verdict.head_len):
            return
        self._hand_over(buf)

    def eof_received(self) -> bool | None:
        if self.viewer is not None:
            self.viewer.close("client closed")
            return None
        # Half-closed before a full head: the HTTP stack decides what that means.
        self._decided()
        handler = self._hand_over(self._buf)
        self._buf = b""
        return handler.eof_received() if handler is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._decided()
        if self.viewer is not None:
            self.viewer.close("client gone")

    def _hand_over(self, buf: bytes) -> asyncio.Protocol | None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return None
        handler = self._handler_factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if buf:
            handler.data_received(buf)
        return handler

    def _play(self, req: PlayRequest, trailing: int) -> bool:
        """Serve ``req`` here if this node can at once; False hands it to aiohttp."""
        transport = self.transport
        if transport is None or trailing:
            return False
        hub = self._registry.get(req.app, req.stream)
        if hub is None or not hub.ready or self._hooked:
            return False  # 404 / edge pull / waiting for codecs / play hooks: the slow path
        fmt = HTTP_FLV_10 if req.http10 else HTTP_FLV
        peer = transport.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        viewer = Viewer(transport, fmt, ViewerInfo("flv", remote))
        self.viewer = viewer
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

    # Writes are paced by the hub (it reads the transport's buffer size), not by pausing.
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


class PlaySite(web.BaseSite):
    """The HTTP listener: each connection starts with a :class:`PlaySniffer` in front of
    aiohttp's handler. Apps without a stream registry (no relay) get aiohttp's handler
    directly.

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
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
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
        factory: Callable[[], asyncio.BaseProtocol]
        if app is None or registry is None:
            factory = handler_factory
        else:
            hooked = app.get(PLAY_GUARD) is not None or app.get(PLAY_STOP) is not None

            def factory() -> asyncio.BaseProtocol:
                return PlaySniffer(handler_factory, registry, hooked)

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
