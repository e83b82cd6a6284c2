"""Track descriptions (from FLV sequence headers) and the CMAF init segment.

``VideoTrack`` holds an ``avcC`` / ``hvcC`` record as the encoder wrote it (parsed once, to
check it and to read the picture size from the SPS); ``AudioTrack`` an AAC
AudioSpecificConfig. :func:`init_segment` writes ``ftyp`` + ``moov`` for any set of them.

Sample entries: ``avc1`` for H.264 and ``hvc1`` for HEVC (what Apple's HLS players
require; parameter sets repeated in-band stay in the samples and are harmless); ``mp4a``
with an ``esds`` for AAC. Timescales: video 90 000 (FLV's milliseconds map exactly), audio
the AAC sampling rate (one AAC frame = ``frame_length`` ticks).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from media import codecs, flv
from media.errors import LocalProtocolError
from media.fmp4.boxes import box, ftyp, full_box

__all__ = [
    "AUDIO_TRACK_ID",
    "VIDEO_SAMPLE_ENTRIES",
    "VIDEO_TIMESCALE",
    "VIDEO_TRACK_ID",
    "AudioTrack",
    "Track",
    "VideoTrack",
    "init_segment",
]

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2
VIDEO_TIMESCALE = 90_000
"""Video ticks per second: 90 per FLV millisecond, the MPEG convention HLS players expect."""

VIDEO_SAMPLE_ENTRIES = {"avc1": "avc1", "avc3": "avc1", "hvc1": "hvc1", "hev1": "hvc1"}
"""FLV / Enhanced-RTMP video FourCC -> the sample entry written for it."""
_MATRIX = struct.pack(">9i", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)
_LANGUAGE_UND = ((ord("u") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("d") - 0x60)


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """An H.264 or HEVC track. ``record`` is the ``avcC`` / ``hvcC`` body; ``width`` and
    ``height`` the cropped picture size from the SPS; ``sample_aspect_ratio`` from its VUI."""

    sample_entry_type: str
    record: bytes
    width: int
    height: int
    codec_string: str
    """RFC 6381 ``CODECS`` value for the playlist (``avc1.64001f``, ``hvc1.1.6.L93.B0``)."""
    nalu_length_size: int
    sample_aspect_ratio: tuple[int, int] | None = None
    track_id: int = VIDEO_TRACK_ID
    timescale: int = VIDEO_TIMESCALE

    @classmethod
    def from_record(cls, fourcc: str, record: bytes) -> VideoTrack:
        """A track from an FLV/Enhanced-RTMP FourCC (``avc1``, ``hvc1``...) and its record.
        Raises ``codecs.CodecError`` for an unsupported codec or a malformed record."""
        entry = VIDEO_SAMPLE_ENTRIES.get(fourcc)
        if entry is None:
            raise codecs.CodecError(f"fMP4: video codec {fourcc!r} is not supported")
        sar: tuple[int, int] | None
        if entry == "avc1":
            avc = codecs.AvcDecoderConfig.parse(record)
            sps = avc.parsed_sps()
            config = avc.video_config()
            sar = sps.sample_aspect_ratio
        else:
            hevc = codecs.HevcDecoderConfig.parse(record)
            hsps = hevc.parsed_sps()
            config = hevc.video_config("hvc1")
            sar = hsps.sample_aspect_ratio
        if not (0 < config.width <= 0xFFFF and 0 < config.height <= 0xFFFF):
            raise codecs.CodecError(f"fMP4: picture size {config.width}x{config.height}")
        if sar is not None and (sar[0] <= 0 or sar[1] <= 0 or sar[0] > 0xFFFF or sar[1] > 0xFFFF):
            sar = None
        return cls(
            sample_entry_type=entry,
            record=bytes(record),
            width=config.width,
            height=config.height,
            codec_string=config.codec,
            nalu_length_size=config.nalu_length_size or 4,
            sample_aspect_ratio=sar,
        )

    @classmethod
    def from_flv(cls, payload: bytes) -> VideoTrack:
        """A track from an FLV video sequence header tag body (legacy or Enhanced RTMP)."""
        info = flv.parse_video_header(payload)
        if not info.sequence_header:
            raise codecs.CodecError("fMP4: not a video sequence header")
        return cls.from_record(info.codec, payload[info.data_offset :])

    @property
    def display_width(self) -> int:
        sar = self.sample_aspect_ratio
        if sar is None or sar[0] == sar[1]:
            return self.width
        return max(1, min(0xFFFF, round(self.width * sar[0] / sar[1])))

    def sample_entry(self) -> bytes:
        config_box = b"avcC" if self.sample_entry_type == "avc1" else b"hvcC"
        extra = [box(config_box, self.record)]
        sar = self.sample_aspect_ratio
        if sar is not None and sar[0] != sar[1]:
            extra.append(box(b"pasp", struct.pack(">II", sar[0], sar[1])))
        return box(
            self.sample_entry_type.encode("ascii"),
            bytes(6),
            struct.pack(">H", 1),  # data_reference_index
            bytes(16),  # pre_defined, reserved, pre_defined[3]
            struct.pack(">HH", self.width, self.height),
            struct.pack(">II", 0x00480000, 0x00480000),  # 72 dpi
            bytes(4),
            struct.pack(">H", 1),  # frame_count
            bytes(32),  # compressorname
            struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
            *extra,
        )

    def trak(self) -> bytes:
        return _trak(
            self.track_id,
            self.timescale,
            b"vide",
            b"VideoHandler",
            full_box(b"vmhd", 0, 1, bytes(8)),
            self.sample_entry(),
            volume=0,
            width=self.display_width,
            height=self.height,
        )


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """An AAC track; ``asc`` is the AudioSpecificConfig. The timescale is the sampling
    rate of the AAC core (one frame of ``frame_length`` samples per FLV audio message)."""

    asc: bytes
    sample_rate: int
    channels: int
    frame_length: int
    codec_string: str
    """RFC 6381 ``CODECS`` value (``mp4a.40.2``, ``mp4a.40.5``...)."""
    track_id: int = AUDIO_TRACK_ID

    @property
    def timescale(self) -> int:
        return self.sample_rate

    @classmethod
    def from_asc(cls, asc: bytes) -> AudioTrack:
        """Raises ``codecs.CodecError`` for a malformed AudioSpecificConfig."""
        parsed = codecs.AudioSpecificConfig.parse(asc)
        if not 0 < parsed.sample_rate <= 0x7FFFFFFF:
            raise codecs.CodecError(f"fMP4: AAC sampling rate {parsed.sample_rate}")
        return cls(
            asc=bytes(asc),
            sample_rate=parsed.sample_rate,
            channels=parsed.output_channels or 2,
            frame_length=parsed.frame_length,
            codec_string=parsed.codec_string,
        )

    @classmethod
    def from_flv(cls, payload: bytes) -> AudioTrack:
        """A track from an FLV AAC sequence header tag body (legacy or Enhanced RTMP)."""
        info = flv.parse_audio_header(payload)
        if info.codec != "mp4a":
            raise codecs.CodecError(f"fMP4: audio codec {info.codec!r} is not supported")
        if not info.sequence_header:
            raise codecs.CodecError("fMP4: not an AAC sequence header")
        return cls.from_asc(payload[info.data_offset :])

    def esds(self) -> bytes:
        decoder_specific = _descriptor(0x05, self.asc)
        decoder_config = _descriptor(
            0x04,
            bytes((0x40, 0x15)),  # objectTypeIndication: MPEG-4 audio; streamType audio
            bytes(3),  # bufferSizeDB
            struct.pack(">II", 0, 0),  # maxBitrate, avgBitrate (unknown)
            decoder_specific,
        )
        sl_config = _descriptor(0x06, b"\x02")
        es = _descriptor(0x03, struct.pack(">HB", self.track_id, 0), decoder_config, sl_config)
        return full_box(b"esds", 0, 0, es)

    def sample_entry(self) -> bytes:
        # The 16.16 samplerate field cannot hold rates above 65535: 0 there, the timescale
        # and the AudioSpecificConfig still say it.
        rate = self.sample_rate if self.sample_rate <= 0xFFFF else 0
        return box(
            b"mp4a",
            bytes(6),
            struct.pack(">H", 1),  # data_reference_index
            bytes(8),
            struct.pack(">HHHH", min(self.channels, 0xFFFF), 16, 0, 0),
            struct.pack(">I", rate << 16),
            self.esds(),
        )

    def trak(self) -> bytes:
        return _trak(
            self.track_id,
            self.timescale,
            b"soun",
            b"SoundHandler",
            full_box(b"smhd", 0, 0, bytes(4)),
            self.sample_entry(),
            volume=0x0100,
            width=0,
            height=0,
        )


Track = VideoTrack | AudioTrack


def _descriptor(tag: int, *payload: bytes) -> bytes:
    """An MPEG-4 descriptor (ISO/IEC 14496-1 §8.3.3): tag, expandable size, payload."""
    size = sum(len(p) for p in payload)
    if size >= 1 << 28:
        raise LocalProtocolError(f"descriptor of {size} bytes")
    head = [size & 0x7F]
    size >>= 7
    while size:
        head.append(0x80 | (size & 0x7F))
        size >>= 7
    return b"".join((bytes((tag, *reversed(head))), *payload))


def _trak(
    track_id: int,
    timescale: int,
    handler: bytes,
    handler_name: bytes,
    media_header: bytes,
    sample_entry: bytes,
    *,
    volume: int,
    width: int,
    height: int,
) -> bytes:
    tkhd = full_box(
        b"tkhd",
        0,
        0x000003,  # track_enabled | track_in_movie
        struct.pack(">IIIII", 0, 0, track_id, 0, 0),  # times, id, reserved, duration
        bytes(8),
        struct.pack(">hhhH", 0, 0, volume, 0),  # layer, alternate_group, volume
        _MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, timescale, 0, _LANGUAGE_UND, 0))
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), handler, bytes(12), handler_name + b"\x00")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    empty = struct.pack(">I", 0)
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), sample_entry),
        full_box(b"stts", 0, 0, empty),
        full_box(b"stsc", 0, 0, empty),
        full_box(b"stsz", 0, 0, empty, empty),
        full_box(b"stco", 0, 0, empty),
    )
    minf = box(b"minf", media_header, dinf, stbl)
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf))


def init_segment(tracks: Sequence[Track]) -> bytes:
    """``ftyp`` + ``moov`` for ``tracks`` (track ids must differ): an empty sample table
    per track, and ``mvex``/``trex`` announcing that the samples come in fragments."""
    if not tracks:
        raise LocalProtocolError("an init segment needs at least one track")
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids) or min(ids) < 1:
        raise LocalProtocolError(f"track ids {ids} must be distinct and positive")
    mvhd = full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # times, timescale, duration
        struct.pack(">IHH", 0x00010000, 0x0100, 0),  # rate, volume, reserved
        bytes(8),
        _MATRIX,
        bytes(24),  # pre_defined
        struct.pack(">I", max(ids) + 1),  # next_track_ID
    )
    trex = [full_box(b"trex", 0, 0, struct.pack(">IIIII", t.track_id, 1, 0, 0, 0)) for t in tracks]
    moov = box(b"moov", mvhd, *(t.trak() for t in tracks), box(b"mvex", *trex))
    return ftyp(b"iso6", 0, (b"iso6", b"cmfc", b"iso5", b"mp41")) + moov
