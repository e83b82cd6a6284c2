"""fMP4 / CMAF: init segments, ``moof`` + ``mdat`` fragments and the per-stream muxer
that cuts LL-HLS parts from ``Frame`` objects. Sans-I/O, no clock.

* :mod:`media.fmp4.boxes`: box writers, :func:`fragment` (stateless);
* :mod:`media.fmp4.tracks`: :class:`VideoTrack` / :class:`AudioTrack` from FLV sequence
  headers, :func:`init_segment`;
* :mod:`media.fmp4.muxer`: :class:`Fmp4Muxer` (push frames, flush parts);
* :mod:`media.fmp4.cutter`: :class:`PartCutter` (the LL-HLS part / segment policy).
"""

from media.fmp4.boxes import SAMPLE_NON_SYNC, SAMPLE_SYNC, Sample, TrackFragment, fragment, styp
from media.fmp4.cutter import Cut, PartCutter
from media.fmp4.muxer import Fmp4Muxer, InitSegment, Part, TrackRun
from media.fmp4.tracks import AudioTrack, Track, VideoTrack, init_segment

__all__ = [
    "SAMPLE_NON_SYNC",
    "SAMPLE_SYNC",
    "AudioTrack",
    "Cut",
    "Fmp4Muxer",
    "InitSegment",
    "Part",
    "PartCutter",
    "Sample",
    "Track",
    "TrackFragment",
    "TrackRun",
    "VideoTrack",
    "fragment",
    "init_segment",
    "styp",
]
