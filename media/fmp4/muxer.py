"""``Fmp4Muxer``: the stream's ``Frame`` objects in, CMAF parts (``moof`` + ``mdat``) out.

Sans-I/O and clock-free: the caller (the relay hub, once per stream) pushes every frame
and decides when to cut; :class:`media.fmp4.cutter.PartCutter` is that decision for LL-HLS
(use it). By hand, the shape is::

    muxer = Fmp4Muxer()
    for frame in frames:                      # sequence headers, media, metadata: all of them
        if frame.header and muxer.changes_init(frame):
            emit(muxer.flush_part())          # keep the forced part below short
        elif muxer.pending_duration_at(frame.dts) > part_target:   # main-track frames
            emit(muxer.flush_part())          # a part never longer than the target
        forced = muxer.push(frame)            # a Part only when the codec config changed
        if forced is not None:
            emit(forced, ends_segment=True)   # the next part has a new ``part.init``
        if frame.kind is Kind.VIDEO and frame.keyframe and segment_is_long_enough:
            emit(muxer.flush_part(), ends_segment=True)   # the next part opens with it
    emit(muxer.flush_part(final=True))        # publisher gone

Timing. FLV milliseconds become 90 kHz video ticks exactly (``dts * 90``, composition
offset ``cts * 90``, signed, ``trun`` version 1). Audio ticks are AAC samples at the
track's sampling rate: each frame starts where the previous one ended (``frame_length``
later) as long as that stays within half a frame of its own millisecond timestamp (which
was rounded from that very sample count by the encoder) and does not start before the end
of what was written (a final flush's ``end_dts`` can lengthen the last frame); otherwise
(a gap, a jump) the timestamp wins. So an encoder's audio keeps exact 1024-sample
durations and A/V sync stays within the timestamps' own precision.

Durations come from the next sample's decode time: the muxer holds back the newest
sample of each track until its successor arrives (one frame of latency), so every sample
written has its exact duration and each track's ``tfdt`` continues exactly where the
previous part ended. ``flush_part()`` therefore writes the samples *before* the newest
one; audio is cut at the video cut point (audio frames stamped at or after the held
video frame wait for the next part), so a part's tracks cover the same span; with a
video track, a part has video: a flush with no video sample ready writes nothing (the
audio waits for the next video cut, so a segment opens with a keyframe or, after
``segment_max``, a picture), except while video is stopped. Only
``flush_part(final=True)`` (end of stream, codec change) writes the held samples, the last
duration taken from ``end_dts`` if given, else from the previous sample (video; 1/30 s
if there is none or it lasted 0) or the AAC frame length (audio).

Video stopping while audio goes on. The muxer cannot tell a late picture from a stopped
camera: the caller decides (``PartCutter``: no video sample for ``video_gap``) and calls
``stop_video()``, which writes the video held (the last picture lasting as long as the one
before it) with the audio up to its end. From then on ``main_kind`` is audio: parts are
timed and cut on audio (``flush_part(max_duration=...)`` cuts the backlog) and have no
video; each is independent (every AAC frame is a sync sample). The first video sample
taken ends it: the next flush writes the audio stamped before that sample, and parts have
video again. The video track has no sample over the gap (``tfdt`` jumps); nothing is
dropped, and the buffer never fills for want of a picture.

What is dropped (counted in ``dropped``, the last reason in ``last_drop_reason``; a
publisher's stream is a peer's input, so none of this raises): frames of a track whose
sequence header has not arrived, is malformed or is of a codec other than H.264, HEVC or
AAC; video before the track's first keyframe (and after every init change); audio while a
configured video track waits for that keyframe (every part then opens decodable); AVC/HEVC
end-of-sequence, Enhanced-RTMP metadata and command frames. Script data is ignored
(not counted). Timestamps
going backwards within a track are clamped to the previous decode time (presentation time
kept for video). What raises ``LocalProtocolError`` (our own misuse): buffering more than
``max_buffer_bytes`` or ``max_buffer_samples`` without a flush; asking for an init segment
before any track is configured.

Codec changes. A sequence header that differs from the track's current one, or a new track
after the first part went out, makes a new ``InitSegment`` (``version`` + 1): what was
buffered under the old one is written at once (``push`` returns that part; its last samples
last until the new header's timestamp), video restarts
at its next keyframe, and every later ``Part.init`` is the new one: the relay emits
``EXT-X-DISCONTINUITY`` and a new ``EXT-X-MAP`` when ``part.init`` changes. A header
identical to the current one (encoders repeat them) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from media import codecs, flv
from media.errors import FLVError, LocalProtocolError
from media.fmp4.boxes import Sample, TrackFragment, fragment
from media.fmp4.tracks import (
    VIDEO_SAMPLE_ENTRIES,
    AudioTrack,
    Track,
    VideoTrack,
    init_segment,
)
from media.frame import Frame, Kind

__all__ = ["Fmp4Muxer", "InitSegment", "Part", "TrackRun"]

_VIDEO_TICKS_PER_MS = 90
_DEFAULT_VIDEO_DURATION = 3000  # 1/30 s at 90 kHz, when a lone final sample has no other
_AVC_NALU = 1
_MIN_CTO, _MAX_CTO = -(1 << 31), (1 << 31) - 1
_MAX_DURATION = 0xFFFFFFFF
_LEGACY_NALU_CODECS = (flv.CODEC_AVC, flv.CODEC_HEVC_LEGACY)
_ENHANCED_CODED = (flv.VideoPacketType.CODED_FRAMES, flv.VideoPacketType.CODED_FRAMES_X)


@dataclass(frozen=True, slots=True)
class InitSegment:
    """An init segment (``ftyp`` + ``moov``) and what a playlist says about it."""

    data: bytes
    version: int
    """1 for the stream's first; + 1 on every codec config change."""
    video: VideoTrack | None
    audio: AudioTrack | None

    @property
    def codecs(self) -> str:
        """The ``CODECS`` attribute of a playlist (``avc1.64001f,mp4a.40.2``)."""
        return ",".join(t.codec_string for t in (self.video, self.audio) if t is not None)

    @property
    def tracks(self) -> tuple[Track, ...]:
        return tuple(t for t in (self.video, self.audio) if t is not None)


