"""The live room's series: a broadcast's figures step by step (a minute by default) since
it went live, for the console's charts (``GET /api/broadcasts/{id}/series``).

Every node samples every broadcast on air (``live`` or ``interrupted``) each
``series_sample`` seconds and writes into the Redis hash of the current step (``t``, the
step's start in Unix seconds):

* what only this node sees, under fields named after the node: the peak of its
  concurrent viewers in the step, per protocol (``v:<node>``, ``p:<node>:<protocol>``),
  viewers it dropped as too slow (``d:<node>``), and, on the node holding the publisher,
  the stream's health averaged over the step (``h:bitrate``, ``h:fps``, ``h:gop``);
* the broadcast's running totals, the same from every node (``c:comments``, ``c:likes``
  from :class:`control.stats.LiveStats`; ``c:orders``, ``c:gmv_fen``, ``c:refunded_fen``
  from the shop by the one definition, :mod:`shop_bridge.gmv`). A point's ``comments``,
  ``orders``, ``gmv_fen``... are the change of the running total since the step before
  (the first step: since nothing, so it also carries what came before the show went
  live: pre-sale orders, comments in the waiting room), so the points add up to the
  show's totals (``gmv_fen`` of a step with a refund can be negative).

A point's ``viewers`` is the sum over nodes of each node's peak in the step. The client
addresses of the viewers go into a HyperLogLog (``unique_viewers``, an estimate within
about 1 %). Redis keeps at most ``series_max_points`` steps per broadcast (older ones are
in the database); while a broadcast is on air its finished steps are written to
``control_series_points`` every ``series_flush`` seconds, and all of them, with the show's
summary (``control_broadcast_summaries``: peak concurrent viewers and when, unique
viewers, totals), when it ends or is banned. The Redis copy expires a day later.

Reads merge the database's points with Redis's (Redis wins for a step both have: it is
the fresher).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from control.events import BroadcastEvent
from control.lifecycle import ON_AIR
from control.models import broadcast_summaries, broadcasts, series_points
from control.settings import ControlSettings
from control.stats import LiveStats

logger = logging.getLogger(__name__)

KEY = "berrylive:control:series:"
PROTOCOLS = ("flv", "ws-flv", "rtmp", "hls", "whep")
PROTOCOL_OF = {"flv": "flv", "ws": "ws-flv", "ws-flv": "ws-flv", "rtmp": "rtmp", "hls": "hls"}
PROTOCOL_OF.update({"whep": "whep", "webrtc": "whep"})
TOTALS = ("comments", "likes", "orders", "gmv_fen", "refunded_fen")
KEEP_AFTER_END = 86400
"""Seconds the Redis copy of a broadcast's series lives after its last write."""
MAX_BROADCASTS = 500
"""Broadcasts on air sampled at most (the newest)."""


@dataclass(frozen=True)
class HubProbe:
    """What a sample reads of this node's hub of a stream (the relay's public state)."""

    addresses: list[str]
    """Client addresses of its viewers (unique-viewer counts)."""
    keyframe_ms: int | None
    """Timestamp of the last keyframe (the GOP cache's first frame), ms."""
    last_ms: int
    """Timestamp of the newest frame, ms."""
    behind: frozenset[int]
    """Viewers skipping to the next keyframe (their connection is behind), by ``id()``."""
    viewers: frozenset[int]


ViewerProbe = Callable[[str, str], HubProbe | None]
"""``(app, stream)`` -> what this node's hub of that stream shows (None: no hub here)."""
Streams = Callable[[], Awaitable[list[dict[str, Any]]]]


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    return float(value)


