"""The event bus between packages: in-process by default, Redis pub/sub across nodes.

Packages talk through events (``stream.published``, ``card.pushed``, ``order.paid``...),
never through calls. A subscriber gets its own bounded queue and worker task, so a slow
subscriber delays nobody else; when its queue is full, new events for it are dropped,
counted and logged.

Topics are dotted names; a subscription pattern is an exact topic, a prefix ending in
``.*`` (``stream.*``), or ``*`` for everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from core.events import BusEvent, EventDecodeError, event_class_of
from core.ids import random_hex

logger = logging.getLogger(__name__)

Handler = Callable[["Event"], Awaitable[None] | None]
E = TypeVar("E", bound=BusEvent)
TypedHandler = Callable[[E], Awaitable[None] | None]

CHANNEL_PREFIX = "berrylive:events:"


@dataclass(frozen=True, slots=True)
class Event:
    """One event: a topic, a JSON-able payload, a unique id, a wall-clock time and its node."""

    topic: str
    data: dict[str, Any]
    id: str = field(default_factory=lambda: random_hex(16))  # like uuid4().hex
    ts: float = field(default_factory=time.time)
    node: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "data": self.data,
            "id": self.id,
            "ts": self.ts,
            "node": self.node,
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Event:
        """The event of a decoded JSON object (ValueError if it is not one)."""
        if not isinstance(obj, dict) or not isinstance(obj.get("topic"), str):
            raise ValueError("not an event")
        data = obj.get("data")
        if not isinstance(data, dict):
            raise ValueError("event data must be an object")
        return cls(
            topic=obj["topic"],
            data=data,
            id=str(obj.get("id", "")),
            ts=float(obj.get("ts", 0.0)),
            node=str(obj.get("node", "")),
        )


def encode_events(events: list[Event]) -> bytes:
    """One pub/sub message: a JSON array of event objects."""
    return _dumps([e.to_dict() for e in events])


def decode_events(raw: str | bytes) -> tuple[list[Event], int]:
    """The events of a message (an array of event objects, or one object as sent before
    events travelled in batches) and how many of its entries were malformed."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [], 1
    events: list[Event] = []
    bad = 0
    for item in obj if isinstance(obj, list) else [obj]:
        try:
            events.append(Event.from_obj(item))
        except (ValueError, TypeError):
            bad += 1
    return events, bad