@dataclass(frozen=True, slots=True)
class TrackRun:
    """One track's samples in a part, in its own timescale."""

    track_id: int
    timescale: int
    base_decode_time: int
    duration: int
    sample_count: int
    first_dts: int
    """FLV timestamp (ms) of the first sample."""


@dataclass(frozen=True, slots=True)
class Part:
    """A CMAF chunk: ``data`` is ``moof`` + ``mdat``; it plays after ``init.data``.

    ``start`` and ``duration`` (seconds) are those of the video track when the part has
    video samples, else of the audio track. ``independent``: the part opens with a
    keyframe, or has no video sample at all (every AAC frame is a sync sample): a segment
    may start here."""

    data: bytes
    sequence_number: int
    init: InitSegment
    independent: bool
    start: float
    duration: float
    runs: tuple[TrackRun, ...]

    @property
    def has_video(self) -> bool:
        video = self.init.video
        return video is not None and any(r.track_id == video.track_id for r in self.runs)


class _Pending:
    __slots__ = ("cto", "data", "dts", "sync", "tick")

    def __init__(self, dts: int, tick: int, cto: int, data: bytes | memoryview, sync: bool):
        self.dts = dts
        self.tick = tick
        self.cto = cto
        self.data = data
        self.sync = sync


class _TrackState:
    __slots__ = ("buffer", "end_tick", "last_duration", "last_tick", "next_tick", "started")

    def __init__(self) -> None:
        self.buffer: list[_Pending] = []
        self.last_tick: int | None = None
        """Decode time of the newest sample pushed (ticks only grow)."""
        self.end_tick = 0
        """Where the samples written so far end."""
        self.next_tick: int | None = None
        """Audio: where the next AAC frame starts if it follows on."""
        self.last_duration = 0
        self.started = False


