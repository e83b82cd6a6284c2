"""A broadcast's id is control's integer id, everywhere the shop shows one.

In the shop's tables it is stored as text (``shop_*.broadcast_id``, a column older than
this rule, where ``""`` means "no broadcast"); it crosses every edge as an integer: API
bodies and answers, query and path parameters, bus events and the webhooks that forward
them.

Inputs take the integer. For one release a decimal string (``"42"``, what the shop used to
answer) is still accepted and logged once per process as deprecated: clients written
against the old answers keep working while they move to the integer (docs/shop.md).
"""

from __future__ import annotations

import logging
from typing import Any

from shop_bridge.errors import ShopError
from shop_bridge.validate import MAX_INT, Body

logger = logging.getLogger(__name__)

__all__ = ["from_body", "from_path", "parse", "to_wire"]

_warned = False


def to_wire(stored: Any) -> int | None:
    """The stored id as the integer the API and events carry (``None``: no broadcast)."""
    if isinstance(stored, int) and not isinstance(stored, bool):
        return stored
    if isinstance(stored, str) and stored.isascii() and stored.isdigit() and len(stored) <= 16:
        return int(stored)
    return None


def parse(value: Any, field: str = "broadcast_id") -> str:
    """An id from a request (integer; a decimal string for one release) as stored."""
    global _warned
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_INT:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        number = int(value)
        if 1 <= number <= MAX_INT:
            if not _warned:
                _warned = True
                logger.warning(
                    "%s sent as a string (%r): deprecated, send the integer", field, value
                )
            return str(number)
    raise ShopError(
        400,
        "invalid_field",
        f"{field}: must be a broadcast's integer id (1..{MAX_INT}), got {str(value)[:40]!r}",
        field=field,
    )


def from_path(raw: str) -> str:
    """The broadcast of a URL path (control's integer id), as stored; 404 if not an id."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16 or int(raw) < 1:
        raise ShopError(404, "broadcast_not_found", f"no broadcast {raw[:20]!r}: ids are integers")
    return str(int(raw))


def from_body(body: Body, default: str | None = None) -> str:
    """The body's ``broadcast_id`` (an integer; a decimal string for one release), as
    stored; ``default`` when absent (None: it is required)."""
    if not body.has("broadcast_id"):
        if default is not None:
            return default
        raise ShopError(400, "missing_field", "broadcast_id: is required", field="broadcast_id")
    return parse(body.data["broadcast_id"])
