"""The stamp and the probe's chunked-transfer reader, fed whole and in any pieces.

.venv/bin/pytest -q bench/latency
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.latency.probe import Dechunker
from bench.latency.publisher import _is_header
from bench.latency.run import split_probes, summary
from bench.latency.stamp import NAL_SIZE, is_avc_nalu_tag, read_stamp, sei, stamp
from media import flv

NOW_US = st.integers(10**15, 10**16 - 1)


@given(NOW_US, st.binary(min_size=1, max_size=300), st.sampled_from([0x17, 0x27]))
def test_a_stamp_reads_back_and_keeps_the_frame(wall_us: int, nalus: bytes, b0: int) -> None:
    body = bytes((b0, 1, 0, 0, 0)) + nalus
    assert is_avc_nalu_tag(body)
    stamped = stamp(body, wall_us)
    assert read_stamp(stamped) == wall_us
    # the stamp is one length-prefixed NAL unit in front; the frame's own units follow
    assert int.from_bytes(stamped[5:9], "big") == NAL_SIZE == len(sei(wall_us))
    assert stamped[9 + NAL_SIZE :] == nalus and stamped[:5] == body[:5]
    assert b"\x00\x00" not in sei(wall_us)  # nothing an emulation-prevention byte would fix


@given(st.binary(max_size=400))
def test_read_stamp_never_raises_and_finds_nothing_in_plain_frames(data: bytes) -> None:
    got = read_stamp(data)
    assert got is None or b"berrylive-g2g-v1" in data


def test_sequence_headers_and_other_codecs_are_not_stamped() -> None:
    assert not is_avc_nalu_tag(b"\x17\x00\x00\x00\x00\x01\x64")  # AVC sequence header
    assert not is_avc_nalu_tag(b"\x2c\x01\x00\x00\x00abc")  # not H.264
    assert _is_header(flv.FlvTag(9, 0, b"\x17\x00\x00\x00\x00\x01"))
    assert _is_header(flv.FlvTag(8, 0, b"\xaf\x00\x12\x10"))
    assert not _is_header(flv.FlvTag(8, 0, b"\xaf\x01\x00"))


def _chunked(payload: bytes, sizes: list[int]) -> bytes:
    out, pos = bytearray(), 0
    for size in sizes:
        part = payload[pos : pos + size]
        pos += len(part)
        if part:
            out += b"%x\r\n" % len(part) + part + b"\r\n"
    if pos < len(payload):
        out += b"%x;ext=1\r\n" % (len(payload) - pos) + payload[pos:] + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


@given(
    st.binary(max_size=2000),
    st.lists(st.integers(1, 700), max_size=8),
    st.lists(st.integers(1, 97), min_size=1, max_size=20),
)
def test_dechunker_joins_any_split(payload: bytes, sizes: list[int], cuts: list[int]) -> None:
    wire = _chunked(payload, sizes)
    d = Dechunker()
    out, pos, i = bytearray(), 0, 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += d.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert bytes(out) == payload


def test_probes_split_between_protocols_and_percentiles() -> None:
    assert split_probes(2, 8) == (1, 1)
    assert split_probes(1, 8) == (1, 0)
    assert split_probes(1000, 8) == (4, 4)
    s = summary([float(x) for x in range(1, 101)])
    assert (s["n"], s["p50"], s["p99"], s["max"]) == (100, 51.0, 100.0, 100.0)
    assert summary([])["p50"] is None
