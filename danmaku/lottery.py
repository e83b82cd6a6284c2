"""In-stream lotteries: entry by keyword or button, timed or instant draw, auditable.

Fairness protocol: :mod:`danmaku.draw` (anyone can check a draw with :func:`verify`).
The create body is checked by :mod:`danmaku.lottery_spec`.

Stock lives in Redis and is decremented only inside Lua scripts that also check the state,
so prizes are never over-issued across nodes or concurrent draws.

Prize delivery is durable: every winner becomes a ``lottery.prize`` entry in the outbox
(:mod:`core.outbox`), which ``shop_bridge`` consumes and acknowledges once the grant is
committed (its grant key ``<lottery_id>:<n>`` makes a repeat grant nothing). The draw
itself commits in a Lua script; a lottery is listed in ``lot:owed`` from its creation until
every winner is in the outbox, and :meth:`LotteryService.deliver_owed` (every node, on the
hub's housekeeping rounds) puts in whatever a crash or a Redis error left out. The same
event also goes over the bus at once (at-most-once) for anyone listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from core.abuse import AbuseGuard, Refused
from core.bus import EventBus
from core.outbox import Outbox
from core.tokens import Role
from danmaku.draw import (
    commitment,
    draw_winners,
    entrants_digest,
    prize_index,
)
from danmaku.events import LotteryPrize
from danmaku.hub import Hub
from danmaku.keys import REDIS_TIMEOUT
from danmaku.lottery_spec import parse_spec
from danmaku.moderation import Actor, ServiceUnavailable, audit
from danmaku.payloads import PayloadError
from danmaku.rooms import Member, Room

logger = logging.getLogger(__name__)

__all__ = ["LotteryService", "LotteryState"]


class LotteryState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    DRAWN = "drawn"
    CANCELLED = "cancelled"


TRANSITIONS: dict[LotteryState, frozenset[LotteryState]] = {
    LotteryState.OPEN: frozenset({LotteryState.CLOSED, LotteryState.DRAWN, LotteryState.CANCELLED}),
    LotteryState.CLOSED: frozenset({LotteryState.DRAWN, LotteryState.CANCELLED}),
    LotteryState.DRAWN: frozenset(),
    LotteryState.CANCELLED: frozenset(),
}
"""Legal moves; the Lua scripts below implement exactly these (``open -> drawn`` is instant)."""


# --------------------------------------------------------------------------- Redis scripts
ENTER_LUA = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return {'unknown'} end
if st ~= 'open' then return {'closed'} end
if tonumber(redis.call('HGET', KEYS[1], 'window_end')) * 1000 < tonumber(ARGV[3]) then
  return {'closed'}
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return {'duplicate'} end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[2])
if redis.call('HGET', KEYS[1], 'mode') == 'instant' then
  local seed = redis.call('HGET', KEYS[1], 'seed')
  local p = tonumber(redis.call('HGET', KEYS[1], 'probability'))
  local ticket = tonumber(string.sub(redis.sha1hex(seed .. ':' .. ARGV[1]), 1, 8), 16) / 4294967296
  local rem = tonumber(redis.call('HGET', KEYS[1], 'remaining'))
  if ticket < p and rem > 0 then
    rem = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
    local n = tonumber(redis.call('HGET', KEYS[1], 'total')) - rem - 1
    redis.call('RPUSH', KEYS[4], ARGV[1])
    if rem == 0 then redis.call('HSET', KEYS[1], 'state', 'drawn', 'drawn_at', ARGV[3]) end
    return {'won', tostring(n), tostring(rem)}
  end
end
return {'entered'}
"""

TRANSITION_LUA = """
local st = redis.call('HGET', KEYS[1], 'state')
if not st then return 'unknown' end
for i = 3, #ARGV do
  if st == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], ARGV[1] .. '_at', ARGV[2])
    return 'ok'
  end
end
return st
"""

