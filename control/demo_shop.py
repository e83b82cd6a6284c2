"""The demo's shop, set up and run through the public REST API, as an operator would.

:func:`seed` makes (or finds, on a second run) the anchor account, the catalogue (products
with colour/size SKUs) and a broadcast with those products on its shelf, and returns the
broadcast's own push URL. :class:`Show` then runs the shop while the demo lasts: the "now
explaining" card rotates between the products, a flash sale with a countdown follows
another, a keyword lottery opens every few minutes and stock is topped up before it runs
out. Everything goes over HTTP with an operator API token (:class:`Api`), never through
the services' Python objects, so it exercises what a real operator client uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

DEMO_TITLE = "Spring picks: linen, tea and ceramics (berrylive demo)"
"""Title of the demo's broadcasts (a second run reuses a scheduled one of this title)."""
ANCHOR_USER = "anchor"
LOTTERY_KEYWORD = "lucky"


class DemoApiError(Exception):
    """An API call answered with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        err = body.get("error") if isinstance(body, dict) else None
        self.status = status
        self.code = str(err.get("code", "")) if isinstance(err, dict) else ""
        message = err.get("message", "") if isinstance(err, dict) else str(body)[:200]
        super().__init__(f"{method} {path}: {status} {self.code} {message}".strip())


RECOVERABLE: tuple[type[Exception], ...] = (
    DemoApiError,
    aiohttp.ClientError,
    TimeoutError,
    KeyError,
    TypeError,
    ValueError,
)
"""What one turn of a demo loop may fail with and the loop survives: an API refusal, a
lost connection, a timeout, an answer not of the expected shape."""


IDEMPOTENT = frozenset({"GET", "PUT", "DELETE"})
RETRY_DELAYS = (0.1, 0.3, 1.0)


class Api:
    """A small JSON client for the server's ``/api``; ``token`` goes in as a bearer."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.token = token

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        ok: Sequence[int] = (200, 201, 204),
    ) -> Any:
        """One call; the JSON answer. An idempotent call (GET, PUT, DELETE) that gets ``503``
        ("retry shortly") is tried again a few times, as the API asks clients to."""
        h = dict(headers or {})
        if auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        url = path if path.startswith("http") else self.base + path
        retries = RETRY_DELAYS if method in IDEMPOTENT else ()
        for delay in (*retries, None):
            status, data = await self._once(method, url, body, h)
            if status in ok:
                return data
            if status != 503 or delay is None:
                raise DemoApiError(method, path, status, data)
            await asyncio.sleep(delay)

    async def _once(
        self, method: str, url: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            raw = await resp.read()
            data: Any = None
            if raw:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = raw.decode("utf-8", "replace")
            return resp.status, data


# -- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class SkuSpec:
    code: str
    specs: dict[str, str]
    price_fen: int
    stock: int = 2000


@dataclass(frozen=True)
class ProductSpec:
    title: str
    description: str
    skus: tuple[SkuSpec, ...]


def _code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())


def _grid(
    prefix: str, price_fen: int, colours: Sequence[str], sizes: Sequence[str]
) -> tuple[SkuSpec, ...]:
    return tuple(
        SkuSpec(
            f"{prefix}-{_code(colour)[:3]}-{_code(size)}",
            {"colour": colour, "size": size},
            price_fen,
        )
        for colour in colours
        for size in sizes
    )


CATALOGUE: tuple[ProductSpec, ...] = (
    ProductSpec(
        "Linen shirt",
        "Washed linen, relaxed fit, mother-of-pearl buttons.",
        _grid("DEMO-SHIRT", 12900, ("white", "sky blue"), ("M", "L", "XL")),
    ),
    ProductSpec(
        "Oolong tea gift box",
        "Spring harvest oolong from Anxi, hand-rolled, in a paper tin.",
        (
            SkuSpec("DEMO-TEA-100G", {"size": "100 g"}, 6800),
            SkuSpec("DEMO-TEA-250G", {"size": "250 g"}, 14800),
        ),
    ),
    ProductSpec(
        "Ceramic mug",
        "Stoneware, 350 ml, glazed by hand.",
        _grid("DEMO-MUG", 4500, ("celadon", "white"), ("350 ml",)),
    ),
    ProductSpec(
        "Canvas tote bag",
        "Heavy cotton canvas with an inner pocket.",
        _grid("DEMO-TOTE", 3900, ("natural", "black"), ("one size",)),
    ),
)
"""What a fresh demo sells (SKU codes identify the demo's products on later runs)."""


