"""``/live`` over python-socketio: clients that long-poll, or started polling and upgraded.

Websocket-only clients are served by :mod:`danmaku.websocket`; these sessions belong to
python-socketio, and this namespace is a thin shell over :class:`~danmaku.session.Sessions`
that uses only its public API. Packets to a member go through :class:`SioConnection`: one
writer task per connection hands them, in order, to ``AsyncServer.eio.send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as SioRefused

from danmaku.rooms import Member
from danmaku.session import Refused, Sessions
from danmaku.wire import Outbound

logger = logging.getLogger(__name__)

__all__ = ["LiveNamespace", "SioConnection"]


class SioConnection:
    """A python-socketio session as a :class:`~danmaku.rooms.Connection`.

    At most ``limit`` packets wait here; python-engineio then holds what the client has
    not fetched yet (a polling client that stops fetching is closed by its ping timeout).
    """

    direct = False

    def __init__(
        self, sio: socketio.AsyncServer, sid: str, eio_sid: str, namespace: str, limit: int
    ) -> None:
        self.sio = sio
        self.sid = sid
        self.eio_sid = eio_sid
        self.namespace = namespace
        self.limit = max(1, limit)
        self.closed = False
        self._pending: deque[Outbound] = deque()
        self._writer: asyncio.Task[None] | None = None

    def send(self, out: Outbound) -> bool:
        if self.closed:
            return True
        if len(self._pending) >= self.limit:
            return False
        self._pending.append(out)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return True

    async def _write(self) -> None:
        """The connection's one writer: each packet is handed over before the next."""
        try:
            while self._pending and not self.closed:
                await self.sio.eio.send(self.eio_sid, self._pending.popleft().text)
        except Exception as exc:
            logger.debug("danmaku: send to %s failed: %s", self.sid, exc)
            self.closed = True
        finally:
            self._writer = None

    async def disconnect(self) -> None:
        await self.sio.disconnect(self.sid, namespace=self.namespace)

    async def drop(self) -> None:
        self.closed = True
        self._pending.clear()
        with contextlib.suppress(Exception):
            await self.sio.disconnect(self.sid, namespace=self.namespace)
        await self.sio.eio.disconnect(self.eio_sid)


class LiveNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(self, namespace: str, sessions: Sessions, backlog_max: int) -> None:
        super().__init__(namespace)
        self.sessions = sessions
        self.backlog_max = backlog_max
        self._conns: dict[str, SioConnection] = {}

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        if event == "connect":
            return await self._connect(*args)
        if event == "disconnect":
            conn = self._conns.pop(args[0], None)
            if conn is not None:
                conn.closed = True
            self.sessions.leave(args[0])
            return None
        return await self.sessions.event(args[0], event, list(args[1:]))

    async def _connect(self, sid: str, environ: Any, auth: Any = None) -> bool:
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        conn = SioConnection(self.server, sid, eio_sid, self.namespace, self.backlog_max)
        try:
            member, joined = await self.sessions.join(sid, conn, auth, _remote(environ))
        except Refused as exc:
            raise SioRefused(exc.message, {"code": exc.code}) from None
        self._conns[sid] = conn
        # python-socketio queues the CONNECT packet when this handler returns, in the same
        # step; activating right after it makes ``joined`` the first event of the session.
        asyncio.get_running_loop().call_soon(self._activate, member, joined)
        return True

    def _activate(self, member: Member, joined: dict[str, Any]) -> None:
        conn = member.conn
        if conn is None or conn.closed:
            return
        if not self.server.manager.is_connected(member.sid, self.namespace):
            return
        self.sessions.hub.activate(member, joined)


def _remote(environ: Any) -> str:
    """The client's address in python-socketio's environ (aiohttp's request, else WSGI's)."""
    if not isinstance(environ, dict):
        return ""
    request = environ.get("aiohttp.request")
    remote = getattr(request, "remote", None) or environ.get("REMOTE_ADDR")
    return remote if isinstance(remote, str) else ""
