"""RTP and RTCP, sans-I/O: packets, reports and feedback, the H.264 packetizer.

* :mod:`media.rtp.packet`: :class:`RtpPacket`, header build/rewrite, sequence arithmetic;
* :mod:`media.rtp.rtcp`: SR, RR, BYE, generic NACK, PLI, REMB (parse and build);
* :mod:`media.rtp.h264_packetize`: AVCC access units -> single NAL / STAP-A / FU-A
  payloads, SPS/PPS before each IDR; :class:`RtpSequencer` for the headers.

Nothing here reads a clock or does I/O (times come in as arguments).
"""

from media.rtp.h264_packetize import DEFAULT_MTU, H264Packetizer, RtpSequencer
from media.rtp.packet import RtpError, RtpPacket, build_header, is_rtcp, rewrite, seq_diff
from media.rtp.rtcp import (
    Bye,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpPacket,
    RtcpUnknown,
    SenderReport,
    ntp_time,
    parse_compound,
)

__all__ = [
    "DEFAULT_MTU",
    "Bye",
    "H264Packetizer",
    "Nack",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpPacket",
    "RtcpUnknown",
    "RtpError",
    "RtpPacket",
    "RtpSequencer",
    "SenderReport",
    "build_header",
    "is_rtcp",
    "ntp_time",
    "parse_compound",
    "rewrite",
    "seq_diff",
]
