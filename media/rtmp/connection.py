"""The server side of an RTMP connection as a sans-I/O state machine.

``receive_data(bytes) -> list[Event]``; whatever must go back is collected and taken with
``data_to_send()``. The core never touches sockets or clocks. A peer's violation becomes
a :class:`~media.rtmp.events.ProtocolError` event (and the connection is closed for good);
calling a method in the wrong state raises :class:`~media.errors.LocalProtocolError`.

States::

    AWAIT_C0C1 --(1537 bytes)--> AWAIT_C2 --(1536 bytes)--> READY --(violation|close)--> CLOSED
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from media.amf import ECMAArray, decode_amf0, encode_amf0
from media.errors import AMFError, LocalProtocolError, ProtocolViolation
from media.rtmp import chunk as C
from media.rtmp import events as ev
from media.rtmp.handshake import HANDSHAKE_SIZE, server_response

CSID_CONTROL = 2
CSID_COMMAND = 3
CSID_STATUS = 5

# User control event types
UC_STREAM_BEGIN = 0
UC_STREAM_EOF = 1
UC_STREAM_DRY = 2
UC_SET_BUFFER_LENGTH = 3
UC_STREAM_IS_RECORDED = 4
UC_PING_REQUEST = 6
UC_PING_RESPONSE = 7


class State(Enum):
    AWAIT_C0C1 = "await_c0c1"
    AWAIT_C2 = "await_c2"
    READY = "ready"
    CLOSED = "closed"


_TRANSITIONS: dict[State, frozenset[State]] = {
    State.AWAIT_C0C1: frozenset({State.AWAIT_C2, State.CLOSED}),
    State.AWAIT_C2: frozenset({State.READY, State.CLOSED}),
    State.READY: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


def split_query(name: str) -> tuple[str, str]:
    base, sep, query = name.partition("?")
    return base, query if sep else ""


class ServerConnection:
    """One RTMP connection, server side."""

    def __init__(
        self,
        *,
        max_message_size: int = 16 * 1024 * 1024,
        max_command_size: int = 256 * 1024,
        out_chunk_size: int = 65536,
        ack_window: int = 2_500_000,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.state = State.AWAIT_C0C1
        # Until a publish is accepted a peer sends commands (and, from a client that does
        # not wait for Publish.Start, perhaps its first frames): messages and what is held
        # for messages in progress stay small, so an unauthenticated connection costs at
        # most 2 x max_command_size. accept_publish raises both limits.
        self.max_message_size = max_message_size
        self._reader = C.ChunkReader(max_command_size, 2 * max_command_size)
        self._hs = bytearray()
        self._hs_complex = False
        self._out: list[bytes] = []
        self.out_chunk_size = out_chunk_size
        self.ack_window = ack_window
        self._peer_window = 0
        self._last_ack = 0
        self._random = random_bytes
        self._next_stream_id = 1
        self.streams: set[int] = set()
        self.app = ""
        self.object_encoding = 0
        self.error: str | None = None

    # ------------------------------------------------------------------ plumbing

    def _move(self, new: State) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"RTMP state {self.state.value} -> {new.value} not allowed")
        self.state = new

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _send(self, csid: int, type_id: int, stream_id: int, payload: bytes, ts: int = 0) -> None:
        self._out.append(
            C.encode_message(csid, type_id, stream_id, ts, payload, self.out_chunk_size)
        )

    def _send_command(self, stream_id: int, *values: Any) -> None:
        csid = CSID_COMMAND if stream_id == 0 else CSID_STATUS
        self._send(csid, C.COMMAND_AMF0, stream_id, encode_amf0(*values))

    def _user_control(self, event_type: int, *values: int) -> None:
        payload = struct.pack(">H", event_type) + b"".join(struct.pack(">I", v) for v in values)
        self._send(CSID_CONTROL, C.USER_CONTROL, 0, payload)

    @property
    def pending_bytes(self) -> int:
        """Bytes declared by the messages in progress (bounded; see ``max_command_size``)."""
        return self._reader.pending_bytes

    @property
    def bytes_received(self) -> int:
        return self._reader.bytes_received

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ev.Event]:
        if self.state == State.CLOSED:
            return []
        events: list[ev.Event] = []
        try:
            data = bytes(data)
            if self.state == State.AWAIT_C0C1:
                self._hs += data
                if len(self._hs) < 1 + HANDSHAKE_SIZE:
                    return events
                c0c1, rest = (
                    bytes(self._hs[: 1 + HANDSHAKE_SIZE]),
                    bytes(self._hs[1 + HANDSHAKE_SIZE :]),
                )
                self._hs.clear()
                kwargs = {"random_bytes": self._random} if self._random else {}
                response, complex_used = server_response(c0c1, **kwargs)
                self._out.append(response)
                self._move(State.AWAIT_C2)
                self._hs_complex = complex_used
                data = rest
            if self.state == State.AWAIT_C2:
                self._hs += data
                if len(self._hs) < HANDSHAKE_SIZE:
                    return events
                data = bytes(self._hs[HANDSHAKE_SIZE:])
                self._hs.clear()
                self._move(State.READY)
                events.append(ev.HandshakeDone(self._hs_complex))
            if data:
                for msg in self._reader.feed(data):
                    self._handle(msg, events)
                if self._reader.error is not None:
                    raise ProtocolViolation(self._reader.error)
                self._maybe_ack()
        except ProtocolViolation as exc:
            self.error = str(exc)
            self.state = State.CLOSED
            events.append(ev.ProtocolError(str(exc)))
        return events

    def _maybe_ack(self) -> None:
        if self._peer_window <= 0:
            return
        received = self._reader.bytes_received
        if received - self._last_ack >= self._peer_window:
            self._last_ack = received
            self._send(CSID_CONTROL, C.ACKNOWLEDGEMENT, 0, struct.pack(">I", received & 0xFFFFFFFF))

    def _handle(self, msg: C.Message, events: list[ev.Event]) -> None:
        t = msg.type_id
        if t in (C.AUDIO, C.VIDEO):
            events.append(ev.Media(t, msg.stream_id, msg.timestamp, msg.payload))
        elif t in (C.COMMAND_AMF0, C.COMMAND_AMF3):
            payload = msg.payload
            if t == C.COMMAND_AMF3:
                if not payload:
                    raise ProtocolViolation("empty AMF3 command")
                payload = payload[1:]  # leading format byte 0x00, then AMF0
            try:
                values = decode_amf0(payload)
            except AMFError as exc:
                raise ProtocolViolation(f"malformed command: {exc}") from exc
            self._command(msg.stream_id, values, events)
        elif t in (C.DATA_AMF0, C.DATA_AMF3):
            payload = (
                msg.payload[1:] if t == C.DATA_AMF3 and msg.payload[:1] == b"\x00" else msg.payload
            )
            try:
                values = decode_amf0(payload)
            except AMFError:
                return  # a broken metadata message is dropped, not fatal
            if not values or not isinstance(values[0], str):
                return
            events.append(
                ev.ScriptData(msg.stream_id, msg.timestamp, values[0], tuple(values[1:]), payload)
            )
        elif t == C.USER_CONTROL:
            if len(msg.payload) < 2:
                raise ProtocolViolation("user control message shorter than 2 bytes")
            (kind,) = struct.unpack_from(">H", msg.payload)
            if kind == UC_PING_REQUEST and len(msg.payload) >= 6:
                (ts,) = struct.unpack_from(">I", msg.payload, 2)
                self._user_control(UC_PING_RESPONSE, ts)
            elif kind == UC_PING_RESPONSE and len(msg.payload) >= 6:
                events.append(ev.PingResponse(struct.unpack_from(">I", msg.payload, 2)[0]))
        elif t == C.WINDOW_ACK_SIZE:
            if len(msg.payload) < 4:
                raise ProtocolViolation("window acknowledgement size shorter than 4 bytes")
            self._peer_window = struct.unpack_from(">I", msg.payload)[0]
        elif t == C.ACKNOWLEDGEMENT:
            if len(msg.payload) >= 4:
                events.append(ev.Acknowledgement(struct.unpack_from(">I", msg.payload)[0]))
        elif t == C.AGGREGATE:
            self._aggregate(msg, events)
        # SetChunkSize / Abort are applied by the chunk reader; bandwidth and shared
        # objects are ignored.

    def _aggregate(self, msg: C.Message, events: list[ev.Event]) -> None:
        p = msg.payload
        pos = 0
        base: int | None = None
        while len(p) - pos >= 11:
            tag_type = p[pos]
            size = (p[pos + 1] << 16) | (p[pos + 2] << 8) | p[pos + 3]
            ts = (p[pos + 4] << 16) | (p[pos + 5] << 8) | p[pos + 6] | (p[pos + 7] << 24)
            end = pos + 11 + size
            if end > len(p):
                raise ProtocolViolation("aggregate message sub-tag overruns the message")
            if base is None:
                base = ts
            stamp = (msg.timestamp + ts - base) & 0xFFFFFFFF
            body = bytes(p[pos + 11 : end])
            if tag_type in (C.AUDIO, C.VIDEO):
                events.append(ev.Media(tag_type, msg.stream_id, stamp, body))
            pos = end + 4

    def _command(self, stream_id: int, values: list[Any], events: list[ev.Event]) -> None:
        if len(values) < 2 or not isinstance(values[0], str):
            raise ProtocolViolation("command without a name and transaction id")
        name = values[0]
        tx = values[1] if isinstance(values[1], int | float) else 0.0
        tx = float(tx)
        args = values[2:]

        def arg_str(i: int) -> str:
            # args[0] is the command object (usually null)
            v = args[i] if len(args) > i else None
            return v if isinstance(v, str) else ""

        if name == "connect":
            obj = args[0] if args and isinstance(args[0], dict) else {}
            raw_app = obj.get("app", "")
            raw_app = raw_app if isinstance(raw_app, str) else ""
            tc_url = obj.get("tcUrl", "")
            tc_url = tc_url if isinstance(tc_url, str) else ""
            app, query = split_query(raw_app)
            if not query and tc_url:
                try:
                    query = urlsplit(tc_url).query
                except ValueError:
                    query = ""
            enc = obj.get("objectEncoding", 0)
            self.object_encoding = int(enc) if isinstance(enc, int | float) and enc in (0, 3) else 0
            self.app = app.strip("/")
            events.append(ev.Connect(tx, self.app, query, tc_url, dict(obj), self.object_encoding))
        elif name == "createStream":
            events.append(ev.CreateStream(tx))
        elif name == "releaseStream":
            events.append(ev.ReleaseStream(tx, arg_str(1)))
        elif name == "FCPublish":
            events.append(ev.FCPublish(tx, arg_str(1)))
        elif name == "FCUnpublish":
            events.append(ev.FCUnpublish(tx, arg_str(1)))
        elif name == "publish":
            full = arg_str(1)
            stream, query = split_query(full)
            kind = arg_str(2) or "live"
            events.append(ev.Publish(tx, stream_id, stream, query, kind))
        elif name == "play":
            stream, query = split_query(arg_str(1))
            events.append(ev.Play(tx, stream_id, stream, query))
        elif name == "deleteStream":
            sid = args[1] if len(args) > 1 and isinstance(args[1], int | float) else stream_id
            events.append(ev.DeleteStream(int(sid)))
        elif name == "closeStream":
            events.append(ev.CloseStream(stream_id))
        else:
            events.append(ev.OtherCommand(name, tx, stream_id, tuple(args)))

    # ------------------------------------------------------------------ responses

    def _require_ready(self) -> bool:
        """True when a reply can be queued. Replying before the handshake is our bug;
        replying after the peer broke the protocol (events of the same read that came before
        the violation) is pointless and silently dropped."""
        if self.state == State.CLOSED:
            return False
        if self.state != State.READY:
            raise LocalProtocolError(f"cannot send in state {self.state.value}")
        return True

    def accept_connect(self, transaction_id: float) -> None:
        if not self._require_ready():
            return
        self._send(CSID_CONTROL, C.WINDOW_ACK_SIZE, 0, struct.pack(">I", self.ack_window))
        self._send(CSID_CONTROL, C.SET_PEER_BANDWIDTH, 0, struct.pack(">IB", self.ack_window, 2))
        # Announce the chunk size, then use it for everything we send from now on.
        self._out.append(
            C.encode_message(
                CSID_CONTROL, C.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", self.out_chunk_size), 128
            )
        )
        self._send_command(
            0,
            "_result",
            transaction_id,
            {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": float(self.object_encoding),
            },
        )

    def reject_connect(self, transaction_id: float, description: str) -> None:
        if not self._require_ready():
            return
        self._send_command(
            0,
            "_error",
            transaction_id,
            None,
            {
                "level": "error",
                "code": "NetConnection.Connect.Rejected",
                "description": description,
            },
        )

    def accept_create_stream(self, transaction_id: float) -> int:
        sid = self._next_stream_id
        if not self._require_ready():
            return sid
        self._next_stream_id += 1
        self.streams.add(sid)
        self._send_command(0, "_result", transaction_id, None, float(sid))
        return sid

    def reply_result(self, transaction_id: float, value: Any = None) -> None:
        """Answer a command (releaseStream, FCPublish...) with a plain ``_result``."""
        if not self._require_ready():
            return
        if transaction_id:
            self._send_command(0, "_result", transaction_id, None, value)

    def _status(
        self, stream_id: int, level: str, code: str, description: str, **extra: Any
    ) -> None:
        info = {"level": level, "code": code, "description": description}
        info.update(extra)
        self._send_command(stream_id, "onStatus", 0.0, None, info)

    def accept_publish(self, stream_id: int, name: str) -> None:
        if not self._require_ready():
            return
        self._reader.max_message_size = self.max_message_size
        self._reader.max_pending_bytes = 2 * self.max_message_size
        self._user_control(UC_STREAM_BEGIN, stream_id)
        self._status(stream_id, "status", "NetStream.Publish.Start", f"{name} is now published.")

    def refuse_publish(
        self, stream_id: int, description: str, code: str = "NetStream.Publish.BadName"
    ) -> None:
        if not self._require_ready():
            return
        self._status(stream_id, "error", code, description)

    def accept_play(self, stream_id: int, name: str) -> None:
        if not self._require_ready():
            return
        self._user_control(UC_STREAM_BEGIN, stream_id)
        self._status(stream_id, "status", "NetStream.Play.Reset", f"Playing and resetting {name}.")
        self._status(stream_id, "status", "NetStream.Play.Start", f"Started playing {name}.")
        self._send(
            CSID_STATUS, C.DATA_AMF0, stream_id, encode_amf0("|RtmpSampleAccess", True, True)
        )

    def refuse_play(
        self, stream_id: int, description: str, code: str = "NetStream.Play.StreamNotFound"
    ) -> None:
        if not self._require_ready():
            return
        self._status(stream_id, "error", code, description)

    def play_unpublished(self, stream_id: int, name: str) -> None:
        """The stream a player watches has ended."""
        if not self._require_ready():
            return
        self._status(
            stream_id, "status", "NetStream.Play.UnpublishNotify", f"{name} is now unpublished."
        )
        self._user_control(UC_STREAM_EOF, stream_id)

    def unpublish_success(self, stream_id: int, name: str) -> None:
        if not self._require_ready():
            return
        self._status(
            stream_id, "status", "NetStream.Unpublish.Success", f"{name} is now unpublished."
        )

    def ping(self, now_ms: int) -> None:
        if not self._require_ready():
            return
        self._user_control(UC_PING_REQUEST, now_ms & 0xFFFFFFFF)

    def close(self) -> None:
        if self.state != State.CLOSED:
            self.state = State.CLOSED


def metadata_payload(values: tuple[Any, ...], name: str) -> tuple[bytes, dict[str, Any]] | None:
    """Normalise ``@setDataFrame onMetaData {...}`` / ``onMetaData {...}`` to an AMF0 payload
    ``"onMetaData", {...}`` suitable for FLV script tags; None if it is not metadata, or
    if it cannot be re-encoded within the AMF bounds (dropped, like a malformed one)."""
    args = list(values)
    if name == "@setDataFrame":
        if not args or not isinstance(args[0], str):
            return None
        name = args.pop(0)
    if name != "onMetaData":
        return None
    obj = args[0] if args and isinstance(args[0], dict) else {}
    meta = ECMAArray({str(k): v for k, v in obj.items()})
    try:
        return encode_amf0("onMetaData", meta), dict(meta)
    except (ValueError, TypeError):
        return None
