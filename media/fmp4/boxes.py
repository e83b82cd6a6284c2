"""ISO BMFF boxes for CMAF: the init segment (``ftyp`` + ``moov``) and fragments
(``moof`` + ``mdat``), written from plain values; no state, no I/O.

The box layouts follow ISO/IEC 14496-12 (and 14496-14 for ``esds``, 14496-15 for ``avcC`` /
``hvcC``, which arrive ready-made from the FLV sequence headers). Timing is in each track's
own timescale; :mod:`media.fmp4.muxer` does the conversion from FLV milliseconds.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from media.errors import LocalProtocolError

__all__ = [
    "SAMPLE_NON_SYNC",
    "SAMPLE_SYNC",
    "Sample",
    "TrackFragment",
    "box",
    "fragment",
    "full_box",
    "styp",
]

# sample_flags (ISO/IEC 14496-12 §8.8.3.1): is_leading(2) depends_on(2) is_depended_on(2)
# has_redundancy(2) padding(3) is_non_sync_sample(1) degradation_priority(16).
SAMPLE_SYNC = 0x02000000
"""A sync sample: depends on no other (``sample_depends_on`` = 2)."""
SAMPLE_NON_SYNC = 0x01010000
"""A non-sync sample: depends on others (1) and ``sample_is_non_sync_sample``."""

# tfhd / trun flags
_TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000
_TRUN_DATA_OFFSET = 0x000001
_TRUN_DURATION = 0x000100
_TRUN_SIZE = 0x000200
_TRUN_FLAGS = 0x000400
_TRUN_CTO = 0x000800

_U32 = struct.Struct(">I")
_MAX_BOX = 0xFFFFFFFF


def box(kind: bytes, *payload: bytes) -> bytes:
    """A box: 32-bit size, 4-character type, payload."""
    size = 8 + sum(len(p) for p in payload)
    if size > _MAX_BOX:
        raise LocalProtocolError(f"{kind!r} box of {size} bytes does not fit a 32-bit size")
    return b"".join((_U32.pack(size), kind, *payload))


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    """A full box: a box whose payload starts with version (8 bits) and flags (24 bits)."""
    return box(kind, _U32.pack((version << 24) | flags), *payload)


def ftyp(major: bytes, minor: int, compatible: Sequence[bytes]) -> bytes:
    return box(b"ftyp", major, _U32.pack(minor), *compatible)


def styp() -> bytes:
    """A CMAF segment type box (``msdh``, ``msix``, ``cmfs``), for the start of a segment
    written as one file; parts served one by one need none."""
    return box(b"styp", b"msdh", _U32.pack(0), b"msdh", b"msix", b"cmfs")


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a fragment: its bytes (kept as given, joined once into the ``mdat``),
    duration and composition time offset in the track's timescale, and whether it is a
    sync sample (a keyframe; every AAC frame)."""

    data: bytes | memoryview
    duration: int
    composition_offset: int = 0
    sync: bool = True


@dataclass(frozen=True, slots=True)
class TrackFragment:
    """The samples of one track in one fragment. ``base_decode_time`` (``tfdt``) is the
    decode time of the first sample in the track's timescale. ``composition_offsets``:
    write a per-sample composition time offset (video); audio needs none."""

    track_id: int
    base_decode_time: int
    samples: Sequence[Sample]
    composition_offsets: bool = True

    @property
    def data_size(self) -> int:
        return sum(len(s.data) for s in self.samples)

    @property
    def duration(self) -> int:
        return sum(s.duration for s in self.samples)


def _traf(track: TrackFragment) -> tuple[bytes, int]:
    """The ``traf`` of one track, and the offset of its ``trun`` data_offset field in it."""
    samples = track.samples
    if track.base_decode_time < 0:
        raise LocalProtocolError(f"track {track.track_id}: negative base decode time")
    for s in samples:
        if not 0 <= s.duration <= 0xFFFFFFFF:
            raise LocalProtocolError(f"track {track.track_id}: sample duration {s.duration}")
        if not -0x80000000 <= s.composition_offset <= 0x7FFFFFFF:
            raise LocalProtocolError(
                f"track {track.track_id}: composition offset {s.composition_offset}"
            )
    if track.composition_offsets:
        tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, _U32.pack(track.track_id))
        flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE | _TRUN_FLAGS | _TRUN_CTO
        entry = struct.Struct(">IIIi")
        rows = [
            entry.pack(
                s.duration, len(s.data), SAMPLE_SYNC if s.sync else SAMPLE_NON_SYNC,
                s.composition_offset,
            )
            for s in samples
        ]  # fmt: skip
    else:
        # Every sample a sync sample: one default in the tfhd instead of flags per sample.
        if not all(s.sync for s in samples):
            raise LocalProtocolError(
                f"track {track.track_id}: non-sync samples need per-sample flags"
            )
        tfhd = full_box(
            b"tfhd",
            0,
            _TFHD_DEFAULT_BASE_IS_MOOF | _TFHD_DEFAULT_SAMPLE_FLAGS,
            struct.pack(">II", track.track_id, SAMPLE_SYNC),
        )
        flags = _TRUN_DATA_OFFSET | _TRUN_DURATION | _TRUN_SIZE
        pair = struct.Struct(">II")
        rows = [pair.pack(s.duration, len(s.data)) for s in samples]
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", track.base_decode_time))
    # trun version 1: signed composition time offsets (B-frames before their reference).
    trun = full_box(b"trun", 1, flags, struct.pack(">Ii", len(samples), 0), *rows)
    traf = box(b"traf", tfhd, tfdt, trun)
    # traf header (8) + tfhd + tfdt + trun header (8) + version/flags (4) + sample_count (4)
    offset_pos = 8 + len(tfhd) + len(tfdt) + 16
    return traf, offset_pos


def fragment(sequence_number: int, tracks: Sequence[TrackFragment]) -> bytes:
    """``moof`` + ``mdat`` holding ``tracks`` (each track's samples contiguous in the
    ``mdat``, in the order given). ``sequence_number`` (``mfhd``) must grow by one per
    fragment of a stream. The ``tfhd`` sets default-base-is-moof, so each ``trun``
    data_offset counts from the first byte of the ``moof``."""
    if not tracks:
        raise LocalProtocolError("a fragment needs at least one track")
    if not 0 <= sequence_number <= 0xFFFFFFFF:
        raise LocalProtocolError(f"fragment sequence number {sequence_number} out of range")
    mfhd = full_box(b"mfhd", 0, 0, _U32.pack(sequence_number))
    trafs: list[bytes] = []
    positions: list[int] = []
    pos = 8 + len(mfhd)
    for track in tracks:
        traf, offset_pos = _traf(track)
        positions.append(pos + offset_pos)
        trafs.append(traf)
        pos += len(traf)
    moof = bytearray(box(b"moof", mfhd, *trafs))
    data_offset = len(moof) + 8
    for track, at in zip(tracks, positions, strict=True):
        if data_offset > 0x7FFFFFFF:
            raise LocalProtocolError("fragment too large for a 32-bit data offset")
        struct.pack_into(">i", moof, at, data_offset)
        data_offset += track.data_size
    mdat_size = data_offset - len(moof)
    if mdat_size > _MAX_BOX:
        raise LocalProtocolError(f"mdat of {mdat_size} bytes does not fit a 32-bit size")
    chunks: list[bytes | bytearray | memoryview] = [moof, _U32.pack(mdat_size), b"mdat"]
    for track in tracks:
        chunks.extend(s.data for s in track.samples)
    return b"".join(chunks)
