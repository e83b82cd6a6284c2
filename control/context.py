"""What every control route module shares: the :class:`Control` services under
:data:`CONTROL`, accessors for a request, paging, and the role tuples of the route tables.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from control import validate
from control.accounts import Accounts, LoginLimiter
from control.broadcasts import BroadcastService
from control.metrics import Metrics
from control.series import LiveSeries
from control.settings import ControlSettings
from control.stats import LiveStats
from control.webhooks import WebhookService
from core.http import ApiError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
CONSOLE_DIR = Path(__file__).parent / "console"

OPS_ROLES = ("operator",)
STAFF = ("operator", "moderator", "anchor")
OPERATOR_ANCHOR = ("operator", "anchor")


@dataclass
class Control:
    """The control plane's services (filled at startup)."""

    settings: ControlSettings
    spec: dict[str, Any] = field(default_factory=dict)
    engine: AsyncEngine | None = None
    accounts: Accounts | None = None
    broadcasts: BroadcastService | None = None
    webhooks: WebhookService | None = None
    stats: LiveStats | None = None
    limiter: LoginLimiter | None = None
    metrics: Metrics | None = None
    series: LiveSeries | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def need(self) -> tuple[Accounts, BroadcastService, WebhookService, LiveStats]:
        if (
            self.accounts is None
            or self.broadcasts is None
            or self.webhooks is None
            or self.stats is None
        ):
            raise ApiError(503, "starting", "the control plane is starting")
        return self.accounts, self.broadcasts, self.webhooks, self.stats


CONTROL: web.AppKey[Control] = web.AppKey("berrylive.control", Control)


def control_of(request: web.Request) -> Control:
    return request.app[CONTROL]


def broadcasts_of(request: web.Request) -> BroadcastService:
    return control_of(request).need()[1]


def accounts_of(request: web.Request) -> Accounts:
    return control_of(request).need()[0]


def webhooks_of(request: web.Request) -> WebhookService:
    return control_of(request).need()[2]


# -- helpers of every resource ------------------------------------------------------------


def page(items: list[Any], total: int, limit: int, offset: int) -> dict[str, Any]:
    nxt = offset + len(items)
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": nxt if nxt < total else None,
    }


def paging(request: web.Request) -> tuple[int, int]:
    return (
        validate.query_int(request.query, "limit", 20, 1, 100),
        validate.query_int(request.query, "offset", 0, 0, 1_000_000),
    )


def client_ip(request: web.Request) -> str:
    return request.remote or "unknown"
