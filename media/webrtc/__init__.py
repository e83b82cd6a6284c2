"""WebRTC wire pieces, sans-I/O: STUN messages (:mod:`.stun`), SDP (:mod:`.sdp`) and the
offer/answer rules of an ICE-lite, BUNDLE-only media server (:mod:`.negotiate`).

The asyncio side (one UDP port, ICE-lite, DTLS, SRTP) is ``core.rtc``.
"""

from media.webrtc.negotiate import (
    Answer,
    LocalParameters,
    NegotiatedMedia,
    OfferError,
    RemoteParameters,
    answer_offer,
)
from media.webrtc.sdp import MediaSection, RtpCodec, SdpError, SessionDescription
from media.webrtc.stun import StunError, StunMessage

__all__ = [
    "Answer",
    "LocalParameters",
    "MediaSection",
    "NegotiatedMedia",
    "OfferError",
    "RemoteParameters",
    "RtpCodec",
    "SdpError",
    "SessionDescription",
    "StunError",
    "StunMessage",
    "answer_offer",
]
