"""Accounts: operators, anchors and moderators; argon2 passwords; bearer tokens; login limits.

Tokens are random strings shown once (``blk_<kind>_<random>``); only their SHA-256 is
stored. A *session* token comes from ``POST /api/auth/login`` and expires after
``session_ttl``; an *API* token is created by its owner, optionally expiring, revocable.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.models import tokens, users

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
MAX_PASSWORD = 1024
MIN_PASSWORD = 8


class Role(StrEnum):
    OPERATOR = "operator"
    ANCHOR = "anchor"
    MODERATOR = "moderator"


class AccountError(ValueError):
    """Bad account input (name taken, weak password...): becomes a 4xx."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class User:
    id: int
    username: str
    display_name: str
    role: Role
    disabled: bool
    created_at: float


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, and which token (id, kind, expiry) they came with."""

    user: User
    token_id: int
    token_kind: str
    expires_at: float | None

    @property
    def role(self) -> Role:
        return self.user.role


@dataclass(frozen=True)
class TokenInfo:
    id: int
    user_id: int
    kind: str
    name: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None
    revoked_at: float | None


def _user(row: Any) -> User:
    return User(
        id=row.id,
        username=row.username,
        display_name=row.display_name,
        role=Role(row.role),
        disabled=bool(row.disabled),
        created_at=row.created_at,
    )


def _token(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Accounts:
    """Users and tokens in the database; password hashing off the event loop."""

    def __init__(self, engine: AsyncEngine, session_ttl: int = 12 * 3600) -> None:
        self.engine = engine
        self.session_ttl = session_ttl
        self._hasher = PasswordHasher()
        self._dummy_hash = self._hasher.hash("not-a-real-password")

    # -- passwords -----------------------------------------------------------------
    @staticmethod
    def check_password_strength(password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise AccountError(
                "weak_password", f"password needs at least {MIN_PASSWORD} characters"
            )
        if len(password) > MAX_PASSWORD:
            raise AccountError("invalid", f"password is longer than {MAX_PASSWORD} characters")

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    # -- users ---------------------------------------------------------------------
    async def create_user(
        self, username: str, password: str, role: Role, display_name: str = ""
    ) -> User:
        if not USERNAME_RE.match(username):
            raise AccountError(
                "invalid", "username: 2-64 characters of letters, digits, '_', '.', '-'"
            )
        self.check_password_strength(password)
        pw_hash = await self._hash(password)
        now = time.time()
        async with self.engine.begin() as conn:
            exists = await conn.scalar(
                sa.select(users.c.id).where(sa.func.lower(users.c.username) == username.lower())
            )
            if exists is not None:
                raise AccountError("conflict", f"user {username!r} already exists")
            result = await conn.execute(
                users.insert().values(
                    username=username,
                    display_name=display_name,
                    role=role.value,
                    password_hash=pw_hash,
                    disabled=False,
                    created_at=now,
                )
            )
            user_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        user = await self.get_user(user_id)
        assert user is not None
        return user

    async def get_user(self, user_id: int) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(users.select().where(users.c.id == user_id))).first()
        return _user(row) if row else None

    async def get_user_by_name(self, username: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    users.select().where(sa.func.lower(users.c.username) == username.lower())
                )
            ).first()
        return _user(row) if row else None

    async def list_users(
        self, limit: int, offset: int, role: Role | None = None
    ) -> tuple[list[User], int]:
        q = users.select()
        count_q = sa.select(sa.func.count()).select_from(users)
        if role is not None:
            q = q.where(users.c.role == role.value)
            count_q = count_q.where(users.c.role == role.value)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(users.c.id).limit(limit).offset(offset))).all()
            total = int(await conn.scalar(count_q) or 0)
        return [_user(r) for r in rows], total

    async def count_users(self) -> int:
        async with self.engine.connect() as conn:
            return int(await conn.scalar(sa.select(sa.func.count()).select_from(users)) or 0)

    async def update_user(
        self,
        user_id: int,
        *,
        display_name: str | None = None,
        role: Role | None = None,
        password: str | None = None,
        disabled: bool | None = None,
    ) -> User | None:
        values: dict[str, Any] = {}
        if display_name is not None:
            values["display_name"] = display_name
        if role is not None:
            values["role"] = role.value
        if disabled is not None:
            values["disabled"] = disabled
        if password is not None:
            self.check_password_strength(password)
            values["password_hash"] = await self._hash(password)
        async with self.engine.begin() as conn:
            if values:
                await conn.execute(users.update().where(users.c.id == user_id).values(**values))
            if password is not None or disabled:
                # a new password or a disabled account ends every session
                await conn.execute(
                    tokens.update()
                    .where(
                        tokens.c.user_id == user_id,
                        tokens.c.kind == "session",
                        tokens.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=time.time())
                )
        return await self.get_user(user_id)

    async def delete_user(self, user_id: int) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(users.delete().where(users.c.id == user_id))
        return bool(result.rowcount)

    # -- login and tokens -----------------------------------------------------------
    async def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches and the account is enabled (constant-ish time)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    users.select().where(sa.func.lower(users.c.username) == username.lower())
                )
            ).first()
        if row is None:
            await self._verify(self._dummy_hash, password)
            return None
        if not await self._verify(row.password_hash, password):
            return None
        if row.disabled:
            return None
        if self._hasher.check_needs_rehash(row.password_hash):
            new_hash = await self._hash(password)
            async with self.engine.begin() as conn:
                await conn.execute(
                    users.update().where(users.c.id == row.id).values(password_hash=new_hash)
                )
        return _user(row)

    async def issue_token(
        self, user_id: int, kind: str, name: str = "", ttl: float | None = None
    ) -> tuple[str, TokenInfo]:
        token = f"blk_{kind[0]}_{secrets.token_urlsafe(32)}"
        now = time.time()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                tokens.insert().values(
                    user_id=user_id,
                    kind=kind,
                    name=name,
                    token_hash=hash_token(token),
                    created_at=now,
                    expires_at=None if ttl is None else now + ttl,
                )
            )
            token_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            row = (await conn.execute(tokens.select().where(tokens.c.id == token_id))).one()
        return token, _token(row)

    async def resolve(self, token: str, now: float | None = None) -> Principal | str:
        """The principal for a bearer token, or why not: ``invalid``, ``expired``, ``revoked``."""
        now = time.time() if now is None else now
        if len(token) > 200:
            return "invalid"
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tokens, users.c.username)
                    .join(users, users.c.id == tokens.c.user_id)
                    .where(tokens.c.token_hash == hash_token(token))
                )
            ).first()
            if row is None:
                return "invalid"
            if row.revoked_at is not None:
                return "revoked"
            if row.expires_at is not None and row.expires_at <= now:
                return "expired"
            user_row = (await conn.execute(users.select().where(users.c.id == row.user_id))).one()
        user = _user(user_row)
        if user.disabled:
            return "revoked"
        if row.last_used_at is None or now - row.last_used_at > 60:
            async with self.engine.begin() as conn:
                await conn.execute(
                    tokens.update().where(tokens.c.id == row.id).values(last_used_at=now)
                )
        return Principal(user=user, token_id=row.id, token_kind=row.kind, expires_at=row.expires_at)

    async def list_tokens(
        self, user_id: int, limit: int, offset: int
    ) -> tuple[list[TokenInfo], int]:
        cond = sa.and_(tokens.c.user_id == user_id, tokens.c.kind == "api")
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    tokens.select().where(cond).order_by(tokens.c.id).limit(limit).offset(offset)
                )
            ).all()
            total = int(
                await conn.scalar(sa.select(sa.func.count()).select_from(tokens).where(cond)) or 0
            )
        return [_token(r) for r in rows], total

    async def revoke_token(self, token_id: int, user_id: int | None = None) -> bool:
        cond = [tokens.c.id == token_id, tokens.c.revoked_at.is_(None)]
        if user_id is not None:
            cond.append(tokens.c.user_id == user_id)
        async with self.engine.begin() as conn:
            result = await conn.execute(tokens.update().where(*cond).values(revoked_at=time.time()))
        return bool(result.rowcount)


class LoginLimiter:
    """Failed-login counters in Redis, per user name and per client address.

    Checked before the password is: once over the limit, even the right password is
    refused until the window passes (``Retry-After`` says how long).
    """

    PREFIX = "berrylive:control:loginfail:"

    def __init__(self, redis: Any, max_user: int, max_ip: int, window: int) -> None:
        self.redis = redis
        self.max_user = max_user
        self.max_ip = max_ip
        self.window = window

    def _keys(self, username: str, ip: str) -> tuple[str, str]:
        digest = hashlib.sha256(username.lower().encode()).hexdigest()[:32]
        return self.PREFIX + "u:" + digest, self.PREFIX + "ip:" + ip

    async def blocked_for(self, username: str, ip: str) -> int:
        """Seconds until another attempt is allowed (0: allowed now)."""
        ukey, ikey = self._keys(username, ip)
        ucount, icount = await self.redis.mget(ukey, ikey)
        wait = 0
        for key, count, limit in ((ukey, ucount, self.max_user), (ikey, icount, self.max_ip)):
            if count is not None and int(count) >= limit:
                ttl = int(await self.redis.ttl(key))
                wait = max(wait, ttl if ttl > 0 else self.window)
        return wait

    async def failed(self, username: str, ip: str) -> None:
        ukey, ikey = self._keys(username, ip)
        pipe = self.redis.pipeline(transaction=False)
        for key in (ukey, ikey):
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
        await pipe.execute()

    async def succeeded(self, username: str, ip: str) -> None:
        ukey, _ = self._keys(username, ip)
        await self.redis.delete(ukey)
