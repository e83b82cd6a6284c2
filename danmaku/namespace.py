"""The ``/live`` Socket.IO namespace: a thin shell that validates and hands over to the hub.

Every client event is answered: with the ack value when the client asked for one
(``{"ok": true, ...}`` or ``{"ok": false, "error": {"code", "message"}}``), and, on a
refusal, also with a ``rejected`` event so clients that do not use acks still learn why.
A bad event affects only its sender.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import socketio
from socketio.exceptions import ConnectionRefusedError as SioRefused

from danmaku.hub import Hub, Member
from danmaku.lottery import LotteryService
from danmaku.moderation import Actor, Moderation, ServiceUnavailable
from danmaku.payloads import (
    PayloadError,
    parse_join,
    parse_lottery_enter,
    parse_moderate,
)
from danmaku.tokens import Role, TokenError, Viewer, verify_token

logger = logging.getLogger(__name__)

__all__ = ["LiveNamespace"]

EventHandler = Callable[[Member, Any], Awaitable[dict[str, Any]]]


class LiveNamespace(socketio.AsyncNamespace):  # type: ignore[misc]
    def __init__(
        self,
        namespace: str,
        hub: Hub,
        moderation: Moderation,
        lottery: LotteryService,
        secret: str,
    ) -> None:
        super().__init__(namespace)
        self.hub = hub
        self.moderation = moderation
        self.lottery = lottery
        self._secret = secret
        self._events: dict[str, EventHandler] = {
            "comment": self._comment,
            "like": self._like,
            "moderate": self._moderate,
            "lottery_enter": self._lottery_enter,
        }

    async def trigger_event(self, event: Any, *args: Any) -> Any:
        if event == "connect":
            return await self._connect(*args)
        if event == "disconnect":
            self.hub.leave(args[0])
            return None
        sid = args[0]
        member = self.hub.members.get(sid)
        name = event if isinstance(event, str) else repr(event)
        handler = self._events.get(event) if isinstance(event, str) else None
        if member is None:
            return self._reject(None, name, PayloadError("not_joined", "not in a room yet"))
        if handler is None:
            return self._reject(
                member, name[:64], PayloadError("unknown_event", f"unknown event {name[:64]!r}")
            )
        payload = args[1:]
        if len(payload) > 1:
            return self._reject(member, name, PayloadError("bad_payload", "send one argument"))
        try:
            return await handler(member, payload[0] if payload else None)
        except PayloadError as exc:
            return self._reject(member, name, exc)
        except ServiceUnavailable as exc:
            return self._reject(member, name, PayloadError("unavailable", str(exc)))
        except Exception:
            logger.exception("danmaku: %s from %s failed", name, sid)
            return self._reject(member, name, PayloadError("internal", "internal error"))

    def _reject(self, member: Member | None, event: str, exc: PayloadError) -> dict[str, Any]:
        error = exc.as_dict()
        if event == "comment":
            self.hub.stats.comments_rejected += 1
        if member is not None:
            self.hub._send_frame(member, "rejected", {"event": event, **error})
        return {"ok": False, "error": error}

    # ------------------------------------------------------------------ connect
    async def _connect(self, sid: str, environ: Any, auth: Any = None) -> bool:
        hub = self.hub
        try:
            room_name, token, last_id = parse_join(auth)
        except PayloadError as exc:
            hub.stats.refused += 1
            raise SioRefused(str(exc), {"code": exc.code}) from None
        viewer: Viewer | None = None
        role = Role.ANONYMOUS
        if token is not None:
            try:
                viewer = verify_token(self._secret, token)
            except TokenError as exc:
                hub.stats.refused += 1
                raise SioRefused(str(exc), {"code": exc.code}) from None
            role = viewer.role_in(room_name)
        try:
            room = await hub.open_room(room_name)
        except PayloadError as exc:
            hub.stats.refused += 1
            raise SioRefused(str(exc), {"code": exc.code}) from None
        now = time.time()
        if viewer is not None and room.banned_until(viewer.user_id, now) is not None:
            hub.stats.refused += 1
            raise SioRefused("you are banned from this room", {"code": "banned"})
        history, gap = await hub.history(room, last_id)
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        member = Member(sid=sid, eio_sid=eio_sid, viewer=viewer, role=role, room=room_name)
        muted = room.muted_until(viewer.user_id, now) if viewer else None
        joined = {
            "room": room_name,
            "you": {
                "user": viewer.user_id if viewer else None,
                "nick": viewer.nick if viewer else None,
                "role": role.value,
                "muted_until": muted,
            },
            "history": history,
            "gap": gap,
            "likes_total": room.buffer.likes_total,
            "online": room.buffer.online + 1,
            "slow_mode_s": room.slow_mode_s,
            "room_muted": room.room_muted,
            "lotteries": await self.lottery.open_for(room),
            "tick_ms": hub.config.tick_ms,
            "max_comment_chars": hub.config.max_comment_chars,
        }
        # The CONNECT packet is queued when this handler returns; activate right after it so
        # that ``joined`` is the first event and no batch slips in between.
        asyncio.get_running_loop().call_soon(hub.activate, member, joined)
        return True

    # ------------------------------------------------------------------ events
    async def _comment(self, member: Member, data: Any) -> dict[str, Any]:
        return await self.hub.submit_comment(member, data)

    async def _like(self, member: Member, data: Any) -> dict[str, Any]:
        return self.hub.submit_like(member, data)

    async def _moderate(self, member: Member, data: Any) -> dict[str, Any]:
        if member.viewer is None or not member.role.moderates:
            raise PayloadError("forbidden", "only moderators and operators may moderate")
        cmd = parse_moderate(data)
        actor = Actor(member.viewer.user_id, member.role, "socket")
        return await self.moderation.apply(member.room, actor, cmd)

    async def _lottery_enter(self, member: Member, data: Any) -> dict[str, Any]:
        lid = parse_lottery_enter(data)
        result = await self.lottery.enter_button(lid, member)
        return {"ok": result["status"] in ("entered", "won"), **result}
