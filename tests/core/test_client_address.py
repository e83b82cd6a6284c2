"""The client-address resolver behind trusted proxies (core/client_address.py): which hop is
the client, what is ignored, and that no header value can make it raise."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from core.client_address import (
    MAX_HOPS,
    Resolved,
    TrustedProxies,
    forwarded_for,
    parse_node,
    resolve,
)
from tests.fuzz.budget import fuzz

XFF = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "2001:db8:ffff::/48"])
FWD = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"], "Forwarded")


def headers(*pairs: tuple[str, str]) -> CIMultiDict[str]:
    return CIMultiDict(pairs)


@pytest.mark.parametrize(
    ("node", "want"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" 192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ('"[2001:db8::1]:443"', "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("[2001:db8::1]:_port", "2001:db8::1"),
        ("unknown", None),
        ("_hidden", None),
        ("example.com", None),
        ("192.0.2.1:", None),
        ("192.0.2.1:99999", None),
        ("192.0.2.1:http", None),
        ("[192.0.2.1]", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("2001:db8::1:443x", None),
        ("", None),
        ('""', None),
        ("1" * 200, None),
    ],
)
def test_one_hop(node: str, want: str | None) -> None:
    got = parse_node(node)
    assert (None if got is None else str(got)) == want


@pytest.mark.parametrize(
    ("peer", "xff", "want"),
    [
        # the rightmost untrusted entry is the client; the leftmost is whatever the client sent
        ("127.0.0.1", "192.0.2.9", "192.0.2.9"),
        ("127.0.0.1", "6.6.6.6, 192.0.2.9", "192.0.2.9"),
        ("127.0.0.1", "6.6.6.6, 192.0.2.9, 10.1.2.3", "192.0.2.9"),
        ("127.0.0.1", "192.0.2.9:51234", "192.0.2.9"),
        ("127.0.0.1", "[2001:db8::9]:51234", "2001:db8::9"),
        ("::1", "192.0.2.9", None),  # ::1 is not trusted here
        ("::ffff:127.0.0.1", "192.0.2.9", "192.0.2.9"),  # an IPv4 peer on a dual-stack socket
        ("2001:db8:ffff::5", "2001:db8::9", "2001:db8::9"),
        # every hop trusted: the leftmost one is the client
        ("127.0.0.1", "10.0.0.7, 10.0.0.8", "10.0.0.7"),
        # an untrusted peer's header is never read
        ("192.0.2.50", "10.0.0.7", None),
        ("192.0.2.50", "203.0.113.1", None),
        # garbage where the walk must read it: the peer stays the client
        ("127.0.0.1", "not-an-address", None),
        ("127.0.0.1", "192.0.2.9, garbage", None),
        ("127.0.0.1", "192.0.2.9, unknown", None),
        ("127.0.0.1", "192.0.2.9,", None),
        ("127.0.0.1", "", None),
        ("127.0.0.1", "192.0.2.9, garbage, 10.0.0.1", None),
        # garbage left of the client is never read
        ("127.0.0.1", "garbage, 192.0.2.9", "192.0.2.9"),
        (None, "192.0.2.9", None),
        ("not an address", "192.0.2.9", None),
    ],
)
def test_x_forwarded_for(peer: str | None, xff: str, want: str | None) -> None:
    got = resolve(peer, headers(("X-Forwarded-For", xff)), XFF)
    assert (None if got is None else got.remote) == want


def test_several_header_lines_are_one_list_in_order() -> None:
    h = headers(("X-Forwarded-For", "6.6.6.6, 192.0.2.1"), ("X-Forwarded-For", "192.0.2.2"))
    assert resolve("127.0.0.1", h, XFF) == Resolved("192.0.2.2", None)


def test_nobody_trusted_reads_nothing() -> None:
    h = headers(("X-Forwarded-For", "192.0.2.9"), ("Forwarded", "for=192.0.2.9"))
    assert resolve("127.0.0.1", h, TrustedProxies([])) is None
    assert not TrustedProxies([])


def test_too_many_trusted_hops_are_ignored() -> None:
    hops = ", ".join(f"10.0.0.{i}" for i in range(MAX_HOPS + 1))
    assert resolve("127.0.0.1", headers(("X-Forwarded-For", "192.0.2.9, " + hops)), XFF) is None
    hops = ", ".join(f"10.0.0.{i}" for i in range(MAX_HOPS - 1))
    got = resolve("127.0.0.1", headers(("X-Forwarded-For", "192.0.2.9, " + hops)), XFF)
    assert got is not None and got.remote == "192.0.2.9"


def test_only_the_named_header_is_read() -> None:
    """nginx passes a client's own Forwarded header on; a Forwarded proxy passes XFF on."""
    h = headers(("X-Forwarded-For", "192.0.2.9"), ("Forwarded", "for=203.0.113.66"))
    assert resolve("127.0.0.1", h, XFF) == Resolved("192.0.2.9", None)
    assert resolve("127.0.0.1", h, FWD) == Resolved("203.0.113.66", None)
    assert resolve("127.0.0.1", headers(("Forwarded", "for=203.0.113.66")), XFF) is None
    assert resolve("127.0.0.1", headers(("X-Forwarded-For", "192.0.2.9")), FWD) is None


