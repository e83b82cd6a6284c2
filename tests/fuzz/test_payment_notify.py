"""Fuzzing the payment notification (POST /api/shop/payments/notify), which anyone can
reach: the signature check on any header text, and the route of a real ``berrylive
serve`` (a process of its own, so hypothesis can drive it from this thread) with random,
forged, signed-but-malformed and signed-then-mutated notifications: every answer is one
of the documented ones (200, 400, 401, 404, 413), never a server error, and nothing but a
correct signature passes."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shop_bridge import payments
from tests.fuzz.budget import fuzz

# header text as aiohttp hands it over: str, where undecodable bytes are surrogates
header_text = st.text(max_size=60) | st.binary(max_size=40).map(
    lambda b: b.decode("utf-8", "surrogateescape")
)


@fuzz(500)
@given(st.binary(max_size=32), header_text, header_text, st.binary(max_size=200), header_text)
def test_verify_answers_false_for_any_header_text(
    key: bytes, ts: str, nonce: str, body: bytes, sig: str
) -> None:
    assert payments.verify(key, ts, nonce, body, sig) in (True, False)


@fuzz(200)
@given(st.binary(min_size=1, max_size=32), st.text(max_size=20), st.binary(max_size=300))
def test_only_the_right_signature_passes(key: bytes, nonce: str, body: bytes) -> None:
    ts = "1700000000"
    good = payments.sign(key, ts, nonce, body)
    assert payments.verify(key, ts, nonce, body, good)
    assert not payments.verify(key, ts, nonce, body + b"x", good)
    assert not payments.verify(key + b"x", ts, nonce, body, good)
    assert not payments.verify(
        key, ts, nonce, body, good[:-2] + ("A=" if good[-2] != "A" else "B=")
    )


# -- the route of a running server ----------------------------------------------------------


class Served:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.log = root / "serve.log"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BERRYLIVE_") and k not in ("REDIS_URL", "DATABASE_URL")
        }
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH", "")]))
        env["BERRYLIVE_WEBRTC_UDP_PORT"] = "0"
        env["BERRYLIVE_SHOP_BUY_LIMIT_IP"] = "0"
        script = Path(sys.executable).parent / "berrylive"
        cmd = [str(script)] if script.exists() else [sys.executable, "-m", "control.cli"]
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [*cmd, "serve", "--data-dir", str(self.data), "--host", "127.0.0.1",
                 "--http-port", "0", "--rtmp-port", "0"],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=fh,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while not (m := re.search(rb"http listening on [^:]+:(\d+)", self.log.read_bytes())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.05)
        self.port = int(m.group(1))
        secret = (self.data / "secret").read_text().strip()
        self.key = payments.derive_key("", secret)

    def post(self, headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        """One raw HTTP/1.1 POST (header bytes as given); the status code."""
        head = b"POST /api/shop/payments/notify HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        head += b"Content-Length: %d\r\n\r\n" % len(body)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(head + body)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b" ", 2)[1])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("notify"))
    try:
        yield s
    finally:
        s.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=15,
)
resources = st.fixed_dictionaries(
    {},
    optional={
        "out_trade_no": st.text(max_size=40) | json_values,
        "transaction_id": st.text(max_size=40) | json_values,
        "trade_state": st.sampled_from(["SUCCESS", "NOTPAY", "CLOSED", ""]) | json_values,
        "amount": st.fixed_dictionaries({}, optional={"total": st.integers() | json_values})
        | json_values,
    },
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries({"resource": resources}, optional={"id": json_values}).map(
        lambda v: json.dumps(v).encode()
    )
)
raw_header_values = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
ALLOWED = {200, 400, 401, 404, 413}


def test_the_notify_route_answers_only_documented_statuses(served: Served) -> None:
    seen: Counter[int] = Counter()
    names = [payments.TS_HEADER, payments.NONCE_HEADER, payments.SIG_HEADER]

    @fuzz(300)
    @given(bodies, st.data())
    def case(body: bytes, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["random", "signed", "mutated", "lower-case"]))
        headers: list[tuple[bytes, bytes]] = []
        if kind == "random":  # forged: any bytes in the three headers, some missing
            for name in names:
                if data.draw(st.booleans()):
                    headers.append((name.encode(), data.draw(raw_header_values)))
        else:
            signed = payments.signed_headers(served.key, body)
            if kind == "mutated":  # one of ts, nonce, signature or the body changed
                which = data.draw(st.sampled_from([*names, "body"]))
                if which == "body":
                    body = body + b" "
                else:
                    signed[which] = signed[which] + "0"
            for k, v in signed.items():
                name = k.lower() if kind == "lower-case" else k
                headers.append((name.encode(), v.encode()))
        status = served.post(headers, body)
        seen[status] += 1
        assert status in ALLOWED, (kind, status, headers, body[:80])
        if kind == "random" and any(
            (c < 0x20 and c != 0x09) or c == 0x7F for _, v in headers for c in v
        ):  # control characters in a header: the HTTP parser refuses the request itself
            assert status in (400, 401), (kind, status)
        elif kind in ("random", "mutated"):
            assert status == 401, (kind, status, headers)
        else:
            assert status != 401, (kind, status)

    case()
    assert seen[401] and (seen[400] or seen[404]), seen
    assert served.proc.poll() is None
