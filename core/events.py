"""Typed events: the contract between packages.

Each publishing package declares its events in its own ``events.py`` as frozen
dataclasses deriving from :class:`BusEvent`, with the topic as a class keyword::

    @dataclass(frozen=True, slots=True)
    class StreamPublished(BusEvent, topic="stream.published"):
        app: str
        stream: str
        node: str = ""

A publisher sends instances (``await bus.emit(StreamPublished(app=..., stream=...))``);
a subscriber names the class (``bus.on(StreamPublished, handler)``) and its handler gets
an instance back. On the wire nothing changes: the bus carries ``topic`` + ``data`` (the
dataclass fields as a JSON object), so nodes of mixed versions still understand each
other (an unknown field is ignored, a missing one takes its default; an event missing a
field without default is dropped with a log line).

A *family* of events sharing one payload (``broadcast.live``, ``broadcast.ended``...)
is one class with a ``topic`` field and a ``topic=`` pattern ending in ``.*``: the
instance's ``topic`` field is the topic it travels under, and it must match the pattern.

Every class registers itself; :func:`declared` lists them (a test checks that every
class subscribed somewhere is also constructed by some publisher).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self, TypeVar

__all__ = ["BusEvent", "EventDecodeError", "declared", "event_class_of"]

_REGISTRY: dict[str, type[BusEvent]] = {}


class EventDecodeError(ValueError):
    """A payload that does not fit the event class it travels as."""


class BusEvent:
    """Base class of typed events (subclasses are frozen dataclasses)."""

    TOPIC: ClassVar[str] = ""
    """The topic, or for a family a pattern ``prefix.*`` (the instance's ``topic`` field)."""

    def __init_subclass__(cls, topic: str = "", **kw: Any) -> None:
        super().__init_subclass__(**kw)
        # dataclass(slots=True) builds the class anew from this one's namespace
        topic = topic or cls.__dict__.get("TOPIC", "")
        if not topic:
            raise TypeError(f"{cls.__name__}: a BusEvent needs topic=...")
        if topic in _REGISTRY and _REGISTRY[topic].__qualname__ != cls.__qualname__:
            raise TypeError(f"topic {topic!r} declared twice ({_REGISTRY[topic].__name__})")
        cls.TOPIC = topic
        _REGISTRY[topic] = cls

    @classmethod
    def is_family(cls) -> bool:
        return cls.TOPIC.endswith(".*")

    @property
    def event_topic(self) -> str:
        """The topic this instance travels under."""
        if self.is_family():
            topic = str(getattr(self, "topic", ""))
            if not topic.startswith(self.TOPIC[:-1]):
                raise ValueError(f"{type(self).__name__}: topic {topic!r} not in {self.TOPIC}")
            return topic
        return self.TOPIC

    def to_data(self) -> dict[str, Any]:
        """The JSON payload: the fields (nested dataclasses as objects); a family's
        ``topic`` field is not repeated in the payload."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name == "topic" and self.is_family():
                continue
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_data(cls, data: dict[str, Any], topic: str = "") -> Self:
        """The instance of a payload: unknown keys ignored, missing ones defaulted."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: v for k, v in data.items() if k in names}
        for k, v in kwargs.items():  # JSON has no tuples
            if isinstance(v, list) and str(names[k].type).startswith("tuple"):
                kwargs[k] = tuple(v)
        if cls.is_family():
            kwargs["topic"] = topic or str(data.get("topic", ""))
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise EventDecodeError(f"{cls.__name__}: {exc}") from None


E = TypeVar("E", bound=BusEvent)


def declared() -> dict[str, type[BusEvent]]:
    """Every event class imported so far, by topic (or family pattern)."""
    return dict(_REGISTRY)


def event_class_of(topic: str) -> type[BusEvent] | None:
    """The class a topic travels as (exact topic first, then a family pattern)."""
    cls = _REGISTRY.get(topic)
    if cls is not None:
        return cls
    head, _, _ = topic.rpartition(".")
    return _REGISTRY.get(head + ".*") if head else None
