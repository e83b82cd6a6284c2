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
                # a new password or a disabled account ends every token, sessions and API
                # tokens alike: whoever knew the old password could have minted API tokens
                # (POST /api/tokens), and they must not outlive the change
                await conn.execute(
                    tokens.update()
                    .where(tokens.c.user_id == user_id, tokens.c.revoked_at.is_(None))
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


@dataclass(frozen=True)
class Attempt:
    """What the limiter decided for one login attempt (already counted)."""

    wait: int
    """Refused: seconds until this address may try this account (or any account) again."""
    delay: float
    """Allowed, but only after this many seconds (the account is being guessed at)."""


class LoginLimiter:
    """Login attempts counted in Redis **before** the password is checked.

    Each attempt is counted first (``INCR``, one atomic step per counter, the window set
    on the first), and only then is the password verified: twenty concurrent guesses get
    twenty distinct counts, and only those under the limit are verified.

    * per account **and** address (``max_user``, 5 in ``window``): over it, this address
      may not try this account until the window passes (``429`` with ``Retry-After``),
      even with the right password. A successful login from the address clears it.
    * per address (``max_ip``, 30): over it, the address may not try any account.
    * per account, from every address: never a lock-out (that would let anyone lock a
      known user out from everywhere by guessing); past ``SLOW_AFTER`` times
      ``max_user`` attempts in the window each attempt waits a little longer before its
      verification (``DELAY_STEP`` a step, at most ``MAX_DELAY``), slowing a guessing
      attack spread over many addresses while the user can still sign in.

    A successful login refunds its own count on the address and account counters, so
    they count failures (an attacker holding one account cannot reset an address's count
    by signing in with it: only the successful attempt itself is refunded).
    """

    PREFIX = "berrylive:control:login:"
    SLOW_AFTER = 4
    DELAY_STEP = 0.25
    MAX_DELAY = 5.0

    def __init__(self, redis: Any, max_user: int, max_ip: int, window: int) -> None:
        self.redis = redis
        self.max_user = max_user
        self.max_ip = max_ip
        self.window = window

    def _keys(self, username: str, ip: str) -> tuple[str, str, str]:
        user = hashlib.sha256(username.lower().encode()).hexdigest()[:32]
        addr = hashlib.sha256(ip.encode()).hexdigest()[:32]
        return (
            f"{self.PREFIX}ua:{user}:{addr}",
            f"{self.PREFIX}ip:{addr}",
            f"{self.PREFIX}u:{user}",
        )

    async def attempt(self, username: str, ip: str) -> Attempt:
        """Count one attempt (before verifying it) and say whether it may go on."""
        keys = self._keys(username, ip)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.incr(key)
            pipe.expire(key, self.window, nx=True)
            pipe.ttl(key)
        out = await pipe.execute()
        counts = [int(out[i * 3]) for i in range(3)]
        ttls = [int(out[i * 3 + 2]) for i in range(3)]
        wait = 0
        for count, ttl, limit in zip(counts, ttls, (self.max_user, self.max_ip), strict=False):
            if count > limit:
                wait = max(wait, ttl if ttl > 0 else self.window)
        if wait:
            return Attempt(wait, 0.0)
        over = counts[2] - self.SLOW_AFTER * self.max_user
        delay = min(self.MAX_DELAY, over * self.DELAY_STEP) if over > 0 else 0.0
        return Attempt(0, delay)

    async def succeeded(self, username: str, ip: str) -> None:
        """The attempt was right: this address's count for the account is cleared, and
        the attempt is refunded from the address's and the account's counts."""
        pair, addr, user = self._keys(username, ip)
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(pair)
        pipe.decr(addr)
        pipe.decr(user)
        await pipe.execute()
