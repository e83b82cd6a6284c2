"""The endpoint with plain peers: both DTLS roles, SRTP both ways, many sessions on one
port, deadlines (connect, consent, no media), bounds, garbage, close paths."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

import pytest

from core.rtc import NegotiatedMedia, RtcEndpoint, RtcOfferError, RtcSession
from media.webrtc import stun
from tests.mediautil import wait_for
from tests.rtc.peer import PlainPeer, _Proto, receiver_report, rtp_packet


async def _connected_pair(
    endpoint: RtcEndpoint, *, direction: str = "recvonly", setup: str = "actpass"
) -> tuple[PlainPeer, RtcSession]:
    peer_direction = "sendonly" if direction == "recvonly" else "recvonly"
    peer = PlainPeer(direction=peer_direction, setup=setup)  # type: ignore[arg-type]
    await peer.open()
    session = endpoint.open_session(peer.offer(), direction=direction)  # type: ignore[arg-type]
    peer.use_answer(session.answer_sdp)
    await peer.connect()
    assert await session.wait_connected(5)
    return peer, session


def _video(session: RtcSession) -> NegotiatedMedia:
    assert session.video is not None
    return session.video


@pytest.mark.parametrize("setup", ["actpass", "active", "passive"])
async def test_dtls_roles_and_srtp_both_ways(endpoint: RtcEndpoint, setup: str) -> None:
    peer, session = await _connected_pair(endpoint, setup=setup)
    expected_ours = {"actpass": "passive", "active": "passive", "passive": "active"}[setup]
    assert f"a=setup:{expected_ours}\r\n" in session.answer_sdp
    assert session.state == "connected"
    assert session.remote_address == peer.local_address
    got: list[bytes] = []
    rtcp: list[bytes] = []
    session.on_rtp = got.append
    session.on_rtcp = rtcp.append
    assert session.video is not None and session.audio is not None
    sent = [
        rtp_packet(_video(session).payload_type, i, i * 3000, peer.video_ssrc, bytes([i]) * 100)
        for i in range(20)
    ]
    for packet in sent:
        peer.send_rtp(packet)
    peer.send_rtcp(receiver_report(peer.video_ssrc))
    await wait_for(lambda: len(got) == 20 and len(rtcp) == 1)
    assert got == sent  # decrypted byte for byte
    assert rtcp[0] == receiver_report(peer.video_ssrc)
    # and back: what the session sends arrives decrypted at the peer
    back = rtp_packet(_video(session).payload_type, 7, 1234, session.video.local_ssrc, b"x" * 50)
    assert session.send_rtp(back)
    assert session.send_rtcp(receiver_report(session.video.local_ssrc))
    await wait_for(lambda: peer.received_rtp == [back] and len(peer.received_rtcp) == 1)
    stats = session.stats
    assert stats["packets_in"] == 21 and stats["packets_out"] == 2
    assert stats["srtp_profile"] in ("SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_SHA1_80")
    peer.vanish()


async def test_many_sessions_share_the_port(endpoint: RtcEndpoint) -> None:
    pairs = await asyncio.gather(*[_connected_pair(endpoint) for _ in range(12)])
    assert len(endpoint.sessions) == 12
    assert endpoint.stats["states"] == {"connected": 12}
    inboxes: list[list[bytes]] = []
    for _, session in pairs:
        inbox: list[bytes] = []
        session.on_rtp = inbox.append
        inboxes.append(inbox)
    for i, (peer, session) in enumerate(pairs):
        pt = _video(session).payload_type
        peer.send_rtp(rtp_packet(pt, 1, 0, peer.video_ssrc, i.to_bytes(2, "big")))
    await wait_for(lambda: all(len(inbox) == 1 for inbox in inboxes))
    for i, inbox in enumerate(inboxes):
        assert inbox[0].endswith(i.to_bytes(2, "big"))  # each packet reached its own session
        assert int.from_bytes(inbox[0][8:12], "big") == pairs[i][0].video_ssrc
    for peer, _ in pairs:
        peer.vanish()


async def test_max_sessions_is_503_and_a_slot_frees_on_close(
    endpoint_factory: Callable[..., Any],
) -> None:
    endpoint = await endpoint_factory(max_sessions=2)
    peers = [PlainPeer(direction="sendonly") for _ in range(3)]
    a = endpoint.open_session(peers[0].offer(), direction="recvonly")
    endpoint.open_session(peers[1].offer(), direction="recvonly")
    with pytest.raises(RtcOfferError) as info:
        endpoint.open_session(peers[2].offer(), direction="recvonly")
    assert info.value.status == 503
    a.close()
    assert endpoint.open_session(peers[2].offer(), direction="recvonly").state == "new"


async def test_close_sends_close_notify_and_reports_once(endpoint: RtcEndpoint) -> None:
    peer, session = await _connected_pair(endpoint)
    reasons: list[str] = []
    session.on_close = reasons.append
    session.close()
    session.close()
    assert reasons == ["closed"] and session.state == "closed"
    assert session.id not in endpoint.sessions
    await wait_for(lambda: peer.closed_by_remote)
    assert not session.send_rtp(b"\x80" + bytes(20))
    # the peer's packets are now from an unknown address: dropped, no reply
    dropped = endpoint.dropped
    peer.send_rtp(rtp_packet(96, 1, 0, peer.video_ssrc, b"late"))
    await wait_for(lambda: endpoint.dropped > dropped)
    peer.vanish()


async def test_remote_close_notify_closes_the_session(endpoint: RtcEndpoint) -> None:
    peer, session = await _connected_pair(endpoint)
    assert peer.dtls is not None
    peer.send_raw(b"".join(peer.dtls.close()))
    assert await asyncio.wait_for(session.wait_closed(), 5) == "remote-closed"
    assert session.state == "failed"
    peer.vanish()


async def test_vanished_peer_is_an_ice_timeout(endpoint_factory: Callable[..., Any]) -> None:
    endpoint = await endpoint_factory(consent_timeout=1.0, no_media_timeout=60)
    peer, session = await _connected_pair(endpoint)
    reasons: list[str] = []
    session.on_close = reasons.append
    peer.vanish()
    assert await asyncio.wait_for(session.wait_closed(), 10) == "ice-timeout"
    assert reasons == ["ice-timeout"]
    assert not endpoint.sessions


async def test_consent_checks_keep_a_quiet_session_alive_but_not_a_publisher(
    endpoint_factory: Callable[..., Any],
) -> None:
    endpoint = await endpoint_factory(consent_timeout=2.0, no_media_timeout=2.5)
    peer, session = await _connected_pair(endpoint, direction="sendonly")
    pub, pub_session = await _connected_pair(endpoint, direction="recvonly")
    loop = asyncio.get_running_loop()
    until = loop.time() + 3.5
    while loop.time() < until:  # consent checks only, no media
        peer.send_check(use_candidate=False)
        pub.send_check(use_candidate=False)
        await asyncio.sleep(0.3)
    assert session.state == "connected"
    # the receiving session needs media, consent alone is not enough
    assert await asyncio.wait_for(pub_session.wait_closed(), 5) == "no-media"
    peer.vanish()
    pub.vanish()


async def test_no_check_within_connect_timeout(endpoint_factory: Callable[..., Any]) -> None:
    endpoint = await endpoint_factory(connect_timeout=0.5)
    peer = PlainPeer(direction="sendonly")
    session = endpoint.open_session(peer.offer(), direction="recvonly")
    assert not await session.wait_connected(10)
    assert session.close_reason == "ice-timeout"


async def test_ice_but_no_dtls_is_dtls_failed(endpoint_factory: Callable[..., Any]) -> None:
    endpoint = await endpoint_factory(connect_timeout=0.5)
    peer = PlainPeer(direction="sendonly", setup="active")
    await peer.open()
    session = endpoint.open_session(peer.offer(), direction="recvonly")
    peer.use_answer(session.answer_sdp)
    peer.send_check()
    await wait_for(lambda: session.state == "connecting")
    assert not await session.wait_connected(10)
    assert session.close_reason == "dtls-failed"
    peer.vanish()


async def test_wrong_certificate_is_dtls_failed(endpoint: RtcEndpoint) -> None:
    peer = PlainPeer(direction="sendonly")
    await peer.open()
    offer = peer.offer()
    fp = peer.contexts.certificate.fingerprint
    forged = fp[:-2] + ("00" if not fp.endswith("00") else "11")
    session = endpoint.open_session(offer.replace(fp, forged), direction="recvonly")
    peer.use_answer(session.answer_sdp)
    try:
        await peer.connect(timeout=3)  # the peer itself may finish its side
    except TimeoutError:
        pass
    assert await asyncio.wait_for(session.wait_closed(), 5) == "dtls-failed"
    assert not session.send_rtp(b"\x80" + bytes(20))
    peer.vanish()


async def test_checks_with_bad_credentials_get_no_answer(endpoint: RtcEndpoint) -> None:
    peer = PlainPeer(direction="sendonly")
    await peer.open()
    session = endpoint.open_session(peer.offer(), direction="recvonly")
    peer.use_answer(session.answer_sdp)
    dropped = endpoint.dropped
    peer.send_check(pwd="not-the-password-at-all")
    real_ufrag = peer.remote_ufrag
    peer.remote_ufrag = "nobody00"
    peer.send_check()
    peer.remote_ufrag = real_ufrag
    await wait_for(lambda: endpoint.dropped >= dropped + 2)
    assert peer.stun_responses == [] and session.state == "new"
    await peer.connect()  # the right credentials still work
    assert await session.wait_connected(5)
    response = peer.stun_responses[0]
    assert response.cls == stun.CLASS_SUCCESS and response.has_fingerprint
    mapped = response.get(stun.ATTR_XOR_MAPPED_ADDRESS)
    assert mapped is not None
    assert stun.decode_xor_address(mapped, response.transaction_id) == peer.local_address
    peer.vanish()


async def test_garbage_disturbs_nothing(endpoint: RtcEndpoint) -> None:
    peer, session = await _connected_pair(endpoint)
    got: list[bytes] = []
    session.on_rtp = got.append
    # from an unknown address: every RFC 7983 range and then some
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.settimeout(0.3)
    try:
        dropped = endpoint.dropped
        samples = [bytes([b]) + os.urandom(40) for b in (0, 1, 3, 22, 23, 64, 128, 150, 200, 255)]
        samples += [b"", b"\x00\x01\x00\x00" + bytes(16), os.urandom(1400)]
        for data in samples:
            stranger.sendto(data, ("127.0.0.1", endpoint.port))
        await wait_for(lambda: endpoint.dropped >= dropped + len(samples) - 1)
        with pytest.raises(TimeoutError):
            stranger.recvfrom(2048)  # no reply to a stranger, whatever it sent
    finally:
        stranger.close()
    # from the session's own address: forged SRTP, a DTLS-looking record, a bad STUN
    errors = session.stats["srtp_errors"]
    for _ in range(5):
        peer.send_raw(bytes([0x80, 96]) + os.urandom(60))
    peer.send_raw(bytes([23, 0xFE, 0xFD]) + os.urandom(40))
    peer.send_raw(b"\x00\x01" + os.urandom(30))
    await wait_for(lambda: session.stats["srtp_errors"] >= errors + 5)
    assert session.state == "connected"
    pt = _video(session).payload_type
    good = rtp_packet(pt, 100, 0, peer.video_ssrc, b"still here")
    peer.send_rtp(good)
    await wait_for(lambda: got == [good])
    peer.vanish()


async def test_a_raising_callback_does_not_break_the_session(endpoint: RtcEndpoint) -> None:
    peer, session = await _connected_pair(endpoint)
    calls: list[bytes] = []

    def bad(packet: bytes) -> None:
        calls.append(packet)
        raise RuntimeError("consumer bug")

    session.on_rtp = bad
    pt = _video(session).payload_type
    for i in range(3):
        peer.send_rtp(rtp_packet(pt, i, 0, peer.video_ssrc, b"p"))
    await wait_for(lambda: len(calls) == 3)
    assert session.state == "connected" and session.stats["callback_errors"] == 3
    peer.vanish()


async def test_endpoint_close_ends_every_session(endpoint_factory: Callable[..., Any]) -> None:
    endpoint = await endpoint_factory()
    pairs = [await _connected_pair(endpoint) for _ in range(3)]
    await endpoint.close()
    assert [s.close_reason for _, s in pairs] == ["shutdown"] * 3
    with pytest.raises(RtcOfferError) as info:
        endpoint.open_session(PlainPeer().offer(), direction="recvonly")
    assert info.value.status == 503
    for peer, _ in pairs:
        peer.vanish()


async def test_a_reused_client_port_moves_to_the_newer_session(
    endpoint_factory: Callable[..., Any],
) -> None:
    endpoint = await endpoint_factory(consent_timeout=1.0, no_media_timeout=60)
    old_peer, old = await _connected_pair(endpoint)
    # a new client on the very same address and port (the old one gone without a word)
    new_peer = PlainPeer(direction="sendonly")
    assert old_peer.transport is not None
    new_peer.transport = old_peer.transport
    old_peer.transport.set_protocol(_Proto(new_peer))
    new = endpoint.open_session(new_peer.offer(), direction="recvonly")
    new_peer.use_answer(new.answer_sdp)
    await new_peer.connect()
    assert await new.wait_connected(5)
    assert old.remote_address is None and not old.send_rtp(b"\x80" + bytes(20))
    got: list[bytes] = []
    new.on_rtp = got.append
    packet = rtp_packet(_video(new).payload_type, 1, 0, new_peer.video_ssrc, b"mine")
    new_peer.send_rtp(packet)
    await wait_for(lambda: got == [packet])
    closed = asyncio.ensure_future(old.wait_closed())
    while not closed.done():  # the new peer keeps its consent fresh, the old one is silent
        new_peer.send_check(use_candidate=False)
        await asyncio.wait([closed], timeout=0.2)
    assert closed.result() == "ice-timeout"
    assert new.state == "connected"
    new_peer.vanish()


def test_ipv4_mapped_addresses_are_answered_as_ipv4() -> None:
    tid = bytes(12)
    value = stun.encode_xor_address("::ffff:192.0.2.9", 5000, tid)
    assert stun.decode_xor_address(value, tid) == ("192.0.2.9", 5000)


@pytest.mark.parametrize("setup", ["active", "passive"])
async def test_lost_dtls_flights_are_resent(endpoint: RtcEndpoint, setup: str) -> None:
    """The server's first flight (as DTLS server: ServerHello...; as client: ClientHello)
    is lost twice on the way; OpenSSL's timer resends it and the handshake completes."""
    peer = PlainPeer(direction="sendonly", setup=setup)  # type: ignore[arg-type]
    await peer.open()
    session = endpoint.open_session(peer.offer(), direction="recvonly")
    peer.use_answer(session.answer_sdp)
    peer.drop_dtls = 2
    peer.retransmit = False  # only the server's timer can recover
    await peer.connect(timeout=15)
    assert await session.wait_connected(15)
    assert peer.dropped_dtls == 2
    peer.vanish()


