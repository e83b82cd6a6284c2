"""Codec configuration parsing: H.264, HEVC, AV1 and AAC, plus Annex-B helpers.

Pure functions over ``bytes``; no I/O. What a sequence header in an FLV tag (or an MP4
sample entry) carries is parsed into frozen dataclasses:

* H.264: ``AvcDecoderConfig`` (avcC) and ``AvcSps`` (the sequence parameter set, read with
  exp-Golomb: size with cropping, interlacing, chroma format, bit depth, scaling lists,
  VUI timing);
* HEVC: ``HevcDecoderConfig`` (hvcC) and ``HevcSps`` (conformance window, profile / tier /
  level, short-term reference picture sets, VUI timing);
* AV1: ``Av1Config`` (av1C) and ``Av1SequenceHeader`` (the sequence header OBU);
* AAC: ``AudioSpecificConfig`` (object type with the escape, explicit sampling frequency,
  program config element, explicit and backward-compatible SBR / PS signalling).

``video_config(fourcc, record)`` and ``audio_config(asc)`` reduce these to ``VideoConfig`` /
``AudioConfig`` with an RFC 6381 codec string (``avc1.64001f``, ``hvc1.1.6.L93.B0``,
``av01.0.04M.08``, ``mp4a.40.2``), as used in HLS ``CODECS`` attributes.

Any malformed input raises ``CodecError`` (a ``ValueError``) with a message saying what was
being read; no ``IndexError`` or the like escapes.

Length: one idea, codec configuration records (AVC, HEVC, AV1, AAC) with their bit readers,
each a small parser; they are kept together because they share the bit reader, the error
type and the RFC 6381 naming, and nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AUDIO_OBJECT_TYPE_NAMES",
    "AacProgramConfig",
    "AudioConfig",
    "AudioSpecificConfig",
    "Av1Config",
    "Av1SequenceHeader",
    "AvcDecoderConfig",
    "AvcSps",
    "CodecError",
    "HevcDecoderConfig",
    "HevcNalArray",
    "HevcSps",
    "VideoConfig",
    "annexb_to_length_prefixed",
    "audio_config",
    "ensure_length_prefixed",
    "is_annexb",
    "length_prefixed_to_annexb",
    "split_annexb",
    "split_length_prefixed",
    "unescape_rbsp",
    "video_config",
]


class CodecError(ValueError):
    """A codec configuration record or bitstream is malformed or unsupported."""


# --------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------


class _ByteReader:
    """Bounds-checked big-endian reader over a byte string."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    @property
    def pos(self) -> int:
        return self._pos

    def _take(self, n: int, field: str) -> bytes:
        if n > self.remaining:
            raise CodecError(
                f"{self._what}: truncated reading {field} "
                f"(need {n} bytes at offset {self._pos}, have {self.remaining})"
            )
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self._take(size, field), "big")

    def u8(self, field: str) -> int:
        return self.uint(1, field)

    def u16(self, field: str) -> int:
        return self.uint(2, field)

    def read(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def rest(self) -> bytes:
        return self._take(self.remaining, "rest")


class _BitReader:
    """Bounds-checked MSB-first bit reader with exp-Golomb and AV1 leb128/uvlc codes."""

    __slots__ = ("_data", "_nbits", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._nbits = len(data) * 8
        self._pos = 0
        self._what = what

    @property
    def bits_left(self) -> int:
        return self._nbits - self._pos

    @property
    def bit_pos(self) -> int:
        return self._pos

    def _truncated(self, field: str, need: int) -> CodecError:
        return CodecError(
            f"{self._what}: truncated reading {field} "
            f"(need {need} bits at bit {self._pos}, have {self.bits_left})"
        )

    def u(self, n: int, field: str) -> int:
        """Read ``n`` bits as an unsigned integer (``n`` may be 0)."""
        if n == 0:
            return 0
        if n > self.bits_left:
            raise self._truncated(field, n)
        start = self._pos >> 3
        end = (self._pos + n + 7) >> 3
        chunk = int.from_bytes(self._data[start:end], "big")
        shift = (end << 3) - (self._pos + n)
        self._pos += n
        return (chunk >> shift) & ((1 << n) - 1)

    def flag(self, field: str) -> bool:
        return self.u(1, field) == 1

    def skip(self, n: int, field: str) -> None:
        if n > self.bits_left:
            raise self._truncated(field, n)
        self._pos += n

    def ue(self, field: str, maximum: int = 0xFFFFFFFE) -> int:
        """Unsigned exp-Golomb ``ue(v)``; values above ``maximum`` are an error."""
        zeros = 0
        while True:
            if self.bits_left < 1:
                raise self._truncated(field, 1)
            if self.u(1, field):
                break
            zeros += 1
            if zeros > 31:
                raise CodecError(f"{self._what}: exp-Golomb code for {field} is too long")
        value = (1 << zeros) - 1 + self.u(zeros, field)
        if value > maximum:
            raise CodecError(f"{self._what}: {field} = {value} out of range (max {maximum})")
        return value

    def se(self, field: str, limit: int = 1 << 31) -> int:
        """Signed exp-Golomb ``se(v)`` with ``|value| <= limit``."""
        k = self.ue(field, maximum=2 * limit)
        return (k + 1) // 2 if k & 1 else -(k // 2)

    def uvlc(self, field: str) -> int:
        """AV1 ``uvlc()``."""
        zeros = 0
        while True:
            if self.bits_left < 1:
                raise self._truncated(field, 1)
            if self.u(1, field):
                break
            zeros += 1
            if zeros > 32:
                raise CodecError(f"{self._what}: uvlc code for {field} is too long")
        if zeros >= 32:
            return (1 << 32) - 1
        return self.u(zeros, field) + (1 << zeros) - 1

    def byte_align(self) -> None:
        self._pos = min(self._nbits, (self._pos + 7) & ~7)


def _leb128(reader: _ByteReader, field: str) -> int:
    value = 0
    for i in range(8):
        byte = reader.u8(field)
        value |= (byte & 0x7F) << (i * 7)
        if not byte & 0x80:
            break
    else:
        raise CodecError(f"leb128 {field} is longer than 8 bytes")
    if value > 0xFFFFFFFF:
        raise CodecError(f"leb128 {field} = {value} exceeds 32 bits")
    return value


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (``00 00 03`` -> ``00 00``) from a NAL unit."""
    if b"\x00\x00\x03" not in nal:
        return nal
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


def _fmt_ratio(num: int, den: int) -> float | None:
    if num <= 0 or den <= 0:
        return None
    return num / den


# --------------------------------------------------------------------------------------
# Annex-B and length-prefixed NAL units
# --------------------------------------------------------------------------------------

START_CODE = b"\x00\x00\x00\x01"
_SHORT_START_CODE = b"\x00\x00\x01"


def is_annexb(data: bytes) -> bool:
    """True when ``data`` begins with an Annex-B start code (``00 00 01`` or ``00 00 00 01``).

    A length-prefixed buffer can look the same (a 1-byte NAL unit with a 4-byte length, or a
    256..511-byte unit with a 3-byte length); ``ensure_length_prefixed`` resolves that.
    """
    return data.startswith(_SHORT_START_CODE) or data.startswith(START_CODE)


def split_annexb(data: bytes) -> list[bytes]:
    """Split an Annex-B byte stream into NAL units (start codes and trailing zeros removed)."""
    if not is_annexb(data):
        raise CodecError("Annex-B: data does not begin with a start code")
    nalus: list[bytes] = []
    pos = data.index(_SHORT_START_CODE) + 3
    n = len(data)
    while pos <= n:
        nxt = data.find(_SHORT_START_CODE, pos)
        end = n if nxt < 0 else nxt
        nal = data[pos:end].rstrip(b"\x00")
        if nal:
            nalus.append(nal)
        if nxt < 0:
            break
        pos = nxt + 3
    return nalus


def _check_length_size(length_size: int) -> None:
    if length_size not in (1, 2, 3, 4):
        raise CodecError(f"NAL unit length size must be 1..4 bytes, not {length_size}")


def split_length_prefixed(data: bytes, length_size: int = 4) -> list[bytes]:
    """Split length-prefixed NAL units (AVCC/HVCC sample format); empty units are skipped."""
    _check_length_size(length_size)
    reader = _ByteReader(data, "length-prefixed NAL units")
    nalus: list[bytes] = []
    while reader.remaining:
        size = reader.uint(length_size, "NAL unit length")
        if size:
            nalus.append(reader.read(size, "NAL unit"))
    return nalus


def _join_length_prefixed(nalus: Iterable[bytes], length_size: int) -> bytes:
    _check_length_size(length_size)
    limit = (1 << (8 * length_size)) - 1
    parts: list[bytes] = []
    for nal in nalus:
        if len(nal) > limit:
            raise CodecError(
                f"NAL unit of {len(nal)} bytes does not fit a {length_size}-byte length"
            )
        parts.append(len(nal).to_bytes(length_size, "big"))
        parts.append(nal)
    return b"".join(parts)


def annexb_to_length_prefixed(data: bytes, length_size: int = 4) -> bytes:
    """Convert an Annex-B byte stream to length-prefixed NAL units."""
    return _join_length_prefixed(split_annexb(data), length_size)


def length_prefixed_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    """Convert length-prefixed NAL units to Annex-B with 4-byte start codes."""
    return b"".join(START_CODE + nal for nal in split_length_prefixed(data, length_size))


def ensure_length_prefixed(data: bytes, length_size: int = 4) -> bytes:
    """Return ``data`` as length-prefixed NAL units, converting from Annex-B if needed.

    Some encoders put Annex-B inside FLV video tags. A buffer that starts with a start
    code but also parses exactly as length-prefixed units whose headers have the forbidden
    bit clear is taken as length-prefixed (the ambiguous case is a 1-byte first NAL unit).
    """
    if not data or not is_annexb(data):
        return data
    try:
        nalus = split_length_prefixed(data, length_size)
    except CodecError:
        nalus = []
    if nalus and all(nal[0] & 0x80 == 0 for nal in nalus):
        return data
    return annexb_to_length_prefixed(data, length_size)


# --------------------------------------------------------------------------------------
# Common result types
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoConfig:
    """What a viewer-facing API or an HLS playlist needs to know about a video stream.

    ``profile`` and ``level`` are the codec's own numbers (H.264 ``profile_idc`` /
    ``level_idc``, HEVC ``general_profile_idc`` / ``general_level_idc``, AV1
    ``seq_profile`` / ``seq_level_idx``); ``chroma_format`` is 0 (monochrome), 1 (4:2:0),
    2 (4:2:2) or 3 (4:4:4).
    """

    codec: str
    width: int
    height: int
    fps: float | None
    profile: int
    level: int
    bit_depth: int
    chroma_format: int
    profile_name: str
    interlaced: bool = False
    nalu_length_size: int | None = None


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """An audio stream for APIs and playlists. ``sample_rate`` and ``channels`` are the
    decoder's output (with SBR / PS applied); ``object_type`` is the signalled AAC type."""

    codec: str
    sample_rate: int
    channels: int
    object_type: int
    sbr: bool = False
    ps: bool = False


# --------------------------------------------------------------------------------------
# H.264 / AVC
# --------------------------------------------------------------------------------------

AVC_NAL_SPS = 7
AVC_NAL_PPS = 8
AVC_NAL_SPS_EXT = 13

_AVC_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
_AVC_PROFILE_NAMES = {
    44: "CAVLC 4:4:4 Intra",
    66: "Baseline",
    77: "Main",
    83: "Scalable Baseline",
    86: "Scalable High",
    88: "Extended",
    100: "High",
    110: "High 10",
    118: "Multiview High",
    122: "High 4:2:2",
    128: "Stereo High",
    134: "MFC High",
    135: "MFC Depth High",
    138: "Multiview Depth High",
    139: "Enhanced Multiview Depth High",
    244: "High 4:4:4 Predictive",
}
# Table E-1: sample aspect ratios by aspect_ratio_idc.
_SAR_TABLE: dict[int, tuple[int, int]] = {
    1: (1, 1), 2: (12, 11), 3: (10, 11), 4: (16, 11), 5: (40, 33), 6: (24, 11), 7: (20, 11),
    8: (32, 11), 9: (80, 33), 10: (18, 11), 11: (15, 11), 12: (64, 33), 13: (160, 99),
    14: (4, 3), 15: (3, 2), 16: (2, 1),
}  # fmt: skip
_EXTENDED_SAR = 255


def avc_profile_name(profile_idc: int, constraint_flags: int) -> str:
    """Human name of an H.264 profile (``Constrained Baseline``, ``High 10 Intra``...)."""
    name = _AVC_PROFILE_NAMES.get(profile_idc, f"Profile {profile_idc}")
    set1 = bool(constraint_flags & 0x40)
    set3 = bool(constraint_flags & 0x10)
    if profile_idc == 66 and set1:
        return "Constrained Baseline"
    if profile_idc in (110, 122, 244) and set3:
        return f"{name} Intra".replace(" Predictive Intra", " Intra")
    return name


def _read_sar(r: _BitReader) -> tuple[int, int] | None:
    idc = r.u(8, "aspect_ratio_idc")
    if idc == _EXTENDED_SAR:
        w = r.u(16, "sar_width")
        h = r.u(16, "sar_height")
        return (w, h) if w and h else None
    return _SAR_TABLE.get(idc)


def _read_vui_head(r: _BitReader) -> tuple[int, int] | None:
    """The start of VUI shared by H.264 and HEVC: aspect ratio (returned), overscan,
    video signal type, chroma location."""
    sar = None
    if r.flag("aspect_ratio_info_present_flag"):
        sar = _read_sar(r)
    if r.flag("overscan_info_present_flag"):
        r.skip(1, "overscan_appropriate_flag")
    if r.flag("video_signal_type_present_flag"):
        r.skip(4, "video_format, video_full_range_flag")
        if r.flag("colour_description_present_flag"):
            r.skip(24, "colour description")
    if r.flag("chroma_loc_info_present_flag"):
        r.ue("chroma_sample_loc_type_top_field", maximum=5)
        r.ue("chroma_sample_loc_type_bottom_field", maximum=5)
    return sar


def _avc_scaling_list(r: _BitReader, size: int) -> None:
    last = 8
    nxt = 8
    for _ in range(size):
        if nxt != 0:
            delta = r.se("delta_scale", limit=128)
            nxt = (last + delta + 256) % 256
        last = last if nxt == 0 else nxt


def _nal_payload(nal: bytes, header_size: int, what: str) -> bytes:
    if len(nal) <= header_size:
        raise CodecError(f"{what}: NAL unit of {len(nal)} bytes is too short")
    if nal[0] & 0x80:
        raise CodecError(f"{what}: forbidden_zero_bit is set")
    return unescape_rbsp(nal[header_size:])


@dataclass(frozen=True, slots=True)
class AvcSps:
    """The fields of an H.264 sequence parameter set that describe the picture."""

    profile_idc: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    separate_colour_plane: bool
    bit_depth_luma: int
    bit_depth_chroma: int
    scaling_matrix_present: bool
    pic_order_cnt_type: int
    max_num_ref_frames: int
    frame_mbs_only: bool
    coded_width: int
    coded_height: int
    crop_left: int
    crop_right: int
    crop_top: int
    crop_bottom: int
    width: int
    height: int
    sample_aspect_ratio: tuple[int, int] | None
    num_units_in_tick: int | None
    time_scale: int | None
    fixed_frame_rate: bool

    @property
    def fps(self) -> float | None:
        """Frame rate from VUI timing (``time_scale / (2 * num_units_in_tick)``), if any."""
        if self.num_units_in_tick is None or self.time_scale is None:
            return None
        return _fmt_ratio(self.time_scale, 2 * self.num_units_in_tick)

    @property
    def profile_name(self) -> str:
        return avc_profile_name(self.profile_idc, self.constraint_flags)

    @classmethod
    def parse(cls, nal: bytes) -> AvcSps:
        """Parse an SPS NAL unit (with its 1-byte NAL header, emulation prevention intact)."""
        what = "H.264 SPS"
        rbsp = _nal_payload(nal, 1, what)
        if nal[0] & 0x1F != AVC_NAL_SPS:
            raise CodecError(f"{what}: NAL unit type {nal[0] & 0x1F} is not an SPS (7)")
        r = _BitReader(rbsp, what)
        profile_idc = r.u(8, "profile_idc")
        constraint_flags = r.u(8, "constraint_set flags")
        level_idc = r.u(8, "level_idc")
        sps_id = r.ue("seq_parameter_set_id", maximum=31)
        chroma_format_idc = 1
        separate_colour_plane = False
        bit_depth_luma = bit_depth_chroma = 8
        scaling_matrix_present = False
        if profile_idc in _AVC_HIGH_PROFILES:
            chroma_format_idc = r.ue("chroma_format_idc", maximum=3)
            if chroma_format_idc == 3:
                separate_colour_plane = r.flag("separate_colour_plane_flag")
            bit_depth_luma = 8 + r.ue("bit_depth_luma_minus8", maximum=6)
            bit_depth_chroma = 8 + r.ue("bit_depth_chroma_minus8", maximum=6)
            r.skip(1, "qpprime_y_zero_transform_bypass_flag")
            scaling_matrix_present = r.flag("seq_scaling_matrix_present_flag")
            if scaling_matrix_present:
                for i in range(12 if chroma_format_idc == 3 else 8):
                    if r.flag("seq_scaling_list_present_flag"):
                        _avc_scaling_list(r, 16 if i < 6 else 64)
        r.ue("log2_max_frame_num_minus4", maximum=12)
        poc_type = r.ue("pic_order_cnt_type", maximum=2)
        if poc_type == 0:
            r.ue("log2_max_pic_order_cnt_lsb_minus4", maximum=12)
        elif poc_type == 1:
            r.skip(1, "delta_pic_order_always_zero_flag")
            r.se("offset_for_non_ref_pic")
            r.se("offset_for_top_to_bottom_field")
            for _ in range(r.ue("num_ref_frames_in_pic_order_cnt_cycle", maximum=255)):
                r.se("offset_for_ref_frame")
        max_num_ref_frames = r.ue("max_num_ref_frames", maximum=32)
        r.skip(1, "gaps_in_frame_num_value_allowed_flag")
        width_mbs = r.ue("pic_width_in_mbs_minus1", maximum=16383) + 1
        height_map_units = r.ue("pic_height_in_map_units_minus1", maximum=16383) + 1
        frame_mbs_only = r.flag("frame_mbs_only_flag")
        if not frame_mbs_only:
            r.skip(1, "mb_adaptive_frame_field_flag")
        r.skip(1, "direct_8x8_inference_flag")
        crop = (0, 0, 0, 0)
        if r.flag("frame_cropping_flag"):
            crop = (
                r.ue("frame_crop_left_offset"),
                r.ue("frame_crop_right_offset"),
                r.ue("frame_crop_top_offset"),
                r.ue("frame_crop_bottom_offset"),
            )
        coded_width = width_mbs * 16
        coded_height = height_map_units * 16 * (1 if frame_mbs_only else 2)
        chroma_array_type = 0 if separate_colour_plane else chroma_format_idc
        sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma_array_type]
        crop_unit_x = 1 if chroma_array_type == 0 else sub_w
        crop_unit_y = (1 if chroma_array_type == 0 else sub_h) * (1 if frame_mbs_only else 2)
        crop_left, crop_right = crop[0] * crop_unit_x, crop[1] * crop_unit_x
        crop_top, crop_bottom = crop[2] * crop_unit_y, crop[3] * crop_unit_y
        width = coded_width - crop_left - crop_right
        height = coded_height - crop_top - crop_bottom
        if width <= 0 or height <= 0:
            raise CodecError(
                f"{what}: cropping ({crop_left},{crop_right},{crop_top},{crop_bottom}) "
                f"leaves nothing of {coded_width}x{coded_height}"
            )
        sar: tuple[int, int] | None = None
        num_units_in_tick: int | None = None
        time_scale: int | None = None
        fixed_frame_rate = False
        if r.flag("vui_parameters_present_flag"):
            sar = _read_vui_head(r)
            if r.flag("timing_info_present_flag"):
                num_units_in_tick = r.u(32, "num_units_in_tick")
                time_scale = r.u(32, "time_scale")
                fixed_frame_rate = r.flag("fixed_frame_rate_flag")
                if not num_units_in_tick or not time_scale:
                    num_units_in_tick = time_scale = None
        return cls(
            profile_idc=profile_idc,
            constraint_flags=constraint_flags,
            level_idc=level_idc,
            sps_id=sps_id,
            chroma_format_idc=chroma_format_idc,
            separate_colour_plane=separate_colour_plane,
            bit_depth_luma=bit_depth_luma,
            bit_depth_chroma=bit_depth_chroma,
            scaling_matrix_present=scaling_matrix_present,
            pic_order_cnt_type=poc_type,
            max_num_ref_frames=max_num_ref_frames,
            frame_mbs_only=frame_mbs_only,
            coded_width=coded_width,
            coded_height=coded_height,
            crop_left=crop_left,
            crop_right=crop_right,
            crop_top=crop_top,
            crop_bottom=crop_bottom,
            width=width,
            height=height,
            sample_aspect_ratio=sar,
            num_units_in_tick=num_units_in_tick,
            time_scale=time_scale,
            fixed_frame_rate=fixed_frame_rate,
        )


