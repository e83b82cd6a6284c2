"""A structural checker of LL-HLS media playlists (RFC 8216bis rules the relay promises).

``parse(text)`` reads one playlist; ``check(playlist)`` enforces the rules of one
playlist; :class:`History` enforces those across successive reloads (media sequence
monotonic, a segment keeps its number and duration, the discontinuity sequence counts what
slid out, the window stays bounded). Written from the RFC, not from the server's code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attrs(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in ATTR.findall(text)}


@dataclass
class Segment:
    msn: int
    discontinuity: bool = False
    map_uri: str | None = None
    pdt: str | None = None
    parts: list[dict[str, str]] = field(default_factory=list)
    duration: float | None = None
    uri: str | None = None


@dataclass
class Playlist:
    tags: dict[str, str]
    segments: list[Segment]
    preload_hint: dict[str, str] | None
    media_sequence: int
    discontinuity_sequence: int
    target_duration: int
    part_target: float


class PlaylistError(AssertionError):
    pass


def _need(cond: bool, why: str) -> None:
    if not cond:
        raise PlaylistError(why)


def parse(text: str) -> Playlist:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    _need(lines and lines[0] == "#EXTM3U", "no #EXTM3U first")
    tags: dict[str, str] = {}
    segments: list[Segment] = []
    hint = None
    seq = None
    cur: Segment | None = None
    map_uri: str | None = None
    pending_disc = False
    pending_pdt: str | None = None
    for ln in lines[1:]:
        name, _, value = ln.partition(":")
        if seq is None and name == "#EXT-X-MEDIA-SEQUENCE":
            seq = int(value)
        if cur is None and name in ("#EXT-X-PART", "#EXTINF"):
            cur = Segment(msn=(seq or 0) + len(segments), discontinuity=pending_disc)
            cur.map_uri, cur.pdt = map_uri, pending_pdt
            pending_disc, pending_pdt = False, None
        if name == "#EXT-X-DISCONTINUITY":
            _need(cur is None, "discontinuity inside a segment's parts")
            pending_disc = True
        elif name == "#EXT-X-MAP":
            _need(cur is None, "map inside a segment's parts")
            map_uri = attrs(value)["URI"]
        elif name == "#EXT-X-PROGRAM-DATE-TIME":
            _need(cur is None, "date inside a segment's parts")
            pending_pdt = value
        elif name == "#EXT-X-PART":
            assert cur is not None
            cur.parts.append(attrs(value))
        elif name == "#EXTINF":
            assert cur is not None
            cur.duration = float(value.split(",")[0])
        elif name == "#EXT-X-PRELOAD-HINT":
            hint = attrs(value)
        elif not ln.startswith("#"):
            _need(cur is not None and cur.duration is not None, f"URI without #EXTINF: {ln}")
            assert cur is not None
            cur.uri = ln
            segments.append(cur)
            cur = None
        else:
            tags[name] = value
    if cur is not None:
        _need(cur.duration is None, "#EXTINF without URI")
        segments.append(cur)  # the open segment: parts only
    inf = attrs(tags.get("#EXT-X-PART-INF", ""))
    return Playlist(
        tags=tags,
        segments=segments,
        preload_hint=hint,
        media_sequence=seq if seq is not None else 0,
        discontinuity_sequence=int(tags.get("#EXT-X-DISCONTINUITY-SEQUENCE", "0")),
        target_duration=int(tags.get("#EXT-X-TARGETDURATION", "-1")),
        part_target=float(inf.get("PART-TARGET", "nan")),
    )


def check(pl: Playlist, *, max_segments: int | None = None) -> None:
    """One playlist's rules (raises :class:`PlaylistError`)."""
    _need(int(pl.tags.get("#EXT-X-VERSION", "0")) >= 6, "EXT-X-MAP needs version >= 6")
    _need(pl.target_duration >= 1, "no EXT-X-TARGETDURATION")
    _need(not math.isnan(pl.part_target) and pl.part_target > 0, "no PART-TARGET")
    ctl = attrs(pl.tags.get("#EXT-X-SERVER-CONTROL", ""))
    _need(ctl.get("CAN-BLOCK-RELOAD") == "YES", "no CAN-BLOCK-RELOAD=YES")
    _need(float(ctl.get("PART-HOLD-BACK", "0")) >= 3 * pl.part_target - 1e-9, "hold back")
    _need(pl.preload_hint is not None, "no preload hint")
    assert pl.preload_hint is not None
    _need(pl.preload_hint.get("TYPE") == "PART", "preload hint is not a part")
    _need(pl.segments != [], "no segments")
    _need(pl.segments[0].map_uri is not None, "no EXT-X-MAP before the first segment")
    if max_segments is not None:
        _need(len(pl.segments) <= max_segments, f"{len(pl.segments)} segments: window")
    last_map = pl.segments[0].map_uri
    uris: set[str] = set()
    for i, seg in enumerate(pl.segments):
        _need(seg.pdt is not None, f"segment {seg.msn}: no PROGRAM-DATE-TIME")
        if seg.map_uri != last_map:
            _need(seg.discontinuity, f"segment {seg.msn}: new map without a discontinuity")
            last_map = seg.map_uri
        for p in seg.parts:
            d = float(p["DURATION"])
            _need(0 < d <= pl.part_target, f"segment {seg.msn}: part of {d} > PART-TARGET")
            _need(p["URI"] not in uris, f"part URI twice: {p['URI']}")
            uris.add(p["URI"])
        if seg.parts:
            _need(seg.parts[0].get("INDEPENDENT") == "YES" or seg.discontinuity is False,
                  f"segment {seg.msn} after a discontinuity opens on a dependent part")  # fmt: skip
        if seg.duration is not None:
            _need(round(seg.duration) <= pl.target_duration, f"segment {seg.msn} too long")
            if seg.parts:
                total = sum(float(p["DURATION"]) for p in seg.parts)
                _need(abs(total - seg.duration) < 0.001 * (len(seg.parts) + 1),
                      f"segment {seg.msn}: parts {total} != EXTINF {seg.duration}")  # fmt: skip
        else:
            _need(i == len(pl.segments) - 1, "a segment without EXTINF before the last")
    # parts listed only at the end of the playlist (a contiguous run up to the open segment)
    with_parts = [i for i, s in enumerate(pl.segments) if s.parts]
    if with_parts:
        _need(with_parts == list(range(with_parts[0], len(pl.segments))), "gap in parts")
    # part indexes: the hint names the part after the last listed one
    last = pl.segments[-1]
    hint = pl.preload_hint["URI"]
    if last.duration is None:
        _need(hint.endswith(f"part-{last.msn}.{len(last.parts)}.m4s"), f"hint {hint}")
    else:
        _need(hint.endswith(f"part-{last.msn + 1}.0.m4s"), f"hint {hint}")
    for seg in pl.segments:
        for j, p in enumerate(seg.parts):
            _need(p["URI"].endswith(f"part-{seg.msn}.{j}.m4s"), f"part index {p['URI']}")


