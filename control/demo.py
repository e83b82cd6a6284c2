"""``make demo``: the whole system on embedded defaults, as a living shop.

Starts the server (RTMP 1935, HTTP 8080 and WebRTC UDP 8189, or free ports when those are
taken, or the ports given), then, as an operator client would, over the REST API: signs in
as the ``demo`` operator (made on a fresh data dir), sets up an anchor account, a few products
with colour/size SKUs and a broadcast with them on its shelf (found again on later runs,
not duplicated), pushes an ffmpeg test pattern + tone (H.264/AAC) to the broadcast's own
signed push URL so it goes live, and runs the show (:mod:`control.demo_shop`: rotating
"now explaining" card, flash sales with a countdown, lotteries). A synthetic audience
(:mod:`control.demo_audience`, a separate process: FLV viewers, Socket.IO comments and
likes, buys paid through the simulated provider) watches and buys unless
``--no-audience`` or ``BERRYLIVE_DEMO_AUDIENCE=0``.

Ctrl-C or SIGTERM stops everything: the audience, the show, the broadcast (ended, as an
operator would), ffmpeg, the server and its valkey-server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
from aiohttp import web

from control import demo_shop
from control.cli import _install_uvloop, start_http
from control.config import Config, ConfigError, load_config
from core.ffmpeg import ffmpeg_exe
from core.proc import stop_process
from core.runtime import RUNTIME
from ingest import auth

logger = logging.getLogger("berrylive.demo")

OPERATOR = "demo"
AUDIENCE_ENV = "BERRYLIVE_DEMO_AUDIENCE"
"""``0``/``false``/``no``/``off`` turns the synthetic audience off (as ``--no-audience``)."""
SETUP_ERRORS: tuple[type[Exception], ...] = (RuntimeError, OSError, *demo_shop.RECOVERABLE)
"""The shop could not be set up: the demo goes on with its stream only."""
LIVE_TIMEOUT = 30.0
"""Seconds to wait for the broadcast to go live before the audience starts anyway."""


UDP = socket.SOCK_DGRAM


def _free(host: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def anchor_args(url: str, size: str = "1280x720", fps: int = 30, bitrate: str = "2M") -> list[str]:
    """ffmpeg arguments for the synthetic anchor (test pattern + 440 Hz tone)."""
    return [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", str(fps * 2),
        "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k",
        "-f", "flv", url,
    ]  # fmt: skip


def audience_enabled(flag_off: bool, env: dict[str, str] | os._Environ[str]) -> bool:
    value = env.get(AUDIENCE_ENV, "1").strip().lower()
    return not flag_off and value not in ("0", "false", "no", "off")


def _local_base(config: Config, port: int) -> str:
    """The server's HTTP base as this machine reaches it (loopback for a wildcard bind)."""
    host = config.server.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _operator_password(config: Config, data_dir: Path, config_file: str | None) -> str:
    """The ``demo`` operator's password, kept in ``demo-operator.txt``; on a fresh data dir
    the account is made with ``berrylive user add`` (the operator command, not the
    server's objects) and the password written there."""
    password_file = data_dir / "demo-operator.txt"
    kept = await asyncio.to_thread(demo_shop.read_secret, password_file)
    if kept is not None and kept[0] == OPERATOR:
        return kept[1]
    password = secrets.token_urlsafe(12)
    cmd = [sys.executable, "-m", "control.ops_cli", "user", "add", OPERATOR]
    cmd += ["--role", "operator", "--display-name", "Demo operator", "--password-stdin"]
    cmd += ["--data-dir", str(data_dir)]
    if config_file:
        cmd += ["--config", config_file]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(f"{password}\n".encode()), 120)
    finally:
        await stop_process(proc, timeout=2)
    if proc.returncode != 0:
        raise RuntimeError(
            f"could not create the {OPERATOR!r} operator: {out.decode(errors='replace').strip()}"
            f" (set its password with `berrylive user passwd {OPERATOR} --data-dir {data_dir}`"
            f" and write `{OPERATOR} <password>` to {password_file}, or use a fresh data dir)"
        )
    await asyncio.to_thread(demo_shop.write_secret, password_file, OPERATOR, password)
    return password


