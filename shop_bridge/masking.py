"""Checking and masking a recipient: name, phone, address (pure functions, no I/O).

:func:`parse_recipient` turns a request's ``recipient`` object into a :class:`Recipient`
or raises :class:`RecipientError` naming the field and why (the API answers 400); the
phone is normalised (a Chinese mobile number to its 11 digits, an international one to
E.164 ``+<country><number>``). :func:`mask` gives what everyone but a shipping operator
sees: ``张*``, ``138****1234``, the address's province/city prefix then ``****``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ADDRESS",
    "MAX_NAME",
    "Recipient",
    "RecipientError",
    "mask",
    "mask_address",
    "mask_name",
    "mask_phone",
    "normalise_phone",
    "parse_recipient",
]

MAX_NAME = 50
MAX_ADDRESS = 200
MIN_ADDRESS = 5

CN_MOBILE = re.compile(r"(?:\+?86)?(1[3-9]\d{9})")
E164 = re.compile(r"\+([1-9]\d{6,14})")
PHONE_SEPARATORS = re.compile(r"[\s\-().]")

# administrative suffixes that end a province / city part of a Chinese address, longest first
_ADMIN_MARKS = ("特别行政区", "自治区", "自治州", "地区", "省", "市", "州", "盟")
_MASK = "****"


class RecipientError(ValueError):
    """A recipient field is missing or malformed; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Recipient:
    name: str
    phone: str
    address: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "phone": self.phone, "address": self.address}


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in text)


def _text(data: dict[str, Any], name: str, lo: int, hi: int, prefix: str) -> str:
    field = f"{prefix}{name}"
    value = data.get(name)
    if value is None:
        raise RecipientError(field, "is required")
    if not isinstance(value, str):
        raise RecipientError(field, "must be a string")
    value = unicodedata.normalize("NFC", " ".join(value.split()))
    if not lo <= len(value) <= hi:
        raise RecipientError(field, f"must be {lo}..{hi} characters")
    if _has_control(value):
        raise RecipientError(field, "must not contain control characters")
    return value


def normalise_phone(raw: str, field: str = "phone") -> str:
    """A Chinese mobile number as its 11 digits (a ``+86``/``86`` prefix dropped), or an
    international number as E.164 (``+`` then 7..15 digits, first not 0)."""
    compact = PHONE_SEPARATORS.sub("", raw)
    m = CN_MOBILE.fullmatch(compact)
    if m is not None:
        return m.group(1)
    if E164.fullmatch(compact) is not None:
        return compact
    if compact.isdigit():
        raise RecipientError(
            field, "not a Chinese mobile number (11 digits, 13x-19x); write others as +<country>..."
        )
    raise RecipientError(field, "must be a mobile number: 11 digits, or + and 7..15 digits")


def parse_recipient(data: object, prefix: str = "recipient.") -> Recipient:
    """The recipient of a request body (``{"name", "phone", "address"}``, nothing else)."""
    where = prefix.rstrip(".") or "recipient"
    if not isinstance(data, dict):
        raise RecipientError(where, "must be an object with name, phone and address")
    extra = set(data) - {"name", "phone", "address"}
    if extra:
        raise RecipientError(f"{prefix}{sorted(extra)[0]}", "unknown field")
    name = _text(data, "name", 1, MAX_NAME, prefix)
    phone_raw = _text(data, "phone", 7, 24, prefix)
    address = _text(data, "address", MIN_ADDRESS, MAX_ADDRESS, prefix)
    return Recipient(name, normalise_phone(phone_raw, f"{prefix}phone"), address)


def mask_name(name: str) -> str:
    """The first character, then one star per other character (at most three)."""
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * min(len(name) - 1, 3)


def mask_phone(phone: str) -> str:
    """``138****1234``; an international number keeps ``+`` and its first two digits."""
    if phone.startswith("+"):  # at least 4 digits hidden, at most 6 shown
        digits = phone[1:]
        n = len(digits)
        hidden = max(4, n - 6)
        tail = min(4, n - hidden)
        head = n - hidden - tail
        return "+" + digits[:head] + "*" * hidden + digits[n - tail :]
    if len(phone) <= 7:
        return phone[:1] + "*" * (len(phone) - 1)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def mask_address(address: str) -> str:
    """The province / city part of a Chinese address then ``****`` (``广东省深圳市****``);
    a comma-separated (western) address keeps its last two parts, the city and region
    (``****, Springfield, IL``); anything else keeps its first third (at most 6 chars)."""
    head = _admin_prefix(address)
    if head:
        return head + _MASK
    parts = [p.strip() for p in re.split(r"[,，]", address) if p.strip()]
    if len(parts) >= 3:
        return _MASK + ", " + ", ".join(parts[-2:])
    keep = min(6, len(address) // 3)
    return address[:keep] + _MASK


def _admin_prefix(address: str) -> str:
    """Up to two administrative levels (province, city) from the first 14 characters."""
    end = 0
    levels = 0
    window = address[:14]
    while levels < 2:
        best: tuple[int, int] | None = None
        for mark in _ADMIN_MARKS:
            i = window.find(mark, end + 1 if end else 1)  # a mark is never the first char
            if i >= 0 and (best is None or i < best[0]):
                best = (i, len(mark))
        if best is None:
            break
        end = best[0] + best[1]
        while end < len(window) and window[end] in "市省":  # 广州市: 州 then 市, one level
            end += 1
        levels += 1
    if end >= len(address):  # nothing left to hide: keep less
        return address[: max(1, len(address) // 3)] if levels else ""
    return address[:end]


def mask(r: Recipient) -> dict[str, str]:
    """What a list, an event, a log or an export shows of a recipient."""
    return {
        "name": mask_name(r.name),
        "phone": mask_phone(r.phone),
        "address": mask_address(r.address),
    }
