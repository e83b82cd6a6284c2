"""Regenerate ``codec_fixtures.json``: real codec configuration records captured from ffmpeg.

Run from the repository root::

    .venv/bin/python tests/media/data/make_codec_fixtures.py

Each case encodes a few frames of ``testsrc``/``sine`` with the bundled ffmpeg into MP4,
takes the stream's extradata (avcC / hvcC / av1C / AudioSpecificConfig, exactly the bytes an
FLV sequence header carries) with PyAV, and stores next to it what ffprobe reports about
the stream (the expectations the tests check the parsers against). One H.264 case also keeps
an Annex-B access unit and the same access unit length-prefixed, for the conversion helpers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from core.ffmpeg import bundled_ffmpeg_exe  # noqa: E402

OUT = Path(__file__).with_name("codec_fixtures.json")

# name -> (lavfi source, encoder args). Sizes are chosen to exercise cropping.
VIDEO_CASES: dict[str, tuple[str, list[str]]] = {
    "h264_baseline_640x360": (
        "testsrc=size=640x360:rate=30",
        ["-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p"],
    ),
    "h264_main_640x360_25": (
        "testsrc=size=640x360:rate=25",
        ["-c:v", "libx264", "-profile:v", "main", "-pix_fmt", "yuv420p"],
    ),
    "h264_high_1280x720": (
        "testsrc=size=1280x720:rate=30",
        ["-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p"],
    ),
    "h264_high_cqm_642x362": (
        "testsrc=size=642x362:rate=30000/1001",
        ["-c:v", "libx264", "-profile:v", "high", "-pix_fmt", "yuv420p", "-x264-params", "cqm=jvt"],
    ),
    "h264_high_interlaced_640x360": (
        "testsrc=size=640x360:rate=30",
        [
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-flags",
            "+ildct+ilme",
            "-x264-params",
            "tff=1",
        ],
    ),
    "h264_high10_640x360": (
        "testsrc=size=640x360:rate=30",
        ["-c:v", "libx264", "-profile:v", "high10", "-pix_fmt", "yuv420p10le"],
    ),
    "h264_high422_640x360": (
        "testsrc=size=640x360:rate=30",
        ["-c:v", "libx264", "-profile:v", "high422", "-pix_fmt", "yuv422p"],
    ),
    "h264_high444_cqm_640x360": (
        "testsrc=size=640x360:rate=24",
        [
            "-c:v",
            "libx264",
            "-profile:v",
            "high444",
            "-pix_fmt",
            "yuv444p",
            "-x264-params",
            "cqm=jvt",
        ],
    ),
    "hevc_main_640x360": (
        "testsrc=size=640x360:rate=30",
        ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-tag:v", "hvc1"],
    ),
    "hevc_main_650x366": (
        "testsrc=size=650x366:rate=25",
        ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-tag:v", "hvc1"],
    ),
    "hevc_main10_1280x720": (
        "testsrc=size=1280x720:rate=60",
        ["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-tag:v", "hvc1"],
    ),
    "hevc_rext444_640x360": (
        "testsrc=size=640x360:rate=30",
        [
            "-c:v",
            "libx265",
            "-pix_fmt",
            "yuv444p",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "scaling-list=default",
        ],
    ),
    "hevc_main_scaling_list_640x360": (
        "testsrc=size=640x360:rate=30",
        [
            "-c:v",
            "libx265",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "scaling-list={scaling_list}:log-level=error",
        ],
    ),
    "av1_aom_640x360": (
        "testsrc=size=640x360:rate=30",
        ["-c:v", "libaom-av1", "-cpu-used", "8", "-pix_fmt", "yuv420p"],
    ),
    "av1_svt_10bit_640x360": (
        "testsrc=size=640x360:rate=30",
        ["-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p10le"],
    ),
}

AUDIO_CASES: dict[str, tuple[str, list[str]]] = {
    "aac_lc_48000_stereo": ("sine=frequency=440:sample_rate=48000", ["-ac", "2"]),
    "aac_lc_44100_mono": ("sine=frequency=440:sample_rate=44100", ["-ac", "1"]),
    "aac_lc_22050_51": ("sine=frequency=440:sample_rate=22050", ["-ac", "6"]),
    "aac_lc_8000_stereo": ("sine=frequency=440:sample_rate=8000", ["-ac", "2"]),
}

PROBE_KEYS = (
    "codec_name",
    "profile",
    "level",
    "width",
    "height",
    "pix_fmt",
    "r_frame_rate",
    "field_order",
    "sample_rate",
    "channels",
    "bits_per_raw_sample",
)


def write_scaling_list(path: Path) -> None:
    """An x265 scaling-list file with every list distinct (so all are coded explicitly)."""
    lines: list[str] = []
    k = 0
    for size, n in ((4, 16), (8, 64), (16, 64), (32, 64)):
        for mode in ("INTRA", "INTER"):
            for comp in ("LUMA", "CHROMAU", "CHROMAV"):
                if size == 32 and comp != "LUMA":
                    continue
                k += 1
                lines.append(f"{mode}{size}X{size}_{comp} =")
                values = [16 + ((i * k + size) % 13) for i in range(n)]
                lines += [",".join(map(str, values[r : r + 8])) + "," for r in range(0, n, 8)]
                if size >= 16:
                    lines += [f"{mode}{size}X{size}_{comp}_DC =", str(17 + k % 5)]
    path.write_text("\n".join(lines) + "\n")


def ffprobe(path: Path) -> dict[str, Any]:
    probe = shutil.which("ffprobe")
    if probe is None:
        raise SystemExit("ffprobe is needed to record expectations")
    out = subprocess.run(
        [probe, "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    stream = json.loads(out)["streams"][0]
    return {k: stream[k] for k in PROBE_KEYS if k in stream}


def encode(ffmpeg: str, src: str, args: list[str], out: Path, frames: int) -> None:
    cmd = [
        ffmpeg,
        "-hide_banner",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        src,
        *args,
        "-frames:v" if "testsrc" in src else "-t",
        str(frames) if "testsrc" in src else "0.2",
        str(out),
    ]
    subprocess.run(cmd, check=True)


def extradata(path: Path) -> bytes:
    with av.open(str(path)) as container:
        data = container.streams[0].codec_context.extradata
    if not data:
        raise SystemExit(f"{path}: no extradata")
    return bytes(data)


def main() -> None:
    ffmpeg = bundled_ffmpeg_exe()
    fixtures: dict[str, Any] = {
        "_ffmpeg": subprocess.run(
            [ffmpeg, "-version"], check=True, capture_output=True, text=True
        ).stdout.splitlines()[0]
    }
    with tempfile.TemporaryDirectory() as tmp:
        scaling_list = Path(tmp) / "scaling_list.txt"
        write_scaling_list(scaling_list)
        for name, (src, case_args) in {**VIDEO_CASES, **AUDIO_CASES}.items():
            args = [a.replace("{scaling_list}", str(scaling_list)) for a in case_args]
            path = Path(tmp) / f"{name}.mp4"
            encode(ffmpeg, src, args, path, frames=3)
            fixtures[name] = {
                "config": extradata(path).hex(),
                "probe": ffprobe(path),
                "args": case_args,
                "source": src,
            }
            print(name, fixtures[name]["probe"], file=sys.stderr)

        # One access unit as Annex-B (with in-band SPS/PPS) and as MP4 length-prefixed NALUs.
        mp4 = Path(tmp) / "au.mp4"
        encode(
            ffmpeg,
            "testsrc=size=320x180:rate=30",
            ["-c:v", "libx264", "-crf", "45", "-preset", "ultrafast"],
            mp4,
            frames=1,
        )
        annexb = Path(tmp) / "au.h264"
        subprocess.run(
            [
                ffmpeg,
                "-hide_banner",
                "-v",
                "error",
                "-y",
                "-i",
                str(mp4),
                "-c",
                "copy",
                "-bsf:v",
                "h264_mp4toannexb",
                "-f",
                "h264",
                str(annexb),
            ],
            check=True,
        )
        with av.open(str(mp4)) as container:
            packet = next(p for p in container.demux(video=0) if p.size)
            sample = bytes(packet)
        fixtures["h264_access_unit"] = {
            "config": extradata(mp4).hex(),
            "annexb": annexb.read_bytes().hex(),
            "length_prefixed": sample.hex(),
        }
    OUT.write_text(json.dumps(fixtures, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
