"""Webhooks: bus events POSTed to subscribers, HMAC-signed, retried with backoff, logged.

Each matching event becomes one row in ``control_webhook_deliveries`` (unique per webhook
and event id, so an event seen twice, e.g. by two nodes, is delivered once). A worker
sends due rows, claiming each with a compare-and-set lease, so several nodes can run it.

Request to the subscriber::

    POST <url>
    Content-Type: application/json
    X-Berrylive-Event: broadcast.live
    X-Berrylive-Event-Id: <event id>        (also Idempotency-Key: the same on every retry)
    X-Berrylive-Delivery: <delivery id>
    X-Berrylive-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

    {"id": "<event id>", "topic": "broadcast.live", "ts": 1763800000.1, "data": {...}}

A 2xx answer is success; anything else (or a timeout) is retried after
``webhook_backoff * 2**(attempt-1)`` seconds (capped at an hour, with jitter) until
``webhook_max_attempts``, then the delivery is ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from control.models import deliveries, webhooks
from control.settings import ControlSettings
from core.bus import Event, topic_matches

logger = logging.getLogger(__name__)

MAX_WEBHOOKS = 100
MAX_RESPONSE_READ = 4096
INTERNAL_TOPICS = ("webhook.",)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """How a subscriber checks a delivery (used by our tests; documented for subscribers)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        ts = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), header)


@dataclass(frozen=True)
class Webhook:
    id: int
    url: str
    secret: str
    events: list[str]
    active: bool
    description: str
    created_at: float


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=row.id,
        url=row.url,
        secret=row.secret,
        events=list(row.events or []),
        active=bool(row.active),
        description=row.description,
        created_at=row.created_at,
    )


@dataclass
class WebhookCounters:
    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0