async def test_batches_arrive_whole_and_in_order(endpoint: RtcEndpoint) -> None:
    """send_rtp_batch: runs of equal-size packets go as UDP GSO sends; the peer still gets
    one datagram per packet, each decrypting to what was sent, in order."""
    peer, session = await _connected_pair(endpoint, direction="sendonly")
    ssrc = _video(session).local_ssrc
    pt = _video(session).payload_type
    sizes = [1100] * 9 + [300] + [1100] * 3 + [40, 1100] + [1000] * 70  # runs, a cut, >64
    packets = [rtp_packet(pt, i, 0, ssrc, bytes([i % 256]) * n) for i, n in enumerate(sizes)]
    assert session.send_rtp_batch(packets) == len(packets)
    await wait_for(lambda: len(peer.received_rtp) == len(packets))
    assert peer.received_rtp == packets
    assert endpoint.gso and endpoint.stats["gso_sends"] >= 4  # Linux: UDP_SEGMENT is used
    assert session.stats["packets_out"] == len(packets)
    assert session.send_rtp_batch([]) == 0
    peer.vanish()
    session.close()
    assert session.send_rtp_batch(packets[:3]) == 0


async def test_an_old_packet_can_be_resent(endpoint: RtcEndpoint) -> None:
    """NACK answered in place: a packet 3000 packets back is protected and sent again."""
    peer, session = await _connected_pair(endpoint, direction="sendonly")
    pt, ssrc = _video(session).payload_type, _video(session).local_ssrc
    packets = [rtp_packet(pt, i, i * 90, ssrc, b"v" * 20) for i in range(3001)]
    for packet in packets:
        assert session.send_rtp(packet)
    assert session.send_rtp(packets[1])  # libsrtp refuses it beyond the replay window
    assert session.stats["drops_out"] == 0
    peer.vanish()


