"""WebRTC playback fan-out: RTP packets built once per stream, sent to every WHEP viewer.

:class:`RtpStream` is one stream's RTP side. It takes the hub's frames (as the hub hands
batches to its viewers) and serializes them once: the H.264 packetizer
(:mod:`media.rtp.h264_packetize`) turns each access unit into RTP packets (one sequence
space and SSRC per stream, 90 kHz timestamps from the frame's PTS), the audio goes
through one :class:`relay.rtc_audio.OpusTranscoder` per stream. Per viewer the only work
is what must differ: SRTP protection and the send, one ``send_rtp_batch`` per access unit
(UDP GSO; never blocks). Sessions signal the stream's SSRCs (:meth:`RtpStreams.ssrcs`),
so packets go out as built; a viewer that negotiated another payload type (or SSRC) shares
one rewritten copy per frame with every viewer of that pair
(:func:`media.rtp.packet.rewrite`).

History: the video packets of a stream are kept in a bounded ring
(:class:`PacketHistory`, ``history_packets`` / ``history_bytes``) from which NACKed
packets are resent (bounded per viewer per second) and from which a new viewer starts:
at the first packet of the latest keyframe, so the first picture shows at once. The
stream packetizes the hub's cached GOP when its first viewer arrives. A viewer is a
cursor into that ring: it is sent the packets from its cursor on, at most
``BURST_PACKETS`` per loop turn while it catches up, then each new packet as it is
made. Nothing is queued per viewer: a viewer whose cursor falls out of the ring (it could
not be served in time) starts again at the latest keyframe. A slow or lossy viewer costs
its own sends and its own (bounded) retransmissions, never memory or time of the others.

The hub sees each WHEP viewer as a viewer of protocol ``whep`` (a seat): it counts in
the stream's figures and keeps an edge's pull alive, and the hub closes it when the
stream ends. The seats only forward the hub's batches; the first seat to get a batch
has it packetized, the others find it done.

What cannot be carried as it is: HEVC, AV1 or other non-H.264 video, and H.264 with
B-frames (frames whose presentation order differs from their decoding order: browsers'
WebRTC receivers do not reorder). :func:`unplayable` says why. With transcoding on
(``webrtc.transcode``, :class:`relay.rtc_transcode.TranscodeSettings`) such a stream plays
through one :class:`relay.rtc_transcode.VideoTranscoder` per stream (at most
``max_transcodes`` streams per node, :meth:`RtpStreams.admit`): the hub's video goes to
ffmpeg, ffmpeg's H.264 (no B-frames) comes back as frames that :meth:`RtpStream._consume`
takes as it takes the hub's, so history, NACK, keyframe start and sender reports are one
code path; audio keeps its own path. A passed-through stream that turns out to need the
transcode (B-frames seen after the viewers came, a takeover by HEVC or B-frames) switches
to it in place from the next keyframe, and a transcoded stream whose video header changes
(a takeover) gets a new ffmpeg the same way: viewers stay. Without a transcode left on the
node, or with transcoding off, the viewers are closed with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from media import flv
from media.codecs import CodecError
from media.errors import FLVError
from media.frame import Frame, Kind
from media.rtp import (
    H264Packetizer,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    RtpError,
    RtpSequencer,
    SenderReport,
    build_header,
    ntp_time,
    parse_compound,
    rewrite,
    seq_diff,
)
from relay.hub import Batch, NullTransport, StreamHub, Viewer, ViewerInfo
from relay.rtc_audio import DECODERS, OPUS_CLOCK, OpusTranscoder
from relay.rtc_transcode import TranscodeSettings, VideoTranscoder
from relay.timings import quantiles_ms

logger = logging.getLogger(__name__)

__all__ = [
    "NegotiatedTrack",
    "PacketHistory",
    "RtcSink",
    "RtcViewer",
    "RtpStream",
    "RtpStreams",
    "needs_transcode",
    "unplayable",
]

VIDEO_CLOCK = 90_000
VIDEO_PT = 102
AUDIO_PT = 111
BURST_PACKETS = 64
"""Packets sent to a catching-up viewer per loop turn (the GOP burst is paced)."""
BURST_PAUSE = 0.002
SR_INTERVAL = 1.0
NACK_PER_SECOND = 400
"""Retransmissions one viewer may ask for per second (beyond: ignored)."""
PROTOCOL = "whep"
FANOUT_SAMPLES = 512
"""Video frames whose fan-out time ``stats()`` summarizes (~17 s at 30 fps)."""


class RtcSink(Protocol):
    """What a viewer's transport offers (:class:`core.rtc.RtcSession` has it)."""

    def send_rtp(self, packet: bytes) -> bool: ...

    def send_rtp_batch(self, packets: list[bytes]) -> int: ...

    def send_rtcp(self, packet: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class NegotiatedTrack:
    """What one viewer's session agreed for one kind: its payload type and our SSRC."""

    payload_type: int
    ssrc: int


# ------------------------------------------------------------------------ what plays


def _video_info(hub: StreamHub) -> flv.VideoTagInfo | None:
    if hub.video_header is None:
        return None
    try:
        return flv.parse_video_header(hub.video_header.payload)
    except FLVError:
        return None


_CODEC_NAMES = {"hvc1": "HEVC (H.265)", "av01": "AV1", "vp09": "VP9"}


def codec_refusal(codec: str) -> str:
    name = _CODEC_NAMES.get(codec, codec)
    return (
        f"the stream's video is {name}; WebRTC playback here carries H.264 only "
        f"(most browsers cannot take {name} over WebRTC): play it over HTTP-FLV or HLS"
    )


BFRAMES_REFUSAL = (
    "the stream's H.264 has B-frames (pictures sent out of presentation order), which "
    "browsers' WebRTC receivers cannot play; publish without B-frames (x264: -bf 0, OBS: "
    "'b-frames 0' or the baseline profile) or play it over HTTP-FLV or HLS"
)


def has_reordering(frames: list[Frame]) -> bool:
    """Whether any video frame is presented before the one decoded before it."""
    last: int | None = None
    for f in frames:
        if f.kind != Kind.VIDEO or f.header:
            continue
        if last is not None and f.pts < last:
            return True
        last = f.pts
    return False


def needs_transcode(hub: StreamHub) -> bool:
    """Whether ``hub``'s video can reach WebRTC viewers only through a transcode."""
    info = _video_info(hub)
    if info is not None and info.codec not in ("avc1", "avc3"):
        return True
    return has_reordering(hub.gop if hub.gop_valid else [])


def capacity_refusal(why: str, limit: int) -> str:
    return (
        f"{why.rstrip('.')}. This node transcodes such streams for WebRTC, but its transcode "
        f"capacity is used ({limit} at once, webrtc.max_transcodes): play it over HTTP-FLV "
        "or HLS, or try again later"
    )


def unplayable(hub: StreamHub) -> str | None:
    """Why ``hub``'s stream cannot be played over WebRTC now, or None."""
    info = _video_info(hub)
    if info is not None and info.codec not in ("avc1", "avc3"):
        return codec_refusal(info.codec)
    if has_reordering(hub.gop if hub.gop_valid else []):
        return BFRAMES_REFUSAL
    if info is None and not hub.has_audio and not hub.has_video:
        return "the stream has neither audio nor video yet"
    return None


# ------------------------------------------------------------------------ history


class PacketHistory:
    """The last packets of one SSRC, by absolute index (bounded in count and bytes).

    Sequence numbers are consecutive, so the index of a sequence number is found by
    arithmetic from the oldest one kept.
    """

    __slots__ = ("_items", "base", "base_seq", "max_bytes", "max_packets", "nbytes")

    def __init__(self, max_packets: int, max_bytes: int) -> None:
        self.max_packets = max_packets
        self.max_bytes = max_bytes
        self._items: deque[bytes] = deque()
        self.base = 0
        """Absolute index of the oldest packet kept."""
        self.base_seq = 0
        self.nbytes = 0

    @property
    def end(self) -> int:
        """Absolute index the next packet will get."""
        return self.base + len(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def append(self, seq: int, packet: bytes) -> int:
        items = self._items
        if not items:
            self.base_seq = seq
        items.append(packet)
        self.nbytes += len(packet)
        while len(items) > 1 and (len(items) > self.max_packets or self.nbytes > self.max_bytes):
            self.nbytes -= len(items.popleft())
            self.base += 1
            self.base_seq = (self.base_seq + 1) & 0xFFFF
        return self.base + len(items) - 1

    def get(self, index: int) -> bytes | None:
        i = index - self.base
        if 0 <= i < len(self._items):
            return self._items[i]
        return None

    def index_of_seq(self, seq: int) -> int | None:
        if not self._items:
            return None
        i = seq_diff(seq, self.base_seq)
        if 0 <= i < len(self._items):
            return self.base + i
        return None


# ------------------------------------------------------------------------ viewers


class _Format:
    uses_flv = False
    name = PROTOCOL

    def encode(self, frames: list[Frame], raw: bytes | None) -> bytes:  # pragma: no cover
        return b""


_FORMAT: Any = _Format()


class _Seat(Viewer):
    """The viewer's place among the hub's viewers: forwards batches to the stream."""

    __slots__ = ("rtc",)

    def __init__(self, rtc: RtcViewer, remote: str) -> None:
        super().__init__(NullTransport(), _FORMAT, ViewerInfo(PROTOCOL, remote), on_close=rtc.close)
        self.rtc = rtc

    def deliver(self, batch: Batch, drop_after: int) -> None:
        self.skip_pending = 0
        self.rtc.stream.feed(batch)


class RtcViewer:
    """One WHEP viewer of a stream: a cursor into the stream's video history."""

    def __init__(
        self,
        stream: RtpStream,
        sink: RtcSink,
        video: NegotiatedTrack | None,
        audio: NegotiatedTrack | None,
        remote: str,
        on_close: Callable[[str], None] | None = None,
    ) -> None:
        self.stream = stream
        self.sink = sink
        self.video = video
        self.audio = audio
        self.remote = remote
        self.cursor: int | None = None
        """Absolute index of the next video packet to send; None: waiting for a keyframe."""
        self.catching_up = False
        self.started = False
        """Media flows (video has started, or the stream has no video)."""
        self.closed = False
        self.close_reason = ""
        self._on_close = on_close
        self.seat = _Seat(self, remote)
        self.joined = time.monotonic()
        self.first_packet_at: float | None = None
        self.first_video_timestamp: int | None = None
        """RTP timestamp of the first video packet sent (where this viewer started)."""
        self.packets_sent = 0
        self.bytes_sent = 0
        self.send_drops = 0
        self.nacks = 0
        self.retransmits = 0
        self.nack_refused = 0
        self.plis = 0
        self.remb: int | None = None
        self.fraction_lost = 0
        self.rtcp_errors = 0
        self._nack_budget = float(NACK_PER_SECOND)
        self._nack_at = time.monotonic()
        self.rtx: tuple[int, int] | None = None
        """(payload type, SSRC) of the video's RTX stream (RFC 4588) when agreed."""
        self._rtx_seq = secrets.randbits(16)

    def set_rtx(self, payload_type: int, ssrc: int) -> None:
        """Resend video on this RTX stream (as the answer signalled) instead of in place."""
        self.rtx = (payload_type, ssrc)

    def send(self, packet: bytes, track: NegotiatedTrack) -> None:
        data = rewrite(packet, track.payload_type, track.ssrc)
        if self.sink.send_rtp(data):
            self.packets_sent += 1
            self.bytes_sent += len(data)
            if self.first_packet_at is None:
                self.first_packet_at = time.monotonic()
            if self.first_video_timestamp is None and track is self.video:
                self.first_video_timestamp = int.from_bytes(packet[4:8], "big")
        else:
            self.send_drops += 1

    def send_video_batch(self, packets: list[bytes], nbytes: int) -> None:
        """One access unit's video packets, already in this viewer's payload type and
        SSRC (``nbytes``: their total size): one batched send (UDP GSO)."""
        sent = self.sink.send_rtp_batch(packets)
        if sent:
            self.packets_sent += sent
            self.bytes_sent += nbytes if sent == len(packets) else sum(map(len, packets[:sent]))
            if self.first_packet_at is None:
                self.first_packet_at = time.monotonic()
            if self.first_video_timestamp is None:
                self.first_video_timestamp = int.from_bytes(packets[0][4:8], "big")
        self.send_drops += len(packets) - sent

    def on_rtcp(self, data: bytes) -> None:
        """A (decrypted, compound) RTCP datagram from this viewer."""
        try:
            packets = parse_compound(data)
        except RtpError:
            self.rtcp_errors += 1
            return
        for p in packets:
            if isinstance(p, Nack):
                self._nack(p)
            elif isinstance(p, Pli):
                # A passthrough stream cannot make a keyframe; the next one comes anyway.
                self.plis += 1
            elif isinstance(p, Remb):
                self.remb = p.bitrate
            elif isinstance(p, ReceiverReport | SenderReport):
                for block in p.reports:
                    if self.video is not None and block.ssrc == self.video.ssrc:
                        self.fraction_lost = block.fraction_lost

    def _nack(self, nack: Nack) -> None:
        self.nacks += 1
        now = time.monotonic()
        self._nack_budget = min(
            float(NACK_PER_SECOND), self._nack_budget + (now - self._nack_at) * NACK_PER_SECOND
        )
        self._nack_at = now
        if self.video is not None and nack.media_ssrc == self.video.ssrc:
            history, track, sent_below = self.stream.video_history, self.video, self.cursor
        elif self.audio is not None and nack.media_ssrc == self.audio.ssrc:
            history, track, sent_below = self.stream.audio_history, self.audio, None
        else:
            return
        for seq in nack.lost:
            index = history.index_of_seq(seq)
            if index is None or (sent_below is not None and index >= sent_below):
                continue
            if self._nack_budget < 1:
                self.nack_refused += 1
                continue
            packet = history.get(index)
            if packet is not None:
                self._nack_budget -= 1
                self.retransmits += 1
                if self.rtx is not None and track is self.video:
                    self._send_rtx(packet)
                else:
                    self.send(packet, track)

    def _send_rtx(self, packet: bytes) -> None:
        """RFC 4588: the original sequence number, then the payload, on the RTX stream
        (our packets have a bare 12-byte header)."""
        assert self.rtx is not None
        pt, ssrc = self.rtx
        seq = self._rtx_seq
        self._rtx_seq = (seq + 1) & 0xFFFF
        header = build_header(pt, seq, 0, ssrc, bool(packet[1] & 0x80))
        data = header[:4] + packet[4:8] + header[8:] + packet[2:4] + packet[12:]
        if self.sink.send_rtp(data):
            self.packets_sent += 1
            self.bytes_sent += len(data)
        else:
            self.send_drops += 1

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.seat.close(reason)
        self.stream.remove(self)
        if self._on_close is not None:
            try:
                self._on_close(reason)
            except Exception:
                logger.exception("whep viewer close callback failed")

    def stats(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "packets_sent": self.packets_sent,
            "bytes_sent": self.bytes_sent,
            "send_drops": self.send_drops,
            "nacks": self.nacks,
            "retransmits": self.retransmits,
            "nack_refused": self.nack_refused,
            "plis": self.plis,
            "remb": self.remb,
            "fraction_lost": self.fraction_lost,
            "first_packet_ms": (
                round((self.first_packet_at - self.joined) * 1000, 1)
                if self.first_packet_at is not None
                else None
            ),
        }


# ------------------------------------------------------------------------ the stream


class RtpStream:
    """One stream's RTP: packetizer, sequencers, histories, transcoder and viewers."""

    def __init__(
        self,
        streams: RtpStreams,
        hub: StreamHub,
        *,
        history_packets: int = 4096,
        history_bytes: int = 8 * 1024 * 1024,
        opus_bitrate: int = 64_000,
        transcode: bool = False,
    ) -> None:
        self.streams = streams
        self.hub = hub
        self.transcoding = transcode
        """Video goes through :attr:`video_transcoder` (set by :meth:`start`)."""
        self.video_transcoder: VideoTranscoder | None = None
        self._source_header: bytes | None = None
        """The hub's video sequence header the transcode started with."""
        self._passed_pts: int | None = None
        self.switches = 0
        """Times passthrough switched to the transcode in place."""
        self.loop = asyncio.get_running_loop()
        self.viewers: set[RtcViewer] = set()
        self.packetizer = H264Packetizer()
        video_ssrc, audio_ssrc, _rtx = streams.ssrcs(hub.key)
        self.video_seq = RtpSequencer(VIDEO_PT, video_ssrc, secrets.randbits(16))
        self.audio_seq = RtpSequencer(AUDIO_PT, audio_ssrc, secrets.randbits(16))
        self.video_offset = secrets.randbits(32)
        self.audio_offset = secrets.randbits(32)
        self.video_history = PacketHistory(history_packets, history_bytes)
        self.audio_history = PacketHistory(512, 256 * 1024)
        self.key_index: int | None = None
        """Absolute index of the first packet of the latest keyframe in the history."""
        self.opus_bitrate = opus_bitrate
        self.transcoder: OpusTranscoder | None = None
        self._audio_header: bytes | None = None
        self._last_frame: Frame | None = None
        self._last_video_pts: int | None = None
        self._clock_ref: tuple[int, float] | None = None
        """(stream ms, wall-clock time) of the newest frame: maps media time to NTP."""
        self.frames = 0
        self.frame_errors = 0
        self.fanout_s: deque[float] = deque(maxlen=FANOUT_SAMPLES)
        """Seconds each of the latest video frames took to go out to every viewer."""
        self.refused: str | None = None
        self.closed = False
        self._video_config_payload: bytes | None = None
        self._sr_task: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Packetize the hub's headers and cached GOP (the burst new viewers start with)."""
        frames, _ok = self.hub.prelude_frames()
        if frames:
            self._last_frame = frames[-1]
        if self.transcoding and self.hub.video_header is not None:
            self._launch(self.hub.video_header, [f for f in frames if f.kind == Kind.VIDEO])
            frames = [f for f in frames if f.kind != Kind.VIDEO]
        self._ingest(frames)
        self._sr_task = self.loop.create_task(self._report_loop())

    def add(self, viewer: RtcViewer) -> None:
        """Start ``viewer``: from the latest keyframe if the history has it."""
        if self.closed:
            viewer.close("stream ended")
            return
        self.viewers.add(viewer)
        self.hub.add_viewer(viewer.seat, None)
        viewer.seat.waiting_keyframe = False
        if self.video_history.end == 0 and not self.hub.has_video:
            viewer.started = True  # audio only
        elif self.key_index is not None and self.key_index >= self.video_history.base:
            viewer.started = True
            if viewer.video is not None:
                viewer.cursor = self.key_index
                self._catch_up(viewer)

    def remove(self, viewer: RtcViewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.streams.forget(self)
        if self.transcoder is not None:
            self.transcoder.close()
            self.transcoder = None
        if self.video_transcoder is not None:
            self.video_transcoder.close()  # its process is awaited by its own task
        if self._sr_task is not None:
            self._sr_task.cancel()
        for viewer in list(self.viewers):
            viewer.close("stream closed")

    def refuse(self, reason: str) -> None:
        """The stream changed to something WebRTC cannot carry: close its viewers."""
        if self.refused is None:
            logger.info("whep %s: closing its WebRTC viewers: %s", self.hub.key, reason)
        self.refused = reason
        for viewer in list(self.viewers):
            viewer.close(reason)

    # -------------------------------------------------------------- frames in

    def feed(self, batch: Batch) -> None:
        """A batch of the hub's frames (each seat forwards it; the first one counts)."""
        frames = batch.frames
        last = self._last_frame
        if last is not None:
            if frames and frames[-1] is last:
                return  # another seat already had this batch packetized
            for i in range(len(frames) - 1, -1, -1):
                if frames[i] is last:  # packetized from the GOP cache at start
                    frames = frames[i + 1 :]
                    break
        if not frames:
            return
        self._last_frame = frames[-1]
        self._ingest(frames)

    # -------------------------------------------------------------- the transcode

    def _ingest(self, frames: list[Frame]) -> None:
        """The hub's frames: packetized as they are, or their video through the transcode.

        With transcoding on, passthrough watches the video: a picture out of presentation
        order (B-frames) or a header of another codec (a takeover) switches the stream to
        the transcode in place, from the next keyframe: its viewers stay, their video
        pauses for at most a GOP. A transcoded stream whose video header changes (a
        takeover) gets a new ffmpeg the same way."""
        if self.video_transcoder is None and not self.streams.transcode.enabled:
            self._consume(frames)
            return
        passed: list[Frame] = []
        for frame in frames:
            if self.closed:
                return
            if frame.kind != Kind.VIDEO:
                passed.append(frame)
                continue
            transcoder = self.video_transcoder
            if transcoder is None:
                why = self._cannot_pass(frame)
                if why is None:
                    passed.append(frame)
                    continue
                self._consume(passed)
                passed = []
                if not self._switch_to_transcode(frame, why):
                    return
            elif frame.header and frame.payload != self._source_header:
                logger.info("whep %s: new video header: restarting the transcode", self.hub.key)
                transcoder.close()
                self._launch(frame, [frame], wait_keyframe=True)
            else:
                transcoder.push(frame)
        self._consume(passed)

    def _cannot_pass(self, frame: Frame) -> str | None:
        """Why this video frame of the hub cannot go out as it is, or None."""
        try:
            info = flv.parse_video_header(frame.payload)
        except FLVError:
            return None  # counted by the packetizer
        if info.codec not in ("avc1", "avc3"):
            return None if info.command else codec_refusal(info.codec)
        if frame.header or info.command or info.sequence_end:
            return None
        pts = frame.pts
        last = self._passed_pts
        self._passed_pts = pts
        if not frame.keyframe and last is not None and pts < last:
            return BFRAMES_REFUSAL
        return None

    def _switch_to_transcode(self, frame: Frame, why: str) -> bool:
        """Passthrough met video it cannot carry (``why``): transcode from the next keyframe,
        or close the viewers when this node's transcodes are all in use."""
        streams = self.streams
        header = frame if frame.header else self.hub.video_header
        if streams.transcodes_in_use(self.hub.key) >= streams.transcode.max_transcodes:
            self.refuse(capacity_refusal(why.split(";")[0], streams.transcode.max_transcodes))
            return False
        if header is None:
            self.refuse(why)
            return False
        logger.info(
            "whep %s: %s: transcoding from the next keyframe", self.hub.key, why.split(";")[0]
        )
        self._launch(header, [header], wait_keyframe=True)
        self.switches += 1
        return True

    def _launch(self, header: Frame, frames: list[Frame], *, wait_keyframe: bool = False) -> None:
        """Start this stream's transcode with ``frames`` (the video header first)."""
        self.transcoding = True
        self._source_header = header.payload
        transcoder = VideoTranscoder(
            self.hub.key, self.streams.transcode, self._transcoded, self._transcode_stopped
        )
        self.video_transcoder = transcoder
        transcoder.start(frames, self.hub.meta, measure=self.hub.gop, wait_keyframe=wait_keyframe)

    def _transcoded(self, frames: list[Frame]) -> None:
        """ffmpeg's H.264 for this stream: packetized as the hub's frames are."""
        if not self.closed:
            self._consume(frames)

    def _transcode_stopped(self, reason: str) -> None:
        self.refuse(f"the stream's WebRTC transcode stopped ({reason}): reconnect to play it")

    # -------------------------------------------------------------- packetizing

    def _consume(self, frames: list[Frame]) -> None:
        for frame in frames:
            if self.closed:
                return
            try:
                if frame.kind == Kind.VIDEO:
                    self._video(frame)
                elif frame.kind == Kind.AUDIO:
                    self._audio(frame)
            except (CodecError, FLVError) as exc:
                self.frame_errors += 1
                if self.frame_errors == 1 or self.frame_errors % 500 == 0:
                    logger.warning("whep %s: frame not packetized (%s)", self.hub.key, exc)

    def _video(self, frame: Frame) -> None:
        info = flv.parse_video_header(frame.payload)
        if info.codec not in ("avc1", "avc3"):
            if not info.command:
                self.refuse(codec_refusal(info.codec))
            return
        data = frame.payload[info.data_offset :]
        if info.sequence_header:
            if data != self._video_config_payload:
                self.packetizer.set_config(data)
                self._video_config_payload = data
            return
        if info.sequence_end or info.command or not data:
            return
        pts = frame.pts
        if frame.keyframe:
            self._last_video_pts = None
        elif self._last_video_pts is not None and pts < self._last_video_pts:
            self.refuse(BFRAMES_REFUSAL)
        self._last_video_pts = pts
        payloads = self.packetizer.payloads(data)
        if not payloads:
            return
        self.frames += 1
        self._clock_ref = (pts, time.time())
        ts = (pts * (VIDEO_CLOCK // 1000) + self.video_offset) & 0xFFFFFFFF
        history = self.video_history
        packets: list[bytes] = []
        for seq, packet in self.video_seq.packetize(payloads, ts):
            history.append(seq, packet)
            packets.append(packet)
        first = history.end - len(packets)
        if frame.keyframe:
            self.key_index = first
            self._start_waiting(first)
        started = time.perf_counter()
        self._send_live(first, packets)
        self.fanout_s.append(time.perf_counter() - started)
        if self.key_index is not None and self.key_index < history.base:
            self.key_index = None  # the GOP outgrew the history: wait for the next keyframe

    def _start_waiting(self, index: int) -> None:
        for viewer in self.viewers:
            if not viewer.started:
                # a viewer that took no video starts its audio here too (no cursor)
                viewer.cursor = index if viewer.video is not None else None
                viewer.started = True

    def _send_live(self, first: int, packets: list[bytes]) -> None:
        """Send one access unit's packets (history indexes ``first``...) to every viewer
        whose cursor is at ``first``: one batch each, the per-viewer copy (payload type,
        SSRC) made once per distinct pair, not per viewer; a viewer behind catches up."""
        end = first + len(packets)
        variants: dict[tuple[int, int], tuple[list[bytes], int]] = {}
        for viewer in self.viewers:
            track = viewer.video
            cursor = viewer.cursor
            if cursor is None or track is None or viewer.catching_up:
                continue
            if cursor == first:
                key = (track.payload_type, track.ssrc)
                variant = variants.get(key)
                if variant is None:
                    out = [rewrite(p, track.payload_type, track.ssrc) for p in packets]
                    variant = variants[key] = (out, sum(map(len, out)))
                viewer.cursor = end
                viewer.send_video_batch(*variant)
            elif cursor < first:
                self._catch_up(viewer)

    def _catch_up(self, viewer: RtcViewer) -> None:
        """Send ``viewer`` its packets from its cursor on, a slice per loop turn."""
        if viewer.closed or viewer.cursor is None or viewer.video is None:
            viewer.catching_up = False
            return
        history = self.video_history
        if viewer.cursor < history.base:
            # Fell out of the ring: start again at the latest keyframe (or wait for one).
            viewer.cursor = self.key_index
            if viewer.cursor is None:
                viewer.started = False
                viewer.catching_up = False
                return
        sent = 0
        while viewer.cursor < history.end and sent < BURST_PACKETS:
            packet = history.get(viewer.cursor)
            viewer.cursor += 1
            if packet is not None:
                viewer.send(packet, viewer.video)
            sent += 1
        if viewer.cursor < history.end:
            viewer.catching_up = True
            self.loop.call_later(BURST_PAUSE, self._catch_up, viewer)
        else:
            viewer.catching_up = False

    def _audio(self, frame: Frame) -> None:
        info = flv.parse_audio_header(frame.payload)
        data = frame.payload[info.data_offset :]
        if info.sequence_header or (info.codec != "mp4a" and self._audio_header is None):
            config = data if info.sequence_header else b""
            if config != self._audio_header or self.transcoder is None:
                self._audio_header = config
                if self.transcoder is not None:
                    self.transcoder.close()
                    self.transcoder = None
                if info.codec in DECODERS:
                    self.transcoder = OpusTranscoder(
                        info.codec,
                        config,
                        self._opus_packet,
                        bitrate=self.opus_bitrate,
                        name=self.hub.key,
                    )
                else:
                    logger.info(
                        "whep %s: %s audio is not carried (video only)", self.hub.key, info.codec
                    )
            if info.sequence_header:
                return
        if self.transcoder is not None and data:
            # The cached GOP's audio too: it goes out with the video burst it belongs to.
            self.transcoder.push(data, frame.dts)
            if not self.hub.has_video:
                self._clock_ref = (frame.dts, time.time())

    def _opus_packet(self, payload: bytes, ts48: int) -> None:
        if self.closed:
            return
        ts = (ts48 + self.audio_offset) & 0xFFFFFFFF
        ((seq, packet),) = self.audio_seq.packetize([payload], ts)
        self.audio_history.append(seq, packet)
        for viewer in self.viewers:
            if viewer.started and viewer.audio is not None:
                viewer.send(packet, viewer.audio)

    # -------------------------------------------------------------- reports

    def sender_reports(self, viewer: RtcViewer, now: float) -> bytes:
        """The SRs for ``viewer``'s tracks (media time of ``now`` on each clock)."""
        ref = self._clock_ref
        if ref is None:
            return b""
        media_ms = ref[0] + (now - ref[1]) * 1000
        ntp = ntp_time(now)
        out: list[bytes] = []
        if viewer.video is not None and self.video_seq.packets:
            ts = int(media_ms * (VIDEO_CLOCK // 1000)) + self.video_offset
            seq = self.video_seq
            out.append(
                bytes(
                    SenderReport(viewer.video.ssrc, ntp, ts & 0xFFFFFFFF, seq.packets, seq.octets)
                )
            )
        if viewer.audio is not None and self.audio_seq.packets:
            ts = int(media_ms * (OPUS_CLOCK // 1000)) + self.audio_offset
            seq = self.audio_seq
            out.append(
                bytes(
                    SenderReport(viewer.audio.ssrc, ntp, ts & 0xFFFFFFFF, seq.packets, seq.octets)
                )
            )
        return b"".join(out)

    async def _report_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(SR_INTERVAL)
            now = time.time()
            for viewer in list(self.viewers):
                if viewer.started:
                    data = self.sender_reports(viewer, now)
                    if data:
                        viewer.sink.send_rtcp(data)

    def stats(self) -> dict[str, Any]:
        tc = self.transcoder
        return {
            "stream": self.hub.key,
            "viewers": len(self.viewers),
            "video_frames": self.frames,
            "video_packets": self.video_seq.packets,
            "audio_packets": self.audio_seq.packets,
            "history_packets": len(self.video_history),
            "history_bytes": self.video_history.nbytes,
            "frame_errors": self.frame_errors,
            "fanout_ms": quantiles_ms(self.fanout_s),
            "transcode": (
                {**self.video_transcoder.stats(), "switches": self.switches}
                if self.video_transcoder is not None
                else None
            ),
            "opus": (
                {
                    "frames_in": tc.frames_in,
                    "frames_dropped": tc.frames_dropped,
                    "packets_out": tc.packets_out,
                    "cpu_seconds": round(tc.cpu_seconds, 3),
                }
                if tc is not None
                else None
            ),
        }


class RtpStreams:
    """This node's RTP streams, one per stream that has WHEP viewers."""

    def __init__(
        self,
        *,
        history_packets: int = 4096,
        history_bytes: int = 8 * 1024 * 1024,
        opus_bitrate: int = 64_000,
        transcode: TranscodeSettings | None = None,
    ) -> None:
        self.history_packets = history_packets
        self.history_bytes = history_bytes
        self.opus_bitrate = opus_bitrate
        self.transcode = transcode or TranscodeSettings()
        """Whether and how streams that cannot pass through are transcoded (off here by
        default; the node's comes from ``webrtc.transcode``)."""
        self.streams: dict[str, RtpStream] = {}
        self._ssrcs: dict[str, tuple[int, int, int]] = {}
        self._reserved: dict[str, int] = {}
        """Transcodes promised to viewers on their way (answered, not yet connected)."""

    # -------------------------------------------------------------- transcodes

    def transcodes_in_use(self, except_key: str | None = None) -> int:
        """Streams transcoded now or promised to a viewer on its way (``except_key`` not
        counted)."""
        keys = {k for k, s in self.streams.items() if s.transcoding and not s.closed}
        keys.update(self._reserved)
        keys.discard(except_key or "")
        return len(keys)

    def admit(self, hub: StreamHub) -> tuple[str | None, bool]:
        """Whether a new viewer may play ``hub``'s stream: (why not, or None; whether it
        plays through a transcode). A stream already transcoded takes more viewers."""
        refusal = unplayable(hub)
        if not self.transcode.enabled or not needs_transcode(hub):
            return refusal, False
        assert refusal is not None
        if self.transcodes_in_use(hub.key) >= self.transcode.max_transcodes:
            return capacity_refusal(refusal.split(";")[0], self.transcode.max_transcodes), False
        return None, True

    def reserve(self, key: str) -> None:
        """Hold a transcode for a viewer of ``key`` until :meth:`release` (it joins or
        goes away), so that two streams' offers cannot both take the last one."""
        self._reserved[key] = self._reserved.get(key, 0) + 1

    def release(self, key: str) -> None:
        left = self._reserved.get(key, 0) - 1
        if left > 0:
            self._reserved[key] = left
        else:
            self._reserved.pop(key, None)

    def ssrcs(self, key: str) -> tuple[int, int, int]:
        """The (video, audio, video RTX) SSRCs of stream ``key``'s RTP, the same for every
        viewer: a session that signals them in its answer gets the stream's packets
        without a per-viewer copy. Kept while the stream has an :class:`RtpStream` or a
        viewer on the way; a session that signalled SSRCs of an earlier one still
        works (its packets are rewritten)."""
        ssrcs = self._ssrcs.get(key)
        if ssrcs is None:
            if len(self._ssrcs) >= 4 * len(self.streams) + 1024:
                # offers for streams whose viewers never connected: keep only the live ones
                self._ssrcs = {k: v for k, v in self._ssrcs.items() if k in self.streams}
            ssrcs = self._ssrcs[key] = (
                secrets.randbits(32) or 1,
                secrets.randbits(32) or 2,
                secrets.randbits(32) or 3,
            )
        return ssrcs

    def stream(self, hub: StreamHub) -> RtpStream:
        """The hub's RTP stream, started on first use."""
        stream = self.streams.get(hub.key)
        if stream is None or stream.hub is not hub or stream.closed:
            if stream is not None:
                stream.close()
            transcode = (
                self.transcode.enabled
                and hub.has_video
                and needs_transcode(hub)
                and self.transcodes_in_use(hub.key) < self.transcode.max_transcodes
            )  # no capacity (a race with another stream): passthrough closes with the reason
            stream = RtpStream(
                self,
                hub,
                history_packets=self.history_packets,
                history_bytes=self.history_bytes,
                opus_bitrate=self.opus_bitrate,
                transcode=transcode,
            )
            self.streams[hub.key] = stream
            stream.start()
        return stream

    def join(
        self,
        hub: StreamHub,
        sink: RtcSink,
        video: NegotiatedTrack | None,
        audio: NegotiatedTrack | None,
        remote: str,
        on_close: Callable[[str], None] | None = None,
    ) -> RtcViewer:
        stream = self.stream(hub)
        viewer = RtcViewer(stream, sink, video, audio, remote, on_close)
        stream.add(viewer)
        return viewer

    def forget(self, stream: RtpStream) -> None:
        if self.streams.get(stream.hub.key) is stream:
            del self.streams[stream.hub.key]
            self._ssrcs.pop(stream.hub.key, None)

    def close(self) -> None:
        for stream in list(self.streams.values()):
            stream.close()

    async def aclose(self) -> None:
        """Close every stream and wait for their transcodes' ffmpeg to exit."""
        transcoders = [
            s.video_transcoder for s in self.streams.values() if s.video_transcoder is not None
        ]
        self.close()
        for transcoder in transcoders:
            await transcoder.wait_closed()
