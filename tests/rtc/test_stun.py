"""STUN codec: RFC 5769 test vectors, aioice (an independent implementation) reads what we
write and we read what it writes, round-trips, and garbage never raises anything but
StunError."""

from __future__ import annotations

import os

import pytest
from aioice import stun as aioice_stun
from hypothesis import given
from hypothesis import strategies as st

from media.webrtc import stun

# RFC 5769 2.1: sample request, short-term credentials (password "VOkJxbRl1RmTxUk/WvJxBt").
RFC5769_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
RFC5769_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
# RFC 5769 2.2: sample IPv4 response (192.0.2.1:32853).
RFC5769_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)


def test_rfc5769_request() -> None:
    message = stun.parse(RFC5769_REQUEST)
    assert (message.method, message.cls) == (stun.BINDING, stun.CLASS_REQUEST)
    assert message.username == "evtj:h6vY"
    assert message.has_fingerprint
    assert message.check_integrity(RFC5769_PASSWORD)
    assert not message.check_integrity(b"wrong")
    assert message.get(stun.ATTR_PRIORITY) == bytes.fromhex("6e0001ff")


def test_rfc5769_response() -> None:
    message = stun.parse(RFC5769_RESPONSE)
    assert message.cls == stun.CLASS_SUCCESS
    assert message.check_integrity(RFC5769_PASSWORD)
    value = message.get(stun.ATTR_XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.decode_xor_address(value, message.transaction_id) == ("192.0.2.1", 32853)
    # SOFTWARE is padded with spaces in the vector (padding is arbitrary): re-encoded with
    # zero padding, the integrity we compute over it must be what aioice computes
    rebuilt = stun.build(
        stun.BINDING,
        stun.CLASS_SUCCESS,
        message.transaction_id,
        message.attributes,
        integrity_key=RFC5769_PASSWORD,
        fingerprint=True,
    )
    ours = stun.parse(rebuilt)
    assert ours.integrity == aioice_stun.message_integrity(
        rebuilt[: len(rebuilt) - 24 - 8], RFC5769_PASSWORD
    )


def test_fingerprint_mismatch_and_truncation_are_errors() -> None:
    broken = RFC5769_REQUEST[:-1] + bytes([RFC5769_REQUEST[-1] ^ 1])
    with pytest.raises(stun.StunError):
        stun.parse(broken)
    for cut in range(len(RFC5769_REQUEST)):
        with pytest.raises(stun.StunError):
            stun.parse(RFC5769_REQUEST[:cut])
    with pytest.raises(stun.StunError):
        stun.parse(RFC5769_REQUEST + b"\x00\x00\x00\x00")  # trailing bytes


def test_aioice_reads_our_response_and_we_read_its_request() -> None:
    tid = os.urandom(12)
    ours = stun.build(
        stun.BINDING,
        stun.CLASS_SUCCESS,
        tid,
        [(stun.ATTR_XOR_MAPPED_ADDRESS, stun.encode_xor_address("2001:db8::7", 4242, tid))],
        integrity_key=b"secretpassword",
        fingerprint=True,
    )
    theirs = aioice_stun.parse_message(ours)
    assert theirs.transaction_id == tid
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == ("2001:db8::7", 4242)
    assert theirs.attributes["MESSAGE-INTEGRITY"] == aioice_stun.message_integrity(
        ours[: len(ours) - 24 - 8], b"secretpassword"
    )

    request = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
    )
    request.attributes["USERNAME"] = "abcd:efgh"
    request.attributes["PRIORITY"] = 12345
    request.attributes["USE-CANDIDATE"] = None
    request.attributes["ICE-CONTROLLING"] = 99
    request.add_message_integrity(b"pw")
    request.add_fingerprint()
    message = stun.parse(bytes(request))
    assert message.username == "abcd:efgh"
    assert message.has(stun.ATTR_USE_CANDIDATE)
    assert message.check_integrity(b"pw")
    assert message.has_fingerprint


attribute = st.tuples(
    st.integers(0, 0xFFFF).filter(
        lambda t: t not in (stun.ATTR_MESSAGE_INTEGRITY, stun.ATTR_FINGERPRINT)
    ),
    st.binary(max_size=64),
)


@given(
    cls=st.sampled_from([0, 1, 2, 3]),
    method=st.integers(0, 0xFF),  # RFC 7983: first byte 0-3
    tid=st.binary(min_size=12, max_size=12),
    attrs=st.lists(attribute, max_size=10),
    key=st.one_of(st.none(), st.binary(max_size=40)),
    fingerprint=st.booleans(),
)
def test_round_trip(
    cls: int,
    method: int,
    tid: bytes,
    attrs: list[tuple[int, bytes]],
    key: bytes | None,
    fingerprint: bool,
) -> None:
    data = stun.build(method, cls, tid, attrs, integrity_key=key, fingerprint=fingerprint)
    assert stun.is_stun(data)
    message = stun.parse(data)
    assert (message.method, message.cls, message.transaction_id) == (method, cls, tid)
    assert list(message.attributes) == attrs
    assert message.has_fingerprint == fingerprint
    if key is not None:
        assert message.check_integrity(key)
        assert not message.check_integrity(key + b"x")
    else:
        assert not message.check_integrity(b"")
    if key is None and not fingerprint:
        assert bytes(message) == data


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    try:
        message = stun.parse(data)
    except stun.StunError:
        return
    message.check_integrity(b"k")


@given(st.binary(min_size=1, max_size=100), st.integers(0, 99))
def test_mutated_valid_messages_never_crash(noise: bytes, position: int) -> None:
    data = bytearray(RFC5769_REQUEST)
    for i, b in enumerate(noise):
        data[(position + i) % len(data)] ^= b
    try:
        stun.parse(bytes(data))
    except stun.StunError:
        pass


@given(
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 65535),
    st.binary(min_size=12, max_size=12),
)
def test_xor_address_round_trip(ip: object, port: int, tid: bytes) -> None:
    value = stun.encode_xor_address(str(ip), port, tid)
    mapped = getattr(ip, "ipv4_mapped", None)  # an IPv4 peer on a dual-stack socket
    assert stun.decode_xor_address(value, tid) == (str(mapped or ip), port)


def test_methods_above_0xff_parse_but_are_not_demuxed_as_stun() -> None:
    data = stun.build(0xABC, stun.CLASS_REQUEST, bytes(12))
    assert stun.parse(data).method == 0xABC
    assert not stun.is_stun(data)


def test_error_code_round_trip() -> None:
    assert stun.decode_error_code(stun.encode_error_code(487, "Role Conflict")) == (
        487,
        "Role Conflict",
    )