@dataclass
class Seeded:
    """What :func:`seed` set up."""

    broadcast: dict[str, Any]
    products: list[dict[str, Any]]
    anchor: dict[str, Any]
    anchor_password: str | None
    push_url: str
    play: dict[str, str]
    created_products: int = 0
    ended_leftovers: list[int] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.broadcast["id"])

    @property
    def room(self) -> str:
        return f"{self.broadcast['app']}/{self.broadcast['stream']}"


def read_secret(path: Path) -> tuple[str, str] | None:
    """``(user, password)`` from a file written by :func:`write_secret`, if there is one."""
    try:
        user, _, password = path.read_text().strip().partition(" ")
    except FileNotFoundError:
        return None
    return (user, password) if user and password else None


def write_secret(path: Path, user: str, password: str) -> None:
    """Keep a demo account's sign-in in the data dir, readable by its owner only."""
    path.write_text(f"{user} {password}\n")
    path.chmod(0o600)


async def _ensure_anchor(api: Api, password_file: Path) -> tuple[dict[str, Any], str | None]:
    """The demo anchor account; its password is kept next to the operator's."""
    found = await api.call("GET", "/api/users?role=anchor&limit=100")
    for user in found.get("items", []):
        if user.get("username") == ANCHOR_USER:
            kept = await asyncio.to_thread(read_secret, password_file)
            return user, kept[1] if kept and kept[0] == ANCHOR_USER else None
    password = secrets.token_urlsafe(12)
    user = await api.call(
        "POST",
        "/api/users",
        {
            "username": ANCHOR_USER,
            "password": password,
            "role": "anchor",
            "display_name": "Lily (demo anchor)",
        },
    )
    await asyncio.to_thread(write_secret, password_file, ANCHOR_USER, password)
    return user, password


async def _all_products(api: Api) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: Any = None
    for _ in range(1000):  # bounded: 200 000 products
        page = await api.call(
            "GET", "/api/products?limit=200" + (f"&after={after}" if after else ""), auth=False
        )
        items.extend(page.get("items", []))
        after = page.get("next_after")
        if not after:
            break
    return items


async def _ensure_products(api: Api) -> tuple[list[dict[str, Any]], int]:
    """The catalogue's products, created where no product holds their first SKU code."""
    by_code: dict[str, dict[str, Any]] = {}
    for product in await _all_products(api):
        for sku in product.get("skus", []):
            by_code.setdefault(str(sku.get("code")), product)
    products: list[dict[str, Any]] = []
    created = 0
    for spec in CATALOGUE:
        found = by_code.get(spec.skus[0].code)
        if found is not None:
            products.append(found)
            continue
        product = await api.call(
            "POST",
            "/api/products",
            {
                "title": spec.title,
                "description": spec.description,
                "skus": [
                    {
                        "code": s.code,
                        "specs": s.specs,
                        "price_fen": s.price_fen,
                        "stock": s.stock,
                    }
                    for s in spec.skus
                ],
            },
        )
        created += 1
        products.append(product)
    return products, created


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


async def _ensure_broadcast(
    api: Api, anchor_id: int, product_ids: list[int]
) -> tuple[dict[str, Any], list[int]]:
    """A scheduled demo broadcast to go live with: an earlier run's that never went live,
    else a new one. Demo broadcasts an earlier run left on air (it was killed) are ended
    first, so the schedule shows one live demo."""
    ended: list[int] = []
    reuse: dict[str, Any] | None = None
    for state in ("live", "interrupted", "scheduled"):
        found = await api.call(
            "GET", f"/api/broadcasts?anchor_id={anchor_id}&state={state}&limit=100"
        )
        for b in found.get("items", []):
            if b.get("title") != DEMO_TITLE:
                continue
            if state == "scheduled":
                reuse = reuse or b
                continue
            with contextlib.suppress(DemoApiError):  # 409: it ended meanwhile
                await api.call(
                    "POST", f"/api/broadcasts/{b['id']}/end", {"reason": "a new demo run started"}
                )
                ended.append(int(b["id"]))
    if reuse is not None:
        if list(reuse.get("product_ids") or []) != product_ids:
            reuse = await api.call(
                "PATCH", f"/api/broadcasts/{reuse['id']}", {"product_ids": product_ids}
            )
        return dict(reuse or {}), ended
    created = await api.call(
        "POST",
        "/api/broadcasts",
        {
            "title": DEMO_TITLE,
            "description": "A synthetic anchor, shop and audience: berrylive's `make demo`.",
            "anchor_id": anchor_id,
            "scheduled_start": _now_iso(),
            "product_ids": product_ids,
        },
    )
    return created, ended


