"""Signed viewer tokens: ``v1.<base64url(json claims)>.<base64url(hmac-sha256)>``.

The control plane calls :func:`issue_token` after it has authenticated a user; the danmaku
hub verifies it on connect and the shop identifies buyers by it. Claims: ``uid`` (user
id), ``nick``, ``role`` (viewer / anchor / moderator / operator), ``exp`` (Unix seconds),
optionally ``ca`` (when the account was created, Unix seconds) and ``room``:
when set, the anchor/moderator role applies only in that room (elsewhere the holder is a
viewer). The key is derived from ``server.secret`` so the token cannot be confused with
other signatures made from the same secret.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import time
from dataclasses import dataclass
from enum import StrEnum

import orjson

__all__ = ["Role", "TokenError", "Viewer", "issue_token", "verify_token"]

_VERSION = "v1"
MAX_TOKEN_BYTES = 2048
MAX_NICK_CHARS = 32
MAX_UID_CHARS = 64


class Role(StrEnum):
    ANONYMOUS = "anonymous"
    VIEWER = "viewer"
    ANCHOR = "anchor"
    MODERATOR = "moderator"
    OPERATOR = "operator"

    @property
    def privileged(self) -> bool:
        """Anchor, moderator and operator comments are never sampled away."""
        return self in (Role.ANCHOR, Role.MODERATOR, Role.OPERATOR)

    @property
    def moderates(self) -> bool:
        return self in (Role.MODERATOR, Role.OPERATOR)


class TokenError(ValueError):
    """The token is malformed, badly signed or expired; ``code`` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Viewer:
    user_id: str
    nick: str
    role: Role
    expires: float
    room: str | None = None
    created: float | None = None
    """When the holder's account was created (Unix seconds), if the issuer said so
    (claim ``ca``): the shop's flash sales may refuse accounts younger than N minutes."""
    issued: float | None = None
    """When the token was issued (claim ``iat``; tokens from before it existed have none):
    a staff account's hub tokens issued before its revocation are refused."""

    def role_in(self, room: str) -> Role:
        """The effective role in ``room`` (a room-bound anchor/moderator is a viewer elsewhere)."""
        if self.role in (Role.ANCHOR, Role.MODERATOR) and self.room not in (None, room):
            return Role.VIEWER
        return self.role


@functools.lru_cache(maxsize=8)
def _key(secret: str) -> bytes:
    """The signing key derived from the server secret (a handful of secrets per process)."""
    return hmac.digest(secret.encode(), b"berrylive.danmaku.token.v1", "sha256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    secret: str,
    user_id: str,
    nick: str,
    role: Role | str = Role.VIEWER,
    *,
    ttl: float = 86400,
    room: str | None = None,
    now: float | None = None,
    created: float | None = None,
) -> str:
    """A token for ``user_id`` valid ``ttl`` seconds from ``now``."""
    if not secret:
        raise ValueError("secret must not be empty")
    role = Role(role)
    if role is Role.ANONYMOUS:
        raise ValueError("anonymous viewers have no token")
    if not user_id or len(user_id) > MAX_UID_CHARS:
        raise ValueError(f"user_id must be 1..{MAX_UID_CHARS} characters")
    if len(nick) > MAX_NICK_CHARS:
        raise ValueError(f"nick must be at most {MAX_NICK_CHARS} characters")
    issued = round(time.time() if now is None else now, 3)  # ms: a revocation is exact
    exp = int(issued + ttl)
    claims: dict[str, object] = {
        "uid": user_id,
        "nick": nick,
        "role": role.value,
        "exp": exp,
        "iat": issued,
    }
    if room is not None:
        claims["room"] = room
    if created is not None:
        claims["ca"] = int(created)
    body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    signed = f"{_VERSION}.{body}"
    sig = hmac.digest(_key(secret), signed.encode(), "sha256")
    return f"{signed}.{_b64(sig)}"


def verify_token(secret: str, token: object, *, now: float | None = None) -> Viewer:
    """The viewer a token names, or :class:`TokenError` saying why not."""
    if not isinstance(token, str) or not token:
        raise TokenError("bad_token", "token must be a non-empty string")
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("bad_token", "token too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise TokenError("bad_token", "token is not a berrylive v1 token")
    try:
        sig = _unb64(parts[2])
        raw = _unb64(parts[1])
    except (binascii.Error, ValueError):
        raise TokenError("bad_token", "token is not base64url") from None
    expected = hmac.digest(_key(secret), f"{parts[0]}.{parts[1]}".encode(), "sha256")
    if not hmac.compare_digest(sig, expected):
        raise TokenError("bad_signature", "token signature does not match")
    try:
        claims = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TokenError("bad_token", "token claims are not JSON") from None
    if not isinstance(claims, dict):
        raise TokenError("bad_token", "token claims must be an object")
    uid, nick, role, exp = (claims.get(k) for k in ("uid", "nick", "role", "exp"))
    room = claims.get("room")
    if not isinstance(uid, str) or not uid or not isinstance(nick, str):
        raise TokenError("bad_token", "token lacks uid/nick")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise TokenError("bad_token", "token lacks exp")
    if room is not None and not isinstance(room, str):
        raise TokenError("bad_token", "token room must be a string")
    created = claims.get("ca")
    if created is not None and (not isinstance(created, int) or isinstance(created, bool)):
        raise TokenError("bad_token", "token ca (account created) must be Unix seconds")
    issued = claims.get("iat")
    if issued is not None and (not isinstance(issued, int | float) or isinstance(issued, bool)):
        raise TokenError("bad_token", "token iat must be Unix seconds")
    try:
        role_v = Role(str(role))
    except ValueError:
        raise TokenError("bad_token", f"unknown role {role!r}") from None
    if role_v is Role.ANONYMOUS:
        raise TokenError("bad_token", "anonymous is not a token role")
    if exp < (time.time() if now is None else now):
        raise TokenError("token_expired", "token expired")
    return Viewer(
        user_id=uid,
        nick=nick,
        role=role_v,
        expires=float(exp),
        room=room,
        created=None if created is None else float(created),
        issued=None if issued is None else float(issued),
    )
