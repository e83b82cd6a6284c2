"""Sharers (分享员): signed share links, touches, and orders credited to a sharer.

**Share links.** A link carries a token ``sh1.<base64url(json)>.<base64url(hmac)>`` with
the sharer's id, the broadcast's id and an expiry, signed with a key derived from the
server secret (nobody can forge a link for themselves or move one to another
broadcast). Operators make links for any sharer; the broadcast's anchor for their own
broadcasts; a registered sharer (``shop_sharers``, kept by operators) for themselves,
with their viewer token.

**Touches and attribution.** The viewer page keeps the token of the link it was opened
with and sends it (``X-Share-Token`` or the body's ``share``) with its visit
(``POST /api/broadcasts/{id}/share-visits``) and with every buy and order. Each time,
the shop records a *touch* for (broadcast, buyer) in Redis: the first touch (kept while
within ``shop.sharer_window``) and the last one. An order carrying a valid token for its
own broadcast is credited (``sharer_id``) to the sharer of the first touch
(``shop.sharer_attribution = "first"``) or of the last one (``"last"``), if that touch is
within the window; a token of an unknown or deactivated sharer, an expired or forged one,
or one for another broadcast credits nobody and never refuses the buy. A buy without a
token looks nothing up (the flash-sale hot path stays as it was).

**Sales per sharer** (:meth:`Sharers.report`) follow the shop's one definition of sales
(:mod:`shop_bridge.gmv`): ``gmv_fen`` net of refunds, ``orders`` and ``buyers`` of sales
not refunded in full, prize orders never counted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from shop_bridge import gmv
from shop_bridge.cache import BoundedCache
from shop_bridge.context import ShopContext
from shop_bridge.errors import not_found
from shop_bridge.models import ORDERS, SHARERS
from shop_bridge.views import iso

__all__ = ["ShareToken", "Sharers", "TokenRefused", "Visit", "sign_share", "verify_share"]

logger = logging.getLogger(__name__)

VERSION = "sh1"
MAX_TOKEN = 512

TOUCH_LUA = """
local k = KEYS[1]
local now = tonumber(ARGV[1])
local s = ARGV[2]
local window = tonumber(ARGV[3])
local field = ARGV[4]
if s ~= '' then
  local ft = tonumber(redis.call('HGET', k, 'f_t') or '0')
  if ft == 0 or now - ft > window then
    redis.call('HSET', k, 'f_s', s, 'f_t', now)
  end
  redis.call('HSET', k, 'l_s', s, 'l_t', now)
  redis.call('PEXPIRE', k, window)
end
local who = redis.call('HGET', k, field .. '_s')
local t = tonumber(redis.call('HGET', k, field .. '_t') or '0')
if who and now - t <= window then return who end
return false
"""

VISIT_LUA = """
-- KEYS[1] visitors of (broadcast, sharer) (a set of hashed visitor ids), KEYS[2] visits per
-- sharer of the broadcast (a hash), KEYS[3] new visitors counted from one address
-- ARGV[1] sharer, ARGV[2] ttl ms, ARGV[3] visitor cap, ARGV[4] per-address cap,
-- ARGV[5] per-address window ms, ARGV[6..] the visitor's ids (user, browser)
for i = 6, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[3]) then
      for j = 6, #ARGV do redis.call('SADD', KEYS[1], ARGV[j]) end
    end
    return 0
  end
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[4]) then return -2 end
for i = 6, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('INCR', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], ARGV[5]) end
return 1
"""

VISITORS_MAX = 200_000
"""Most distinct visitors remembered (and counted) per sharer and broadcast."""
VISITS_PER_ADDRESS = 100
"""Most new visitors counted from one client address per broadcast per
:data:`VISITS_ADDRESS_WINDOW_S` (a carrier NAT puts many real viewers behind one)."""
VISITS_ADDRESS_WINDOW_S = 3600


@dataclass(frozen=True, slots=True)
class Visit:
    """What a share visit did: ``counted`` (a new visitor for the sharer), ``credited_to``
    (the sharer an order placed now would be credited to: only with a viewer), and why
    nothing was counted (``reason``: ``seen``, ``refused``, ``capped``, ``address_limit``)."""

    counted: bool
    credited_to: str | None
    reason: str = ""


class TokenRefused(ValueError):
    """A share token that is malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class ShareToken:
    sharer_id: str
    broadcast_id: str
    expires_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def share_key(secret: str) -> bytes:
    return hmac.digest(secret.encode(), b"berrylive.shop.share.v1", "sha256")


