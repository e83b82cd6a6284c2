"""The demo's synthetic audience: a separate process that behaves like real clients.

``python -m control.demo_audience --api http://127.0.0.1:8080 --broadcast 3`` with an
operator API token in ``BERRYLIVE_DEMO_API_TOKEN`` (the token a mini-program backend
would hold: it mints each viewer's token at ``/api/broadcasts/{id}/viewer-token``). Then:

- **viewers** watch over HTTP-FLV and WS-FLV, reading and discarding the stream; each
  stays a while, leaves and comes back, so the figures breathe;
- **chatters** hold a Socket.IO connection to the danmaku hub (namespace ``/live``, with a
  viewer token): a comment every second or two, likes, and the lottery keyword when a
  lottery opens;
- **buyers** place an order every few seconds (in the flash sale while one runs, else the
  product being explained) and most of them pay through the simulated payment provider.

Kept cheap: it shares the machine with the server. Stops on SIGINT/SIGTERM, or when its
stdin reaches end-of-file with ``--exit-on-eof`` (the demo passes a pipe, so the
audience goes when the demo does, however the demo ended).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import os
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import socketio

from control.demo_shop import LOTTERY_KEYWORD, RECOVERABLE, Api, DemoApiError

logger = logging.getLogger("berrylive.demo.audience")

TOKEN_ENV = "BERRYLIVE_DEMO_API_TOKEN"
NAMESPACE = "/live"
CONNECT_ERRORS: tuple[type[Exception], ...] = (socketio.exceptions.ConnectionError, *RECOVERABLE)

NICKS = (
    "Ann", "Bo", "Chen", "Dara", "Eli", "Fang", "Gus", "Hana", "Ivo", "Jia", "Kai", "Lena",
    "Mei", "Noor", "Oli", "Ping", "Quinn", "Rui", "Sam", "Tao", "Uma", "Vik", "Wen", "Xia",
    "Yan", "Zoe",
)  # fmt: skip
CHATTER = (
    "hello from Shanghai!", "the colour is lovely", "is it true to size?", "what about XL?",
    "how long is shipping?", "just joined, what did I miss", "love this", "can you show the back?",
    "does it come in other colours?", "my order arrived yesterday, great quality", "666",
    "so pretty", "price?", "is the tea from this year?", "link please", "the mug is cute",
    "bought two last time", "when is the next flash sale?", "nice light in the studio",
)  # fmt: skip
BOUGHT = ("just ordered one!", "got it!", "paid, can't wait", "grabbed one in the sale")


@dataclass
class Counters:
    views: int = 0
    comments: int = 0
    likes: int = 0
    orders: int = 0
    paid: int = 0
    gmv_fen: int = 0
    failures: int = 0


class Audience:
    def __init__(
        self,
        api: Api,
        broadcast_id: int,
        *,
        viewers: int,
        chatters: int,
        comment_every: float,
        buy_every: float,
        pay_ratio: float = 0.9,
    ) -> None:
        self.api = api
        self.bid = broadcast_id
        self.viewers = viewers
        self.chatters = chatters
        self.comment_every = comment_every
        self.buy_every = buy_every
        self.pay_ratio = pay_ratio
        self.counters = Counters()
        self.room = ""
        self.flv_url = ""
        self.ws_url = ""
        self._tokens: dict[str, str] = {}
        self._sockets: list[tuple[str, socketio.AsyncClient]] = []
        self._lottery_open: str | None = None
        self._sale_id: int | None = None
        """The flash sale announced in the room (``flash_sale.*`` notices), if one runs."""
        self._winners: list[str] = []
        """Lottery winners who have not shopped with their prize yet (bounded)."""
        self._bought: dict[int, set[str]] = {}
        """Users who bought in each flash sale (the limit is one each)."""
        self._rng = random.Random()
        self._background: list[asyncio.Task[None]] = []

    # -- set-up ----------------------------------------------------------------------------

    async def prepare(self) -> None:
        b = await self.api.call("GET", f"/api/broadcasts/{self.bid}")
        self.room = f"{b['app']}/{b['stream']}"
        # Same host and port as the API (the printed play URLs may name a public host).
        self.flv_url = f"{self.api.base}/{b['app']}/{b['stream']}.flv"
        self.ws_url = "ws" + self.flv_url[4:]

    async def token(self, user: str) -> str:
        tok = self._tokens.get(user)
        if tok is None:
            nick = f"{NICKS[int(user[-4:]) % len(NICKS)]}{user[-2:]}"
            data = await self.api.call(
                "POST",
                f"/api/broadcasts/{self.bid}/viewer-token",
                {"user_id": user, "nick": nick, "ttl": 7 * 86400},
            )
            tok = self._tokens[user] = str(data["token"])
        return tok

    def user(self) -> str:
        return f"fan-{self._rng.randrange(1, 400):04d}"

    async def run(self) -> None:
        await self.prepare()
        tasks = [asyncio.create_task(self._viewer(i)) for i in range(self.viewers)]
        tasks.append(asyncio.create_task(self._buyers()))
        tasks.append(asyncio.create_task(self._chat()))
        tasks.append(asyncio.create_task(self._report()))
        try:
            await asyncio.gather(*tasks)
        finally:
            tasks += self._background
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for _user, sio in self._sockets:
                with contextlib.suppress(Exception):
                    await sio.disconnect()

    # -- viewers ---------------------------------------------------------------------------

    async def _viewer(self, i: int) -> None:
        await asyncio.sleep(i * 0.2)  # a gentle arrival, not a herd
        ws = i % 3 == 2
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=20)
        while True:
            stay = self._rng.uniform(30, 180)
            try:
                self.counters.views += 1
                if ws:
                    await asyncio.wait_for(self._watch_ws(timeout), stay)
                else:
                    await asyncio.wait_for(self._watch_flv(timeout), stay)
            except TimeoutError:
                pass  # stayed as long as they wanted
            except (aiohttp.ClientError, OSError) as exc:
                logger.debug("viewer %d: %s", i, exc)
            await asyncio.sleep(self._rng.uniform(1, 6))

    async def _watch_flv(self, timeout: aiohttp.ClientTimeout) -> None:
        async with self.api.session.get(self.flv_url, timeout=timeout) as resp:
            if resp.status != 200:
                await asyncio.sleep(2)
                return
            while await resp.content.readany():
                pass

    async def _watch_ws(self, timeout: aiohttp.ClientTimeout) -> None:
        ws_timeout = aiohttp.ClientWSTimeout(ws_receive=timeout.sock_read, ws_close=5)
        async with self.api.session.ws_connect(self.ws_url, timeout=ws_timeout) as ws:
            async for _msg in ws:
                pass

    # -- chat ------------------------------------------------------------------------------

    async def _connect(self, user: str) -> socketio.AsyncClient:
        sio = socketio.AsyncClient(reconnection=True, reconnection_delay=1)
        sio.on("comments", self._on_batch, namespace=NAMESPACE)
        sio.on("joined", self._on_joined, namespace=NAMESPACE)

        async def won(data: Any) -> None:
            if user not in self._winners and len(self._winners) < 20:
                self._winners.append(user)

        sio.on("lottery_won", won, namespace=NAMESPACE)
        await sio.connect(
            self.api.base,
            namespaces=[NAMESPACE],
            transports=["websocket"],
            auth={"room": self.room, "token": await self.token(user)},
            wait_timeout=10,
        )
        return sio

    async def _on_joined(self, data: Any) -> None:
        for lot in (data or {}).get("lotteries") or []:
            if isinstance(lot, dict) and lot.get("state") == "open":
                self._lottery_open = str(lot.get("lottery_id"))

    async def _on_batch(self, data: Any) -> None:
        for notice in (data or {}).get("notices") or []:
            if not isinstance(notice, dict):
                continue
            kind, info = notice.get("type"), notice.get("data") or {}
            if kind == "flash_sale.created" and isinstance(info.get("id"), int):
                self._sale_id = info["id"]
            elif kind in ("flash_sale.closed", "flash_sale.settled") and (
                info.get("id") == self._sale_id
            ):
                self._sale_id = None
            if kind != "lottery":
                continue
            if info.get("event") == "open":
                self._lottery_open = str(info.get("lottery_id"))
            elif info.get("event") in ("closed", "drawn", "cancelled"):
                self._lottery_open = None

    async def _chat(self) -> None:
        waiting = [f"fan-{n:04d}" for n in self._rng.sample(range(1, 400), min(self.chatters, 399))]
        while waiting:  # connected sockets reconnect by themselves; first connects retry here
            for user in list(waiting):
                try:
                    self._sockets.append((user, await self._connect(user)))
                    waiting.remove(user)
                except CONNECT_ERRORS as e:
                    logger.warning("chatter %s could not connect (trying again): %s", user, e)
            if self._sockets:
                break
            await asyncio.sleep(2)
        if waiting:
            self._background.append(asyncio.create_task(self._late_chatters(waiting)))
        entered: set[tuple[str, str]] = set()
        next_like = time.monotonic()
        while True:
            await asyncio.sleep(self._rng.uniform(0.5, 1.5) * self.comment_every)
            user, sio = self._rng.choice(self._sockets)
            if not sio.connected:
                continue
            lottery = self._lottery_open
            if lottery and (user, lottery) not in entered and self._rng.random() < 0.6:
                entered.add((user, lottery))
                text = LOTTERY_KEYWORD
            else:
                text = self._rng.choice(CHATTER)
            await self._emit(sio, "comment", {"text": text})
            self.counters.comments += 1
            if time.monotonic() >= next_like:
                _u, liker = self._rng.choice(self._sockets)
                if liker.connected:
                    n = self._rng.randint(1, 8)
                    await self._emit(liker, "like", {"count": n})
                    self.counters.likes += n
                next_like = time.monotonic() + self._rng.uniform(0.5, 2.0)

    async def _late_chatters(self, waiting: list[str]) -> None:
        while waiting:
            await asyncio.sleep(5)
            for user in list(waiting):
                try:
                    self._sockets.append((user, await self._connect(user)))
                    waiting.remove(user)
                except CONNECT_ERRORS as e:
                    logger.debug("chatter %s could not connect: %s", user, e)

    async def _emit(self, sio: socketio.AsyncClient, event: str, data: Any) -> None:
        try:
            await sio.emit(event, data, namespace=NAMESPACE)
        except socketio.exceptions.SocketIOError as exc:
            logger.debug("%s not sent: %s", event, exc)

    async def _say_bought(self) -> None:
        live = [sio for _u, sio in self._sockets if sio.connected]
        if live and self._rng.random() < 0.5:
            await self._emit(self._rng.choice(live), "comment", {"text": self._rng.choice(BOUGHT)})

    # -- buyers ----------------------------------------------------------------------------

    async def _buyers(self) -> None:
        await asyncio.sleep(0.5)
        while True:
            try:
                await self.buy_once()
            except RECOVERABLE as exc:
                self.counters.failures += 1
                logger.info("a buy failed: %s", exc)
            await asyncio.sleep(self._rng.uniform(0.5, 1.5) * self.buy_every)

    async def buy_once(self) -> None:
        """One viewer buys: a lottery winner spends their coupon; else someone buys in the
        flash sale while one runs, or the product being explained (or any product on the
        shelf); then most of them pay."""
        card = (await self.api.call("GET", f"/api/broadcasts/{self.bid}/card", auth=False)).get(
            "card"
        ) or {}
        order = None
        if self._winners:
            user = self._winners.pop(0)
            order = await self._order(card.get("product_id"), user, await self._coupon(user))
        if card.get("flash_sale_id"):  # seen on the card: they come back to it
            self._sale_id = int(card["flash_sale_id"])
        sale_id = self._sale_id
        if order is None and sale_id and self._rng.random() < 0.7:
            order = await self._buy_flash(int(sale_id))
        if order is None:
            order = await self._order(card.get("product_id"), self.user())
        if order is None:
            return
        self.counters.orders += 1
        if order.get("state") == "paid":  # a coupon paid all of it
            self.counters.paid += 1
            return
        if self._rng.random() >= self.pay_ratio:
            return  # changed their mind: the order times out unpaid
        headers = {"X-Viewer-Token": await self.token(str(order["user_id"]))}
        pay = await self.api.call(
            "POST", f"/api/orders/{order['id']}/pay", headers=headers, auth=False
        )
        url = (pay.get("payment") or {}).get("sim_pay_url")
        if not url:
            return
        await self.api.call("POST", url, auth=False)
        self.counters.paid += 1
        self.counters.gmv_fen += int(order.get("amount_fen", 0))
        await self._say_bought()

    async def _coupon(self, user: str) -> str | None:
        """One of ``user``'s unused coupons worth money, if they have one."""
        found = await self.api.call(
            "GET",
            f"/api/users/{user}/coupons",
            headers={"X-Viewer-Token": await self.token(user)},
            auth=False,
        )
        for coupon in found.get("items", []):
            if coupon.get("used_order_id") is None and int(coupon.get("value_fen") or 0) > 0:
                return str(coupon["id"])
        return None

    async def _buy_flash(self, sale_id: int) -> dict[str, Any] | None:
        bought = self._bought.setdefault(sale_id, set())
        if len(self._bought) > 50:  # old sales: forget them
            self._bought.pop(next(iter(self._bought)))
        user = self.user()
        if user in bought:
            return None
        bought.add(user)
        try:
            order: dict[str, Any] = await self.api.call(
                "POST",
                f"/api/flash-sales/{sale_id}/buy",
                {
                    "idempotency_key": uuid.uuid4().hex,
                    "channel": "live",
                    "recipient": recipient_of(user),
                },
                headers={"X-Viewer-Token": await self.token(user)},
                auth=False,
            )
        except DemoApiError as exc:
            if exc.status == 409:  # sold out, over, closed, limit: buy at list price instead
                if exc.code != "limit_reached" and sale_id == self._sale_id:
                    self._sale_id = None
                return None
            raise
        return order

    async def _order(
        self, product_id: Any, user: str, coupon: str | None = None
    ) -> dict[str, Any] | None:
        shelf = await self.api.call("GET", f"/api/broadcasts/{self.bid}/shelf", auth=False)
        products = [i["product"] for i in shelf.get("items", []) if i.get("on_shelf")]
        if not products:
            return None
        product = next((p for p in products if p["id"] == product_id), None)
        if product is None or self._rng.random() < 0.3:
            product = self._rng.choice(products)
        skus = [s for s in product.get("skus", []) if int(s.get("stock", 0)) > 2]
        if not skus:
            return None
        sku = self._rng.choice(skus)
        body = {
            "sku_id": sku["id"],
            "quantity": 2 if self._rng.random() < 0.15 else 1,
            "broadcast_id": self.bid,
            "idempotency_key": uuid.uuid4().hex,
            "channel": "live",
            "recipient": recipient_of(user),
        }
        if coupon is not None:
            body["coupon_id"] = coupon
        try:
            order: dict[str, Any] = await self.api.call(
                "POST",
                "/api/orders",
                body,
                headers={"X-Viewer-Token": await self.token(user)},
                auth=False,
            )
        except DemoApiError as exc:
            if exc.status == 409:  # out of stock just now: the operator restocks
                return None
            raise
        return order

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(60)
            c = self.counters
            logger.info(
                "audience: %d views, %d comments, %d likes, %d orders (%d paid, ¥%.2f)",
                c.views, c.comments, c.likes, c.orders, c.paid, c.gmv_fen / 100,
            )  # fmt: skip


