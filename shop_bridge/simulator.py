"""A simulated WeChat-Pay-style provider served over real HTTP (demo and tests).

Routes (all JSON; requests from the shop are checked against the shared HMAC key):

- ``POST /v3/pay/transactions/jsapi``: create a payment for ``out_trade_no``
- ``GET /v3/pay/transactions/out-trade-no/{no}``: query it
- ``POST /v3/pay/transactions/out-trade-no/{no}/close``: close it (400 ``ORDERPAID`` if paid)
- ``POST /v3/refund/domestic/refunds``: refund it, whole or partly (``out_refund_no``,
  ``amount: {refund, total}``; succeeds at once; a repeated ``out_refund_no`` is the same
  refund; refunds above the amount paid: 400 ``NOT_ENOUGH``)
- ``POST /sim/pay/{no}``: the buyer pays; the signed notification is sent to ``notify_url``
  (``?late=1``: the payment went through although the shop closed it, the race a real
  provider can lose; the shop must then refund it)
- ``POST /sim/notify/{no}``: send the notification again (providers repeat them for a day)

A closed payment can never be paid, exactly like the real provider, so "close said CLOSED"
means the money will not arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from shop_bridge import payments

logger = logging.getLogger(__name__)


@dataclass
class _Txn:
    out_trade_no: str
    amount_fen: int
    notify_url: str
    state: str = payments.NOTPAY
    transaction_id: str = ""
    success_time: float = 0.0


class SimulatedProvider:
    """In-process fake of the provider's HTTP API with a bounded table of payments."""

    def __init__(
        self, key: bytes, max_payments: int = 100_000, check_signatures: bool = True
    ) -> None:
        self.key = key
        self.max_payments = max_payments
        self.check_signatures = check_signatures
        self.txns: OrderedDict[str, _Txn] = OrderedDict()
        self.notifications_sent = 0
        self.refund_calls: dict[str, int] = {}
        """Refund requests received per ``out_trade_no`` (repeats are answered the same)."""
        self.refunds: dict[str, dict[str, int]] = {}
        """Refunds made per ``out_trade_no``: ``out_refund_no`` -> amount (fen)."""
        self.app = web.Application(client_max_size=64 * 1024)
        self.app.router.add_post("/v3/pay/transactions/jsapi", self._create)
        self.app.router.add_get("/v3/pay/transactions/out-trade-no/{no}", self._query)
        self.app.router.add_post("/v3/pay/transactions/out-trade-no/{no}/close", self._close)
        self.app.router.add_post("/v3/refund/domestic/refunds", self._refund)
        self.app.router.add_post("/sim/pay/{no}", self._pay)
        self.app.router.add_post("/sim/notify/{no}", self._renotify)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""
        """Where the server reaches it (its own calls: create, query, close, refund)."""
        self.public_url = ""
        """Where a buyer's device reaches it (the ``sim_pay_url`` handed out)."""

    async def start(self, host: str = "127.0.0.1", port: int = 0, public_host: str = "") -> str:
        """Listen on ``host`` (``0.0.0.0`` so phones on the LAN can pay in a demo);
        ``public_host`` names it in pay URLs."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # public: the sockets' bound addresses
        bound = addresses[0][1] if addresses else port
        local = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
        self.url = f"http://{local}:{bound}"
        self.public_url = f"http://{public_host or local}:{bound}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        logger.info("simulated payment provider at %s", self.url)
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- helpers -------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if self.check_signatures:
            ok = payments.verify(
                self.key,
                request.headers.get(payments.TS_HEADER, ""),
                request.headers.get(payments.NONCE_HEADER, ""),
                raw,
                request.headers.get(payments.SIG_HEADER, ""),
            )
            if not ok:
                raise web.HTTPUnauthorized(
                    text='{"code":"SIGN_ERROR","message":"bad signature"}',
                    content_type="application/json",
                )
        if not raw:
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text='{"code":"PARAM_ERROR"}', content_type="application/json")
        return data

    def _get(self, no: str) -> _Txn:
        txn = self.txns.get(no)
        if txn is None:
            raise web.HTTPNotFound(
                text='{"code":"ORDER_NOT_EXIST","message":"no such order"}',
                content_type="application/json",
            )
        return txn

    @staticmethod
    def _view(txn: _Txn) -> dict[str, Any]:
        return {
            "out_trade_no": txn.out_trade_no,
            "trade_state": txn.state,
            "transaction_id": txn.transaction_id,
            "amount": {"total": txn.amount_fen, "currency": "CNY"},
        }

    def notification_body(self, txn: _Txn, amount_fen: int | None = None) -> bytes:
        resource = {
            "out_trade_no": txn.out_trade_no,
            "transaction_id": txn.transaction_id,
            "trade_state": txn.state,
            "success_time": time.strftime(
                "%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(txn.success_time or time.time())
            ),
            "amount": {
                "total": txn.amount_fen if amount_fen is None else amount_fen,
                "currency": "CNY",
            },
        }
        body = {
            "id": secrets.token_hex(16),
            "event_type": "TRANSACTION.SUCCESS",
            "resource_type": "encrypt-resource",
            "resource": resource,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    async def notify(self, no: str) -> int:
        """Send the signed success notification for ``no``; returns the HTTP status."""
        txn = self._get(no)
        body = self.notification_body(txn)
        assert self._session is not None
        self.notifications_sent += 1
        try:
            async with self._session.post(
                txn.notify_url, data=body, headers=payments.signed_headers(self.key, body)
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("notification for %s not delivered: %s", no, exc)
            return 0

    # -- provider API --------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        no = str(data.get("out_trade_no", ""))
        amount = (data.get("amount") or {}).get("total")
        if not no or not isinstance(amount, int) or amount < 0:
            return web.json_response({"code": "PARAM_ERROR"}, status=400)
        txn = self.txns.get(no)
        if txn is None:
            while len(self.txns) >= self.max_payments:
                self.txns.popitem(last=False)
            txn = _Txn(no, amount, str(data.get("notify_url", "")))
            self.txns[no] = txn
        elif txn.amount_fen != amount:
            return web.json_response({"code": "PARAM_ERROR", "message": "amount"}, status=400)
        elif txn.state == payments.CLOSED:
            return web.json_response({"code": "ORDERCLOSED"}, status=400)
        return web.json_response(
            {"prepay_id": f"wx{no}", "sim_pay_url": f"{self.public_url or self.url}/sim/pay/{no}"}
        )

    async def _query(self, request: web.Request) -> web.Response:
        await self._body(request)
        return web.json_response(self._view(self._get(request.match_info["no"])))

    async def _close(self, request: web.Request) -> web.Response:
        await self._body(request)
        no = request.match_info["no"]
        txn = self.txns.get(no)
        if txn is None:
            # Never created: record it closed so it can never be paid later.
            self.txns[no] = _Txn(no, 0, "", state=payments.CLOSED)
            return web.Response(status=204)
        if txn.state in (payments.SUCCESS, payments.REFUND):
            return web.json_response({"code": "ORDERPAID", "message": "already paid"}, status=400)
        txn.state = payments.CLOSED
        return web.Response(status=204)

    async def _refund(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        txn = self._get(str(data.get("out_trade_no", "")))
        self.refund_calls[txn.out_trade_no] = self.refund_calls.get(txn.out_trade_no, 0) + 1
        if txn.state not in (payments.SUCCESS, payments.REFUND):
            return web.json_response({"code": "NOT_PAID"}, status=400)
        refund_no = str(data.get("out_refund_no", ""))
        amount = (data.get("amount") or {}).get("refund")
        made = self.refunds.setdefault(txn.out_trade_no, {})
        if refund_no not in made:  # a repeated refund number is the same refund
            if not isinstance(amount, int) or amount <= 0 or not refund_no:
                return web.json_response({"code": "PARAM_ERROR"}, status=400)
            if sum(made.values()) + amount > txn.amount_fen:
                return web.json_response(
                    {"code": "NOT_ENOUGH", "message": "refunds above the amount paid"}, status=400
                )
            made[refund_no] = amount
        txn.state = payments.REFUND
        return web.json_response({"status": "SUCCESS", "out_refund_no": refund_no})

    # -- the buyer's side ------------------------------------------------------------

    async def _pay(self, request: web.Request) -> web.Response:
        no = request.match_info["no"]
        txn = self._get(no)
        late = request.query.get("late") == "1"
        if txn.state == payments.CLOSED and not late:
            return web.json_response({"code": "ORDERCLOSED"}, status=409)
        if txn.state in (payments.NOTPAY, payments.CLOSED):
            txn.state = payments.SUCCESS
            txn.transaction_id = "42" + secrets.token_hex(14)
            txn.success_time = time.time()
        notify = request.query.get("notify", "1") != "0"
        status = await self.notify(no) if notify else 0
        return web.json_response({**self._view(txn), "notify_status": status})

    async def _renotify(self, request: web.Request) -> web.Response:
        no = request.match_info["no"]
        status = await self.notify(no)
        return web.json_response({"notify_status": status})

    async def pay_quietly(self, no: str) -> None:
        """Mark ``no`` paid without notifying (a notification lost on the way)."""
        txn = self._get(no)
        if txn.state == payments.NOTPAY:
            txn.state = payments.SUCCESS
            txn.transaction_id = "42" + secrets.token_hex(14)
            txn.success_time = time.time()
        await asyncio.sleep(0)
