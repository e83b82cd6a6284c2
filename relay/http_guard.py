"""The HTTP port's bounds: deadlines for reading requests and connection caps.

:class:`HttpLimits` holds the values (from :class:`relay.config.RelayConfig`);
:class:`Admission` counts connections in total and per address (at the total cap it closes
the oldest connection that has not sent a complete request head to make room);
:func:`handler_kwargs` are the knobs aiohttp has for them (passed to ``web.AppRunner``).
The deadlines aiohttp has no public knob for (a whole request head, a request body) are
enforced by the connection's protocol in front of aiohttp (:class:`relay.fastplay.PlaySniffer`,
following :class:`relay.request_watch.RequestWatch`).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from relay.config import RelayConfig


@dataclass(frozen=True, slots=True)
class HttpLimits:
    head_timeout: float = RelayConfig.http_head_timeout
    body_timeout: float = RelayConfig.http_body_timeout
    body_min_rate: int = RelayConfig.http_body_min_rate
    keepalive_timeout: float = RelayConfig.http_keepalive_timeout
    max_connections: int = RelayConfig.http_max_connections
    max_connections_per_ip: int = RelayConfig.http_max_connections_per_ip

    @classmethod
    def of(cls, config: RelayConfig) -> HttpLimits:
        return cls(
            head_timeout=config.http_head_timeout,
            body_timeout=config.http_body_timeout,
            body_min_rate=config.http_body_min_rate,
            keepalive_timeout=config.http_keepalive_timeout,
            max_connections=config.http_max_connections,
            max_connections_per_ip=config.http_max_connections_per_ip,
        )


HTTP_LIMITS: web.AppKey[HttpLimits] = web.AppKey("relay.http_limits", HttpLimits)
"""The app's limits, read by :class:`relay.fastplay.PlaySite` when it is given none."""


def handler_kwargs(limits: HttpLimits) -> dict[str, Any]:
    """aiohttp's own (public) knobs for ``web.AppRunner(app, **handler_kwargs(limits))``."""
    return {"keepalive_timeout": limits.keepalive_timeout}


def address_key(ip: str) -> str:
    """The address a connection is counted under: the IPv4 address (also when it comes
    IPv4-mapped), or an IPv6 /64 (one subscriber's network; its addresses are free to pick)."""
    if ":" not in ip:
        return ip
    try:
        addr = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(ipaddress.IPv6Network((addr, 64), strict=False))


class Evictable(Protocol):
    """A connection :class:`Admission` may close to make room (see :meth:`Admission.admit`)."""

    def evict(self) -> None:
        """Close this connection at once; it is no longer counted (do not release it)."""


class Admission:
    """Connections open on the HTTP port, in total and per address, against their caps.

    A connection is *pending* from its accept until its first request head is complete
    (:meth:`established`). When the total cap is reached, a new connection is admitted by
    closing the oldest pending one (a slowloris or silent connection holds the cap; a real
    client completes its head at once) and refused only when none is pending: viewers,
    keep-alive clients and WebSockets are never closed to make room. O(1) per connection.
    """

    __slots__ = ("evicted", "max_per_ip", "max_total", "pending", "per_ip", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.pending: OrderedDict[Evictable, str] = OrderedDict()
        """Connections without a complete request head yet -> their address key, oldest
        first."""
        self.evicted = 0
        """Pending connections closed to admit a new one at the total cap."""

    def admit(self, key: str, conn: Evictable | None = None) -> str | None:
        """Count a new connection from ``key`` (pending, if ``conn`` is given); or the reason
        it is refused (not counted). At the total cap the oldest pending connection is
        closed (:meth:`Evictable.evict`) and uncounted to make room."""
        per_ip = self.per_ip
        n = per_ip.get(key, 0)
        if self.max_per_ip and n >= self.max_per_ip:
            return "too many connections from this address"
        if self.max_total and self.total >= self.max_total:
            if not self.pending:
                return "too many connections"
            victim, victim_key = self.pending.popitem(last=False)
            self._uncount(victim_key)
            self.evicted += 1
            victim.evict()
            n = per_ip.get(key, 0)
        per_ip[key] = n + 1
        self.total += 1
        if conn is not None:
            self.pending[conn] = key
        return None

    def established(self, conn: Evictable) -> None:
        """``conn`` completed its first request head: it is no longer closed to make room."""
        self.pending.pop(conn, None)

    def release(self, key: str, conn: Evictable | None = None) -> None:
        """Uncount a connection :meth:`admit` counted (and did not evict)."""
        if conn is not None:
            self.pending.pop(conn, None)
        self._uncount(key)

    def _uncount(self, key: str) -> None:
        self.total -= 1
        n = self.per_ip.get(key, 0) - 1
        if n > 0:
            self.per_ip[key] = n
        else:
            self.per_ip.pop(key, None)
