"""Engine.IO v4 / Socket.IO v5 text packets and server websocket frames: sans-I/O.

Just what the websocket path of ``/live`` needs (:mod:`danmaku.websocket`): no polling, no
binary attachments. A Socket.IO packet travels as one Engine.IO ``message`` (``4``), which
travels as one websocket text frame::

    frame( "4" + "2" + "/live," + [ack id] + json )
            |     |     |                    '-- the event: ["name", arg]
            |     |     '-- the namespace ("/" is written as nothing)
            |     '-- Socket.IO type: 0 connect, 1 disconnect, 2 event, 3 ack, 4 connect error
            '-- Engine.IO type: 0 open, 1 close, 2 ping, 3 pong, 4 message, 6 noop

:class:`Outbound` is one packet for many connections: its text and its websocket frame are
built once, and the same objects go to every connection (the frame header
depends only on the payload length).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ACK",
    "CONNECT",
    "CONNECT_ERROR",
    "DISCONNECT",
    "EVENT",
    "Outbound",
    "SioPacket",
    "WireError",
    "ack_text",
    "connect_error_text",
    "connect_text",
    "disconnect_text",
    "event_packet",
    "open_text",
    "parse_sio",
    "with_attachments",
    "ws_text_frame",
]

# Socket.IO v5 packet types
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)
MAX_ATTACHMENTS = 8
"""Binary attachments accepted in one packet (each one websocket message, size-capped)."""


class WireError(ValueError):
    """A client packet this path cannot understand (the connection is closed)."""


def ws_text_frame(payload: bytes) -> bytes:
    """One unmasked, uncompressed (RSV bits clear) server-to-client text frame, FIN set."""
    n = len(payload)
    if n < 126:
        head = bytes([0x81, n])
    elif n < 65536:
        head = b"\x81\x7e" + struct.pack(">H", n)
    else:
        head = b"\x81\x7f" + struct.pack(">Q", n)
    return head + payload


_dumps = json.JSONEncoder(separators=(",", ":")).encode
"""The JSON python-socketio writes (compact, ASCII-escaped); one encoder, not one per call."""


def _ns(namespace: str) -> str:
    return "" if namespace == "/" else namespace + ","


class Outbound:
    """One Socket.IO packet, encoded once: ``text`` (Socket.IO) and ``frame`` (the
    Engine.IO message in one websocket text frame, what the websocket path writes)."""

    __slots__ = ("frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.frame = ws_text_frame(("4" + text).encode())


def event_packet(namespace: str, event: str, data: Any) -> Outbound:
    return Outbound(f"2{_ns(namespace)}" + _dumps([event, data]))


def open_text(sid: str, ping_interval_s: float, ping_timeout_s: float, max_payload: int) -> str:
    """The Engine.IO ``open`` packet (the first message on a connection)."""
    return "0" + _dumps(
        {
            "sid": sid,
            "upgrades": [],
            "pingTimeout": int(ping_timeout_s * 1000),
            "pingInterval": int(ping_interval_s * 1000),
            "maxPayload": max_payload,
        }
    )


def connect_text(namespace: str, sid: str) -> str:
    return f"0{_ns(namespace)}" + _dumps({"sid": sid})


def connect_error_text(namespace: str, message: str, data: Any = None) -> str:
    body: dict[str, Any] = {"message": message}
    if data is not None:
        body["data"] = data
    return f"4{_ns(namespace)}" + _dumps(body)


def disconnect_text(namespace: str) -> str:
    return f"1{_ns(namespace)}"


def ack_text(namespace: str, ack_id: int, args: list[Any]) -> str:
    return f"3{_ns(namespace)}{ack_id}" + _dumps(args)


@dataclass(frozen=True, slots=True)
class SioPacket:
    type: int
    namespace: str
    ack_id: int | None
    data: Any
    attachments: int = 0
    """Binary messages that follow (``BINARY_EVENT`` / ``BINARY_ACK``)."""


_HEAD = re.compile(r"([0-6])(?:(\d{1,3})-)?(/[^,]*)?,?(\d{0,12})")
"""type, attachments (binary packets), namespace, ack id"""


_LONG_DIGITS = re.compile(r"\d{19}")


def _loads(text: str) -> Any:
    """``json.loads``, through orjson when it can: what orjson refuses (lone surrogates,
    ``NaN``, nesting past its limit) and any text with 19 digits in a row (orjson reads an
    integer below -2**63 as a float) are read by ``json`` as before, so a client's event
    decodes to the same value either way."""
    if _LONG_DIGITS.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def parse_sio(text: str) -> SioPacket:
    """Decode one Socket.IO packet sent by a client (without its Engine.IO ``4``)."""
    head = _HEAD.match(text)
    if head is None:
        raise WireError("bad packet type")
    kind = int(head[1])
    attachments = 0
    if kind in (BINARY_EVENT, BINARY_ACK):
        if head[2] is None:
            raise WireError("binary packet without an attachment count")
        attachments = int(head[2])
        if not 0 < attachments <= MAX_ATTACHMENTS:
            raise WireError("too many attachments")
    elif head[2] is not None:
        raise WireError("attachments on a text packet")
    namespace = head[3] or "/"
    ack_id = int(head[4]) if head[4] else None
    data: Any = None
    rest = text[head.end() :]
    if rest:
        try:
            data = _loads(rest)
        except ValueError:
            raise WireError("packet data is not JSON") from None
    if kind in (EVENT, BINARY_EVENT) and (not isinstance(data, list) or not data):
        raise WireError("an event needs a non-empty array")
    return SioPacket(kind, namespace, ack_id, data, attachments)


def with_attachments(data: Any, blobs: list[bytes], depth: int = 0) -> Any:
    """``data`` with each ``{"_placeholder": true, "num": i}`` replaced by ``blobs[i]``."""
    if depth > 32:
        raise WireError("packet nested too deep")
    if isinstance(data, list):
        return [with_attachments(x, blobs, depth + 1) for x in data]
    if isinstance(data, dict):
        if data.get("_placeholder") is True:
            num = data.get("num")
            if not isinstance(num, int) or not 0 <= num < len(blobs):
                raise WireError("bad attachment placeholder")
            return blobs[num]
        return {k: with_attachments(v, blobs, depth + 1) for k, v in data.items()}
    return data
