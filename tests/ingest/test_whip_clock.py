"""media.rtp.whip_clock: a WHIP publisher's audio and video RTP clocks on one ms timeline."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from media.rtp.whip_clock import Unwrap32, WhipClock


def ntp(seconds: float) -> int:
    return int(seconds * (1 << 32))


def test_tracks_anchor_at_arrival_then_follow_rtp() -> None:
    clock = WhipClock()
    v0, a0 = 1_000_000, 4_000_000_000
    assert clock.ms("video", clock.extend("video", v0), 5000.0) == 0
    assert clock.ms("audio", clock.extend("audio", a0), 5030.0) == 30
    # arrival jitter does not move the RTP-derived times
    assert clock.ms("video", clock.extend("video", v0 + 90000), 6100.0) == 1000
    # audio crosses the 32-bit wrap
    ts = clock.extend("audio", (a0 + 480000) & 0xFFFFFFFF)
    assert clock.ms("audio", ts, 5000.0) == 10030


def test_sender_reports_align_audio_to_video() -> None:
    clock = WhipClock()
    v0, a0 = 555, 777
    clock.ms("video", clock.extend("video", v0), 0.0)
    # audio arrives 200 ms late (a slow path), but the sender captured it with video
    clock.ms("audio", clock.extend("audio", a0), 200.0)
    assert clock.ms("audio", clock.extend("audio", a0 + 48000), 0.0) == 1200
    # both SRs say: video v0 and audio a0 were captured at the same wall time (100.0 s)
    clock.sender_report("video", ntp(101.0), v0 + 90000)
    clock.sender_report("audio", ntp(101.0), a0 + 48000)
    assert clock.resyncs == 1
    assert clock.ms("audio", clock.extend("audio", a0 + 96000), 0.0) == 2000
    assert clock.ms("video", clock.extend("video", v0 + 180000), 0.0) == 2000
    # a report within the tolerance changes nothing
    clock.sender_report("audio", ntp(102.005), a0 + 96000)
    assert clock.resyncs == 1


@given(st.integers(0, 2**32 - 1), st.lists(st.integers(-40000, 400000), max_size=200))
def test_unwrap_follows_steps(start: int, steps: list[int]) -> None:
    u = Unwrap32()
    assert u(start) == start
    expect = start
    for step in steps:
        expect += step
        assert u(expect & 0xFFFFFFFF) == expect
