"""WebRTC transport: one UDP port per process, ICE-lite, DTLS-SRTP (the authoritative interface).

WHIP (ingest) and WHEP (relay) use only what is listed here; the wire pieces underneath
(STUN, SDP, offer/answer rules) are ``media.webrtc``, sans-I/O.

The endpoint
------------
``app[RTC_ENDPOINT]`` is the process's :class:`RtcEndpoint`, created by :func:`setup`
(``control/app.py``) and started/closed in a cleanup context that runs before (and ends
after) relay and ingest. Config: :class:`WebRtcConfig` (``[webrtc]``: ``udp_port``,
``host``, ``public_addresses``, ``ice_servers``, ``max_sessions``, ``connect_timeout``,
``consent_timeout``, ``no_media_timeout``, ``dtls_mtu``, ``enabled``).

- ``endpoint.port``: the bound UDP port; ``endpoint.candidates``: (ip, port) advertised.
- ``endpoint.open_session(offer_sdp, *, direction, video_codecs=("H264",),
  audio_codecs=("opus",), header_extensions=None, prefer_h264_profile=None)
  -> RtcSession``. ``direction`` is
  ours: ``"recvonly"`` (the peer publishes: WHIP) or ``"sendonly"`` (the peer plays:
  WHEP). Codec names in order of preference (``"H264"``, ``"VP8"``, ``"opus"``; an empty
  tuple: that kind is not wanted and its section is rejected). ``header_extensions``: the
  RTP header extension URIs to accept (default: mid, abs-send-time, audio-level when
  receiving; none when sending, so one packet serialised per stream fits every viewer).
  ``prefer_h264_profile``: profile-level-id hex of the H.264 you will send (e.g. from the
  stream's SPS, ``"640028"``): among packetization-mode 1 payload types, one with the same
  profile is chosen first (Chromium 147 offers 42001f, 42e01f, 4d001f, f4001f; no 64).
  Raises :class:`RtcOfferError` (``.status``, ``.reason``): 400 bad/unanswerable SDP (no
  BUNDLE for several sections, no rtcp-mux, no ICE credentials or fingerprint, nothing in
  the wanted direction), 406 no acceptable codec (the reason lists what was offered), 503
  too many sessions (``max_sessions``) or WebRTC disabled. Synchronous and cheap: the
  answer is ready at once (all our candidates are in it: no trickle needed, a PATCH can be
  answered 405).
- ``endpoint.link_headers()``: ``Link`` header values for ``ice_servers`` (WHIP/WHEP).
- ``endpoint.sessions``: id -> session, live ones only; ``endpoint.stats``: sessions by
  state, ``dropped`` (datagrams that reached no session), ``send_drops`` (refused by a
  full socket buffer), ``send_errors``, ``gso`` (UDP GSO in use), ``gso_sends``.

A session (:class:`RtcSession`)
-------------------------------
- ``id``, ``answer_sdp`` (ICE-lite, ``a=setup:passive`` or ``active`` when the offer was
  ``passive`` as ffmpeg's whip muxer sends, sha-256 fingerprint, host candidates,
  ``a=end-of-candidates``), ``video``/``audio``: :class:`NegotiatedMedia` or None
  (``kind, mid, payload_type, codec, clock_rate, channels, fmtp, rtx_payload_type,
  local_ssrc, remote_ssrcs, extmap, rtcp_fb, local_rtx_ssrc``; payload types are the
  offerer's, used both ways; when sending, ``local_ssrc`` (and ``local_rtx_ssrc`` when
  RTX was agreed) are signalled in the answer's ``a=ssrc`` lines: send with them).
- ``state``: ``new`` -> ``connecting`` (a valid ICE check) -> ``connected`` (DTLS done,
  certificate matches the offer's fingerprint, SRTP keyed) -> ``closed`` / ``failed``.
- ``await wait_connected(timeout) -> bool``; ``await wait_closed() -> reason``.
- ``on_rtp(packet)``, ``on_rtcp(packet)``: decrypted RTP / compound RTCP, called
  synchronously from the datagram callback (do little there; never block).
- ``on_close(reason)``: called once: ``closed`` (our ``close()``), ``ice-timeout`` (no
  valid check within ``connect_timeout``, or, connected, no check with our password and
  no authenticated SRTP/SRTCP for ``consent_timeout``),
  ``dtls-failed`` (handshake failed, timed out, or the certificate does not match),
  ``no-media`` (receiving session without RTP for ``no_media_timeout``),
  ``remote-closed`` (the peer sent a DTLS close_notify), ``shutdown`` (endpoint closing),
  ``error`` (an exception of ours while handling this session's datagram; logged).
- ``send_rtp(packet) -> bool`` / ``send_rtcp(packet) -> bool``: protect with SRTP and send
  now, straight to the socket; False = dropped (not connected yet, the kernel's send
  buffer full, packet refused). Never blocks, never queues. Resending the same packet
  (NACK) is allowed, up to 4096 packets back.
- ``send_rtp_batch(packets) -> int``: the same for several packets in order (one frame's
  packets to one viewer): runs of equal-size packets leave in one UDP GSO syscall on Linux
  (about 0.8 instead of 2.8 µs of CPU per packet on loopback); returns how many went out.
- ``close(reason="closed")``: idempotent; sends a DTLS close_notify.
- ``stats``: state, packets/bytes in/out, drops_out, srtp_errors, callback_errors (a
  raising ``on_rtp``/``on_rtcp``: logged once per session), stun_requests,
  last_received_at / last_media_at (loop clock), remote_address, srtp_profile, nominated.
  ``remote_address`` and ``close_reason`` are attributes too.
- The peer may change address (a nominated check from a new address moves the media
  path; DTLS and SRTP keys stay); a client port proven by a newer session moves to it.

SRTP profiles offered: AEAD_AES_128_GCM, then AES128_CM_HMAC_SHA1_80. Deployment, the
behaviour in detail and measured costs: ``docs/webrtc.md`` (transport section).
"""

from core.rtc.config import WebRtcConfig
from core.rtc.endpoint import RTC_ENDPOINT, RtcEndpoint, RtcOfferError, setup
from core.rtc.session import RtcSession
from media.webrtc.negotiate import NegotiatedMedia

__all__ = [
    "RTC_ENDPOINT",
    "NegotiatedMedia",
    "RtcEndpoint",
    "RtcOfferError",
    "RtcSession",
    "WebRtcConfig",
    "setup",
]
