"""FLV: file header, tags, audio/video tag headers (legacy and Enhanced RTMP), a demuxer.

The tag body is the RTMP message payload unchanged: an RTMP audio/video/data message
becomes an FLV tag by adding the 11-byte tag header and the 4-byte previous-tag-size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from media.errors import FLVError

TAG_AUDIO = 8
TAG_VIDEO = 9
TAG_SCRIPT = 18

FILE_HEADER_SIZE = 9
TAG_HEADER_SIZE = 11
MAX_TAG_SIZE = 0xFFFFFF  # the data size field is 24 bits

# Legacy video codec ids
CODEC_AVC = 7
CODEC_HEVC_LEGACY = 12  # pre-enhanced-RTMP encoders labelled HEVC so
CODEC_AV1_LEGACY = 13

# Audio sound formats
SOUND_AAC = 10
SOUND_EX_HEADER = 9  # Enhanced RTMP audio


class VideoPacketType(IntEnum):
    """Enhanced RTMP video packet types."""

    SEQUENCE_START = 0
    CODED_FRAMES = 1
    SEQUENCE_END = 2
    CODED_FRAMES_X = 3
    METADATA = 4
    MPEG2TS_SEQUENCE_START = 5
    MULTITRACK = 6
    MODEX = 7


FRAME_KEY = 1
FRAME_INTER = 2
FRAME_DISPOSABLE = 3
FRAME_GENERATED_KEY = 4
FRAME_COMMAND = 5


def file_header(has_audio: bool, has_video: bool) -> bytes:
    """The 9-byte FLV header plus PreviousTagSize0 (13 bytes)."""
    flags = (0x04 if has_audio else 0) | (0x01 if has_video else 0)
    return b"FLV\x01" + bytes([flags]) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x00"


def tag(tag_type: int, timestamp: int, body: bytes) -> bytes:
    """One FLV tag with its trailing PreviousTagSize; ``timestamp`` in ms (32-bit)."""
    size = len(body)
    if size > MAX_TAG_SIZE:
        raise FLVError(f"FLV tag body of {size} bytes exceeds 16 MiB")
    ts = timestamp & 0xFFFFFFFF
    header = struct.pack(
        ">BHBHBBHB",
        tag_type,
        size >> 8,
        size & 0xFF,
        (ts >> 8) & 0xFFFF,
        ts & 0xFF,
        (ts >> 24) & 0xFF,
        0,
        0,
    )
    return header + body + struct.pack(">I", TAG_HEADER_SIZE + size)


@dataclass(frozen=True, slots=True)
class VideoTagInfo:
    frame_type: int
    codec: str
    """``avc1``, ``hvc1``, ``av01``, ``vp09``... (FourCC; legacy ids mapped)."""
    codec_id: int
    """Legacy codec id, or 0 for Enhanced RTMP."""
    enhanced: bool
    sequence_header: bool
    sequence_end: bool
    keyframe: bool
    cts: int
    """Composition time offset (signed, ms)."""
    data_offset: int
    """Offset in the body where the codec data (config record or NALUs) begins."""
    command: bool = False


_LEGACY_VIDEO = {2: "h263", 3: "scr1", 4: "vp6f", 5: "vp6a", 6: "scr2", 7: "avc1"}
_LEGACY_VIDEO[CODEC_HEVC_LEGACY] = "hvc1"
_LEGACY_VIDEO[CODEC_AV1_LEGACY] = "av01"


def _si24(b: bytes | memoryview, off: int) -> int:
    v = (b[off] << 16) | (b[off + 1] << 8) | b[off + 2]
    return v - 0x1000000 if v & 0x800000 else v


def parse_video_header(body: bytes | memoryview) -> VideoTagInfo:
    """Classify a video tag body; raise :class:`FLVError` when it is too short."""
    if len(body) < 1:
        raise FLVError("empty video tag")
    b0 = body[0]
    if b0 & 0x80:  # Enhanced RTMP
        if len(body) < 5:
            raise FLVError("enhanced video tag shorter than its FourCC")
        frame_type = (b0 >> 4) & 0x07
        packet_type = b0 & 0x0F
        fourcc = bytes(body[1:5]).decode("latin-1")
        cts = 0
        offset = 5
        if packet_type == VideoPacketType.CODED_FRAMES and fourcc in ("avc1", "hvc1"):
            if len(body) < 8:
                raise FLVError("enhanced CodedFrames tag shorter than its CTS")
            cts = _si24(body, 5)
            offset = 8
        command = frame_type == FRAME_COMMAND
        return VideoTagInfo(
            frame_type=frame_type,
            codec=fourcc,
            codec_id=0,
            enhanced=True,
            sequence_header=packet_type
            in (VideoPacketType.SEQUENCE_START, VideoPacketType.MPEG2TS_SEQUENCE_START),
            sequence_end=packet_type == VideoPacketType.SEQUENCE_END,
            keyframe=frame_type == FRAME_KEY
            and packet_type in (VideoPacketType.CODED_FRAMES, VideoPacketType.CODED_FRAMES_X),
            cts=cts,
            data_offset=offset,
            command=command,
        )
    frame_type = b0 >> 4
    codec_id = b0 & 0x0F
    codec = _LEGACY_VIDEO.get(codec_id, f"id{codec_id}")
    if codec_id in (CODEC_AVC, CODEC_HEVC_LEGACY, CODEC_AV1_LEGACY):
        if len(body) < 5:
            raise FLVError(f"{codec} video tag shorter than 5 bytes")
        packet_type = body[1]
        return VideoTagInfo(
            frame_type=frame_type,
            codec=codec,
            codec_id=codec_id,
            enhanced=False,
            sequence_header=packet_type == 0,
            sequence_end=packet_type == 2,
            keyframe=frame_type == FRAME_KEY and packet_type == 1,
            cts=_si24(body, 2),
            data_offset=5,
            command=frame_type == FRAME_COMMAND,
        )
    return VideoTagInfo(
        frame_type=frame_type,
        codec=codec,
        codec_id=codec_id,
        enhanced=False,
        sequence_header=False,
        sequence_end=False,
        keyframe=frame_type == FRAME_KEY,
        cts=0,
        data_offset=1,
        command=frame_type == FRAME_COMMAND,
    )


@dataclass(frozen=True, slots=True)
class AudioTagInfo:
    sound_format: int
    codec: str
    sequence_header: bool
    data_offset: int
    rate_index: int = 0
    stereo: bool = False


_SOUND = {0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm_le", 7: "alaw", 8: "mulaw", 10: "mp4a"}
_SOUND.update({11: "speex", 14: "mp3_8k"})


def parse_audio_header(body: bytes | memoryview) -> AudioTagInfo:
    if len(body) < 1:
        raise FLVError("empty audio tag")
    b0 = body[0]
    fmt = b0 >> 4
    if fmt == SOUND_EX_HEADER:
        if len(body) < 5:
            raise FLVError("enhanced audio tag shorter than its FourCC")
        packet_type = b0 & 0x0F
        return AudioTagInfo(
            sound_format=fmt,
            codec=bytes(body[1:5]).decode("latin-1"),
            sequence_header=packet_type == 0,
            data_offset=5,
        )
    if fmt == SOUND_AAC:
        if len(body) < 2:
            raise FLVError("AAC audio tag shorter than 2 bytes")
        return AudioTagInfo(
            fmt, "mp4a", body[1] == 0, 2, rate_index=(b0 >> 2) & 3, stereo=bool(b0 & 1)
        )
    return AudioTagInfo(
        fmt, _SOUND.get(fmt, f"fmt{fmt}"), False, 1, rate_index=(b0 >> 2) & 3, stereo=bool(b0 & 1)
    )


@dataclass(frozen=True, slots=True)
class FlvHeader:
    has_audio: bool
    has_video: bool


@dataclass(frozen=True, slots=True)
class FlvTag:
    tag_type: int
    timestamp: int
    body: bytes


class FlvDemuxer:
    """Sans-I/O FLV reader: ``feed(bytes)`` returns the header and tags completed so far."""

    def __init__(self, max_tag_size: int = MAX_TAG_SIZE) -> None:
        self._buf = bytearray()
        self._header_done = False
        self._max_tag_size = max_tag_size

    def feed(self, data: bytes | bytearray | memoryview) -> list[FlvHeader | FlvTag]:
        self._buf += data
        out: list[FlvHeader | FlvTag] = []
        buf = self._buf
        pos = 0
        if not self._header_done:
            if len(buf) < FILE_HEADER_SIZE + 4:
                return out
            if bytes(buf[:3]) != b"FLV":
                raise FLVError("not an FLV stream (missing 'FLV' signature)")
            offset = struct.unpack_from(">I", buf, 5)[0]
            if offset < FILE_HEADER_SIZE or offset > 1024:
                raise FLVError(f"implausible FLV header size {offset}")
            if len(buf) < offset + 4:
                return out
            out.append(FlvHeader(bool(buf[4] & 0x04), bool(buf[4] & 0x01)))
            pos = offset + 4
            self._header_done = True
        n = len(buf)
        while n - pos >= TAG_HEADER_SIZE:
            tag_type = buf[pos] & 0x1F
            size = (buf[pos + 1] << 16) | (buf[pos + 2] << 8) | buf[pos + 3]
            if size > self._max_tag_size:
                raise FLVError(f"FLV tag of {size} bytes exceeds the limit")
            end = pos + TAG_HEADER_SIZE + size + 4
            if end > n:
                break
            ts = (buf[pos + 4] << 16) | (buf[pos + 5] << 8) | buf[pos + 6] | (buf[pos + 7] << 24)
            body = bytes(buf[pos + TAG_HEADER_SIZE : pos + TAG_HEADER_SIZE + size])
            if buf[pos] & 0x20:
                raise FLVError("encrypted FLV tags are not supported")
            out.append(FlvTag(tag_type, ts, body))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
