"""Engine.IO / Socket.IO packets of the owned websocket path (danmaku/wire.py), and the
path's answers to what it does not serve."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.danmaku import eio
from danmaku.wire import (
    ACK,
    BINARY_EVENT,
    CONNECT,
    DISCONNECT,
    EVENT,
    MAX_ATTACHMENTS,
    Outbound,
    WireError,
    ack_text,
    connect_error_text,
    connect_text,
    disconnect_text,
    event_packet,
    open_text,
    parse_sio,
    with_attachments,
    ws_text_frame,
)
from tests.danmaku.helpers import token


def test_client_packets_parse() -> None:
    p = parse_sio('0/live,{"room":"live/a","token":"t"}')
    assert (p.type, p.namespace, p.ack_id) == (CONNECT, "/live", None)
    assert p.data == {"room": "live/a", "token": "t"}
    assert parse_sio("0/live,").data is None
    assert parse_sio("0/live").namespace == "/live"
    p = parse_sio('2/live,17["comment",{"text":"hi"}]')
    assert (p.type, p.ack_id, p.data) == (EVENT, 17, ["comment", {"text": "hi"}])
    p = parse_sio('2["x"]')  # the default namespace is written as nothing
    assert (p.namespace, p.data) == ("/", ["x"])
    assert parse_sio("1/live,").type == DISCONNECT
    assert parse_sio("3/live,4[1]").type == ACK
    p = parse_sio(
        '52-/live,9["comment",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    )
    assert (p.type, p.attachments, p.ack_id) == (BINARY_EVENT, 2, 9)
    assert with_attachments(p.data, [b"a", b"b"]) == ["comment", b"a", b"b"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9",
        "x",
        "2/live,",
        "2/live,{",
        "2/live,{}",
        "2/live,[]",
        '2/live,["comment"',
        '5/live,["x"]',
        "5-/live,[]",
        f'5{MAX_ATTACHMENTS + 1}-/live,["x"]',
        '50-/live,["x"]',
    ],
)
def test_bad_packets_are_wire_errors(text: str) -> None:
    with pytest.raises(WireError):
        parse_sio(text)


def test_bad_placeholders_are_wire_errors() -> None:
    with pytest.raises(WireError):
        with_attachments(["x", {"_placeholder": True, "num": 1}], [b"only one"])
    with pytest.raises(WireError):
        with_attachments(["x", {"_placeholder": True, "num": "0"}], [b"a"])
    deep: list = []
    for _ in range(40):
        deep = [deep]
    with pytest.raises(WireError):
        with_attachments(deep, [])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=64) | st.binary(max_size=64).map(lambda b: b.decode("latin-1")))
def test_garbage_never_crashes_the_parser(text: str) -> None:
    try:
        p = parse_sio(text)
    except WireError:
        return
    assert 0 <= p.type <= 6


def test_server_packets() -> None:
    out = event_packet("/live", "comments", {"n": 1, "t": "é"})
    assert out.text == '2/live,["comments",{"n":1,"t":"\\u00e9"}]'
    assert out.frame == ws_text_frame(b"4" + out.text.encode())
    assert isinstance(out, Outbound)
    opened = json.loads(open_text("abc", 25, 20, 16384)[1:])
    assert opened == {
        "sid": "abc",
        "upgrades": [],
        "pingTimeout": 20000,
        "pingInterval": 25000,
        "maxPayload": 16384,
    }
    assert connect_text("/live", "s1") == '0/live,{"sid":"s1"}'
    assert connect_error_text("/live", "no", {"code": "x"}) == (
        '4/live,{"message":"no","data":{"code":"x"}}'
    )
    assert connect_error_text("/x", "Unable to connect") == '4/x,{"message":"Unable to connect"}'
    assert disconnect_text("/live") == "1/live,"
    assert ack_text("/live", 7, [{"ok": True}]) == '3/live,7[{"ok":true}]'


async def test_other_namespaces_are_refused_on_the_websocket_path(server) -> None:
    port = server.runtime.http_port
    with pytest.raises(ConnectionRefusedError) as refused:
        await eio.connect("127.0.0.1", port, {"token": token("x")}, namespace="/other")
    assert refused.value.args[0] == {"message": "Unable to connect"}
    # a refused join on /live tells why, and the same connection is not in any room
    with pytest.raises(ConnectionRefusedError) as refused:
        await eio.connect("127.0.0.1", port, {"room": "bad room"})
    assert refused.value.args[0]["data"]["code"] == "bad_room"


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.booleans())
def test_event_data_decodes_as_json_loads_does(value, ascii_only: bool) -> None:
    """The orjson fast path of parse_sio gives json.loads's value, also where orjson
    refuses (big integers, lone surrogates) and json is used instead."""
    text = json.dumps(["comment", value], ensure_ascii=ascii_only)
    assert parse_sio("2/live," + text).data == json.loads(text)


def test_event_data_json_only_forms() -> None:
    assert parse_sio('2/live,["comment","\\ud800x"]').data == ["comment", "\ud800x"]
    nan = parse_sio('2/live,["like",NaN]').data[1]
    assert nan != nan
    with pytest.raises(WireError):
        parse_sio('2/live,["comment",]')
