"""The LL-HLS media playlist of one stream: segments and parts in a sliding window.

Sans-I/O: :class:`LivePlaylist` is fed the parts a :class:`media.fmp4.PartCutter` cuts
(``add``), told when the publisher changed (``mark_discontinuity``), and renders the playlist
text (``render``). It never reads the clock: ``now`` (seconds since the epoch) comes in with
every part, for ``EXT-X-PROGRAM-DATE-TIME``.

Naming: a segment has a media sequence number (``msn``), a part its index in the segment.
URIs are relative to ``/APP/STREAM.m3u8``: ``STREAM.hls/TOKEN/seg-MSN.m4s``,
``STREAM.hls/TOKEN/part-MSN.INDEX.m4s``, ``STREAM.hls/TOKEN/init-ID.mp4``. ``TOKEN`` is
per packager instance, so a URI always names the same bytes (a CDN may cache it forever)
even when the stream restarts and numbering begins again.

Rules kept (RFC 8216bis, LL-HLS): a part is never listed longer than ``PART-TARGET``
(the cutter's promise); ``PART-HOLD-BACK`` = 3 x ``PART-TARGET``; ``TARGETDURATION`` covers
the longest segment the cutter can make (``segment_max`` + a part); ``EXT-X-DISCONTINUITY``
with a new ``EXT-X-MAP`` when the init segment changes (codec change) and a discontinuity
when the publisher changed (takeover, reconnect); ``EXT-X-DISCONTINUITY-SEQUENCE`` counts
those that slid out of the window; parts are listed for the last few segments only; a
``EXT-X-PRELOAD-HINT`` names the next part.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from media.fmp4 import InitSegment, Part, styp

__all__ = ["FILE_RE", "LivePlaylist", "PlaylistPart", "PlaylistSegment"]

VERSION = 9
"""``EXT-X-VERSION``. RFC 8216bis asks version 6 for ``EXT-X-MAP`` in a media playlist and
ties no version to the LL-HLS tags; 9 (the delta-update version) is what LL-HLS servers
announce and every LL-HLS client accepts. We send no ``EXT-X-SKIP``."""

PART_SEGMENTS = 3
"""Parts are listed for the open segment and this many complete ones before it (RFC
8216bis: at least the last three target durations' worth is not required; players need
the parts near the live edge only)."""

RETIRED = 3
"""Segments kept in memory after they slid out of the window (a slow client that just read
the previous playlist can still fetch them)."""

FILE_RE = re.compile(
    r"^(?:init-(\d{1,9})\.mp4|seg-(\d{1,12})\.m4s|part-(\d{1,12})\.(\d{1,4})\.m4s)$"
)


@dataclass(slots=True)
class PlaylistPart:
    data: bytes
    duration: float
    independent: bool


@dataclass(slots=True)
class PlaylistSegment:
    msn: int
    init_id: int
    epoch: int
    """Which publisher timeline (bumped at every discontinuity), for the wall-clock anchor."""
    start: float
    """Media time (seconds) of the first part."""
    discontinuity: bool
    parts: list[PlaylistPart] = field(default_factory=list)
    complete: bool = False
    _data: bytes | None = None

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.parts)

    @property
    def data(self) -> bytes:
        """The whole segment (``styp`` + its parts), built once it is complete."""
        if self._data is None:
            data = styp() + b"".join(p.data for p in self.parts)
            if not self.complete:
                return data
            self._data = data
        return self._data


class LivePlaylist:
    """Segments of one stream in a window of ``window`` complete segments (plus the open
    one); ``token`` goes into every URI (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        token: str,
        part_target: float,
        segment_max: float,
        window: int = 6,
    ) -> None:
        if window < 2:
            raise ValueError("the window needs at least 2 segments")
        self.name = name
        self.token = token
        self.part_target = part_target
        self.target_duration = max(1, math.floor(segment_max + part_target + 0.5))
        self.window = window
        self.segments: deque[PlaylistSegment] = deque()
        self.retired: deque[PlaylistSegment] = deque(maxlen=RETIRED)
        self.inits: dict[int, bytes] = {}
        self.next_msn = 0
        self.discontinuity_sequence = 0
        self.parts_total = 0
        self._init: InitSegment | None = None
        self._init_id = 0
        self._epoch = 0
        self._anchors: dict[int, float] = {}
        """Per epoch: wall-clock time (epoch seconds) of media time 0."""
        self._pending_discontinuity = False
        self._text: str | None = None
        """The rendered playlist until the next change (every waiter woken by a part gets
        the same text: rendered once per part, not once per request)."""

    # ------------------------------------------------------------ input

    @property
    def open_segment(self) -> PlaylistSegment | None:
        if self.segments and not self.segments[-1].complete:
            return self.segments[-1]
        return None

    def mark_discontinuity(self) -> None:
        """The publisher changed: the next part opens a segment after a discontinuity."""
        if self.segments:
            self._pending_discontinuity = True
        self.close_segment()

    def close_segment(self) -> None:
        """The open segment is complete (the cutter finished: the publisher left)."""
        seg = self.open_segment
        if seg is not None:
            seg.complete = True
            self._text = None
            self._trim()

    def add(self, part: Part, new_segment: bool, now: float) -> PlaylistSegment:
        """Add a part the cutter made at wall-clock time ``now``; returns its segment."""
        self._text = None
        discontinuity = self._pending_discontinuity
        if part.init is not self._init:
            if self._init is not None:
                discontinuity = True
            self._init = part.init
            self._init_id += 1
            self.inits[self._init_id] = part.init.data
        if discontinuity:
            self._epoch += 1
        end = part.start + part.duration
        anchor = self._anchors.get(self._epoch)
        # A part is cut when the frame after it arrives: its end is (about) now. The
        # smallest offset seen is the least delayed one (a burst of cached frames at the
        # start, or a late batch, only ever make it larger).
        if anchor is None or now - end < anchor:
            self._anchors[self._epoch] = now - end
        seg = self.open_segment
        if seg is None or new_segment or discontinuity:
            if seg is not None:
                seg.complete = True
            seg = PlaylistSegment(
                msn=self.next_msn,
                init_id=self._init_id,
                epoch=self._epoch,
                start=part.start,
                discontinuity=discontinuity,
            )
            self.next_msn += 1
            self.segments.append(seg)
            self._trim()
        self._pending_discontinuity = False
        seg.parts.append(PlaylistPart(part.data, part.duration, part.independent))
        self.parts_total += 1
        return seg

    def _trim(self) -> None:
        complete = sum(1 for s in self.segments if s.complete)
        while complete > self.window:
            old = self.segments.popleft()
            complete -= 1
            if old.discontinuity:
                self.discontinuity_sequence += 1
            self.retired.append(old)
        live_inits = {s.init_id for s in self.segments} | {s.init_id for s in self.retired}
        for key in [k for k in self.inits if k not in live_inits]:
            del self.inits[key]

    # ------------------------------------------------------------ positions

    @property
    def empty(self) -> bool:
        return not self.segments

    def next_position(self) -> tuple[int, int]:
        """(msn, part index) of the part that comes next (the preload hint)."""
        seg = self.open_segment
        if seg is not None:
            return seg.msn, len(seg.parts)
        return self.next_msn, 0

    def has(self, msn: int, part: int | None) -> bool:
        """Does the playlist hold segment ``msn`` complete (``part`` None), or its part
        ``part`` (a part index past the end of a complete segment counts as there: the
        next segment's first part took its place)?"""
        seg = self.open_segment
        open_msn = seg.msn if seg is not None else self.next_msn
        if msn < open_msn:
            return True
        if msn > open_msn or part is None or seg is None:
            return False
        return part < len(seg.parts)

    def too_far(self, msn: int) -> bool:
        """RFC 8216bis: an ``_HLS_msn`` more than two past the last segment is refused."""
        last = self.segments[-1].msn if self.segments else -1
        return msn > last + 2

    # ------------------------------------------------------------ files

    def _find(self, msn: int) -> PlaylistSegment | None:
        for group in (self.segments, self.retired):
            if group and group[0].msn <= msn <= group[-1].msn:
                for seg in group:
                    if seg.msn == msn:
                        return seg
        return None

    def segment_data(self, msn: int) -> bytes | None:
        seg = self._find(msn)
        return seg.data if seg is not None and seg.complete else None

    def part_data(self, msn: int, index: int) -> bytes | None:
        seg = self._find(msn)
        if seg is None or index >= len(seg.parts):
            return None
        return seg.parts[index].data

    def init_data(self, init_id: int) -> bytes | None:
        return self.inits.get(init_id)

    # ------------------------------------------------------------ text

    def uri(self, file: str) -> str:
        return f"{self.name}.hls/{self.token}/{file}"

    def render(self) -> str:
        if self._text is None:
            self._text = self._render()
        return self._text

    def _render(self) -> str:
        pt = self.part_target
        lines = [
            "#EXTM3U",
            f"#EXT-X-VERSION:{VERSION}",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,"
            f"PART-HOLD-BACK={_dur(math.ceil(3 * pt * 1000) / 1000)}",
            f"#EXT-X-PART-INF:PART-TARGET={_dur(pt)}",
        ]
        segs = self.segments
        first = segs[0].msn if segs else self.next_msn
        lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first}")
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        complete = [s for s in segs if s.complete]
        with_parts = {s.msn for s in complete[-PART_SEGMENTS:]}
        map_id = -1
        for seg in segs:
            if seg.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            if seg.init_id != map_id:
                map_id = seg.init_id
                lines.append(f'#EXT-X-MAP:URI="{self.uri(f"init-{map_id}.mp4")}"')
            anchor = self._anchors.get(seg.epoch, 0.0)
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{_iso(anchor + seg.start)}")
            if not seg.complete or seg.msn in with_parts:
                for i, p in enumerate(seg.parts):
                    indep = ",INDEPENDENT=YES" if p.independent else ""
                    uri = self.uri(f"part-{seg.msn}.{i}.m4s")
                    lines.append(f'#EXT-X-PART:DURATION={_dur(p.duration)},URI="{uri}"{indep}')
            if seg.complete:
                lines.append(f"#EXTINF:{_dur(seg.duration)},")
                lines.append(self.uri(f"seg-{seg.msn}.m4s"))
        msn, idx = self.next_position()
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{self.uri(f"part-{msn}.{idx}.m4s")}"')
        return "\n".join(lines) + "\n"


def _dur(seconds: float) -> str:
    # Rounded down, so a part the cutter kept within PART-TARGET never reads longer.
    text = f"{math.floor(seconds * 100000) / 100000:.5f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
