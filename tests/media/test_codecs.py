"""media.codecs against real configuration records captured from ffmpeg.

The fixtures (tests/media/data/codec_fixtures.json) are regenerated with
``.venv/bin/python tests/media/data/make_codec_fixtures.py``; each holds the record bytes and
what ffprobe reported about the stream, which the parsers must agree with.
"""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.codecs import (
    AudioSpecificConfig,
    Av1Config,
    Av1SequenceHeader,
    AvcDecoderConfig,
    AvcSps,
    CodecError,
    HevcDecoderConfig,
    HevcSps,
    annexb_to_length_prefixed,
    audio_config,
    ensure_length_prefixed,
    is_annexb,
    length_prefixed_to_annexb,
    split_annexb,
    split_length_prefixed,
    unescape_rbsp,
    video_config,
)

FIXTURES: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "codec_fixtures.json").read_text()
)
FOURCC = {"h264": "avc1", "hevc": "hvc1", "av1": "av01"}
VIDEO = sorted(k for k in FIXTURES if k.split("_")[0] in FOURCC and "probe" in FIXTURES[k])
AUDIO = sorted(k for k in FIXTURES if k.startswith("aac_"))
PIX_FMTS = {  # ffprobe pix_fmt -> (chroma_format, bit depth)
    "yuv420p": (1, 8),
    "yuv422p": (2, 8),
    "yuv444p": (3, 8),
    "yuv420p10le": (1, 10),
}


def record(name: str) -> bytes:
    return bytes.fromhex(FIXTURES[name]["config"])


def fourcc(name: str) -> str:
    return FOURCC[name.split("_")[0]]


# --------------------------------------------------------------------------------------
# Agreement with ffprobe
# --------------------------------------------------------------------------------------


def test_fixture_set_is_complete() -> None:
    kinds = {name.split("_")[0] for name in VIDEO}
    assert kinds == {"h264", "hevc", "av1"}
    assert len(VIDEO) >= 12 and len(AUDIO) >= 4


@pytest.mark.parametrize("name", VIDEO)
def test_video_config_matches_ffprobe(name: str) -> None:
    probe = FIXTURES[name]["probe"]
    cfg = video_config(fourcc(name), record(name))
    assert (cfg.width, cfg.height) == (probe["width"], probe["height"])
    assert cfg.level == probe["level"]
    assert cfg.profile_name == probe["profile"]
    assert (cfg.chroma_format, cfg.bit_depth) == PIX_FMTS[probe["pix_fmt"]]
    assert cfg.interlaced == (probe["field_order"] != "progressive")
    if cfg.fps is not None:  # AV1 from these encoders carries no timing info
        assert cfg.fps == pytest.approx(float(Fraction(probe["r_frame_rate"])), rel=1e-9)
    else:
        assert fourcc(name) == "av01"


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("h264_baseline_640x360", "avc1.42c01e"),
        ("h264_main_640x360_25", "avc1.4d401e"),
        ("h264_high_1280x720", "avc1.64001f"),
        ("h264_high10_640x360", "avc1.6e001e"),
        ("hevc_main_640x360", "hvc1.1.6.L63.90"),
        ("hevc_main10_1280x720", "hvc1.2.4.L120.90"),
        ("hevc_rext444_640x360", "hvc1.4.10.L63.9E.8"),
        ("av1_aom_640x360", "av01.0.01M.08"),
        ("av1_svt_10bit_640x360", "av01.0.01M.10"),
    ],
)
def test_rfc6381_codec_strings(name: str, codec: str) -> None:
    assert video_config(fourcc(name), record(name)).codec == codec


def test_hevc_codec_string_sample_entry_and_tier() -> None:
    cfg = HevcDecoderConfig.parse(record("hevc_main_640x360"))
    assert cfg.video_config("hev1").codec == "hev1.1.6.L63.90"
    high = dataclasses.replace(cfg, tier=1, profile_space=1, constraint_flags=0)
    assert high.codec_string() == "hvc1.A1.6.H63"


