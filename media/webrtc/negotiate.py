"""Answer a WebRTC offer as an ICE-lite, BUNDLE-only media server (RFC 8829/8843/8445), sans-I/O.

:func:`answer_offer` takes the offer text, the direction the server wants (``recvonly``:
the peer publishes, WHIP; ``sendonly``: the peer plays, WHEP), the codecs it accepts in
order of preference, and our local parameters (ICE credentials, certificate fingerprint,
candidates, SSRCs); it returns the answer SDP, what the peer must prove (ICE credentials,
DTLS fingerprints, its DTLS role) and one :class:`NegotiatedMedia` per kind accepted.

Rules (each refusal is an :class:`OfferError` with an HTTP status and a reason):
- 400: not SDP, no ICE credentials or fingerprint, no ``a=rtcp-mux`` on an accepted
  section, several accepted sections not in one ``a=group:BUNDLE``, an ICE-lite offerer,
  ``a=setup:holdconn``, nothing to answer in the wanted direction.
- 406: a kind the caller wants is offered in the right direction, but with no codec it
  accepts (the reason lists what was offered).
- One section per kind is accepted (the first usable one); others, data channels and
  sections in the wrong direction are rejected with port 0, as JSEP says.
- DTLS role: an ``actpass`` or ``active`` offer makes us the DTLS server
  (``a=setup:passive``); a ``passive`` offer (ffmpeg's whip muxer by default) makes us
  the client (``a=setup:active``).
- H.264: packetization-mode=1 first, then the profile the caller says it will send
  (``prefer_h264_profile``), then Constrained Baseline (42e0..), Baseline, Main, High;
  any profile is accepted (the offered fmtp is echoed).
- RTCP feedback kept: ``nack``, ``nack pli``, ``ccm fir``, ``goog-remb`` (no
  transport-cc: we send no transport feedback). Header extensions: only the URIs asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from media.errors import ProtocolViolation
from media.webrtc import sdp
from media.webrtc.sdp import MediaSection, RtpCodec, SdpError

__all__ = [
    "DEFAULT_RECV_EXTENSIONS",
    "FINGERPRINT_ALGORITHMS",
    "SUPPORTED_FEEDBACK",
    "Answer",
    "LocalParameters",
    "NegotiatedMedia",
    "OfferError",
    "RemoteParameters",
    "answer_offer",
]

SUPPORTED_FEEDBACK = ("nack", "nack pli", "ccm fir", "goog-remb")
DEFAULT_RECV_EXTENSIONS = (
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
)
"""Header extensions a ``recvonly`` answer accepts when the caller names none."""
FINGERPRINT_ALGORITHMS = ("sha-1", "sha-224", "sha-256", "sha-384", "sha-512")
_ICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


class OfferError(ProtocolViolation):
    """The offer cannot be answered: ``status`` (400/406/415) and a reason for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class NegotiatedMedia:
    """What was agreed for one kind (the offerer's payload types are used both ways)."""

    kind: Literal["audio", "video"]
    mid: str
    payload_type: int
    codec: str
    clock_rate: int
    channels: int | None
    fmtp: str
    rtx_payload_type: int | None
    local_ssrc: int
    remote_ssrcs: tuple[int, ...]
    extmap: dict[str, int]
    rtcp_fb: tuple[str, ...]
    local_rtx_ssrc: int | None = None
    """Our RTX SSRC (signalled in ``a=ssrc-group:FID``) when we send and RTX was agreed."""


@dataclass(frozen=True)
class LocalParameters:
    ice_ufrag: str
    ice_pwd: str
    fingerprint: str
    """``sha-256 AB:CD:...`` of our DTLS certificate."""
    candidates: tuple[tuple[str, int], ...]
    """(address, port) advertised as host candidates, in priority order."""
    session_id: int
    video_ssrc: int
    audio_ssrc: int
    video_rtx_ssrc: int
    cname: str = "berrylive"
    stream_id: str = "berrylive"


