"""H.264 over RTP (RFC 6184) back into access units, and access units into FLV video tags.

Sans-I/O; no clock. Two stacked pieces:

* :class:`H264Depacketizer`: RTP packets in (any order within a small window), access
  units out. Single NAL unit packets, STAP-A aggregates and FU-A fragments are accepted
  (packetization-mode 0 and 1, what browsers, OBS and ffmpeg send); STAP-B, MTAP and FU-B
  (interleaved mode) are dropped and counted. Packets are put back in sequence-number order
  within ``reorder_window`` packets; a hole still open when the window is full is a loss.
  An access unit is the run of packets with one RTP timestamp, complete at the marker bit or
  when the next timestamp begins. On a loss the unit being assembled is dropped and so is
  every unit until the next IDR (a P-frame after a hole decodes to garbage):
  :attr:`H264Depacketizer.needs_keyframe` tells the shell to ask the publisher for one
  (RTCP PLI). Bounds: bytes and NAL units per access unit.
* :class:`AvcTagWriter`: access units in, FLV video tag bodies out (``AVCDecoderConfiguration
  Record`` sequence headers from the in-band SPS/PPS, of any profile, whenever they change;
  length-prefixed NAL units; keyframe = IDR; DTS in ms from the 90 kHz RTP clock, monotonic).

The RTP fixed header is read by a small private parser (:func:`parse_rtp`) so this module
stands alone; it reads the CSRC list, header extension and padding like any RTP stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from media import flv
from media.codecs import AvcDecoderConfig, CodecError

__all__ = [
    "AccessUnit",
    "AvcTag",
    "AvcTagWriter",
    "DepacketizerStats",
    "H264Depacketizer",
    "RtpView",
    "parse_rtp",
]

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_STAP_A = 24
NAL_STAP_B = 25
NAL_MTAP16 = 26
NAL_MTAP24 = 27
NAL_FU_A = 28
NAL_FU_B = 29

RTP_VERSION = 2
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_RESYNC_JUMP = 3000
"""A sequence number this far ahead (or any distance behind beyond the window) is taken as a
restarted sender: the buffer is flushed and numbering starts again there."""


@dataclass(frozen=True, slots=True)
class RtpView:
    """The fields of one RTP packet that depacketizing needs."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpView | None:
    """Read an RTP packet (RFC 3550 §5.1); ``None`` when it is not a well-formed one."""
    n = len(data)
    if n < 12:
        return None
    b0 = data[0]
    if b0 >> 6 != RTP_VERSION:
        return None
    pos = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in words
        if n < pos + 4:
            return None
        pos += 4 + 4 * int.from_bytes(data[pos + 2 : pos + 4], "big")
    end = n
    if b0 & 0x20:  # padding: the last byte says how many bytes to remove
        pad = data[-1]
        if pad == 0:
            return None
        end -= pad
    if pos > end:
        return None
    return RtpView(
        payload_type=data[1] & 0x7F,
        marker=bool(data[1] & 0x80),
        sequence=int.from_bytes(data[2:4], "big"),
        timestamp=int.from_bytes(data[4:8], "big"),
        ssrc=int.from_bytes(data[8:12], "big"),
        payload=data[pos:end],
    )


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded picture: its NAL units (no start codes) and its RTP time."""

    timestamp: int
    """The RTP timestamp extended past 32-bit wrap (90 kHz; counts from the first packet's)."""
    nalus: tuple[bytes, ...]
    keyframe: bool
    """It carries an IDR slice."""


@dataclass(slots=True)
class DepacketizerStats:
    packets: int = 0
    duplicates: int = 0
    """Packets seen twice, or arriving after their place was given up as lost."""
    lost: int = 0
    """Sequence numbers given up as lost."""
    malformed: int = 0
    """Packets that are not RTP, or payloads that are not usable H.264."""
    unsupported: int = 0
    """STAP-B, MTAP and FU-B packets (interleaved mode)."""
    access_units: int = 0
    dropped_units: int = 0
    """Access units dropped: damaged by a loss, over a bound, or waiting for an IDR."""
    resyncs: int = 0
    padding: int = 0
    """Packets without payload (padding only)."""


class H264Depacketizer:
    """RTP/H.264 packets in, complete :class:`AccessUnit` objects out."""

    def __init__(
        self,
        *,
        reorder_window: int = 64,
        max_unit_bytes: int = 4 * 1024 * 1024,
        max_unit_nalus: int = 1024,
    ) -> None:
        if reorder_window < 1:
            raise ValueError("reorder_window must be at least 1")
        self.reorder_window = reorder_window
        self.max_unit_bytes = max_unit_bytes
        self.max_unit_nalus = max_unit_nalus
        self.stats = DepacketizerStats()
        self.needs_keyframe = True
        """No IDR since the start or since the last loss: units are dropped until one comes."""
        self._expected: int | None = None
        self._held: dict[int, tuple[bool, int, bytes]] = {}
        # extended timestamps
        self._ts_last: int | None = None
        self._ts_ext = 0
        # the unit being assembled
        self._cur_ts: int | None = None
        self._cur_nalus: list[bytes] = []
        self._cur_bytes = 0
        self._cur_bad = False
        self._fu: bytearray | None = None

    # ------------------------------------------------------------------ input

    def receive(self, packet: bytes) -> list[AccessUnit]:
        """Feed one RTP packet (the whole packet, header included)."""
        view = parse_rtp(packet)
        if view is None:
            self.stats.malformed += 1
            return []
        return self.push(view.sequence, view.timestamp, view.marker, view.payload)

    def push(self, sequence: int, timestamp: int, marker: bool, payload: bytes) -> list[AccessUnit]:
        """Feed one packet's fields; returns the access units it completed (in order)."""
        self.stats.packets += 1
        sequence &= 0xFFFF
        out: list[AccessUnit] = []
        if self._expected is None:
            self._expected = sequence
        ahead = (sequence - self._expected) % _SEQ_MOD
        if ahead >= _SEQ_MOD // 2:  # behind what we already handled (or gave up on)
            behind = _SEQ_MOD - ahead
            if behind <= max(self.reorder_window, 1024):
                self.stats.duplicates += 1
                return out
            self._resync(sequence, out)
            ahead = 0
        elif ahead >= _RESYNC_JUMP:
            self._resync(sequence, out)
            ahead = 0
        if sequence in self._held:
            self.stats.duplicates += 1
            return out
        self._held[sequence] = (marker, timestamp & 0xFFFFFFFF, bytes(payload))
        self._drain(out)
        while len(self._held) > self.reorder_window:
            self._skip_hole(out)
            self._drain(out)
        return out

    def skip_holes(self) -> list[AccessUnit]:
        """Give up on every hole now (the shell calls this when held packets have waited
        too long for a missing one); what was held behind them is handed out."""
        out: list[AccessUnit] = []
        while self._held:
            self._skip_hole(out)
            self._drain(out)
        return out

    @property
    def holding(self) -> int:
        """Packets held behind a hole."""
        return len(self._held)

    def missing(self, limit: int = 64) -> list[int]:
        """Sequence numbers of the holes before the newest held packet (at most ``limit``),
        oldest first: what a NACK asks the sender for."""
        expected = self._expected
        if expected is None or not self._held:
            return []
        span = max((s - expected) % _SEQ_MOD for s in self._held)
        out: list[int] = []
        for i in range(span):
            seq = (expected + i) % _SEQ_MOD
            if seq not in self._held:
                out.append(seq)
                if len(out) >= limit:
                    break
        return out

    def flush(self) -> list[AccessUnit]:
        """Give up on every hole and hand out what is held (end of stream)."""
        out: list[AccessUnit] = []
        while self._held:
            self._skip_hole(out)
            self._drain(out)
        self._finish_unit(out)
        return out

    # ------------------------------------------------------------------ ordering

    def _resync(self, sequence: int, out: list[AccessUnit]) -> None:
        """The sender restarted its numbering: hand out what is held, then start afresh."""
        self.stats.resyncs += 1
        while self._held:
            self._skip_hole(out)
            self._drain(out)
        self._lose()
        self._expected = sequence

    def _skip_hole(self, out: list[AccessUnit]) -> None:
        """Give up on the missing packet(s) before the oldest held one."""
        expected = self._expected
        assert expected is not None
        nearest = min(self._held, key=lambda s: (s - expected) % _SEQ_MOD)
        missing = (nearest - expected) % _SEQ_MOD
        if missing:
            self.stats.lost += missing
            self._lose()
        self._expected = nearest

    def _drain(self, out: list[AccessUnit]) -> None:
        assert self._expected is not None
        held = self._held
        while self._expected in held:
            marker, ts, payload = held.pop(self._expected)
            self._expected = (self._expected + 1) % _SEQ_MOD
            self._packet(marker, ts, payload, out)

    # ------------------------------------------------------------------ assembly

    def _extend(self, ts: int) -> int:
        if self._ts_last is None:
            self._ts_last = ts
            self._ts_ext = ts
            return ts
        diff = (ts - self._ts_last) % _TS_MOD
        if diff >= _TS_MOD // 2:
            diff -= _TS_MOD
        self._ts_last = ts
        self._ts_ext += diff
        return self._ts_ext

    def _lose(self) -> None:
        """A hole: the unit in progress is damaged, and so is every one until an IDR."""
        if self._cur_ts is not None:
            self._cur_bad = True
        self._fu = None
        self.needs_keyframe = True

    def _packet(self, marker: bool, ts: int, payload: bytes, out: list[AccessUnit]) -> None:
        if not payload:
            # padding only (a browser's bandwidth probe): it holds a sequence number and
            # nothing else; it neither starts nor ends an access unit
            self.stats.padding += 1
            return
        ext = self._extend(ts)
        if self._cur_ts is not None and ext != self._cur_ts:
            self._finish_unit(out)
        if self._cur_ts is None:
            self._cur_ts = ext
        self._payload(payload)
        if marker:
            self._finish_unit(out)

    def _payload(self, payload: bytes) -> None:
        if not payload:
            self._malformed()
            return
        header = payload[0]
        if header & 0x80:
            self._malformed()
            return
        nal_type = header & 0x1F
        if 1 <= nal_type <= 23:
            self._fu = None
            self._add(payload)
        elif nal_type == NAL_STAP_A:
            self._fu = None
            pos, n = 1, len(payload)
            units: list[bytes] = []
            while pos < n:
                if pos + 2 > n:
                    self._malformed()
                    return
                size = int.from_bytes(payload[pos : pos + 2], "big")
                pos += 2
                if size == 0 or pos + size > n:
                    self._malformed()
                    return
                units.append(payload[pos : pos + size])
                pos += size
            if not units:
                self._malformed()
                return
            for unit in units:
                if unit[0] & 0x80 or not 1 <= unit[0] & 0x1F <= 23:
                    self._malformed()
                    return
            for unit in units:
                self._add(unit)
        elif nal_type == NAL_FU_A:
            if len(payload) < 3:
                self._malformed()
                return
            fu = payload[1]
            start, end, inner = bool(fu & 0x80), bool(fu & 0x40), fu & 0x1F
            if start:
                if inner < 1 or inner > 23:
                    self._malformed()
                    return
                self._fu = bytearray(((header & 0xE0) | inner,))
                self._fu += payload[2:]
            elif self._fu is None:  # its start was lost (already counted) or never sent
                self._cur_bad = True
                return
            else:
                self._fu += payload[2:]
            if len(self._fu) > self.max_unit_bytes:
                self._fu = None
                self._cur_bad = True
                return
            if end:
                unit = bytes(self._fu)
                self._fu = None
                self._add(unit)
        elif nal_type in (NAL_STAP_B, NAL_MTAP16, NAL_MTAP24, NAL_FU_B):
            self.stats.unsupported += 1
            self._cur_bad = True
            self._fu = None
        else:  # 0, 30, 31: undefined
            self._malformed()

    def _malformed(self) -> None:
        self.stats.malformed += 1
        self._cur_bad = True
        self._fu = None

    def _add(self, nal: bytes) -> None:
        self._cur_nalus.append(nal)
        self._cur_bytes += len(nal)
        if self._cur_bytes > self.max_unit_bytes or len(self._cur_nalus) > self.max_unit_nalus:
            self._cur_bad = True
            self._cur_nalus = []
            self._cur_bytes = 0

    def _finish_unit(self, out: list[AccessUnit]) -> None:
        ts, nalus, bad = self._cur_ts, self._cur_nalus, self._cur_bad
        self._cur_ts = None
        self._cur_nalus = []
        self._cur_bytes = 0
        self._cur_bad = False
        if self._fu is not None:  # a fragment never ended: the unit is damaged
            self._fu = None
            bad = True
        if ts is None:
            return
        if bad or not nalus:
            self.stats.dropped_units += 1
            if bad:
                self.needs_keyframe = True
            return
        keyframe = any(nal[0] & 0x1F == NAL_IDR for nal in nalus)
        if self.needs_keyframe:
            if not keyframe:
                self.stats.dropped_units += 1
                return
            self.needs_keyframe = False
        self.stats.access_units += 1
        out.append(AccessUnit(ts, tuple(nalus), keyframe))


# ---------------------------------------------------------------------- FLV side


@dataclass(frozen=True, slots=True)
class AvcTag:
    """One FLV video tag body (``Frame`` payload) with its timing and flags."""

    dts: int
    """Milliseconds from the first access unit written, monotonic."""
    cts: int
    payload: bytes
    keyframe: bool = False
    header: bool = False
    """An AVC sequence header (``AVCDecoderConfigurationRecord``)."""


@dataclass(slots=True)
class _ParamSets:
    sps: dict[int, bytes] = field(default_factory=dict)
    pps: dict[int, bytes] = field(default_factory=dict)


class AvcTagWriter:
    """:class:`AccessUnit` objects in, FLV AVC tag bodies out.

    SPS and PPS come in band (before each IDR from browsers, OBS and ffmpeg) or from the
    SDP's ``sprop-parameter-sets``; a sequence header is written before the first keyframe
    and again before a keyframe whose parameter sets changed. Units before the first
    keyframe with parameter sets are dropped (:attr:`dropped`). SPS, PPS and access unit
    delimiters are not repeated inside the frames. The 90 kHz RTP time becomes a DTS in
    ms; with B-frames (RTP carries presentation time) the DTS is kept monotonic and the
    difference goes into the composition time.
    """

    def __init__(self, clock_rate: int = 90000, sprop: tuple[bytes, ...] = ()) -> None:
        self.clock_rate = clock_rate
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        self._written: bytes | None = None
        self._base: int | None = None
        self._last_dts = -1
        self.dropped = 0
        self.config: AvcDecoderConfig | None = None
        for nal in sprop:
            self._remember(nal)

    def _remember(self, nal: bytes) -> None:
        if not nal:
            return
        t = nal[0] & 0x1F
        if t == NAL_SPS:
            self._sps = nal
        elif t == NAL_PPS:
            self._pps = nal

    def ms(self, timestamp: int) -> int:
        """Milliseconds of an extended RTP timestamp on this writer's timeline."""
        if self._base is None:
            self._base = timestamp
        return (timestamp - self._base) * 1000 // self.clock_rate

    def write(self, unit: AccessUnit) -> list[AvcTag]:
        out: list[AvcTag] = []
        body: list[bytes] = []
        for nal in unit.nalus:
            t = nal[0] & 0x1F
            if t in (NAL_SPS, NAL_PPS):
                self._remember(nal)
            elif t != NAL_AUD:
                body.append(nal)
        if not body:
            return out
        pts = self.ms(unit.timestamp)
        dts = pts if pts > self._last_dts else self._last_dts + 1
        if unit.keyframe and self._sps is not None and self._pps is not None:
            record = self._record()
            if record is not None and record != self._written:
                self._written = record
                out.append(AvcTag(dts, 0, bytes((0x17, 0, 0, 0, 0)) + record, header=True))
        if self._written is None:
            self.dropped += 1
            return out
        self._last_dts = dts
        cts = pts - dts
        frame_type = flv.FRAME_KEY if unit.keyframe else flv.FRAME_INTER
        head = bytes((frame_type << 4 | flv.CODEC_AVC, 1)) + (cts & 0xFFFFFF).to_bytes(3, "big")
        data = b"".join(len(n).to_bytes(4, "big") + n for n in body)
        out.append(AvcTag(dts, cts, head + data, keyframe=unit.keyframe))
        return out

    def _record(self) -> bytes | None:
        assert self._sps is not None and self._pps is not None
        try:
            config = AvcDecoderConfig.from_parameter_sets([self._sps], [self._pps])
            record = bytes(config)
        except CodecError:
            return None
        self.config = config
        return record
