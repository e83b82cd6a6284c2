"""One WHIP publisher: a receiving WebRTC session feeding the relay hub like an RTMP publish.

:class:`WhipPublish` owns one :class:`core.rtc.RtcSession` (``recvonly``) and, once ICE
and DTLS are done, one :class:`relay.hub.Publisher`:

* video: RTP/H.264 -> :class:`media.rtp.h264_depacketize.H264Depacketizer` (access units,
  reordering, loss -> wait for the next IDR) -> :class:`~media.rtp.h264_depacketize.AvcTagWriter`
  (AVC sequence header + AVCC frames, no re-encoding);
* audio: RTP/Opus -> :class:`ingest.whip_audio.AudioTranscodeWorker` (AAC once per stream,
  in a thread) -> AAC sequence header + frames;
* times: both RTP clocks on one ms timeline (:class:`media.rtp.whip_clock.WhipClock`,
  aligned with the publisher's RTCP sender reports);
* feedback to the publisher: a PLI when a keyframe is needed (start, loss; at most one per
  :data:`PLI_INTERVAL`), a REMB with ``bitrate_hint`` when ``goog-remb`` was agreed (so a
  browser sends at full quality instead of its cautious start rate).

It behaves like an RTMP publisher in every way the rest of berrylive sees: the hub's
takeover (a newer valid publisher kicks this one, and this one kicks an older one),
``stream.published`` / ``stream.unpublished`` events, ``on_publish`` / ``on_unpublish``
hooks, ``stream.kick``, the hub's linger when the publisher is lost (ICE/DTLS failure,
no media, DELETE).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from core.bus import EventBus
from core.rtc import RtcSession, WebRtcConfig
from ingest.events import StreamPublished, StreamUnpublished
from ingest.hooks import Hooks
from ingest.whip_audio import AudioTranscodeWorker, flv_aac_frame, flv_aac_header
from media.amf import ECMAArray, encode_amf0
from media.codecs import split_annexb
from media.frame import Frame, Kind
from media.rtp.h264_depacketize import AvcTagWriter, H264Depacketizer, parse_rtp
from media.rtp.rtcp import Nack, Pli, Remb, SenderReport, parse_compound
from media.rtp.whip_clock import WhipClock
from relay.hub import Publisher, PublisherInfo, StreamRegistry

__all__ = ["WhipHost", "WhipPublish"]

logger = logging.getLogger(__name__)

PLI_INTERVAL = 1.0
"""Seconds between two keyframe requests to the publisher."""
REMB_INTERVAL = 1.0
REORDER_WAIT = 0.1
"""Seconds packets may wait behind a missing one before it is given up as lost (no NACK)."""
NACK_WAIT = 0.5
"""The same when NACK was agreed: time for a retransmission (a few round trips)."""
NACK_RETRY = 0.08
NACK_TRIES = 4
""""A missing packet is asked for at most this many times, :data:`NACK_RETRY` s apart."""

_CLOSE_REASONS = {
    "closed": "unpublished",
    "remote-closed": "peer closed",
    "no-media": "timed out waiting for data",
    "ice-timeout": "connection error: ICE timed out",
    "dtls-failed": "connection error: DTLS failed",
    "shutdown": "server shutting down",
}


def _sprop(fmtp: str) -> tuple[bytes, ...]:
    """SPS/PPS from an fmtp's ``sprop-parameter-sets`` (base64, comma-separated)."""
    import base64
    import binascii

    for part in fmtp.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "sprop-parameter-sets":
            out: list[bytes] = []
            for item in value.split(","):
                with contextlib.suppress(binascii.Error, ValueError):
                    nal = base64.b64decode(item, validate=False)
                    if nal:
                        out.extend(split_annexb(nal) if nal.startswith(b"\x00\x00") else [nal])
            return tuple(out)
    return ()


class WhipHost(Protocol):
    """What a publish needs from its server (:class:`ingest.whip.WhipServer`)."""

    registry: StreamRegistry
    bus: EventBus
    node: str
    hooks: Hooks
    rtc_config: WebRtcConfig | None
    bitrate_hint: int

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...
    def forget(self, publish: WhipPublish) -> None: ...
    def hook_payload(self, publish: WhipPublish, query: str) -> dict[str, Any]: ...


