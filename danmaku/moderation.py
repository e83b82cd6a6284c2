"""Moderation: mute, ban, delete, slow mode, room mute; every action audited.

State lives in one Redis hash per room (``mute:<uid>`` / ``ban:<uid>`` -> until, 0 =
forever; ``slow`` -> seconds; ``rmute`` -> 0/1) and is cached by every node that serves the
room; a change is written to Redis together with its audit entry (one MULTI), then sent
to the other nodes over the room channel. Only moderators and operators may act; the
socket handler and the REST API both call :meth:`Moderation.apply`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from core.bus import EventBus
from core.tokens import Role
from danmaku.events import DanmakuModeration
from danmaku.hub import Hub
from danmaku.keys import REDIS_TIMEOUT
from danmaku.payloads import ModerateIn, PayloadError
from danmaku.rooms import Room

logger = logging.getLogger(__name__)

__all__ = ["Actor", "Moderation", "ServiceUnavailable", "audit"]


class ServiceUnavailable(RuntimeError):
    """Redis is unreachable: the action was not applied (nothing half-written)."""


class Actor:
    def __init__(self, user_id: str, role: Role, via: str) -> None:
        self.user_id = user_id
        self.role = role
        self.via = via

    def as_dict(self) -> dict[str, str]:
        return {"id": self.user_id, "role": self.role.value, "via": self.via}


def audit_fields(
    actor: Actor, action: str, room: str, target: str, detail: dict[str, Any]
) -> dict[str, str]:
    return {
        "ts": f"{time.time():.3f}",
        "actor": actor.user_id,
        "actor_role": actor.role.value,
        "via": actor.via,
        "action": action,
        "room": room,
        "target": target,
        "detail": json.dumps(detail, ensure_ascii=False, separators=(",", ":")),
    }


async def audit(
    hub: Hub, actor: Actor, action: str, room: str, target: str, detail: dict[str, Any]
) -> None:
    """Append one audit entry (used for lottery actions; moderation writes it in its MULTI)."""
    fields = audit_fields(actor, action, room, target, detail)
    logger.info("audit: %s", fields)
    await asyncio.wait_for(
        hub.redis.xadd(hub.keys.audit(), fields, maxlen=hub.config.audit_max, approximate=True),
        REDIS_TIMEOUT,
    )


class Moderation:
    def __init__(self, hub: Hub, bus: EventBus) -> None:
        self.hub = hub
        self.bus = bus
        hub.on_remote_hooks.append(self._on_remote)

    async def apply(self, room_name: str, actor: Actor, cmd: ModerateIn) -> dict[str, Any]:
        """Apply one action; raises :class:`PayloadError` (refused) or ServiceUnavailable."""
        if not actor.role.moderates:
            raise PayloadError("forbidden", "only moderators and operators may moderate")
        hub = self.hub
        key = hub.keys.moderation(room_name)
        now = time.time()
        until = 0.0 if not cmd.duration_s else now + cmd.duration_s
        control: dict[str, Any] = {"kind": "mod", "action": cmd.action}
        target = cmd.user_id or cmd.comment_id or ""
        pipe = hub.redis.pipeline(transaction=True)
        if cmd.action in ("mute", "ban"):
            field = f"{cmd.action}:{cmd.user_id}"
            pipe.hset(key, field, f"{until:.3f}")
            control.update(user_id=cmd.user_id, until=until)
        elif cmd.action in ("unmute", "unban"):
            pipe.hdel(key, f"{cmd.action[2:]}:{cmd.user_id}")
            control.update(user_id=cmd.user_id)
        elif cmd.action == "slow_mode":
            pipe.hset(key, "slow", f"{cmd.duration_s or 0:.3f}")
            control.update(slow_mode_s=cmd.duration_s or 0.0)
        elif cmd.action in ("room_mute", "room_unmute"):
            pipe.hset(key, "rmute", "1" if cmd.action == "room_mute" else "0")
            control.update(room_muted=cmd.action == "room_mute")
        elif cmd.action == "delete":
            control.update(comment_id=cmd.comment_id)
            deleted = hub.keys.deleted(room_name)
            pipe.zadd(deleted, {cmd.comment_id or "": now})
            pipe.zremrangebyrank(deleted, 0, -(2 * hub.config.history_size + 1))
        ttl = max(1, int(hub.config.room_ttl_s))
        pipe.expire(key, ttl)  # the room's moderation lives as long as the room's other keys
        if cmd.action == "delete":
            pipe.expire(hub.keys.deleted(room_name), ttl)
        detail = {k: v for k, v in control.items() if k not in ("kind", "action") and v is not None}
        if cmd.reason:
            detail["reason"] = cmd.reason
        fields = audit_fields(actor, cmd.action, room_name, target, detail)
        pipe.xadd(hub.keys.audit(), fields, maxlen=hub.config.audit_max, approximate=True)
        try:
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            removed = False
            if cmd.action == "delete" and cmd.comment_id:
                removed = await hub.delete_from_history(room_name, cmd.comment_id)
        except Exception as exc:
            hub.stats.redis_errors += 1
            raise ServiceUnavailable(f"moderation store unavailable: {exc}") from exc
        logger.info("audit: %s", fields)
        room = hub.rooms.get(room_name)
        if room is not None:
            await self._apply_local(room, control)
        hub.post_control(room_name, control)
        if cmd.action == "delete" and cmd.comment_id:
            hub.post_deleted(room_name, cmd.comment_id, propagate=True)
        if cmd.action in ("slow_mode", "room_mute", "room_unmute"):
            hub.post_notice(
                room_name,
                {"type": "room_state", "data": self.room_state(room_name, control), "ts": now},
                propagate=True,
            )
        if cmd.user_id and cmd.action in ("mute", "ban", "unmute", "unban"):
            await hub.send_direct(
                room_name,
                cmd.user_id,
                "moderated",
                {
                    "room": room_name,
                    "action": cmd.action,
                    "until": until or None,
                    "reason": cmd.reason,
                },
                propagate=True,
            )
        await self.bus.emit(
            DanmakuModeration(
                room=room_name, action=cmd.action, target=target, actor=actor.as_dict(), **detail
            )
        )
        result: dict[str, Any] = {"ok": True, "action": cmd.action, "room": room_name}
        if cmd.action == "delete":
            result["removed_from_history"] = removed
        if until:
            result["until"] = until
        return result

    def room_state(self, room_name: str, control: dict[str, Any]) -> dict[str, Any]:
        room = self.hub.rooms.get(room_name)
        return {
            "room": room_name,
            "slow_mode_s": control.get("slow_mode_s", room.slow_mode_s if room else 0.0),
            "room_muted": control.get("room_muted", room.room_muted if room else False),
        }

    async def _apply_local(self, room: Room, control: dict[str, Any]) -> None:
        action = control.get("action")
        uid = control.get("user_id")
        if action == "mute" and isinstance(uid, str):
            room.muted[uid] = float(control.get("until") or 0)
        elif action == "unmute" and isinstance(uid, str):
            room.muted.pop(uid, None)
        elif action == "ban" and isinstance(uid, str):
            room.banned[uid] = float(control.get("until") or 0)
            await self.hub.kick(room.name, uid, "banned")
        elif action == "unban" and isinstance(uid, str):
            room.banned.pop(uid, None)
        elif action == "slow_mode":
            room.slow_mode_s = float(control.get("slow_mode_s") or 0)
        elif action in ("room_mute", "room_unmute"):
            room.room_muted = bool(control.get("room_muted"))

    async def _on_remote(self, room: Room, control: dict[str, Any]) -> None:
        if control.get("kind") == "mod":
            await self._apply_local(room, control)

    async def audit_log(self, room: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first; filtered by room when given (scans at most 10x ``limit`` entries)."""
        raw = await asyncio.wait_for(
            self.hub.redis.xrevrange(self.hub.keys.audit(), count=limit * 10 if room else limit),
            REDIS_TIMEOUT,
        )
        out: list[dict[str, Any]] = []
        for entry_id, fields in raw:
            item = {
                (k.decode() if isinstance(k, bytes) else k): (
                    v.decode() if isinstance(v, bytes) else v
                )
                for k, v in fields.items()
            }
            if room and item.get("room") != room:
                continue
            try:
                item["detail"] = json.loads(item.get("detail") or "{}")
            except ValueError:
                pass
            item["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            out.append(item)
            if len(out) >= limit:
                break
        return out