def _read_param_sets(r: _ByteReader, count: int, what: str) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for _ in range(count):
        size = r.u16(f"{what} length")
        if size == 0:
            raise CodecError(f"{what}: empty parameter set")
        out.append(r.read(size, what))
    return tuple(out)


def _write_param_sets(sets: Sequence[bytes]) -> bytes:
    parts: list[bytes] = []
    for ps in sets:
        if not 0 < len(ps) <= 0xFFFF:
            raise CodecError(f"parameter set of {len(ps)} bytes cannot be stored")
        parts.append(len(ps).to_bytes(2, "big") + ps)
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class AvcDecoderConfig:
    """AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), the FLV AVC sequence header.

    The high-profile extension (chroma format, bit depths, SPS extensions) is kept when the
    record carries it completely; records that omit or cut it short are common and accepted,
    as ffmpeg does.
    """

    profile_idc: int
    profile_compatibility: int
    level_idc: int
    nalu_length_size: int
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    chroma_format_idc: int | None = None
    bit_depth_luma: int | None = None
    bit_depth_chroma: int | None = None
    sps_ext: tuple[bytes, ...] = ()

    @classmethod
    def parse(cls, data: bytes) -> AvcDecoderConfig:
        what = "AVCDecoderConfigurationRecord"
        r = _ByteReader(data, what)
        version = r.u8("configurationVersion")
        if version != 1:
            raise CodecError(f"{what}: configurationVersion {version}, expected 1")
        profile_idc = r.u8("AVCProfileIndication")
        compat = r.u8("profile_compatibility")
        level_idc = r.u8("AVCLevelIndication")
        nalu_length_size = (r.u8("lengthSizeMinusOne") & 0x03) + 1
        sps = _read_param_sets(r, r.u8("numOfSequenceParameterSets") & 0x1F, "SPS")
        pps = _read_param_sets(r, r.u8("numOfPictureParameterSets"), "PPS")
        chroma: int | None = None
        depth_l: int | None = None
        depth_c: int | None = None
        sps_ext: tuple[bytes, ...] = ()
        if profile_idc in _AVC_HIGH_PROFILES and r.remaining >= 4:
            # Optional and frequently truncated or garbage in the wild: keep it only whole.
            try:
                ext = _ByteReader(r.rest(), what)
                chroma = ext.u8("chroma_format") & 0x03
                depth_l = (ext.u8("bit_depth_luma_minus8") & 0x07) + 8
                depth_c = (ext.u8("bit_depth_chroma_minus8") & 0x07) + 8
                sps_ext = _read_param_sets(ext, ext.u8("numOfSequenceParameterSetExt"), "SPSExt")
            except CodecError:
                chroma = depth_l = depth_c = None
                sps_ext = ()
        return cls(
            profile_idc,
            compat,
            level_idc,
            nalu_length_size,
            sps,
            pps,
            chroma,
            depth_l,
            depth_c,
            sps_ext,
        )

    @classmethod
    def from_parameter_sets(
        cls, sps: Sequence[bytes], pps: Sequence[bytes], nalu_length_size: int = 4
    ) -> AvcDecoderConfig:
        """Build a record from SPS / PPS NAL units (e.g. found in an Annex-B keyframe)."""
        if not sps or not pps:
            raise CodecError("AVCDecoderConfigurationRecord needs at least one SPS and one PPS")
        if nalu_length_size not in (1, 2, 4):
            raise CodecError(f"NAL unit length size {nalu_length_size} is not 1, 2 or 4")
        first = AvcSps.parse(sps[0])
        high = first.profile_idc in _AVC_HIGH_PROFILES
        return cls(
            profile_idc=first.profile_idc,
            profile_compatibility=first.constraint_flags,
            level_idc=first.level_idc,
            nalu_length_size=nalu_length_size,
            sps=tuple(sps),
            pps=tuple(pps),
            chroma_format_idc=first.chroma_format_idc if high else None,
            bit_depth_luma=first.bit_depth_luma if high else None,
            bit_depth_chroma=first.bit_depth_chroma if high else None,
        )

    def __bytes__(self) -> bytes:
        if len(self.sps) > 31 or len(self.pps) > 255:
            raise CodecError("too many parameter sets for an AVCDecoderConfigurationRecord")
        out = bytearray(
            (
                1,
                self.profile_idc,
                self.profile_compatibility,
                self.level_idc,
                0xFC | (self.nalu_length_size - 1),
                0xE0 | len(self.sps),
            )
        )
        out += _write_param_sets(self.sps)
        out.append(len(self.pps))
        out += _write_param_sets(self.pps)
        if self.chroma_format_idc is not None:
            out.append(0xFC | self.chroma_format_idc)
            out.append(0xF8 | ((self.bit_depth_luma or 8) - 8))
            out.append(0xF8 | ((self.bit_depth_chroma or 8) - 8))
            out.append(len(self.sps_ext))
            out += _write_param_sets(self.sps_ext)
        return bytes(out)

    def parsed_sps(self) -> AvcSps:
        """The first SPS, parsed."""
        if not self.sps:
            raise CodecError("AVCDecoderConfigurationRecord carries no SPS")
        return AvcSps.parse(self.sps[0])

    def video_config(self) -> VideoConfig:
        sps = self.parsed_sps()
        return VideoConfig(
            codec=f"avc1.{sps.profile_idc:02x}{sps.constraint_flags:02x}{sps.level_idc:02x}",
            width=sps.width,
            height=sps.height,
            fps=sps.fps,
            profile=sps.profile_idc,
            level=sps.level_idc,
            bit_depth=sps.bit_depth_luma,
            chroma_format=sps.chroma_format_idc,
            profile_name=sps.profile_name,
            interlaced=not sps.frame_mbs_only,
            nalu_length_size=self.nalu_length_size,
        )


