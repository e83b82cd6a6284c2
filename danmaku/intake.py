"""Input checks: whether a member may post this comment or these likes, now.

Order of the checks for a comment: the payload (:func:`parse_comment`), ban, mute, room
mute, slow mode, the per-user token bucket; then the word filter masks what it must.
Each refusal is a :class:`PayloadError` with a code the client can act on (``retry_after``
where waiting helps). Anchors, moderators and operators skip room mute and slow mode.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from danmaku.config import DanmakuConfig
from danmaku.payloads import PayloadError, parse_comment, parse_like
from danmaku.ratelimit import Buckets
from danmaku.rooms import Member, Room
from danmaku.stats import HubStats
from danmaku.wordfilter import WordFilter

__all__ = ["MAX_LAST_COMMENT_PER_ROOM", "Accepted", "Intake"]

MAX_LAST_COMMENT_PER_ROOM = 50000


class Accepted:
    """A comment that passed the checks: what is delivered, and what the user typed."""

    __slots__ = ("comment", "masked", "privileged", "typed")

    def __init__(self, comment: dict[str, Any], typed: str, masked: bool, privileged: bool) -> None:
        self.comment = comment
        self.typed = typed
        self.masked = masked
        self.privileged = privileged


class Intake:
    def __init__(
        self,
        config: DanmakuConfig,
        word_filter: WordFilter | None,
        stats: HubStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.filter = word_filter
        self.stats = stats
        self.tag = secrets.token_hex(3)
        """This process's comment id prefix (and its mark on envelopes it publishes)."""
        self._clock = clock
        self._seq = itertools.count(1)
        self._buckets = Buckets(config.rate_capacity, config.rate_per_s, config.max_users_tracked)
        self._like_buckets = Buckets(
            float(config.likes_max_per_message), config.likes_per_s, config.max_users_tracked
        )

    def next_id(self) -> str:
        return f"{self.tag}-{next(self._seq):x}"

    def comment(self, member: Member, room: Room, data: Any) -> Accepted:
        """Check one comment; raises :class:`PayloadError` with the reason when refused."""
        if member.viewer is None:
            raise PayloadError("not_authenticated", "anonymous viewers cannot comment; log in")
        cfg = self.config
        parsed = parse_comment(data, cfg.max_comment_chars)
        now = self._clock()
        uid = member.viewer.user_id
        if room.banned_until(uid, now) is not None:
            raise PayloadError("banned", "you are banned from this room")
        until = room.muted_until(uid, now)
        if until is not None:
            raise PayloadError("muted", "you are muted in this room", until=until or None)
        privileged = member.role.privileged
        if room.room_muted and not privileged:
            raise PayloadError("room_muted", "comments are closed in this room for now")
        mono = time.monotonic()
        if room.slow_mode_s > 0 and not privileged:
            last = room.last_comment.get(uid)
            if last is not None and mono - last < room.slow_mode_s:
                wait = round(room.slow_mode_s - (mono - last), 2)
                raise PayloadError("slow_mode", f"slow mode: wait {wait}s", retry_after=wait)
        wait_rl = self._buckets.take(uid, mono)
        if wait_rl > 0:
            raise PayloadError(
                "rate_limited", "too many comments; slow down", retry_after=round(wait_rl, 2)
            )
        if room.slow_mode_s > 0 and not privileged:
            room.last_comment[uid] = mono
            room.last_comment.move_to_end(uid)
            if len(room.last_comment) > MAX_LAST_COMMENT_PER_ROOM:
                room.last_comment.popitem(last=False)
        text, masked = self.filter.clean(parsed.text) if self.filter else (parsed.text, False)
        if masked:
            self.stats.comments_filtered += 1
        comment = {
            "id": self.next_id(),
            "user": uid,
            "nick": member.viewer.nick,
            "text": text,
            "ts": int(now * 1000),
            "role": member.role.value,
        }
        return Accepted(comment, parsed.text, masked, privileged)

    def likes(self, member: Member, data: Any) -> int:
        """Check one ``like`` message; the number of likes it adds."""
        if member.viewer is None:
            raise PayloadError("not_authenticated", "anonymous viewers cannot like; log in")
        count = parse_like(data, self.config.likes_max_per_message)
        wait = self._like_buckets.take(member.viewer.user_id, time.monotonic(), float(count))
        if wait > 0:
            raise PayloadError("rate_limited", "too many likes", retry_after=round(wait, 2))
        return count
