"""What an operator asks for when creating a lottery, checked (``POST /api/danmaku/lotteries``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from danmaku.payloads import PayloadError, clean_text, parse_room

__all__ = ["MAX_PRIZES", "MAX_STOCK", "LotterySpec", "parse_spec"]

MAX_PRIZES = 20
MAX_STOCK = 100000
MAX_WATCH_S = 3600
PRIZE_KINDS = ("product", "coupon", "voucher", "manual")
"""``product``: a zero-price order of ``sku`` shipped to the winner's address; ``coupon``:
``coupon`` (fen or a code) or ``value_fen``; ``voucher``: an offline voucher whose
redemption code an operator checks once; ``manual``: handed out by the operators."""


@dataclass(frozen=True, slots=True)
class LotterySpec:
    room: str
    title: str
    prizes: tuple[dict[str, Any], ...]
    entry: str
    keyword: str
    window_s: float
    mode: str
    probability: float
    min_watch_s: int = 0
    """An entry needs this long in the room on the entering connection."""
    present_at_draw: bool = False
    """Only entrants still in the room when the window closes take part in the draw."""
    background_url: str = ""


def parse_spec(data: dict[str, Any], max_window_s: int) -> LotterySpec:
    """Validate an operator's ``create`` body (see docs/danmaku.md)."""
    room = parse_room(data.get("room"))
    title = data.get("title", "")
    if not isinstance(title, str) or len(title) > 100:
        raise PayloadError("bad_payload", "title must be a string of at most 100 characters")
    prizes_raw = data.get("prizes")
    if not isinstance(prizes_raw, list) or not 1 <= len(prizes_raw) <= MAX_PRIZES:
        raise PayloadError("bad_payload", f"prizes must be a list of 1..{MAX_PRIZES} objects")
    prizes: list[dict[str, Any]] = []
    for p in prizes_raw:
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            raise PayloadError("bad_payload", "each prize needs a name")
        stock = p.get("stock")
        if not isinstance(stock, int) or isinstance(stock, bool) or not 1 <= stock <= MAX_STOCK:
            raise PayloadError("bad_payload", f"prize stock must be an integer 1..{MAX_STOCK}")
        try:
            encoded = json.dumps(p)
            encoded.encode()
        except (TypeError, ValueError, UnicodeEncodeError):
            raise PayloadError("bad_payload", "prize must be plain JSON") from None
        if len(encoded) > 2000:
            raise PayloadError("bad_payload", "prize object too large")
        prize = dict(p)
        kind = prize.get("kind")
        if kind is None:
            if prize.get("sku") or prize.get("sku_id"):
                kind = "product"
            elif prize.get("coupon") or prize.get("value_fen"):
                kind = "coupon"
            else:
                kind = "manual"
        if kind not in PRIZE_KINDS:
            raise PayloadError("bad_payload", f"prize kind must be one of {', '.join(PRIZE_KINDS)}")
        if kind == "product" and not (prize.get("sku") or prize.get("sku_id")):
            raise PayloadError("bad_payload", "a product prize needs sku (a SKU id or code)")
        if kind == "coupon" and not (prize.get("coupon") or prize.get("value_fen")):
            raise PayloadError("bad_payload", "a coupon prize needs coupon or value_fen")
        prize["kind"] = kind
        if "image_url" in prize:
            prize["image_url"] = _image_url(prize["image_url"], "prize image_url")
        prizes.append(prize)
    entry = data.get("entry", "keyword")
    if entry not in ("keyword", "button"):
        raise PayloadError("bad_payload", "entry must be 'keyword' or 'button'")
    keyword = ""
    if entry == "keyword":
        kw = data.get("keyword")
        if not isinstance(kw, str):
            raise PayloadError("bad_payload", "keyword entry needs a keyword")
        keyword = clean_text(kw, 50)
    window = data.get("window_s", 60)
    if not isinstance(window, int | float) or isinstance(window, bool):
        raise PayloadError("bad_payload", "window_s must be a number")
    if not 1 <= window <= max_window_s:
        raise PayloadError("bad_payload", f"window_s must be 1..{max_window_s}")
    mode = data.get("mode", "timed")
    if mode not in ("timed", "instant"):
        raise PayloadError("bad_payload", "mode must be 'timed' or 'instant'")
    probability = data.get("probability", 1.0 if mode == "timed" else 0.1)
    if not isinstance(probability, int | float) or isinstance(probability, bool):
        raise PayloadError("bad_payload", "probability must be a number")
    if not 0 < probability <= 1:
        raise PayloadError("bad_payload", "probability must be in (0, 1]")
    watch = data.get("min_watch_s", 0)
    if not isinstance(watch, int) or isinstance(watch, bool) or not 0 <= watch <= MAX_WATCH_S:
        raise PayloadError("bad_payload", f"min_watch_s must be an integer 0..{MAX_WATCH_S}")
    present = data.get("present_at_draw", False)
    if not isinstance(present, bool):
        raise PayloadError("bad_payload", "present_at_draw must be true or false")
    if present and mode != "timed":
        raise PayloadError("bad_payload", "present_at_draw applies to timed lotteries only")
    background = data.get("background_url", "")
    if background:
        background = _image_url(background, "background_url")
    return LotterySpec(
        room=room,
        title=title,
        prizes=tuple(prizes),
        entry=entry,
        keyword=keyword,
        window_s=float(window),
        mode=mode,
        probability=float(probability),
        min_watch_s=watch,
        present_at_draw=present,
        background_url=background,
    )


def _image_url(value: object, name: str) -> str:
    """An image the viewer page shows: an https URL or a path on this server."""
    if not isinstance(value, str) or not 1 <= len(value) <= 500:
        raise PayloadError("bad_payload", f"{name} must be a URL of at most 500 characters")
    if not (value.startswith("https://") or (value.startswith("/") and not value.startswith("//"))):
        raise PayloadError("bad_payload", f"{name} must be an https:// URL or a /path")
    if any(c in value for c in '"<>\\ \n\r\t'):
        raise PayloadError("bad_payload", f"{name} has characters a URL cannot")
    return value
