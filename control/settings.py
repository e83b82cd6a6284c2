"""Settings of the control plane (broadcast lifecycle, push URLs, logins, webhooks).

A frozen dataclass like every other section. Until ``control.config`` composes it as the
``[control]`` section, it is read from ``BERRYLIVE_CONTROL_<FIELD>`` environment variables
only (see :func:`load_settings`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.config import load_section


@dataclass(frozen=True)
class ControlSettings:
    stream_app: str = "live"
    """RTMP application every broadcast publishes to (stream name ``b<id>``)."""
    interrupt_grace: float = 120.0
    """Seconds a broadcast stays ``interrupted`` after its publisher dropped before it ends."""
    push_lead: int = 1800
    """A push URL opens this many seconds before the scheduled start."""
    push_grace: int = 3600
    """...and stays valid until this many seconds after the scheduled end."""
    default_duration: int = 4 * 3600
    """Assumed length of a broadcast without a scheduled end (seconds)."""
    session_ttl: int = 12 * 3600
    """Lifetime of a console login token (seconds)."""
    login_max_failures: int = 5
    """Login attempts on one account from one address within ``login_window`` before that
    address is refused for the account (from every address at once: slowed, never refused)."""
    login_max_failures_ip: int = 30
    """Login attempts from one client address (any account) within ``login_window``."""
    login_window: int = 300
    cover_max_bytes: int = 5 * 1024 * 1024
    webhook_timeout: float = 5.0
    webhook_max_attempts: int = 8
    webhook_backoff: float = 2.0
    """First retry delay (seconds); doubled each attempt, capped at one hour."""
    webhook_max_queue: int = 10000
    """Bound on pending deliveries; beyond it new deliveries are recorded as dropped."""
    sweep_interval: float = 1.0
    """How often the lifecycle sweeper looks for expired grace periods (seconds)."""
    series_step: float = 60.0
    """Seconds per point of a live room's series (the console's minute-by-minute charts,
    ``GET /api/broadcasts/{id}/series``); 1 in tests."""
    series_sample: float = 5.0
    """Seconds between two samples of every live broadcast (a point's ``viewers`` is the
    peak of its samples); at most ``series_step``."""
    series_max_points: int = 1440
    """Points a broadcast keeps in Redis while live (a day of 60 s points); the database
    has them all (written every ``series_flush`` and at the end)."""
    series_flush: float = 60.0
    """Seconds between writes of a live broadcast's points to the database."""
    metrics_token: str = ""
    """Bearer token that reads ``/metrics`` from any address (Prometheus: ``authorization``
    in the scrape config); empty: no token."""
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Client networks that read ``/metrics`` without the token (the client's address: the
    direct peer, or the client a proxy in ``server.trusted_proxies`` reports; behind an
    untrusted reverse proxy on this host, set it empty and use the token)."""


def load_settings(config: Any, env: Mapping[str, str] | None = None) -> ControlSettings:
    """``config.control`` when the composed config has it, else env ``BERRYLIVE_CONTROL_*``."""
    section = getattr(config, "control", None)
    if isinstance(section, ControlSettings):
        return section
    return load_section(ControlSettings, "control", {}, os.environ if env is None else env)
