"""``PartCutter``: when to cut LL-HLS parts and segments, over an :class:`Fmp4Muxer`.

The policy the relay needs, kept beside the muxer so it is tested against it::

    cutter = PartCutter(part_target=0.333, segment_target=1.0)
    for frame in frames:
        for cut in cutter.push(frame):
            playlist.add(cut.part, new_segment=cut.new_segment)
    for cut in cutter.finish():
        ...

Rules:

* a part never lasts longer than ``part_target`` (LL-HLS ``PART-TARGET``): before a frame
  of the main track (video, else audio; audio while video is stopped) is pushed, the
  muxer is asked how long the part would be with it, and flushes first if that is too
  long. Only a single frame interval longer than the target can make a longer part;
* a segment opens with a video keyframe once the running segment reached
  ``segment_target`` (that keyframe opens the next part, so the part is independent);
  without video, at the first part boundary past ``segment_target``. ``segment_max``
  (optional) also closes a segment at a part boundary once it is that long, keyframe or
  not (a stream with rare keyframes keeps segments within the playlist's target);
* with video, every part has video (the muxer writes no audio-only part) but while video
  is stopped (below): the audio
  sample straddling a segment's opening keyframe goes in that keyframe's part, also in
  ``finish()`` when the held keyframe opens the last segment;
* a codec change ends the segment (the muxer's forced part); the next part opens a new
  one under the new ``part.init``: the relay writes ``EXT-X-DISCONTINUITY`` and a new
  ``EXT-X-MAP`` there;
* video stopping while audio goes on (an app sent to the background, a camera unplugged,
  an encoder dropping video) does not stop the parts: once an audio frame comes more than
  ``video_gap`` after the newest video sample, the video held is written (lasting as long
  as the frame before it; :meth:`Fmp4Muxer.stop_video`) and parts are cut on audio time,
  audio-only (independent: every AAC frame is a sync sample), within ``part_target``;
  segments close at the first part boundary past ``segment_target``, as for a stream
  without video. When video is back, the audio before its first frame goes out, that
  frame's part returns to cutting on video and, if it is a keyframe, opens a segment (a
  frame that is not a keyframe continues the segment: it still needs the pictures before
  the gap). Nothing is dropped for the gap; the video track has no sample over it.

  ``video_gap`` defaults to 2 x ``part_target``: a player at the live edge holds
  ``PART-HOLD-BACK`` (3 x ``part_target``) ahead of its playhead, and the audio that came
  during ``video_gap`` is cut into parts at once when the gap is seen, so it reaches the
  player before that buffer runs out (``segment_max``, 4 s, would stall every
  low-latency player for seconds at every gap). The cost of a short bound: a publisher
  whose audio runs more than ``video_gap`` ahead of its video, or video slower than one
  frame per ``video_gap`` (1.5 fps at 0.333 s), gets audio-led stretches between its
  pictures (nothing lost either; shorter parts, holes in the video track).
"""

from __future__ import annotations

from dataclasses import dataclass

from media.errors import LocalProtocolError
from media.fmp4.muxer import Fmp4Muxer, InitSegment, Part
from media.frame import Frame, Kind

__all__ = ["Cut", "PartCutter"]

_EPSILON = 1e-6
"""Seconds: durations are sums of tick counts divided by the timescale."""


@dataclass(frozen=True, slots=True)
class Cut:
    part: Part
    new_segment: bool
    """This part opens a segment (the stream's first part, a keyframe past the segment
    target, the first part after an init change)."""


