"""Abuse control: rate limits and a blocklist check shared by every node through Redis.

The mechanism (:class:`AbuseGuard`): one Redis script per event-loop turn of attempts
(:data:`CHECK_LUA`, keys under one hash tag so it runs on a cluster too) first looks the
account, the device and the IP up in the blocklist hash (403 ``blocked``), then counts the
attempt in one fixed window per account, device and IP and refuses beyond a limit (429
``rate_limited`` with the scope and ``Retry-After``). A refused attempt counts too.

Who owns what: the shop (``shop_bridge.abuse.Blocklist``) keeps the blocklist's records in
its database, mirrors them into the guard's Redis hash, builds the guard with its limits
(``shop.buy_limit_*``, ``shop.lottery_limit_*``, ``shop.rate_window``) and publishes it as
``app[ABUSE_GUARD]``; the danmaku hub's lottery entry calls ``check("lottery", ...)`` on
that same guard when the shop is mounted. Neither package imports the other.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "ABUSE_GUARD",
    "ACTIONS",
    "KINDS",
    "AbuseGuard",
    "Limits",
    "Refused",
    "normalise_entry",
]

logger = logging.getLogger(__name__)

ACTIONS = ("buy", "lottery")
KINDS = ("user", "device", "ip")
SCOPE_NAMES = {"user": "account", "device": "device", "ip": "IP address"}
DEFAULT_NAMES = {"lottery": "lottery entry"}
"""What an action's attempt is called in a refusal when the caller names none (the
action's own name otherwise)."""
MARKER = "__loaded"
SEEN_TTL = 400 * 86400
MAX_BATCH = 500
"""Most attempts checked in one script run (more in one loop turn: another run)."""
Result = tuple[str, str, str]
"""One attempt's answer: status (ok, blocked, limited), member, until or ttl."""

CHECK_LUA = """
-- KEYS[1]: the blocklist hash; then 3 counters (account, device, IP) per attempt.
-- ARGV: now_ms, window_ms, m (attempts), then per attempt 3 members and 3 limits.
-- Returns 3 values per attempt: status (ok, blocked, limited), member, until / ttl.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unloaded'} end
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
local out = {}
for a = 0, m - 1 do
  local base = 3 + a * 6
  local status, who, value = 'ok', '', ''
  for i = 1, 3 do
    local member = ARGV[base + i]
    if member ~= '' then
      local u = redis.call('HGET', KEYS[1], member)
      if u then
        u = tonumber(u)
        if u == 0 or u > now then status, who, value = 'blocked', member, tostring(u); break end
      end
    end
  end
  if status == 'ok' then
    for i = 1, 3 do
      local lim = tonumber(ARGV[base + 3 + i])
      local member = ARGV[base + i]
      if lim > 0 and member ~= '' then
        local k = KEYS[1 + a * 3 + i]
        local c = redis.call('INCR', k)
        if c == 1 then redis.call('PEXPIRE', k, window) end
        if c > lim then
          local ttl = redis.call('PTTL', k)
          if ttl < 0 then redis.call('PEXPIRE', k, window); ttl = window end
          status, who, value = 'limited', member, tostring(ttl)
          break
        end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = who
  out[#out + 1] = value
end
return out
"""


class Refused(Exception):
    """An attempt refused: ``status`` 403 (blocked, too new) or 429 (rate limited)."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: int = 0, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Limits:
    """Attempts allowed per window, per account, device and IP (0: no limit)."""

    user: int
    device: int
    ip: int

    def of(self, kind: str) -> int:
        return int(getattr(self, kind))


def normalise_entry(kind: str, value: str) -> str:
    """A blocklist value in its one spelling (an IP address compressed); ValueError if the
    kind or the value is not acceptable."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    value = value.strip()
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value[:60]!r} is not an IP address") from None
    if not 1 <= len(value) <= 128 or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError("value must be 1..128 printable characters without spaces")
    return value


def _member(kind: str, value: str) -> str:
    return f"{kind}:{value}"


