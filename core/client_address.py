"""The client's address behind trusted reverse proxies (``server.trusted_proxies``).

Behind nginx, Caddy or a cloud load balancer every request comes from the proxy; the
client's address is in a header the proxy adds: ``X-Forwarded-For`` (the common one) or
``Forwarded: for=`` (RFC 7239). Both are lists, one entry per hop, each proxy appending
the address it received the request from. Only entries written by a proxy we trust can be
believed, so the list is read **from the right**: starting at the direct peer (which must
be trusted, or no header is read at all), every trusted address is a hop to skip, and the
first untrusted one is the client. The leftmost entry is never taken for granted: a client
can send any ``X-Forwarded-For`` it likes, and a proxy appends to it.

Only one header is read, the one the operator names (``server.trusted_proxy_header``):
nginx's ``proxy_add_x_forwarded_for`` passes a client's own ``Forwarded`` header through
untouched (and a proxy that writes ``Forwarded`` passes a client's ``X-Forwarded-For``), so
reading "whichever is present" would let a client forge its address.

A value that cannot be read (garbage, ``unknown``, an obfuscated ``_name``, too many hops)
is ignored as a whole: the direct peer stays the client. Works on addresses only
(:func:`resolve`, no I/O); :func:`client_address_middleware` applies it to aiohttp, handing
the handler ``request.clone(remote=client)`` so every ``request.remote`` is the client.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import MultiMapping

__all__ = [
    "HEADERS",
    "MAX_HOPS",
    "TRUSTED_PROXIES",
    "Resolved",
    "TrustedProxies",
    "client_address_middleware",
    "forwarded_for",
    "parse_node",
    "remote_label",
    "resolve",
    "x_forwarded_for",
]

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HEADERS = ("x-forwarded-for", "forwarded")
"""The values ``server.trusted_proxy_header`` accepts (case-insensitive)."""
MAX_HOPS = 32
"""Most trusted hops walked through; a longer chain is ignored (the peer stays the client)."""
MAX_NODE_LENGTH = 64
"""Longest single entry read (a bracketed IPv6 address with a zone and a port fits)."""


def _unmapped(addr: IPAddress) -> IPAddress:
    """``::ffff:10.0.0.1`` (an IPv4 peer on a dual-stack socket) as ``10.0.0.1``."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _address(text: str) -> IPAddress | None:
    try:
        return _unmapped(ipaddress.ip_address(text))
    except ValueError:
        return None


def parse_node(value: str) -> IPAddress | None:
    """One hop's address: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]``,
    ``[2001:db8::1]:80`` (optionally in double quotes, as ``Forwarded`` writes them).

    None for anything else: ``unknown``, obfuscated identifiers (``_hidden``), host names,
    garbage, a port that is not a number.
    """
    text = value.strip()
    if len(text) > MAX_NODE_LENGTH:
        return None
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].strip()
    if not text:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if rest and not _is_port(rest):
            return None
        inside = text[1:end]
        return _address(inside) if ":" in inside else None  # brackets hold IPv6 only
    if text.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has two or more)
        host, _, port = text.partition(":")
        if not _is_port(":" + port):
            return None
        addr = _address(host)
        return addr if isinstance(addr, ipaddress.IPv4Address) else None
    return _address(text)


def _is_port(text: str) -> bool:
    """``:80`` (RFC 7239 also allows an obfuscated ``:_port``; we accept it and ignore it)."""
    if len(text) < 2 or text[0] != ":":
        return False
    port = text[1:]
    if port.isascii() and port.isdigit():
        return len(port) <= 5 and int(port) <= 65535
    return port[0] == "_" and all(c.isascii() and (c.isalnum() or c in "._-") for c in port)


def x_forwarded_for(values: Iterable[str]) -> list[str]:
    """The entries of ``X-Forwarded-For`` header lines, left to right (raw, unparsed)."""
    return [item.strip() for value in values for item in value.split(",")]


def forwarded_for(values: Iterable[str]) -> list[tuple[str | None, str | None]] | None:
    """``(for, proto)`` per element of ``Forwarded`` header lines (RFC 7239), left to right.

    A missing parameter is None. None for a header that does not parse (an unterminated
    quoted string, a pair without ``=``, a parameter given twice in one element).
    """
    elements: list[tuple[str | None, str | None]] = []
    for value in values:
        parsed = _forwarded_line(value)
        if parsed is None:
            return None
        elements.extend(parsed)
    return elements


def _forwarded_line(value: str) -> list[tuple[str | None, str | None]] | None:
    elements: list[tuple[str | None, str | None]] = []
    params: dict[str, str] = {}
    i, n = 0, len(value)
    while True:
        while i < n and value[i] in " \t":
            i += 1
        eq = value.find("=", i)
        if eq < 0:
            if value[i:].strip() or params:  # a trailing pair with no '='
                return None
            break
        name = value[i:eq].strip().lower()
        if not name or any(c in name for c in ',;"'):
            return None
        i = eq + 1
        if i < n and value[i] == '"':
            j, chars = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                chars.append(value[j])
                j += 1
            if j >= n:
                return None  # unterminated quoted string
            param = '"' + "".join(chars) + '"'
            i = j + 1
        else:
            j = i
            while j < n and value[j] not in ",;":
                j += 1
            param = value[i:j].strip()
            i = j
        if name in params:
            return None
        params[name] = param
        while i < n and value[i] in " \t":
            i += 1
        if i >= n or value[i] == ",":
            elements.append((params.get("for"), params.get("proto")))
            params = {}
            if i >= n:
                break
            i += 1
        elif value[i] == ";":
            i += 1
        else:
            return None
    return elements


