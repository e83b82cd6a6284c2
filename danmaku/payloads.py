"""Validation of what clients send. Everything wrong becomes a :class:`PayloadError`.

Payloads arrive already JSON-decoded by Socket.IO, so a string may still hold lone
surrogates (``"\\ud800"`` is valid JSON): such text is rejected here, because one comment
that cannot be encoded as UTF-8 would otherwise break the batch frame for the whole room.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CommentIn",
    "PayloadError",
    "parse_comment",
    "parse_join",
    "parse_like",
    "parse_lottery_enter",
    "parse_moderate",
]

MAX_ID_CHARS = 128
MAX_ROOM_CHARS = 200
MODERATION_ACTIONS = (
    "mute",
    "unmute",
    "ban",
    "unban",
    "delete",
    "slow_mode",
    "room_mute",
    "room_unmute",
)


class PayloadError(ValueError):
    """A client payload is unusable; ``code`` is machine-readable, the message is for people."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), **self.extra}


@dataclass(frozen=True, slots=True)
class CommentIn:
    text: str


def _check_utf8(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("bad_encoding", f"{what} is not valid Unicode text") from None


def clean_text(text: str, max_chars: int) -> str:
    """Trimmed, NFC-normalised text without control or bidi-override characters."""
    if len(text) > max_chars * 4 + 64:  # cheap bound before any per-character work
        raise PayloadError("too_long", f"comment over {max_chars} characters", max=max_chars)
    if not (text.isascii() and text.isprintable()):  # printable ASCII: nothing to change
        _check_utf8(text, "comment")
        text = unicodedata.normalize("NFC", text)
        text = "".join(
            " " if ch in "\t\n\r" else ch
            for ch in text
            if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
            or ch in "\t\n\r\u200d"
        )
    text = " ".join(text.split())
    if not text:
        raise PayloadError("empty", "comment is empty")
    if len(text) > max_chars:
        raise PayloadError("too_long", f"comment over {max_chars} characters", max=max_chars)
    return text


def parse_comment(data: Any, max_chars: int) -> CommentIn:
    """``"text"`` or ``{"text": "..."}``."""
    if isinstance(data, dict):
        unknown = set(data) - {"text"}
        if unknown:
            names = ", ".join(sorted(map(str, unknown)))[:100]
            raise PayloadError("bad_payload", f"unknown field(s): {names}")
        data = data.get("text")
    if not isinstance(data, str):
        raise PayloadError("bad_payload", 'comment must be a string or {"text": string}')
    return CommentIn(text=clean_text(data, max_chars))


def parse_like(data: Any, max_count: int) -> int:
    """``{"count": n}``, a bare ``n``, or nothing (one like)."""
    if data is None:
        return 1
    if isinstance(data, dict):
        if set(data) - {"count"}:
            raise PayloadError("bad_payload", 'like takes only {"count": integer}')
        data = data.get("count", 1)
    if not isinstance(data, int) or isinstance(data, bool):
        raise PayloadError("bad_payload", "like count must be an integer")
    if not 1 <= data <= max_count:
        raise PayloadError("bad_payload", f"like count must be 1..{max_count}", max=max_count)
    return data


def _opt_str(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise PayloadError("bad_payload", f"{key} must be a string of 1..{limit} characters")
    _check_utf8(value, key)
    return value


def parse_room(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ROOM_CHARS:
        raise PayloadError("bad_room", f"room must be a string of 1..{MAX_ROOM_CHARS} characters")
    _check_utf8(value, "room")
    if any(unicodedata.category(c)[0] in ("C", "Z") for c in value) or any(
        c in value for c in "*{}"
    ):
        raise PayloadError("bad_room", "room must not contain spaces, control characters, * { }")
    return value


def parse_join(auth: Any) -> tuple[str, str | None, str | None]:
    """Connect ``auth``: ``{"room": str, "token"?: str, "last_id"?: str}``."""
    if not isinstance(auth, dict):
        raise PayloadError("bad_auth", "auth must be an object with at least a room")
    room = parse_room(auth.get("room"))
    token = auth.get("token")
    if token is not None and not isinstance(token, str):
        raise PayloadError("bad_auth", "token must be a string")
    last_id = _opt_str(auth, "last_id", MAX_ID_CHARS)
    return room, token or None, last_id


def parse_lottery_enter(data: Any) -> str:
    if isinstance(data, dict):
        data = data.get("lottery_id")
    if not isinstance(data, str) or not 1 <= len(data) <= MAX_ID_CHARS:
        raise PayloadError("bad_payload", 'lottery_enter takes {"lottery_id": string}')
    _check_utf8(data, "lottery_id")
    return data


@dataclass(frozen=True, slots=True)
class ModerateIn:
    action: str
    user_id: str | None
    comment_id: str | None
    duration_s: float | None
    reason: str


def parse_moderate(data: Any) -> ModerateIn:
    """``{"action", "user_id"?, "comment_id"?, "duration_s"?, "reason"?}``."""
    if not isinstance(data, dict):
        raise PayloadError("bad_payload", "moderate takes an object")
    action = data.get("action")
    if action not in MODERATION_ACTIONS:
        raise PayloadError("bad_action", f"action must be one of {', '.join(MODERATION_ACTIONS)}")
    user_id = _opt_str(data, "user_id", MAX_ID_CHARS)
    comment_id = _opt_str(data, "comment_id", MAX_ID_CHARS)
    reason = _opt_str(data, "reason", 500) or ""
    duration = data.get("duration_s")
    if duration is not None:
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            raise PayloadError("bad_payload", "duration_s must be a number")
        if not 0 <= duration <= 366 * 86400:
            raise PayloadError("bad_payload", "duration_s must be 0..31622400")
    if action in ("mute", "unmute", "ban", "unban") and user_id is None:
        raise PayloadError("bad_payload", f"{action} needs user_id")
    if action == "delete" and comment_id is None:
        raise PayloadError("bad_payload", "delete needs comment_id")
    if action == "slow_mode" and duration is None:
        raise PayloadError("bad_payload", "slow_mode needs duration_s (0 turns it off)")
    return ModerateIn(
        action=action,
        user_id=user_id,
        comment_id=comment_id,
        duration_s=None if duration is None else float(duration),
        reason=reason,
    )
