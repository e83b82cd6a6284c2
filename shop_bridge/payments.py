"""Payment provider interface, the HTTP client for it, and notification signatures.

Shaped after WeChat Pay v3: orders are known by ``out_trade_no`` (our order id), amounts are
integer fen (``amount.total``), notifications carry ``Wechatpay-Timestamp``,
``Wechatpay-Nonce`` and ``Wechatpay-Signature`` headers. The signature here is HMAC-SHA256
with a configured key over ``timestamp\\nnonce\\nbody\\n`` (WeChat's RSA scheme signs the same
message; swapping the verifier does not touch the rest).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from shop_bridge.errors import ProviderUnavailable

logger = logging.getLogger(__name__)

TS_HEADER = "Wechatpay-Timestamp"
NONCE_HEADER = "Wechatpay-Nonce"
SIG_HEADER = "Wechatpay-Signature"

NOTPAY = "NOTPAY"
SUCCESS = "SUCCESS"
CLOSED = "CLOSED"
NOTFOUND = "NOTFOUND"
REFUND = "REFUND"


def sign(key: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    msg = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
    return base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()


def verify(key: bytes, timestamp: str, nonce: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` signs the notification. Header text that is not ASCII (or
    bytes aiohttp could not decode, kept as surrogates) is a wrong signature, not an error:
    ``compare_digest`` refuses non-ASCII ``str`` (a forged header gave a 500)."""
    try:
        expected = sign(key, timestamp, nonce, body).encode("ascii")
        given = signature.encode("ascii")
    except UnicodeError:
        return False
    return hmac.compare_digest(expected, given)


def signed_headers(key: bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(16)
    return {
        TS_HEADER: ts,
        NONCE_HEADER: nonce,
        SIG_HEADER: sign(key, ts, nonce, body),
        "Content-Type": "application/json",
    }


def derive_key(configured: str, server_secret: str) -> bytes:
    if configured:
        return configured.encode()
    return hmac.new(server_secret.encode(), b"berrylive-shop-payment", hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    """What the provider says about one order's payment."""

    state: str
    """``NOTPAY``, ``SUCCESS``, ``CLOSED``, ``REFUND`` or ``NOTFOUND``."""
    amount_fen: int = 0
    transaction_id: str = ""


class PaymentProvider(Protocol):
    """The calls the order core needs from a payment provider."""

    async def create(
        self, order_id: str, amount_fen: int, description: str, notify_url: str
    ) -> dict[str, Any]: ...

    async def query(self, order_id: str) -> ProviderPayment: ...

    async def close(self, order_id: str) -> ProviderPayment:
        """Close an unpaid payment. Returns ``CLOSED`` (nothing can be paid any more) or
        ``SUCCESS`` (it was paid first); raises ProviderUnavailable when unsure."""
        ...

    async def refund(self, order_id: str, refund_id: str, amount_fen: int, total_fen: int) -> str:
        """Start a refund; returns ``SUCCESS`` or ``PROCESSING``."""
        ...


class HttpPaymentProvider:
    """Talks to a WeChat-Pay-v3-shaped HTTP API (the simulator, or an adapter in front of
    the real one). Requests are signed with the shared key like notifications."""

    def __init__(self, base_url: str, key: bytes, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout)

    async def close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        if self._session is None:
            raise ProviderUnavailable("payment provider client is not started")
        raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = signed_headers(self.key, raw)
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                data=raw or None,
                headers=headers,
                allow_redirects=False,  # a signed call goes where it was configured, only
            ) as resp:
                text = await resp.read()
                data = json.loads(text) if text else {}
                return resp.status, data
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"{method} {path}: {exc!r}") from exc

    async def create(
        self, order_id: str, amount_fen: int, description: str, notify_url: str
    ) -> dict[str, Any]:
        status, data = await self._call(
            "POST",
            "/v3/pay/transactions/jsapi",
            {
                "out_trade_no": order_id,
                "description": description[:127],
                "notify_url": notify_url,
                "amount": {"total": amount_fen, "currency": "CNY"},
            },
        )
        if status != 200 or not isinstance(data, dict):
            raise ProviderUnavailable(f"create payment for {order_id}: HTTP {status} {data!r}")
        return data

    async def query(self, order_id: str) -> ProviderPayment:
        status, data = await self._call("GET", f"/v3/pay/transactions/out-trade-no/{order_id}")
        if status == 404:
            return ProviderPayment(NOTFOUND)
        if status != 200 or not isinstance(data, dict):
            raise ProviderUnavailable(f"query {order_id}: HTTP {status}")
        return _payment(data)

    async def close(self, order_id: str) -> ProviderPayment:
        status, data = await self._call(
            "POST", f"/v3/pay/transactions/out-trade-no/{order_id}/close", {}
        )
        if status in (200, 204):
            return ProviderPayment(CLOSED)
        if status == 400 and isinstance(data, dict) and data.get("code") == "ORDERPAID":
            return await self.query(order_id)
        raise ProviderUnavailable(f"close {order_id}: HTTP {status} {data!r}")

    async def refund(self, order_id: str, refund_id: str, amount_fen: int, total_fen: int) -> str:
        status, data = await self._call(
            "POST",
            "/v3/refund/domestic/refunds",
            {
                "out_trade_no": order_id,
                "out_refund_no": refund_id,
                "amount": {"refund": amount_fen, "total": total_fen, "currency": "CNY"},
            },
        )
        if status != 200 or not isinstance(data, dict):
            raise ProviderUnavailable(f"refund {order_id}: HTTP {status} {data!r}")
        return str(data.get("status", "PROCESSING"))


def _payment(data: dict[str, Any]) -> ProviderPayment:
    amount = data.get("amount") or {}
    total = amount.get("total", 0) if isinstance(amount, dict) else 0
    return ProviderPayment(
        state=str(data.get("trade_state", NOTFOUND)),
        amount_fen=int(total) if isinstance(total, int) else 0,
        transaction_id=str(data.get("transaction_id", "")),
    )