def recipient_of(user: str) -> dict[str, str]:
    """A made-up recipient per demo viewer (the shop asks where to ship before payment)."""
    n = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16)
    return {
        "name": f"观众{n % 1000:03d}",
        "phone": f"1380000{n % 10000:04d}",
        "address": f"上海市浦东新区演示路{n % 500 + 1}号",
    }


async def _until_eof() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def run(args: argparse.Namespace, token: str) -> None:
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if not stopping and main is not None:  # once: a second signal must not cut the clean-up
            stopping = True
            main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        audience = Audience(
            Api(session, args.api, token),
            args.broadcast,
            viewers=args.viewers,
            chatters=args.chatters,
            comment_every=args.comment_every,
            buy_every=args.buy_every,
        )
        jobs = [asyncio.create_task(audience.run())]
        if args.exit_on_eof:
            jobs.append(asyncio.create_task(_until_eof()))
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            for job in done:
                job.result()
        except asyncio.CancelledError:
            pass
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="berrylive-demo-audience", description=__doc__)
    p.add_argument("--api", required=True, help="the server's HTTP base URL")
    p.add_argument("--broadcast", type=int, required=True, help="broadcast id")
    p.add_argument("--viewers", type=int, default=24, help="HTTP-FLV/WS-FLV viewers (24)")
    p.add_argument("--chatters", type=int, default=8, help="Socket.IO chatters (8)")
    p.add_argument("--comment-every", type=float, default=1.5, help="seconds (1.5)")
    p.add_argument("--buy-every", type=float, default=4.0, help="seconds (4)")
    p.add_argument("--exit-on-eof", action="store_true", help="stop when stdin closes")
    args = p.parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        print(f"{p.prog}: set {TOKEN_ENV} to an operator API token", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("socketio").setLevel(logging.WARNING)
    logging.getLogger("engineio").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(run(args, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