class Demo:
    """One run of the demo: everything it started, stopped in reverse by :meth:`stop`."""

    def __init__(self, config: Config, args: argparse.Namespace, audience: bool) -> None:
        self.config = config
        self.args = args
        self.audience_on = audience
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self.api: demo_shop.Api | None = None
        self.session_token = ""
        self.api_token_id: int | None = None
        self.seeded: demo_shop.Seeded | None = None
        self.anchor: asyncio.subprocess.Process | None = None
        self.audience: asyncio.subprocess.Process | None = None
        self.show_task: asyncio.Task[None] | None = None
        self.data_dir = Path(os.path.abspath(config.data_path))
        self.http = self.rtmp = self.push = self.password = ""
        self.viewer_page: str | None = None

    async def start(self) -> None:
        from control.app import create_app

        app = create_app(self.config)
        self.runner = await start_http(self.config, app, shutdown_timeout=3)
        rt = app[RUNTIME]
        self.http = rt.http_base()
        self.rtmp = rt.rtmp_base()
        base = _local_base(self.config, rt.http_port)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.api = demo_shop.Api(self.session, base)
        try:
            password = await _operator_password(self.config, self.data_dir, self.args.config)
            login = await self.api.call(
                "POST",
                "/api/auth/login",
                {"username": OPERATOR, "password": password},
                auth=False,
            )
            self.session_token = self.api.token = str(login["token"])
            created = await self.api.call(
                "POST", "/api/tokens", {"name": "make demo", "expires_in": 7 * 86400}
            )
            self.api_token_id = int(created["id"])
            self.api.token = str(created["token"])
            self.password = password
            self.seeded = await demo_shop.seed(self.api, self.data_dir)
        except SETUP_ERRORS as exc:
            logger.error("the demo shop could not be set up: %s", exc)
            self.seeded = None
        if self.seeded is not None:
            push = self.seeded.push_url
        else:  # no shop: still a stream to look at, on a URL signed with the server secret
            push = auth.push_url(self.rtmp, rt.secret, "live", "demo", int(time.time()) + 86400)
        self.push = push
        self.anchor = await asyncio.create_subprocess_exec(
            *anchor_args(push, size=self.args.video_size, bitrate=self.args.video_bitrate),
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops it in order
        )
        if self.seeded is None:
            return
        live = await demo_shop.wait_live(self.api, self.seeded.id, LIVE_TIMEOUT)
        if not live:
            logger.warning(
                "broadcast %d is not live yet; the audience starts anyway", self.seeded.id
            )
        self.viewer_page = await self._viewer_page(base)
        self.show_task = asyncio.create_task(demo_shop.Show(self.api, self.seeded).run())
        if self.audience_on:
            env = dict(os.environ)
            env["BERRYLIVE_DEMO_API_TOKEN"] = self.api.token
            cmd = [sys.executable, "-m", "control.demo_audience", "--api", base]
            cmd += ["--broadcast", str(self.seeded.id), "--viewers", str(self.args.viewers)]
            cmd += ["--exit-on-eof"]
            self.audience = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, env=env, start_new_session=True
            )

    async def _viewer_page(self, base: str) -> str | None:
        """The H5 viewer page of the broadcast, once the server has one (``/watch/...``)."""
        assert self.session is not None and self.seeded is not None
        path = f"/watch/{self.seeded.room}"
        try:
            async with self.session.get(base + path) as resp:
                html = resp.status == 200 and resp.content_type == "text/html"
        except (aiohttp.ClientError, TimeoutError):
            return None
        return self.http + path if html else None

    def banner(self) -> str:
        s = self.seeded
        docs = f"{self.http}/api/docs  (spec: {self.http}/api/openapi.json)"
        if s is None:
            stream = f"{self.http}/live/demo"
            return (
                "\nberrylive demo is running without its shop (see the error above; "
                "Ctrl-C stops everything)\n\n"
                f"  HTTP-FLV:   {stream}.flv\n"
                f"  WS-FLV:     ws{stream[4:]}.flv\n"
                f"  HLS:        {stream}.m3u8\n"
                f"  console:    {self.http}/console/\n"
                f"  API docs:   {docs}\n"
            )
        skus = sum(len(p.get("skus", [])) for p in s.products)
        anchor = s.anchor.get("username", "")
        if s.anchor_password:
            anchor += f" / {s.anchor_password}"
        audience = (
            f"{self.args.viewers} viewers (HTTP-FLV, WS-FLV), 8 chatters, a buy every ~4 s"
            if self.audience_on
            else f"off (--no-audience or {AUDIENCE_ENV}=0)"
        )
        return (
            "\nberrylive demo is running (Ctrl-C stops everything)\n\n"
            f"  console:    {self.http}/console/   sign in as {OPERATOR} / {self.password}\n"
            f'  broadcast:  {s.id} "{s.broadcast["title"]}" (room {s.room}); '
            f"anchor account: {anchor}\n"
            + (f"  viewer:     {self.viewer_page}\n" if self.viewer_page else "")
            + f"  HTTP-FLV:   {s.play['http_flv']}\n"
            f"  WS-FLV:     {s.play['ws_flv']}\n"
            f"  HLS:        {s.play['hls']}\n"
            f"  RTMP play:  {s.play['rtmp']}\n"
            f"  push URL:   {s.push_url}\n"
            f"  shop:       {len(s.products)} products, {skus} SKUs on the shelf; rotating card, "
            f"flash sales, a lottery every few minutes (comment "
            f'"{demo_shop.LOTTERY_KEYWORD}")\n'
            f"  audience:   {audience}\n"
            f"  API docs:   {docs}\n"
            f"  danmaku:    {self.http}/socket.io/  namespace /live, room {s.room}\n"
            f"  health:     {self.http}/healthz  {self.http}/metrics\n"
            f"  data:       {self.data_dir}  (logs on this terminal; delete the dir to reset)\n\n"
            f"  try: ffplay {s.play['http_flv']}\n"
        )

    async def wait(self) -> int:
        """Until the anchor (ffmpeg) exits on its own: 1 (a signal cancels this first). An
        audience that ends is logged; the show goes on without it."""
        assert self.anchor is not None
        anchor = asyncio.create_task(self.anchor.wait())
        pending: set[asyncio.Task[int]] = {anchor}
        if self.audience is not None:
            pending.add(asyncio.create_task(self.audience.wait()))
        try:
            while anchor in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if anchor not in done:
                    logger.error(
                        "the audience exited with %s; the demo goes on", done.pop().result()
                    )
        finally:
            for t in pending:
                t.cancel()
        logger.error("the synthetic anchor (ffmpeg) exited with %s", anchor.result())
        return 1

    async def stop(self) -> None:
        print("stopping...", flush=True)
        if self.show_task is not None:
            self.show_task.cancel()
            await asyncio.gather(self.show_task, return_exceptions=True)
        if self.audience is not None:
            if self.audience.stdin is not None:
                self.audience.stdin.close()
            await stop_process(self.audience, timeout=5, sig=signal.SIGTERM)
        if self.anchor is not None:
            # ffmpeg finishes its stream cleanly on SIGINT
            await stop_process(self.anchor, timeout=5, sig=signal.SIGINT)
        if self.api is not None and self.seeded is not None:
            with contextlib.suppress(*demo_shop.RECOVERABLE):
                await demo_shop.end_broadcast(self.api, self.seeded.id)
        if self.api is not None and self.api_token_id is not None:
            with contextlib.suppress(*demo_shop.RECOVERABLE):
                await self.api.call("DELETE", f"/api/tokens/{self.api_token_id}")
        if self.api is not None and self.session_token:
            self.api.token = self.session_token
            with contextlib.suppress(*demo_shop.RECOVERABLE):
                await self.api.call("POST", "/api/auth/logout")
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()
        print("stopped.", flush=True)


