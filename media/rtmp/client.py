"""The client side of RTMP as a sans-I/O core: handshake, connect, publish or play.

Used by edges pulling from origins, forwarding to third-party CDNs and tests. Commands
are sent in order without waiting; the responses come back as events.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media.amf import decode_amf0, encode_amf0
from media.errors import AMFError, LocalProtocolError, ProtocolViolation
from media.rtmp import chunk as C
from media.rtmp.handshake import HANDSHAKE_SIZE, client_hello

CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_AUDIO = 4
CSID_DATA = 5
CSID_VIDEO = 6


@dataclass(frozen=True, slots=True)
class CommandReply:
    """``_result`` / ``_error`` / ``onStatus`` and other commands from the server."""

    name: str
    transaction_id: float
    stream_id: int
    args: tuple[Any, ...]

    @property
    def info(self) -> dict[str, Any]:
        for a in self.args:
            if isinstance(a, dict) and "code" in a:
                return a
        return {}


@dataclass(frozen=True, slots=True)
class MediaMessage:
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ClientError:
    reason: str


ClientEvent = CommandReply | MediaMessage | ClientError


class ClientConnection:
    def __init__(
        self,
        *,
        chunk_size: int = 4096,
        max_message_size: int = 16 * 1024 * 1024,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._reader = C.ChunkReader(max_message_size)
        self._out: list[bytes] = [client_hello(random_bytes)]
        self._queued: list[bytes] = []
        """Messages written before the handshake completes; sent right after C2."""
        self._hs = bytearray()
        self._handshaken = False
        self._tx = 1.0
        self.chunk_size = chunk_size
        self._chunk_announced = False
        self.closed = False
        self._peer_window = 0
        self._last_ack = 0

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _send(self, csid: int, type_id: int, stream_id: int, ts: int, payload: bytes) -> None:
        out = self._out if self._handshaken else self._queued
        if not self._chunk_announced:
            out.append(
                C.encode_message(
                    CSID_CONTROL, C.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", self.chunk_size), 128
                )
            )
            self._chunk_announced = True
        out.append(C.encode_message(csid, type_id, stream_id, ts, payload, self.chunk_size))

    def command(self, name: str, *args: Any, stream_id: int = 0) -> float:
        tx = self._tx
        self._tx += 1
        csid = CSID_COMMAND if stream_id == 0 else CSID_DATA
        self._send(csid, C.COMMAND_AMF0, stream_id, 0, encode_amf0(name, tx, *args))
        return tx

    def connect(self, app: str, tc_url: str, **extra: Any) -> float:
        obj = {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": tc_url}
        obj.update(extra)
        return self.command("connect", obj)

    def create_stream(self) -> float:
        return self.command("createStream", None)

    def publish(self, stream_id: int, name: str) -> None:
        self.command("releaseStream", None, name)
        self.command("FCPublish", None, name)
        self.command("publish", None, name, "live", stream_id=stream_id)

    def play(self, stream_id: int, name: str) -> None:
        self.command("play", None, name, -2000.0, stream_id=stream_id)

    def send_media(self, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        csid = {C.AUDIO: CSID_AUDIO, C.VIDEO: CSID_VIDEO}.get(type_id, CSID_DATA)
        self._send(csid, type_id, stream_id, timestamp, payload)

    def send_metadata(self, stream_id: int, meta: dict[str, Any]) -> None:
        from media.amf import ECMAArray

        payload = encode_amf0("@setDataFrame", "onMetaData", ECMAArray(meta))
        self._send(CSID_DATA, C.DATA_AMF0, stream_id, 0, payload)

    def delete_stream(self, stream_id: int) -> None:
        self.command("FCUnpublish", None, "")
        self.command("deleteStream", None, float(stream_id))

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        if self.closed:
            return []
        events: list[ClientEvent] = []
        try:
            if not self._handshaken:
                self._hs += data
                need = 1 + 2 * HANDSHAKE_SIZE
                if len(self._hs) < need:
                    return events
                s0 = self._hs[0]
                if s0 != 3:
                    raise ProtocolViolation(f"server answered RTMP version {s0}")
                s1 = bytes(self._hs[1 : 1 + HANDSHAKE_SIZE])
                rest = bytes(self._hs[need:])
                self._hs.clear()
                self._out.append(s1)  # C2 echoes S1, then what was queued
                self._out.extend(self._queued)
                self._queued.clear()
                self._handshaken = True
                data = rest
                if not data:
                    return events
            for msg in self._reader.feed(data):
                self._handle(msg, events)
            if self._reader.error is not None:
                raise ProtocolViolation(self._reader.error)
            if (
                self._peer_window
                and self._reader.bytes_received - self._last_ack >= self._peer_window
            ):
                self._last_ack = self._reader.bytes_received
                self._send(
                    CSID_CONTROL, C.ACKNOWLEDGEMENT, 0, 0,
                    struct.pack(">I", self._last_ack & 0xFFFFFFFF),
                )  # fmt: skip
        except ProtocolViolation as exc:
            self.closed = True
            events.append(ClientError(str(exc)))
        return events

    def _handle(self, msg: C.Message, events: list[ClientEvent]) -> None:
        t = msg.type_id
        if t in (C.AUDIO, C.VIDEO, C.DATA_AMF0):
            events.append(MediaMessage(t, msg.stream_id, msg.timestamp, msg.payload))
        elif t in (C.COMMAND_AMF0, C.COMMAND_AMF3):
            payload = msg.payload[1:] if t == C.COMMAND_AMF3 else msg.payload
            try:
                values = decode_amf0(payload)
            except AMFError as exc:
                raise ProtocolViolation(f"malformed command from server: {exc}") from exc
            if len(values) >= 2 and isinstance(values[0], str):
                tx = float(values[1]) if isinstance(values[1], int | float) else 0.0
                events.append(CommandReply(values[0], tx, msg.stream_id, tuple(values[2:])))
        elif t == C.WINDOW_ACK_SIZE and len(msg.payload) >= 4:
            self._peer_window = struct.unpack_from(">I", msg.payload)[0]
        elif t == C.USER_CONTROL and len(msg.payload) >= 6:
            kind, ts = struct.unpack_from(">HI", msg.payload)
            if kind == 6:  # ping request
                self._send(CSID_CONTROL, C.USER_CONTROL, 0, 0, struct.pack(">HI", 7, ts))

    def require_open(self) -> None:
        if self.closed:
            raise LocalProtocolError("connection is closed")
