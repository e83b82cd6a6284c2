"""H.264 over RTP (RFC 6184), sending side: AVCC access units -> RTP payloads.

The hub's video frames carry AVCC samples (length-prefixed NAL units, the FLV tag body
after its header). :class:`H264Packetizer` turns one access unit into the payloads of its
RTP packets (packetization-mode 1):

* NAL units small enough are gathered into STAP-A aggregates (type 24) while they fit in
  the MTU; a lone one goes as a single NAL unit packet;
* a NAL unit larger than the MTU is cut into FU-A fragments (type 28);
* before each IDR picture the SPS and PPS of the stream's AVCDecoderConfigurationRecord
  are sent (unless the access unit carries its own), so a receiver that starts there, or
  lost the last ones, can decode it;
* access unit delimiters and filler data are dropped (they are of no use to a receiver).

:class:`RtpSequencer` puts RTP headers on payloads: one sequence-number space and SSRC
per stream, the marker bit on the last packet of an access unit. No clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from media.codecs import AvcDecoderConfig, split_length_prefixed
from media.rtp.packet import build_header

__all__ = ["DEFAULT_MTU", "H264Packetizer", "RtpSequencer", "nal_type"]

DEFAULT_MTU = 1200
"""Largest RTP payload: leaves room for the RTP header, SRTP's tag, UDP, IP and TURN."""

NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9
NAL_FILLER = 12
STAP_A = 24
FU_A = 28
_DROP = frozenset({NAL_AUD, NAL_FILLER})


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else 0


class H264Packetizer:
    """Access units in, RTP payloads out. ``mtu`` bounds every payload."""

    def __init__(self, mtu: int = DEFAULT_MTU) -> None:
        if mtu < 64:
            raise ValueError("an MTU below 64 bytes cannot carry FU-A usefully")
        self.mtu = mtu
        self.length_size = 4
        self.parameter_sets: tuple[bytes, ...] = ()
        """SPS and PPS NAL units of the current configuration record."""

    def set_config(self, record: bytes) -> AvcDecoderConfig:
        """Take a new AVCDecoderConfigurationRecord (raises ``CodecError`` if malformed)."""
        cfg = AvcDecoderConfig.parse(record)
        self.length_size = cfg.nalu_length_size
        self.parameter_sets = tuple(cfg.sps) + tuple(cfg.pps)
        return cfg

    def nal_units(self, sample: bytes) -> list[bytes]:
        """The NAL units of one AVCC sample to send (raises ``CodecError`` if malformed)."""
        nals = [
            n for n in split_length_prefixed(sample, self.length_size) if nal_type(n) not in _DROP
        ]
        types = {nal_type(n) for n in nals}
        if NAL_IDR in types and NAL_SPS not in types and self.parameter_sets:
            nals = list(self.parameter_sets) + nals
        return nals

    def payloads(self, sample: bytes) -> list[bytes]:
        """The RTP payloads of one access unit, in order."""
        return self.pack(self.nal_units(sample))

    def pack(self, nals: Sequence[bytes]) -> list[bytes]:
        """Payloads for a sequence of NAL units: STAP-A, single NAL unit or FU-A."""
        out: list[bytes] = []
        group: list[bytes] = []
        group_size = 1  # the STAP-A header byte
        for nal in nals:
            if not nal:
                continue
            if len(nal) > self.mtu:
                self._flush(group, out)
                group, group_size = [], 1
                out.extend(self._fragment(nal))
                continue
            if group and group_size + 2 + len(nal) > self.mtu:
                self._flush(group, out)
                group, group_size = [], 1
            group.append(nal)
            group_size += 2 + len(nal)
        self._flush(group, out)
        return out

    @staticmethod
    def _flush(group: list[bytes], out: list[bytes]) -> None:
        if not group:
            return
        if len(group) == 1:
            out.append(group[0])
            return
        nri = max(n[0] & 0x60 for n in group)
        forbidden = max(n[0] & 0x80 for n in group)
        parts = [bytes([forbidden | nri | STAP_A])]
        for nal in group:
            parts.append(len(nal).to_bytes(2, "big"))
            parts.append(nal)
        out.append(b"".join(parts))

    def _fragment(self, nal: bytes) -> list[bytes]:
        indicator = (nal[0] & 0xE0) | FU_A
        kind = nal[0] & 0x1F
        body = nal[1:]
        chunk = self.mtu - 2
        out: list[bytes] = []
        for start in range(0, len(body), chunk):
            end = start + chunk
            header = kind | (0x80 if start == 0 else 0) | (0x40 if end >= len(body) else 0)
            out.append(bytes([indicator, header]) + body[start:end])
        return out


class RtpSequencer:
    """RTP headers for one outgoing stream: its SSRC and sequence-number space."""

    __slots__ = ("octets", "packets", "payload_type", "seq", "ssrc")

    def __init__(self, payload_type: int, ssrc: int, first_seq: int = 0) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.seq = first_seq & 0xFFFF
        """The next packet's sequence number."""
        self.packets = 0
        self.octets = 0

    def packetize(self, payloads: Iterable[bytes], timestamp: int) -> list[tuple[int, bytes]]:
        """``(seq, packet)`` for each payload of one access unit (marker on the last)."""
        items = list(payloads)
        out: list[tuple[int, bytes]] = []
        last = len(items) - 1
        for i, payload in enumerate(items):
            seq = self.seq
            header = build_header(self.payload_type, seq, timestamp, self.ssrc, i == last)
            out.append((seq, header + payload))
            self.seq = (seq + 1) & 0xFFFF
            self.packets += 1
            self.octets += len(payload)
        return out