DRAW_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'closed' then return -1 end
if redis.call('HGET', KEYS[1], 'entrants_hash') ~= ARGV[2] then return -2 end
local rem = tonumber(redis.call('HGET', KEYS[1], 'remaining'))
local k = 0
for i = 3, #ARGV do
  if rem <= 0 then break end
  rem = rem - 1
  k = k + 1
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
redis.call('HSET', KEYS[1], 'remaining', rem, 'state', 'drawn', 'drawn_at', ARGV[1])
return k
"""


RULES_CACHE = 1000
"""Lotteries whose rules one node keeps read (entries of a lottery not cached in a room)."""
OWED_INTERVAL_S = 5.0
"""How often each node looks for prizes missing from the outbox."""
OWED_BATCH = 200
"""Most owed lotteries looked at per round."""
INDEX_MAX = 500
"""The newest lotteries a room's index keeps (older ones leave it, their keys expire)."""

BACKFILL_SCAN_COUNT = 1000
"""Keys per ``SCAN`` step when the index is backfilled at start."""

LOTTERY_PARTS = ("meta", "entrants", "order", "winners", "nicks", "outboxed")
"""Every Redis key of one lottery (``Keys.lottery(id, part)``)."""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _norm_keyword(text: str) -> str:
    return " ".join(text.split()).casefold()