# --------------------------------------------------------------------------------------
# HEVC
# --------------------------------------------------------------------------------------

HEVC_NAL_VPS = 32
HEVC_NAL_SPS = 33
HEVC_NAL_PPS = 34
HEVC_NAL_SEI_PREFIX = 39

_HEVC_PROFILE_NAMES = {
    1: "Main",
    2: "Main 10",
    3: "Main Still Picture",
    4: "Rext",
    5: "High Throughput",
    6: "Multiview Main",
    7: "Scalable Main",
    8: "3D Main",
    9: "Screen Extended",
    10: "Scalable Rext",
    11: "High Throughput Screen Extended",
}


def hevc_nal_type(nal: bytes) -> int:
    """The ``nal_unit_type`` of an HEVC NAL unit."""
    if len(nal) < 2:
        raise CodecError(f"HEVC NAL unit of {len(nal)} bytes has no header")
    return (nal[0] >> 1) & 0x3F


def _reverse_bits32(value: int) -> int:
    return int(f"{value:032b}"[::-1], 2)


def hevc_codec_string(
    profile_space: int,
    profile_idc: int,
    compatibility_flags: int,
    tier: int,
    level_idc: int,
    constraint_flags: int,
    sample_entry: str = "hvc1",
) -> str:
    """RFC 6381 / ISO/IEC 14496-15 Annex E codec string, e.g. ``hvc1.1.6.L93.B0``."""
    space = ("", "A", "B", "C")[profile_space & 3]
    parts = [
        sample_entry,
        f"{space}{profile_idc}",
        f"{_reverse_bits32(compatibility_flags):X}",
        f"{'H' if tier else 'L'}{level_idc}",
    ]
    constraint = list(constraint_flags.to_bytes(6, "big"))
    while constraint and constraint[-1] == 0:
        constraint.pop()
    parts += [f"{b:X}" for b in constraint]
    return ".".join(parts)


