"""ingest.whip_audio: Opus (what WebRTC publishers send) -> AAC once per stream, with PyAV.

Real Opus from libopus is transcoded; the AAC frames decode with FFmpeg to the same
duration, their times are on the Opus clock, gaps are filled, and the worker runs the codec
off the event loop, in order, with a bounded queue.
"""

from __future__ import annotations

import array
import asyncio
import itertools
import math
from fractions import Fraction

import av
import pytest

from ingest.whip_audio import AAC_FRAME, AudioTranscodeWorker, OpusToAac
from media.codecs import AudioSpecificConfig
from tests.mediautil import wait_for


def opus_packets(count: int, start: int = 0) -> list[tuple[int, bytes]]:
    """``count`` 20 ms stereo Opus packets of a 440 Hz tone, RTP times from ``start``."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000
    enc.layout = "stereo"
    enc.format = "s16"
    enc.time_base = Fraction(1, 48000)
    out: list[tuple[int, bytes]] = []
    for i in range(count):
        pcm = array.array(
            "h",
            [
                int(8000 * math.sin(2 * math.pi * 440 * (960 * i + k // 2) / 48000))
                for k in range(1920)
            ],
        )
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = 48000
        frame.pts = 960 * i
        frame.time_base = Fraction(1, 48000)
        out += [(start + int(p.pts), bytes(p)) for p in enc.encode(frame)]
    return out


def decode_aac(asc: bytes, frames: list[tuple[int, bytes]]) -> int:
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = asc
    samples = 0
    for _, raw in frames:
        for f in dec.decode(av.Packet(raw)):
            samples += f.samples
    return samples


def test_transcode_keeps_duration_and_clock() -> None:
    packets = opus_packets(100, start=123_456)  # 2 s
    codec = OpusToAac()
    asc = AudioSpecificConfig.parse(codec.asc)
    assert (asc.object_type, asc.sample_rate, asc.channels) == (2, 48000, 2)
    frames = [f for ts, p in packets for f in codec.feed(ts, p)]
    times = [t for t, _ in frames]
    assert times == sorted(times)
    assert {b - a for a, b in itertools.pairwise(times)} == {AAC_FRAME}
    assert abs(times[0] - 123_456) <= 2 * AAC_FRAME  # encoder delays (Opus pre-skip, AAC priming)
    decoded = decode_aac(codec.asc, frames)
    assert abs(decoded - 96000) <= 3 * AAC_FRAME
    assert codec.errors == codec.late == 0


@pytest.mark.parametrize(("gap_packets", "filled"), [(5, True), (60, False)])
def test_gaps_are_filled_or_jumped(gap_packets: int, filled: bool) -> None:
    packets = opus_packets(120)
    kept = packets[:40] + packets[40 + gap_packets :]
    codec = OpusToAac()
    frames = [f for ts, p in kept for f in codec.feed(ts, p)]
    times = [t for t, _ in frames]
    assert times == sorted(times)
    assert times[-1] >= kept[-1][0] - 4 * AAC_FRAME  # the timeline kept up with the Opus clock
    if filled:
        assert codec.filled_samples == gap_packets * 960
    else:
        assert codec.filled_samples == 0
        assert max(b - a for a, b in itertools.pairwise(times)) > gap_packets * 900


def test_late_and_garbage_packets() -> None:
    packets = opus_packets(20)
    codec = OpusToAac()
    for ts, p in packets[:10]:
        codec.feed(ts, p)
    assert codec.feed(*packets[2]) == []  # late: dropped
    codec.feed(packets[10][0], b"\xff\xff\xff garbage")
    for ts, p in packets[11:]:
        codec.feed(ts, p)
    assert codec.late == 1


async def test_worker_runs_in_order_off_the_loop() -> None:
    got: list[tuple[int, bytes]] = []
    worker = AudioTranscodeWorker(got.extend)
    worker.start()
    packets = opus_packets(50)
    for ts, p in packets:
        worker.put(ts, p)
        await asyncio.sleep(0)
    await wait_for(lambda: len(got) >= 40, timeout=20)
    times = [t for t, _ in got]
    assert times == sorted(times)
    await worker.close()
    assert worker.dropped == 0


async def test_worker_queue_is_bounded() -> None:
    got: list[tuple[int, bytes]] = []
    worker = AudioTranscodeWorker(got.extend, max_queue=10)
    packets = opus_packets(50)
    for ts, p in packets:  # not started: nothing is consumed
        worker.put(ts, p)
    assert worker.dropped == 40
    worker.start()
    await wait_for(lambda: len(got) >= 5, timeout=20)
    await worker.close()