@pytest.mark.parametrize(
    ("fwd", "want"),
    [
        ("for=192.0.2.43", Resolved("192.0.2.43", None)),
        ('for="[2001:db8:cafe::17]:4711"', Resolved("2001:db8:cafe::17", None)),
        ("for=192.0.2.43;proto=https;by=10.0.0.1", Resolved("192.0.2.43", "https")),
        ("For=192.0.2.43 ; Proto=HTTPS", Resolved("192.0.2.43", "https")),
        ("for=6.6.6.6, for=192.0.2.43;proto=http", Resolved("192.0.2.43", "http")),
        ("for=192.0.2.43;proto=https, for=10.0.0.3;proto=http", Resolved("192.0.2.43", "https")),
        ("for=192.0.2.43;proto=gopher", Resolved("192.0.2.43", None)),
        ('for=192.0.2.43;host="a,b;c"', Resolved("192.0.2.43", None)),
        ("for=unknown", None),
        ("for=_hidden", None),
        ("proto=https", None),  # an element without for=
        ('for="192.0.2.43', None),  # unterminated quoted string
        ("for=192.0.2.43;for=192.0.2.44", None),  # a parameter twice
        ("for", None),
        ("for=192.0.2.43; junk", None),
        ("", None),
    ],
)
def test_forwarded(fwd: str, want: Resolved | None) -> None:
    assert resolve("127.0.0.1", headers(("Forwarded", fwd)), FWD) == want


def test_forwarded_elements() -> None:
    assert forwarded_for(
        ["for=192.0.2.43, for=198.51.100.17;by=203.0.113.60;proto=http;host=example.com"]
    ) == [("192.0.2.43", None), ("198.51.100.17", "http")]
    assert forwarded_for(['for="\\"quoted\\""']) == [('""quoted""', None)]


def test_x_forwarded_proto_of_the_trusted_peer() -> None:
    h = headers(("X-Forwarded-For", "192.0.2.9"), ("X-Forwarded-Proto", "https"))
    assert resolve("127.0.0.1", h, XFF) == Resolved("192.0.2.9", "https")
    h = headers(("X-Forwarded-For", "192.0.2.9"), ("X-Forwarded-Proto", "gopher, HTTPS"))
    assert resolve("127.0.0.1", h, XFF) == Resolved("192.0.2.9", "https")
    h = headers(("X-Forwarded-For", "192.0.2.9"), ("X-Forwarded-Proto", "https, ftp"))
    assert resolve("127.0.0.1", h, XFF) == Resolved("192.0.2.9", None)


@pytest.mark.parametrize(
    ("networks", "header"),
    [(["10.0.0.0/33"], "X-Forwarded-For"), (["proxy.local"], "X-Forwarded-For"), ([], "X-Real-IP")],
)
def test_bad_settings_are_refused(networks: list[str], header: str) -> None:
    with pytest.raises(ValueError, match="trusted_prox"):
        TrustedProxies(networks, header)


def test_the_setting_is_loaded_from_env_and_checked() -> None:
    from control.config import ConfigError, load_config

    env = {
        "BERRYLIVE_SERVER_TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8,::1",
        "BERRYLIVE_SERVER_TRUSTED_PROXY_HEADER": "Forwarded",
    }
    cfg = load_config(None, env=env, ensure_secret=False, data_dir="/tmp/unused-berrylive")
    assert cfg.server.trusted_proxies == ("127.0.0.1/32", "10.0.0.0/8", "::1")
    assert cfg.server.trusted_proxy_header == "Forwarded"
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(
            None, env={"BERRYLIVE_SERVER_TRUSTED_PROXIES": "10.0.0.0/8,nginx"}, ensure_secret=False
        )


# -- never raises, always an address or nothing -------------------------------------

_addresses = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.tuples(st.ip_addresses(), st.integers(0, 70000)).map(
        lambda p: f"[{p[0]}]:{p[1]}" if p[0].version == 6 else f"{p[0]}:{p[1]}"
    ),
    st.sampled_from(["unknown", "_hidden", "127.0.0.1", "10.1.1.1", '"', "[", "]", ":"]),
)
_pieces = st.one_of(
    _addresses,
    st.text(max_size=12),
    st.sampled_from([",", ";", "=", '"', "\\", " ", "for=", "proto=", 'for="[', "]:"]),
)
_values = st.lists(_pieces, max_size=24).map("".join)
_peers = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["127.0.0.1", "10.9.9.9"]))


def _check(got: Resolved | None) -> None:
    assert got is None or isinstance(got, Resolved)
    if got is not None:
        ipaddress.ip_address(got.remote.split("%")[0])  # a real address
        assert got.scheme in (None, "http", "https")


@fuzz(600)
@given(peer=_peers, lines=st.lists(_values, max_size=3), proto=st.lists(_values, max_size=2))
def test_garbage_never_raises(peer: str | None, lines: list[str], proto: list[str]) -> None:
    xff = CIMultiDict([("X-Forwarded-For", v) for v in lines])
    xff.extend(("X-Forwarded-Proto", p) for p in proto)
    _check(resolve(peer, xff, XFF))
    fwd = CIMultiDict([("Forwarded", v) for v in lines])
    _check(resolve(peer, fwd, FWD))
    for value in lines:
        got = parse_node(value)
        assert got is None or isinstance(got, ipaddress.IPv4Address | ipaddress.IPv6Address)


@fuzz(300)
@given(client=st.ip_addresses(), forged=st.lists(_values, max_size=4))
def test_a_forged_prefix_never_changes_the_client(client: object, forged: list[str]) -> None:
    """Whatever a client puts in front, the entry our proxy appended decides."""
    addr = ipaddress.ip_address(str(client))
    if XFF.trusts(addr):
        return
    node = f"[{addr}]:443" if addr.version == 6 else str(addr)
    h = headers(("X-Forwarded-For", ", ".join([*forged, node])))
    got = resolve("127.0.0.1", h, XFF)
    plain = getattr(addr, "ipv4_mapped", None) or addr
    assert got is not None and ipaddress.ip_address(got.remote) == plain
