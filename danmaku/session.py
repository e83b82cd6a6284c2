"""The ``/live`` protocol, whatever carries it: joining a room and the client's events.

Both carriers call it: the owned websocket path (:mod:`danmaku.websocket`) and the
python-socketio namespace for polling clients (:mod:`danmaku.namespace`).

Every client event is answered: with the ack value when the client asked for one
(``{"ok": true, ...}`` or ``{"ok": false, "error": {"code", "message"}}``), and, on a
refusal, also with a ``rejected`` event so clients that do not use acks still learn why.
A bad event affects only its sender.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from core.tokens import Role, TokenError, Viewer, verify_token
from danmaku.hub import Hub
from danmaku.lottery import LotteryService
from danmaku.moderation import Actor, Moderation, ServiceUnavailable
from danmaku.payloads import PayloadError, parse_join, parse_lottery_enter, parse_moderate
from danmaku.revocations import Revocations
from danmaku.rooms import Connection, Member

logger = logging.getLogger(__name__)

__all__ = ["Refused", "Sessions"]

EventHandler = Callable[[Member, Any], Awaitable[dict[str, Any]]]


class Refused(Exception):
    """A join refused: ``message`` and ``{"code": ...}`` go to the client."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Sessions:
    def __init__(
        self,
        hub: Hub,
        moderation: Moderation,
        lottery: LotteryService,
        secret: str,
        may_open: Callable[[str], Awaitable[bool]] | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        self.hub = hub
        self._revocations = revocations
        self._may_open = may_open
        """Asked before a socket without a token joins a room (None: any room)."""
        self.moderation = moderation
        self.lottery = lottery
        self._secret = secret
        self._events: dict[str, EventHandler] = {
            "comment": self._comment,
            "like": self._like,
            "moderate": self._moderate,
            "lottery_enter": self._lottery_enter,
        }

    # ------------------------------------------------------------------ join
    async def join(
        self, sid: str, conn: Connection, auth: Any, ip: str = ""
    ) -> tuple[Member, dict[str, Any]]:
        """Check ``auth`` and prepare the member and its ``joined`` payload (raises
        :class:`Refused`). The carrier then acknowledges the connection and calls
        :meth:`Hub.activate`, which sends ``joined`` before anything else."""
        hub = self.hub
        try:
            room_name, token, last_id = parse_join(auth)
        except PayloadError as exc:
            hub.stats.refused += 1
            raise Refused(str(exc), exc.code) from None
        viewer: Viewer | None = None
        role = Role.ANONYMOUS
        if token is not None:
            try:
                viewer = verify_token(self._secret, token)
            except TokenError as exc:
                hub.stats.refused += 1
                raise Refused(str(exc), exc.code) from None
            role = viewer.role_in(room_name)
            if self._revocations is not None and viewer.role.privileged:
                try:
                    revoked = await self._revocations.refused(viewer)
                except Exception as exc:  # a staff token that cannot be checked is not used
                    hub.stats.refused += 1
                    raise Refused("staff tokens cannot be checked now", "unavailable") from exc
                if revoked:
                    hub.stats.refused += 1
                    raise Refused("this staff token was revoked", "token_revoked")
        elif self._may_open is not None:
            try:
                known = await self._may_open(room_name)
            except Exception as exc:  # Redis down: the room cannot be checked, so no
                hub.stats.refused += 1
                raise Refused("rooms are unavailable, try again", "unavailable") from exc
            if not known:
                hub.stats.refused += 1
                raise Refused(f"no room {room_name!r} (log in to open one)", "unknown_room")
        try:
            room = await hub.open_room(room_name)
        except PayloadError as exc:
            hub.stats.refused += 1
            raise Refused(str(exc), exc.code) from None
        now = time.time()
        if viewer is not None and room.banned_until(viewer.user_id, now) is not None:
            hub.stats.refused += 1
            raise Refused("you are banned from this room", "banned")
        history, gap = await hub.history(room, last_id)
        member = Member(
            sid=sid,
            conn=conn,
            viewer=viewer,
            role=role,
            room=room_name,
            ip=ip,
            device=_device_of(auth),
        )
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
        return member, joined

    def leave(self, sid: str) -> None:
        self.hub.leave(sid)

    # ------------------------------------------------------------------ events
    async def event(self, sid: str, event: Any, args: list[Any]) -> dict[str, Any]:
        """Handle one client event; returns the ack value (also sent when refused)."""
        member = self.hub.members.get(sid)
        name = event if isinstance(event, str) else repr(event)
        handler = self._events.get(event) if isinstance(event, str) else None
        if member is None:
            return self._reject(None, name, PayloadError("not_joined", "not in a room yet"))
        if handler is None:
            return self._reject(
                member, name[:64], PayloadError("unknown_event", f"unknown event {name[:64]!r}")
            )
        if len(args) > 1:
            return self._reject(member, name, PayloadError("bad_payload", "send one argument"))
        try:
            return await handler(member, args[0] if args else None)
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
            self.hub.send_frame(member, "rejected", {"event": event, **error})
        return {"ok": False, "error": error}

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


def _device_of(auth: Any) -> str:
    """The client's device id (``auth.device``, as the shop's ``X-Device-Id``), if sane."""
    device = auth.get("device") if isinstance(auth, dict) else None
    if isinstance(device, str) and 1 <= len(device) <= 128 and device.isprintable():
        return device
    return ""
