"""Typed events on the bus: round trip, families, mixed-version payloads, and the contract
that every event class some package subscribes to is also published by some package."""

from __future__ import annotations

import ast
import asyncio
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core.bus import InProcessBus
from core.events import BusEvent, EventDecodeError, declared, event_class_of

ROOT = Path(__file__).resolve().parents[2]
# Raw string subscriptions to topics no events.py declares; this set only shrinks.
LEGACY_RAW: set[str] = set()
PACKAGES = ("ingest", "relay", "replay", "danmaku", "shop_bridge", "control", "core")


@dataclass(frozen=True, slots=True)
class _Ping(BusEvent, topic="test.ping"):
    room: str
    count: int = 1
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Family(BusEvent, topic="testfam.*"):
    topic: str
    id: int
    extra: dict[str, int] = field(default_factory=dict)


async def test_emit_and_on_round_trip_typed_instances() -> None:
    bus = InProcessBus()
    got: list[BusEvent] = []
    bus.on(_Ping, got.append)
    bus.on(_Family, got.append)
    events = await bus.emit(_Ping("r1", 3, ("a",)), _Family("testfam.live", 7, {"x": 1}))
    await bus.drain()
    assert [e.topic for e in events] == ["test.ping", "testfam.live"]
    assert events[0].data == {"room": "r1", "count": 3, "tags": ["a"]}
    assert events[1].data == {"id": 7, "extra": {"x": 1}}
    assert got == [_Ping("r1", 3, ("a",)), _Family("testfam.live", 7, {"x": 1})]
    await bus.close()


async def test_raw_publish_reaches_typed_subscriber_and_bad_payload_is_dropped() -> None:
    bus = InProcessBus()
    got: list[_Ping] = []
    bus.on(_Ping, got.append)
    # a newer node's payload with an extra field, an older one missing a defaulted field
    await bus.publish("test.ping", {"room": "a", "count": 2, "new_field": True})
    await bus.publish("test.ping", {"room": "b"})
    await bus.publish("test.ping", {"count": 5})  # no room: cannot be decoded, dropped
    await bus.drain()
    assert [(p.room, p.count) for p in got] == [("a", 2), ("b", 1)]
    await bus.close()


@dataclass(frozen=True, slots=True)
class _FamilyOddOne(BusEvent, topic="testfam.odd"):
    other: str


async def test_family_handler_skips_a_topic_declared_as_its_own_class() -> None:
    bus = InProcessBus()
    family: list[BusEvent] = []
    odd: list[BusEvent] = []
    bus.on(_Family, family.append)
    bus.on(_FamilyOddOne, odd.append)
    await bus.emit(_FamilyOddOne("x"), _Family("testfam.live", 1))
    await bus.drain()
    assert family == [_Family("testfam.live", 1)]
    assert odd == [_FamilyOddOne("x")]
    await bus.close()


@dataclass(frozen=True, slots=True)
class _Pong(BusEvent, topic="test.pong"):
    room: str


async def test_on_each_keeps_the_publishing_order_across_classes() -> None:
    bus = InProcessBus()
    got: list[BusEvent] = []

    async def slow(ev: BusEvent) -> None:
        await asyncio.sleep(0)  # a separate queue per class would let a pong overtake
        got.append(ev)

    bus.on_each({_Ping: slow, _Pong: got.append})
    await bus.emit(_Ping("a"), _Pong("b"), _Ping("c"), _Family("testfam.x", 1))
    await bus.publish("test.pong", {})  # undecodable: dropped
    await bus.drain()
    assert got == [_Ping("a"), _Pong("b"), _Ping("c")]
    await bus.close()


def test_family_topic_must_match_and_lookup() -> None:
    with pytest.raises(ValueError):
        _ = _Family("other.live", 1).event_topic
    with pytest.raises(EventDecodeError):
        _Ping.from_data({})
    assert event_class_of("testfam.ended") is _Family
    assert event_class_of("test.ping") is _Ping
    assert event_class_of("nobody.knows") is None


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def test_every_subscribed_event_is_published_somewhere() -> None:
    """A subscription nobody publishes is a bug (it waits for nothing): for every
    ``bus.on(Cls, ...)`` in the packages, ``Cls(...)`` (or a classmethod constructor,
    ``Cls.of(...)``) is called outside tests and ``events.py``, and
    every raw ``subscribe("topic")`` names a topic some declared class travels under."""
    for pkg in PACKAGES:
        if (ROOT / pkg / "events.py").exists():
            importlib.import_module(f"{pkg}.events")
    classes = {cls.__name__: cls for cls in declared().values()}
    subscribed: set[str] = set()
    raw_topics: set[str] = set()  # subscribe("exact.topic") with a string
    constructed: set[str] = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for call in _calls(tree):
                fn = _name(call.func)
                if fn == "on" and call.args and _name(call.args[0]) in classes:
                    subscribed.add(_name(call.args[0]))
                elif fn == "on_each" and call.args and isinstance(call.args[0], ast.Dict):
                    subscribed.update(
                        _name(k) for k in call.args[0].keys if k is not None and _name(k)
                    )
                elif fn == "subscribe" and call.args and isinstance(call.args[0], ast.Constant):
                    value = call.args[0].value
                    if isinstance(value, str) and value != "*":
                        raw_topics.add(value)
                elif fn in classes and path.name != "events.py":
                    constructed.add(fn)  # Cls(...)
                elif (
                    isinstance(call.func, ast.Attribute)
                    and _name(call.func.value) in classes
                    and path.name != "events.py"
                ):
                    constructed.add(_name(call.func.value))  # Cls.of(...): a classmethod
    never = sorted(subscribed - constructed)
    assert not never, f"subscribed but never published: {never}"
    exact = {t for t in raw_topics if not t.endswith(".*")}
    undeclared = {t for t in exact if event_class_of(t) is None}
    assert undeclared <= LEGACY_RAW, (
        f"raw subscriptions to topics no events.py declares: {sorted(undeclared - LEGACY_RAW)}"
    )
    assert undeclared >= LEGACY_RAW, (
        f"declared now, drop from LEGACY_RAW: {LEGACY_RAW - undeclared}"
    )


async def test_handler_exception_does_not_stop_typed_subscription() -> None:
    bus = InProcessBus()
    seen: list[int] = []

    def handler(ev: _Ping) -> None:
        seen.append(ev.count)
        if ev.count == 1:
            raise RuntimeError("boom")

    bus.on(_Ping, handler)
    await bus.emit(_Ping("r", 1), _Ping("r", 2))
    await asyncio.wait_for(bus.drain(), 5)
    assert seen == [1, 2]
    await bus.close()