async def test_the_peer_moves_to_a_new_address(endpoint: RtcEndpoint) -> None:
    """A nominated check from a new address (a phone changing networks) moves the media
    path there; the DTLS association and SRTP keys stay."""
    peer, session = await _connected_pair(endpoint)
    got: list[bytes] = []
    session.on_rtp = got.append
    old = peer.local_address
    loop = asyncio.get_running_loop()
    moved, _ = await loop.create_datagram_endpoint(
        lambda: _Proto(peer), local_addr=("127.0.0.1", 0)
    )
    assert peer.transport is not None
    peer.transport.close()
    peer.transport = moved
    assert peer.local_address != old
    peer.stun_responses.clear()
    peer.send_check()
    await wait_for(lambda: session.remote_address == peer.local_address)
    pt = _video(session).payload_type
    packet = rtp_packet(pt, 5, 0, peer.video_ssrc, b"from the new address")
    peer.send_rtp(packet)
    await wait_for(lambda: got == [packet])
    back = rtp_packet(pt, 9, 0, _video(session).local_ssrc, b"to the new address")
    assert session.send_rtp(back)
    await wait_for(lambda: peer.received_rtp == [back])
    peer.vanish()


async def test_a_bug_while_handling_a_datagram_ends_only_that_session(
    endpoint: RtcEndpoint,
) -> None:
    victim_peer, victim = await _connected_pair(endpoint)
    other_peer, other = await _connected_pair(endpoint)

    def boom(packet: bytes) -> None:
        raise RuntimeError("a bug")

    # on_rtp errors are the consumer's and are caught; a failure inside the transport
    # itself is simulated by a session whose SRTP receive step raises
    victim._srtp_datagram = lambda data, now: boom(data)  # type: ignore[method-assign]
    victim_peer.send_rtp(rtp_packet(_video(victim).payload_type, 1, 0, 1, b"x"))
    assert await asyncio.wait_for(victim.wait_closed(), 5) == "error"
    got: list[bytes] = []
    other.on_rtp = got.append
    packet = rtp_packet(_video(other).payload_type, 1, 0, other_peer.video_ssrc, b"fine")
    other_peer.send_rtp(packet)
    await wait_for(lambda: got == [packet])
    victim_peer.vanish()
    other_peer.vanish()


