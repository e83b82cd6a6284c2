"""Events replay publishes on the bus (the contract; see ``docs/events.md``).

URLs are absolute (``Runtime.http_base()``), times in Unix seconds, durations in seconds.
The JSON is what replay sent before these were classes (every field travels, ``null``
where it does not apply); fields other than ``app`` and ``stream`` have defaults so that
an older or hand-written payload still decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.events import BusEvent

__all__ = ["ReplayClip", "ReplayReady"]


@dataclass(frozen=True, slots=True)
class ReplayReady(BusEvent, topic="replay.ready"):
    """A replay is finalised and published (VOD playlist, MP4, cover, clips)."""

    app: str
    stream: str
    broadcast_id: int | None = None
    replay_id: str = ""
    url: str | None = None
    """The VOD playlist (= ``hls``)."""
    hls: str | None = None
    mp4: str | None = None
    cover: str | None = None
    duration: float = 0.0
    size: int = 0
    """Bytes on storage."""
    codecs: dict[str, Any] = field(default_factory=dict)
    """``{video{codec,width,height,profile}, audio{codec,sample_rate,channels}}``"""
    clips: tuple[dict[str, Any], ...] = ()
    """As :class:`ReplayClip` without the replay's own fields."""


@dataclass(frozen=True, slots=True)
class ReplayClip(BusEvent, topic="replay.clip"):
    """One product clip ("讲解回放") of a ready replay."""

    app: str
    stream: str
    broadcast_id: int | None = None
    replay_id: str = ""
    card_id: int | None = None
    product_id: int | None = None
    start: float = 0.0
    """Seconds into the replay (a keyframe)."""
    duration: float = 0.0
    url: str | None = None
    """The clip's MP4."""
