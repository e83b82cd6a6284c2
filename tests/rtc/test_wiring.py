"""The endpoint inside the app (``app[RTC_ENDPOINT]``) and the ``[webrtc]`` config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control.config import load_config
from core.rtc import RTC_ENDPOINT, RtcEndpoint
from tests.conftest import RunningServer
from tests.rtc.peer import PlainPeer


async def test_the_app_runs_one_endpoint_on_an_ephemeral_port(server: RunningServer) -> None:
    endpoint = server.app[RTC_ENDPOINT]
    assert endpoint.running and endpoint.port != 0
    assert endpoint.candidates == (("127.0.0.1", endpoint.port),)
    peer = PlainPeer(direction="recvonly")
    await peer.open()
    session = endpoint.open_session(peer.offer(), direction="sendonly")
    assert f"127.0.0.1 {endpoint.port} typ host" in session.answer_sdp
    peer.use_answer(session.answer_sdp)
    await peer.connect()
    assert await session.wait_connected(5)
    peer.vanish()


def test_webrtc_section_from_file_and_env(tmp_path: Path) -> None:
    path = tmp_path / "berrylive.toml"
    path.write_text(
        "[webrtc]\n"
        "udp_port = 9000\n"
        'public_addresses = ["203.0.113.7", "198.51.100.2:40000"]\n'
        'ice_servers = ["stun:stun.example.net:3478", "turn:turn.example.net?transport=udp u p"]\n'
    )
    env: dict[str, Any] = {"BERRYLIVE_WEBRTC_MAX_SESSIONS": "7"}
    cfg = load_config(path, env=env, ensure_secret=False)
    assert cfg.webrtc.udp_port == 9000 and cfg.webrtc.max_sessions == 7
    endpoint = RtcEndpoint(cfg.webrtc)
    endpoint.port = 9000
    assert endpoint._candidates() == (("203.0.113.7", 9000), ("198.51.100.2", 40000))
    assert endpoint.link_headers() == [
        '<stun:stun.example.net:3478>; rel="ice-server"',
        '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; '
        'credential="p"; credential-type="password"',
    ]


async def test_public_addresses_are_the_advertised_candidates(endpoint_factory: Any) -> None:
    endpoint = await endpoint_factory(public_addresses=("203.0.113.7",))
    session = endpoint.open_session(PlainPeer().offer(), direction="recvonly")
    assert f"a=candidate:1 1 udp 2130706431 203.0.113.7 {endpoint.port} typ host" in (
        session.answer_sdp
    )
    assert "127.0.0.1" not in session.answer_sdp.split("a=candidate", 1)[1]


async def test_disabled_endpoint_refuses_with_503(tmp_path: Path) -> None:
    from core.rtc import RtcOfferError, WebRtcConfig

    endpoint = RtcEndpoint(WebRtcConfig(enabled=False))
    try:
        endpoint.open_session(PlainPeer().offer(), direction="recvonly")
    except RtcOfferError as exc:
        assert exc.status == 503
    else:
        raise AssertionError("a disabled endpoint answered")


async def test_a_busy_port_is_a_clear_error(endpoint: RtcEndpoint) -> None:
    from core.rtc import WebRtcConfig

    second = RtcEndpoint(WebRtcConfig(udp_port=endpoint.port, host="127.0.0.1"))
    try:
        await second.start()
    except OSError as exc:
        assert "webrtc.udp_port" in str(exc) and str(endpoint.port) in str(exc)
    else:
        raise AssertionError("two endpoints bound one port")
    assert not second.running