class WebhookService:
    def __init__(self, engine: AsyncEngine, settings: ControlSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.counters = WebhookCounters()
        self._hooks: list[Webhook] | None = None
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending_estimate = 0

    @property
    def pending(self) -> int:
        """Deliveries waiting (an estimate, refreshed by the worker; for ``/metrics``)."""
        return self._pending_estimate

    # -- records ---------------------------------------------------------------------
    async def list_page(self, limit: int, offset: int) -> tuple[list[Webhook], int]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    webhooks.select().order_by(webhooks.c.id).limit(limit).offset(offset)
                )
            ).all()
            total = int(await conn.scalar(sa.select(sa.func.count()).select_from(webhooks)) or 0)
        return [_webhook(r) for r in rows], total

    async def get(self, webhook_id: int) -> Webhook | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(webhooks.select().where(webhooks.c.id == webhook_id))).first()
        return _webhook(row) if row else None

    async def create(
        self, url: str, events: list[str], secret: str | None, description: str, active: bool
    ) -> Webhook:
        async with self.engine.begin() as conn:
            count = int(await conn.scalar(sa.select(sa.func.count()).select_from(webhooks)) or 0)
            if count >= MAX_WEBHOOKS:
                raise OverflowError(f"at most {MAX_WEBHOOKS} webhooks")
            result = await conn.execute(
                webhooks.insert().values(
                    url=url,
                    secret=secret or secrets.token_urlsafe(32),
                    events=events,
                    description=description,
                    active=active,
                    created_at=time.time(),
                )
            )
            wid = int(result.inserted_primary_key[0])  # type: ignore[index]
        self._hooks = None
        hook = await self.get(wid)
        assert hook is not None
        return hook

    async def update(self, webhook_id: int, values: dict[str, Any]) -> Webhook | None:
        if values:
            async with self.engine.begin() as conn:
                await conn.execute(
                    webhooks.update().where(webhooks.c.id == webhook_id).values(**values)
                )
        self._hooks = None
        return await self.get(webhook_id)

    async def delete(self, webhook_id: int) -> bool:
        async with self.engine.begin() as conn:
            await conn.execute(deliveries.delete().where(deliveries.c.webhook_id == webhook_id))
            result = await conn.execute(webhooks.delete().where(webhooks.c.id == webhook_id))
        self._hooks = None
        return bool(result.rowcount)

    async def deliveries(
        self, webhook_id: int, limit: int, offset: int, status: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        cond = [deliveries.c.webhook_id == webhook_id]
        if status:
            cond.append(deliveries.c.status == status)
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    deliveries.select()
                    .where(*cond)
                    .order_by(deliveries.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
            total = int(
                await conn.scalar(sa.select(sa.func.count()).select_from(deliveries).where(*cond))
                or 0
            )
        return [dict(r._mapping) for r in rows], total

    # -- intake ----------------------------------------------------------------------
    async def _active_hooks(self) -> list[Webhook]:
        if self._hooks is None:
            async with self.engine.connect() as conn:
                rows = (await conn.execute(webhooks.select().where(webhooks.c.active))).all()
            self._hooks = [_webhook(r) for r in rows]
        return self._hooks

    async def on_event(self, event: Event) -> None:
        if event.topic.startswith(INTERNAL_TOPICS):
            return
        hooks = [
            h
            for h in await self._active_hooks()
            if any(topic_matches(p, event.topic) for p in h.events)
        ]
        for hook in hooks:
            await self.enqueue(hook.id, event)

    async def enqueue(self, webhook_id: int, event: Event) -> None:
        now = time.time()
        payload = json.dumps(
            {"id": event.id, "topic": event.topic, "ts": event.ts, "data": event.data},
            separators=(",", ":"),
            default=str,
        )
        status = "pending"
        if self._pending_estimate >= self.settings.webhook_max_queue:
            status = "dropped"
            self.counters.dropped += 1
            logger.warning("webhook %d: queue full, event %s dropped", webhook_id, event.id)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    deliveries.insert().values(
                        webhook_id=webhook_id,
                        event_id=event.id,
                        topic=event.topic,
                        payload=payload,
                        status=status,
                        attempts=0,
                        next_attempt_at=now if status == "pending" else None,
                        created_at=now,
                    )
                )
        except IntegrityError:
            return  # this event is already queued for this webhook
        if status == "pending":
            self._pending_estimate += 1
            self._wake.set()

    # -- the worker --------------------------------------------------------------------
    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout),
            headers={"User-Agent": "berrylive-webhooks/1"},
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="control:webhooks")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                sent = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("webhook worker failed; retrying")
                sent = 0
            if sent == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

    async def run_once(self, batch: int = 20) -> int:
        now = time.time()
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(deliveries, webhooks.c.url, webhooks.c.secret)
                    .join(webhooks, webhooks.c.id == deliveries.c.webhook_id)
                    .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(batch)
                )
            ).all()
            self._pending_estimate = int(
                await conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(deliveries)
                    .where(deliveries.c.status == "pending")
                )
                or 0
            )
        claimed = []
        lease = now + self.settings.webhook_timeout * 2 + 5
        for row in rows:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.id == row.id,
                        deliveries.c.status == "pending",
                        deliveries.c.next_attempt_at == row.next_attempt_at,
                    )
                    .values(next_attempt_at=lease)
                )
            if result.rowcount == 1:
                claimed.append(row)
        await asyncio.gather(*(self._attempt(row) for row in claimed))
        return len(claimed)

    async def _attempt(self, row: Any) -> None:
        assert self._session is not None
        body = row.payload.encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-Berrylive-Event": row.topic,
            "X-Berrylive-Event-Id": row.event_id,
            "Idempotency-Key": row.event_id,
            "X-Berrylive-Delivery": str(row.id),
            "X-Berrylive-Signature": sign(row.secret, ts, body),
        }
        status: int | None = None
        error: str | None = None
        try:
            # never follow a redirect: a receiver could send the signed POST on to a
            # loopback or private address (a 3xx is a failed attempt, retried as such)
            async with self._session.post(
                row.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                if 300 <= resp.status < 400:
                    where = resp.headers.get("Location", "")[:200]
                    error = f"HTTP {resp.status}: redirect to {where!r} not followed"
                elif not 200 <= resp.status < 300:
                    text = (await resp.content.read(MAX_RESPONSE_READ)).decode("utf-8", "replace")
                    error = f"HTTP {resp.status}: {text[:200]}"
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        attempts = row.attempts + 1
        now = time.time()
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if error is None:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
            self.counters.delivered += 1
        else:
            self.counters.failed_attempts += 1
            if attempts >= self.settings.webhook_max_attempts:
                values.update(status="failed", next_attempt_at=None)
                self.counters.gave_up += 1
                logger.warning("webhook delivery %d gave up after %d attempts", row.id, attempts)
            else:
                delay = min(self.settings.webhook_backoff * 2 ** (attempts - 1), 3600.0)
                values["next_attempt_at"] = now + delay * random.uniform(0.9, 1.1)
        async with self.engine.begin() as conn:
            await conn.execute(
                deliveries.update().where(deliveries.c.id == row.id).values(**values)
            )

    async def retry(self, webhook_id: int, delivery_id: int) -> bool:
        """Send a failed delivery again (operator action)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id, deliveries.c.webhook_id == webhook_id)
                .values(status="pending", attempts=0, next_attempt_at=time.time())
            )
        self._wake.set()
        return bool(result.rowcount)
