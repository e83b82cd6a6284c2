"""Fuzzing FLV (media.flv) beyond random bytes (tests/media/test_rtmp_core.py): a stream
of tags muxed with ``flv.tag`` and cut anywhere demuxes to the same tags; a muxed stream
mutated anywhere raises only FLVError (or gives tags within the size bound); the tag
header parsers take any mutation of a real video/audio tag body."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media import flv
from media.errors import FLVError
from tests.fuzz.budget import fuzz

VIDEO_BODIES = [
    b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f\xff\xe1\x00\x04abcd\x01\x00\x02ef",  # AVC config
    b"\x27\x01\xff\xff\xde" + b"nal",  # inter, CTS -34
    bytes([0x80 | (1 << 4) | 1]) + b"hvc1" + b"\x00\x00\x21" + b"nal",  # enhanced HEVC
    bytes([0x80 | (2 << 4) | 3]) + b"av01" + b"obu",  # enhanced AV1, CodedFramesX
]
AUDIO_BODIES = [b"\xaf\x00\x12\x10", b"\xaf\x01" + bytes(20), b"\x2f" + bytes(10)]

tags = st.lists(
    st.tuples(
        st.sampled_from([8, 9, 18]),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=600),
    ),
    max_size=10,
)


def muxed(items: list[tuple[int, int, bytes]]) -> bytes:
    return flv.file_header(True, True) + b"".join(flv.tag(t, ts, body) for t, ts, body in items)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@fuzz(300)
@given(tags, st.lists(st.integers(0, 2**16), max_size=10))
def test_muxed_tags_demux_the_same_whatever_the_cuts(
    items: list[tuple[int, int, bytes]], points: list[int]
) -> None:
    d = flv.FlvDemuxer()
    out = [x for piece in cut(muxed(items), points) for x in d.feed(piece)]
    assert isinstance(out[0], flv.FlvHeader)
    got = [(x.tag_type, x.timestamp, x.body) for x in out[1:] if isinstance(x, flv.FlvTag)]
    assert got == items


@fuzz(400)
@given(tags, st.data())
def test_mutated_streams_raise_only_flv_error(
    items: list[tuple[int, int, bytes]], data: st.DataObject
) -> None:
    buf = bytearray(muxed(items))
    for _ in range(data.draw(st.integers(1, 5))):
        if not buf:  # the deletes ate it all
            break
        pos = data.draw(st.integers(0, len(buf) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "flip":
            buf[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[pos : pos + data.draw(st.integers(1, 8))]
    d = flv.FlvDemuxer(max_tag_size=4096)
    try:
        for piece in cut(bytes(buf), data.draw(st.lists(st.integers(0, 2**16), max_size=5))):
            for x in d.feed(piece):
                if isinstance(x, flv.FlvTag):
                    assert len(x.body) <= 4096
    except FLVError:
        pass


@fuzz(400)
@given(st.sampled_from(VIDEO_BODIES + AUDIO_BODIES), st.data())
def test_tag_header_parsers_take_any_mutation(body: bytes, data: st.DataObject) -> None:
    buf = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if buf and data.draw(st.booleans()):
            buf[pos] ^= data.draw(st.integers(1, 255))
        else:
            del buf[pos:]
    for parse in (flv.parse_video_header, flv.parse_audio_header):
        try:
            info = parse(bytes(buf))
        except FLVError:
            continue
        offset = getattr(info, "data_offset", 0)
        assert 0 <= offset <= len(buf)