async def run(config: Config, args: argparse.Namespace, audience: bool) -> int:
    """Start the demo, run it until SIGINT/SIGTERM/SIGHUP, stop everything; the exit status."""
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if not stopping and main is not None:  # a second Ctrl-C must not cut the clean-up
            stopping = True
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    demo = Demo(config, args, audience)
    status = 0
    try:
        await demo.start()
        print(demo.banner(), flush=True)
        status = await demo.wait()
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        stopping = True  # from here on a signal changes nothing: the clean-up runs to its end
        await demo.stop()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="berrylive-demo", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--data-dir", default=None, help="data directory (default ./data)")
    parser.add_argument("--host", default=None, help="listen address (default 0.0.0.0)")
    parser.add_argument(
        "--rtmp-port",
        type=int,
        default=None,
        help="RTMP port (0: a free one; default 1935 if free)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="HTTP port (0: a free one; default 8080 if free)",
    )
    parser.add_argument(
        "--no-audience",
        action="store_true",
        help=f"no synthetic viewers, comments or buys (also {AUDIENCE_ENV}=0)",
    )
    parser.add_argument("--viewers", type=int, default=24, help="synthetic FLV viewers (24)")
    parser.add_argument("--video-size", default="1280x720", help="anchor video (1280x720)")
    parser.add_argument("--video-bitrate", default="2M", help="anchor video bitrate (2M)")
    args = parser.parse_args(argv)
    if args.config:  # the operator command runs from the same place; keep it absolute
        args.config = os.path.abspath(args.config)
    try:
        config = load_config(args.config, None, data_dir=args.data_dir, host=args.host)
    except ConfigError as exc:
        print(f"berrylive-demo: configuration error: {exc}", file=sys.stderr)
        return 2
    server = config.server
    host = server.host
    if args.rtmp_port is not None:
        server = replace(server, rtmp_port=args.rtmp_port)
    elif not _free(host, server.rtmp_port):
        server = replace(server, rtmp_port=0)
    if args.http_port is not None:
        server = replace(server, http_port=args.http_port)
    elif not _free(host, server.http_port):
        server = replace(server, http_port=0)
    config = replace(config, server=server)
    rtc = config.webrtc  # WHIP/WHEP's one UDP port (8189): a free one when that is taken
    if rtc.enabled and rtc.udp_port and not _free(rtc.host or host, rtc.udp_port, UDP):
        config = replace(config, webrtc=replace(rtc, udp_port=0))
    if not config.shop.provider_url:  # the demo's buyers pay through the simulator
        config = replace(config, shop=replace(config.shop, pay_simulator=True))
    # Anyone opening the demo's viewer page (/watch/...) gets a viewer token to chat and buy.
    config = replace(config, viewer=replace(config.viewer, anonymous_tokens=True))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _install_uvloop()
    try:
        return asyncio.run(run(config, args, audience_enabled(args.no_audience, os.environ)))
    except KeyboardInterrupt:  # a Ctrl-C before the loop's own handlers were in place
        return 0


if __name__ == "__main__":
    sys.exit(main())
