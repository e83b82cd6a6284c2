"""The hub's Redis layout: every key and channel (room keys share a hash tag, for Redis
Cluster), the deadline of its calls, and how replies are read."""

from __future__ import annotations

from typing import Any

__all__ = ["REDIS_TIMEOUT", "Keys", "decode"]

REDIS_TIMEOUT = 2.0
"""Deadline of every Redis call of the hub (seconds)."""


def decode(raw: Any) -> str:
    """A Redis reply as text."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Keys:
    """Names under ``prefix`` (``danmaku.redis_prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def history(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:history"

    def likes(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:likes"

    def presence(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:presence"

    def users(self, room: str) -> str:
        """Users present in the room by node reports (a sorted set scored by report time),
        kept only while a lottery of the room draws among those present."""
        return f"{self.prefix}room:{{{room}}}:users"

    def moderation(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:mod"

    def deleted(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:deleted"

    def room_lotteries(self, room: str) -> str:
        return f"{self.prefix}room:{{{room}}}:lotteries"

    def lottery_index(self, room: str) -> str:
        """Sorted set of the room's lotteries by creation time (``GET /api/danmaku/lotteries``):
        bounded to the newest :data:`danmaku.lottery.INDEX_MAX`, expiring with the lotteries."""
        return f"{self.prefix}room:{{{room}}}:lotidx"

    def channel(self, room: str) -> str:
        return f"{self.prefix}ch:{room}"

    def node_mark(self, room: str, tag: str) -> str:
        """A channel nobody publishes on: node ``tag``'s subscriber subscribes it in the same
        SUBSCRIBE (and UNSUBSCRIBE) as the room channel, so ``PUBSUB NUMSUB`` of the two
        tells the writer's script whether any *other* node listens to the room."""
        return f"{self.prefix}sub:{tag}:{room}"

    def room_of_channel(self, channel: str) -> str:
        return channel[len(self.channel("")) :]

    def audit(self) -> str:
        return f"{self.prefix}audit"

    def lottery(self, lottery_id: str, part: str) -> str:
        return f"{self.prefix}lot:{{{lottery_id}}}:{part}"

    def lotteries_owed(self) -> str:
        """Lotteries some of whose prizes may not be in the outbox yet (a sorted set,
        scored by creation time): :meth:`LotteryService.deliver_owed` works through it."""
        return f"{self.prefix}lot:owed"