@dataclass(frozen=True, slots=True)
class _ProfileTierLevel:
    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    constraint_flags: int
    level_idc: int


def _hevc_profile_tier_level(r: _BitReader, max_sub_layers_minus1: int) -> _ProfileTierLevel:
    profile_space = r.u(2, "general_profile_space")
    tier = r.u(1, "general_tier_flag")
    profile_idc = r.u(5, "general_profile_idc")
    compat = r.u(32, "general_profile_compatibility_flags")
    constraint = r.u(48, "general constraint flags")
    level_idc = r.u(8, "general_level_idc")
    present: list[tuple[bool, bool]] = []
    for _ in range(max_sub_layers_minus1):
        present.append(
            (r.flag("sub_layer_profile_present_flag"), r.flag("sub_layer_level_present_flag"))
        )
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1), "reserved_zero_2bits")
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88, "sub_layer profile")
        if level_present:
            r.skip(8, "sub_layer_level_idc")
    return _ProfileTierLevel(profile_space, tier, profile_idc, compat, constraint, level_idc)


def _hevc_scaling_list_data(r: _BitReader) -> None:
    for size_id in range(4):
        for _matrix_id in range(0, 6, 3 if size_id == 3 else 1):
            if not r.flag("scaling_list_pred_mode_flag"):
                r.ue("scaling_list_pred_matrix_id_delta", maximum=5)
                continue
            coef_num = min(64, 1 << (4 + (size_id << 1)))
            if size_id > 1:
                r.se("scaling_list_dc_coef_minus8", limit=128)
            for _ in range(coef_num):
                r.se("scaling_list_delta_coef", limit=128)


