"""Fuzzing the RTMP chunk stream (media.rtmp.chunk.ChunkReader) on its own: messages of
every header form (1-, 2- and 3-byte basic headers, extended timestamps) written at any
chunk size, changed mid-stream, and cut anywhere come back exactly; random and mutated
bytes only ever raise ProtocolViolation, with the memory held within the reader's bounds.
(The whole server core is fuzzed in tests/media/test_rtmp_core.py.)"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from media.errors import ProtocolViolation
from media.rtmp.chunk import ChunkReader, Message, encode_message
from tests.fuzz.budget import fuzz

messages = st.lists(
    st.builds(
        Message,
        csid=st.one_of(st.integers(3, 63), st.integers(64, 319), st.integers(320, 65599)),
        type_id=st.sampled_from([8, 9, 15, 18, 20, 17]),
        stream_id=st.integers(0, 2**32 - 1),
        timestamp=st.one_of(st.integers(0, 0xFFFFFE), st.integers(0xFFFFFF, 2**32 - 1)),
        payload=st.binary(max_size=1500),
    ),
    min_size=1,
    max_size=8,
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def set_chunk_size(size: int, current: int) -> bytes:
    """The Set Chunk Size message, itself chunked at the size in force until it."""
    return encode_message(2, 1, 0, 0, struct.pack(">I", size), current)


@fuzz(200)
@given(
    messages,
    st.lists(st.integers(1, 70000), max_size=3),
    st.lists(st.integers(0, 2**20), max_size=12),
)
def test_messages_come_back_exactly_at_any_chunk_size_and_cut(
    msgs: list[Message], sizes: list[int], points: list[int]
) -> None:
    wire = bytearray()
    size = 128
    for i, m in enumerate(msgs):
        if i < len(sizes):  # change the chunk size before message i
            wire += set_chunk_size(sizes[i], size)
            size = sizes[i]
        wire += encode_message(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload, size)
    reader = ChunkReader()
    got: list[Message] = []
    for piece in cut(bytes(wire), points):
        got += reader.feed(piece)
    media = [
        (m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in got if m.type_id != 1
    ]
    assert media == [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in msgs]
    assert reader.buffered == 0 and reader.pending_bytes == 0


@fuzz(200)
@given(st.binary(max_size=6000), st.lists(st.integers(0, 6000), max_size=8))
def test_random_bytes_raise_only_protocol_violation_within_bounds(
    data: bytes, points: list[int]
) -> None:
    reader = ChunkReader(max_message_size=64 * 1024)
    try:
        for piece in cut(data, points):
            reader.feed(piece)
            assert reader.pending_bytes <= reader.max_pending_bytes
    except ProtocolViolation:
        pass


@fuzz(200)
@given(messages, st.data())
def test_mutated_streams_raise_only_protocol_violation(
    msgs: list[Message], data: st.DataObject
) -> None:
    size = data.draw(st.sampled_from([1, 7, 128, 4096]))
    wire = bytearray(set_chunk_size(size, 128))
    for m in msgs:
        wire += encode_message(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload, size)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(wire) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            wire[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            wire[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del wire[pos : pos + data.draw(st.integers(1, 8))]
    reader = ChunkReader(max_message_size=1 << 20)
    try:
        for piece in cut(bytes(wire), data.draw(st.lists(st.integers(0, 2**16), max_size=6))):
            reader.feed(piece)
            assert reader.pending_bytes <= reader.max_pending_bytes
    except ProtocolViolation:
        pass
