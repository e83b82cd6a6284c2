"""The one configuration object: a frozen dataclass per package, composed here.

Sources, later wins: defaults < TOML file (``--config``) < ``BERRYLIVE_<SECTION>_<FIELD>``
env vars < command-line flags. Aliases: ``BERRYLIVE_SECRET`` (server.secret), ``REDIS_URL``
(redis.url), ``DATABASE_URL`` (database.url). See ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from control.settings import ControlSettings
from core.client_address import TrustedProxies
from core.config import ConfigError, load_section
from core.rtc.config import WebRtcConfig
from danmaku.config import DanmakuConfig
from ingest.config import IngestConfig
from relay.config import RelayConfig
from replay.config import ReplayConfig
from shop_bridge.config import ShopConfig
from viewer.config import ViewerConfig

__all__ = ["Config", "ConfigError", "DatabaseConfig", "RedisConfig", "ServerConfig", "load_config"]


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    """Address the RTMP and HTTP listeners bind to."""
    rtmp_port: int = 1935
    """RTMP listen port (0 picks a free one; the chosen port is logged)."""
    http_port: int = 8080
    """HTTP listen port: HTTP-FLV, WS-FLV, HLS, REST API, Socket.IO, console, metrics."""
    listen_backlog: int = 4096
    """Accept queue of the HTTP and RTMP listeners. Small queues overflow when many viewers
    connect at once, and each overflow costs the client a 1 s SYN retransmit. Linux caps it
    at ``net.core.somaxconn`` (4096 by default since 5.4)."""
    public_host: str = ""
    """Host name put into printed URLs; defaults to the bound host (or 127.0.0.1)."""
    data_dir: str = "./data"
    """Where the embedded valkey-server, SQLite file, recordings and the secret live."""
    secret: str = ""
    """Signing secret for push URLs and tokens. Empty: read/create ``<data_dir>/secret``."""
    role: str = "origin"
    """``origin`` (accepts publishers) or ``edge`` (pulls from origins)."""
    node_id: str = ""
    """Name of this node in the cluster; empty picks a random one."""
    log_level: str = "INFO"
    trusted_proxies: tuple[str, ...] = ()
    """Networks (CIDRs or addresses) of the reverse proxies in front of the HTTP port, e.g.
    ``127.0.0.1/32,10.0.0.0/8``. A request whose direct peer is in one of them is taken to
    come from the client its proxy reports (``trusted_proxy_header``, read from the right,
    skipping trusted hops; a value that does not parse is ignored): per-address limits, logs,
    ``control.metrics_allow`` and viewer counts see that address. Empty: trust nobody, the
    direct peer is the client. Never list networks clients connect from: they could claim
    any address. See ``docs/deploy.md``."""
    trusted_proxy_header: str = "X-Forwarded-For"
    """The header the trusted proxies write the client into: ``X-Forwarded-For`` (nginx,
    Caddy, HAProxy ``forwardfor``, cloud load balancers) or ``Forwarded`` (RFC 7239). Only
    that one is read: a proxy passes the other one from the client untouched."""


@dataclass(frozen=True)
class RedisConfig:
    url: str = ""
    """``redis://`` / ``unix://`` URL of Redis or Valkey. Empty: start the bundled valkey-server."""
    embedded_port: int = 0
    """TCP port for the embedded server (0 = unix socket only)."""


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""
    """SQLAlchemy async URL. Empty: SQLite file ``<data_dir>/berrylive.db``."""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    danmaku: DanmakuConfig = field(default_factory=DanmakuConfig)
    shop: ShopConfig = field(default_factory=ShopConfig)
    viewer: ViewerConfig = field(default_factory=ViewerConfig)
    control: ControlSettings = field(default_factory=ControlSettings)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.data_path.resolve() / 'berrylive.db'}"

    def public_host(self) -> str:
        if self.server.public_host:
            return self.server.public_host
        if self.server.host in ("0.0.0.0", "::", ""):
            return "127.0.0.1"
        return self.server.host


def _ensure_secret(cfg: Config) -> Config:
    if cfg.server.secret:
        return cfg
    path = cfg.data_path / "secret"
    if path.exists():
        value = path.read_text().strip()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
    return replace(cfg, server=replace(cfg.server, secret=value))


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    ensure_secret: bool = True,
    **server_overrides: Any,
) -> Config:
    """Load the configuration from an optional TOML file, the environment and overrides."""
    env = dict(os.environ if env is None else env)
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    known = {
        "server",
        "redis",
        "database",
        "ingest",
        "relay",
        "replay",
        "danmaku",
        "shop",
        "viewer",
        "control",
        "webrtc",
    }
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    aliases = {
        "BERRYLIVE_SECRET": "BERRYLIVE_SERVER_SECRET",
        "REDIS_URL": "BERRYLIVE_REDIS_URL",
        "DATABASE_URL": "BERRYLIVE_DATABASE_URL",
    }
    for alias, canonical in aliases.items():
        if alias in env and canonical not in env:
            env[canonical] = env[alias]
    cfg = Config(
        server=load_section(ServerConfig, "server", data, env, **server_overrides),
        redis=load_section(RedisConfig, "redis", data, env),
        database=load_section(DatabaseConfig, "database", data, env),
        ingest=load_section(IngestConfig, "ingest", data, env),
        relay=load_section(RelayConfig, "relay", data, env),
        replay=load_section(ReplayConfig, "replay", data, env),
        danmaku=load_section(DanmakuConfig, "danmaku", data, env),
        shop=load_section(ShopConfig, "shop", data, env),
        viewer=load_section(ViewerConfig, "viewer", data, env),
        control=load_section(ControlSettings, "control", data, env),
        webrtc=load_section(WebRtcConfig, "webrtc", data, env),
    )
    if cfg.server.role not in ("origin", "edge"):
        raise ConfigError(f"server.role must be 'origin' or 'edge', not {cfg.server.role!r}")
    try:
        TrustedProxies(cfg.server.trusted_proxies, cfg.server.trusted_proxy_header)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    # Absolute once, here: child processes (valkey-server, ffmpeg) must not depend on a cwd.
    data_dir = os.path.abspath(os.path.expanduser(cfg.server.data_dir))
    cfg = replace(cfg, server=replace(cfg.server, data_dir=data_dir))
    return _ensure_secret(cfg) if ensure_secret else cfg
