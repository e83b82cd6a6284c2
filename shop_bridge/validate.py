"""Strict validation of JSON request bodies: exact types, bounds, no unknown fields.

Every refusal is a :class:`~shop_bridge.errors.ShopError` (400 ``invalid_field`` naming the
field and the reason), never a ``KeyError`` or ``TypeError`` escaping as a 500.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from shop_bridge.errors import ShopError, invalid

MAX_INT: Final = 2**53 - 1
"""Largest integer accepted anywhere (exact in JavaScript clients and in float JSON parsers)."""

ID_RE: Final = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
"""Identifiers from outside: users, broadcasts, rooms, idempotency keys."""

ROOM_RE: Final = re.compile(r"^[A-Za-z0-9_.:@/-]{1,128}$")
"""Danmaku room names (``live/<stream>`` by default)."""

_MISSING: Final = object()


class Body:
    """Typed accessors over a decoded JSON object; unknown keys are refused up front."""

    def __init__(self, data: Mapping[str, Any], allowed: Iterable[str], where: str = "") -> None:
        if not isinstance(data, Mapping):
            raise invalid(where or "body", "must be a JSON object")
        allowed_set = set(allowed)
        unknown = sorted(str(k) for k in data if k not in allowed_set)
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:5])
            raise ShopError(
                400,
                "unknown_field",
                f"{where + ': ' if where else ''}unknown field(s) {shown}; "
                f"allowed: {', '.join(sorted(allowed_set))}",
            )
        self.data = data
        self.where = where

    def _name(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def has(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def _get(self, name: str, default: Any) -> Any:
        if name not in self.data or self.data[name] is None:
            if default is _MISSING:
                raise ShopError(
                    400, "missing_field", f"{self._name(name)}: is required", field=name
                )
            return default
        return self.data[name]

    def integer(self, name: str, *, lo: int = 0, hi: int = MAX_INT, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        return check_int(self._name(name), value, lo, hi)

    def text(
        self,
        name: str,
        *,
        max_len: int = 200,
        min_len: int = 1,
        pattern: re.Pattern[str] | None = None,
        default: Any = _MISSING,
    ) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        return check_str(self._name(name), value, max_len, min_len, pattern)

    def ident(self, name: str, default: Any = _MISSING) -> Any:
        return self.text(name, max_len=64, pattern=ID_RE, default=default)

    def boolean(self, name: str, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, bool):
            raise invalid(self._name(name), "must be true or false")
        return value

    def str_list(self, name: str, *, max_items: int, max_len: int, default: Any = _MISSING) -> Any:
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, list):
            raise invalid(self._name(name), "must be a list of strings")
        if len(value) > max_items:
            raise invalid(self._name(name), f"at most {max_items} items")
        return [check_str(f"{self._name(name)}[{i}]", v, max_len, 1) for i, v in enumerate(value)]

    def objects(self, name: str, *, max_items: int, min_items: int = 0) -> list[Mapping[str, Any]]:
        value = self._get(name, _MISSING)
        if not isinstance(value, list):
            raise invalid(self._name(name), "must be a list of objects")
        if not min_items <= len(value) <= max_items:
            raise invalid(self._name(name), f"must have {min_items} to {max_items} items")
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise invalid(f"{self._name(name)}[{i}]", "must be a JSON object")
        return value

    def specs(self, name: str, *, max_items: int = 10, default: Any = _MISSING) -> Any:
        """A flat ``{"colour": "red", "size": "XL"}`` mapping of short strings."""
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        if not isinstance(value, Mapping):
            raise invalid(self._name(name), 'must be an object like {"colour": "red"}')
        if len(value) > max_items:
            raise invalid(self._name(name), f"at most {max_items} entries")
        out: dict[str, str] = {}
        for k, v in value.items():
            check_str(f"{self._name(name)} key", k, 32, 1)
            out[k] = check_str(f"{self._name(name)}.{k}", v, 64, 1)
        return out

    def time_ms(self, name: str, default: Any = _MISSING) -> Any:
        """An ISO 8601 time with an offset (``2025-06-18T20:00:00+08:00``) or epoch ms."""
        value = self._get(name, default)
        if value is default and default is not _MISSING:
            return value
        return parse_time_ms(self._name(name), value)


def check_int(name: str, value: Any, lo: int = 0, hi: int = MAX_INT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"must be an integer, got {_json_type(value)}")
    if not lo <= value <= hi:
        raise invalid(name, f"must be between {lo} and {hi}, got {value}")
    return int(value)


def _json_type(value: Any) -> str:
    return {
        bool: "boolean",
        float: "number with a fraction",
        str: "string",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def check_str(
    name: str,
    value: Any,
    max_len: int = 200,
    min_len: int = 1,
    pattern: re.Pattern[str] | None = None,
) -> str:
    if not isinstance(value, str):
        raise invalid(name, f"must be a string, got {_json_type(value)}")
    if not min_len <= len(value) <= max_len:
        raise invalid(name, f"must be {min_len} to {max_len} characters")
    if any(ord(c) < 32 and c not in "\n\t" for c in value):
        raise invalid(name, "must not contain control characters")
    if pattern is not None and not pattern.match(value):
        raise invalid(name, f"must match {pattern.pattern}")
    return value


def parse_time_ms(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return check_int(name, value, 0, 10**14)
    if not isinstance(value, str) or len(value) > 40:
        raise invalid(name, "must be an ISO 8601 time with offset or epoch milliseconds")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(name, f"not an ISO 8601 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise invalid(name, "needs a UTC offset, e.g. 2025-06-18T20:00:00+08:00")
    return int(parsed.timestamp() * 1000)


def check_ident(name: str, value: Any) -> str:
    return check_str(name, value, 64, 1, ID_RE)


def query_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(name, f"must be an integer, got {raw[:20]!r}") from None
    return check_int(name, value, lo, hi)