class AbuseGuard:
    """Rate limits and the blocklist of one shop (see the module's docstring)."""

    def __init__(
        self,
        redis: Any,
        prefix: str,
        limits: dict[str, Limits],
        window: int,
        *,
        loader: Callable[[], Awaitable[list[tuple[str, str, int | None]]]] | None = None,
        min_account_age: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.tag = f"{{{prefix}:abuse}}"
        self.limits = limits
        self.window = window
        self.loader = loader
        self.min_account_age = min_account_age
        self.clock = clock
        self._script: Any = None
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Result | None]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self.unloaded_passes = 0

    @property
    def block_key(self) -> str:
        return f"{self.tag}:block"

    def _counter(self, action: str, kind: str, value: str) -> str:
        digest = hashlib.sha256(value.encode()).hexdigest()[:20]
        return f"{self.tag}:rl:{action}:{kind}:{digest}"

    async def check(
        self,
        action: str,
        user: str | None,
        device: str | None = None,
        ip: str | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Refuse (:class:`Refused`) a blocked or too frequent attempt; count it.

        ``name`` is what the attempt is called in the refusal's message (``"buy"``,
        ``"lottery entry"``, ``"after-sales request"``): ``"<name> refused: this account
        is blocked"``, ``"too many <name> attempts from this device; retry in 5 s"``; by
        default the action's own name (``lottery``: ``lottery entry``), so a caller need
        not reword the message. The checks arriving during one turn of the event loop go
        to Redis as one script run (a burst of buyers adds one command per turn, not one
        per buyer)."""
        lim = self.limits.get(action)
        if lim is None:
            raise ValueError(f"unknown action {action!r}")
        values = {"user": user or "", "device": device or "", "ip": ip or ""}
        keys = [self._counter(action, k, values[k]) for k in KINDS]
        args: list[Any] = [_member(k, values[k]) if values[k] else "" for k in KINDS]
        args += [lim.of(k) for k in KINDS]
        for _attempt in range(2):
            res = await self._submit(keys, args)
            if res is not None:
                break
            if self.loader is None:
                self.unloaded_passes += 1
                if self.unloaded_passes == 1 or self.unloaded_passes % 1000 == 0:
                    logger.warning("blocklist not loaded in Redis: %s let through", action)
                return
            await self.reload()
        else:
            raise Refused(503, "blocklist_unavailable", "the blocklist is being reloaded; retry")
        status, member, value = res
        if status == "ok":
            return
        kind = member.partition(":")[0]
        scope = SCOPE_NAMES.get(kind, kind)
        what = name or DEFAULT_NAMES.get(action, action)
        if status == "blocked":
            raise Refused(403, "blocked", f"{what} refused: this {scope} is blocked", scope=kind)
        retry = max(1, math.ceil(int(value) / 1000))
        raise Refused(
            429,
            "rate_limited",
            f"too many {what} attempts from this {scope}; retry in {retry} s",
            retry_after=retry,
            scope=kind,
        )

    def _submit(self, keys: list[str], args: list[Any]) -> asyncio.Future[Result | None]:
        """Queue one attempt for this loop turn's script run (None: list not loaded)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result | None] = loop.create_future()
        self._pending.append((keys, args, fut))
        if len(self._pending) == 1:
            loop.call_soon(self._launch)
        elif len(self._pending) >= MAX_BATCH:
            self._launch()
        return fut

    def _launch(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, batch: list[tuple[list[str], list[Any], asyncio.Future[Result | None]]]
    ) -> None:
        if self._script is None:
            self._script = self.redis.register_script(CHECK_LUA)
        keys = [self.block_key]
        args: list[Any] = [int(self.clock() * 1000), self.window * 1000, len(batch)]
        for k, a, _f in batch:
            keys += k
            args += a
        try:
            res = await self._script(keys=keys, args=args)
        except BaseException as exc:  # every waiter gets the failure (a cancelled one too)
            for _k, _a, f in batch:
                if not f.done():
                    f.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        unloaded = _text(res[0]) == "unloaded"
        for i, (_k, _a, f) in enumerate(batch):
            if f.done():
                continue
            if unloaded:
                f.set_result(None)
            else:
                f.set_result((_text(res[3 * i]), _text(res[3 * i + 1]), _text(res[3 * i + 2])))

    async def check_account_age(self, user: str, created: float | None) -> None:
        """Refuse an account younger than ``min_account_age`` (flash sales)."""
        if self.min_account_age <= 0:
            return
        now = self.clock()
        if created is None:
            key = f"{self.tag}:seen:{hashlib.sha256(user.encode()).hexdigest()[:24]}"
            await self.redis.set(key, int(now), nx=True, ex=SEEN_TTL)
            raw = await self.redis.get(key)
            created = float(_text(raw)) if raw is not None else now
        age = now - created
        if age < self.min_account_age:
            wait = math.ceil(self.min_account_age - age)
            raise Refused(
                403,
                "account_too_new",
                f"flash sales are open to accounts older than {self.min_account_age // 60} "
                f"min; retry in {wait} s",
                retry_after=wait,
            )

    async def reload(self) -> int:
        """Rewrite the Redis blocklist from the database (the loader)."""
        if self.loader is None:
            return 0
        entries = await self.loader()
        mapping: dict[str, int] = {MARKER: 0}
        for kind, value, until in entries:
            mapping[_member(kind, value)] = until or 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.block_key)
            pipe.hset(self.block_key, mapping=mapping)
            await pipe.execute()
        logger.info("blocklist loaded into Redis: %d entries", len(entries))
        return len(entries)

    async def mirror_add(self, kind: str, value: str, until: int | None) -> None:
        if not await self.redis.exists(self.block_key):
            await self.reload()
            return
        await self.redis.hset(self.block_key, _member(kind, value), until or 0)

    async def mirror_remove(self, kind: str, value: str) -> None:
        await self.redis.hdel(self.block_key, _member(kind, value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


ABUSE_GUARD: web.AppKey[AbuseGuard] = web.AppKey("berrylive.abuse_guard", AbuseGuard)
"""The node's guard, set by the shop when it is mounted (absent otherwise)."""
