"""SDP parse/build and the offer/answer rules, on offers captured from the clients the
issue names (ffmpeg 9's whip muxer, Chromium 147, aiortc), on broken offers, and on
random input (hypothesis): nothing but SdpError/OfferError ever comes out."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from hypothesis import given, settings
from hypothesis import strategies as st

from media.webrtc import sdp
from media.webrtc.negotiate import LocalParameters, OfferError, answer_offer

DATA = Path(__file__).parent / "data"
FFMPEG = (DATA / "ffmpeg_whip_offer.sdp").read_bytes().decode()
CHROMIUM_PLAY = (DATA / "chromium_play_offer.sdp").read_bytes().decode()
CHROMIUM_PUBLISH = (DATA / "chromium_publish_offer.sdp").read_bytes().decode()
LOCAL = LocalParameters(
    ice_ufrag="LoCaL123",
    ice_pwd="p" * 24,
    fingerprint="sha-256 " + ":".join(["AB"] * 32),
    candidates=(("192.0.2.10", 8189), ("127.0.0.1", 8189)),
    session_id=42,
    video_ssrc=1111,
    audio_ssrc=2222,
    video_rtx_ssrc=3333,
)


def answer(offer: str, direction: Literal["recvonly", "sendonly"], **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("video_codecs", ("H264",))
    kw.setdefault("audio_codecs", ("opus",))
    return answer_offer(offer, direction=direction, local=LOCAL, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [FFMPEG, CHROMIUM_PLAY, CHROMIUM_PUBLISH])
def test_captured_offers_round_trip(text: str) -> None:
    desc = sdp.parse(text)
    assert "\r\n" in text and str(desc) == text
    assert sdp.parse(str(desc)) == desc
    assert sdp.parse(text.encode()) == desc
    assert sdp.parse(text.replace("\r\n", "\n")) == desc  # bare LF is tolerated


def test_ffmpeg_whip_offer() -> None:
    result = answer(FFMPEG, "recvonly")
    assert result.dtls_role == "client"  # ffmpeg offers a=setup:passive
    video, audio = result.video, result.audio
    assert video is not None and audio is not None
    assert (video.payload_type, video.rtx_payload_type, video.codec) == (106, 105, "H264")
    assert "profile-level-id=42000d" in video.fmtp
    assert video.remote_ssrcs == (314146223, 314146224)
    assert (audio.payload_type, audio.clock_rate, audio.channels) == (111, 48000, 2)
    assert audio.remote_ssrcs == (314146222,)
    assert video.rtcp_fb == ("nack",)
    desc = sdp.parse(result.sdp)
    assert desc.has("ice-lite") and desc.bundle_groups() == [["0", "1"]]
    for m in desc.media:
        assert m.attribute("setup") == "active" and m.has("rtcp-mux") and m.has("recvonly")
        assert m.attribute("ice-ufrag") == "LoCaL123"
        assert m.attributes("candidate") == [
            "1 1 udp 2130706431 192.0.2.10 8189 typ host",
            "2 1 udp 2130706175 127.0.0.1 8189 typ host",
        ]
    assert result.remote.ice_ufrag and result.remote.fingerprints[0][0] == "sha-256"


def test_chromium_play_offer() -> None:
    result = answer(CHROMIUM_PLAY, "sendonly")
    assert result.dtls_role == "server"
    video, audio = result.video, result.audio
    assert video is not None and audio is not None
    params = dict(p.split("=") for p in video.fmtp.split(";"))
    assert params["packetization-mode"] == "1" and params["profile-level-id"] == "42e01f"
    assert video.rtx_payload_type is not None and video.local_rtx_ssrc == 3333
    assert "transport-cc" not in video.rtcp_fb and "nack" in video.rtcp_fb
    assert video.extmap == {}  # nothing per viewer in the packets we send
    assert audio.fmtp == "minptime=10;useinbandfec=1"
    text = result.sdp
    assert "a=ssrc-group:FID 1111 3333\r\n" in text and "a=ssrc:2222 cname:berrylive\r\n" in text
    assert "a=sendonly\r\n" in text and "a=setup:passive\r\n" in text


def test_chromium_publish_offer() -> None:
    result = answer(CHROMIUM_PUBLISH, "recvonly")
    video = result.video
    assert video is not None and video.codec == "H264"
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in video.extmap
    assert len(video.remote_ssrcs) == 2  # media + RTX


async def test_aiortc_offer() -> None:
    pc = RTCPeerConnection()
    pc.addTrack(VideoStreamTrack())
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    await pc.close()
    result = answer(offer, "recvonly")
    assert result.video is not None and result.audio is not None
    assert {alg for alg, _ in result.remote.fingerprints} >= {"sha-256"}
    assert sdp.parse(offer) == sdp.parse(str(sdp.parse(offer)))


def _drop(text: str, prefix: str) -> str:
    return "".join(line for line in text.splitlines(True) if not line.startswith(prefix))


@pytest.mark.parametrize(
    ("offer", "direction", "status", "words"),
    [
        ("hello", "recvonly", 400, "bad SDP"),
        ("v=0\r\n", "recvonly", 400, "no media"),
        (_drop(FFMPEG, "a=group:BUNDLE"), "recvonly", 400, "BUNDLE"),
        (_drop(FFMPEG, "a=rtcp-mux"), "recvonly", 400, "rtcp-mux"),
        (_drop(FFMPEG, "a=fingerprint"), "recvonly", 400, "fingerprint"),
        (_drop(FFMPEG, "a=ice-pwd"), "recvonly", 400, "ice-pwd"),
        (FFMPEG.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n"), "recvonly", 400, "ICE-lite"),
        (FFMPEG.replace("setup:passive", "setup:holdconn"), "recvonly", 400, "holdconn"),
        (FFMPEG, "sendonly", 400, "receives media"),
        (CHROMIUM_PLAY, "recvonly", 400, "sends media"),
    ],
)
def test_refusals(
    offer: str, direction: Literal["recvonly", "sendonly"], status: int, words: str
) -> None:
    with pytest.raises(OfferError) as info:
        answer(offer, direction)
    assert info.value.status == status
    assert words in info.value.reason


def test_no_acceptable_codec_is_406_and_says_what_was_offered() -> None:
    with pytest.raises(OfferError) as info:
        answer(CHROMIUM_PUBLISH, "recvonly", video_codecs=("HEVC",))
    assert info.value.status == 406
    assert (
        "VP8" in info.value.reason and "H264" in info.value.reason and "HEVC" in info.value.reason
    )


def test_an_unwanted_kind_is_rejected_with_port_0() -> None:
    result = answer(CHROMIUM_PLAY, "sendonly", audio_codecs=())
    assert result.audio is None and result.video is not None
    desc = sdp.parse(result.sdp)
    audio = next(m for m in desc.media if m.kind == "audio")
    assert audio.port == 0 and audio.mid is not None
    assert desc.bundle_groups() == [[result.video.mid]]


def test_data_channel_and_second_video_are_rejected() -> None:
    extra = (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
        "a=sctp-port:5000\r\n"
    )
    offer = FFMPEG.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2 3")
    second_video = offer[offer.index("m=video") :].replace("a=mid:1", "a=mid:3")
    result = answer(offer + extra + second_video, "recvonly")
    desc = sdp.parse(result.sdp)
    assert [m.port for m in desc.media] == [9, 9, 0, 0]
    assert [m.mid for m in desc.media] == ["0", "1", "2", "3"]
    assert desc.bundle_groups() == [["0", "1"]]


def test_a_single_section_needs_no_bundle_group() -> None:
    offer = _drop(CHROMIUM_PLAY, "a=group:BUNDLE")
    result = answer(offer, "sendonly", audio_codecs=())
    assert result.video is not None


def test_setup_roles() -> None:
    for offered, role in (("actpass", "server"), ("active", "server"), ("passive", "client")):
        text = CHROMIUM_PLAY.replace("a=setup:actpass", f"a=setup:{offered}")
        assert answer(text, "sendonly").dtls_role == role


# --- property tests ---------------------------------------------------------------------

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/.:+", min_size=1, max_size=12)
value = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"),
    max_size=30,
)
line = st.tuples(st.sampled_from("abcikotuz"), value)


@st.composite
def descriptions(draw: st.DrawFn) -> sdp.SessionDescription:
    session = [("v", "0"), *draw(st.lists(line, max_size=6))]
    media = [
        sdp.MediaSection(
            draw(token),
            draw(st.integers(0, 65535)),
            draw(token),
            tuple(draw(st.lists(token, max_size=4))),
            tuple(draw(st.lists(line, max_size=6))),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return sdp.build(session, media)


@given(descriptions())
def test_round_trip_property(desc: sdp.SessionDescription) -> None:
    assert sdp.parse(str(desc)) == desc


@given(st.text(max_size=300))
def test_garbage_text_never_crashes(text: str) -> None:
    try:
        sdp.parse(text)
    except sdp.SdpError:
        pass
    try:
        answer("v=0\r\n" + text, "recvonly")
    except OfferError:
        pass


@settings(max_examples=200)
@given(
    st.sampled_from([FFMPEG, CHROMIUM_PLAY, CHROMIUM_PUBLISH]),
    st.lists(st.integers(0, 200), max_size=8),
    st.sampled_from(["recvonly", "sendonly"]),
    st.text(max_size=20),
)
def test_damaged_real_offers_never_crash(
    offer: str, drops: list[int], direction: Literal["recvonly", "sendonly"], noise: str
) -> None:
    lines = offer.splitlines(True)
    for i in drops:
        if lines:
            index = i % len(lines)
            lines[index] = lines[index][: len(lines[index]) // 2] + noise + "\r\n"
    try:
        result = answer("".join(lines), direction)
    except OfferError as exc:
        assert exc.status in (400, 406)
        return
    sdp.parse(result.sdp)  # what we answer is always SDP we can read back


def test_size_and_count_bounds() -> None:
    big = "v=0\r\n" + "a=x\r\n" * (sdp.MAX_LINES + 1)
    with pytest.raises(sdp.SdpError):
        sdp.parse(big)
    with pytest.raises(sdp.SdpError):
        sdp.parse("v=0\r\n" + "a=" + "x" * sdp.MAX_SDP_SIZE)
    many = "v=0\r\n" + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * (sdp.MAX_MEDIA + 1)
    with pytest.raises(sdp.SdpError):
        sdp.parse(many)


def test_the_profile_we_will_send_is_preferred() -> None:
    # Chromium 147 offers no High (64) to receive: the default order then
    video = answer(CHROMIUM_PLAY, "sendonly", prefer_h264_profile="640028").video
    assert video is not None and "profile-level-id=42e01f" in video.fmtp
    assert "packetization-mode=1" in video.fmtp
    video = answer(CHROMIUM_PLAY, "sendonly", prefer_h264_profile="4d401f").video
    assert video is not None and "profile-level-id=4d001f" in video.fmtp
    video = answer(CHROMIUM_PLAY, "sendonly").video
    assert video is not None and "profile-level-id=42e01f" in video.fmtp


def test_numbers_are_ascii_and_bounded() -> None:
    lines = CHROMIUM_PLAY.replace("a=rtpmap:109 H264/90000", "a=rtpmap:1_09 H264/90000")
    video = answer(lines, "sendonly").video
    assert video is not None and video.payload_type != 109  # that rtpmap is not a number
    weird = CHROMIUM_PLAY.replace("m=video 9 ", "m=video 9" + "9" * 5000 + " ")
    with pytest.raises(OfferError):
        answer(weird, "sendonly")
    superscript = CHROMIUM_PLAY.replace("a=rtpmap:109 H264/90000", "a=rtpmap:10² H264/90000")
    assert answer(superscript, "sendonly").video is not None
    big_pt = "\r\na=rtpmap:300 H264/90000\r\n"
    section = sdp.parse(CHROMIUM_PLAY.replace("\r\na=rtcp-mux\r\n", big_pt, 1)).media[0]
    assert all(c.payload_type <= 127 for c in section.codecs())


def test_a_mid_that_is_not_a_token_is_not_answered() -> None:
    offer = CHROMIUM_PLAY.replace("a=mid:0\r\n", "a=mid:zero one\r\n").replace(
        "a=group:BUNDLE 0 1", "a=group:BUNDLE 1"
    )
    result = answer(offer, "sendonly")
    assert result.video is None and result.audio is not None
