"""The ``berrylive`` command: ``serve`` and ``push-url`` (names are a contract; keep them)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import json
import logging
import resource
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web

from control import ops_cli
from control.app import create_app
from control.config import Config, ConfigError, load_config
from core.runtime import RUNTIME
from ingest import auth
from relay.fastplay import PlaySite
from relay.http_guard import HttpLimits, handler_kwargs

logger = logging.getLogger("berrylive")

GC_GEN0_THRESHOLD = 20_000
"""Allocations between young-generation collections (CPython's default is 700)."""
FD_RESERVE = 256
"""File descriptors beyond the connection caps: listeners, files, database, Redis, ffmpeg."""


def raise_fd_limit(config: Config) -> int:
    """Raise the soft file-descriptor limit to the hard one (every connection is one), log
    it, and warn when it is below what the configured connection caps need. Returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard
        if hard == resource.RLIM_INFINITY:
            target = max(soft, 1 << 20)  # "unlimited" is not accepted as a soft value
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the file-descriptor limit to %d: %s", target, exc)
    caps = (config.relay.http_max_connections, config.ingest.max_connections)
    if all(caps):
        need = sum(caps) + FD_RESERVE
        if soft < need:
            logger.warning(
                "file-descriptor limit %d is below what the connection caps need (%d: "
                "relay.http_max_connections %d + ingest.max_connections %d + %d): raise the "
                "hard limit (ulimit -Hn, LimitNOFILE=) or lower the caps",
                soft, need, caps[0], caps[1], FD_RESERVE,
            )  # fmt: skip
    logger.info("file-descriptor limit %d", soft)
    return soft


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the media path.

    Everything alive once the server is up (modules, the app, its routes) is moved out of
    the collector's reach (``gc.freeze``), and the young generation is collected less
    often: a join herd of thousands of viewers otherwise triggers full collections that
    walk every object and stall the event loop for tens of milliseconds each.
    """
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def start_http(
    config: Config, app: web.Application, shutdown_timeout: float = 5
) -> web.AppRunner:
    """Start ``app``'s HTTP listener (the HTTP-FLV fast path in front of aiohttp), record
    and log its port, then tune the GC now that the app is built. Stop with
    ``runner.cleanup()``. The port's deadlines and caps come from ``config.relay``."""
    limits = HttpLimits.of(config.relay)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        # SO_KEEPALIVE's 2-hour default finds nothing our own timeouts and pings do not,
        # and setting it costs a syscall and a Python socket object per connection.
        tcp_keepalive=False,
        **handler_kwargs(limits),  # idle keep-alive connections are closed (aiohttp's knob)
    )
    await runner.setup()
    try:
        site = PlaySite(
            runner,
            config.server.host,
            config.server.http_port,
            reuse_address=True,
            backlog=config.server.listen_backlog,
            limits=limits,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    host, port = site.address
    app[RUNTIME].http_port = port
    logger.info("http listening on %s:%d", host, port)
    tune_gc()
    return runner


async def serve(config: Config, ready: asyncio.Event | None = None) -> None:
    """Run the server until SIGINT/SIGTERM/SIGHUP (or cancellation)."""
    raise_fd_limit(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # before the ports open: a signal that arrives as they do is handled, not fatal.
    # SIGHUP too (the terminal closed): child processes run in their own sessions and
    # are stopped by this clean shutdown, never left behind
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    runner = await start_http(config, create_app(config))
    try:
        if ready is not None:
            ready.set()
        await stop.wait()
        logger.info("shutting down")
    finally:
        await runner.cleanup()


def dump_tasks() -> None:
    """SIGUSR1: log where every asyncio task of the server is waiting (a server that does
    not stop, or seems stuck: ``kill -USR1 PID``, then read the log)."""
    tasks = asyncio.all_tasks()
    logger.warning("SIGUSR1: %d asyncio tasks", len(tasks))
    for task in tasks:
        out = io.StringIO()
        task.print_stack(limit=12, file=out)
        logger.warning("task %s:\n%s", task.get_name(), out.getvalue().rstrip())


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--data-dir", help="data directory (default ./data)")
    p.add_argument("--host", help="listen address (default 0.0.0.0)")


def _load(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {
        "data_dir": getattr(args, "data_dir", None),
        "host": getattr(args, "host", None),
        "rtmp_port": getattr(args, "rtmp_port", None),
        "http_port": getattr(args, "http_port", None),
        "role": getattr(args, "role", None),
    }
    cfg = load_config(args.config, None, **overrides)
    origins = getattr(args, "origin", None)
    if origins:  # edge: origin HTTP base URLs (relay.origins)
        cfg = replace(cfg, relay=replace(cfg.relay, origins=tuple(origins.split(","))))
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="berrylive", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the media server and control plane")
    _add_server_args(p_serve)
    p_serve.add_argument("--rtmp-port", type=int, help="RTMP port (0 = pick a free one)")
    p_serve.add_argument("--http-port", type=int, help="HTTP port (0 = pick a free one)")
    p_serve.add_argument("--role", choices=("origin", "edge"), help="cluster role (origin)")
    p_serve.add_argument("--origin", help="edge: origin URL[,URL...] (http://host:port)")

    p_cluster = sub.add_parser("cluster", help="run one origin + N edges on this machine")
    _add_server_args(p_cluster)
    p_cluster.add_argument("--edges", type=int, default=2, help="edge processes (default 2)")
    p_cluster.add_argument("--rtmp-port", type=int, help="origin RTMP port; edge i: +i")
    p_cluster.add_argument("--http-port", type=int, help="origin HTTP port; edge i: +i")

    p_url = sub.add_parser("push-url", help="print a signed RTMP push URL (or WHIP URL + token)")
    _add_server_args(p_url)
    p_url.add_argument("stream")
    p_url.add_argument("--app", default="live")
    p_url.add_argument("--ttl", type=int, help="validity in seconds (default ingest.push_ttl)")
    p_url.add_argument(
        "--whip", action="store_true", help="print the WHIP URL, then its Bearer token"
    )
    p_url.add_argument("--json", action="store_true", help="print RTMP and WHIP as JSON")

    ops_cli.add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"berrylive: configuration error: {exc}", file=sys.stderr)
        return 2

    if hasattr(args, "ops"):
        return ops_cli.run(args, config)
    if args.command == "push-url":
        ttl = args.ttl if args.ttl is not None else config.ingest.push_ttl
        base = f"rtmp://{config.public_host()}:{config.server.rtmp_port}"
        expire = int(time.time()) + ttl
        url = auth.push_url(base, config.server.secret, args.app, args.stream, expire)
        if args.whip or args.json:
            from ingest.whip import whip_token, whip_url

            http = f"http://{config.public_host()}:{config.server.http_port}"
            whip = whip_url(http, args.app, args.stream)
            if args.json:
                body = {"url": url, "whip_url": whip, "whip_token": whip_token(url)}
                print(json.dumps(body | {"expires_at": expire}))
            else:
                print(whip)
                print(whip_token(url))
            return 0
        print(url)
        return 0

    if args.command == "cluster":
        from relay.launcher import run_cluster

        logging.basicConfig(level=logging.INFO, format="%(asctime)s cluster: %(message)s")
        return asyncio.run(
            run_cluster(
                edges=args.edges, data_dir=config.data_path, host=config.server.host,
                http_port=config.server.http_port, rtmp_port=config.server.rtmp_port,
                redis_url=config.redis.url, secret=config.server.secret,
                database_url=config.database_url, config_file=args.config,
                webrtc_udp_port=config.webrtc.udp_port,
            )
        )  # fmt: skip

    logging.basicConfig(
        level=getattr(logging, config.server.log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _install_uvloop()
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