@dataclass(frozen=True)
class RemoteParameters:
    ice_ufrag: str
    ice_pwd: str
    fingerprints: tuple[tuple[str, str], ...]
    """(algorithm, upper-case colon hex) pairs; the peer's certificate must match one."""
    setup: str


@dataclass(frozen=True)
class Answer:
    sdp: str
    remote: RemoteParameters
    dtls_role: Literal["server", "client"]
    video: NegotiatedMedia | None
    audio: NegotiatedMedia | None


_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`{|}~"
)


def _valid_mid(mid: str | None) -> bool:
    """A mid we can echo and list in BUNDLE: a token (RFC 8866), at most 32 characters."""
    return mid is not None and 0 < len(mid) <= 32 and set(mid) <= _TOKEN_CHARS


def _priority(index: int) -> int:
    """Host candidate priority (RFC 8445 5.1.2.1): type 126, local preference by order."""
    return (126 << 24) | ((65535 - index) << 8) | 255


def _h264_rank(codec: RtpCodec, prefer_profile: str | None) -> tuple[int, int, int]:
    params = codec.fmtp_params()
    mode = 0 if params.get("packetization-mode", "0") == "1" else 1
    profile = params.get("profile-level-id", "42e01f").lower()
    order = {"42e0": 0, "4200": 1, "4d00": 2, "6400": 3}
    same = 0 if prefer_profile and profile[:2] == prefer_profile[:2].lower() else 1
    return mode, same, order.get(profile[:4], 4)


def _pick_codec(
    section: MediaSection, wanted: Sequence[str], prefer_h264_profile: str | None = None
) -> tuple[RtpCodec, RtpCodec | None]:
    offered = section.codecs()
    for name in wanted:
        matches = [c for c in offered if c.name.lower() == name.lower()]
        if name.lower() == "h264":
            matches.sort(key=lambda c: _h264_rank(c, prefer_h264_profile))
        if not matches:
            continue
        best = matches[0]
        rtx = None
        for c in offered:
            if c.name.lower() == "rtx" and c.fmtp_params().get("apt") == str(best.payload_type):
                rtx = c
                break
        return best, rtx
    raise LookupError


def _offered_names(section: MediaSection) -> str:
    names: list[str] = []
    for c in section.codecs():
        if c.name.lower() not in ("rtx", "red", "ulpfec", "flexfec-03") and c.name not in names:
            names.append(c.name)
    return ", ".join(names) or "none"


def _check_ice(value: str | None, what: str, minimum: int) -> str:
    if value is None or value == "":
        raise OfferError(400, f"the offer has no a={what}")
    value = value.strip()
    if not (minimum <= len(value) <= 256) or not set(value) <= _ICE_CHARS:
        raise OfferError(400, f"a={what} is malformed")
    return value


def _fingerprints(values: list[str]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for value in values:
        alg, _, hexes = value.strip().partition(" ")
        alg = alg.lower()
        hexes = hexes.strip().upper()
        parts = hexes.split(":")
        if alg in FINGERPRINT_ALGORITHMS and all(
            len(p) == 2 and all(ch in "0123456789ABCDEF" for ch in p) for p in parts
        ):
            out.append((alg, hexes))
    if not out:
        raise OfferError(400, "the offer has no usable a=fingerprint (sha-256 expected)")
    return tuple(out)


def answer_offer(
    offer: str | bytes,
    *,
    direction: Literal["recvonly", "sendonly"],
    video_codecs: Sequence[str],
    audio_codecs: Sequence[str],
    local: LocalParameters,
    header_extensions: Sequence[str] | None = None,
    prefer_h264_profile: str | None = None,
) -> Answer:
    """Answer ``offer``; :class:`OfferError` when it cannot be answered (see module doc).

    ``prefer_h264_profile``: the profile-level-id (hex, e.g. ``"640028"``) of the H.264
    we will send; among the offered packetization-mode 1 payload types, one of the same
    profile is chosen first (a browser is then told the truth about what it gets)."""
    try:
        desc = sdp.parse(offer)
    except SdpError as exc:
        raise OfferError(400, f"bad SDP: {exc}") from None
    if not desc.media:
        raise OfferError(400, "the offer has no media section")
    if desc.has("ice-lite"):
        raise OfferError(400, "the offerer is ICE-lite; so is this server (one side must be full)")
    if header_extensions is None:
        header_extensions = DEFAULT_RECV_EXTENSIONS if direction == "recvonly" else ()
    wanted_remote = (
        ("sendonly", "sendrecv") if direction == "recvonly" else ("recvonly", "sendrecv")
    )

    accepted: dict[int, tuple[RtpCodec, RtpCodec | None]] = {}
    no_codec: list[str] = []
    kinds_done: set[str] = set()
    for index, section in enumerate(desc.media):
        kind = section.kind
        if kind not in ("audio", "video") or kind in kinds_done or section.port == 0:
            continue
        if "SAVP" not in section.proto or not _valid_mid(section.mid):
            continue
        if (section.direction() or "sendrecv") not in wanted_remote:
            continue
        wanted = video_codecs if kind == "video" else audio_codecs
        if not wanted:
            continue
        try:
            accepted[index] = _pick_codec(section, wanted, prefer_h264_profile)
        except LookupError:
            no_codec.append(
                f"no acceptable {kind} codec: offered {_offered_names(section)}; "
                f"accepted {', '.join(wanted)}"
            )
            kinds_done.add(kind)
            continue
        kinds_done.add(kind)
    if no_codec:
        raise OfferError(406, "; ".join(no_codec))
    if not accepted:
        what = "sends" if direction == "recvonly" else "receives"
        raise OfferError(
            400,
            f"the offer has no audio or video section that {what} media over "
            "UDP/TLS/RTP/SAVPF with a mid",
        )

    sections = [desc.media[i] for i in accepted]
    mids = [s.mid or "" for s in sections]
    if len(sections) > 1:
        groups = desc.bundle_groups()
        if not any(set(mids) <= set(g) for g in groups):
            raise OfferError(400, "BUNDLE is required: the offer's sections are not in one group")
    for section in sections:
        if not section.has("rtcp-mux"):
            raise OfferError(400, f"rtcp-mux is required (section mid={section.mid})")

    first = sections[0]
    ufrag = _check_ice(desc.media_attribute(first, "ice-ufrag"), "ice-ufrag", 4)
    pwd = _check_ice(desc.media_attribute(first, "ice-pwd"), "ice-pwd", 16)
    fingerprints = _fingerprints(desc.media_attributes(first, "fingerprint"))
    setup = (desc.media_attribute(first, "setup") or "actpass").strip().lower()
    if setup in ("actpass", "active"):
        role: Literal["server", "client"] = "server"
        our_setup = "passive"
    elif setup == "passive":
        role = "client"
        our_setup = "active"
    else:
        raise OfferError(400, f"a=setup:{setup} cannot be answered")

    negotiated: dict[str, NegotiatedMedia] = {}
    answer_media: list[MediaSection] = []
    candidate_lines = [
        (
            "a",
            f"candidate:{i + 1} 1 udp {_priority(i)} {host} {port} typ host",
        )
        for i, (host, port) in enumerate(local.candidates)
    ]
    for index, section in enumerate(desc.media):
        if index not in accepted:
            rejected_lines: list[tuple[str, str]] = [("c", "IN IP4 0.0.0.0")]
            if section.mid is not None:
                rejected_lines.append(("a", f"mid:{section.mid}"))
            rejected_lines.append(("a", "inactive"))
            formats = section.formats or ("0",)
            answer_media.append(
                MediaSection(section.kind, 0, section.proto, formats, tuple(rejected_lines))
            )
            continue
        codec, rtx = accepted[index]
        media_kind: Literal["audio", "video"] = "video" if section.kind == "video" else "audio"
        mid = section.mid or ""
        offered_ext = section.extmaps()
        extmap = {uri: ident for uri, ident in offered_ext.items() if uri in header_extensions}
        feedback = tuple(fb for fb in codec.rtcp_fb if fb in SUPPORTED_FEEDBACK)
        local_ssrc = local.video_ssrc if media_kind == "video" else local.audio_ssrc
        local_rtx = local.video_rtx_ssrc if (rtx is not None and direction == "sendonly") else None
        media = NegotiatedMedia(
            kind=media_kind,
            mid=mid,
            payload_type=codec.payload_type,
            codec=codec.name,
            clock_rate=codec.clock_rate,
            channels=codec.channels,
            fmtp=codec.fmtp,
            rtx_payload_type=rtx.payload_type if rtx is not None else None,
            local_ssrc=local_ssrc,
            remote_ssrcs=tuple(section.ssrcs()),
            extmap=extmap,
            rtcp_fb=feedback,
            local_rtx_ssrc=local_rtx,
        )
        negotiated[media_kind] = media
        formats = (str(codec.payload_type),) + ((str(rtx.payload_type),) if rtx else ())
        lines: list[tuple[str, str]] = [
            ("c", "IN IP4 0.0.0.0"),
            ("a", f"mid:{mid}"),
            ("a", f"ice-ufrag:{local.ice_ufrag}"),
            ("a", f"ice-pwd:{local.ice_pwd}"),
            ("a", f"fingerprint:{local.fingerprint}"),
            ("a", f"setup:{our_setup}"),
            ("a", direction),
            ("a", "rtcp-mux"),
        ]
        if section.has("rtcp-rsize"):
            lines.append(("a", "rtcp-rsize"))
        lines.extend(("a", f"extmap:{ident} {uri}") for uri, ident in extmap.items())
        channels = f"/{codec.channels}" if codec.channels else ""
        lines.append(
            ("a", f"rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}")
        )
        if codec.fmtp:
            lines.append(("a", f"fmtp:{codec.payload_type} {codec.fmtp}"))
        lines.extend(("a", f"rtcp-fb:{codec.payload_type} {fb}") for fb in feedback)
        if rtx is not None:
            lines.append(("a", f"rtpmap:{rtx.payload_type} rtx/{rtx.clock_rate}"))
            lines.append(("a", f"fmtp:{rtx.payload_type} apt={codec.payload_type}"))
        if direction == "sendonly":
            track = f"{local.stream_id}-{media_kind}"
            lines.append(("a", f"msid:{local.stream_id} {track}"))
            if local_rtx is not None:
                lines.append(("a", f"ssrc-group:FID {local_ssrc} {local_rtx}"))
            for ssrc in (local_ssrc, local_rtx):
                if ssrc is not None:
                    lines.append(("a", f"ssrc:{ssrc} cname:{local.cname}"))
                    lines.append(("a", f"ssrc:{ssrc} msid:{local.stream_id} {track}"))
        lines.extend(candidate_lines)
        lines.append(("a", "end-of-candidates"))
        answer_media.append(
            MediaSection(section.kind, 9, "UDP/TLS/RTP/SAVPF", formats, tuple(lines))
        )

    session_lines: list[tuple[str, str]] = [
        ("v", "0"),
        ("o", f"- {local.session_id} 2 IN IP4 127.0.0.1"),
        ("s", "-"),
        ("t", "0 0"),
        ("a", "ice-lite"),
        ("a", "group:BUNDLE " + " ".join(mids)),
    ]
    if direction == "sendonly":
        session_lines.append(("a", f"msid-semantic: WMS {local.stream_id}"))
    answer = sdp.build(session_lines, answer_media)
    return Answer(
        sdp=str(answer),
        remote=RemoteParameters(ufrag, pwd, fingerprints, setup),
        dtls_role=role,
        video=negotiated.get("video"),
        audio=negotiated.get("audio"),
    )