@pytest.mark.parametrize("name", AUDIO)
def test_audio_config_matches_ffprobe(name: str) -> None:
    probe = FIXTURES[name]["probe"]
    cfg = audio_config(record(name))
    assert cfg.codec == "mp4a.40.2" and cfg.object_type == 2
    assert cfg.sample_rate == int(probe["sample_rate"])
    assert cfg.channels == probe["channels"]
    assert not cfg.sbr and not cfg.ps
    # ffmpeg appends the backward-compatible "no SBR" sync extension (0x2b7, sbrPresentFlag 0)
    assert len(record(name)) == 5


# --------------------------------------------------------------------------------------
# Record structure and round trips
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in VIDEO if n.startswith("h264")])
def test_avcc_round_trip_and_rebuild(name: str) -> None:
    data = record(name)
    cfg = AvcDecoderConfig.parse(data)
    assert bytes(cfg) == data
    assert cfg.nalu_length_size == 4 and len(cfg.sps) == 1 and len(cfg.pps) == 1
    assert cfg.sps[0][0] & 0x1F == 7 and cfg.pps[0][0] & 0x1F == 8
    # The record ffmpeg writes is exactly what we build from the bare parameter sets.
    assert bytes(AvcDecoderConfig.from_parameter_sets(cfg.sps, cfg.pps)) == data
    if cfg.profile_idc >= 100:
        sps = cfg.parsed_sps()
        assert cfg.chroma_format_idc == sps.chroma_format_idc
        assert cfg.bit_depth_luma == sps.bit_depth_luma


@pytest.mark.parametrize("name", [n for n in VIDEO if n.startswith("hevc")])
def test_hvcc_round_trip_and_sps_agreement(name: str) -> None:
    data = record(name)
    cfg = HevcDecoderConfig.parse(data)
    assert bytes(cfg) == data
    assert [a.nal_unit_type for a in cfg.arrays][:3] == [32, 33, 34]
    sps = cfg.parsed_sps()
    assert cfg.codec_string() == sps.codec_string()
    assert (cfg.chroma_format_idc, cfg.bit_depth_luma) == (
        sps.chroma_format_idc,
        sps.bit_depth_luma,
    )
    rebuilt = HevcDecoderConfig.from_parameter_sets(cfg.vps, cfg.sps, cfg.pps)
    assert rebuilt.video_config() == cfg.video_config()
    assert HevcDecoderConfig.parse(bytes(rebuilt)) == rebuilt


@pytest.mark.parametrize("name", [n for n in VIDEO if n.startswith("av1")])
def test_av1c_round_trip(name: str) -> None:
    data = record(name)
    cfg = Av1Config.parse(data)
    assert bytes(cfg) == data
    seq = cfg.sequence_header()
    assert seq is not None and seq.bit_depth == cfg.bit_depth
    assert (seq.seq_profile, seq.seq_level_idx) == (cfg.seq_profile, cfg.seq_level_idx)
    # Some encoders send the bare sequence header OBU instead of an av1C.
    assert video_config("av01", cfg.config_obus) == cfg.video_config()


def test_sps_details_cropping_and_interlace() -> None:
    odd = AvcDecoderConfig.parse(record("h264_high_cqm_642x362")).parsed_sps()
    assert (odd.coded_width, odd.coded_height) == (656, 368)
    assert (odd.crop_right, odd.crop_bottom) == (14, 6)
    assert (odd.num_units_in_tick, odd.time_scale) == (1001, 60000)
    # x264 codes custom matrices in the PPS, never in the SPS
    assert not odd.scaling_matrix_present
    interlaced = AvcDecoderConfig.parse(record("h264_high_interlaced_640x360")).parsed_sps()
    assert not interlaced.frame_mbs_only
    assert interlaced.coded_height == 384 and interlaced.crop_bottom == 24
    hevc = HevcDecoderConfig.parse(record("hevc_main_650x366")).parsed_sps()
    assert (hevc.coded_width, hevc.coded_height) == (656, 368)
    assert (hevc.conf_win_right, hevc.conf_win_bottom) == (6, 2)


def test_hevc_sps_with_explicit_scaling_lists() -> None:
    cfg = HevcDecoderConfig.parse(record("hevc_main_scaling_list_640x360"))
    sps = cfg.parsed_sps()
    assert sps.scaling_list_enabled
    assert (sps.width, sps.height, sps.fps) == (640, 360, 30.0)
    # The lists are most of the SPS: a wrong parse of them would shift the VUI read above.
    assert len(cfg.sps[0]) > 150


