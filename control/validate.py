"""Checks of request input: every failure is a 400 with the field named in the message."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any, NoReturn

from core.http import ApiError

MIN_TIME = 946684800.0  # 2000-01-01
MAX_TIME = 4102444800.0  # 2100-01-01


def invalid(message: str, code: str = "invalid") -> NoReturn:
    raise ApiError(400, code, message)


def only(body: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        invalid(f"unknown field(s): {', '.join(unknown)}")


def text(
    body: dict[str, Any],
    name: str,
    *,
    required: bool = False,
    min_len: int = 0,
    max_len: int = 200,
    multiline: bool = False,
) -> str | None:
    if name not in body or body[name] is None:
        if required:
            invalid(f"{name} is required")
        return None
    value = body[name]
    if not isinstance(value, str):
        invalid(f"{name} must be a string")
    check_text(name, value, min_len=min_len, max_len=max_len, multiline=multiline)
    return value


def check_text(
    name: str, value: str, *, min_len: int = 0, max_len: int = 200, multiline: bool = False
) -> None:
    if len(value) < min_len:
        invalid(f"{name} must have at least {min_len} character(s)")
    if len(value) > max_len:
        invalid(f"{name} must have at most {max_len} characters")
    for ch in value:
        if multiline and ch in "\n\t":
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs"):
            invalid(f"{name} must not contain control characters")


def boolean(body: dict[str, Any], name: str) -> bool | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if not isinstance(value, bool):
        invalid(f"{name} must be true or false")
    return value


def integer(
    body: dict[str, Any], name: str, *, lo: int = 1, hi: int = 2**53, required: bool = False
) -> int | None:
    if name not in body or body[name] is None:
        if required:
            invalid(f"{name} is required")
        return None
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        invalid(f"{name} must be an integer")
    if not lo <= value <= hi:
        invalid(f"{name} must be between {lo} and {hi}")
    return value


def parse_time(name: str, value: Any) -> float:
    """An RFC 3339 date-time with a zone (``2026-11-22T20:00:00+08:00``) as Unix seconds."""
    if not isinstance(value, str) or len(value) > 64:
        invalid(f"{name} must be an RFC 3339 date-time string")
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        invalid(f"{name} must be an RFC 3339 date-time, e.g. 2026-11-22T20:00:00+08:00")
    if dt.tzinfo is None:
        invalid(f"{name} must include a time zone offset (or Z)")
    try:
        ts = dt.timestamp()
    except (OverflowError, ValueError, OSError):
        invalid(f"{name} is out of range")
    if not MIN_TIME <= ts <= MAX_TIME:
        invalid(f"{name} must be between the years 2000 and 2100")
    return ts


def time_field(body: dict[str, Any], name: str, *, required: bool = False) -> float | None:
    if name not in body or body[name] is None:
        if required:
            invalid(f"{name} is required")
        return None
    return parse_time(name, body[name])


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def query_int(query: Any, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        invalid(f"query parameter {name} must be an integer")
    if not lo <= value <= hi:
        invalid(f"query parameter {name} must be between {lo} and {hi}")
    return value


def path_id(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(404, "not_found", "no such object") from None
    if not 1 <= value <= 2**53:
        raise ApiError(404, "not_found", "no such object")
    return value
