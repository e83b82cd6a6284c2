"""A replay's record (kept as ``replay.json`` next to its files)."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


class ReplayState(StrEnum):
    RECORDING = "recording"
    """ffmpeg is writing; the live playlist grows."""
    FINALIZING = "finalizing"
    """The broadcast ended; VOD playlist, MP4, thumbnails and clips are being made."""
    READY = "ready"
    FAILED = "failed"
    """Finalising failed; the segments and the VOD playlist are kept if they exist."""


@dataclass
class PartRecord:
    index: int
    reason: str
    """Why this part began: ``start``, ``publisher`` (a reconnect or takeover),
    ``restart`` (ffmpeg died or fell behind), ``codec`` (new sequence headers),
    ``unpaused`` (recording resumed after a pause, e.g. the disk was full)."""
    wall_start: float
    """Wall-clock time of the part's first media frame (maps card times to the replay)."""
    video_codec: str | None = None
    audio_codec: str | None = None
    exe: str = ""
    ended: float | None = None
    end_reason: str = ""
    duration: float = 0.0

    @property
    def dir(self) -> str:
        return f"p{self.index}"


@dataclass
class Card:
    card_id: int | None
    product_id: int | None
    pushed: float
    cleared: float | None = None


@dataclass
class Clip:
    card_id: int | None
    product_id: int | None
    start: float
    duration: float
    file: str


@dataclass
class Replay:
    id: str
    app: str
    stream: str
    broadcast_id: int | None = None
    state: ReplayState = ReplayState.RECORDING
    created: float = field(default_factory=time.time)
    ended: float | None = None
    segment_type: str = "mpegts"
    parts: list[PartRecord] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    clips: list[Clip] = field(default_factory=list)
    duration: float = 0.0
    size: int = 0
    codecs: dict[str, Any] = field(default_factory=dict)
    mp4: str | None = None
    cover: str | None = None
    sprites: str | None = None
    """WebVTT file mapping times to sprite tiles."""
    error: str | None = None
    paused: str | None = None
    """Why recording is paused now (``disk``: free space below ``replay.min_free_bytes``)."""
    withheld: str | None = None
    """Why the replay is no longer public (``banned``, ``deleted``: its broadcast was banned
    or deleted); its files stay on disk for review until retention removes them."""

    @staticmethod
    def new_id() -> str:
        return f"r{int(time.time() * 1000):x}{secrets.token_hex(3)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Replay:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["state"] = ReplayState(values.get("state", "failed"))
        values["parts"] = [_build(PartRecord, p) for p in values.get("parts", [])]
        values["cards"] = [_build(Card, c) for c in values.get("cards", [])]
        values["clips"] = [_build(Clip, c) for c in values.get("clips", [])]
        return cls(**values)


def _build(cls: Any, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
