"""Delivery: one packet to many members, in order, and what happens to slow ones.

A batch is encoded once per room per tick (:class:`danmaku.wire.Outbound`: the Socket.IO
text and the websocket frame are each built once) and handed to every member's
:class:`~danmaku.rooms.Connection`. Each connection keeps its own order: the websocket
path writes the same ``bytes`` object straight to its transport, synchronously, so
nothing sent earlier can be overtaken (:mod:`danmaku.websocket`); the python-socketio path
(polling clients) queues in order behind one writer (:mod:`danmaku.namespace`).

A member whose connection reports it is too far behind (``client_backlog_bytes`` unsent
on the websocket, ``client_backlog_max`` packets queued otherwise) is dropped: its
connection is closed at once, its backlog discarded, and it may come back with
``last_id`` (python-socketio and socket.io-client reconnect by themselves).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from danmaku.rooms import Member
from danmaku.stats import HubStats, Warnings
from danmaku.wire import Outbound, event_packet

logger = logging.getLogger(__name__)

__all__ = ["Delivery"]

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class Delivery:
    def __init__(self, namespace: str, stats: HubStats, warn: Warnings, spawn: Spawn) -> None:
        self.namespace = namespace
        self.stats = stats
        self._warn = warn
        self._spawn = spawn

    def packet(self, event: str, data: Any) -> Outbound:
        return event_packet(self.namespace, event, data)

    def send(self, member: Member, event: str, data: Any) -> None:
        """One event to one member, behind everything sent to it before."""
        self.fanout((member,), self.packet(event, data))

    def fanout(self, members: Iterable[Member], out: Outbound) -> int:
        """Send ``out`` to each member; returns how many got it (slow ones are dropped)."""
        direct = queued = 0
        slow: list[Member] = []
        for m in members:
            conn = m.conn
            if m.dropped or conn is None or conn.closed:
                continue
            if not conn.send(out):
                slow.append(m)
            elif conn.direct:
                direct += 1
            else:
                queued += 1
        for m in slow:
            m.dropped = True
            self.stats.slow_clients_dropped += 1
            self._warn("slow", "danmaku: dropping slow client %s in %s", m.sid, m.room)
            self._spawn(self._drop(m))
        self.stats.direct_frames += direct
        self.stats.queued_frames += queued
        return direct + queued

    @staticmethod
    async def _drop(member: Member) -> None:
        if member.conn is not None:
            with contextlib.suppress(Exception):
                await member.conn.drop()

    @staticmethod
    async def disconnect(member: Member) -> None:
        """Leave the namespace from the server side (the client is told)."""
        if member.conn is not None:
            with contextlib.suppress(Exception):
                await member.conn.disconnect()