def test_emulation_prevention_is_removed() -> None:
    assert (
        unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03\x00\x00\x03")
        == b"\x00\x00\x01\x00\x00\x00\x00"
    )
    assert unescape_rbsp(b"\x00\x00\x03\x03") == b"\x00\x00\x03"
    sps = AvcDecoderConfig.parse(record("h264_baseline_640x360")).sps[0]
    assert b"\x00\x00\x03" in sps and b"\x00\x00\x03" not in unescape_rbsp(sps)


# --------------------------------------------------------------------------------------
# Hand-built bitstreams: features no fixture encoder produces
# --------------------------------------------------------------------------------------


class BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> BitWriter:
        self.bits += [(value >> (n - 1 - i)) & 1 for i in range(n)]
        return self

    def ue(self, value: int) -> BitWriter:
        code = value + 1
        return self.u(code.bit_length() - 1, 0).u(code.bit_length(), code)

    def se(self, value: int) -> BitWriter:
        return self.ue(2 * value - 1 if value > 0 else -2 * value)

    def bytes(self, trailing: bool = False) -> bytes:
        bits = self.bits + ([1] if trailing else [])
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8))


def escape_rbsp(rbsp: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def h264_sps(
    profile: int = 244, chroma: int = 3, lists: tuple[list[int] | None, ...] = (), **vui: int
) -> bytes:
    w = BitWriter().u(8, profile).u(8, 0).u(8, 40).ue(0)
    w.ue(chroma)
    if chroma == 3:
        w.u(1, 0)
    w.ue(2).ue(2).u(1, 0)  # 10-bit luma and chroma, no transform bypass
    w.u(1, 1)  # seq_scaling_matrix_present_flag
    for i in range(12 if chroma == 3 else 8):
        deltas = lists[i] if i < len(lists) else None
        w.u(1, deltas is not None)
        for d in deltas or ():
            w.se(d)
    w.ue(0).ue(1)  # log2_max_frame_num_minus4, poc type 1
    w.u(1, 0).se(-2).se(3).ue(2).se(5).se(-7)
    w.ue(3).u(1, 0).ue(119).ue(67).u(1, 1).u(1, 1)  # 1920 x 1088, frame_mbs_only
    w.u(1, 1).ue(0).ue(0).ue(0).ue(8)  # crop bottom 8 (4:4:4 -> unit 1)
    w.u(1, 1)  # VUI
    w.u(1, 1).u(8, 255).u(16, 4).u(16, 3)  # extended SAR 4:3
    w.u(1, 0).u(1, 1).u(3, 5).u(1, 1).u(1, 1).u(24, 0x010101)  # video signal + colour
    w.u(1, 1).ue(1).ue(1)  # chroma location
    w.u(1, 1).u(32, vui.get("units", 1001)).u(32, vui.get("scale", 120000)).u(1, 1)
    return bytes([0x67]) + escape_rbsp(w.bytes(trailing=True))


def test_h264_sps_with_twelve_scaling_lists() -> None:
    # 4x4 lists are 16 deltas, 8x8 lists 64, and a delta that makes nextScale 0 ends a list
    # early ("use the default matrix").
    flat16 = [0] * 16
    early = [-8]
    ramp64 = [1] * 64
    lists = (flat16, None, early, flat16, None, None, ramp64, early, None, ramp64, None, early)
    sps = AvcSps.parse(h264_sps(lists=lists))
    assert sps.scaling_matrix_present and sps.chroma_format_idc == 3
    assert (sps.bit_depth_luma, sps.bit_depth_chroma) == (10, 10)
    assert (sps.width, sps.height) == (1920, 1080)
    assert sps.sample_aspect_ratio == (4, 3)
    assert sps.fps == pytest.approx(59.94, rel=1e-4)
    assert sps.pic_order_cnt_type == 1


def test_h264_sps_eight_lists_for_420() -> None:
    # 8x8 lists counting down from 8: the eighth delta reaches 0 and ends the list.
    sps = AvcSps.parse(h264_sps(profile=100, chroma=1, lists=([3] * 16,) * 6 + ([-1] * 8,) * 2))
    assert (sps.width, sps.height) == (1920, 1072)  # crop unit 2 for 4:2:0
    assert sps.fps == pytest.approx(59.94, rel=1e-4)


def test_avc_record_from_annexb_access_unit() -> None:
    au = FIXTURES["h264_access_unit"]
    annexb = bytes.fromhex(au["annexb"])
    sample = bytes.fromhex(au["length_prefixed"])
    assert is_annexb(annexb) and not is_annexb(sample)
    nalus = split_annexb(annexb)
    types = [n[0] & 0x1F for n in nalus]
    assert 7 in types and 8 in types and 5 in types
    sps = [n for n in nalus if n[0] & 0x1F == 7]
    pps = [n for n in nalus if n[0] & 0x1F == 8]
    assert bytes(AvcDecoderConfig.from_parameter_sets(sps, pps)) == bytes.fromhex(au["config"])
    # The ffmpeg bitstream filter only inserted SPS/PPS: everything else is the MP4 sample.
    rest = [n for n in nalus if n[0] & 0x1F not in (7, 8)]
    assert split_length_prefixed(sample) == rest
    assert annexb_to_length_prefixed(b"".join(b"\x00\x00\x01" + n for n in rest)) == sample
    assert ensure_length_prefixed(annexb) == annexb_to_length_prefixed(annexb)
    assert ensure_length_prefixed(sample) == sample
    back = length_prefixed_to_annexb(sample)
    assert split_annexb(back) == rest
    for size in (1, 2, 3):
        converted = annexb_to_length_prefixed(annexb, size) if size > 1 else None
        if converted is not None:
            assert split_length_prefixed(converted, size) == nalus


def test_annexb_splitting_edge_cases() -> None:
    data = b"\x00\x00\x00\x01\x67\xaa\x00\x00\x01\x68\xbb\x00\x00\x00\x00\x01\x65\xcc\x00"
    assert split_annexb(data) == [b"\x67\xaa", b"\x68\xbb", b"\x65\xcc"]
    assert split_annexb(b"\x00\x00\x01\x00\x00\x01\x09\xf0") == [b"\x09\xf0"]
    with pytest.raises(CodecError, match="start code"):
        split_annexb(b"\x67\x00\x00\x01")
    with pytest.raises(CodecError, match="does not fit"):
        annexb_to_length_prefixed(b"\x00\x00\x01" + b"\x65" * 300, 1)
    with pytest.raises(CodecError, match=r"1\.\.4"):
        split_length_prefixed(b"", 5)
    # A 1-byte end-of-sequence NAL with a 4-byte length looks like a start code.
    eos = b"\x00\x00\x00\x01\x0a"
    assert ensure_length_prefixed(eos) == eos


def asc(*fields: tuple[int, int]) -> bytes:
    w = BitWriter()
    for n, v in fields:
        w.u(n, v)
    return w.bytes()


def test_aac_explicit_he_aac() -> None:
    # AOT 5, 24 kHz core, stereo, extension 48 kHz, core AOT 2, GA flags
    cfg = AudioSpecificConfig.parse(asc((5, 5), (4, 6), (4, 2), (4, 3), (5, 2), (3, 0)))
    assert (cfg.object_type, cfg.core_object_type, cfg.sbr, cfg.ps) == (5, 2, True, False)
    assert (cfg.sample_rate, cfg.output_sample_rate) == (24000, 48000)
    ac = cfg.audio_config()
    assert (ac.codec, ac.sample_rate, ac.channels) == ("mp4a.40.5", 48000, 2)


def test_aac_explicit_ps_mono_core() -> None:
    cfg = AudioSpecificConfig.parse(asc((5, 29), (4, 7), (4, 1), (4, 4), (5, 2), (3, 0)))
    ac = cfg.audio_config()
    assert (ac.codec, ac.sample_rate, ac.channels, ac.ps) == ("mp4a.40.29", 44100, 2, True)


def test_aac_backward_compatible_sbr_and_ps() -> None:
    data = asc(
        (5, 2), (4, 6), (4, 1), (3, 0), (11, 0x2B7), (5, 5), (1, 1), (4, 3), (11, 0x548), (1, 1)
    )
    cfg = AudioSpecificConfig.parse(data)
    assert (cfg.object_type, cfg.sbr, cfg.ps) == (2, True, True)
    assert cfg.audio_config() == dataclasses.replace(
        cfg.audio_config(), codec="mp4a.40.29", sample_rate=48000, channels=2
    )


def test_aac_escape_object_type_and_explicit_frequency() -> None:
    cfg = AudioSpecificConfig.parse(asc((5, 31), (6, 10), (4, 15), (24, 37800), (4, 2)))
    assert (cfg.object_type, cfg.sample_rate, cfg.channels) == (42, 37800, 2)
    assert cfg.codec_string == "mp4a.40.42"
    with pytest.raises(CodecError, match="explicit samplingFrequency is 0"):
        AudioSpecificConfig.parse(asc((5, 2), (4, 15), (24, 0), (4, 2), (3, 0)))


def test_aac_program_config_element() -> None:
    # channelConfiguration 0: a PCE with front SCE + CPE, back CPE, one LFE = 5.1
    pce = [(4, 0), (2, 1), (4, 3), (4, 2), (4, 0), (4, 1), (2, 1), (3, 0), (4, 0)]
    pce += [(1, 0), (1, 0), (1, 0)]  # no mixdowns
    pce += [(1, 0), (4, 0), (1, 1), (4, 0)]  # front: SCE, CPE
    pce += [(1, 1), (4, 1)]  # back: CPE
    pce += [(4, 0)]  # LFE
    fields = [(5, 2), (4, 3), (4, 0), (1, 1), (1, 0), (1, 0), *pce]
    data = asc(*fields)
    data += b"\x03abc"  # after byte alignment: comment_field_bytes + data
    cfg = AudioSpecificConfig.parse(data)
    assert cfg.program_config is not None
    assert (cfg.channels, cfg.frame_length, cfg.sample_rate) == (6, 960, 48000)
    with pytest.raises(CodecError, match="comment_field_data"):
        AudioSpecificConfig.parse(data[:-1])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (asc((5, 2), (4, 13), (4, 2), (3, 0)), "index 13 is reserved"),
        (asc((5, 2), (4, 4), (4, 9), (3, 0)), "channelConfiguration 9 is reserved"),
        (asc((5, 0), (4, 4), (4, 2), (3, 0)), "audioObjectType 0"),
        (b"\x12", "truncated reading"),
        (b"", "truncated reading audioObjectType"),
    ],
)
def test_aac_errors(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        AudioSpecificConfig.parse(data)


@pytest.mark.parametrize(
    ("fourcc_", "data", "message"),
    [
        ("avc1", b"\x02\x64\x00\x1f\xff\xe1", "configurationVersion 2"),
        ("avc1", b"\x01\x64\x00\x1f\xff\xe1\x00\x00", "empty parameter set"),
        ("avc1", b"\x01\x64\x00\x1f\xff\xe0\x00", "carries no SPS"),
        ("hvc1", b"\x02" + bytes(22), "configurationVersion 2"),
        ("hvc1", b"\x01" + bytes(21) + b"\x00", "carries no SPS"),
        ("av01", b"\x81\x00\x0c\x00", "no sequence header"),
        ("av01", b"\x80\x00\x0c\x00", "marker/version"),
        ("av01", b"\x81\xe0\x0c\x00", "seq_profile 7"),
        ("vp09", b"", "unsupported"),
    ],
)
def test_record_errors(fourcc_: str, data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        video_config(fourcc_, data)


def test_sps_errors_are_clear() -> None:
    pps = AvcDecoderConfig.parse(record("h264_main_640x360_25")).pps[0]
    with pytest.raises(CodecError, match="not an SPS"):
        AvcSps.parse(pps)
    with pytest.raises(CodecError, match="forbidden_zero_bit"):
        AvcSps.parse(b"\xe7\x42\x00\x1e")
    hevc = HevcDecoderConfig.parse(record("hevc_main_640x360"))
    with pytest.raises(CodecError, match="not an SPS"):
        HevcSps.parse(hevc.vps[0])
    with pytest.raises(CodecError, match="too long"):
        AvcSps.parse(b"\x67\x42\x00\x1e" + bytes(8))  # sps_id with > 31 leading zeros
    # Cropping more than the picture
    w = BitWriter().u(8, 66).u(8, 0).u(8, 30).ue(0).ue(0).ue(0).ue(1).ue(0).u(1, 0)
    w.ue(0).ue(0).u(1, 1).u(1, 1).u(1, 1).ue(0).ue(0).ue(0).ue(9).u(1, 0)
    with pytest.raises(CodecError, match="leaves nothing"):
        AvcSps.parse(b"\x67" + w.bytes(trailing=True))


# --------------------------------------------------------------------------------------
# Truncation and garbage: CodecError only
# --------------------------------------------------------------------------------------


def parse_any(kind: str, data: bytes) -> object:
    if kind == "aac":
        return audio_config(data)
    return video_config(kind, data)


@pytest.mark.parametrize("name", VIDEO + AUDIO)
def test_every_truncation_raises_codec_error_or_is_unchanged(name: str) -> None:
    data = record(name)
    kind = "aac" if name.startswith("aac") else fourcc(name)
    full = parse_any(kind, data)
    # Mandatory parts: everything but avcC's optional high-profile extension and the AAC
    # sync extension, which are skipped when absent.
    mandatory = len(data)
    if kind == "avc1":
        cfg = AvcDecoderConfig.parse(data)
        mandatory = len(bytes(dataclasses.replace(cfg, chroma_format_idc=None)))
    elif kind == "aac":
        mandatory = 2
    raised = 0
    for cut in range(len(data)):
        try:
            result = parse_any(kind, data[:cut])
        except CodecError as exc:
            assert str(exc)
            raised += 1
            continue
        assert cut >= mandatory, f"cut at {cut} of {len(data)} parsed: {result}"
        assert result == full
    assert raised >= min(mandatory, len(data))


@pytest.mark.parametrize("name", ["hevc_main_scaling_list_640x360", "h264_high10_640x360"])
def test_sps_truncations(name: str) -> None:
    kind = fourcc(name)
    sps = (
        AvcDecoderConfig.parse(record(name)).sps[0]
        if kind == "avc1"
        else HevcDecoderConfig.parse(record(name)).sps[0]
    )
    parse = AvcSps.parse if kind == "avc1" else HevcSps.parse
    full = parse(sps)
    outcomes: list[bool] = []  # True: parsed (identically), False: CodecError
    for cut in range(len(sps)):
        try:
            assert parse(sps[:cut]) == full  # only an unread tail was cut
            outcomes.append(True)
        except CodecError:
            outcomes.append(False)
    # Once a prefix parses, every longer one does; the fields we read span most of the SPS.
    first_ok = outcomes.index(True) if True in outcomes else len(outcomes)
    assert all(outcomes[first_ok:]) and not any(outcomes[:first_ok])
    assert first_ok >= len(sps) * 3 // 4


KINDS = ["avc1", "hvc1", "av01", "aac"]
GARBAGE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@GARBAGE
@given(kind=st.sampled_from(KINDS), data=st.binary(max_size=256))
def test_random_bytes_raise_only_codec_error(kind: str, data: bytes) -> None:
    try:
        parse_any(kind, data)
    except CodecError:
        pass


@GARBAGE
@given(
    name=st.sampled_from(VIDEO + AUDIO),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
)
def test_mutated_records_raise_only_codec_error(name: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(record(name))
    # Mutations land in the first 200 bytes, where parameter sets and headers are.
    for pos, value in edits:
        data[pos % min(len(data), 200)] = value
    kind = "aac" if name.startswith("aac") else fourcc(name)
    try:
        parse_any(kind, bytes(data))
    except CodecError:
        pass


@GARBAGE
@given(
    parser=st.sampled_from(
        [
            AvcSps.parse,
            HevcSps.parse,
            Av1SequenceHeader.find_in_obus,
            Av1SequenceHeader.parse_obu_payload,
            split_annexb,
            split_length_prefixed,
            ensure_length_prefixed,
            annexb_to_length_prefixed,
            length_prefixed_to_annexb,
        ]
    ),
    data=st.binary(max_size=128),
)
def test_random_bytes_into_low_level_parsers(parser: Any, data: bytes) -> None:
    try:
        parser(data)
    except CodecError:
        pass


@GARBAGE
@given(
    prefix=st.sampled_from([b"\x67", b"\x42\x01", b""]),
    bits=st.binary(min_size=1, max_size=64),
)
def test_sps_shaped_garbage(prefix: bytes, bits: bytes) -> None:
    for parse in (AvcSps.parse, HevcSps.parse):
        try:
            parse(prefix + bits)
        except CodecError:
            pass
