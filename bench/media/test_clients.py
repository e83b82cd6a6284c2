"""The benchmark viewers' stream scanners, fed whole, byte by byte and in odd pieces.

.venv/bin/pytest -q bench/media
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.media.clients import (
    _SHARED,
    HttpFlvViewer,
    PlayTarget,
    RtmpViewer,
    Viewer,
    _is_video_keyframe,
    _rtmp_message,
)
from bench.media.loadgen import percentile


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def flv_tag(tag_type: int, ts: int, body: bytes) -> bytes:
    head = bytes([tag_type]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big")
    head += bytes([ts >> 24]) + b"\x00\x00\x00"
    return head + body + (11 + len(body)).to_bytes(4, "big")


FLV_HEADER = b"FLV\x01\x05\x00\x00\x00\x09" + b"\x00\x00\x00\x00"
STREAM = (
    FLV_HEADER
    + flv_tag(18, 0, b"\x02\x00\x0aonMetaData" + b"\x05")
    + flv_tag(9, 0, b"\x17\x00\x00\x00\x00" + b"avcC" * 10)  # sequence header: not a picture
    + flv_tag(8, 0, b"\xaf\x00\x12\x10")
    + flv_tag(9, 33, b"\x27\x01\x00\x00\x00" + b"P" * 300)  # inter frame
    + flv_tag(8, 21, b"")  # an empty tag (body shorter than what the scanner peeks at)
    + flv_tag(9, 66, b"\x17\x01\x00\x00\x00" + b"I" * 5000)  # the keyframe
)
KEYFRAME_OFFSET = STREAM.index(b"\x17\x01") - 11


def http_response(chunked: bool, body: bytes, piece: int = 777) -> bytes:
    if not chunked:
        return b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n\r\n" + body
    out = bytearray(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return bytes(out)


def feed(proto: Any, data: bytes, step: int) -> None:
    for i in range(0, len(data), step):
        piece = data[i : i + step]
        _SHARED.view[: len(piece)] = piece
        proto.buffer_updated(len(piece))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_http_flv_viewer_finds_the_keyframe(chunked: bool, step: int) -> None:
    viewer = Viewer(0)
    proto = HttpFlvViewer(viewer, "127.0.0.1:1", "/live/x.flv")
    transport = FakeTransport()
    proto.connection_made(transport)
    assert transport.written.startswith(b"GET /live/x.flv HTTP/1.1\r\n")
    data = http_response(chunked, STREAM)
    feed(proto, data, step)
    assert viewer.error is None and not transport.aborted
    assert proto.counting and viewer.first_keyframe is not None
    assert viewer.first_media is not None and viewer.nbytes == len(data)


def test_http_flv_viewer_without_keyframe_keeps_scanning() -> None:
    viewer = Viewer(0)
    proto = HttpFlvViewer(viewer, "h", "/x.flv")
    proto.connection_made(FakeTransport())
    feed(proto, http_response(True, STREAM[: KEYFRAME_OFFSET + 12]), 3)
    assert not proto.counting and viewer.first_keyframe is None and viewer.error is None


def test_http_error_status_fails_the_viewer() -> None:
    viewer = Viewer(0)
    proto = HttpFlvViewer(viewer, "h", "/x.flv")
    transport = FakeTransport()
    proto.connection_made(transport)
    feed(proto, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 5)
    assert viewer.error is not None and "404" in viewer.error and transport.aborted


def rtmp_server_bytes(chunk_size: int) -> bytes:
    s0s1s2 = b"\x03" + bytes(1536) + bytes(1536)
    out = bytearray(s0s1s2)
    out += _rtmp_message(2, 5, 0, (2_500_000).to_bytes(4, "big"))  # window ack size
    out += _rtmp_message(2, 1, 0, chunk_size.to_bytes(4, "big"))  # set chunk size
    out += _rtmp_message(2, 4, 0, b"\x00\x06" + b"\x00\x00\x01\x00")  # ping request
    out += _rtmp_message(3, 20, 0, b"\x02\x00\x07_result" + bytes(40), chunk_size)
    out += _rtmp_message(6, 9, 1, b"\x17\x00" + b"s" * 40, chunk_size)  # sequence header
    out += _rtmp_message(4, 8, 1, b"\xaf\x01" + b"a" * 300, chunk_size)
    out += _rtmp_message(6, 9, 1, b"\x27\x01" + b"p" * 9000, chunk_size)
    out += _rtmp_message(6, 9, 1, b"\x17\x01" + b"k" * 9000, chunk_size)
    return bytes(out)


@pytest.mark.parametrize("step", [1, 100, 1 << 20])
def test_rtmp_viewer_handshake_commands_and_keyframe(step: int) -> None:
    viewer = Viewer(0)
    proto = RtmpViewer(viewer, "127.0.0.1", 1935, "live", "x")
    transport = FakeTransport()
    proto.connection_made(transport)
    assert transport.written[:1] == b"\x03" and len(transport.written) == 1537
    data = rtmp_server_bytes(4096)
    feed(proto, data, step)
    assert viewer.error is None, viewer.error
    assert proto.counting and viewer.first_keyframe is not None
    sent = bytes(transport.written)
    assert b"connect" in sent and b"createStream" in sent and b"play" in sent
    assert b"\x00\x07\x00\x00\x01\x00" in sent  # ping response echoes the timestamp


def test_rtmp_viewer_sends_acknowledgements() -> None:
    viewer = Viewer(0)
    proto = RtmpViewer(viewer, "127.0.0.1", 1935, "live", "x")
    transport = FakeTransport()
    proto.connection_made(transport)
    feed(proto, rtmp_server_bytes(128), 65536)
    before = len(transport.written)
    feed(proto, bytes(3_000_000), 65536)  # counting phase: only bytes and acks
    acks = bytes(transport.written[before:])
    assert acks.count(b"\x02\x00\x00\x00\x00\x00\x04\x03") >= 2


def test_keyframe_classification() -> None:
    assert _is_video_keyframe(0x17, 1) and not _is_video_keyframe(0x17, 0)
    assert not _is_video_keyframe(0x27, 1)
    assert _is_video_keyframe(0x90 | 1, None)  # enhanced: key frame, CodedFrames
    assert not _is_video_keyframe(0x90, None)  # enhanced: sequence start


def test_targets_and_percentiles() -> None:
    assert PlayTarget.from_url("rtmp://127.0.0.1:1936/live/s") == PlayTarget(
        "rtmp", "127.0.0.1", 1936, "/live/s"
    )
    assert PlayTarget.from_url("http://h:81/live/s.flv?a=1").path == "/live/s.flv?a=1"
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2 and percentile(list(range(1, 101)), 99) == 99