class Fmp4Muxer:
    """One stream's fMP4 muxer: H.264 / HEVC video and AAC audio, either or both.

    ``push(frame)`` every frame of the stream (dts in ms on the hub's continuous timeline);
    ``flush_part()`` returns the samples ready so far as one :class:`Part`. The muxer holds
    only what was pushed since the last flush (plus one held-back sample per track), capped
    by ``max_buffer_bytes`` / ``max_buffer_samples``.
    """

    def __init__(
        self, *, max_buffer_bytes: int = 32 * 1024 * 1024, max_buffer_samples: int = 4096
    ) -> None:
        self._max_bytes = max_buffer_bytes
        self._max_samples = max_buffer_samples
        self._video_track: VideoTrack | None = None
        self._audio_track: AudioTrack | None = None
        self._video = _TrackState()
        self._audio = _TrackState()
        self._video_ok = False  # the current video header is usable
        self._audio_ok = False
        self._init: InitSegment | None = None
        self._version = 1
        self._frozen = False  # a part went out with the current init
        self._sequence = 0
        self._audio_led = False  # video stopped: parts are timed by audio (stop_video)
        self._last_video_dts: int | None = None
        self._buffered_bytes = 0
        self._buffered_samples = 0
        self.dropped = 0
        """Frames dropped so far (see the module doc for which)."""
        self.last_drop_reason = ""

    # -- state ------------------------------------------------------------------------

    @property
    def init(self) -> InitSegment | None:
        """The init segment parts pushed from now on need (None: no track configured)."""
        if self._init is None and (self._video_track or self._audio_track):
            tracks = [t for t in (self._video_track, self._audio_track) if t is not None]
            self._init = InitSegment(
                init_segment(tracks), self._version, self._video_track, self._audio_track
            )
        return self._init

    def init_segment(self) -> InitSegment:
        init = self.init
        if init is None:
            raise LocalProtocolError("no track is configured yet: push a sequence header first")
        return init

    @property
    def sequence_number(self) -> int:
        """The ``mfhd`` sequence number of the last part written (0 before the first)."""
        return self._sequence

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    @property
    def pending_duration(self) -> float:
        """Seconds of the main track (video if configured, else audio) that
        ``flush_part()`` would write now: from the first buffered sample to the held one."""
        state, timescale = self._main()
        if state is None or len(state.buffer) < 2:
            return 0.0
        return (state.buffer[-1].tick - state.buffer[0].tick) / timescale

    def pending_duration_at(self, dts: int) -> float:
        """Seconds ``flush_part()`` would write after a main-track frame stamped ``dts``
        (ms) were pushed: ask before pushing it, and flush first if that is too long, to
        keep every part within a target."""
        state, timescale = self._main()
        if state is None or not state.buffer:
            return 0.0
        if state is self._audio and self._audio_track is not None:
            tick = _audio_tick(state, self._audio_track, dts)
        else:
            tick = max(dts * _VIDEO_TICKS_PER_MS, state.buffer[-1].tick)
        return (tick - state.buffer[0].tick) / timescale

    @property
    def main_kind(self) -> Kind | None:
        """The track parts are timed by: video when configured, else audio; audio while
        video is stopped (:meth:`stop_video`) until a video sample is back."""
        if self._video_track is not None and not (
            self._audio_led and not self._video.buffer and self._audio_track is not None
        ):
            return Kind.VIDEO
        return Kind.AUDIO if self._audio_track is not None else None

    @property
    def audio_led(self) -> bool:
        """Video stopped (:meth:`stop_video`): parts without video are written, until the
        first flush after a video sample is back."""
        return self._audio_led

    @property
    def last_video_dts(self) -> int | None:
        """FLV timestamp (ms) of the newest video sample taken (None before the first)."""
        return self._last_video_dts

    def _main(self) -> tuple[_TrackState | None, int]:
        if self._video_track is not None and not (
            self._audio_led and not self._video.buffer and self._audio_track is not None
        ):
            return self._video, self._video_track.timescale
        if self._audio_track is not None:
            return self._audio, self._audio_track.timescale
        return None, 1

    # -- input ------------------------------------------------------------------------

    def push(self, frame: Frame) -> Part | None:
        """Take one frame. Returns a :class:`Part` only when this frame (a changed sequence
        header) forced out what was buffered under the previous init segment."""
        if frame.kind == Kind.VIDEO:
            return self._push_video(frame)
        if frame.kind == Kind.AUDIO:
            return self._push_audio(frame)
        return None

    def _drop(self, reason: str) -> None:
        self.dropped += 1
        self.last_drop_reason = reason

    def _push_video(self, frame: Frame) -> Part | None:
        payload = frame.payload
        try:
            info = flv.parse_video_header(payload)
        except FLVError as exc:
            self._drop(f"video: {exc}")
            return None
        if info.sequence_header:
            try:
                track = VideoTrack.from_record(info.codec, payload[info.data_offset :])
            except codecs.CodecError as exc:
                self._video_ok = False
                self._drop(f"video sequence header: {exc}")
                return None
            return self._configure(track, frame.dts)
        if info.enhanced:
            coded = payload[0] & 0x0F in _ENHANCED_CODED
        else:
            coded = info.codec_id not in _LEGACY_NALU_CODECS or payload[1] == _AVC_NALU
        if not coded or info.command:
            self._drop("video: not coded frames")
            return None
        vtrack = self._video_track
        if vtrack is None or not self._video_ok:
            self._drop("video before a usable sequence header")
            return None
        if VIDEO_SAMPLE_ENTRIES.get(info.codec) != vtrack.sample_entry_type:
            self._drop(f"video: {info.codec} frame on a {vtrack.sample_entry_type} track")
            return None
        state = self._video
        if not state.started:
            if not info.keyframe:
                self._drop("video before its first keyframe")
                return None
            state.started = True
        data: bytes | memoryview
        head = payload[info.data_offset : info.data_offset + 4]
        if codecs.is_annexb(head):
            try:
                data = codecs.ensure_length_prefixed(
                    payload[info.data_offset :], vtrack.nalu_length_size
                )
            except codecs.CodecError as exc:
                self._drop(f"video: {exc}")
                return None
        else:
            data = memoryview(payload)[info.data_offset :]
        if not data:
            self._drop("video: empty frame")
            return None
        tick = frame.dts * _VIDEO_TICKS_PER_MS
        pts = (frame.dts + info.cts) * _VIDEO_TICKS_PER_MS
        floor = state.end_tick if state.last_tick is None else state.last_tick
        tick = max(tick, floor)
        cto = min(max(pts - tick, _MIN_CTO), _MAX_CTO)  # only absurd jumps reach the bounds
        self._append(state, _Pending(frame.dts, tick, cto, data, info.keyframe))
        self._last_video_dts = frame.dts
        return None

    def _push_audio(self, frame: Frame) -> Part | None:
        payload = frame.payload
        try:
            info = flv.parse_audio_header(payload)
        except FLVError as exc:
            self._drop(f"audio: {exc}")
            return None
        if info.codec != "mp4a":
            self._drop(f"audio codec {info.codec} is not supported")
            return None
        if info.sequence_header:
            try:
                track = AudioTrack.from_asc(payload[info.data_offset :])
            except codecs.CodecError as exc:
                self._audio_ok = False
                self._drop(f"audio sequence header: {exc}")
                return None
            return self._configure(track, frame.dts)
        packet_type = payload[0] & 0x0F if info.sound_format == flv.SOUND_EX_HEADER else payload[1]
        if packet_type != 1:
            self._drop("audio: not a coded frame")
            return None
        atrack = self._audio_track
        if atrack is None or not self._audio_ok:
            self._drop("audio before a usable sequence header")
            return None
        if self._video_track is not None and self._video_ok and not self._video.started:
            self._drop("audio while video waits for a keyframe")
            return None
        if len(payload) <= info.data_offset:
            self._drop("audio: empty frame")
            return None
        state = self._audio
        tick = _audio_tick(state, atrack, frame.dts)
        state.next_tick = tick + atrack.frame_length
        data = memoryview(payload)[info.data_offset :]
        self._append(state, _Pending(frame.dts, tick, 0, data, True))
        return None

    def _append(self, state: _TrackState, sample: _Pending) -> None:
        size = len(sample.data)
        if (
            self._buffered_bytes + size > self._max_bytes
            or self._buffered_samples + 1 > self._max_samples
        ):
            raise LocalProtocolError(
                f"fMP4 muxer holds {self._buffered_samples} samples / {self._buffered_bytes}"
                " bytes: call flush_part() (parts are cut by the caller)"
            )
        state.buffer.append(sample)
        state.last_tick = sample.tick
        self._buffered_bytes += size
        self._buffered_samples += 1

    def changes_init(self, frame: Frame) -> bool:
        """Whether pushing ``frame`` (a sequence header different from the track's current
        one, or a new track after parts went out) makes a new init segment and so forces
        out what is buffered: a caller keeping parts short flushes first."""
        track: Track | None = None
        try:
            if frame.kind == Kind.VIDEO:
                info = flv.parse_video_header(frame.payload)
                if info.sequence_header:
                    track = VideoTrack.from_record(info.codec, frame.payload[info.data_offset :])
            elif frame.kind == Kind.AUDIO:
                track = AudioTrack.from_flv(frame.payload)
        except (FLVError, codecs.CodecError):
            return False
        return track is not None and self._forces_new_init(track)

    def _forces_new_init(self, track: Track) -> bool:
        if isinstance(track, VideoTrack):
            current: Track | None = self._video_track
            state = self._video
        else:
            current = self._audio_track
            state = self._audio
        return current != track and (self._frozen or bool(state.buffer))

    def _configure(self, track: Track, dts: int) -> Part | None:
        if isinstance(track, VideoTrack):
            current: Track | None = self._video_track
            self._video_ok = True
        else:
            current = self._audio_track
            self._audio_ok = True
        if current == track:
            return None
        forced: Part | None = None
        if self._forces_new_init(track):
            if self._buffered_samples:
                forced = self.flush_part(final=True, end_dts=dts)
            self._version += 1
            self._frozen = False
            self._video.started = False  # a new init: decoding restarts at a keyframe
        if isinstance(track, VideoTrack):
            self._video_track = track
        else:
            self._audio_track = track
        self._init = None
        return forced

    # -- output -----------------------------------------------------------------------

    def flush_part(
        self,
        *,
        final: bool = False,
        end_dts: int | None = None,
        max_duration: float | None = None,
    ) -> Part | None:
        """Write the samples that are ready as one part (None when there are none).

        Not ``final``: every buffered sample but the newest of each track (its duration
        is not known yet), the other track only up to the main track's cut; with a video
        track, nothing (None) when no video sample is ready, unless video stopped
        (:meth:`stop_video`): then audio-only parts, up to the first flush after a video
        sample is back, which writes the audio stamped before that sample.
        ``max_duration`` (seconds, not ``final``): at most that much of the main track,
        as many whole samples as fit but at least one (a caller cutting a backlog into
        parts). ``final``: everything; the last sample of each track lasts until
        ``end_dts`` (ms) if given and later, else as long as the one before it (video)
        or one AAC frame (audio)."""
        if self.init is None:
            return None
        main, timescale = self._main()
        counts: dict[int, int] = {}
        cut: int | None = None
        if not final and main is not None:
            n = max(0, len(main.buffer) - 1)
            if max_duration is not None:
                limit = max_duration * timescale
                while n > 1 and main.buffer[n].tick - main.buffer[0].tick > limit:
                    n -= 1
            if main.buffer:
                cut = main.buffer[n].dts
            counts[id(main)] = n
        for state in (self._video, self._audio):
            if id(state) not in counts:
                counts[id(state)] = self._ready(state, final, cut)
        if not final and self._video_track is not None and not counts[id(self._video)]:
            if not self._audio_led:
                # No video ready: the audio waits for it (a part of a stream with video
                # has video, so a part opening a segment opens with a keyframe).
                return None
            if self._video.buffer:
                # Video is back: this part is the audio before its first sample, the last
                # one without video (what follows waits for video again).
                self._audio_led = False
        return self._write(counts[id(self._video)], counts[id(self._audio)], end_dts, None)

    def stop_video(self, *, max_duration: float | None = None) -> list[Part]:
        """Video stopped while audio goes on (the caller decides when: no video sample
        for a while). Writes the video buffered, its last sample lasting as long as the
        one before it (1/30 s without one), with the audio stamped before that end; from
        then on parts are timed by audio and have no video (each independent) until video
        is back (see :meth:`flush_part`). ``max_duration``: if that
        part would last longer, the video ready before the newest sample goes first (in
        parts within it); the newest alone may be longer (a single frame interval).
        The video track has no sample between the end written here and the next one."""
        parts: list[Part] = []
        if self.init is None or self._audio_track is None or self._video_track is None:
            return parts
        video = self._video
        while video.buffer:
            held = video.buffer[-1]
            if len(video.buffer) > 1:
                last = held.tick - video.buffer[-2].tick
            else:
                last = video.last_duration
            end_tick = held.tick + (last or _DEFAULT_VIDEO_DURATION)
            too_long = (
                max_duration is not None
                and end_tick - video.buffer[0].tick > max_duration * self._video_track.timescale
            )
            if too_long and len(video.buffer) > 1:
                part = self.flush_part(max_duration=max_duration)
                if part is not None:
                    parts.append(part)
                continue
            end_ms = held.dts + (end_tick - held.tick) / _VIDEO_TICKS_PER_MS
            audio_n = self._ready(self._audio, False, None)
            while audio_n and self._audio.buffer[audio_n - 1].dts >= end_ms:
                audio_n -= 1
            part = self._write(len(video.buffer), audio_n, None, end_tick)
            if part is not None:
                parts.append(part)
            break
        self._audio_led = True
        return parts

    def _write(
        self, video_n: int, audio_n: int, end_dts: int | None, video_end_tick: int | None
    ) -> Part | None:
        init = self.init
        if init is None:
            return None
        trafs: list[TrackFragment] = []
        runs: list[TrackRun] = []
        independent = True
        has_video = False
        for track, state, n in (
            (self._video_track, self._video, video_n),
            (self._audio_track, self._audio, audio_n),
        ):
            if track is None or not n:
                continue
            buf = state.buffer
            taken = buf[:n]
            del buf[:n]
            end_tick = video_end_tick if isinstance(track, VideoTrack) else None
            samples = self._samples(track, state, taken, end_dts, end_tick)
            trafs.append(
                TrackFragment(
                    track.track_id,
                    taken[0].tick,
                    samples,
                    composition_offsets=isinstance(track, VideoTrack),
                )
            )
            duration = sum(s.duration for s in samples)
            runs.append(
                TrackRun(
                    track.track_id,
                    track.timescale,
                    taken[0].tick,
                    duration,
                    len(samples),
                    taken[0].dts,
                )
            )
            if isinstance(track, VideoTrack):
                independent = taken[0].sync
                has_video = True
            self._buffered_samples -= n
            self._buffered_bytes -= sum(len(p.data) for p in taken)
        if not trafs:
            return None
        if has_video:
            self._audio_led = False
        self._sequence += 1
        self._frozen = True
        first = runs[0]
        return Part(
            data=fragment(self._sequence, trafs),
            sequence_number=self._sequence,
            init=init,
            independent=independent,
            start=first.base_decode_time / first.timescale,
            duration=first.duration / first.timescale,
            runs=tuple(runs),
        )

    @staticmethod
    def _ready(state: _TrackState, final: bool, cut: int | None) -> int:
        """How many of a (non-main) track's buffered samples a flush writes."""
        buf = state.buffer
        if final:
            return len(buf)
        n = max(0, len(buf) - 1)
        if cut is not None:
            while n and buf[n - 1].dts >= cut:
                n -= 1
        return n

    @staticmethod
    def _samples(
        track: Track,
        state: _TrackState,
        taken: list[_Pending],
        end_dts: int | None,
        end_tick: int | None = None,
    ) -> list[Sample]:
        successor = state.buffer[0].tick if state.buffer else None
        if successor is None and end_tick is not None and end_tick > taken[-1].tick:
            successor = end_tick
        if successor is None:
            if end_dts is not None:
                if isinstance(track, VideoTrack):
                    end = end_dts * _VIDEO_TICKS_PER_MS
                else:
                    end = (end_dts * track.sample_rate + 500) // 1000
                if end > taken[-1].tick:
                    successor = end
            if successor is None:
                if isinstance(track, AudioTrack):
                    last = track.frame_length
                else:
                    last = (
                        taken[-1].tick - taken[-2].tick if len(taken) > 1 else state.last_duration
                    )
                    last = last or _DEFAULT_VIDEO_DURATION
                successor = taken[-1].tick + last
        samples: list[Sample] = []
        for i, p in enumerate(taken):
            nxt = taken[i + 1].tick if i + 1 < len(taken) else successor
            samples.append(Sample(p.data, min(nxt - p.tick, _MAX_DURATION), p.cto, p.sync))
        state.last_duration = samples[-1].duration
        state.end_tick = successor
        if not state.buffer:
            state.last_tick = None  # the next sample starts at end_tick at the earliest
        return samples


def _audio_tick(state: _TrackState, track: AudioTrack, dts: int) -> int:
    """Decode time of an AAC frame stamped ``dts`` (ms): where the previous frame ended if
    that is within half a frame of the timestamp, else the timestamp (never backwards: not
    before what was written, which a final flush's ``end_dts`` may have lengthened)."""
    exact = (dts * track.sample_rate + 500) // 1000
    follow = state.next_tick
    floor = state.end_tick if state.last_tick is None else state.last_tick
    if follow is not None and follow >= floor and abs(exact - follow) <= track.frame_length // 2:
        return follow
    return max(exact, floor)