async def seed(api: Api, data_dir: Path) -> Seeded:
    """Set up (or find) the anchor, the products and a broadcast to go live with."""
    anchor, anchor_password = await _ensure_anchor(api, data_dir / "demo-anchor.txt")
    products, created = await _ensure_products(api)
    product_ids = [int(p["id"]) for p in products]
    broadcast, ended = await _ensure_broadcast(api, int(anchor["id"]), product_ids)
    bid = broadcast["id"]
    room = f"{broadcast['app']}/{broadcast['stream']}"
    # The shop learns both from the broadcast's events too; saying it here means the shelf
    # and the attribution are in place before the first buyer arrives.
    await api.call(
        "PUT", f"/api/broadcasts/{bid}/shop", {"anchor_id": str(anchor["id"]), "room": room}
    )
    await api.call(
        "PUT",
        f"/api/broadcasts/{bid}/shelf",
        {"items": [{"product_id": pid, "on_shelf": True} for pid in product_ids]},
    )
    push = await api.call("GET", f"/api/broadcasts/{bid}/push")
    play = await api.call("GET", f"/api/broadcasts/{bid}/play")
    return Seeded(
        broadcast=broadcast,
        products=products,
        anchor=anchor,
        anchor_password=anchor_password,
        push_url=str(push["url"]),
        play={str(k): str(v) for k, v in play.items()},
        created_products=created,
        ended_leftovers=ended,
    )


async def wait_live(api: Api, broadcast_id: int, timeout: float) -> bool:
    """Poll the broadcast until it is ``live`` (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        b = await api.call("GET", f"/api/broadcasts/{broadcast_id}")
        if b.get("state") == "live":
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.25)


async def end_broadcast(api: Api, broadcast_id: int) -> None:
    """End the demo's broadcast (it then becomes a replay, as after a real show)."""
    try:
        await api.call(
            "POST", f"/api/broadcasts/{broadcast_id}/end", {"reason": "the demo was stopped"}
        )
    except DemoApiError as exc:
        if exc.status != 409:  # already ended
            raise


# -- the running show -----------------------------------------------------------------------


@dataclass(frozen=True)
class ShowSettings:
    card_every: float = 20.0
    """Seconds each product stays the "now explaining" card."""
    sale_seconds: float = 180.0
    """Length of each flash sale (its countdown)."""
    sale_pause: float = 30.0
    """Seconds between one flash sale's end and the next one's start."""
    sale_stock: int = 30
    lottery_every: float = 240.0
    """Seconds between the openings of two lotteries."""
    first_lottery: float = 20.0
    lottery_window: float = 60.0
    restock_every: float = 30.0
    restock_below: int = 200
    restock_delta: int = 2000


def _price(fen: int) -> str:
    return f"¥{fen / 100:,.2f}"