class WhipPublish:
    """The media path of one WHIP session (see the module doc)."""

    def __init__(
        self,
        server: WhipHost,
        rtc: RtcSession,
        app: str,
        stream: str,
        *,
        resource_id: str,
        client_ip: str,
        query: str,
    ) -> None:
        self.server = server
        self.rtc = rtc
        self.app = app
        self.stream = stream
        self.id = resource_id
        self.client_ip = client_ip
        self.query = query
        self.remote = client_ip
        self.publisher: Publisher | None = None
        self.closed = False
        self.ending = False
        """Cut, closed or its session ended: it must not (re)take the stream."""
        self.close_reason = ""
        self.created = time.time()
        video, audio = rtc.video, rtc.audio
        self.video_pt = video.payload_type if video is not None else None
        self.audio_pt = audio.payload_type if audio is not None else None
        first = video if video is not None else audio
        self._local_ssrc = first.local_ssrc if first is not None else 1
        self._video_origin: int | None = None
        self._depacketizer = H264Depacketizer()
        self._writer = AvcTagWriter(sprop=_sprop(video.fmtp) if video is not None else ())
        self._clock = WhipClock(
            video.clock_rate if video is not None else 90000,
            audio.clock_rate if audio is not None else 48000,
        )
        self._remb = video is not None and "goog-remb" in video.rtcp_fb
        self._nack = video is not None and "nack" in video.rtcp_fb
        self._pli = video is not None and "nack pli" in video.rtcp_fb
        self._rtx_pt = video.rtx_payload_type if video is not None else None
        self._rtx_ssrc: int | None = None
        self._nacked: dict[int, tuple[float, int]] = {}
        """Missing sequence number -> (when last asked for, times asked)."""
        self.nacks = 0
        """NACK messages sent."""
        self.retransmissions = 0
        """Video packets received again on request (RTX or in place)."""
        self._video_ssrc: int | None = None
        self._audio_ssrc: int | None = None
        channels = audio.channels if audio is not None and audio.channels else 2
        self._audio: AudioTranscodeWorker | None = (
            AudioTranscodeWorker(self._aac_frames, channels=min(channels, 2))
            if audio is not None
            else None
        )
        self._aac_header_sent = False
        self._first_dts: int | None = None
        """The time of the first frame given to the hub: nothing goes before it."""
        self.audio_early = 0
        self.audio_overlap = 0
        self._last_audio_dts = -1
        self._last_pli = -1e9
        self._last_remb = -1e9
        self._hole_since: float | None = None
        self._loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.keyframes = 0
        self.sender_reports = {"video": 0, "audio": 0}
        """RTCP sender reports used to align audio with video, per track."""
        self.plis = 0
        """Keyframe requests (RTCP PLI) sent to the publisher."""
        rtc.on_rtp = self._on_rtp
        rtc.on_rtcp = self._on_rtcp
        rtc.on_close = self._on_rtc_close

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._audio is not None:
            self._audio.start()
        self.task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        cfg = self.server.rtc_config
        timeout = cfg.connect_timeout + 1.0 if cfg is not None else 15.0
        try:
            connected = await self.rtc.wait_connected(timeout)
            if not connected:
                self.rtc.close(self.rtc.close_reason or "ice-timeout")
            elif not self.closed:
                self._go_live()
                self._keyframe_please(force=True)
            reason = await self.rtc.wait_closed()
            self._finish(reason)
        except asyncio.CancelledError:
            self._finish("shutdown")
            raise
        finally:
            await self._cleanup()

    def _go_live(self) -> None:
        """ICE and DTLS are done: take the stream (a takeover if someone else has it)."""
        if self.publisher is not None or self.closed or self.ending:
            return
        srv = self.server
        hub = srv.registry.get(self.app, self.stream)
        takeover = hub is not None and hub.live
        addr = self.rtc.remote_address
        if addr is not None:
            self.remote = f"{addr[0]}:{addr[1]}"
        info = PublisherInfo("whip", self.remote, srv.node)
        self.publisher = srv.registry.publish(self.app, self.stream, info, on_kick=self._kicked)
        logger.info(
            "whip %s (%s): publishing %s/%s%s",
            self.id,
            self.remote,
            self.app,
            self.stream,
            " (takeover)" if takeover else "",
        )
        srv.spawn(
            srv.bus.emit(
                StreamPublished(self.app, self.stream, srv.node, self.client_ip, "whip", takeover)
            )
        )

    def _kicked(self, reason: str) -> None:
        """The hub took our publisher away (takeover, operator kick)."""
        logger.info("whip %s (%s): publisher %s: %s", self.id, self.remote, self.stream, reason)
        self.ending = True  # never take the stream back with a packet still in flight
        pub = self.publisher
        self.publisher = None
        if pub is not None and reason != "takeover":
            self.server.spawn(self._publish_ended(reason))
        self.close_reason = reason
        self.rtc.close("closed")

    def close(self, reason: str) -> None:
        """End this publish (DELETE, shutdown)."""
        self.ending = True
        self.close_reason = self.close_reason or reason
        self.rtc.close("closed")

    def _on_rtc_close(self, reason: str) -> None:
        self.ending = True
        self.close_reason = self.close_reason or _CLOSE_REASONS.get(reason, reason)

    def _finish(self, rtc_reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        reason = self.close_reason or _CLOSE_REASONS.get(rtc_reason, rtc_reason)
        self.close_reason = reason
        pub = self.publisher
        self.publisher = None
        if pub is not None:
            was_active = pub.active
            pub.close(reason)
            if was_active:
                self.server.spawn(self._publish_ended(reason))
        self.server.forget(self)
        logger.info("whip %s (%s): ended: %s", self.id, self.remote, reason)

    async def _cleanup(self) -> None:
        if self._audio is not None:
            await self._audio.close()

    async def _publish_ended(self, reason: str) -> None:
        srv = self.server
        await srv.bus.emit(StreamUnpublished(self.app, self.stream, srv.node, reason))
        if srv.hooks.enabled("on_unpublish"):
            await srv.hooks.call("on_unpublish", srv.hook_payload(self, self.query))

    # ------------------------------------------------------------------ media in

    def _now_ms(self) -> float:
        return self._loop.time() * 1000.0

    def _on_rtp(self, packet: bytes) -> None:
        view = parse_rtp(packet)
        if view is None:
            return
        if self.publisher is None:
            if self.closed or self.ending:
                return
            self._go_live()
            if self.publisher is None:
                return
        if view.payload_type == self.video_pt:
            if self._video_ssrc is None:
                self._video_ssrc = view.ssrc
            elif view.ssrc != self._video_ssrc:
                return  # an RTX or probing stream on another SSRC: not ours to depacketize
            if view.sequence in self._nacked:
                self.retransmissions += 1
            self._video(view.sequence, view.timestamp, view.marker, view.payload)
        elif view.payload_type == self._rtx_pt and self._rtx_pt is not None:
            # RFC 4588: the original sequence number, then the original payload
            if self._rtx_ssrc is None:
                self._rtx_ssrc = view.ssrc
            elif view.ssrc != self._rtx_ssrc:
                return
            if len(view.payload) > 2:  # (padding-only RTX packets are bandwidth probes)
                osn = int.from_bytes(view.payload[:2], "big")
                if osn in self._nacked:
                    self.retransmissions += 1
                self._video(osn, view.timestamp, view.marker, view.payload[2:])
        elif view.payload_type == self.audio_pt:
            if self._audio_ssrc is None:
                self._audio_ssrc = view.ssrc
            elif view.ssrc != self._audio_ssrc:
                return
            if view.payload and self._audio is not None:
                ts = self._clock.extend("audio", view.timestamp)
                # anchor the audio clock at this packet's arrival (first one only)
                self._clock.ms("audio", ts, self._now_ms())
                self._audio.put(ts, view.payload)
        self._feedback()

    def _video(self, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        dep = self._depacketizer
        units = dep.push(seq, ts, marker, payload)
        now = self._loop.time()
        if dep.holding:
            if self._hole_since is None:
                self._hole_since = now
            elif now - self._hole_since > (NACK_WAIT if self._nack else REORDER_WAIT):
                units += dep.skip_holes()
                self._hole_since = None
                self._nacked.clear()
            if self._nack and dep.holding:
                self._ask_again(now)
        else:
            self._hole_since = None
            if self._nacked:
                self._nacked.clear()
        pub = self.publisher
        for unit in units:
            ext = self._clock.extend("video", unit.timestamp & 0xFFFFFFFF)
            if self._video_origin is None:
                # the writer's timeline starts at the first unit it is given: put it here
                self._video_origin = self._clock.ms("video", ext, self._now_ms())
            for tag in self._writer.write(unit):
                if pub is None or not pub.active:
                    return
                dts = self._video_origin + tag.dts
                frame = Frame(
                    Kind.VIDEO,
                    dts,
                    tag.payload,
                    keyframe=tag.keyframe,
                    header=tag.header,
                    cts=tag.cts,
                )
                if self._first_dts is None:
                    self._first_dts = dts
                if tag.header:
                    self._metadata(pub)
                pub.push_frame(frame)
                if not tag.header:
                    self.video_frames += 1
                    self.keyframes += tag.keyframe

    def _metadata(self, pub: Publisher) -> None:
        """``onMetaData`` for FLV/RTMP players, as an RTMP encoder sends it (size, rate,
        codecs); again when the picture size changes."""
        config = self._writer.config
        meta: dict[str, Any] = {"encoder": "berrylive whip", "videocodecid": 7}
        if config is not None:
            with contextlib.suppress(ValueError):
                vc = config.video_config()
                meta["width"], meta["height"] = vc.width, vc.height
                if vc.fps:
                    meta["framerate"] = round(vc.fps, 3)
        if self._audio is not None:
            meta.update(audiocodecid=10, audiosamplerate=48000, audiosamplesize=16, stereo=True)
        pub.metadata(encode_amf0("onMetaData", ECMAArray(meta)), meta)

    def _aac_frames(self, frames: list[tuple[int, bytes]]) -> None:
        pub = self.publisher
        if pub is None or not pub.active or self._audio is None or self._audio.codec is None:
            return
        now = self._now_ms()
        for ts, raw in frames:
            dts = self._clock.ms("audio", ts, now)
            if self._first_dts is None:
                self._first_dts = dts
            elif dts < self._first_dts:
                # before the stream's start (the encoders' delays, the transcoder's lag
                # behind video): the hub would move the whole timeline for it
                self.audio_early += 1
                continue
            if dts <= self._last_audio_dts:
                # audio re-anchored earlier on video by a sender report: this stretch of
                # time was already sent; squeezing it in would garble the timestamps
                self.audio_overlap += 1
                continue
            self._last_audio_dts = dts
            if not self._aac_header_sent:
                header = flv_aac_header(self._audio.codec.asc)
                pub.push_frame(Frame(Kind.AUDIO, dts, header, header=True))
                self._aac_header_sent = True
            pub.push_frame(Frame(Kind.AUDIO, dts, flv_aac_frame(raw)))
            self.audio_frames += 1

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = parse_compound(data)
        except Exception:
            return
        for p in packets:
            if isinstance(p, SenderReport):
                kind = (
                    "video"
                    if p.ssrc == self._video_ssrc
                    else "audio"
                    if p.ssrc == self._audio_ssrc
                    else None
                )
                if kind is not None:
                    self._clock.sender_report(kind, p.ntp_timestamp, p.rtp_timestamp)
                    self.sender_reports[kind] += 1

    # ------------------------------------------------------------------ feedback out

    def _keyframe_please(self, force: bool = False) -> None:
        if not self._pli:  # only feedback the publisher agreed to (ffmpeg offers NACK only)
            return
        if self._video_ssrc is None and not force:
            return
        now = self._loop.time()
        if now - self._last_pli < PLI_INTERVAL:
            return
        media = self._video_ssrc or 0
        if media == 0 and self.rtc.video is not None and self.rtc.video.remote_ssrcs:
            media = self.rtc.video.remote_ssrcs[0]
        if not media:
            return
        self._last_pli = now
        if self.rtc.send_rtcp(bytes(Pli(self._local_ssrc, media))):
            self.plis += 1

    def _ask_again(self, now: float) -> None:
        """NACK the packets missing behind the held ones (each a few times at most)."""
        missing = self._depacketizer.missing()
        nacked = self._nacked
        ask: list[int] = []
        for seq in missing:
            last, tries = nacked.get(seq, (-1e9, 0))
            if tries < NACK_TRIES and now - last >= NACK_RETRY:
                nacked[seq] = (now, tries + 1)
                ask.append(seq)
        if len(nacked) > 4 * len(missing) + 64:  # forget holes filled or given up
            keep = set(missing)
            for seq in [s for s in nacked if s not in keep]:
                del nacked[seq]
        if not ask or self._video_ssrc is None:
            return
        if self.rtc.send_rtcp(bytes(Nack(self._local_ssrc, self._video_ssrc, tuple(ask)))):
            self.nacks += 1

    def _feedback(self) -> None:
        if self._depacketizer.needs_keyframe and self.video_pt is not None:
            self._keyframe_please()
        if self._remb and self._video_ssrc is not None:
            now = self._loop.time()
            if now - self._last_remb >= REMB_INTERVAL:
                self._last_remb = now
                ssrcs = tuple(s for s in (self._video_ssrc, self._audio_ssrc) if s is not None)
                remb = Remb(self._local_ssrc, self.server.bitrate_hint, ssrcs)
                self.rtc.send_rtcp(bytes(remb))

    # ------------------------------------------------------------------ figures

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "app": self.app,
            "stream": self.stream,
            "remote": self.remote,
            "state": self.rtc.state,
            "live": self.publisher is not None and self.publisher.active,
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "keyframes": self.keyframes,
            "sender_reports": dict(self.sender_reports),
            "av_resyncs": self._clock.resyncs,
            "audio_dropped": {"early": self.audio_early, "overlap": self.audio_overlap},
            "plis": self.plis,
            "nacks": self.nacks,
            "retransmissions": self.retransmissions,
            "depacketizer": dataclasses.asdict(self._depacketizer.stats),
        }
