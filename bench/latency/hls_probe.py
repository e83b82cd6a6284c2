"""LL-HLS probe viewers: read the publisher's wall-clock stamps back out of fMP4 parts.

Each probe plays ``/APP/STREAM.m3u8`` as a low-latency client at the live edge, as fast as
the server lets it: one plain playlist request, then blocking reloads
(``_HLS_msn``/``_HLS_part`` of the part it waits for, held by the server until that part
exists); the init segment once (again when ``EXT-X-MAP`` changes); the part named by the
``EXT-X-PRELOAD-HINT`` requested at once (relay/hls_http.py holds that request until the
part is complete and then sends it whole; 404 when the segment closed first, the part
then being the next segment's first), and every part listed that it has not requested yet
as soon as a playlist lists it (after a segment boundary: the next segment's first part).
Parts older than the first hint are not fetched: the probe starts at the live edge.

For each part, its ``moof``/``traf``/``trun`` are parsed (:func:`video_samples`), each
video sample split into its NAL units (AVCC, the length size from the init segment's
``avcC``), and the SEI stamp of bench/latency/stamp.py read from them. Per stamped sample
two times: ``hls`` is ``now - stamp`` at the part's last byte read (what a player could
append to its buffer), ``hls-first`` at the response head's arrival (a held hinted part
comes whole, so the two differ by the transfer of one part). No player buffer, no
decoder, no hold-back: what the server adds, plus the loopback and this process's reads.

The server adds about a part by design: a frame waits for the part it belongs to to
close (up to ``PART-TARGET``), plus the muxer's one held-back frame (a sample's duration
comes from its successor). So the samples of one part spread over a part's duration.

What the cutting alone accounts for, in media time (the frame's timestamp to the timestamp
of the frame whose arrival closes its part), is :func:`cut_waits`, for a source file::

    .venv/bin/python -m bench.latency.hls_probe bench/results/cache/webrtc-720p30-nobf-60s.flv

Sans-I/O parsers (:func:`parse_playlist`, :func:`parse_init`, :func:`video_samples`,
:func:`part_stamps`) raise only :class:`FormatError`. Used by bench/latency/probe.py
(``--hls URL --hls-probes N``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import aiohttp

from bench.latency.stamp import read_stamp_nalus
from media import flv
from media.fmp4 import PartCutter
from media.frame import Frame, Kind

Samples = list[tuple[float, float]]

__all__ = [
    "FormatError",
    "HlsTimer",
    "InitInfo",
    "MediaPlaylist",
    "PartRef",
    "cut_waits",
    "hls_probe",
    "parse_init",
    "parse_playlist",
    "part_stamps",
    "video_samples",
]


class FormatError(ValueError):
    """A playlist, init segment or part this probe cannot read."""


# ------------------------------------------------------------------ playlist


@dataclass(frozen=True, slots=True)
class PartRef:
    """A part listed (or hinted) in a playlist: its position and URI (as written), and the
    ``EXT-X-MAP`` URI in force where it is listed."""

    msn: int
    index: int
    uri: str
    map_uri: str | None

    @property
    def position(self) -> tuple[int, int]:
        return self.msn, self.index


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    parts: tuple[PartRef, ...]
    hint: PartRef | None
    """The ``EXT-X-PRELOAD-HINT`` part (``TYPE=PART``), if any."""
    part_target: float | None

    def next_position(self) -> tuple[int, int] | None:
        """The part to ask a blocking reload for: the hinted one, else the one after the
        last listed part."""
        if self.hint is not None:
            return self.hint.position
        if self.parts:
            last = self.parts[-1]
            return last.msn, last.index + 1
        return None


_URI_RE = re.compile(r'URI="([^"]*)"')
_PART_TARGET_RE = re.compile(r"PART-TARGET=([0-9]+(?:\.[0-9]*)?)")
_MAX_PLAYLIST = 1 << 20


def _uri(line: str) -> str:
    m = _URI_RE.search(line)
    if m is None or not m.group(1):
        raise FormatError(f"no URI in {line[:80]!r}")
    return m.group(1)


def parse_playlist(text: str) -> MediaPlaylist:
    """The parts, preload hint and part target of an LL-HLS media playlist. Positions:
    segments count from ``EXT-X-MEDIA-SEQUENCE``; a part's index counts within its segment
    (a segment ends at its ``#EXTINF`` + URI), the hint continues the last segment."""
    if len(text) > _MAX_PLAYLIST:
        raise FormatError("playlist too large")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise FormatError("not an M3U playlist")
    msn, index = 0, 0
    map_uri: str | None = None
    part_target: float | None = None
    parts: list[PartRef] = []
    hint: PartRef | None = None
    in_segment = False  # an #EXTINF is waiting for its URI line
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            value = line.partition(":")[2]
            if not value.isdigit() or len(value) > 15:
                raise FormatError(f"bad media sequence {value[:20]!r}")
            msn = int(value)
        elif line.startswith("#EXT-X-MAP:"):
            map_uri = _uri(line)
        elif line.startswith("#EXT-X-PART-INF:"):
            m = _PART_TARGET_RE.search(line)
            if m is None:
                raise FormatError(f"no PART-TARGET in {line[:80]!r}")
            part_target = float(m.group(1))
        elif line.startswith("#EXT-X-PART:"):
            parts.append(PartRef(msn, index, _uri(line), map_uri))
            index += 1
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            if "TYPE=PART" in line:
                hint = PartRef(msn, index, _uri(line), map_uri)
        elif line.startswith("#EXTINF:"):
            in_segment = True
        elif not line.startswith("#") and in_segment:
            msn, index, in_segment = msn + 1, 0, False
    return MediaPlaylist(tuple(parts), hint, part_target)


# ------------------------------------------------------------------ ISO BMFF


def _boxes(data: memoryview, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """(type, box start, payload start, box end) of the boxes in ``data[start:end]``."""
    pos = start
    while pos < end:
        if end - pos < 8:
            raise FormatError(f"{end - pos} stray bytes after the last box")
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = bytes(data[pos + 4 : pos + 8])
        body = pos + 8
        if size == 1:
            if end - pos < 16:
                raise FormatError("truncated 64-bit box size")
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
            body = pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos or pos + size > end:
            raise FormatError(f"box {kind!r} of {size} bytes does not fit")
        yield kind, pos, body, pos + size
        pos += size


def _child(data: memoryview, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, _, body, box_end in _boxes(data, start, end):
        if k == kind:
            return body, box_end
    return None


def _u32(data: memoryview, at: int, end: int) -> int:
    if at + 4 > end:
        raise FormatError("truncated box")
    return int.from_bytes(data[at : at + 4], "big")


@dataclass(frozen=True, slots=True)
class InitInfo:
    video_track: int
    """The ``track_ID`` of the (first) video track."""
    nal_length_size: int
    """Bytes of each NAL unit's length prefix in the samples (``avcC``; 4 otherwise)."""


def parse_init(data: bytes | bytearray | memoryview) -> InitInfo:
    """The video track of an init segment (``ftyp`` + ``moov``)."""
    view = memoryview(data)
    moov = _child(view, 0, len(view), b"moov")
    if moov is None:
        raise FormatError("no moov in the init segment")
    for kind, _, body, end in _boxes(view, *moov):
        if kind != b"trak":
            continue
        tkhd = _child(view, body, end, b"tkhd")
        mdia = _child(view, body, end, b"mdia")
        if tkhd is None or mdia is None:
            raise FormatError("a trak without tkhd or mdia")
        hdlr = _child(view, *mdia, b"hdlr")
        if hdlr is None or _u32(view, hdlr[0] + 8, hdlr[1]) != int.from_bytes(b"vide", "big"):
            continue
        version = view[tkhd[0]] if tkhd[0] < tkhd[1] else 0
        track_id = _u32(view, tkhd[0] + (20 if version == 1 else 12), tkhd[1])
        return InitInfo(track_id, _nal_length_size(view, *mdia))
    raise FormatError("no video track in the init segment")


def _nal_length_size(view: memoryview, start: int, end: int) -> int:
    box = (start, end)
    for kind in (b"minf", b"stbl", b"stsd"):
        found = _child(view, *box, kind)
        if found is None:
            return 4
        box = found
    entries = box[0] + 8  # version/flags, entry_count
    if entries > box[1]:
        raise FormatError("truncated stsd")
    for kind, _, body, entry_end in _boxes(view, entries, box[1]):
        if kind in (b"avc1", b"avc3") and body + 78 <= entry_end:
            avcc = _child(view, body + 78, entry_end, b"avcC")  # after the visual entry
            if avcc is not None and avcc[0] + 5 <= avcc[1]:
                return (view[avcc[0] + 4] & 3) + 1
    return 4


_TFHD_BASE_DATA_OFFSET = 0x01
_TFHD_SAMPLE_DESCRIPTION = 0x02
_TFHD_DEFAULT_DURATION = 0x08
_TFHD_DEFAULT_SIZE = 0x10
_TRUN_DATA_OFFSET = 0x001
_TRUN_FIRST_FLAGS = 0x004
_TRUN_FIELDS = (0x100, 0x200, 0x400, 0x800)  # duration, size, flags, composition offset
_TRUN_SIZE = 0x200


def video_samples(data: bytes | bytearray | memoryview, track_id: int) -> list[memoryview]:
    """The samples of track ``track_id`` in a part or segment (``[styp]`` + ``moof`` +
    ``mdat`` ..., data offsets counted from the ``moof`` unless the ``tfhd`` gives a base),
    in decode order."""
    view = memoryview(data)
    out: list[memoryview] = []
    for kind, moof, body, end in _boxes(view, 0, len(view)):
        if kind != b"moof":
            continue
        for tkind, _, tbody, tend in _boxes(view, body, end):
            if tkind == b"traf":
                out += _traf_samples(view, moof, tbody, tend, track_id)
    return out


def _traf_samples(
    view: memoryview, moof: int, start: int, end: int, track_id: int
) -> list[memoryview]:
    tfhd = _child(view, start, end, b"tfhd")
    if tfhd is None:
        raise FormatError("a traf without tfhd")
    flags = _u32(view, tfhd[0], tfhd[1]) & 0xFFFFFF
    if _u32(view, tfhd[0] + 4, tfhd[1]) != track_id:
        return []
    at = tfhd[0] + 8
    base = moof
    if flags & _TFHD_BASE_DATA_OFFSET:
        base = (_u32(view, at, tfhd[1]) << 32) | _u32(view, at + 4, tfhd[1])
        at += 8
    if flags & _TFHD_SAMPLE_DESCRIPTION:
        at += 4
    if flags & _TFHD_DEFAULT_DURATION:
        at += 4
    default_size = _u32(view, at, tfhd[1]) if flags & _TFHD_DEFAULT_SIZE else None
    out: list[memoryview] = []
    pos = base
    for kind, _, body, box_end in _boxes(view, start, end):
        if kind != b"trun":
            continue
        tflags = _u32(view, body, box_end) & 0xFFFFFF
        count = _u32(view, body + 4, box_end)
        at = body + 8
        if tflags & _TRUN_DATA_OFFSET:
            offset = _u32(view, at, box_end)
            pos = base + (offset - (1 << 32) if offset & 0x80000000 else offset)
            at += 4
        if tflags & _TRUN_FIRST_FLAGS:
            at += 4
        row = 4 * sum(1 for f in _TRUN_FIELDS if tflags & f)
        if at + count * row > box_end:
            raise FormatError(f"trun of {count} samples does not fit its box")
        size_at = 4 if tflags & _TRUN_FIELDS[0] else 0  # after the duration, if any
        for i in range(count):
            if tflags & _TRUN_SIZE:
                size = _u32(view, at + i * row + size_at, box_end)
            elif default_size is not None:
                size = default_size
            else:
                raise FormatError("no sample size in trun or tfhd")
            if pos < 0 or pos + size > len(view):
                raise FormatError("sample data outside the part")
            out.append(view[pos : pos + size])
            pos += size
    return out


def nal_units(sample: memoryview, length_size: int = 4) -> list[memoryview]:
    """The NAL units of a length-prefixed (AVCC) sample."""
    out: list[memoryview] = []
    pos, end = 0, len(sample)
    while pos < end:
        if pos + length_size > end:
            raise FormatError("truncated NAL unit length")
        size = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if pos + size > end:
            raise FormatError("NAL unit longer than its sample")
        out.append(sample[pos : pos + size])
        pos += size
    return out


def part_stamps(data: bytes | bytearray | memoryview, init: InitInfo) -> list[int | None]:
    """Per video sample of a part, in decode order: its stamp (µs), or None."""
    return [
        read_stamp_nalus(nal_units(s, init.nal_length_size))
        for s in video_samples(data, init.video_track)
    ]


# ------------------------------------------------------------------ timing


class HlsTimer:
    """Parts in, ``(time_s, time - stamp in ms)`` samples out, from ``skip`` s after the
    probe started (``started``, default: now), as the HTTP-FLV and RTMP probes count. Not
    from the first part, as the WHEP probe counts: an LL-HLS probe starts at the live edge
    (no old cached GOP comes first), but a packager's first plain playlist is held until
    its first segment is complete, and counting from the part after that would drop the
    first seconds of the run's window."""

    def __init__(
        self, skip: float, last: Samples, first: Samples | None = None, started: float | None = None
    ) -> None:
        self.skip = skip
        self.last = last
        """Samples at the part's last byte."""
        self.first = first
        """Samples at the arrival of the part's response head."""
        self.started = time.time() if started is None else started
        self.parts = 0
        self.samples = 0
        self.stamped = 0
        self.hints_missed = 0
        """Hinted parts answered 404 (the segment closed first)."""
        self.listed_parts = 0
        """Parts fetched because a playlist listed them (not from a hint)."""
        self.reloads = 0
        self.reloads_refused = 0
        """Blocking reloads answered 503 (retried)."""

    def part(self, stamps: list[int | None], first: float, last: float) -> None:
        self.parts += 1
        self.samples += len(stamps)
        counted = last - self.started >= self.skip
        for stamp_us in stamps:
            if stamp_us is None:
                continue
            self.stamped += 1
            if not counted:
                continue
            sent_ms = stamp_us / 1000
            self.last.append((round(last, 3), round(last * 1000 - sent_ms, 3)))
            if self.first is not None:
                self.first.append((round(first, 3), round(first * 1000 - sent_ms, 3)))

    def totals(self) -> dict[str, int]:
        return {
            k: getattr(self, k)
            for k in (
                "parts", "samples", "stamped", "hints_missed", "listed_parts", "reloads",
                "reloads_refused",
            )
        }  # fmt: skip


# ------------------------------------------------------------------ the client

_MAX_PENDING = 8


async def _get(session: aiohttp.ClientSession, url: str) -> bytes:
    async with session.get(url) as resp:
        if resp.status != 200:
            raise ConnectionError(f"{url}: HTTP {resp.status}")
        return await resp.read()


async def _reload(
    session: aiohttp.ClientSession, url: str, at: tuple[int, int] | None, timer: HlsTimer
) -> MediaPlaylist:
    query = "" if at is None else f"?_HLS_msn={at[0]}&_HLS_part={at[1]}"
    for _ in range(20):
        async with session.get(url + query) as resp:
            if resp.status == 503:  # held too long or too many waiting: ask again
                timer.reloads_refused += 1
                await resp.read()
                await asyncio.sleep(0.1)
                continue
            if resp.status != 200:
                raise ConnectionError(f"{url + query}: HTTP {resp.status}")
            text = await resp.text()
        timer.reloads += 1
        return parse_playlist(text)
    raise ConnectionError(f"{url + query}: 503 twenty times")


async def _fetch_part(
    session: aiohttp.ClientSession, url: str, init: InitInfo, timer: HlsTimer, hinted: bool
) -> None:
    async with session.get(url) as resp:
        first = time.time()
        if resp.status == 404 and hinted:  # the segment closed before this part came
            timer.hints_missed += 1
            await resp.read()
            return
        if resp.status != 200:
            raise ConnectionError(f"{url}: HTTP {resp.status}")
        body = await resp.read()
        last = time.time()
    timer.part(part_stamps(body, init), first, last)


async def hls_probe(url: str, timer: HlsTimer) -> None:
    """One LL-HLS viewer of ``url`` (``http://HOST:PORT/APP/STREAM.m3u8``) until cancelled."""
    pending: set[asyncio.Task[None]] = set()
    try:
        async with aiohttp.ClientSession() as session:
            playlist = await _reload(session, url, None, timer)
            start = playlist.next_position()
            if start is None:
                raise FormatError("the first playlist lists no part and no hint")
            inits: dict[str, InitInfo] = {}
            requested: set[tuple[int, int]] = set()
            while True:
                listed = [(p, False) for p in playlist.parts]
                if playlist.hint is not None:
                    listed.append((playlist.hint, True))
                for ref, hinted in listed:
                    if ref.position < start or ref.position in requested:
                        continue
                    if ref.map_uri is None:
                        raise FormatError("a part without EXT-X-MAP")
                    map_url = urljoin(url, ref.map_uri)
                    init = inits.get(map_url)
                    if init is None:
                        init = inits[map_url] = parse_init(await _get(session, map_url))
                    requested.add(ref.position)
                    timer.listed_parts += not hinted
                    pending.add(
                        asyncio.create_task(
                            _fetch_part(session, urljoin(url, ref.uri), init, timer, hinted)
                        )
                    )
                for task in [t for t in pending if t.done()]:
                    pending.discard(task)
                    task.result()  # a failed part fails the probe
                while len(pending) > _MAX_PENDING:
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        pending.discard(task)
                        task.result()
                first = playlist.parts[0].position if playlist.parts else start
                requested = {p for p in requested if p >= first}
                playlist = await _reload(session, url, playlist.next_position(), timer)
    except aiohttp.ClientError as exc:
        raise ConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


# ------------------------------------------------------------------ the design's share


def cut_waits(frames: Iterable[Frame], part_target: float = 0.333) -> list[int]:
    """Per video frame, in ms of media time: from the frame's timestamp to the timestamp of
    the frame whose push made the product's cutter (relay's settings: 1 s segment target,
    4 s max) write the part holding it. A server that sends each part the moment it is cut
    adds exactly this (frames arriving at their timestamps' pace); what a probe measures
    beyond it is the server's and the transport's own."""
    cutter = PartCutter(part_target=part_target, segment_target=1.0, segment_max=4.0)
    waiting: list[int] = []
    waits: list[int] = []
    for frame in frames:
        if frame.kind is Kind.VIDEO and not frame.header:
            waiting.append(frame.dts)
        for cut in cutter.push(frame):
            init = parse_init(cut.part.init.data)
            written = len(video_samples(cut.part.data, init.video_track))
            waits += [frame.dts - dts for dts in waiting[:written]]
            del waiting[:written]
    return waits


def main() -> None:
    ap = argparse.ArgumentParser(description="What cutting parts alone adds, per video frame.")
    ap.add_argument("flv", type=Path, help="an FLV source (e.g. bench/results/cache/*.flv)")
    ap.add_argument("--part-target", type=float, default=0.333)
    args = ap.parse_args()
    tags = flv.FlvDemuxer().feed(args.flv.read_bytes())
    frames = [
        Frame.from_payload(Kind(t.tag_type), t.timestamp, t.body)
        for t in tags
        if isinstance(t, flv.FlvTag) and t.tag_type in (8, 9)
    ]
    waits = sorted(cut_waits(frames, args.part_target))
    if not waits:
        raise SystemExit("no video frame was cut")
    at = {q: waits[min(len(waits) - 1, int(q / 100 * len(waits)))] for q in (50, 90, 99)}
    print(json.dumps({"n": len(waits), **{f"p{q}": v for q, v in at.items()},
                      "max": waits[-1], "mean": round(sum(waits) / len(waits), 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