def _hevc_st_ref_pic_set(r: _BitReader, idx: int, sets: list[tuple[int, ...]]) -> tuple[int, ...]:
    """Parse ``st_ref_pic_set(idx)`` in an SPS; returns the set's delta POCs."""
    if idx and r.flag("inter_ref_pic_set_prediction_flag"):
        # In an SPS delta_idx_minus1 is absent: the reference is the previous set.
        sign = r.u(1, "delta_rps_sign")
        abs_delta = r.ue("abs_delta_rps_minus1", maximum=(1 << 15) - 1) + 1
        delta_rps = -abs_delta if sign else abs_delta
        ref = sets[idx - 1]
        deltas: list[int] = []
        for j in range(len(ref) + 1):
            used = r.flag("used_by_curr_pic_flag")
            use_delta = True if used else r.flag("use_delta_flag")
            if used or use_delta:
                deltas.append(delta_rps + (ref[j] if j < len(ref) else 0))
        if len(deltas) > 32:
            raise CodecError("HEVC SPS: short-term reference picture set is too large")
        return tuple(deltas)
    negatives = r.ue("num_negative_pics", maximum=16)
    positives = r.ue("num_positive_pics", maximum=16)
    out: list[int] = []
    poc = 0
    for _ in range(negatives):
        poc -= r.ue("delta_poc_s0_minus1", maximum=(1 << 15) - 1) + 1
        r.skip(1, "used_by_curr_pic_s0_flag")
        out.append(poc)
    poc = 0
    for _ in range(positives):
        poc += r.ue("delta_poc_s1_minus1", maximum=(1 << 15) - 1) + 1
        r.skip(1, "used_by_curr_pic_s1_flag")
        out.append(poc)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class HevcSps:
    """The fields of an HEVC sequence parameter set that describe the picture."""

    max_sub_layers: int
    temporal_id_nesting: bool
    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    constraint_flags: int
    level_idc: int
    sps_id: int
    chroma_format_idc: int
    separate_colour_plane: bool
    coded_width: int
    coded_height: int
    conf_win_left: int
    conf_win_right: int
    conf_win_top: int
    conf_win_bottom: int
    width: int
    height: int
    bit_depth_luma: int
    bit_depth_chroma: int
    scaling_list_enabled: bool
    sample_aspect_ratio: tuple[int, int] | None
    field_seq: bool
    num_units_in_tick: int | None
    time_scale: int | None

    @property
    def fps(self) -> float | None:
        """Frame rate from VUI timing (``time_scale / num_units_in_tick``), if any."""
        if self.num_units_in_tick is None or self.time_scale is None:
            return None
        return _fmt_ratio(self.time_scale, self.num_units_in_tick)

    @property
    def profile_name(self) -> str:
        return _HEVC_PROFILE_NAMES.get(self.profile_idc, f"Profile {self.profile_idc}")

    @classmethod
    def parse(cls, nal: bytes) -> HevcSps:
        """Parse an SPS NAL unit (with its 2-byte header, emulation prevention intact)."""
        what = "HEVC SPS"
        rbsp = _nal_payload(nal, 2, what)
        if hevc_nal_type(nal) != HEVC_NAL_SPS:
            raise CodecError(f"{what}: NAL unit type {hevc_nal_type(nal)} is not an SPS (33)")
        r = _BitReader(rbsp, what)
        r.skip(4, "sps_video_parameter_set_id")
        max_sub_layers_minus1 = r.u(3, "sps_max_sub_layers_minus1")
        if max_sub_layers_minus1 > 6:
            raise CodecError(f"{what}: sps_max_sub_layers_minus1 = 7 is reserved")
        nesting = r.flag("sps_temporal_id_nesting_flag")
        ptl = _hevc_profile_tier_level(r, max_sub_layers_minus1)
        sps_id = r.ue("sps_seq_parameter_set_id", maximum=15)
        chroma_format_idc = r.ue("chroma_format_idc", maximum=3)
        separate = chroma_format_idc == 3 and r.flag("separate_colour_plane_flag")
        coded_width = r.ue("pic_width_in_luma_samples", maximum=1 << 16)
        coded_height = r.ue("pic_height_in_luma_samples", maximum=1 << 16)
        if not coded_width or not coded_height:
            raise CodecError(f"{what}: zero picture size {coded_width}x{coded_height}")
        win = (0, 0, 0, 0)
        if r.flag("conformance_window_flag"):
            win = (
                r.ue("conf_win_left_offset"),
                r.ue("conf_win_right_offset"),
                r.ue("conf_win_top_offset"),
                r.ue("conf_win_bottom_offset"),
            )
        chroma_array_type = 0 if separate else chroma_format_idc
        sub_w, sub_h = {0: (1, 1), 1: (2, 2), 2: (2, 1), 3: (1, 1)}[chroma_array_type]
        left, right = win[0] * sub_w, win[1] * sub_w
        top, bottom = win[2] * sub_h, win[3] * sub_h
        width = coded_width - left - right
        height = coded_height - top - bottom
        if width <= 0 or height <= 0:
            raise CodecError(
                f"{what}: conformance window ({left},{right},{top},{bottom}) "
                f"leaves nothing of {coded_width}x{coded_height}"
            )
        bit_depth_luma = 8 + r.ue("bit_depth_luma_minus8", maximum=8)
        bit_depth_chroma = 8 + r.ue("bit_depth_chroma_minus8", maximum=8)
        log2_max_poc_lsb = 4 + r.ue("log2_max_pic_order_cnt_lsb_minus4", maximum=12)
        ordering_info_present = r.flag("sps_sub_layer_ordering_info_present_flag")
        for _ in range(
            0 if ordering_info_present else max_sub_layers_minus1, max_sub_layers_minus1 + 1
        ):
            r.ue("sps_max_dec_pic_buffering_minus1", maximum=15)
            r.ue("sps_max_num_reorder_pics", maximum=15)
            r.ue("sps_max_latency_increase_plus1")
        r.ue("log2_min_luma_coding_block_size_minus3", maximum=3)
        r.ue("log2_diff_max_min_luma_coding_block_size", maximum=3)
        r.ue("log2_min_luma_transform_block_size_minus2", maximum=3)
        r.ue("log2_diff_max_min_luma_transform_block_size", maximum=3)
        r.ue("max_transform_hierarchy_depth_inter", maximum=4)
        r.ue("max_transform_hierarchy_depth_intra", maximum=4)
        scaling_list_enabled = r.flag("scaling_list_enabled_flag")
        if scaling_list_enabled and r.flag("sps_scaling_list_data_present_flag"):
            _hevc_scaling_list_data(r)
        r.skip(2, "amp_enabled_flag, sample_adaptive_offset_enabled_flag")
        if r.flag("pcm_enabled_flag"):
            r.skip(8, "pcm sample bit depths")
            r.ue("log2_min_pcm_luma_coding_block_size_minus3", maximum=2)
            r.ue("log2_diff_max_min_pcm_luma_coding_block_size", maximum=3)
            r.skip(1, "pcm_loop_filter_disabled_flag")
        sets: list[tuple[int, ...]] = []
        for i in range(r.ue("num_short_term_ref_pic_sets", maximum=64)):
            sets.append(_hevc_st_ref_pic_set(r, i, sets))
        if r.flag("long_term_ref_pics_present_flag"):
            for _ in range(r.ue("num_long_term_ref_pics_sps", maximum=32)):
                r.skip(log2_max_poc_lsb + 1, "lt_ref_pic_poc_lsb_sps, used_by_curr_pic_lt")
        r.skip(2, "sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag")
        sar: tuple[int, int] | None = None
        field_seq = False
        num_units_in_tick: int | None = None
        time_scale: int | None = None
        if r.flag("vui_parameters_present_flag"):
            sar = _read_vui_head(r)
            r.skip(1, "neutral_chroma_indication_flag")
            field_seq = r.flag("field_seq_flag")
            r.skip(1, "frame_field_info_present_flag")
            if r.flag("default_display_window_flag"):
                for field in ("left", "right", "top", "bottom"):
                    r.ue(f"def_disp_win_{field}_offset")
            if r.flag("vui_timing_info_present_flag"):
                num_units_in_tick = r.u(32, "vui_num_units_in_tick")
                time_scale = r.u(32, "vui_time_scale")
                if not num_units_in_tick or not time_scale:
                    num_units_in_tick = time_scale = None
        return cls(
            max_sub_layers=max_sub_layers_minus1 + 1,
            temporal_id_nesting=nesting,
            profile_space=ptl.profile_space,
            tier=ptl.tier,
            profile_idc=ptl.profile_idc,
            compatibility_flags=ptl.compatibility_flags,
            constraint_flags=ptl.constraint_flags,
            level_idc=ptl.level_idc,
            sps_id=sps_id,
            chroma_format_idc=chroma_format_idc,
            separate_colour_plane=separate,
            coded_width=coded_width,
            coded_height=coded_height,
            conf_win_left=left,
            conf_win_right=right,
            conf_win_top=top,
            conf_win_bottom=bottom,
            width=width,
            height=height,
            bit_depth_luma=bit_depth_luma,
            bit_depth_chroma=bit_depth_chroma,
            scaling_list_enabled=scaling_list_enabled,
            sample_aspect_ratio=sar,
            field_seq=field_seq,
            num_units_in_tick=num_units_in_tick,
            time_scale=time_scale,
        )

    def codec_string(self, sample_entry: str = "hvc1") -> str:
        return hevc_codec_string(
            self.profile_space,
            self.profile_idc,
            self.compatibility_flags,
            self.tier,
            self.level_idc,
            self.constraint_flags,
            sample_entry,
        )


@dataclass(frozen=True, slots=True)
class HevcNalArray:
    """One array of an hvcC: NAL units of one type."""

    nal_unit_type: int
    nalus: tuple[bytes, ...]
    array_completeness: bool = True