def sign_share(key: bytes, t: ShareToken) -> str:
    body = _b64(orjson.dumps({"s": t.sharer_id, "b": t.broadcast_id, "e": t.expires_ms}))
    sig = hmac.digest(key, f"{VERSION}.{body}".encode(), "sha256")[:16]
    return f"{VERSION}.{body}.{_b64(sig)}"


def verify_share(key: bytes, token: object, now_ms: int) -> ShareToken:
    """The token's claims, or :class:`TokenRefused` saying why not."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise TokenRefused("not a share token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise TokenRefused("not a share token")
    try:
        sig = _unb64(parts[2])
        raw = _unb64(parts[1])
    except (binascii.Error, ValueError):
        raise TokenRefused("share token is not base64url") from None
    expected = hmac.digest(key, f"{VERSION}.{parts[1]}".encode(), "sha256")[:16]
    if not hmac.compare_digest(sig, expected):
        raise TokenRefused("share token signature does not match")
    try:
        claims = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TokenRefused("share token claims are not JSON") from None
    if not isinstance(claims, dict):
        raise TokenRefused("share token claims are not an object")
    s, b, e = claims.get("s"), claims.get("b"), claims.get("e")
    if not isinstance(s, str) or not isinstance(b, str) or not isinstance(e, int):
        raise TokenRefused("share token lacks sharer, broadcast or expiry")
    if e < now_ms:
        raise TokenRefused("share link expired")
    return ShareToken(s, b, e)


def sharer_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": row["user_id"],
        "name": row["name"],
        "active": bool(row["active"]),
        "created_at": iso(row["created_ms"]),
        "created_by": row["created_by"] or None,
    }


class Sharers:
    """Registered sharers, share links, touches and sales per sharer."""

    def __init__(self, ctx: ShopContext, secret: str) -> None:
        if ctx.config.sharer_attribution not in ("first", "last"):
            raise ValueError("shop.sharer_attribution must be 'first' or 'last'")
        self.ctx = ctx
        self.key = share_key(secret)
        self._active: BoundedCache[str, bool] = BoundedCache(10_000, ttl=10.0)
        self._touch: Any = None
        self._visit: Any = None

    # -- the registry --------------------------------------------------------------

    async def register(self, user_id: str, name: str, actor: str) -> tuple[dict[str, Any], bool]:
        """Register (or re-activate) a sharer; (view, created)."""
        now = self.ctx.now_ms()
        values = {"name": name, "active": True, "updated_ms": now}
        created = True
        try:
            async with self.ctx.engine.begin() as conn:
                await conn.execute(
                    insert(SHARERS).values(
                        user_id=user_id, created_ms=now, created_by=actor[:64], **values
                    )
                )
        except IntegrityError:
            created = False
            async with self.ctx.engine.begin() as conn:
                await conn.execute(
                    update(SHARERS).where(SHARERS.c.user_id == user_id).values(**values)
                )
        self._active.pop(user_id)
        logger.info("sharer %s registered by %s", user_id, actor)
        return await self.get(user_id), created

    async def deactivate(self, user_id: str, actor: str) -> dict[str, Any]:
        async with self.ctx.engine.begin() as conn:
            res = await conn.execute(
                update(SHARERS)
                .where(SHARERS.c.user_id == user_id)
                .values(active=False, updated_ms=self.ctx.now_ms())
            )
        if res.rowcount != 1:
            raise not_found("sharer", user_id)
        self._active.pop(user_id)
        logger.info("sharer %s deactivated by %s", user_id, actor)
        return await self.get(user_id)

    async def get(self, user_id: str) -> dict[str, Any]:
        async with self.ctx.engine.connect() as conn:
            row = (
                (await conn.execute(select(SHARERS).where(SHARERS.c.user_id == user_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise not_found("sharer", user_id)
        return sharer_view(dict(row))

    async def list(self, limit: int, after: str = "") -> list[dict[str, Any]]:
        async with self.ctx.engine.connect() as conn:
            rows = await conn.execute(
                select(SHARERS)
                .where(SHARERS.c.user_id > after)
                .order_by(SHARERS.c.user_id)
                .limit(limit)
            )
            return [sharer_view(dict(r)) for r in rows.mappings()]

    async def is_active(self, user_id: str) -> bool:
        """A registered sharer not deactivated (cached for a few seconds)."""
        known = self._active.get(user_id)
        if known is not None:
            return known
        async with self.ctx.engine.connect() as conn:
            active = (
                await conn.execute(select(SHARERS.c.active).where(SHARERS.c.user_id == user_id))
            ).scalar()
        value = bool(active)
        self._active.put(user_id, value)
        return value

    # -- links and touches ---------------------------------------------------------

    def make_link(
        self, broadcast_id: str, sharer_id: str, base_url: str, room: str
    ) -> dict[str, Any]:
        """A share link of ``broadcast_id`` for ``sharer_id`` (who may ask is the API's
        check)."""
        cfg = self.ctx.config
        expires = self.ctx.now_ms() + cfg.share_link_ttl * 1000
        token = sign_share(self.key, ShareToken(sharer_id, broadcast_id, expires))
        if cfg.share_link_base:
            url = f"{cfg.share_link_base}?{urlencode({'broadcast': broadcast_id, 'share': token})}"
        else:
            url = f"{base_url}/watch/{room}?{urlencode({'share': token})}"
        return {
            "broadcast_id": int(broadcast_id) if broadcast_id.isdigit() else broadcast_id,
            "sharer_id": sharer_id,
            "token": token,
            "url": url,
            "expires_at": iso(expires),
        }

    def _touch_key(self, broadcast_id: str, user_id: str) -> str:
        digest = hashlib.sha256(f"{broadcast_id}\0{user_id}".encode()).hexdigest()[:24]
        return f"{{{self.ctx.config.redis_prefix}:share}}:{digest}"

    async def touch(self, token: str | None, user_id: str, broadcast_id: str) -> str | None:
        """Record a touch of ``user_id`` through ``token`` (if it is valid for this
        broadcast and its sharer is active) and return the sharer to credit an order
        placed now (None: nobody)."""
        if not token:
            return None
        now = self.ctx.now_ms()
        try:
            claims = verify_share(self.key, token, now)
        except TokenRefused as exc:
            logger.info("share token of %s not used: %s", user_id, exc)
            return None
        if claims.broadcast_id != broadcast_id:
            logger.info("share token of %s is for another broadcast", user_id)
            return None
        if claims.sharer_id == user_id:
            return None  # buying through one's own link credits nobody
        sharer = claims.sharer_id
        if not await self.is_active(sharer):
            sharer = ""
        cfg = self.ctx.config
        if self._touch is None:
            self._touch = self.ctx.redis.register_script(TOUCH_LUA)
        field = "f" if cfg.sharer_attribution == "first" else "l"
        who = await self._touch(
            keys=[self._touch_key(broadcast_id, user_id)],
            args=[now, sharer, cfg.sharer_window * 1000, field],
        )
        if who is None:
            return None
        return who.decode() if isinstance(who, bytes) else str(who)

    def _visit_keys(self, broadcast_id: str, sharer: str, address: str) -> tuple[str, str, str]:
        tag = f"{{{self.ctx.config.redis_prefix}:share}}"
        who = hashlib.sha256(f"{broadcast_id}\0{sharer}".encode()).hexdigest()[:24]
        ip = hashlib.sha256(f"{broadcast_id}\0{address}".encode()).hexdigest()[:24]
        return (f"{tag}:visitors:{who}", f"{tag}:visits:{broadcast_id}", f"{tag}:ip:{ip}")

    def _visits_ttl_ms(self) -> int:
        """Visits are kept while a link can bring more and its orders be credited."""
        cfg = self.ctx.config
        return (cfg.share_link_ttl + cfg.sharer_window) * 1000

    async def visit(
        self,
        token: str,
        broadcast_id: str,
        *,
        user_id: str | None,
        device: str | None,
        address: str,
    ) -> Visit:
        """A viewer arrived through ``token``'s link: count a visit for its sharer, once per
        viewer and browser (``user_id`` and/or ``device``: one already seen by either id is
        not counted again; both are remembered), bounded per sharer and broadcast
        (:data:`VISITORS_MAX`) and per client address (:data:`VISITS_PER_ADDRESS` new
        visitors an hour). With a viewer, also :meth:`touch` (their orders get credited);
        without one nothing is credited until they have a token and buy with the link."""
        if not user_id and not device:
            raise ValueError("a visit needs a viewer or a device")
        try:
            claims = verify_share(self.key, token, self.ctx.now_ms())
        except TokenRefused as exc:
            logger.info("share visit not counted: %s", exc)
            return Visit(False, None, "refused")
        if claims.broadcast_id != broadcast_id or claims.sharer_id == user_id:
            return Visit(False, None, "refused")
        if not await self.is_active(claims.sharer_id):
            return Visit(False, None, "refused")
        credited = await self.touch(token, user_id, broadcast_id) if user_id else None
        ids = [f"u:{user_id}"] if user_id else []
        if device:
            ids.append(f"d:{device}")
        ids = [hashlib.sha256(i.encode()).hexdigest()[:32] for i in ids]
        if self._visit is None:
            self._visit = self.ctx.redis.register_script(VISIT_LUA)
        done = int(
            await self._visit(
                keys=[*self._visit_keys(broadcast_id, claims.sharer_id, address)],
                args=[
                    claims.sharer_id,
                    self._visits_ttl_ms(),
                    VISITORS_MAX,
                    VISITS_PER_ADDRESS,
                    VISITS_ADDRESS_WINDOW_S * 1000,
                    *ids,
                ],
            )
        )
        reason = {1: "", 0: "seen", -1: "capped", -2: "address_limit"}.get(done, "")
        if done < 0:
            logger.info("share visit for %s not counted: %s", claims.sharer_id, reason)
        return Visit(done == 1, credited, reason)

    async def visits(self, broadcast_id: str) -> dict[str, int]:
        """Visits counted per sharer of a broadcast (kept :meth:`_visits_ttl_ms`)."""
        raw = await self.ctx.redis.hgetall(self._visit_keys(broadcast_id, "", "")[1])
        return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in raw.items()}

    # -- sales ---------------------------------------------------------------------------

    async def report(self, broadcast_id: str) -> dict[str, Any]:
        """Sales of a broadcast per sharer (the shop's one definition, :mod:`gmv`), the
        biggest first; orders credited to nobody are not listed."""
        o = ORDERS.c
        counted = gmv.order_counts()
        async with self.ctx.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        o.sharer_id,
                        func.coalesce(func.sum(o.amount_fen), 0),
                        func.coalesce(func.sum(gmv.refunded_amount()), 0),
                        func.coalesce(func.sum(case((counted, 1), else_=0)), 0),
                        func.count(func.distinct(case((counted, o.user_id), else_=None))),
                        func.coalesce(func.sum(case((counted, o.quantity), else_=0)), 0),
                    )
                    .where(o.broadcast_id == broadcast_id, o.sharer_id.is_not(None), gmv.is_sale())
                    .group_by(o.sharer_id)
                )
            ).all()
            names = {
                r[0]: r[1]
                for r in await conn.execute(
                    select(SHARERS.c.user_id, SHARERS.c.name).where(
                        SHARERS.c.user_id.in_([r[0] for r in rows])
                    )
                )
            }
        visits = await self.visits(broadcast_id)
        items = [
            {
                "sharer_id": sid,
                "visits": visits.pop(sid, 0),
                "name": names.get(sid, ""),
                "gmv_fen": int(paid) - int(refunded),
                "paid_fen": int(paid),
                "refunded_fen": int(refunded),
                "orders": int(orders),
                "buyers": int(buyers),
                "units": int(units),
            }
            for sid, paid, refunded, orders, buyers, units in rows
        ]
        if visits:  # sharers who brought visitors and no sale (yet)
            async with self.ctx.engine.connect() as conn:
                names.update(
                    {
                        r[0]: r[1]
                        for r in await conn.execute(
                            select(SHARERS.c.user_id, SHARERS.c.name).where(
                                SHARERS.c.user_id.in_(list(visits)[:1000])
                            )
                        )
                    }
                )
            for sid, n in visits.items():
                items.append(
                    {
                        "sharer_id": sid,
                        "visits": n,
                        "name": names.get(sid, ""),
                        "gmv_fen": 0,
                        "paid_fen": 0,
                        "refunded_fen": 0,
                        "orders": 0,
                        "buyers": 0,
                        "units": 0,
                    }
                )
        items.sort(key=lambda i: (-i["gmv_fen"], i["sharer_id"]))
        return {
            "broadcast_id": int(broadcast_id) if broadcast_id.isdigit() else broadcast_id,
            "attribution": self.ctx.config.sharer_attribution,
            "window_s": self.ctx.config.sharer_window,
            "items": items,
        }
