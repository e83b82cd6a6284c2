"""Packaging CPU per stream: the hub's LL-HLS packaging (PartCutter + LivePlaylist, a
playlist rendered per part as blocking clients would read it) vs the ffmpeg HLS process per
stream it replaces (``-c copy -f hls``, fMP4, as the replay recorder ran it), on the same
720p clip with a 2 s GOP. Both process the whole clip as fast as they can; CPU seconds per
second of media are compared.

    flock /tmp/berrylive-bench.lock .venv/bin/python -m bench.hls.cpu [--seconds 30]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from core.ffmpeg import ffmpeg_exe
from media import flv
from media.fmp4 import PartCutter
from media.frame import Frame, Kind
from relay.hls_playlist import LivePlaylist
from tests.mediautil import make_clip


def frames_of(path: Path) -> list[Frame]:
    tags = [t for t in flv.FlvDemuxer().feed(path.read_bytes()) if isinstance(t, flv.FlvTag)]
    return [Frame.from_payload(Kind(t.tag_type), t.timestamp, t.body) for t in tags]


def package(frames: list[Frame]) -> float:
    cutter = PartCutter(part_target=0.333, segment_target=1.0, segment_max=4.0)
    playlist = LivePlaylist(name="s", token="0" * 8, part_target=0.333, segment_max=4.0)
    t0 = time.process_time()
    for frame in frames:
        for cut in cutter.push(frame):
            playlist.add(cut.part, cut.new_segment, 0.0)
            playlist.render()
    return time.process_time() - t0


def ffmpeg_hls(clip: Path, out: Path) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c", "copy",
         "-f", "hls", "-hls_time", "2", "-hls_segment_type", "fmp4", "-hls_list_size", "0",
         str(out / "index.m3u8")],
        check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        clip = make_clip(Path(d) / "720p.flv", args.seconds, gop=60, size="1280x720")
        frames = frames_of(clip)
        hub = min(package(frames) for _ in range(3))
        out = Path(d) / "hls"
        out.mkdir()
        ff = min(ffmpeg_hls(clip, out) for _ in range(3))
    media = args.seconds
    print("| packager | CPU s per media s | % of a core per live stream |")
    print("|---|---|---|")
    print(f"| hub LL-HLS (PartCutter + playlist) | {hub / media:.5f} | {100 * hub / media:.3f} % |")
    print(f"| ffmpeg -c copy -f hls (process) | {ff / media:.5f} | {100 * ff / media:.3f} % |")
    print("(ffmpeg figure includes its process start, paid once per stream)")


if __name__ == "__main__":
    main()