async def test_forged_datagrams_do_not_keep_a_session_alive(
    endpoint_factory: Callable[..., Any],
) -> None:
    """Consent is refreshed only by checks with our password and authenticated SRTP: a
    spoofer sending SRTP- or DTLS-looking garbage from the peer's address cannot hold it."""
    endpoint = await endpoint_factory(consent_timeout=1.0, no_media_timeout=60)
    peer, session = await _connected_pair(endpoint)
    closed = asyncio.ensure_future(session.wait_closed())
    for _ in range(100):  # 10 s at most
        if closed.done():
            break
        peer.send_raw(bytes([0x80, 96]) + os.urandom(60))
        peer.send_raw(bytes([23, 0xFE, 0xFD]) + os.urandom(40))
        await asyncio.wait([closed], timeout=0.1)
    assert closed.result() == "ice-timeout"
    peer.vanish()


async def test_ipv6(endpoint_factory: Callable[..., Any]) -> None:
    endpoint = await endpoint_factory(host="::1")
    assert endpoint.candidates == (("::1", endpoint.port),)
    peer = PlainPeer(direction="sendonly", host="::1")
    await peer.open()
    session = endpoint.open_session(peer.offer(), direction="recvonly")
    assert f"::1 {endpoint.port} typ host" in session.answer_sdp
    peer.use_answer(session.answer_sdp)
    await peer.connect()
    assert await session.wait_connected(5)
    mapped = peer.stun_responses[0].get(stun.ATTR_XOR_MAPPED_ADDRESS)
    assert mapped is not None
    tid = peer.stun_responses[0].transaction_id
    assert stun.decode_xor_address(mapped, tid) == peer.local_address
    got: list[bytes] = []
    session.on_rtp = got.append
    packet = rtp_packet(_video(session).payload_type, 1, 0, peer.video_ssrc, b"v6")
    peer.send_rtp(packet)
    await wait_for(lambda: got == [packet])
    peer.vanish()


