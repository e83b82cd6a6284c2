"""Events the RTMP connection core hands to its shell (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    complex: bool


@dataclass(frozen=True, slots=True)
class Connect:
    transaction_id: float
    app: str
    """Application name without any query string."""
    query: str
    """Query string found on the app or tcUrl (push URL signatures may sit there)."""
    tc_url: str
    command_object: dict[str, Any] = field(default_factory=dict)
    object_encoding: int = 0


@dataclass(frozen=True, slots=True)
class CreateStream:
    transaction_id: float


@dataclass(frozen=True, slots=True)
class ReleaseStream:
    transaction_id: float
    name: str


@dataclass(frozen=True, slots=True)
class FCPublish:
    transaction_id: float
    name: str


@dataclass(frozen=True, slots=True)
class FCUnpublish:
    transaction_id: float
    name: str


@dataclass(frozen=True, slots=True)
class Publish:
    transaction_id: float
    stream_id: int
    name: str
    """Stream name without the query string."""
    query: str
    publish_type: str = "live"


@dataclass(frozen=True, slots=True)
class Play:
    transaction_id: float
    stream_id: int
    name: str
    query: str


@dataclass(frozen=True, slots=True)
class DeleteStream:
    stream_id: int


@dataclass(frozen=True, slots=True)
class CloseStream:
    stream_id: int


@dataclass(frozen=True, slots=True)
class OtherCommand:
    name: str
    transaction_id: float
    stream_id: int
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Media:
    """Audio (8) or video (9) message; payload is the FLV tag body."""

    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ScriptData:
    """A data message (e.g. ``@setDataFrame onMetaData``), normalised to AMF0."""

    stream_id: int
    timestamp: int
    name: str
    values: tuple[Any, ...]
    payload: bytes


@dataclass(frozen=True, slots=True)
class PingResponse:
    timestamp: int


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    sequence: int


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; the connection is finished. ``reason`` is for logs."""

    reason: str


Event = (
    HandshakeDone
    | Connect
    | CreateStream
    | ReleaseStream
    | FCPublish
    | FCUnpublish
    | Publish
    | Play
    | DeleteStream
    | CloseStream
    | OtherCommand
    | Media
    | ScriptData
    | PingResponse
    | Acknowledgement
    | ProtocolError
)