class LotteryService:
    def __init__(self, hub: Hub, bus: EventBus, max_concurrency: int = 64) -> None:
        self.hub = hub
        self.bus = bus
        self.guard: Callable[[], AbuseGuard | None] = lambda: None
        """The node's abuse guard (:mod:`core.abuse`, the shop's when mounted): entries are
        refused for blocked accounts, devices and IPs, and beyond its lottery limits."""
        self._sem = asyncio.Semaphore(max_concurrency)
        self._enter = hub.redis.register_script(ENTER_LUA)
        self._transition = hub.redis.register_script(TRANSITION_LUA)
        self._draw = hub.redis.register_script(DRAW_LUA)
        self.outbox = Outbox(hub.redis)
        self._rules_cache: dict[str, dict[str, Any]] = {}
        self._rules_reads: dict[str, asyncio.Future[dict[str, str]]] = {}
        self._owed_at = 0.0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._advancing: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        hub.on_comment_hooks.append(self._on_comment)
        hub.on_remote_hooks.append(self._on_remote)
        hub.on_tick_hooks.append(self.sweep)

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _k(self, lid: str, part: str) -> str:
        return self.hub.keys.lottery(lid, part)

    # ------------------------------------------------------------------ operator actions
    async def create(self, data: dict[str, Any], actor: Actor) -> dict[str, Any]:
        spec = parse_spec(data, self.hub.config.lottery_max_window_s)
        lid = secrets.token_hex(8)
        seed = secrets.token_hex(32)
        now = time.time()
        total = sum(int(p["stock"]) for p in spec.prizes)
        meta = {
            "id": lid,
            "room": spec.room,
            "title": spec.title,
            "prizes": json.dumps(list(spec.prizes), ensure_ascii=False),
            "entry": spec.entry,
            "keyword": spec.keyword,
            "mode": spec.mode,
            "probability": repr(spec.probability),
            "total": str(total),
            "remaining": str(total),
            "window_end": f"{now + spec.window_s:.3f}",
            "created_at": f"{now:.3f}",
            "created_by": actor.user_id,
            "seed": seed,
            "commitment": commitment(seed),
            "state": LotteryState.OPEN.value,
            "min_watch_s": str(spec.min_watch_s),
            "present_at_draw": "1" if spec.present_at_draw else "0",
            "background_url": spec.background_url,
        }
        try:
            pipe = self.hub.redis.pipeline(transaction=False)
            pipe.hset(self._k(lid, "meta"), mapping=meta)
            pipe.expire(  # refreshed by _retire once its prizes are out
                self._k(lid, "meta"), int(spec.window_s + self.hub.config.lottery_retention_s)
            )
            pipe.sadd(self.hub.keys.room_lotteries(spec.room), lid)
            pipe.expire(
                self.hub.keys.room_lotteries(spec.room), max(1, int(self.hub.config.room_ttl_s))
            )
            pipe.zadd(self.hub.keys.lotteries_owed(), {lid: now})
            index = self.hub.keys.lottery_index(spec.room)
            pipe.zadd(index, {lid: now})
            pipe.zremrangebyrank(index, 0, -INDEX_MAX - 1)
            # at least as long as this lottery's keys; _retire extends it (GT) after a draw
            pipe.expire(index, int(spec.window_s + self.hub.config.lottery_retention_s), gt=True)
            pipe.expire(index, int(spec.window_s + self.hub.config.lottery_retention_s), nx=True)
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            await audit(self.hub, actor, "lottery.create", spec.room, lid, self.public(meta))
        except PayloadError:
            raise
        except Exception as exc:
            raise ServiceUnavailable(f"lottery store unavailable: {exc}") from exc
        info = self.public(meta)
        self._cache(spec.room, info)
        self.hub.post_control(spec.room, {"kind": "lottery", "lottery": info})
        self._announce(spec.room, {"event": "open", **info})
        loop = asyncio.get_running_loop()
        self._timers[lid] = loop.call_later(
            spec.window_s + 0.05, lambda: self._spawn(self.advance(lid))
        )
        return info

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def public(meta: dict[str, Any]) -> dict[str, Any]:
        prizes = meta["prizes"]
        if isinstance(prizes, str):
            prizes = json.loads(prizes)
        info = {
            "lottery_id": meta["id"],
            "room": meta["room"],
            "title": meta.get("title", ""),
            "prizes": prizes,
            "entry": meta["entry"],
            "keyword": meta.get("keyword", ""),
            "mode": meta["mode"],
            "probability": float(meta["probability"]),
            "window_end": float(meta["window_end"]),
            "commitment": meta["commitment"],
            "state": meta["state"],
            "min_watch_s": int(meta.get("min_watch_s") or 0),
            "present_at_draw": meta.get("present_at_draw") == "1",
            "background_url": meta.get("background_url", ""),
        }
        return info

    def _cache(self, room_name: str, info: dict[str, Any]) -> None:
        room = self.hub.rooms.get(room_name)
        if room is not None:
            if info["state"] == LotteryState.OPEN.value:
                room.lotteries[info["lottery_id"]] = info
            else:
                room.lotteries.pop(info["lottery_id"], None)

    def _announce(self, room: str, data: dict[str, Any]) -> None:
        self.hub.post_notice(room, {"type": "lottery", "data": data, "ts": time.time()}, True)

    async def meta(self, lid: str) -> dict[str, str]:
        raw = await asyncio.wait_for(self.hub.redis.hgetall(self._k(lid, "meta")), REDIS_TIMEOUT)
        return {_s(k): _s(v) for k, v in raw.items()}

    async def get(self, lid: str, *, with_entrants: bool = False) -> dict[str, Any]:
        """Public view; after the draw it includes the seed and everything :func:`verify` needs."""
        meta = await self.meta(lid)
        if not meta:
            raise PayloadError("not_found", f"no lottery {lid}")
        info = self.public(meta)
        info.update(
            created_at=float(meta["created_at"]),
            remaining=int(meta["remaining"]),
            entrants_hash=meta.get("entrants_hash"),
        )
        redis = self.hub.redis
        pipe = redis.pipeline(transaction=False)
        pipe.scard(self._k(lid, "entrants"))
        pipe.lrange(self._k(lid, "winners"), 0, -1)
        count, winners_raw = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        info["entrant_count"] = int(count)
        winners = [_s(w) for w in winners_raw]
        if meta["state"] == LotteryState.DRAWN.value:
            info["seed"] = meta["seed"]
            nicks = await self._nicks(lid, winners)
            info["winners"] = [
                self._winner(meta, n, uid, nicks.get(uid, "")) for n, uid in enumerate(winners)
            ]
            if with_entrants:
                pipe = redis.pipeline(transaction=False)
                pipe.smembers(self._k(lid, "entrants"))
                pipe.lrange(self._k(lid, "order"), 0, -1)
                members, order = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
                info["entrants"] = sorted(_s(m) for m in members)
                if meta.get("eligible") is not None:  # present_at_draw: who took part
                    info["entered"] = info["entrants"]
                    info["entrants"] = sorted(json.loads(meta["eligible"]))
                info["entry_order"] = [_s(m) for m in order]
        return info

    async def list_room(self, room: str, state: str | None, limit: int) -> list[dict[str, Any]]:
        """The room's lotteries, newest first (from its index; gone ones are dropped from it),
        each as :meth:`public` plus ``created_at``, ``created_by``, ``remaining``."""
        redis = self.hub.redis
        index = self.hub.keys.lottery_index(room)
        ids = [_s(x) for x in await asyncio.wait_for(redis.zrevrange(index, 0, -1), REDIS_TIMEOUT)]
        out: list[dict[str, Any]] = []
        gone: list[str] = []
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            pipe = redis.pipeline(transaction=False)
            for lid in chunk:
                pipe.hgetall(self._k(lid, "meta"))
            raws = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            for lid, raw in zip(chunk, raws, strict=True):
                meta = {_s(k): _s(v) for k, v in raw.items()}
                if not meta:
                    gone.append(lid)
                    continue
                if state is not None and meta["state"] != state:
                    continue
                info = self.public(meta)
                info.update(
                    created_at=float(meta["created_at"]),
                    created_by=meta.get("created_by", ""),
                    remaining=int(meta["remaining"]),
                )
                out.append(info)
                if len(out) >= limit:
                    break
            if len(out) >= limit:
                break
        if gone:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(redis.zrem(index, *gone), REDIS_TIMEOUT)
        return out

    def start_backfill(self) -> None:
        """Run :meth:`backfill_index` in the background (a Redis error is logged: the
        next start tries again)."""

        async def run() -> None:
            try:
                await self.backfill_index()
            except Exception as exc:
                logger.warning("lottery index backfill failed (next start retries): %s", exc)

        self._spawn(run())

    async def backfill_index(self) -> int:
        """Put in its room's index every lottery whose record is in Redis but not in the
        index (lotteries created before the index existed); returns how many were added.

        Idempotent (``ZADD NX``: a listed lottery keeps its score) and bounded: ``SCAN`` in
        steps of :data:`BACKFILL_SCAN_COUNT`, records read in pipelines of 100, each room's
        index trimmed to :data:`INDEX_MAX` and given at least its lotteries' lifetime.
        Every node runs it once at start (:meth:`DanmakuService.start`)."""
        redis = self.hub.redis
        pattern = self.hub.keys.lottery("*", "meta")
        added = 0
        batch: list[str] = []

        async def flush() -> int:
            pipe = redis.pipeline(transaction=False)
            for key in batch:
                pipe.hmget(key, ["id", "room", "created_at"])
                pipe.pttl(key)
            raw = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            batch.clear()
            pipe = redis.pipeline(transaction=False)
            rooms: dict[str, int] = {}
            for (lid, room, created), pttl in zip(raw[0::2], raw[1::2], strict=True):
                if lid is None or room is None or created is None:
                    continue  # not a whole record (expired meanwhile, or not ours)
                try:
                    score = float(_s(created))
                except ValueError:
                    continue
                index = self.hub.keys.lottery_index(_s(room))
                pipe.zadd(index, {_s(lid): score}, nx=True)
                # the index lives at least as long as its longest-lived lottery (-1: no TTL
                # on the record; the index then gets the retention)
                ttl_s = int(pttl) // 1000 + 1 if int(pttl) > 0 else 0
                ttl_s = ttl_s or max(1, int(self.hub.config.lottery_retention_s))
                rooms[index] = max(rooms.get(index, 0), ttl_s)
            for index, ttl_s in rooms.items():
                pipe.zremrangebyrank(index, 0, -INDEX_MAX - 1)
                pipe.expire(index, ttl_s, gt=True)
                pipe.expire(index, ttl_s, nx=True)
            results = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            return sum(int(r) for r in results[: len(results) - 3 * len(rooms)])

        cursor: int | bytes | str = 0
        while True:
            cursor, keys = await asyncio.wait_for(
                redis.scan(cursor, match=pattern, count=BACKFILL_SCAN_COUNT), REDIS_TIMEOUT
            )
            batch.extend(_s(k) for k in keys)
            if len(batch) >= 100 or (batch and int(cursor) == 0):
                added += await flush()
            if int(cursor) == 0:
                break
        if added:
            logger.info("lottery index: %d lottery(ies) created before it added", added)
        return added

    async def _nicks(self, lid: str, users: list[str]) -> dict[str, str]:
        if not users:
            return {}
        vals = await asyncio.wait_for(
            self.hub.redis.hmget(self._k(lid, "nicks"), users), REDIS_TIMEOUT
        )
        return {u: _s(v) if v is not None else "" for u, v in zip(users, vals, strict=True)}

    @staticmethod
    def _winner(meta: dict[str, str], n: int, uid: str, nick: str) -> dict[str, Any]:
        prizes = json.loads(meta["prizes"])
        idx = prize_index(n, [int(p["stock"]) for p in prizes])
        return {"user_id": uid, "nick": nick, "n": n, "prize_index": idx, "prize": prizes[idx]}

    async def cancel(self, lid: str, actor: Actor) -> dict[str, Any]:
        meta = await self.meta(lid)
        if not meta:
            raise PayloadError("not_found", f"no lottery {lid}")
        res = _s(
            await asyncio.wait_for(
                self._transition(
                    keys=[self._k(lid, "meta")],
                    args=["cancelled", f"{time.time():.3f}", "open", "closed"],
                ),
                REDIS_TIMEOUT,
            )
        )
        if res != "ok":
            raise PayloadError("bad_state", f"lottery is {res}; cannot cancel")
        await audit(self.hub, actor, "lottery.cancel", meta["room"], lid, {})
        await self._finished(meta["room"], lid)
        self._announce(meta["room"], {"event": "cancelled", "lottery_id": lid})
        return await self.get(lid)

    async def draw_now(self, lid: str, actor: Actor) -> dict[str, Any]:
        """Close the window now (if open) and draw; idempotent."""
        meta = await self.meta(lid)
        if not meta:
            raise PayloadError("not_found", f"no lottery {lid}")
        if meta["state"] == LotteryState.CANCELLED.value:
            raise PayloadError("bad_state", "lottery was cancelled")
        await audit(self.hub, actor, "lottery.draw", meta["room"], lid, {})
        await self.advance(lid, force=True)
        return await self.get(lid)

    # ------------------------------------------------------------------ state machine driver
    async def advance(self, lid: str, force: bool = False) -> None:
        """Move a lottery on when its window is over (or ``force``): close, draw, announce."""
        if lid in self._advancing:
            return
        self._advancing.add(lid)
        try:
            timer = self._timers.pop(lid, None)
            if timer is not None and force:
                timer.cancel()
            meta = await self.meta(lid)
            if not meta:
                return
            room = meta["room"]
            now = time.time()
            state = meta["state"]
            if state == LotteryState.OPEN.value and (force or now >= float(meta["window_end"])):
                target = "closed" if meta["mode"] == "timed" else "drawn"
                res = _s(
                    await asyncio.wait_for(
                        self._transition(
                            keys=[self._k(lid, "meta")], args=[target, f"{time.time():.3f}", "open"]
                        ),
                        REDIS_TIMEOUT,
                    )
                )
                if res == "ok" and target == "drawn":
                    await self._announce_drawn(room, lid)
                    return
                meta = await self.meta(lid)
                state = meta["state"]
            if state == LotteryState.CLOSED.value:
                await self._draw_timed(room, lid, meta)
            elif state in (LotteryState.DRAWN.value, LotteryState.CANCELLED.value):
                await self._finished(room, lid)
        finally:
            self._advancing.discard(lid)

    async def _draw_timed(self, room: str, lid: str, meta: dict[str, str]) -> None:
        members = await asyncio.wait_for(
            self.hub.redis.smembers(self._k(lid, "entrants")), REDIS_TIMEOUT
        )
        entrants = sorted(_s(m) for m in members)
        if meta.get("present_at_draw") == "1":
            entrants = await self._freeze_present(room, lid, entrants)
        digest = entrants_digest(entrants)
        first = await asyncio.wait_for(
            self.hub.redis.hsetnx(self._k(lid, "meta"), "entrants_hash", digest), REDIS_TIMEOUT
        )
        if first:  # one node publishes the frozen entrant hash, before any seed is revealed
            self._announce(
                room,
                {
                    "event": "closed",
                    "lottery_id": lid,
                    "entrants": len(entrants),
                    "entrants_hash": digest,
                    "commitment": meta["commitment"],
                },
            )
        winners = draw_winners(meta["seed"], entrants, int(meta["total"]))
        k = await asyncio.wait_for(
            self._draw(
                keys=[self._k(lid, "meta"), self._k(lid, "winners")],
                args=[f"{time.time():.3f}", digest, *winners],
            ),
            REDIS_TIMEOUT,
        )
        if int(k) < 0:
            return  # another node drew it
        await self._announce_drawn(room, lid)

    async def _rules(self, lid: str) -> dict[str, Any] | None:
        """A lottery's public record, read once per lottery however many entries arrive at
        once (one read in flight; kept, bounded: the rules never change once created)."""
        known = self._rules_cache.get(lid)
        if known is not None:
            return known
        pending = self._rules_reads.get(lid)
        if pending is None:
            pending = asyncio.ensure_future(self.meta(lid))
            self._rules_reads[lid] = pending
            pending.add_done_callback(lambda _f: self._rules_reads.pop(lid, None))
        found = await asyncio.shield(pending)
        if not found:
            return None
        info = self.public(found)
        if len(self._rules_cache) >= RULES_CACHE:
            self._rules_cache.pop(next(iter(self._rules_cache)))
        self._rules_cache[lid] = info
        return info

    async def _freeze_present(self, room: str, lid: str, entrants: list[str]) -> list[str]:
        """The entrants still in the room now (on any node); the first node to close the
        lottery fixes that list in its record, and every node draws from that one."""
        present = await self.hub.presence.users(room, self.hub.rooms.get(room))
        mine = json.dumps([e for e in entrants if e in present], separators=(",", ":"))
        key = self._k(lid, "meta")
        await asyncio.wait_for(self.hub.redis.hsetnx(key, "eligible", mine), REDIS_TIMEOUT)
        fixed = await asyncio.wait_for(self.hub.redis.hget(key, "eligible"), REDIS_TIMEOUT)
        return sorted(json.loads(_s(fixed)))

    async def _announce_drawn(self, room: str, lid: str) -> None:
        info = await self.get(lid)
        await self._finished(room, lid)
        winners = info.get("winners", [])
        if info["mode"] == "timed":
            for w in winners:
                await self._deliver(info, w)
        self._announce(
            room,
            {
                "event": "drawn",
                "lottery_id": lid,
                "winners": [
                    {"user_id": w["user_id"], "nick": w["nick"], "prize": w["prize"]["name"]}
                    for w in winners
                ],
                "seed": info["seed"],
                "commitment": info["commitment"],
                "entrants_hash": info.get("entrants_hash"),
                "entrant_count": info["entrant_count"],
            },
        )
        await audit(
            self.hub,
            Actor("system", Role.OPERATOR, "lottery"),
            "lottery.drawn",
            room,
            lid,
            {"winners": [w["user_id"] for w in winners], "seed": info["seed"]},
        )

    @staticmethod
    def _prize_event(info: dict[str, Any], winner: dict[str, Any]) -> LotteryPrize:
        return LotteryPrize(
            lottery_id=str(info.get("lottery_id") or info.get("id")),
            room=info["room"],
            user_id=winner["user_id"],
            nick=winner["nick"],
            prize=winner["prize"],
            prize_index=winner["prize_index"],
            n=winner["n"],
            mode=info["mode"],
            title=info.get("title", ""),
        )

    async def _to_outbox(self, prizes: list[LotteryPrize]) -> bool:
        """Put ``prizes`` in the outbox and mark them put; False (logged) if Redis failed:
        :meth:`deliver_owed` puts them in later."""
        if not prizes:
            return True
        try:
            await asyncio.wait_for(self.outbox.put(*prizes), REDIS_TIMEOUT)
            pipe = self.hub.redis.pipeline(transaction=False)
            for p in prizes:
                pipe.sadd(self._k(p.lottery_id, "outboxed"), p.n)
            await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
        except Exception as exc:
            self.hub.stats.redis_errors += 1
            logger.warning("lottery prizes not in the outbox yet (retried): %s", exc)
            return False
        return True

    async def _deliver(self, info: dict[str, Any], winner: dict[str, Any]) -> None:
        room = info["room"]
        lid = info["lottery_id"]
        prize = self._prize_event(info, winner)
        await self._to_outbox([prize])
        await self.bus.emit(prize)
        await self.hub.send_direct(
            room,
            winner["user_id"],
            "lottery_won",
            {"lottery_id": lid, "room": room, "prize": winner["prize"], "title": info["title"]},
            propagate=True,
        )

    async def deliver_owed(self, *, force: bool = False) -> int:
        """Put in the outbox every prize of a listed lottery not put there yet (a node that
        died after the draw, a Redis error); a finished lottery with all its prizes put
        leaves the list and its keys expire after ``lottery_retention_s``. Runs every
        ``OWED_INTERVAL_S`` on each node (``force``: now). Returns the prizes put."""
        now = time.time()
        if not force and now - self._owed_at < OWED_INTERVAL_S:
            return 0
        self._owed_at = now
        redis = self.hub.redis
        owed_key = self.hub.keys.lotteries_owed()
        lids = [_s(x) for x in await redis.zrange(owed_key, 0, OWED_BATCH - 1)]
        put = 0
        for lid in lids:
            meta = await self.meta(lid)
            if not meta:
                await redis.zrem(owed_key, lid)
                continue
            pipe = redis.pipeline(transaction=False)
            pipe.lrange(self._k(lid, "winners"), 0, -1)
            pipe.smembers(self._k(lid, "outboxed"))
            winners_raw, done_raw = await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)
            winners = [_s(w) for w in winners_raw]
            done = {int(_s(d)) for d in done_raw}
            missing = [n for n in range(len(winners)) if n not in done]
            if missing:
                nicks = await self._nicks(lid, [winners[n] for n in missing])
                info = {**self.public(meta), "title": meta.get("title", "")}
                prizes = [
                    self._prize_event(
                        info, self._winner(meta, n, winners[n], nicks.get(winners[n], ""))
                    )
                    for n in missing
                ]
                if not await self._to_outbox(prizes):
                    continue
                put += len(prizes)
                logger.info("lottery %s: %d owed prize(s) put in the outbox", lid, len(prizes))
            if meta["state"] in (LotteryState.DRAWN.value, LotteryState.CANCELLED.value):
                await self._retire(lid, meta.get("room", ""))
        return put

    async def _retire(self, lid: str, room: str = "") -> None:
        """All prizes of a finished lottery are in the outbox: off the owed list; its keys
        (and the room's index, if it would go sooner) stay ``lottery_retention_s`` for
        anyone verifying the draw, then expire."""
        ttl = max(1, int(self.hub.config.lottery_retention_s))
        pipe = self.hub.redis.pipeline(transaction=False)
        for part in LOTTERY_PARTS:
            pipe.expire(self._k(lid, part), ttl)
        if room:
            pipe.expire(self.hub.keys.lottery_index(room), ttl, gt=True)
        pipe.zrem(self.hub.keys.lotteries_owed(), lid)
        await asyncio.wait_for(pipe.execute(), REDIS_TIMEOUT)

    async def _finished(self, room: str, lid: str) -> None:
        timer = self._timers.pop(lid, None)
        if timer is not None:
            timer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.hub.redis.srem(self.hub.keys.room_lotteries(room), lid), REDIS_TIMEOUT
            )
        r = self.hub.rooms.get(room)
        if r is not None:
            r.lotteries.pop(lid, None)
        self.hub.post_control(room, {"kind": "lottery_end", "lottery_id": lid})

    # ------------------------------------------------------------------ viewers
    async def enter(self, lid: str, member: Member) -> dict[str, Any]:
        if member.viewer is None:
            raise PayloadError("not_authenticated", "log in to take part in lotteries")
        uid = member.viewer.user_id
        room = self.hub.rooms.get(member.room)
        info = room.lotteries.get(lid) if room is not None else None
        if info is None:  # not cached in the room here: the rules are in the lottery's record
            info = await self._rules(lid)
        watch = int(info.get("min_watch_s", 0)) if info else 0
        if watch:
            watched = time.monotonic() - member.joined_at
            if watched < watch:
                raise PayloadError(
                    "watch_longer",
                    f"watch {watch}s before entering ({int(watched)}s so far)",
                    retry_after=round(watch - watched, 1),
                )
        guard = self.guard()
        if guard is not None:
            try:
                await guard.check("lottery", uid, member.device or None, member.ip or None)
            except Refused as exc:
                raise PayloadError(
                    exc.code, exc.message, retry_after=exc.retry_after, **exc.extra
                ) from None
            except Exception as exc:  # Redis down: no entry we could not check
                raise PayloadError("unavailable", "lottery is unavailable, try again") from exc
        async with self._sem:
            try:
                res = await asyncio.wait_for(
                    self._enter(
                        keys=[
                            self._k(lid, "meta"),
                            self._k(lid, "entrants"),
                            self._k(lid, "order"),
                            self._k(lid, "winners"),
                            self._k(lid, "nicks"),
                        ],
                        args=[uid, member.viewer.nick, int(time.time() * 1000)],
                    ),
                    REDIS_TIMEOUT,
                )
            except Exception as exc:
                self.hub.stats.redis_errors += 1
                raise PayloadError("unavailable", "lottery is unavailable, try again") from exc
        status = _s(res[0])
        if status == "unknown":
            raise PayloadError("not_found", f"no lottery {lid}")
        result: dict[str, Any] = {"lottery_id": lid, "status": status}
        if status == "won":
            n, remaining = int(res[1]), int(res[2])
            meta = await self.meta(lid)
            if meta.get("room") != member.room:
                logger.warning("lottery %s entered from another room %s", lid, member.room)
            info = self.public(meta)
            info["title"] = meta.get("title", "")
            winner = self._winner(meta, n, uid, member.viewer.nick)
            result["prize"] = winner["prize"]
            await self._deliver(info, winner)
            self._announce(
                meta["room"],
                {
                    "event": "won",
                    "lottery_id": lid,
                    "user_id": uid,
                    "nick": member.viewer.nick,
                    "prize": winner["prize"]["name"],
                },
            )
            if remaining == 0:
                await self._announce_drawn(meta["room"], lid)
        return result

    async def enter_button(self, lid: str, member: Member) -> dict[str, Any]:
        room = self.hub.rooms.get(member.room)
        info = room.lotteries.get(lid) if room else None
        if info is not None and info["entry"] != "button":
            raise PayloadError("wrong_entry", f"enter by commenting {info['keyword']!r}")
        if info is None:
            meta = await self.meta(lid)
            if not meta or meta.get("room") != member.room:
                raise PayloadError("not_found", f"no lottery {lid} in this room")
        return await self.enter(lid, member)

    async def _on_comment(
        self, member: Member, room: Room, comment: dict[str, Any], raw: str
    ) -> dict[str, Any] | None:
        if not room.lotteries:
            return None
        text = _norm_keyword(raw)
        for lid, info in list(room.lotteries.items()):
            if info["entry"] == "keyword" and _norm_keyword(info["keyword"]) == text:
                try:
                    return {"lottery": await self.enter(lid, member)}
                except PayloadError as exc:
                    return {"lottery": {"lottery_id": lid, "status": "error", **exc.as_dict()}}
        return None

    async def _on_remote(self, room: Room, control: dict[str, Any]) -> None:
        kind = control.get("kind")
        if kind == "lottery" and isinstance(control.get("lottery"), dict):
            self._cache(room.name, control["lottery"])
        elif kind == "lottery_end":
            room.lotteries.pop(str(control.get("lottery_id")), None)
        elif kind is None and "lotteries_known" in control:
            for lid in control["lotteries_known"]:
                try:
                    meta = await self.meta(lid)
                except Exception:
                    continue
                if meta:
                    self._cache(room.name, self.public(meta))

    async def open_for(self, room: Room) -> list[dict[str, Any]]:
        return list(room.lotteries.values())

    async def sweep(self) -> None:
        """Advance lotteries whose window is over (covers a node that died before its timer),
        and put owed prizes in the outbox."""
        await self.deliver_owed()
        now = time.time()
        for room in list(self.hub.rooms.values()):
            for lid, info in list(room.lotteries.items()):
                if now >= info["window_end"] + 1.0:
                    await self.advance(lid)