class PartCutter:
    """Feeds one stream's frames to an :class:`Fmp4Muxer` and cuts parts and segments."""

    def __init__(
        self,
        *,
        part_target: float = 0.333,
        segment_target: float = 1.0,
        segment_max: float | None = None,
        video_gap: float | None = None,
        muxer: Fmp4Muxer | None = None,
    ) -> None:
        if not 0 < part_target <= segment_target:
            raise LocalProtocolError("need 0 < part_target <= segment_target")
        if video_gap is not None and video_gap < part_target:
            raise LocalProtocolError("video_gap must be at least part_target")
        if segment_max is not None and segment_max < segment_target:
            raise LocalProtocolError("segment_max must be at least segment_target")
        self.part_target = part_target
        self.segment_target = segment_target
        self.segment_max = segment_max
        self.video_gap = 2 * part_target if video_gap is None else video_gap
        """Seconds of audio with no video sample after which parts are cut on audio."""
        self.muxer = muxer if muxer is not None else Fmp4Muxer()
        self._segment_elapsed = 0.0
        self._new_segment = True
        self._init: InitSegment | None = None

    @property
    def segment_elapsed(self) -> float:
        """Seconds of parts already cut in the current segment."""
        return 0.0 if self._new_segment else self._segment_elapsed

    def push(self, frame: Frame) -> list[Cut]:
        """Push one frame; returns the parts it completed (zero, one or two)."""
        out: list[Cut] = []
        muxer = self.muxer
        main = muxer.main_kind  # a flush never changes it; a header's push may
        if frame.header:
            # A changed codec config makes the muxer write out all it holds: cut what is
            # ready first, so that forced part holds only the newest sample of each track.
            cut_first = muxer.changes_init(frame)
        else:
            cut_first = (
                frame.kind == main and muxer.pending_duration_at(frame.dts) > self.part_target
            )
        if cut_first:
            self._emit(muxer.flush_part(), out)
        # The segment's length up to this frame, read before the push: after it the newest
        # sample is held with no duration yet, so a keyframe exactly at the target (a 1 s
        # GOP with a 1 s target) would look one frame short and be missed.
        key_due = (
            frame.kind == Kind.VIDEO
            and frame.keyframe
            and main == Kind.VIDEO
            and self.segment_elapsed + muxer.pending_duration_at(frame.dts)
            >= self.segment_target - _EPSILON
        )
        resuming = frame.kind == Kind.VIDEO and main == Kind.AUDIO and not frame.header
        forced = muxer.push(frame)
        if forced is not None:
            self._emit(forced, out)
            self._new_segment = True
        if key_due and forced is None:
            self._emit(muxer.flush_part(), out)
            self._new_segment = True
        if resuming and muxer.main_kind == Kind.VIDEO:
            # Video is back (the muxer took the frame): the audio stamped before it goes
            # out alone, then cutting returns to video; a keyframe opens a segment.
            self._emit(muxer.flush_part(), out)
            if frame.keyframe:
                self._new_segment = True
        elif (
            frame.kind == Kind.AUDIO
            and main == Kind.VIDEO
            and not frame.header
            and muxer.last_video_dts is not None
            and frame.dts - muxer.last_video_dts > self.video_gap * 1000
        ):
            self._stop_video(out)
        return out

    def _stop_video(self, out: list[Cut]) -> None:
        """No video for ``video_gap``: write the video held, then cut the audio that came
        since into parts within the target (at once: it is already late)."""
        muxer = self.muxer
        for written in muxer.stop_video(max_duration=self.part_target):
            self._emit(written, out)
        if muxer.main_kind != Kind.AUDIO:
            return  # no audio track: nothing to lead
        while muxer.pending_duration > self.part_target + _EPSILON:
            part = muxer.flush_part(max_duration=self.part_target)
            if part is None:
                break
            self._emit(part, out)

    def finish(self) -> list[Cut]:
        """The stream ended (or the relay stops packaging it): everything left, as at most
        two parts (what is ready, then the held samples; one part when only the held video
        frame is left, the audio before it with it). Frames pushed later (a publisher back
        within the linger) continue the timeline in a new segment."""
        out: list[Cut] = []
        self._emit(self.muxer.flush_part(), out)
        self._emit(self.muxer.flush_part(final=True), out)
        self._new_segment = True  # whatever comes next (a new publisher) opens a segment
        return out

    def _emit(self, part: Part | None, out: list[Cut]) -> None:
        if part is None:
            return
        if self._init is not None and part.init is not self._init:
            self._new_segment = True  # a new init segment: a new segment, whatever came before
        self._init = part.init
        if not part.has_video and self._segment_elapsed >= self.segment_target:
            # Audio-only parts (no video track, or video stopped) close a segment at the
            # first part boundary past the target: each of them may open one.
            self._new_segment = True
        if self._new_segment:
            self._new_segment = False
            self._segment_elapsed = 0.0
            out.append(Cut(part, True))
        else:
            out.append(Cut(part, False))
        self._segment_elapsed += part.duration
        if self.segment_max is not None and self._segment_elapsed >= self.segment_max:
            self._new_segment = True
