"""Signed, expiring push URLs.

Native form: ``rtmp://HOST/APP/STREAM?expire=<unix s>[&nbf=<unix s>][&kv=<key version>]&sign=<hex>``
where ``sign`` is HMAC-SHA256(secret, ``"APP/STREAM:EXPIRE:NBF:KV"``) (NBF ``0`` and KV empty
when absent). ``nbf`` (not before) lets a broadcast's URL open shortly before its start;
``kv`` is the key version the control plane stores per stream in Redis (see
:func:`current_key_version`): rotating it revokes every URL issued before.

Tencent Cloud form, accepted when a key is
configured: ``?txSecret=MD5(key + STREAM + txTime)&txTime=<expiry, upper-case hex>``. That
scheme signs neither the app nor a key version, so it is accepted only for the configured
app (``ingest.tencent_app``) and only while the stream's key was never rotated: a rotation
or revocation ends every txSecret URL of that stream.

Expiry is checked only when a publish starts: a stream already publishing keeps going.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    reason: str = ""
    expire: int | None = None


KEY_VERSIONS = "berrylive:pushkeys"
"""Redis hash ``APP/STREAM -> key version``; a URL must carry the current version if set."""


STREAM_BANS = "berrylive:streamban:"
"""Redis key prefix ``APP/STREAM -> JSON {reason, by, at, until}`` of a banned stream name
(set by the control plane, with the ban's expiry; ``until`` null: until lifted). Every
node's publish (RTMP and WHIP) reads it, so a ban holds on every origin."""


STREAM_BAN_INDEX = "berrylive:streambans"
"""Redis hash ``APP/STREAM -> until`` (0: until lifted) listing the bans for the console;
the ban itself is the key :func:`ban_key` (an entry whose key expired is dropped on read)."""


def ban_key(app: str, stream: str) -> str:
    return f"{STREAM_BANS}{app}/{stream}"


def ban_refusal(raw: object) -> str | None:
    """The refusal reason of a stored ban (``None``: no ban)."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        ban = json.loads(text)
    except ValueError:
        ban = {}
    if not isinstance(ban, dict):
        ban = {}
    until = ban.get("until")
    if isinstance(until, int | float) and until <= time.time():
        return None
    reason = ban.get("reason") if isinstance(ban.get("reason"), str) else ""
    when = (
        time.strftime(" until %Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
        if isinstance(until, int | float)
        else ""
    )
    return f"stream name is banned{when}" + (f": {reason}" if reason else "")


async def stream_ban(redis: object, app: str, stream: str) -> str | None:
    """Why APP/STREAM may not publish now (a control-plane ban), or None."""
    return ban_refusal(await redis.get(ban_key(app, stream)))  # type: ignore[attr-defined]


def sign(secret: str, app: str, stream: str, expire: int, nbf: int = 0, kv: str = "") -> str:
    msg = f"{app}/{stream}:{expire}:{nbf}:{kv}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def push_query(secret: str, app: str, stream: str, expire: int, nbf: int = 0, kv: str = "") -> str:
    params = {"expire": str(expire)}
    if nbf:
        params["nbf"] = str(nbf)
    if kv:
        params["kv"] = kv
    params["sign"] = sign(secret, app, stream, expire, nbf, kv)
    return urlencode(params)


def push_url(
    base: str, secret: str, app: str, stream: str, expire: int, nbf: int = 0, kv: str = ""
) -> str:
    """``base`` like ``rtmp://host:1935``."""
    query = push_query(secret, app, stream, expire, nbf, kv)
    return f"{base.rstrip('/')}/{app}/{stream}?{query}"


async def current_key_version(redis: object, app: str, stream: str) -> str | None:
    """The key version the control plane set for APP/STREAM (None: any version is fine)."""
    value = await redis.hget(KEY_VERSIONS, f"{app}/{stream}")  # type: ignore[attr-defined]
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _same(expected_hex: str, given: str) -> bool:
    """Constant-time compare of a hex digest with what a URL carries (any characters:
    ``compare_digest`` refuses non-ASCII str, so both are compared as UTF-8 bytes)."""
    return hmac.compare_digest(expected_hex.encode(), given.lower().encode("utf-8", "replace"))


def tencent_sign(key: str, stream: str, expire: int) -> tuple[str, str]:
    tx_time = format(expire, "X")
    return hashlib.md5((key + stream + tx_time).encode()).hexdigest(), tx_time


def verify(
    secret: str,
    app: str,
    stream: str,
    query: str,
    now: float,
    tencent_key: str = "",
    key_version: str | None = None,
    tencent_app: str = "live",
) -> AuthResult:
    """Check the signature in ``query`` (the part after ``?``) for APP/STREAM at ``now``.

    ``key_version``: the stream's current key version, if the control plane set one.
    """
    params = parse_qs(query, keep_blank_values=True)

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    if one("txSecret") is not None or one("txTime") is not None:
        if not tencent_key:
            return AuthResult(False, "txSecret URLs are not enabled on this server")
        if app != tencent_app:
            return AuthResult(False, f"txSecret URLs are accepted for the app {tencent_app!r} only")
        if key_version is not None:
            return AuthResult(False, "push URL was revoked (stream key rotated)")
        tx_secret, tx_time = one("txSecret") or "", one("txTime") or ""
        try:
            expire = int(tx_time, 16)
        except ValueError:
            return AuthResult(False, "txTime is not a hexadecimal time")
        want = hashlib.md5((tencent_key + stream + tx_time).encode()).hexdigest()
        if not _same(want, tx_secret):
            return AuthResult(False, "txSecret does not match this stream")
        if expire < now:
            return AuthResult(False, f"push URL expired at {expire}", expire)
        return AuthResult(True, expire=expire)

    signature, expire_s = one("sign"), one("expire")
    if signature is None or expire_s is None:
        return AuthResult(False, "push URL is not signed (missing expire/sign)")
    try:
        expire = int(expire_s)
        nbf = int(one("nbf") or "0")
    except ValueError:
        return AuthResult(False, "expire/nbf is not a number")
    kv = one("kv") or ""
    if not _same(sign(secret, app, stream, expire, nbf, kv), signature):
        return AuthResult(False, "signature does not match this app/stream")
    if key_version is not None and kv != key_version:
        return AuthResult(False, "push URL was revoked (stream key rotated)", expire)
    if expire < now:
        return AuthResult(False, f"push URL expired at {expire}", expire)
    if nbf and now < nbf:
        return AuthResult(False, f"push URL is not valid before {nbf}", expire)
    return AuthResult(True, expire=expire)