def _dumps(obj: Any) -> bytes:
    """orjson, else the standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def topic_matches(pattern: str, topic: str) -> bool:
    if pattern == "*" or pattern == topic:
        return True
    if pattern.endswith(".*"):
        return topic.startswith(pattern[:-1])
    return False


def _call_typed(cls: type[E], handler: TypedHandler[E], event: Event) -> Awaitable[None] | None:
    """``handler`` on the ``cls`` instance of ``event``; a payload that does not fit the
    class (another node's version, a hand-made event) is dropped with a log line."""
    try:
        ev = cls.from_data(event.data, event.topic)
    except EventDecodeError as exc:
        logger.warning("event bus: dropping %s from %s: %s", event.topic, event.node, exc)
        return None
    return handler(ev)


class _Subscription:
    def __init__(self, pattern: str, handler: Handler, maxsize: int) -> None:
        self.pattern = pattern
        self.handler = handler
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                result = self.handler(event)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event handler %r failed on %s", self.handler, event.topic)
            finally:
                self.queue.task_done()


class EventBus:
    """In-process event bus. Subclasses add transport between nodes."""

    def __init__(self, node: str | None = None, queue_size: int = 4096) -> None:
        self.node = node or uuid.uuid4().hex[:12]
        self._subs: list[_Subscription] = []
        self._by_topic: dict[str, list[_Subscription]] = {}
        """The subscriptions each topic seen so far matches (cleared when they change)."""
        self._queue_size = queue_size
        self.published = 0

    def subscribe(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler`` for every event matching ``pattern``; returns an unsubscribe."""
        sub = _Subscription(pattern, handler, self._queue_size)
        sub.task = asyncio.get_running_loop().create_task(sub.run(), name=f"bus:{pattern}")
        self._subs.append(sub)
        self._by_topic.clear()

        def unsubscribe() -> None:
            if sub in self._subs:
                self._subs.remove(sub)
                self._by_topic.clear()
            if sub.task is not None:
                sub.task.cancel()

        return unsubscribe

    def _matching(self, topic: str) -> list[_Subscription]:
        subs = self._by_topic.get(topic)
        if subs is None:
            subs = [s for s in self._subs if topic_matches(s.pattern, topic)]
            if len(self._by_topic) >= 1024:  # topics are a small fixed set; bound it anyway
                self._by_topic.clear()
            self._by_topic[topic] = subs
        return subs

    def _deliver(self, event: Event) -> None:
        for sub in self._matching(event.topic):
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.dropped += 1
                if sub.dropped == 1 or sub.dropped % 1000 == 0:
                    logger.warning(
                        "subscriber %s is slow: %d events dropped", sub.pattern, sub.dropped
                    )

    async def publish(self, topic: str, data: dict[str, Any] | None = None) -> Event:
        """Publish an event to every local subscriber (and other nodes, if any)."""
        event = Event(topic=topic, data=dict(data or {}), node=self.node)
        self.published += 1
        self._deliver(event)
        await self._send_remote(event)
        return event

    async def publish_many(self, items: Iterable[tuple[str, dict[str, Any] | None]]) -> list[Event]:
        """Publish several events in order, as :meth:`publish` each (to other nodes in one
        round trip where the transport allows)."""
        events = [Event(topic=t, data=dict(d or {}), node=self.node) for t, d in items]
        self.published += len(events)
        for event in events:
            self._deliver(event)
        await self._send_remote_many(events)
        return events

    async def emit(self, *events: BusEvent) -> list[Event]:
        """Publish typed events (``core.events``), in order, as one :meth:`publish_many`."""
        return await self.publish_many((ev.event_topic, ev.to_data()) for ev in events)

    def on(self, cls: type[E], handler: TypedHandler[E]) -> Callable[[], None]:
        """Call ``handler`` with an instance of ``cls`` for every event of its topic (or
        family); a payload that does not fit the class is dropped with a log line. A
        family's handler does not get a topic declared as a class of its own
        (``broadcast.reminder`` is not a ``broadcast.*`` family event)."""
        family = cls.is_family()

        def typed(event: Event) -> Awaitable[None] | None:
            if family and event_class_of(event.topic) is not cls:
                return None
            return _call_typed(cls, handler, event)

        typed.__qualname__ = f"on({cls.__name__}, {getattr(handler, '__qualname__', handler)})"
        return self.subscribe(cls.TOPIC, typed)

    def on_each(self, handlers: Mapping[type[BusEvent], TypedHandler[Any]]) -> Callable[[], None]:
        """Like :meth:`on` for several classes, through one subscription: their events
        reach the handlers in the order they were published (separate :meth:`on` calls
        each get their own queue, so ``stream.published`` could overtake an earlier
        ``stream.unpublished``)."""
        by_class = dict(handlers)
        heads = {cls.TOPIC.split(".", 1)[0] for cls in by_class}
        pattern = f"{heads.pop()}.*" if len(heads) == 1 else "*"

        def typed(event: Event) -> Awaitable[None] | None:
            cls = event_class_of(event.topic)
            handler = by_class.get(cls) if cls is not None else None
            if cls is None or handler is None:
                return None
            return _call_typed(cls, handler, event)

        typed.__qualname__ = f"on_each({', '.join(c.__name__ for c in by_class)})"
        return self.subscribe(pattern, typed)

    async def _send_remote(self, event: Event) -> None:
        return None

    async def _send_remote_many(self, events: list[Event]) -> None:
        for event in events:
            await self._send_remote(event)

    async def drain(self) -> None:
        """Wait until every subscriber has handled what is queued (tests, shutdown)."""
        for sub in list(self._subs):
            await sub.queue.join()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        for sub in self._subs:
            if sub.task is not None:
                sub.task.cancel()
        for sub in self._subs:
            if sub.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await sub.task
        self._subs.clear()
        self._by_topic.clear()


class InProcessBus(EventBus):
    """The default: one process, no transport."""


class RedisBus(EventBus):
    """Events also travel over Redis pub/sub to other nodes.

    Each node publishes on its own channel (``berrylive:events:from:<node>``), the events
    of one :meth:`publish_many` together as one message (a JSON array, at most
    ``MESSAGE_EVENTS`` per message): a burst of orders costs one command and one message
    per node, not one per event. Every node listens on ``berrylive:events:*`` and skips
    its own channel without decoding it.

    Local subscribers get an event at once; other nodes get it through Redis. Redis
    pub/sub is at-most-once: while Redis is unreachable, remote delivery is lost, which is
    counted (``lost_remote``) and logged, and the subscriber reconnects with backoff.
    """

    MESSAGE_EVENTS = 256

    def __init__(self, redis: Any, node: str | None = None, queue_size: int = 4096) -> None:
        super().__init__(node=node, queue_size=queue_size)
        self._redis = redis
        self.channel = f"{CHANNEL_PREFIX}from:{self.node}"
        self._own = {self.channel, self.channel.encode()}
        self._listener: asyncio.Task[None] | None = None
        self.lost_remote = 0
        self.connected = asyncio.Event()

    async def _send_remote(self, event: Event) -> None:
        await self._send_remote_many([event])

    async def _send_remote_many(self, events: list[Event]) -> None:
        step = self.MESSAGE_EVENTS
        for i in range(0, len(events), step):
            chunk = events[i : i + step]
            try:
                await self._redis.publish(self.channel, encode_events(chunk))
            except Exception as exc:
                self.lost_remote += len(chunk)
                logger.warning("%d events not sent to other nodes: %s", len(chunk), exc)

    async def start(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="bus:redis")
        try:
            await asyncio.wait_for(self.connected.wait(), 5.0)
        except TimeoutError:
            logger.warning("event bus: Redis subscription not ready yet; will keep trying")

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                self.connected.set()
                backoff = 0.1
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage" or message.get("channel") in self._own:
                        continue
                    events, bad = decode_events(message["data"])
                    if bad:
                        logger.warning("event bus: ignoring %d malformed events", bad)
                    for event in events:
                        if event.node != self.node:
                            self._deliver(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected.clear()
                logger.warning(
                    "event bus: Redis subscription lost (%s); retry in %.1fs", exc, backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await super().close()