async def test_the_certificate_rotates_for_new_sessions_only(
    endpoint_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.rtc.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "CERTIFICATE_ROTATION", 0.5)
    endpoint = await endpoint_factory()
    first = endpoint.fingerprint
    old_peer, old = await _connected_pair(endpoint)
    await wait_for(lambda: endpoint.fingerprint != first, timeout=10)
    new_peer, new = await _connected_pair(endpoint)
    assert first in old.answer_sdp and endpoint.fingerprint in new.answer_sdp
    assert old.state == new.state == "connected"
    old_peer.vanish()
    new_peer.vanish()


async def test_fuzzed_datagrams_from_a_peer_and_strangers(endpoint: RtcEndpoint) -> None:
    """5000 random datagrams (every RFC 7983 range, truncated STUN with our ufrag, DTLS
    record headers) into the demultiplexer from the session's own address and from
    strangers: nothing raises, the session keeps working."""
    import random

    peer, session = await _connected_pair(endpoint)
    rng = random.Random(18)
    own = next(a for a in endpoint._by_addr if endpoint._by_addr[a] is session)
    stun_head = bytes.fromhex("00010000") + stun.MAGIC_COOKIE.to_bytes(4, "big")
    for i in range(5000):
        kind = rng.randrange(5)
        body = rng.randbytes(rng.randrange(0, 300))
        if kind == 0:
            data = stun_head + rng.randbytes(12) + body
            data = data[:2] + (len(data) - 20).to_bytes(2, "big") + data[4:]
        elif kind == 1:
            data = bytes([rng.choice([20, 21, 22, 23]), 0xFE, 0xFD]) + body
        elif kind == 2:
            data = bytes([0x80 | rng.randrange(64), rng.randrange(256)]) + body
        else:
            data = body
        addr = own if i % 2 else ("127.0.0.1", 40000 + rng.randrange(1000))
        endpoint._datagram(data, addr)
    assert session.state == "connected" and len(endpoint.sessions) == 1
    got: list[bytes] = []
    session.on_rtp = got.append
    packet = rtp_packet(_video(session).payload_type, 7, 0, peer.video_ssrc, b"after")
    peer.send_rtp(packet)
    await wait_for(lambda: got == [packet])
    peer.vanish()
