"""HLS playlists: read what ffmpeg writes for one part, write the replay's playlist.

A replay is a list of parts (one per ffmpeg run: a publisher session, a restart after a
crash, a codec change). Each part's playlist is ffmpeg's own; the replay playlist
concatenates them with ``#EXT-X-DISCONTINUITY`` between parts and the part's directory
prefixed to every URI. Pure functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float


@dataclass
class PartPlaylist:
    segments: list[Segment] = field(default_factory=list)
    init_uri: str | None = None
    """``#EXT-X-MAP`` URI (fMP4 parts)."""
    ended: bool = False

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


def _attr(line: str, name: str) -> str | None:
    key = f'{name}="'
    i = line.find(key)
    if i < 0:
        return None
    j = line.find('"', i + len(key))
    return line[i + len(key) : j] if j > 0 else None


def parse(text: str) -> PartPlaylist:
    """Segments of an ffmpeg media playlist; unknown tags are ignored."""
    out = PartPlaylist()
    pending: float | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXTINF:"):
            value = line[8:].split(",", 1)[0]
            try:
                pending = float(value)
            except ValueError:
                pending = None
        elif line.startswith("#EXT-X-MAP:"):
            out.init_uri = _attr(line, "URI")
        elif line.startswith("#EXT-X-ENDLIST"):
            out.ended = True
        elif not line.startswith("#"):
            if pending is not None and "/" not in line and ".." not in line:
                out.segments.append(Segment(line, pending))
            pending = None
    return out


def render(
    parts: list[tuple[str, PartPlaylist]],
    *,
    target: float,
    ended: bool,
    vod: bool,
    prefix: str = "",
) -> str:
    """One playlist over ``parts`` (``(directory, playlist)``), discontinuity between them.

    ``target`` is the configured segment length: the target duration is never below it, so
    it does not move while a live playlist grows unless a segment exceeds it.
    """
    longest = max((s.duration for _, p in parts for s in p.segments), default=target)
    fmp4 = any(p.init_uri for _, p in parts)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{7 if fmp4 else 3}",
        f"#EXT-X-TARGETDURATION:{max(1, math.ceil(max(longest, target) - 0.001))}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f"#EXT-X-PLAYLIST-TYPE:{'VOD' if vod else 'EVENT'}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]
    first = True
    for directory, part in parts:
        if not part.segments:
            continue
        if not first:
            lines.append("#EXT-X-DISCONTINUITY")
        first = False
        base = f"{prefix}{directory}/" if directory else prefix
        if part.init_uri:
            lines.append(f'#EXT-X-MAP:URI="{base}{part.init_uri}"')
        for seg in part.segments:
            lines.append(f"#EXTINF:{seg.duration:.6f},")
            lines.append(base + seg.uri)
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def locate(parts: list[tuple[float, float]], wall: float) -> float | None:
    """Replay time of wall-clock ``wall`` given each part's ``(wall_start, duration)``.

    Parts follow each other on the replay timeline; a time in a gap between parts (the
    publisher was reconnecting) maps to the start of the next part; after the last part,
    None.
    """
    offset = 0.0
    for start, duration in parts:
        if wall < start:
            return offset
        if wall < start + duration:
            return offset + (wall - start)
        offset += duration
    return None
