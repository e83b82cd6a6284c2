"""The sans-I/O RTMP core: AMF, chunk stream, handshake and server connection."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media import amf
from media.errors import AMFError, ProtocolViolation
from media.rtmp import chunk as C
from media.rtmp import events as ev
from media.rtmp.client import ClientConnection, CommandReply, MediaMessage
from media.rtmp.connection import ServerConnection, State
from media.rtmp.handshake import (
    FMS_KEY,
    client_hello,
    find_client_digest,
    server_response,
    verify_server_s1,
)

# ----------------------------------------------------------------------------- AMF


def test_amf0_round_trip() -> None:
    obj = {"app": "live", "n": 3.5, "ok": True, "none": None, "list": [1.0, "x"], "sub": {"a": 1.0}}
    data = amf.encode_amf0("connect", 1.0, obj, amf.ECMAArray({"w": 1280.0}))
    assert amf.decode_amf0(data) == ["connect", 1.0, obj, {"w": 1280.0}]
    long = "é" * 40000  # > 65535 bytes: long string
    assert amf.decode_amf0(amf.encode_amf0(long)) == [long]


def test_amf0_switch_to_amf3_and_amf3_values() -> None:
    # 0x11 (avmplus) then AMF3: integer 5, string "hi", true, array [1, 2]
    data = b"\x11\x04\x05" + b"\x11\x06\x05hi" + b"\x11\x03" + b"\x11\x09\x05\x01\x04\x01\x04\x02"
    assert amf.decode_amf0(data) == [5, "hi", True, [1, 2]]
    # AMF3 dynamic anonymous object {a: 1} with a string reference reused as a value
    obj = b"\x0a\x0b\x01" + b"\x03a" + b"\x04\x01" + b"\x01"
    assert amf.decode_amf3(obj) == [{"a": 1}]


@given(st.binary(max_size=512))
def test_amf_garbage_only_raises_amf_error(data: bytes) -> None:
    for decode in (amf.decode_amf0, amf.decode_amf3):
        try:
            decode(data)
        except AMFError:
            pass


def test_amf_nesting_bomb_is_refused() -> None:
    with pytest.raises(AMFError, match="deep"):
        amf.decode_amf0(b"\x03\x00\x01a" * 100)


def _amf0_reference_bomb(levels: int, fan: int) -> bytes:
    """A strict array of objects o1..oL where o_k holds ``fan`` references to o_(k-1):
    ~fan**L values once expanded, from a few hundred bytes (the review's 2.3 KB
    ``onMetaData`` stalled the event loop for 1.1 s). AMF0 reference indexes count
    objects in order of appearance: the array is 0, o_k is k."""
    body = b"\x03\x00\x01x\x00" + struct.pack(">d", 1.0) + b"\x00\x00\x09"
    for k in range(2, levels + 1):
        props = b"".join(
            struct.pack(">H", 2) + f"{i:02d}".encode() + b"\x07" + struct.pack(">H", k - 1)
            for i in range(fan)
        )
        body += b"\x03" + props + b"\x00\x00\x09"
    return b"\x0a" + struct.pack(">I", levels) + body


def _amf0_flat_references(objects: int, fan: int) -> bytes:
    """A strict array of ``objects`` objects, each referencing every earlier one ``fan``
    times: N^2 growth without nesting deeper than 2."""
    body = b""
    for k in range(objects):
        props = b"".join(
            struct.pack(">H", 3)
            + f"{k:01x}{i:02d}".encode()[:3]
            + b"\x07"
            + struct.pack(">H", j + 1)
            for j in range(k)
            for i in range(fan)
        )
        body += b"\x03" + props + b"\x00\x00\x09"
    return b"\x0a" + struct.pack(">I", objects) + body


def test_amf0_reference_bomb_is_refused_by_expanded_size() -> None:
    small = _amf0_reference_bomb(levels=4, fan=3)  # 3**3 expanded leaves: fine
    (value,) = amf.decode_amf0(small)
    assert value[3] == {f"{i:02d}": value[2] for i in range(3)}
    assert amf.decode_amf0(amf.encode_amf0(value)) == [value]
    bomb = _amf0_reference_bomb(levels=30, fan=4)
    assert len(bomb) < 3000
    with pytest.raises(AMFError, match="expands"):
        amf.decode_amf0(bomb)
    flat = _amf0_flat_references(objects=60, fan=8)
    with pytest.raises(AMFError, match="expands"):
        amf.decode_amf0(flat)


def test_amf_reference_cycles_are_refused() -> None:
    # AMF0 object 0 whose property refers to object 0 itself
    cyc0 = b"\x03\x00\x01a\x07\x00\x00\x00\x00\x09"
    with pytest.raises(AMFError, match="cycle"):
        amf.decode_amf0(cyc0)
    # AMF3 dynamic object whose property "a" is an object reference to itself (index 0)
    cyc3 = b"\x0a\x0b\x01\x03a\x0a\x00\x01"
    with pytest.raises(AMFError, match="cycle"):
        amf.decode_amf3(cyc3)


def test_amf3_reference_bomb_is_refused() -> None:
    """AMF3 array of anonymous dynamic objects o1..o40, o_k = {r0..r3: ref o_(k-1)}:
    nesting depth 2, 4**40 values expanded. The object table: the array is 0, o_k is k."""
    first = b"\x0a\x0b\x01" + b"\x03x" + b"\x04\x01" + b"\x01"
    items = [first]
    for k in range(2, 41):
        members = b"".join(
            bytes([(2 << 1) | 1]) + f"r{i}".encode() + b"\x0a" + bytes([(k - 1) << 1])
            for i in range(4)
        )
        items.append(b"\x0a\x0b\x01" + members + b"\x01")
    data = b"\x09" + bytes([(len(items) << 1) | 1]) + b"\x01" + b"".join(items)
    small = b"\x09" + bytes([(3 << 1) | 1]) + b"\x01" + b"".join(items[:3])
    (value,) = amf.decode_amf3(small)
    assert value[2] == {f"r{i}": value[1] for i in range(4)}
    with pytest.raises(AMFError, match="expands"):
        amf.decode_amf3(data)


@given(st.binary(max_size=2048))
def test_decoded_garbage_re_encodes_within_bounds(data: bytes) -> None:
    """Whatever decodes re-encodes (the relay re-encodes metadata) within the output
    bound, or is refused: never a blow-up."""
    for decode in (amf.decode_amf0, amf.decode_amf3):
        try:
            values = decode(data)
        except AMFError:
            continue
        try:
            out = amf.encode_amf0(*values)
        except (ValueError, TypeError):
            continue
        assert len(out) <= amf.MAX_ENCODED


def test_encoder_refuses_shared_structure_blow_up() -> None:
    node: dict[str, object] = {"leaf": 1.0}
    for _ in range(25):
        node = {"a": node, "b": node}  # 2**25 leaves if expanded
    with pytest.raises(ValueError, match="bytes"):
        amf.encode_amf0(node)


# ----------------------------------------------------------------------------- chunks


def _messages(n: int = 30, seed: int = 1) -> list[tuple[int, int, int, int, bytes]]:
    rnd = random.Random(seed)
    out = []
    ts = {4: 0, 6: 0}
    for _ in range(n):
        csid = rnd.choice([4, 6])
        ts[csid] += rnd.randint(0, 60)
        size = rnd.choice([0, 1, 127, 128, 129, 300, 5000, 70000])
        out.append((csid, 9 if csid == 6 else 8, 1, ts[csid], rnd.randbytes(size)))
    return out


@pytest.mark.parametrize("chunk_size", [128, 1000, 4096, 65536])
def test_chunk_reader_whole_bytewise_and_random_splits(chunk_size: int) -> None:
    msgs = _messages()
    wire = b"".join(C.encode_message(*m, chunk_size) for m in msgs)
    expected = [(m[0], m[1], m[2], m[3], m[4]) for m in msgs]

    def run(pieces: list[bytes]) -> list[tuple[int, int, int, int, bytes]]:
        r = C.ChunkReader()
        r.chunk_size = chunk_size
        got = []
        for p in pieces:
            got += [(m.csid, m.type_id, m.stream_id, m.timestamp, m.payload) for m in r.feed(p)]
        assert r.buffered == 0
        return got

    assert run([wire]) == expected
    if chunk_size <= 1000:
        assert run([wire[i : i + 1] for i in range(len(wire))]) == expected
    rnd = random.Random(7)
    cuts = sorted(rnd.sample(range(1, len(wire)), 50))
    assert run([wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]) == expected
    # with trailing garbage-free partial data nothing is emitted early
    r = C.ChunkReader()
    r.chunk_size = chunk_size
    assert r.feed(wire[:-1])[-1:] != [expected[-1]] or len(expected[-1][4]) == 0


def _chunk(fmt: int, csid: int, header: bytes, body: bytes) -> bytes:
    return C.basic_header(fmt, csid) + header + body


def test_set_chunk_size_in_the_middle_of_a_message() -> None:
    payload = bytes(range(256)) * 2  # 512 bytes
    # video message on csid 6: first 128 bytes at the default chunk size...
    head = b"\x00\x00\x0a" + struct.pack(">I", len(payload))[1:] + b"\x09" + struct.pack("<I", 1)
    wire = _chunk(0, 6, head, payload[:128])
    # ...then SetChunkSize(4096) on csid 2 while the video message is incomplete...
    wire += C.encode_message(2, C.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 4096), 128)
    # ...and the rest of the video in one continuation chunk of the new size.
    wire += _chunk(3, 6, b"", payload[128:])
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        r = C.ChunkReader()
        msgs = [m for p in pieces for m in r.feed(p)]
        assert [m.type_id for m in msgs] == [C.SET_CHUNK_SIZE, C.VIDEO]
        assert msgs[1].payload == payload and msgs[1].timestamp == 10
        assert r.chunk_size == 4096


@pytest.mark.parametrize("repeat_ext", [True, False])
def test_extended_timestamp_continuations_with_and_without_repeat(repeat_ext: bool) -> None:
    ts = 0x01000000 + 5
    payload = b"x" * 300
    head = b"\xff\xff\xff" + struct.pack(">I", len(payload))[1:] + b"\x09" + struct.pack("<I", 1)
    ext = struct.pack(">I", ts)
    wire = _chunk(0, 6, head + ext, payload[:128])
    wire += _chunk(3, 6, ext if repeat_ext else b"", payload[128:256])
    wire += _chunk(3, 6, ext if repeat_ext else b"", payload[256:])
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        r = C.ChunkReader()
        msgs = [m for p in pieces for m in r.feed(p)]
        assert len(msgs) == 1 and msgs[0].payload == payload and msgs[0].timestamp == ts


def test_encoder_round_trips_extended_timestamps() -> None:
    for ts in (0xFFFFFE, 0xFFFFFF, 0x12345678, 0xFFFFFFFF):
        wire = C.encode_message(6, 9, 1, ts, b"y" * 1000, 128)
        (m,) = C.ChunkReader().feed(wire)
        assert m.timestamp == ts and m.payload == b"y" * 1000


def test_fmt3_new_message_reapplies_delta_and_fmt1_starts_stream() -> None:
    # fmt1 on a chunk stream never seen (librtmp does this for pings)
    wire = _chunk(1, 7, b"\x00\x00\x14" + b"\x00\x00\x02\x08", b"ab")
    # fmt3 starting a new message: same length/type, delta 20 again
    wire += _chunk(3, 7, b"", b"cd")
    # fmt2: new delta 5
    wire += _chunk(2, 7, b"\x00\x00\x05", b"ef")
    wire += _chunk(3, 7, b"", b"gh")
    msgs = C.ChunkReader().feed(wire)
    assert [(m.timestamp, m.payload) for m in msgs] == [
        (20, b"ab"), (40, b"cd"), (45, b"ef"), (50, b"gh")
    ]  # fmt: skip


def test_fmt3_after_fmt0_uses_the_fmt0_timestamp_as_delta() -> None:
    head = b"\x00\x00\x21" + b"\x00\x00\x01\x08" + struct.pack("<I", 1)
    wire = _chunk(0, 4, head, b"a") + _chunk(3, 4, b"", b"b")
    msgs = C.ChunkReader().feed(wire)
    assert [m.timestamp for m in msgs] == [0x21, 0x42]


def test_negative_delta_wraps_in_32_bits() -> None:
    head = b"\x00\x00\x64" + b"\x00\x00\x01\x08" + struct.pack("<I", 1)
    wire = _chunk(0, 4, head, b"a")
    # fmt2 with an extended "negative" delta of -10
    wire += _chunk(2, 4, b"\xff\xff\xff" + struct.pack(">I", (-10) & 0xFFFFFFFF), b"b")
    msgs = C.ChunkReader().feed(wire)
    assert [m.timestamp for m in msgs] == [100, 90]


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_chunk_stream_id_forms(csid: int) -> None:
    wire = C.encode_message(csid, 8, 1, 7, b"q" * 200, 128)
    (m,) = C.ChunkReader().feed(wire)
    assert m.csid == csid and m.payload == b"q" * 200


def test_abort_discards_partial_message() -> None:
    payload = b"z" * 300
    head = b"\x00\x00\x00" + struct.pack(">I", 300)[1:] + b"\x09" + struct.pack("<I", 1)
    wire = _chunk(0, 6, head, payload[:128])
    wire += C.encode_message(2, C.ABORT, 0, 0, struct.pack(">I", 6), 128)
    wire += C.encode_message(6, 9, 1, 0, b"fresh", 128)
    msgs = C.ChunkReader().feed(wire)
    assert [m.payload for m in msgs if m.type_id == 9] == [b"fresh"]


def test_oversized_message_is_a_violation() -> None:
    from media.errors import ProtocolViolation

    r = C.ChunkReader(max_message_size=1000)
    with pytest.raises(ProtocolViolation, match="exceeds"):
        r.feed(C.encode_message(6, 9, 1, 0, b"a" * 2000, 128))


def test_large_chunk_size_is_accepted() -> None:
    r = C.ChunkReader()
    r.feed(C.encode_message(2, C.SET_CHUNK_SIZE, 0, 0, struct.pack(">I", 0x7FFFFFFF), 128))
    assert r.chunk_size == 0x7FFFFFFF
    (m,) = r.feed(C.encode_message(6, 9, 1, 0, b"b" * 100000, 0x7FFFFFFF))
    assert len(m.payload) == 100000


# ----------------------------------------------------------------------------- handshake


def test_complex_handshake_is_answered_with_valid_digest_and_signature() -> None:
    import hashlib
    import hmac

    c0c1 = client_hello(complex_=True)
    found = find_client_digest(c0c1[1:])
    assert found is not None
    response, used = server_response(c0c1)
    assert used
    s1, s2 = response[1:1537], response[1537:]
    assert verify_server_s1(s1)
    key = hmac.new(FMS_KEY, found[1], hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_simple_handshake_echoes_c1() -> None:
    c0c1 = client_hello()
    response, used = server_response(c0c1)
    assert not used and response[1537:] == c0c1[1:]


# ----------------------------------------------------------------------------- sessions


def _publish_session(chunk_size: int = 4096) -> tuple[bytes, int]:
    """Bytes of a complete, valid publish session from our client core; and media count."""
    client = ClientConnection(chunk_size=chunk_size, random_bytes=lambda n: b"\x01" * n)
    client.connect("live", "rtmp://127.0.0.1/live")
    client.create_stream()
    client.publish(1, "cam?expire=1&sign=abc")
    client.send_metadata(1, {"width": 320.0, "height": 180.0, "videocodecid": 7.0})
    n = 0
    client.send_media(9, 1, 0, b"\x17\x00\x00\x00\x00" + b"\x01" * 30)  # AVC sequence header
    for i in range(20):
        key = i % 10 == 0
        client.send_media(
            9, 1, i * 33, (b"\x17\x01" if key else b"\x27\x01") + b"\x00\x00\x00" + bytes(3000)
        )
        client.send_media(8, 1, i * 23, b"\xaf\x01" + bytes(200))
        n += 2
    client.delete_stream(1)
    c0c1 = client.data_to_send()
    # complete the client's handshake with a fake S0S1S2; it then sends C2 + the session
    client.receive_data(b"\x03" + b"\x00" * 3072)
    return c0c1 + client.data_to_send(), n


def _run(conn: ServerConnection, pieces: list[bytes]) -> list[ev.Event]:
    events: list[ev.Event] = []
    for p in pieces:
        for e in conn.receive_data(p):
            events.append(e)
            if isinstance(e, ev.Connect):
                conn.accept_connect(e.transaction_id)
            elif isinstance(e, ev.CreateStream):
                conn.accept_create_stream(e.transaction_id)
            elif isinstance(e, ev.Publish):
                conn.accept_publish(e.stream_id, e.name)
        conn.data_to_send()
    return events


def test_publish_session_whole_and_byte_by_byte() -> None:
    wire, n_media = _publish_session()
    results = []
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        events = _run(ServerConnection(), pieces)
        assert not [e for e in events if isinstance(e, ev.ProtocolError)]
        kinds = [type(e).__name__ for e in events]
        results.append(kinds)
        pub = next(e for e in events if isinstance(e, ev.Publish))
        assert pub.name == "cam" and pub.query == "expire=1&sign=abc"
        assert sum(isinstance(e, ev.Media) for e in events) == n_media + 1
        meta = next(e for e in events if isinstance(e, ev.ScriptData))
        assert meta.name == "@setDataFrame" and meta.values[0] == "onMetaData"
        assert isinstance(events[-1], ev.DeleteStream)
    assert results[0] == results[1]


def test_client_and_server_cores_talk_to_each_other() -> None:
    server = ServerConnection(out_chunk_size=8192)
    client = ClientConnection()
    client.connect("live", "rtmp://h/live")
    client.create_stream()
    client.play(1, "cam")
    replies: list[CommandReply | MediaMessage] = []
    for _ in range(5):
        for e in server.receive_data(client.data_to_send()):
            if isinstance(e, ev.Connect):
                server.accept_connect(e.transaction_id)
            elif isinstance(e, ev.CreateStream):
                server.accept_create_stream(e.transaction_id)
            elif isinstance(e, ev.Play):
                server.accept_play(e.stream_id, e.name)
        replies += [r for r in client.receive_data(server.data_to_send()) if not isinstance(r, str)]
    codes = [r.info.get("code") for r in replies if isinstance(r, CommandReply)]
    assert "NetConnection.Connect.Success" in codes and "NetStream.Play.Start" in codes
    assert server.state == State.READY


def test_amf3_command_connect() -> None:
    conn = ServerConnection()
    conn.receive_data(client_hello() + b"\x00" * 1536)
    payload = b"\x00" + amf.encode_amf0("connect", 1.0, {"app": "live?k=v", "objectEncoding": 3.0})
    events = conn.receive_data(C.encode_message(3, C.COMMAND_AMF3, 0, 0, payload, 128))
    (connect,) = [e for e in events if isinstance(e, ev.Connect)]
    assert connect.app == "live" and connect.query == "k=v" and connect.object_encoding == 3


def test_acknowledgements_follow_the_peer_window() -> None:
    conn = ServerConnection()
    conn.receive_data(client_hello() + b"\x00" * 1536)
    conn.data_to_send()
    conn.receive_data(C.encode_message(2, C.WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", 5000), 128))
    conn.receive_data(C.encode_message(6, 9, 1, 0, bytes(6000), 128))
    sent = C.ChunkReader().feed(conn.data_to_send())
    acks = [m for m in sent if m.type_id == C.ACKNOWLEDGEMENT]
    assert len(acks) == 1 and struct.unpack(">I", acks[0].payload)[0] > 5000


def test_ping_request_is_answered() -> None:
    conn = ServerConnection()
    conn.receive_data(client_hello() + b"\x00" * 1536)
    conn.data_to_send()
    conn.receive_data(C.encode_message(2, C.USER_CONTROL, 0, 0, struct.pack(">HI", 6, 1234), 128))
    (reply,) = C.ChunkReader().feed(conn.data_to_send())
    assert reply.type_id == C.USER_CONTROL and reply.payload == struct.pack(">HI", 7, 1234)


def test_aggregate_message_is_split() -> None:
    def sub(t: int, ts: int, body: bytes) -> bytes:
        size = len(body)
        return (
            bytes([t]) + size.to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
            + bytes([ts >> 24]) + b"\x00\x00\x00" + body + (11 + size).to_bytes(4, "big")
        )  # fmt: skip

    agg = sub(9, 1000, b"\x17\x01\x00\x00\x00k") + sub(8, 1020, b"\xaf\x01a")
    conn = ServerConnection()
    conn.receive_data(client_hello() + b"\x00" * 1536)
    events = conn.receive_data(C.encode_message(6, C.AGGREGATE, 1, 50, agg, 128))
    media = [e for e in events if isinstance(e, ev.Media)]
    assert [(m.type_id, m.timestamp) for m in media] == [(9, 50), (8, 70)]


def _partial_start(csid: int, length: int, chunk_size: int = 128) -> bytes:
    """The first chunk of a ``length``-byte video message on ``csid`` (the rest never sent)."""
    return C.encode_message(csid, C.VIDEO, 1, 0, bytes(length), chunk_size)[: 12 + chunk_size]


def test_chunk_reader_bounds_bytes_held_by_interleaved_messages() -> None:
    """64 interleaved partial messages of 16 MiB each would be 1 GiB held for one peer:
    the messages in progress may declare at most ``max_pending_bytes`` together."""
    big = (1 << 24) - 1  # the largest length the 24-bit header field carries
    reader = C.ChunkReader(max_message_size=1 << 24, max_pending_bytes=3 * big)
    for csid in (4, 5, 6):
        assert reader.feed(_partial_start(csid, big)) == []
    assert reader.pending_bytes == 3 * big
    with pytest.raises(ProtocolViolation, match="in progress would hold"):
        reader.feed(_partial_start(7, big))
    # completing or aborting a message gives its bytes back
    fresh = C.ChunkReader(max_message_size=1000, max_pending_bytes=1500)
    whole = C.encode_message(4, C.VIDEO, 1, 0, bytes(1000), 128)
    assert fresh.feed(whole[:500]) == [] and fresh.pending_bytes == 1000
    (done,) = fresh.feed(whole[500:])
    assert len(done.payload) == 1000 and fresh.pending_bytes == 0
    fresh.feed(_partial_start(4, 1000))
    fresh.feed(C.encode_message(2, C.ABORT, 0, 0, struct.pack(">I", 4), 128))
    assert fresh.pending_bytes == 0
    fresh.feed(_partial_start(5, 1000))  # room again after the abort


def test_unauthenticated_connection_holds_little_until_publish_is_accepted() -> None:
    conn = ServerConnection(max_message_size=1 << 24, max_command_size=64 * 1024)
    conn.receive_data(client_hello() + b"\x00" * 1536)
    events = conn.receive_data(_partial_start(6, 1 << 20))  # 1 MiB before any publish
    assert any(isinstance(e, ev.ProtocolError) for e in events)
    assert conn.state == State.CLOSED
    # once a publish is accepted, frames up to max_message_size are taken
    pub = ServerConnection(max_message_size=1 << 24, max_command_size=64 * 1024)
    pub.receive_data(client_hello() + b"\x00" * 1536)
    pub.accept_publish(1, "s")
    events = pub.receive_data(C.encode_message(6, C.VIDEO, 1, 0, bytes(1 << 20), 128))
    assert not any(isinstance(e, ev.ProtocolError) for e in events)
    assert [len(e.payload) for e in events if isinstance(e, ev.Media)] == [1 << 20]


# ----------------------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(min_size=0, max_size=4000))
def test_random_bytes_never_escape_the_core(data: bytes) -> None:
    conn = ServerConnection()
    _run(conn, [data])
    conn2 = ServerConnection()
    _run(conn2, [client_hello() + b"\x00" * 1536 + data])  # garbage after a good handshake


@FUZZ
@given(st.data())
def test_mutated_valid_sessions_never_escape_the_core(data: st.DataObject) -> None:
    wire, _ = _publish_session(chunk_size=data.draw(st.sampled_from([128, 1024, 4096])))
    buf = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(1537 + 1536, len(buf) - 1))
        if op == "flip":
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 16))]
        else:
            del buf[pos:]
            break
    splits = data.draw(st.lists(st.integers(0, len(buf)), max_size=5))
    cuts = sorted(set(splits))
    pieces = [bytes(buf[a:b]) for a, b in zip([0, *cuts], [*cuts, len(buf)], strict=True)]
    conn = ServerConnection(max_message_size=1 << 20)
    events = _run(conn, pieces)
    errors = [e for e in events if isinstance(e, ev.ProtocolError)]
    if errors:
        assert conn.state == State.CLOSED and errors[0].reason


# ----------------------------------------------------------------------------- FLV headers


def test_composition_time_is_signed_24_bit() -> None:
    from media import flv

    body = b"\x27\x01\xff\xff\xde" + b"nal"  # CTS -34 ms
    info = flv.parse_video_header(body)
    assert info.cts == -34 and not info.keyframe and info.data_offset == 5
    enhanced = bytes([0x80 | (1 << 4) | 1]) + b"hvc1" + b"\xff\xff\xde" + b"nal"
    einfo = flv.parse_video_header(enhanced)
    assert einfo.enhanced and einfo.keyframe and einfo.cts == -34 and einfo.codec == "hvc1"
    x = bytes([0x80 | (2 << 4) | 3]) + b"av01" + b"obu"  # CodedFramesX: no CTS field
    xinfo = flv.parse_video_header(x)
    assert xinfo.cts == 0 and xinfo.data_offset == 5 and not xinfo.keyframe
    # legacy HEVC id 12 is recognised
    assert flv.parse_video_header(b"\x1c\x00\x00\x00\x00").codec == "hvc1"


def test_frame_keeps_signed_cts_through_flv_and_rtmp() -> None:
    from media.frame import Frame, Kind

    f = Frame.from_payload(Kind.VIDEO, 1000, b"\x27\x01\xff\xff\xde" + b"x" * 10)
    assert f.cts == -34 and f.pts == 966
    (m,) = C.ChunkReader().feed(f.rtmp_message(65536))
    assert m.payload[2:5] == b"\xff\xff\xde" and m.timestamp == 1000


@given(st.binary(max_size=64))
def test_flv_header_parsers_only_raise_flv_error(data: bytes) -> None:
    from media import flv
    from media.errors import FLVError

    for parse in (flv.parse_video_header, flv.parse_audio_header):
        try:
            parse(data)
        except FLVError:
            pass


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_flv_demuxer_on_garbage_whole_or_split(data: bytes, step: int) -> None:
    from media import flv
    from media.errors import FLVError

    for pieces in ([data], [data[i : i + step] for i in range(0, len(data), step)]):
        d = flv.FlvDemuxer()
        try:
            for p in pieces:
                d.feed(p)
        except FLVError:
            pass


def test_flv_demuxer_round_trip_bytewise() -> None:
    from media import flv

    tags = [
        (9, 0, b"\x17\x00\x00\x00\x00abc"),
        (8, 0, b"\xaf\x00\x12\x10"),
        (9, 0x1234567, b"\x27\x01" + bytes(300)),
    ]
    wire = flv.file_header(True, True) + b"".join(flv.tag(t, ts, b) for t, ts, b in tags)
    for pieces in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        d = flv.FlvDemuxer()
        out = [x for p in pieces for x in d.feed(p)]
        assert out[0] == flv.FlvHeader(True, True)
        assert [(t.tag_type, t.timestamp, t.body) for t in out[1:]] == tags


def test_replies_after_a_violation_are_dropped_and_misuse_raises() -> None:
    from media.errors import LocalProtocolError

    conn = ServerConnection(max_message_size=1000)
    with pytest.raises(LocalProtocolError):
        conn.accept_connect(1.0)  # before the handshake: our bug
    conn.receive_data(client_hello() + b"\x00" * 1536)
    connect = C.encode_message(
        3, C.COMMAND_AMF0, 0, 0, amf.encode_amf0("connect", 1.0, {"app": "a"}), 128
    )
    events = conn.receive_data(connect + b"\x03\x00\x00\x00\x7f\xff\xff\x14\x00\x00\x00\x00")
    assert isinstance(events[0], ev.Connect) and isinstance(events[-1], ev.ProtocolError)
    conn.accept_connect(1.0)  # the shell answers the earlier event: dropped, no exception
    assert conn.data_to_send() == b"" or conn.state == State.CLOSED
