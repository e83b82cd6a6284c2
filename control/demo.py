"""``make demo``: the whole system on embedded defaults with a synthetic anchor.

Starts the server (RTMP 1935 and HTTP 8080, or free ports when those are taken), pushes
an ffmpeg test pattern + tone (H.264/AAC, 720p30, ~2 Mbps) through a signed push URL,
prints the URLs, and stops everything cleanly on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import sys
import time
from dataclasses import replace

from control.cli import _install_uvloop, start_http
from control.config import Config, load_config
from core.ffmpeg import ffmpeg_exe
from core.proc import stop_process
from core.runtime import RUNTIME
from ingest import auth

logger = logging.getLogger("berrylive.demo")


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def anchor_args(url: str, size: str = "1280x720", fps: int = 30, bitrate: str = "2M") -> list[str]:
    """ffmpeg arguments for the synthetic anchor (test pattern + 440 Hz tone)."""
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", str(fps * 2),
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
        "-f", "flv", url,
    ]  # fmt: skip


async def run(config: Config, stream: str) -> None:
    from control.app import create_app

    app = create_app(config)
    runner = await start_http(config, app, shutdown_timeout=3)
    anchor: asyncio.subprocess.Process | None = None
    try:
        rt = app[RUNTIME]
        host = config.public_host()
        push = auth.push_url(
            f"rtmp://{host}:{rt.rtmp_port}", rt.secret, "live", stream, int(time.time()) + 86400
        )
        anchor = await asyncio.create_subprocess_exec(
            *anchor_args(push), stdin=asyncio.subprocess.DEVNULL
        )
        http = f"http://{host}:{rt.http_port}"
        login = await _demo_operator(app)
        print(
            "\nberrylive demo is running (Ctrl-C stops everything)\n\n"
            f"  push URL (signed, 24 h):  {push}\n"
            f"  HTTP-FLV:                 {http}/live/{stream}.flv\n"
            f"  WS-FLV:                   {http.replace('http', 'ws', 1)}/live/{stream}.flv\n"
            f"  RTMP play:                rtmp://{host}:{rt.rtmp_port}/live/{stream}\n"
            f"  HLS (replay recorder):    {http}/live/{stream}.m3u8\n"
            f"  console:                  {http}/console/   {login}\n"
            f"  API docs:                 {http}/api/docs  (spec: {http}/api/openapi.json)\n"
            f"  danmaku (Socket.IO):      {http}/socket.io/  namespace /live\n"
            f"  health / metrics:         {http}/healthz  {http}/metrics\n\n"
            f"  try: ffplay {http}/live/{stream}.flv\n",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(anchor.wait())
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            logger.error("the synthetic anchor (ffmpeg) exited with %s", anchor.returncode)
        stopper.cancel()
        waiter.cancel()
    finally:
        if anchor is not None:
            # ffmpeg finishes its stream cleanly on SIGINT
            await stop_process(anchor, timeout=5, sig=signal.SIGINT)
        print("stopping...", flush=True)
        await runner.cleanup()
        print("stopped.", flush=True)


async def _demo_operator(app: object) -> str:
    """Create the ``demo`` operator on a fresh data dir so the console can be opened."""
    from control.accounts import AccountError, Role
    from control.api import CONTROL

    accounts = app[CONTROL].accounts  # type: ignore[index]
    if accounts is None:
        return "(control plane not running)"
    password_file = app[RUNTIME].data_dir / "demo-operator.txt"  # type: ignore[index]
    if await accounts.count_users() == 0:
        password = secrets.token_urlsafe(12)
        try:
            await accounts.create_user("demo", password, Role.OPERATOR, "Demo operator")
        except AccountError as exc:
            return f"(could not create the demo operator: {exc})"
        password_file.write_text(f"demo {password}\n")
        password_file.chmod(0o600)
    if password_file.exists():
        user, _, password = password_file.read_text().strip().partition(" ")
        return f"sign in as {user} / {password}"
    return "(sign in with an account made by `berrylive user add`)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="berrylive-demo", description=__doc__)
    parser.add_argument("--config")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--stream", default="demo")
    args = parser.parse_args(argv)
    config = load_config(args.config, None, data_dir=args.data_dir)
    host = config.server.host
    server = config.server
    if not _free(host, server.rtmp_port):
        server = replace(server, rtmp_port=0)
    if not _free(host, server.http_port):
        server = replace(server, http_port=0)
    config = replace(config, server=server)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _install_uvloop()
    try:
        asyncio.run(run(config, args.stream))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