class Show:
    """The operator's side of the live shop, as background loops over the REST API.

    Each loop survives failed calls (logged, tried again on its next turn), so a slow or
    restarting server never ends the demo.
    """

    def __init__(self, api: Api, seeded: Seeded, settings: ShowSettings | None = None) -> None:
        self.api = api
        self.seeded = seeded
        self.settings = settings or ShowSettings()
        self.sale: dict[str, Any] | None = None
        """The flash sale running now (its view), or None."""
        self._card_product: int | None = None
        self._card_changed = asyncio.Event()

    async def run(self) -> None:
        loops = (self._cards(), self._flash_sales(), self._lotteries(), self._restock())
        await asyncio.gather(*loops)

    # -- the card ------------------------------------------------------------------------

    async def push_card(self, product: dict[str, Any]) -> None:
        body: dict[str, Any] = {"product_id": product["id"]}
        sale = self.sale
        if sale is not None and sale.get("product_id") == product["id"]:
            body["flash_sale_id"] = sale["id"]
            body["sku_id"] = sale["sku_id"]
        await self.api.call("POST", f"/api/broadcasts/{self.seeded.id}/card", body)
        self._card_product = int(product["id"])

    async def _cards(self) -> None:
        products = self.seeded.products
        i = 0
        while True:
            try:
                await self.push_card(products[i % len(products)])
            except RECOVERABLE as exc:
                logger.warning("demo show: card not pushed: %s", exc)
            i += 1
            # A new flash sale interrupts the rotation: the anchor presents it at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._card_changed.wait(), self.settings.card_every)
            if self._card_changed.is_set():
                self._card_changed.clear()
                sale = self.sale
                if sale is not None:
                    i = next(
                        (n for n, p in enumerate(products) if p["id"] == sale["product_id"]), i
                    )

    # -- flash sales ------------------------------------------------------------------------

    async def _flash_sales(self) -> None:
        n = 0
        while True:
            product = self.seeded.products[n % len(self.seeded.products)]
            sku = product["skus"][n // len(self.seeded.products) % len(product["skus"])]
            n += 1
            try:
                sale = await self._open_sale(sku)
            except RECOVERABLE as exc:
                logger.warning("demo show: flash sale not opened: %s", exc)
                await asyncio.sleep(self.settings.sale_pause)
                continue
            self.sale = sale
            self._card_changed.set()
            logger.info(
                "demo show: flash sale %s: %s %s at %s (was %s), %d units, %.0f s",
                sale["id"],
                product["title"],
                "/".join(sku.get("specs", {}).values()),
                _price(int(sale["sale_price_fen"])),
                _price(int(sku["price_fen"])),
                int(sale["sale_stock"]),
                self.settings.sale_seconds,
            )
            await self._until_over(sale)
            self.sale = None
            await asyncio.sleep(self.settings.sale_pause)

    async def _open_sale(self, sku: dict[str, Any]) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        price = int(sku["price_fen"])
        sale_price = max(100, (price * 7 // 10) // 100 * 100 - 10)  # 30 % off, ending in .90
        result: dict[str, Any] = await self.api.call(
            "POST",
            "/api/flash-sales",
            {
                "broadcast_id": self.seeded.id,
                "sku_id": sku["id"],
                "sale_price_fen": sale_price,
                "sale_stock": self.settings.sale_stock,
                "per_user_limit": 1,
                "starts_at": now_ms,
                "ends_at": now_ms + int(self.settings.sale_seconds * 1000),
            },
        )
        return result

    async def _until_over(self, sale: dict[str, Any]) -> None:
        ends = time.time() + self.settings.sale_seconds
        while time.time() < ends:
            await asyncio.sleep(min(5.0, max(0.1, ends - time.time())))
            try:
                view = await self.api.call("GET", f"/api/flash-sales/{sale['id']}", auth=False)
            except RECOVERABLE as exc:
                logger.warning("demo show: flash sale %s not read: %s", sale["id"], exc)
                continue
            if view.get("status") not in ("open", "scheduled") or not view.get("remaining"):
                logger.info("demo show: flash sale %s %s", sale["id"], view.get("status"))
                return

    # -- lotteries ------------------------------------------------------------------------

    async def _lotteries(self) -> None:
        await asyncio.sleep(self.settings.first_lottery)
        mug = next((p for p in self.seeded.products if p["title"] == "Ceramic mug"), None)
        while True:
            prizes: list[dict[str, Any]] = [{"name": "¥5 off coupon", "stock": 3, "value_fen": 500}]
            if mug is not None:
                prizes.insert(0, {"name": "Ceramic mug", "stock": 1, "sku": mug["skus"][0]["code"]})
            try:
                lot = await self.api.call(
                    "POST",
                    "/api/danmaku/lotteries",
                    {
                        "room": self.seeded.room,
                        "title": f'Lucky draw: comment "{LOTTERY_KEYWORD}" to enter',
                        "prizes": prizes,
                        "entry": "keyword",
                        "keyword": LOTTERY_KEYWORD,
                        "window_s": self.settings.lottery_window,
                        "mode": "timed",
                    },
                )
                logger.info("demo show: lottery %s open", lot.get("lottery_id"))
            except RECOVERABLE as exc:
                logger.warning("demo show: lottery not opened: %s", exc)
            await asyncio.sleep(self.settings.lottery_every)

    # -- stock ----------------------------------------------------------------------------

    async def _restock(self) -> None:
        while True:
            await asyncio.sleep(self.settings.restock_every)
            for product in self.seeded.products:
                try:
                    view = await self.api.call("GET", f"/api/products/{product['id']}", auth=False)
                    for sku in view.get("skus", []):
                        if int(sku.get("stock", 0)) < self.settings.restock_below:
                            await self.api.call(
                                "PATCH",
                                f"/api/skus/{sku['id']}",
                                {"stock_delta": self.settings.restock_delta},
                            )
                except RECOVERABLE as exc:
                    logger.warning("demo show: restock of %s failed: %s", product["id"], exc)
