"""One millisecond timeline for a WHIP publisher's audio and video RTP clocks.

Sans-I/O: arrival times come in as ``now_ms`` (the shell's clock, any origin).

Each track's RTP timestamps (90 kHz video, 48 kHz Opus) start at a random value and run
on the sender's own clock. :class:`WhipClock` maps them onto one ms timeline:

* a track is anchored at its first packet: that packet's extended RTP time lands at its
  arrival time on the shared timeline; later times follow the RTP clock exactly (no
  jitter from arrival);
* once an RTCP sender report of each track is known (NTP wall time <-> RTP time pairs,
  the sender's own A/V mapping), audio is re-anchored on video's mapping so the two play
  in sync whatever their arrival skew; a correction smaller than
  :attr:`WhipClock.resync_ms` is ignored so reports' jitter does not churn the timeline.

32-bit RTP timestamps are extended across wrap-around per track (:class:`Unwrap32`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Unwrap32", "WhipClock"]

_MOD = 1 << 32


class Unwrap32:
    """Extends 32-bit timestamps to a 64-bit count (steps back of < 2^31 allowed): RTP
    times here, and the FLV milliseconds of each track in :mod:`relay.hub`."""

    __slots__ = ("ext", "last")

    def __init__(self) -> None:
        self.last: int | None = None
        self.ext = 0

    def __call__(self, raw: int) -> int:
        raw &= 0xFFFFFFFF
        if self.last is None:
            self.last = raw
            self.ext = raw
            return raw
        diff = (raw - self.last) % _MOD
        if diff >= _MOD // 2:
            diff -= _MOD
        self.last = raw
        self.ext += diff
        return self.ext

    def peek(self, raw: int) -> int:
        """The extended value of ``raw`` near the last one seen, without moving."""
        if self.last is None:
            return raw & 0xFFFFFFFF
        diff = ((raw & 0xFFFFFFFF) - self.last) % _MOD
        if diff >= _MOD // 2:
            diff -= _MOD
        return self.ext + diff


@dataclass(slots=True)
class _Track:
    rate: int
    anchor_ts: int | None = None
    anchor_ms: float = 0.0
    sr_ntp: float | None = None
    """Wall time in seconds of the last sender report."""
    sr_ts: int | None = None
    """Extended RTP time of that report."""

    def ms(self, ts: int) -> float:
        assert self.anchor_ts is not None
        return self.anchor_ms + (ts - self.anchor_ts) * 1000.0 / self.rate


class WhipClock:
    """Maps the extended RTP time of ``"audio"`` and ``"video"`` to shared milliseconds."""

    def __init__(self, video_rate: int = 90000, audio_rate: int = 48000) -> None:
        self.resync_ms = 15.0
        self.origin_ms: float | None = None
        self._tracks = {"video": _Track(video_rate), "audio": _Track(audio_rate)}
        self.unwrap = {"video": Unwrap32(), "audio": Unwrap32()}
        self.resyncs = 0

    def extend(self, kind: str, raw_ts: int) -> int:
        """The extended RTP time of a packet of ``kind`` (call once per packet, in order)."""
        return self.unwrap[kind](raw_ts)

    def ms(self, kind: str, ts: int, now_ms: float) -> int:
        """Milliseconds on the shared timeline of extended RTP time ``ts`` (>= 0)."""
        track = self._tracks[kind]
        if self.origin_ms is None:
            self.origin_ms = now_ms
        if track.anchor_ts is None:
            track.anchor_ts = ts
            track.anchor_ms = now_ms - self.origin_ms
            self._align()
        return max(0, int(track.ms(ts)))

    def sender_report(self, kind: str, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """An RTCP SR of the track: its 64-bit NTP time and 32-bit RTP time."""
        track = self._tracks[kind]
        track.sr_ntp = (ntp_timestamp >> 32) + (ntp_timestamp & 0xFFFFFFFF) / _MOD
        track.sr_ts = self.unwrap[kind].peek(rtp_timestamp)
        self._align()

    def _align(self) -> None:
        video, audio = self._tracks["video"], self._tracks["audio"]
        if video.anchor_ts is None or audio.anchor_ts is None:
            return
        if video.sr_ntp is None or audio.sr_ntp is None:
            return
        assert video.sr_ts is not None and audio.sr_ts is not None
        # video's RTP time at the wall time of audio's report, then its ms
        video_ts = video.sr_ts + (audio.sr_ntp - video.sr_ntp) * video.rate
        target = video.ms(round(video_ts))
        current = audio.ms(audio.sr_ts)
        if abs(target - current) < self.resync_ms:
            return
        audio.anchor_ts = audio.sr_ts
        audio.anchor_ms = target
        self.resyncs += 1