@dataclass(frozen=True, slots=True)
class HevcDecoderConfig:
    """HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1), the FLV ``hvc1`` sequence
    start. Version 0 is accepted as well as 1 (early muxers wrote 0)."""

    profile_space: int
    tier: int
    profile_idc: int
    compatibility_flags: int
    constraint_flags: int
    level_idc: int
    min_spatial_segmentation: int
    parallelism_type: int
    chroma_format_idc: int
    bit_depth_luma: int
    bit_depth_chroma: int
    avg_frame_rate: int
    constant_frame_rate: int
    num_temporal_layers: int
    temporal_id_nested: bool
    nalu_length_size: int
    arrays: tuple[HevcNalArray, ...]
    version: int = 1

    @classmethod
    def parse(cls, data: bytes) -> HevcDecoderConfig:
        what = "HEVCDecoderConfigurationRecord"
        r = _ByteReader(data, what)
        version = r.u8("configurationVersion")
        if version > 1:
            raise CodecError(f"{what}: configurationVersion {version}, expected 1")
        b = r.u8("general_profile_space/tier/profile_idc")
        compat = r.uint(4, "general_profile_compatibility_flags")
        constraint = r.uint(6, "general_constraint_indicator_flags")
        level_idc = r.u8("general_level_idc")
        min_seg = r.u16("min_spatial_segmentation_idc") & 0x0FFF
        parallelism = r.u8("parallelismType") & 0x03
        chroma = r.u8("chromaFormat") & 0x03
        depth_l = (r.u8("bitDepthLumaMinus8") & 0x07) + 8
        depth_c = (r.u8("bitDepthChromaMinus8") & 0x07) + 8
        avg_rate = r.u16("avgFrameRate")
        flags = r.u8("constantFrameRate/numTemporalLayers/lengthSizeMinusOne")
        arrays: list[HevcNalArray] = []
        for _ in range(r.u8("numOfArrays")):
            head = r.u8("NAL_unit_type")
            nalus = _read_param_sets(r, r.u16("numNalus"), "hvcC NAL unit")
            arrays.append(HevcNalArray(head & 0x3F, nalus, bool(head & 0x80)))
        return cls(
            profile_space=b >> 6,
            tier=(b >> 5) & 1,
            profile_idc=b & 0x1F,
            compatibility_flags=compat,
            constraint_flags=constraint,
            level_idc=level_idc,
            min_spatial_segmentation=min_seg,
            parallelism_type=parallelism,
            chroma_format_idc=chroma,
            bit_depth_luma=depth_l,
            bit_depth_chroma=depth_c,
            avg_frame_rate=avg_rate,
            constant_frame_rate=flags >> 6,
            num_temporal_layers=(flags >> 3) & 0x07,
            temporal_id_nested=bool(flags & 0x04),
            nalu_length_size=(flags & 0x03) + 1,
            arrays=tuple(arrays),
            version=version,
        )

    @classmethod
    def from_parameter_sets(
        cls,
        vps: Sequence[bytes],
        sps: Sequence[bytes],
        pps: Sequence[bytes],
        nalu_length_size: int = 4,
    ) -> HevcDecoderConfig:
        """Build a record from VPS / SPS / PPS NAL units (e.g. from an Annex-B keyframe)."""
        if not vps or not sps or not pps:
            raise CodecError("HEVCDecoderConfigurationRecord needs a VPS, an SPS and a PPS")
        if nalu_length_size not in (1, 2, 4):
            raise CodecError(f"NAL unit length size {nalu_length_size} is not 1, 2 or 4")
        s = HevcSps.parse(sps[0])
        return cls(
            profile_space=s.profile_space,
            tier=s.tier,
            profile_idc=s.profile_idc,
            compatibility_flags=s.compatibility_flags,
            constraint_flags=s.constraint_flags,
            level_idc=s.level_idc,
            min_spatial_segmentation=0,
            parallelism_type=0,
            chroma_format_idc=s.chroma_format_idc,
            bit_depth_luma=s.bit_depth_luma,
            bit_depth_chroma=s.bit_depth_chroma,
            avg_frame_rate=0,
            constant_frame_rate=0,
            num_temporal_layers=s.max_sub_layers,
            temporal_id_nested=s.temporal_id_nesting,
            nalu_length_size=nalu_length_size,
            arrays=(
                HevcNalArray(HEVC_NAL_VPS, tuple(vps)),
                HevcNalArray(HEVC_NAL_SPS, tuple(sps)),
                HevcNalArray(HEVC_NAL_PPS, tuple(pps)),
            ),
        )

    def __bytes__(self) -> bytes:
        out = bytearray(
            (self.version, (self.profile_space << 6) | (self.tier << 5) | self.profile_idc)
        )
        out += self.compatibility_flags.to_bytes(4, "big")
        out += self.constraint_flags.to_bytes(6, "big")
        out.append(self.level_idc)
        out += (0xF000 | self.min_spatial_segmentation).to_bytes(2, "big")
        out.append(0xFC | self.parallelism_type)
        out.append(0xFC | self.chroma_format_idc)
        out.append(0xF8 | (self.bit_depth_luma - 8))
        out.append(0xF8 | (self.bit_depth_chroma - 8))
        out += self.avg_frame_rate.to_bytes(2, "big")
        out.append(
            (self.constant_frame_rate << 6)
            | (self.num_temporal_layers << 3)
            | (int(self.temporal_id_nested) << 2)
            | (self.nalu_length_size - 1)
        )
        if len(self.arrays) > 255:
            raise CodecError("too many NAL unit arrays for an hvcC")
        out.append(len(self.arrays))
        for array in self.arrays:
            out.append((0x80 if array.array_completeness else 0) | array.nal_unit_type)
            out += len(array.nalus).to_bytes(2, "big")
            out += _write_param_sets(array.nalus)
        return bytes(out)

    def nalus_of_type(self, nal_unit_type: int) -> tuple[bytes, ...]:
        return tuple(n for a in self.arrays if a.nal_unit_type == nal_unit_type for n in a.nalus)

    @property
    def vps(self) -> tuple[bytes, ...]:
        return self.nalus_of_type(HEVC_NAL_VPS)

    @property
    def sps(self) -> tuple[bytes, ...]:
        return self.nalus_of_type(HEVC_NAL_SPS)

    @property
    def pps(self) -> tuple[bytes, ...]:
        return self.nalus_of_type(HEVC_NAL_PPS)

    def parsed_sps(self) -> HevcSps:
        sps = self.sps
        if not sps:
            raise CodecError("HEVCDecoderConfigurationRecord carries no SPS")
        return HevcSps.parse(sps[0])

    def codec_string(self, sample_entry: str = "hvc1") -> str:
        return hevc_codec_string(
            self.profile_space,
            self.profile_idc,
            self.compatibility_flags,
            self.tier,
            self.level_idc,
            self.constraint_flags,
            sample_entry,
        )

    def video_config(self, sample_entry: str = "hvc1") -> VideoConfig:
        sps = self.parsed_sps()
        fps = sps.fps
        if fps is None and self.avg_frame_rate:
            fps = self.avg_frame_rate / 256
        return VideoConfig(
            codec=sps.codec_string(sample_entry),
            width=sps.width,
            height=sps.height,
            fps=fps,
            profile=sps.profile_idc,
            level=sps.level_idc,
            bit_depth=sps.bit_depth_luma,
            chroma_format=sps.chroma_format_idc,
            profile_name=sps.profile_name,
            interlaced=sps.field_seq,
            nalu_length_size=self.nalu_length_size,
        )


# --------------------------------------------------------------------------------------
# AV1
# --------------------------------------------------------------------------------------

AV1_OBU_SEQUENCE_HEADER = 1
_AV1_PROFILE_NAMES = {0: "Main", 1: "High", 2: "Professional"}
_AV1_CP_BT709 = 1
_AV1_TC_SRGB = 13
_AV1_MC_IDENTITY = 0