@dataclass(frozen=True, slots=True)
class Resolved:
    """Who the client is, when a trusted proxy told us."""

    remote: str
    """The client's address, as text (``ipaddress`` form, no port, no brackets)."""
    scheme: str | None
    """``http`` / ``https`` as the trusted peer reported it (``X-Forwarded-Proto`` or the
    client's ``Forwarded`` element's ``proto``); None when not reported or not one of those."""


class TrustedProxies:
    """The networks whose ``X-Forwarded-For`` / ``Forwarded`` entries are believed."""

    def __init__(self, networks: Iterable[str], header: str = "x-forwarded-for") -> None:
        nets: list[IPNetwork] = []
        for net in networks:
            try:
                nets.append(ipaddress.ip_network(str(net).strip(), strict=False))
            except ValueError:
                raise ValueError(f"server.trusted_proxies: {net!r} is not a network") from None
        self.networks: tuple[IPNetwork, ...] = tuple(nets)
        name = header.strip().lower()
        if name not in HEADERS:
            raise ValueError(
                f"server.trusted_proxy_header must be X-Forwarded-For or Forwarded, not {header!r}"
            )
        self.header = name

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, addr: IPAddress) -> bool:
        addr = _unmapped(addr)
        return any(addr in net for net in self.networks)


def resolve(
    peer: str | None, headers: MultiMapping[str], trusted: TrustedProxies
) -> Resolved | None:
    """The client behind ``peer``, or None when ``peer`` is the client (untrusted, no usable
    header, or a header that does not parse). ``headers``: a request's headers."""
    if peer is None or not trusted:
        return None
    peer_addr = _address(peer.split("%", 1)[0])
    if peer_addr is None or not trusted.trusts(peer_addr):
        return None
    if trusted.header == "forwarded":
        elements = forwarded_for(headers.getall("Forwarded", ()))
        if not elements:
            return None
        nodes = [node or "" for node, _ in elements]
        protos = [proto for _, proto in elements]
    else:
        nodes = x_forwarded_for(headers.getall("X-Forwarded-For", ()))
        if not nodes or nodes == [""]:
            return None
        proto = _last(headers.getall("X-Forwarded-Proto", ()))
        protos = [proto] * len(nodes)
    found = _walk(nodes, trusted)
    if found is None:
        return None
    index, addr = found
    return Resolved(str(addr), _scheme(protos[index]))


def _walk(nodes: Sequence[str], trusted: TrustedProxies) -> tuple[int, IPAddress] | None:
    """From the right: the first untrusted entry (or the leftmost, when all are trusted)."""
    addr: IPAddress | None = None
    for hops, index in enumerate(range(len(nodes) - 1, -1, -1)):
        if hops >= MAX_HOPS:
            return None
        addr = parse_node(nodes[index])
        if addr is None:
            return None
        if not trusted.trusts(addr):
            return index, addr
    return (0, addr) if addr is not None else None


def _last(values: Sequence[str]) -> str | None:
    if not values:
        return None
    return values[-1].rsplit(",", 1)[-1].strip() or None


def _scheme(value: str | None) -> str | None:
    if value is None:
        return None
    scheme = value.strip().strip('"').strip().lower()
    return scheme if scheme in ("http", "https") else None


def client_address_middleware(trusted: TrustedProxies) -> Middleware:
    """The middleware that hands handlers ``request.clone(remote=client)`` (and the
    reported ``scheme``) when the direct peer is a trusted proxy; other requests pass
    unchanged. Install it before anything that reads ``request.remote``."""

    @web.middleware
    async def client_address(request: web.Request, handler: Handler) -> web.StreamResponse:
        found = resolve(request.remote, request.headers, trusted)
        if found is None:
            return await handler(request)
        if found.scheme is None:
            return await handler(request.clone(remote=found.remote))
        return await handler(request.clone(remote=found.remote, scheme=found.scheme))

    return client_address


TRUSTED_PROXIES: web.AppKey[TrustedProxies] = web.AppKey(
    "berrylive.trusted_proxies", TrustedProxies
)
"""The app's trusted proxies, for code in front of aiohttp (``relay.fastplay``) that must
leave a proxied request to the middleware."""


def remote_label(request: web.Request) -> str:
    """How viewer lists and hooks name the client: ``ip:port`` of the direct peer, or the
    address a trusted proxy reported (no port: the proxy's connection is not the client's)."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    remote = request.remote or ""
    if isinstance(peer, tuple) and str(peer[0]) == remote:
        return f"{peer[0]}:{peer[1]}"
    return remote