def _s(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@dataclass
class _Step:
    """What this node saw of one broadcast in one step."""

    t: int
    peak: int = 0
    by_protocol: dict[str, int] = field(default_factory=dict)
    health: dict[str, list[float]] = field(default_factory=dict)
    dropped: int = 0
    behind_peak: int = 0
    since_keyframe_ms: int = 0
    """The longest time since a keyframe seen in this step's samples."""


@dataclass
class _Gop:
    """Keyframes seen in a stream's samples: the keyframe interval is estimated from the
    distance between the keyframes two samples saw, divided by the number of GOPs in
    between (that distance over the longest time since a keyframe any sample saw)."""

    keyframe_ms: int | None = None
    longest_ms: int = 0
    interval_s: float | None = None
    behind: frozenset[int] = frozenset()

    def see(self, probe: HubProbe) -> None:
        kf = probe.keyframe_ms
        if kf is None:
            return
        self.longest_ms = max(self.longest_ms, probe.last_ms - kf)
        if self.keyframe_ms is not None and kf > self.keyframe_ms:
            gap = kf - self.keyframe_ms
            gops = max(1, round(gap / self.longest_ms)) if self.longest_ms > 0 else 1
            self.interval_s = round(gap / gops / 1000, 3)
        self.keyframe_ms = kf


class LiveSeries:
    """Samples broadcasts on air into Redis, writes them to the database, reads them."""

    def __init__(
        self,
        engine: AsyncEngine,
        redis: Any,
        stats: LiveStats,
        settings: ControlSettings,
        node: str,
        probe: ViewerProbe | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.stats = stats
        self.node = node
        self.step = max(1, int(settings.series_step))
        self.sample_every = max(0.2, min(float(settings.series_sample), float(self.step)))
        self.max_points = max(2, settings.series_max_points)
        self.flush_every = max(float(self.step), float(settings.series_flush))
        self.probe = probe
        self._gops: dict[int, _Gop] = {}
        self.clock = clock
        self._steps: dict[int, _Step] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ending: set[int] = set()

    # -- keys ------------------------------------------------------------------------
    def _step_key(self, bid: int, t: int) -> str:
        return f"{KEY}{bid}:{t}"

    def _index(self, bid: int) -> str:
        return f"{KEY}{bid}:steps"

    def _base(self, bid: int) -> str:
        return f"{KEY}{bid}:base"

    def _viewers(self, bid: int) -> str:
        return f"{KEY}{bid}:viewers"

    # -- lifecycle -------------------------------------------------------------------
    def start(self, bus: Any) -> Callable[[], None]:
        """Sample and flush in the background; write the series out when a broadcast
        ends. Returns the unsubscriber of the bus subscription."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._loop(self.sample_every, self.sample), name="series:sample"),
            loop.create_task(self._loop(self.flush_every, self.flush_live), name="series:flush"),
        ]
        return bus.on(BroadcastEvent, self.on_broadcast)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _loop(self, every: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("live series: %s failed; retrying", job.__name__)
            await asyncio.sleep(every)

    async def on_broadcast(self, event: BroadcastEvent) -> None:
        """A show that ended (or was banned): its series and summary to the database."""
        if event.topic not in ("broadcast.ended", "broadcast.banned"):
            return
        bid = event.id
        if bid in self._ending:
            return
        self._ending.add(bid)
        try:
            await self.sample([bid])  # the last running totals
            await self.finish(bid)
        except Exception:
            logger.exception("broadcast %d: series not written at its end", bid)
        finally:
            self._ending.discard(bid)

    # -- sampling --------------------------------------------------------------------
    async def _on_air(self, only: list[int] | None = None) -> list[Any]:
        q = sa.select(broadcasts.c.id, broadcasts.c.app, broadcasts.c.stream)
        if only is not None:
            q = q.where(broadcasts.c.id.in_(only))
        else:
            q = q.where(broadcasts.c.state.in_([s.value for s in ON_AIR]))
        async with self.engine.connect() as conn:
            return list(
                (await conn.execute(q.order_by(broadcasts.c.id.desc()).limit(MAX_BROADCASTS))).all()
            )

    async def sample(self, only: list[int] | None = None) -> int:
        """One sample of every broadcast on air (or of ``only``); the number sampled."""
        rows = await self._on_air(only)
        if not rows:
            return 0
        now = self.clock()
        t = int(now // self.step * self.step)
        streams = {
            (s.get("app"), s.get("name") or s.get("stream")): s for s in await self.stats.streams()
        }
        sales = await self.stats.sales([int(r.id) for r in rows])
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            bid = int(row.id)
            stream = streams.get((row.app, row.stream))
            counters = await self.stats.counters(bid)
            totals = {**counters, **{k: sales[bid].get(k, 0) for k in TOTALS[2:]}}
            seen = self.probe(row.app, row.stream) if self.probe is not None else None
            fields = self._node_fields(bid, t, stream, seen)
            fields.update({f"c:{k}": int(totals.get(k, 0)) for k in TOTALS})
            key = self._step_key(bid, t)
            pipe.hset(key, mapping=fields)
            pipe.expire(key, KEEP_AFTER_END)
            pipe.hsetnx(self._base(bid), "t", t)  # the first step (trimmed ones: see below)
            pipe.expire(self._base(bid), KEEP_AFTER_END)
            pipe.zadd(self._index(bid), {str(t): t})
            pipe.zremrangebyrank(self._index(bid), 0, -self.max_points - 1)
            pipe.expire(self._index(bid), KEEP_AFTER_END)
            if seen is not None and seen.addresses:
                pipe.pfadd(self._viewers(bid), *seen.addresses[:10_000])
                pipe.expire(self._viewers(bid), KEEP_AFTER_END)
        await pipe.execute()
        for key_t in [k for k, s in self._steps.items() if s.t < t - self.step * 2]:
            self._steps.pop(key_t, None)
        return len(rows)

    def _node_fields(
        self, bid: int, t: int, stream: dict[str, Any] | None, seen: HubProbe | None
    ) -> dict[str, Any]:
        """This node's part of the step: its viewers' peak, viewers behind or dropped,
        the stream's health."""
        step = self._steps.get(bid)
        if step is None or step.t != t:
            step = self._steps[bid] = _Step(t)
        node = self.node
        if stream is None:
            return {f"v:{node}": step.peak}
        now_by: dict[str, int] = dict.fromkeys(PROTOCOLS, 0)
        raw = stream.get("viewers")
        for proto, n in (raw if isinstance(raw, dict) else {}).items():
            name = PROTOCOL_OF.get(str(proto))
            if name is not None and isinstance(n, int) and not isinstance(n, bool):
                now_by[name] += n
        hls = _num(stream.get("hls_viewers"))
        if hls is not None:
            now_by["hls"] += int(hls)
        step.peak = max(step.peak, sum(now_by.values()))
        for proto, n in now_by.items():
            step.by_protocol[proto] = max(step.by_protocol.get(proto, 0), n)
        gop = self._gops.setdefault(bid, _Gop())
        if seen is not None:
            gop.see(seen)
            # a viewer seen behind at the last sample and gone now was dropped as too slow
            gone = len(gop.behind - seen.viewers)
            step.dropped += gone
            gop.behind = seen.behind
            step.behind_peak = max(step.behind_peak, len(seen.behind))
        fields: dict[str, Any] = {
            f"v:{node}": step.peak,
            f"d:{node}": step.dropped + step.behind_peak,
        }
        fields.update({f"p:{node}:{p}": n for p, n in step.by_protocol.items()})
        publishing = stream.get("live") and stream.get("publisher") is not None
        if publishing:
            bitrate = _num(stream.get("bitrate_in"))
            video = stream.get("video")
            video = video if isinstance(video, dict) else {}
            health = {
                "bitrate": None if bitrate is None else bitrate / 1000,
                "fps": _num(stream.get("fps")) or _num(video.get("fps")),
                "gop": _num(stream.get("keyframe_interval")) or gop.interval_s,
            }
            for name, value in health.items():
                if value is not None:
                    samples = step.health.setdefault(name, [])
                    samples.append(value)
                    fields[f"h:{name}"] = round(sum(samples) / len(samples), 3)
        return fields

    # -- reading ---------------------------------------------------------------------
    async def redis_points(self, bid: int, since: int | None = None) -> list[dict[str, Any]]:
        """The points Redis holds (``t >= since``), diffed against the step before."""
        steps = [int(float(_s(x))) for x in await self.redis.zrange(self._index(bid), 0, -1)]
        if not steps:
            return []
        steps.sort()
        first = 0
        if since is not None:
            first = next((i for i, t in enumerate(steps) if t >= since), len(steps))
            if first == len(steps):
                return []
        wanted = steps[max(0, first - 1) :]
        pipe = self.redis.pipeline(transaction=False)
        for t in wanted:
            pipe.hgetall(self._step_key(bid, t))
        pipe.hgetall(self._base(bid))
        *hashes, base_raw = await pipe.execute()
        base = {_s(k): _s(v) for k, v in (base_raw or {}).items()}
        prev = dict.fromkeys(TOTALS, 0)  # the first step counts from 0: all before it too
        # steps trimmed from Redis are in the database; the oldest step kept is then only
        # the reference of the next one (its own change is not known here)
        trimmed = first == 0 and int(base.get("t", steps[0]) or 0) < steps[0]
        out = []
        for i, (t, raw) in enumerate(zip(wanted, hashes, strict=True)):
            data = {_s(k): _s(v) for k, v in (raw or {}).items()}
            if not data:
                continue
            point = _point(t, data, prev)
            prev = {k: int(data.get(f"c:{k}", prev[k])) for k in TOTALS}
            if (i == 0 and trimmed) or (since is not None and t < since):
                continue
            out.append(point)
        return out

    async def db_points(self, bid: int, since: int | None = None) -> list[dict[str, Any]]:
        q = sa.select(series_points.c.t, series_points.c.data).where(
            series_points.c.broadcast_id == bid
        )
        if since is not None:
            q = q.where(series_points.c.t >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q.order_by(series_points.c.t))).all()
        return [{"t": iso(r[0]), **dict(r[1])} for r in rows]

    async def points(self, bid: int, since: int | None = None) -> list[dict[str, Any]]:
        merged = {p["t"]: p for p in await self.db_points(bid, since)}
        merged.update({p["t"]: p for p in await self.redis_points(bid, since)})
        return [merged[t] for t in sorted(merged)]

    async def summary(self, bid: int) -> dict[str, Any] | None:
        """The stored summary of a show that ended (None before its end)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(broadcast_summaries.c.data).where(
                        broadcast_summaries.c.broadcast_id == bid
                    )
                )
            ).first()
        return dict(row.data) if row is not None else None

    async def live_summary(self, bid: int) -> dict[str, Any]:
        """The summary so far: peak concurrent viewers (and when), unique viewers, totals."""
        points = await self.points(bid)
        peak = max(points, key=lambda p: p["viewers"], default=None)
        unique = int(await self.redis.pfcount(self._viewers(bid)) or 0)
        counters = await self.stats.counters(bid)
        sales = (await self.stats.sales([bid]))[bid]
        return {
            "broadcast_id": bid,
            "peak_viewers": peak["viewers"] if peak else 0,
            "peak_at": peak["t"] if peak and peak["viewers"] else None,
            "unique_viewers": unique,
            "points": len(points),
            "comments": counters["comments"],
            "likes": counters["likes"],
            **sales,
        }

    # -- writing to the database -------------------------------------------------------
    async def flush_live(self) -> int:
        """Write the finished steps of every broadcast on air to the database."""
        done = 0
        now_t = int(self.clock() // self.step * self.step)
        for row in await self._on_air():
            points = [p for p in await self.redis_points(int(row.id)) if _t_of(p["t"]) < now_t]
            done += await self.store(int(row.id), points)
        return done

    async def store(self, bid: int, points: list[dict[str, Any]]) -> int:
        if not points:
            return 0
        rows = [
            {
                "broadcast_id": bid,
                "t": _t_of(p["t"]),
                "data": {k: v for k, v in p.items() if k != "t"},
            }
            for p in points
        ]
        dialect = self.engine.dialect.name
        async with self.engine.begin() as conn:
            for chunk in range(0, len(rows), 500):
                ins: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(series_points)
                stmt = ins.values(rows[chunk : chunk + 500])
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["broadcast_id", "t"], set_={"data": stmt.excluded.data}
                    )
                )
        return len(rows)

    async def finish(self, bid: int) -> dict[str, Any]:
        """All of the show's points and its summary to the database."""
        await self.store(bid, await self.redis_points(bid))
        summary = await self.live_summary(bid)
        summary.pop("broadcast_id", None)
        dialect = self.engine.dialect.name
        ins: Any = (pg_insert if dialect == "postgresql" else sqlite_insert)(broadcast_summaries)
        stmt = ins.values(broadcast_id=bid, data=summary, updated_at=self.clock())
        async with self.engine.begin() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["broadcast_id"],
                    set_={"data": stmt.excluded.data, "updated_at": stmt.excluded.updated_at},
                )
            )
        self._steps.pop(bid, None)
        self._gops.pop(bid, None)
        logger.info("broadcast %d: series and summary written (%s)", bid, summary)
        return summary


def _t_of(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())


def _point(t: int, data: dict[str, str], prev: dict[str, int]) -> dict[str, Any]:
    """One point of the contract (docs/control.md, "The live room's series")."""
    viewers = 0
    by_protocol = dict.fromkeys(PROTOCOLS, 0)
    dropped = 0
    for k, v in data.items():
        if k.startswith("v:"):
            viewers += int(v)
        elif k.startswith("p:"):
            proto = k.rsplit(":", 1)[1]
            if proto in by_protocol:
                by_protocol[proto] += int(v)
        elif k.startswith("d:"):
            dropped += int(v)

    def health(name: str) -> float | None:
        raw = data.get(f"h:{name}")
        return None if raw is None else round(float(raw), 3)

    point: dict[str, Any] = {
        "t": iso(t),
        "viewers": viewers,
        "viewers_by_protocol": by_protocol,
    }
    for k in TOTALS:
        point[k] = int(data.get(f"c:{k}", prev[k])) - prev[k]
    point.update(
        bitrate_in_kbps=health("bitrate"),
        fps=health("fps"),
        keyframe_interval_s=health("gop"),
        dropped_viewers=dropped,
    )
    return point
