"""Signed, expiring push URLs.

Native form: ``rtmp://HOST/APP/STREAM?expire=<unix seconds>&sign=<hex>`` where ``sign`` is
HMAC-SHA256(secret, ``"APP/STREAM:EXPIRE"``). Tencent Cloud form, accepted when a key is
configured: ``?txSecret=MD5(key + STREAM + txTime)&txTime=<expiry, upper-case hex>``.

Expiry is checked only when a publish starts: a stream already publishing keeps going.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode


@dataclass(frozen=True)
class AuthResult:
    ok: bool
    reason: str = ""
    expire: int | None = None


def sign(secret: str, app: str, stream: str, expire: int) -> str:
    msg = f"{app}/{stream}:{expire}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def push_query(secret: str, app: str, stream: str, expire: int) -> str:
    return urlencode({"expire": str(expire), "sign": sign(secret, app, stream, expire)})


def push_url(base: str, secret: str, app: str, stream: str, expire: int) -> str:
    """``base`` like ``rtmp://host:1935``."""
    return f"{base.rstrip('/')}/{app}/{stream}?{push_query(secret, app, stream, expire)}"


def tencent_sign(key: str, stream: str, expire: int) -> tuple[str, str]:
    tx_time = format(expire, "X")
    return hashlib.md5((key + stream + tx_time).encode()).hexdigest(), tx_time


def verify(
    secret: str, app: str, stream: str, query: str, now: float, tencent_key: str = ""
) -> AuthResult:
    """Check the signature in ``query`` (the part after ``?``) for APP/STREAM at ``now``."""
    params = parse_qs(query, keep_blank_values=True)

    def one(name: str) -> str | None:
        values = params.get(name)
        return values[-1] if values else None

    if one("txSecret") is not None or one("txTime") is not None:
        if not tencent_key:
            return AuthResult(False, "txSecret URLs are not enabled on this server")
        tx_secret, tx_time = one("txSecret") or "", one("txTime") or ""
        try:
            expire = int(tx_time, 16)
        except ValueError:
            return AuthResult(False, "txTime is not a hexadecimal time")
        want = hashlib.md5((tencent_key + stream + tx_time).encode()).hexdigest()
        if not hmac.compare_digest(want, tx_secret.lower()):
            return AuthResult(False, "txSecret does not match this stream")
        if expire < now:
            return AuthResult(False, f"push URL expired at {expire}", expire)
        return AuthResult(True, expire=expire)

    signature, expire_s = one("sign"), one("expire")
    if signature is None or expire_s is None:
        return AuthResult(False, "push URL is not signed (missing expire/sign)")
    try:
        expire = int(expire_s)
    except ValueError:
        return AuthResult(False, "expire is not a number")
    if not hmac.compare_digest(sign(secret, app, stream, expire), signature.lower()):
        return AuthResult(False, "signature does not match this app/stream")
    if expire < now:
        return AuthResult(False, f"push URL expired at {expire}", expire)
    return AuthResult(True, expire=expire)