@dataclass(frozen=True, slots=True)
class Av1SequenceHeader:
    """The fields of an AV1 sequence header OBU that describe the picture."""

    seq_profile: int
    still_picture: bool
    seq_level_idx: int
    seq_tier: int
    max_frame_width: int
    max_frame_height: int
    bit_depth: int
    mono_chrome: bool
    subsampling_x: int
    subsampling_y: int
    color_primaries: int
    transfer_characteristics: int
    matrix_coefficients: int
    full_range: bool
    num_units_in_display_tick: int | None
    time_scale: int | None
    num_ticks_per_picture: int | None

    @property
    def fps(self) -> float | None:
        if not self.num_units_in_display_tick or not self.time_scale:
            return None
        if not self.num_ticks_per_picture:
            return None
        return self.time_scale / (self.num_units_in_display_tick * self.num_ticks_per_picture)

    @property
    def chroma_format(self) -> int:
        if self.mono_chrome:
            return 0
        return {(1, 1): 1, (1, 0): 2, (0, 0): 3}.get((self.subsampling_x, self.subsampling_y), 1)

    @classmethod
    def parse_obu_payload(cls, payload: bytes) -> Av1SequenceHeader:
        """Parse ``sequence_header_obu()`` (the OBU payload, without the OBU header)."""
        what = "AV1 sequence header"
        r = _BitReader(payload, what)
        profile = r.u(3, "seq_profile")
        if profile > 2:
            raise CodecError(f"{what}: seq_profile {profile} is reserved")
        still = r.flag("still_picture")
        reduced = r.flag("reduced_still_picture_header")
        num_units: int | None = None
        time_scale: int | None = None
        ticks: int | None = None
        if reduced:
            level_idx = r.u(5, "seq_level_idx[0]")
            tier = 0
        else:
            decoder_model_info = False
            buffer_delay_length = 0
            if r.flag("timing_info_present_flag"):
                num_units = r.u(32, "num_units_in_display_tick")
                time_scale = r.u(32, "time_scale")
                if r.flag("equal_picture_interval"):
                    ticks = r.uvlc("num_ticks_per_picture_minus_1") + 1
                if r.flag("decoder_model_info_present_flag"):
                    decoder_model_info = True
                    buffer_delay_length = r.u(5, "buffer_delay_length_minus_1") + 1
                    r.skip(32 + 5 + 5, "decoder model info")
            initial_display_delay = r.flag("initial_display_delay_present_flag")
            level_idx = tier = 0
            for i in range(r.u(5, "operating_points_cnt_minus_1") + 1):
                r.skip(12, "operating_point_idc")
                idx = r.u(5, "seq_level_idx")
                t = r.u(1, "seq_tier") if idx > 7 else 0
                if i == 0:
                    level_idx, tier = idx, t
                if decoder_model_info and r.flag("decoder_model_present_for_this_op"):
                    r.skip(2 * buffer_delay_length + 1, "operating_parameters_info")
                if initial_display_delay and r.flag("initial_display_delay_present_for_this_op"):
                    r.skip(4, "initial_display_delay_minus_1")
        width_bits = r.u(4, "frame_width_bits_minus_1") + 1
        height_bits = r.u(4, "frame_height_bits_minus_1") + 1
        max_w = r.u(width_bits, "max_frame_width_minus_1") + 1
        max_h = r.u(height_bits, "max_frame_height_minus_1") + 1
        if not reduced and r.flag("frame_id_numbers_present_flag"):
            r.skip(7, "frame id lengths")
        r.skip(3, "use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter")
        if not reduced:
            r.skip(4, "interintra/masked compound, warped motion, dual filter")
            order_hint = r.flag("enable_order_hint")
            if order_hint:
                r.skip(2, "enable_jnt_comp, enable_ref_frame_mvs")
            force_screen_content = (
                2
                if r.flag("seq_choose_screen_content_tools")
                else r.u(1, "seq_force_screen_content_tools")
            )
            if force_screen_content > 0 and not r.flag("seq_choose_integer_mv"):
                r.skip(1, "seq_force_integer_mv")
            if order_hint:
                r.skip(3, "order_hint_bits_minus_1")
        r.skip(3, "enable_superres, enable_cdef, enable_restoration")
        # color_config()
        bit_depth = 8
        if r.flag("high_bitdepth"):
            bit_depth = 12 if profile == 2 and r.flag("twelve_bit") else 10
        mono = False if profile == 1 else r.flag("mono_chrome")
        cp, tc, mc = 2, 2, 2  # "unspecified"
        if r.flag("color_description_present_flag"):
            cp = r.u(8, "color_primaries")
            tc = r.u(8, "transfer_characteristics")
            mc = r.u(8, "matrix_coefficients")
        if mono:
            full_range = r.flag("color_range")
            ss_x = ss_y = 1
        elif cp == _AV1_CP_BT709 and tc == _AV1_TC_SRGB and mc == _AV1_MC_IDENTITY:
            full_range = True
            ss_x = ss_y = 0
        else:
            full_range = r.flag("color_range")
            if profile == 0:
                ss_x = ss_y = 1
            elif profile == 1:
                ss_x = ss_y = 0
            elif bit_depth == 12:
                ss_x = r.u(1, "subsampling_x")
                ss_y = r.u(1, "subsampling_y") if ss_x else 0
            else:
                ss_x, ss_y = 1, 0
            if ss_x and ss_y:
                r.skip(2, "chroma_sample_position")
        return cls(
            seq_profile=profile,
            still_picture=still,
            seq_level_idx=level_idx,
            seq_tier=tier,
            max_frame_width=max_w,
            max_frame_height=max_h,
            bit_depth=bit_depth,
            mono_chrome=mono,
            subsampling_x=ss_x,
            subsampling_y=ss_y,
            color_primaries=cp,
            transfer_characteristics=tc,
            matrix_coefficients=mc,
            full_range=full_range,
            num_units_in_display_tick=num_units or None,
            time_scale=time_scale or None,
            num_ticks_per_picture=ticks,
        )

    @classmethod
    def find_in_obus(cls, data: bytes) -> Av1SequenceHeader | None:
        """Parse OBUs (low-overhead format) and return the first sequence header, if any."""
        r = _ByteReader(data, "AV1 OBUs")
        while r.remaining:
            header = r.u8("obu_header")
            if header & 0x80:
                raise CodecError("AV1 OBU: forbidden bit is set")
            obu_type = (header >> 3) & 0x0F
            if header & 0x04:
                r.u8("obu_extension_header")
            size = _leb128(r, "obu_size") if header & 0x02 else r.remaining
            payload = r.read(size, "OBU payload")
            if obu_type == AV1_OBU_SEQUENCE_HEADER:
                return cls.parse_obu_payload(payload)
        return None


@dataclass(frozen=True, slots=True)
class Av1Config:
    """AV1CodecConfigurationRecord (av1C), the FLV ``av01`` sequence start."""

    seq_profile: int
    seq_level_idx: int
    seq_tier: int
    high_bitdepth: bool
    twelve_bit: bool
    mono_chrome: bool
    chroma_subsampling_x: int
    chroma_subsampling_y: int
    chroma_sample_position: int
    initial_presentation_delay: int | None
    config_obus: bytes

    @property
    def bit_depth(self) -> int:
        if self.seq_profile == 2 and self.high_bitdepth:
            return 12 if self.twelve_bit else 10
        return 10 if self.high_bitdepth else 8

    @property
    def chroma_format(self) -> int:
        if self.mono_chrome:
            return 0
        key = (self.chroma_subsampling_x, self.chroma_subsampling_y)
        return {(1, 1): 1, (1, 0): 2, (0, 0): 3}.get(key, 1)

    @property
    def codec_string(self) -> str:
        """The short form ``av01.P.LLT.DD``."""
        tier = "H" if self.seq_tier else "M"
        return f"av01.{self.seq_profile}.{self.seq_level_idx:02d}{tier}.{self.bit_depth:02d}"

    @classmethod
    def parse(cls, data: bytes) -> Av1Config:
        what = "AV1CodecConfigurationRecord"
        r = _ByteReader(data, what)
        b0 = r.u8("marker/version")
        if b0 != 0x81:
            raise CodecError(f"{what}: marker/version byte 0x{b0:02x}, expected 0x81")
        b1 = r.u8("seq_profile/seq_level_idx_0")
        b2 = r.u8("seq_tier_0/bit depth/chroma")
        b3 = r.u8("initial_presentation_delay")
        profile = b1 >> 5
        if profile > 2:
            raise CodecError(f"{what}: seq_profile {profile} is reserved")
        return cls(
            seq_profile=profile,
            seq_level_idx=b1 & 0x1F,
            seq_tier=b2 >> 7,
            high_bitdepth=bool(b2 & 0x40),
            twelve_bit=bool(b2 & 0x20),
            mono_chrome=bool(b2 & 0x10),
            chroma_subsampling_x=(b2 >> 3) & 1,
            chroma_subsampling_y=(b2 >> 2) & 1,
            chroma_sample_position=b2 & 0x03,
            initial_presentation_delay=(b3 & 0x0F) + 1 if b3 & 0x10 else None,
            config_obus=r.rest(),
        )

    def __bytes__(self) -> bytes:
        b2 = (
            (self.seq_tier << 7)
            | (int(self.high_bitdepth) << 6)
            | (int(self.twelve_bit) << 5)
            | (int(self.mono_chrome) << 4)
            | (self.chroma_subsampling_x << 3)
            | (self.chroma_subsampling_y << 2)
            | self.chroma_sample_position
        )
        delay = self.initial_presentation_delay
        b3 = 0 if delay is None else 0x10 | (delay - 1)
        return (
            bytes((0x81, (self.seq_profile << 5) | self.seq_level_idx, b2, b3)) + self.config_obus
        )

    def sequence_header(self) -> Av1SequenceHeader | None:
        """The sequence header OBU among the config OBUs, parsed, if present."""
        if not self.config_obus:
            return None
        return Av1SequenceHeader.find_in_obus(self.config_obus)

    def video_config(self) -> VideoConfig:
        seq = self.sequence_header()
        if seq is None:
            raise CodecError("AV1CodecConfigurationRecord has no sequence header OBU: size unknown")
        return VideoConfig(
            codec=self.codec_string,
            width=seq.max_frame_width,
            height=seq.max_frame_height,
            fps=seq.fps,
            profile=self.seq_profile,
            level=self.seq_level_idx,
            bit_depth=self.bit_depth,
            chroma_format=self.chroma_format,
            profile_name=_AV1_PROFILE_NAMES[self.seq_profile],
        )


def _av1_video_config_from_obus(data: bytes) -> VideoConfig:
    seq = Av1SequenceHeader.find_in_obus(data)
    if seq is None:
        raise CodecError("AV1 sequence start holds neither an av1C nor a sequence header OBU")
    tier = "H" if seq.seq_tier else "M"
    return VideoConfig(
        codec=f"av01.{seq.seq_profile}.{seq.seq_level_idx:02d}{tier}.{seq.bit_depth:02d}",
        width=seq.max_frame_width,
        height=seq.max_frame_height,
        fps=seq.fps,
        profile=seq.seq_profile,
        level=seq.seq_level_idx,
        bit_depth=seq.bit_depth,
        chroma_format=seq.chroma_format,
        profile_name=_AV1_PROFILE_NAMES[seq.seq_profile],
    )


def video_config(fourcc: str, record: bytes) -> VideoConfig:
    """Describe a video sequence header: ``fourcc`` is ``avc1``, ``hvc1``/``hev1`` or ``av01``.

    For AV1, a raw sequence header OBU (sent by some encoders instead of an av1C) is
    accepted too.
    """
    if fourcc in ("avc1", "avc3"):
        return AvcDecoderConfig.parse(record).video_config()
    if fourcc in ("hvc1", "hev1"):
        return HevcDecoderConfig.parse(record).video_config(fourcc)
    if fourcc == "av01":
        if record[:1] and record[0] & 0x80:
            return Av1Config.parse(record).video_config()
        return _av1_video_config_from_obus(record)
    raise CodecError(f"unsupported video codec {fourcc!r}")