@dataclass
class History:
    """Successive reloads of one playlist."""

    max_segments: int | None = None
    seen: dict[int, Segment] = field(default_factory=dict)
    last: Playlist | None = None
    discontinuities: int = 0
    """Discontinuities seen (the highest discontinuity number observed)."""
    maps: set[str] = field(default_factory=set)

    def add(self, text: str) -> Playlist:
        pl = parse(text)
        check(pl, max_segments=self.max_segments)
        prev = self.last
        if prev is not None:
            _need(pl.media_sequence >= prev.media_sequence, "media sequence went back")
            _need(pl.discontinuity_sequence >= prev.discontinuity_sequence, "disc seq back")
            # the discontinuity sequence counts the tags that slid out (when the windows overlap)
            if prev.segments and pl.media_sequence <= prev.segments[-1].msn + 1:
                dropped = sum(s.discontinuity for s in prev.segments if s.msn < pl.media_sequence)
                _need(pl.discontinuity_sequence == prev.discontinuity_sequence + dropped,
                      "discontinuity sequence does not count dropped tags")  # fmt: skip
        number = pl.discontinuity_sequence
        for seg in pl.segments:
            number += seg.discontinuity
            old = self.seen.get(seg.msn)
            if old is not None and old.duration is not None:
                _need(seg.duration == old.duration, f"segment {seg.msn} changed its duration")
                _need(seg.discontinuity == old.discontinuity, f"segment {seg.msn} changed")
                _need(seg.map_uri == old.map_uri, f"segment {seg.msn} changed its map")
            if old is not None and old.parts and seg.parts:
                n = min(len(old.parts), len(seg.parts))
                _need(old.parts[:n] == seg.parts[:n], f"segment {seg.msn}: parts changed")
            self.seen[seg.msn] = seg
            if seg.map_uri:
                self.maps.add(seg.map_uri)
        self.discontinuities = max(self.discontinuities, number)
        self.last = pl
        return pl
