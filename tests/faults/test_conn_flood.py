"""Drill 6 at CI size (bench/faults/conn_flood.py runs 10 000 connections a phase): silent
and byte-a-second connections on the RTMP and HTTP ports from many addresses, reopened
whenever the server closes them, past the handshake / request-head deadlines: the viewer
already watching and buyers on kept-alive connections are unaffected, the server closes
the attackers' connections, new connections of real users get through while the flood
holds the total caps (cut to 200 here), and it stops cleanly afterwards."""

from __future__ import annotations

from pathlib import Path

from bench.faults import conn_flood
from tests.mediautil import make_clip


async def test_idle_and_trickling_connections_do_not_hurt_viewers_or_buyers(
    tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "clip.flv", 6.0, gop=30)
    # the deadlines the attack must outlast, shortened so a phase fits in CI
    deadlines = {
        "BERRYLIVE_INGEST_HANDSHAKE_TIMEOUT": "2",
        "BERRYLIVE_RELAY_HTTP_HEAD_TIMEOUT": "2",
        # total caps the 400 attacking connections fill (the bench run fills the defaults):
        # new viewers, RTMP handshakes and buys on new connections must still get through
        "BERRYLIVE_INGEST_MAX_CONNECTIONS": "200",
        "BERRYLIVE_RELAY_HTTP_MAX_CONNECTIONS": "200",
    }
    figures = await conn_flood.drill(
        tmp_path / "run", clip, conns=400, addrs=8, seconds=4.0, server_env=deadlines,
        phases=(("rtmp", "trickle"), ("http", "trickle")),  # idle too in the bench run
    )  # fmt: skip
    assert not figures["failures"], figures
    assert figures["exit_code_after"] == 0, figures
    for ph in figures["phases"]:
        assert ph["attack_closed_by_server"] > 0, ph  # the deadlines cut them
        assert ph["keepalive_buys_ok"] == ph["keepalive_buys"] > 0, ph
        assert ph["new_viewers_ok"] == ph["new_viewers"] > 0, ph
        assert ph["rtmp_handshakes_ok"] == ph["rtmp_handshakes"] > 0, ph
        assert ph["new_conn_buys_ok"] == ph["new_conn_buys"] > 0, ph
        assert ph["attack_open_max_client_view"] >= 200, ph  # the flood did fill the cap