# --------------------------------------------------------------------------------------
# AAC
# --------------------------------------------------------------------------------------

AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050,
                    16000, 12000, 11025, 8000, 7350)  # fmt: skip
# channelConfiguration -> channels (ISO/IEC 14496-3 Table 1.19 with amendments; 8-10 reserved)
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}
AOT_AAC_MAIN = 1
AOT_AAC_LC = 2
AOT_SBR = 5
AOT_PS = 29
AOT_ESCAPE = 31
_GA_OBJECT_TYPES = frozenset({1, 2, 3, 4, 6, 7, 17, 19, 20, 21, 22, 23})
_ER_OBJECT_TYPES = frozenset({17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 39})
_SYNC_EXTENSION_SBR = 0x2B7
_SYNC_EXTENSION_PS = 0x548
AUDIO_OBJECT_TYPE_NAMES = {
    1: "AAC Main",
    2: "AAC LC",
    3: "AAC SSR",
    4: "AAC LTP",
    5: "SBR (HE-AAC)",
    6: "AAC Scalable",
    17: "ER AAC LC",
    19: "ER AAC LTP",
    20: "ER AAC Scalable",
    22: "ER BSAC",
    23: "ER AAC LD",
    29: "PS (HE-AAC v2)",
    39: "ER AAC ELD",
    42: "USAC",
}


@dataclass(frozen=True, slots=True)
class AacProgramConfig:
    """The channel layout of a program_config_element (channelConfiguration 0)."""

    front: int
    side: int
    back: int
    lfe: int

    @property
    def channels(self) -> int:
        return self.front + self.side + self.back + self.lfe


def _read_object_type(r: _BitReader, field: str) -> int:
    aot = r.u(5, field)
    if aot == AOT_ESCAPE:
        aot = 32 + r.u(6, f"{field} (escape)")
    return aot


def _read_sample_rate(r: _BitReader, field: str) -> int:
    index = r.u(4, f"{field} index")
    if index == 0xF:
        rate = r.u(24, field)
        if rate == 0:
            raise CodecError(f"AudioSpecificConfig: explicit {field} is 0")
        return rate
    if index >= len(AAC_SAMPLE_RATES):
        raise CodecError(f"AudioSpecificConfig: {field} index {index} is reserved")
    return AAC_SAMPLE_RATES[index]


def _read_program_config(r: _BitReader) -> AacProgramConfig:
    r.skip(4 + 2 + 4, "element_instance_tag, object_type, sampling_frequency_index")
    num_front = r.u(4, "num_front_channel_elements")
    num_side = r.u(4, "num_side_channel_elements")
    num_back = r.u(4, "num_back_channel_elements")
    num_lfe = r.u(2, "num_lfe_channel_elements")
    num_assoc = r.u(3, "num_assoc_data_elements")
    num_cc = r.u(4, "num_valid_cc_elements")
    for name in ("mono_mixdown", "stereo_mixdown"):
        if r.flag(f"{name}_present"):
            r.skip(4, f"{name}_element_number")
    if r.flag("matrix_mixdown_idx_present"):
        r.skip(3, "matrix_mixdown_idx, pseudo_surround_enable")

    def channels(count: int, field: str) -> int:
        total = 0
        for _ in range(count):
            total += 2 if r.flag(f"{field}_element_is_cpe") else 1
            r.skip(4, f"{field}_element_tag_select")
        return total

    front = channels(num_front, "front")
    side = channels(num_side, "side")
    back = channels(num_back, "back")
    r.skip(4 * num_lfe + 4 * num_assoc + 5 * num_cc, "lfe, assoc data and cc elements")
    r.byte_align()
    r.skip(8 * r.u(8, "comment_field_bytes"), "comment_field_data")
    return AacProgramConfig(front, side, back, num_lfe)


@dataclass(frozen=True, slots=True)
class AudioSpecificConfig:
    """MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), the FLV AAC sequence header.

    ``object_type`` is the signalled type (5 / 29 for explicit HE-AAC); ``core_object_type``
    the underlying codec (2 for HE-AAC over LC). ``sbr`` / ``ps`` are True when signalled
    explicitly or by the backward-compatible sync extension; implicit SBR (only found by
    decoding) is not detected.
    """

    object_type: int
    core_object_type: int
    sample_rate: int
    channel_configuration: int
    channels: int
    sbr: bool
    ps: bool
    extension_sample_rate: int | None
    frame_length: int
    program_config: AacProgramConfig | None

    @property
    def output_sample_rate(self) -> int:
        if self.sbr and self.extension_sample_rate:
            return self.extension_sample_rate
        return self.sample_rate

    @property
    def output_channels(self) -> int:
        return 2 if self.ps and self.channels == 1 else self.channels

    @property
    def codec_string(self) -> str:
        """``mp4a.40.N``: 29 with PS, 5 with SBR, else the signalled object type."""
        if self.ps:
            return "mp4a.40.29"
        if self.sbr:
            return "mp4a.40.5"
        return f"mp4a.40.{self.object_type}"

    @classmethod
    def parse(cls, data: bytes) -> AudioSpecificConfig:
        what = "AudioSpecificConfig"
        r = _BitReader(data, what)
        aot = _read_object_type(r, "audioObjectType")
        if aot == 0:
            raise CodecError(f"{what}: audioObjectType 0 is null")
        sample_rate = _read_sample_rate(r, "samplingFrequency")
        channel_config = r.u(4, "channelConfiguration")
        core = aot
        sbr = ps = False
        ext_rate: int | None = None
        if aot in (AOT_SBR, AOT_PS):
            sbr = True
            ps = aot == AOT_PS
            ext_rate = _read_sample_rate(r, "extensionSamplingFrequency")
            core = _read_object_type(r, "audioObjectType (core)")
            if core == 22:
                r.skip(4, "extensionChannelConfiguration")
        if channel_config and channel_config not in _AAC_CHANNELS:
            raise CodecError(f"{what}: channelConfiguration {channel_config} is reserved")
        channels = _AAC_CHANNELS.get(channel_config, 0)
        frame_length = 1024
        pce: AacProgramConfig | None = None
        if core in _GA_OBJECT_TYPES:
            if r.flag("frameLengthFlag"):
                frame_length = 960
            if r.flag("dependsOnCoreCoder"):
                r.skip(14, "coreCoderDelay")
            extension_flag = r.flag("extensionFlag")
            if channel_config == 0:
                pce = _read_program_config(r)
                channels = pce.channels
            if core in (6, 20):
                r.skip(3, "layerNr")
            if extension_flag:
                if core == 22:
                    r.skip(16, "numOfSubFrame, layer_length")
                if core in (17, 19, 20, 23):
                    r.skip(3, "aacSection/Scalefactor/SpectralData resilience flags")
                r.skip(1, "extensionFlag3")
            if core in _ER_OBJECT_TYPES:
                ep_config = r.u(2, "epConfig")
                if ep_config >= 2:
                    # ErrorProtectionSpecificConfig follows; the sync extension cannot be found.
                    return cls(
                        aot,
                        core,
                        sample_rate,
                        channel_config,
                        channels,
                        sbr,
                        ps,
                        ext_rate,
                        frame_length,
                        pce,
                    )
            # Backward-compatible explicit signalling of SBR / PS after the core config.
            if (
                not sbr
                and r.bits_left >= 16
                and r.u(11, "syncExtensionType") == _SYNC_EXTENSION_SBR
                and _read_object_type(r, "extensionAudioObjectType") == AOT_SBR
            ):
                sbr = r.flag("sbrPresentFlag")
                if sbr:
                    ext_rate = _read_sample_rate(r, "extensionSamplingFrequency")
                    if r.bits_left >= 12 and r.u(11, "syncExtensionType") == _SYNC_EXTENSION_PS:
                        ps = r.flag("psPresentFlag")
        return cls(
            aot, core, sample_rate, channel_config, channels, sbr, ps, ext_rate, frame_length, pce
        )

    def audio_config(self) -> AudioConfig:
        return AudioConfig(
            codec=self.codec_string,
            sample_rate=self.output_sample_rate,
            channels=self.output_channels,
            object_type=self.object_type,
            sbr=self.sbr,
            ps=self.ps,
        )


def audio_config(asc: bytes) -> AudioConfig:
    """Describe an AAC sequence header (AudioSpecificConfig)."""
    return AudioSpecificConfig.parse(asc).audio_config()
