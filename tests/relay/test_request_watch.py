"""RequestWatch (request framing for the HTTP port's deadlines) and the connection caps'
counting: fed whole, byte by byte, split anywhere; garbage never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from relay.http_guard import Admission, address_key
from relay.request_watch import MAX_REQUEST_HEAD, Phase, RequestWatch

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
SIZED = b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (
    b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: y\r\n\r\n"
)
UPGRADE = (
    b"GET /live/a.flv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
)


def _state(data: bytes, cuts: list[int]) -> tuple[Phase, int, int, int, int]:
    w = RequestWatch()
    last = 0
    for cut in [*sorted(cuts), len(data)]:
        w.feed(data[last:cut])
        last = cut
    return w.phase, w.heads_begun, w.heads_done, w.bodies_begun, w.body_received


def test_each_framing_whole_and_byte_by_byte() -> None:
    cases = {
        GET: (Phase.IDLE, 1, 1, 0),
        SIZED: (Phase.IDLE, 1, 1, 1),
        CHUNKED: (Phase.IDLE, 1, 1, 1),
        UPGRADE + b"\x81\x05hello": (Phase.DONE, 1, 1, 0),
        GET + SIZED + CHUNKED + GET: (Phase.IDLE, 4, 4, 2),
        SIZED + b"GE": (Phase.HEAD, 2, 1, 1),
        SIZED[:-2]: (Phase.BODY, 1, 1, 1),
        CHUNKED[:-2]: (Phase.BODY, 1, 1, 1),
    }
    for data, want in cases.items():
        assert _state(data, [])[:4] == want, data
        assert _state(data, list(range(1, len(data))))[:4] == want, data


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(GET + SIZED + CHUNKED)), max_size=8))
def test_split_anywhere_gives_the_same_state(cuts: list[int]) -> None:
    data = GET + SIZED + CHUNKED + UPGRADE
    assert _state(data, cuts) == _state(data, [])


def test_an_upgrade_with_a_body_is_timed_until_its_end() -> None:
    w = RequestWatch()
    w.feed(b"POST /x HTTP/1.1\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\nab")
    assert w.phase is Phase.BODY
    w.feed(b"c" + GET)  # after the body: another protocol's bytes
    assert w.phase is Phase.DONE and w.heads_done == 1


def test_a_head_over_the_cap_is_too_large_and_framing_it_cannot_follow_stops_it() -> None:
    w = RequestWatch()
    w.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_REQUEST_HEAD)
    assert w.phase is Phase.TOO_LARGE
    for head in (
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ):
        w = RequestWatch()
        w.feed(head)
        assert w.phase is Phase.DONE, head


@settings(max_examples=300)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_garbage_never_raises(data: bytes, cuts: list[int]) -> None:
    _state(data, [c for c in cuts if c <= len(data)])
    _state(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + data, [])


def test_admission_counts_in_total_and_per_address() -> None:
    adm = Admission(max_total=3, max_per_ip=2)
    assert adm.admit("a") is None and adm.admit("a") is None
    assert adm.admit("a") == "too many connections from this address"
    assert adm.admit("b") is None
    assert adm.admit("c") == "too many connections"
    adm.release("a")
    assert adm.admit("c") is None
    for key in ("a", "b", "c"):
        adm.release(key)
    assert adm.total == 0 and adm.per_ip == {}
    unlimited = Admission(0, 0)
    assert all(unlimited.admit("x") is None for _ in range(5000))


def test_addresses_are_counted_per_ipv4_and_per_ipv6_64() -> None:
    assert address_key("10.0.0.1") == "10.0.0.1"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"
