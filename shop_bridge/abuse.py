"""The blocklist's records: accounts, devices and IPs that may not buy or enter lotteries.

The records live in the database (the truth; operator API ``/api/shop/blocklist``) and are
mirrored into the Redis hash the guard reads (:class:`core.abuse.AbuseGuard`, built by the
service with the shop's limits); every node reads that hash, and when Redis lost it (a
restart, a failover) the guard's next check finds no marker and reloads it from here.
Rate limits, the check script and the account-age rule are the guard's: see
:mod:`core.abuse`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.abuse import AbuseGuard, normalise_entry
from shop_bridge.views import iso

__all__ = ["Blocklist", "entry_view"]

logger = logging.getLogger(__name__)


def entry_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        "value": row["value"],
        "reason": row["reason"],
        "created_at": iso(row["created_ms"]),
        "created_by": row["created_by"] or None,
        "expires_at": iso(row["expires_ms"]),
    }


class Blocklist:
    """The blocklist's records (database) mirrored into the guard's Redis hash."""

    def __init__(self, engine: Any, guard: AbuseGuard, clock: Callable[[], float]) -> None:
        from shop_bridge.models import BLOCKLIST

        self.engine = engine
        self.guard = guard
        self.clock = clock
        self.table = BLOCKLIST
        guard.loader = self.entries_for_redis

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def entries_for_redis(self) -> list[tuple[str, str, int | None]]:
        t = self.table.c
        now = self.now_ms()
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.kind, t.value, t.expires_ms).where(
                    t.expires_ms.is_(None) | (t.expires_ms > now)
                )
            )
            return [(str(k), str(v), e) for k, v, e in rows]

    async def add(
        self, kind: str, value: str, reason: str, actor: str, ttl: int | None
    ) -> tuple[dict[str, Any], bool]:
        """Block ``kind:value`` (again: its reason and expiry are replaced)."""
        value = normalise_entry(kind, value)
        now = self.now_ms()
        expires = now + ttl * 1000 if ttl else None
        values = {"reason": reason, "created_ms": now, "created_by": actor[:64]}
        t = self.table.c
        created = True
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    insert(self.table).values(kind=kind, value=value, expires_ms=expires, **values)
                )
        except IntegrityError:
            created = False
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(self.table)
                    .where(t.kind == kind, t.value == value)
                    .values(expires_ms=expires, **values)
                )
        await self.guard.mirror_add(kind, value, expires)
        logger.info("blocklist: %s %s blocked by %s", kind, _shown(kind, value), actor)
        return (await self.get(kind, value)), created

    async def get(self, kind: str, value: str) -> dict[str, Any]:
        t = self.table.c
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(self.table).where(t.kind == kind, t.value == value)))
                .mappings()
                .first()
            )
        if row is None:
            raise LookupError(f"{kind} {value} is not blocked")
        return entry_view(dict(row))

    async def remove(self, kind: str, value: str, actor: str) -> bool:
        value = normalise_entry(kind, value)
        t = self.table.c
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(self.table).where(t.kind == kind, t.value == value))
        await self.guard.mirror_remove(kind, value)
        if res.rowcount:
            logger.info("blocklist: %s %s unblocked by %s", kind, _shown(kind, value), actor)
        return bool(res.rowcount)

    async def list(self, kind: str | None, limit: int, after: int) -> list[dict[str, Any]]:
        t = self.table.c
        q = select(self.table).where(t.id > after).order_by(t.id).limit(limit)
        if kind is not None:
            q = q.where(t.kind == kind)
        async with self.engine.connect() as conn:
            return [
                {"id": r["id"], **entry_view(dict(r))} for r in (await conn.execute(q)).mappings()
            ]


def _shown(kind: str, value: str) -> str:
    """A value as logs show it (an account or device id in full, an IP address too: the
    blocklist is the operator's own record)."""
    return value[:64]
