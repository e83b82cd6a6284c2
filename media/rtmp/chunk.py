"""RTMP chunk stream: a sans-I/O reader that assembles messages, and the message encoder.

The reader follows the quirks seen in the wild (see PROTOCOL_NOTES.md): chunk stream ids
in the 1- and 2-byte extended forms; a new chunk stream may start with fmt1/fmt3; fmt3
starting a new message re-applies the previous delta (after fmt0: its timestamp, as the
spec says); extended timestamps, where continuation chunks may or may not repeat the
4-byte field (decided by comparing); 32-bit wrapping timestamp arithmetic (deltas may be
"negative"); SetChunkSize at any point, up to 0x7FFFFFFF; Abort. Memory is bounded by the
largest message we accept and by the number of chunk streams with a message in progress.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from media.errors import ProtocolViolation

# Message type ids
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
EXTENDED = 0xFFFFFF
MAX_OPEN_STREAMS = 64


@dataclass(frozen=True, slots=True)
class Message:
    csid: int
    type_id: int
    stream_id: int
    timestamp: int
    """32-bit wrapping timestamp in ms, as on the wire."""
    payload: bytes


class _ChunkStream:
    __slots__ = (
        "delta",
        "ext",
        "has_ext",
        "length",
        "partial",
        "stream_id",
        "timestamp",
        "type_id",
    )

    def __init__(self) -> None:
        self.timestamp = 0
        self.delta = 0
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.has_ext = False
        self.ext = 0
        self.partial: bytearray | None = None


class ChunkReader:
    """Feed bytes, get complete messages. Raises :class:`ProtocolViolation` on bad input."""

    def __init__(
        self, max_message_size: int = 16 * 1024 * 1024, max_pending_bytes: int | None = None
    ) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.max_message_size = max_message_size
        self.max_pending_bytes = (
            max_pending_bytes if max_pending_bytes is not None else 2 * max_message_size
        )
        """Most bytes the messages in progress may declare together: up to
        :data:`MAX_OPEN_STREAMS` interleaved messages of ``max_message_size`` each would
        otherwise let one peer make us hold 64 x 16 MiB."""
        self.pending_bytes = 0
        self._buf = bytearray()
        self._pos = 0
        self._streams: dict[int, _ChunkStream] = {}
        self._open = 0
        self.bytes_received = 0
        self.error: str | None = None
        """Set when a violation followed complete messages returned by the same ``feed``."""

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        if self.error is not None:
            raise ProtocolViolation(self.error)
        self.bytes_received += len(data)
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        out: list[Message] = []
        try:
            while True:
                msg = self._next()
                if msg is None:
                    break
                if isinstance(msg, Message):
                    out.append(msg)
                    if msg.type_id == SET_CHUNK_SIZE:
                        self._apply_chunk_size(msg.payload)
                    elif msg.type_id == ABORT:
                        self._apply_abort(msg.payload)
        except ProtocolViolation as exc:
            if not out:
                raise
            # Hand over the messages completed before the violation; it is raised on the
            # next call (or read ``error``).
            self.error = str(exc)
        return out

    def _apply_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise ProtocolViolation("SetChunkSize message shorter than 4 bytes")
        size = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
        if size < 1:
            raise ProtocolViolation("SetChunkSize of 0")
        self.chunk_size = size

    def _apply_abort(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise ProtocolViolation("Abort message shorter than 4 bytes")
        csid = struct.unpack_from(">I", payload)[0]
        st = self._streams.get(csid)
        if st is not None and st.partial is not None:
            st.partial = None
            self._open -= 1
            self.pending_bytes -= st.length

    def _next(self) -> Message | _Nothing | None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos >= end:
            return None
        b0 = buf[pos]
        fmt = b0 >> 6
        csid = b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if end < p + 1:
                return None
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if end < p + 2:
                return None
            csid = 64 + buf[p] + buf[p + 1] * 256
            p += 2
        st = self._streams.get(csid)
        if st is None:
            if len(self._streams) >= 1024:
                raise ProtocolViolation("too many chunk streams")
            st = _ChunkStream()
            # not stored until the header is complete
        hsize = (11, 7, 3, 0)[fmt]
        if end < p + hsize:
            return None
        starting = st.partial is None
        ts_field = 0
        if fmt <= 2:
            ts_field = (buf[p] << 16) | (buf[p + 1] << 8) | buf[p + 2]
        length = st.length
        type_id = st.type_id
        stream_id = st.stream_id
        if fmt <= 1:
            length = (buf[p + 3] << 16) | (buf[p + 4] << 8) | buf[p + 5]
            type_id = buf[p + 6]
        if fmt == 0:
            stream_id = struct.unpack_from("<I", buf, p + 7)[0]
        p += hsize
        has_ext = st.has_ext
        ext = st.ext
        if fmt <= 2:
            has_ext = ts_field == EXTENDED
            if has_ext:
                if end < p + 4:
                    return None
                ext = struct.unpack_from(">I", buf, p)[0]
                p += 4
        elif has_ext:
            # fmt3 after an extended timestamp: the field may be repeated (2012 spec,
            # Flash) or omitted (some librtmp/ffmpeg versions). Decide by comparing.
            if end < p + 4:
                if end - p < 4 and bytes(buf[p:end]) == struct.pack(">I", ext)[: end - p]:
                    return None  # could still be the repeated field; wait for more
                # too short to be the field and not its prefix: not repeated
            elif struct.unpack_from(">I", buf, p)[0] == ext:
                p += 4
        if fmt != 3 and not starting:
            raise ProtocolViolation(
                f"chunk stream {csid}: new message header (fmt {fmt}) inside a message"
            )
        if starting and length > self.max_message_size:
            raise ProtocolViolation(
                f"message of {length} bytes exceeds the limit of {self.max_message_size}"
            )
        value = ext if has_ext else ts_field
        remaining_in_msg = length - (len(st.partial) if st.partial is not None else 0)
        take = min(self.chunk_size, remaining_in_msg)
        if end < p + take:
            return None
        # Header and body are complete: commit state.
        if csid not in self._streams:
            self._streams[csid] = st
        st.length, st.type_id, st.stream_id = length, type_id, stream_id
        st.has_ext, st.ext = has_ext, ext
        if starting:
            if fmt == 0:
                st.timestamp = value
                st.delta = value
            elif fmt in (1, 2):
                st.delta = value
                st.timestamp = (st.timestamp + value) & 0xFFFFFFFF
            else:
                st.timestamp = (st.timestamp + st.delta) & 0xFFFFFFFF
        data = bytes(buf[p : p + take])
        self._pos = p + take
        if starting and take == length:
            return Message(csid, type_id, stream_id, st.timestamp, data)
        if starting:
            if self._open >= MAX_OPEN_STREAMS:
                raise ProtocolViolation("too many interleaved messages in progress")
            if self.pending_bytes + length > self.max_pending_bytes:
                raise ProtocolViolation(
                    f"messages in progress would hold {self.pending_bytes + length} bytes "
                    f"(limit {self.max_pending_bytes})"
                )
            st.partial = bytearray(data)
            self._open += 1
            self.pending_bytes += length
            return _NOTHING
        assert st.partial is not None
        st.partial += data
        if len(st.partial) >= length:
            payload = bytes(st.partial)
            st.partial = None
            self._open -= 1
            self.pending_bytes -= length
            return Message(csid, type_id, stream_id, st.timestamp, payload)
        return _NOTHING


class _Nothing:
    __slots__ = ()


_NOTHING = _Nothing()


def basic_header(fmt: int, csid: int) -> bytes:
    if csid < 2 or csid > 65599:
        raise ValueError(f"chunk stream id {csid} out of range")
    if csid < 64:
        return bytes([(fmt << 6) | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    v = csid - 64
    return bytes([(fmt << 6) | 1, v & 0xFF, v >> 8])


def encode_message(
    csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes, chunk_size: int
) -> bytes:
    """Serialize one message: fmt0 header, then fmt3 continuation chunks.

    Always fmt0, so the bytes depend on nothing but the arguments: the same object can be
    written to every player (serialize once).
    """
    ts = timestamp & 0xFFFFFFFF
    length = len(payload)
    if length > 0xFFFFFF:
        raise ValueError("RTMP message over 16 MiB")
    ext = ts >= EXTENDED
    t = EXTENDED if ext else ts
    head = (
        basic_header(0, csid)
        + bytes([(t >> 16) & 0xFF, (t >> 8) & 0xFF, t & 0xFF])
        + bytes([(length >> 16) & 0xFF, (length >> 8) & 0xFF, length & 0xFF, type_id])
        + struct.pack("<I", stream_id)
    )
    ext_bytes = struct.pack(">I", ts) if ext else b""
    if length <= chunk_size:
        return head + ext_bytes + payload
    cont = basic_header(3, csid) + ext_bytes
    parts = [head, ext_bytes, payload[:chunk_size]]
    for off in range(chunk_size, length, chunk_size):
        parts.append(cont)
        parts.append(payload[off : off + chunk_size])
    return b"".join(parts)
