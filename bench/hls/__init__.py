"""LL-HLS benchmarks: packaging CPU (cpu.py), glass-to-glass in hls.js (latency.py) and
blocking-playlist requests held per core (held.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_media_server(work: Path, http_port: int, rtmp_port: int) -> subprocess.Popen[bytes]:
    """``berrylive serve`` with the media path only (no auth, danmaku, shop or replay),
    logging to ``work/server.log``."""
    env = {
        **os.environ,
        "BERRYLIVE_INGEST_REQUIRE_AUTH": "false",
        "BERRYLIVE_DANMAKU_ENABLED": "false",
        "BERRYLIVE_SHOP_ENABLED": "false",
        "BERRYLIVE_REPLAY_ENABLED": "false",
        "BERRYLIVE_SERVER_LOG_LEVEL": "warning",
        "BERRYLIVE_WEBRTC_UDP_PORT": "0",  # not 8189: tests or a demo may hold it
    }
    with open(work / "server.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "control.cli", "serve", "--data-dir", str(work),
             "--host", "127.0.0.1", "--rtmp-port", str(rtmp_port),
             "--http-port", str(http_port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop_all(*procs: subprocess.Popen[bytes] | None) -> None:
    for proc in procs:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
