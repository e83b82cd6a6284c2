"""Fuzzing AMF0/AMF3 (media.amf) beyond random bytes (tests/media/test_rtmp_core.py):
every AMF0 value the relay can meet round-trips through encode/decode; valid encodings
mutated anywhere (AMF0 values, AMF3 values with string/object/trait references) decode
or raise AMFError, and whatever decodes re-encodes within the output bound."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from media import amf
from media.errors import AMFError
from tests.fuzz.budget import fuzz

keys = st.text(min_size=1, max_size=12)  # an empty key is AMF0's object-end marker
scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(keys, inner, max_size=5)
        | st.dictionaries(keys, inner, max_size=5).map(amf.ECMAArray)
    ),
    max_leaves=25,
)

AMF3_SEEDS = [
    # {a: 1} with a string reference, a dynamic anonymous object
    b"\x0a\x0b\x01\x03a\x04\x01\x01",
    # an array [1, "x", "x"] (string reference), then an object reusing its trait
    b"\x09\x07\x01\x04\x01\x06\x03x\x06\x00",
    b"\x0a\x0b\x01\x03k\x06\x03v\x01\x0a\x01\x03k\x06\x03w\x01",
    # integers (1-4 byte U29), double, true/false/null/undefined, date
    b"\x04\x7f\x04\x81\x00\x04\xff\xff\xff\xff\x05\x3f\xf0\x00\x00\x00\x00\x00\x00\x03\x02\x01\x00"
    b"\x08\x01\x42\x70\x00\x00\x00\x00\x00\x00",
]


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(b, int | float) and (a == b or (math.isinf(a) and a == b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    return bool(a == b)


@fuzz(300)
@given(st.lists(values, min_size=1, max_size=4))
def test_amf0_values_round_trip(vals: list[Any]) -> None:
    decoded = amf.decode_amf0(amf.encode_amf0(*vals))
    assert len(decoded) == len(vals)
    for a, b in zip(vals, decoded, strict=True):
        assert same(a, b), (a, b)
        if isinstance(a, amf.ECMAArray):
            assert isinstance(b, amf.ECMAArray)


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 5))):
        if not buf:
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "flip":
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "set":  # a marker or length byte set to a boundary value
            buf[pos] = data.draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x03, 0x09, 0x0A]))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 6))]
        else:
            del buf[pos:]
    return bytes(buf)


def _decodes_or_refuses(decode: Any, raw: bytes) -> None:
    try:
        out = decode(raw)
    except AMFError:
        return
    try:
        encoded = amf.encode_amf0(*out)
    except (ValueError, TypeError):
        return
    assert len(encoded) <= amf.MAX_ENCODED


@fuzz(400)
@given(st.lists(values, min_size=1, max_size=3), st.data())
def test_mutated_amf0_decodes_or_raises_amf_error(vals: list[Any], data: st.DataObject) -> None:
    _decodes_or_refuses(amf.decode_amf0, _mutate(data, amf.encode_amf0(*vals)))


@fuzz(400)
@given(st.sampled_from(AMF3_SEEDS), st.data())
def test_mutated_amf3_decodes_or_raises_amf_error(seed: bytes, data: st.DataObject) -> None:
    amf.decode_amf3(seed)  # the seed itself is valid
    _decodes_or_refuses(amf.decode_amf3, _mutate(data, seed))
