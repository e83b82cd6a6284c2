"""Recipients of orders, sealed at rest with AES-GCM; only a shipping operator reads them.

**Sealing.** A recipient (name, phone, address: :mod:`shop_bridge.masking`) is stored as
one envelope ``v1.<key id>.<base64url(nonce | ciphertext | tag)>`` (AES-256-GCM from the
``cryptography`` package, a random 96-bit nonce per envelope, the record it belongs to as
associated data: an envelope copied onto another order does not open). Next to it the
row keeps a masked copy (``张*``, ``138****1234``, ``广东省深圳市****``) for lists,
events, logs and exports, which therefore never need the key. A database dump shows no
plaintext name, phone or address.

**Keys** (:func:`load_sealer`): without ``shop.recipient_key_file`` the key is derived from
the server secret with HKDF-SHA256 (key id ``s-`` + a fingerprint of the key). With a key
file, each line is ``<key id> <base64 of 32 random bytes>`` (``#`` comments); the **last**
line seals new data, every line (and the secret-derived key) opens old data: the key id
travels with each envelope.

**Rotation**: append a new line (``python -m shop_bridge.recipient_keys keygen <id>`` prints
one) to the key file on every node and restart them; new recipients are sealed with it at
once. Then re-seal what is stored (``python -m shop_bridge.recipient_keys rewrap``, or
:meth:`Recipients.rewrap`; safe to repeat, any node, while serving); when it reports 0
left under the old key, remove the old line. Before changing ``server.secret`` while
no key file is used, move to a key file and rewrap first (data sealed under a key no
node has any more cannot be opened: it answers ``recipient_unreadable``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select, update

from shop_bridge.context import ShopContext
from shop_bridge.errors import ShopError, conflict, not_found
from shop_bridge.masking import Recipient, mask
from shop_bridge.models import ADDRESSES, ORDERS
from shop_bridge.state import OrderState

__all__ = [
    "KeyError_",
    "Recipients",
    "Sealer",
    "load_sealer",
    "masked_of",
    "order_aad",
    "rewrap",
]

logger = logging.getLogger(__name__)

VERSION = "v1"
KID_RE = re.compile(r"[A-Za-z0-9_-]{1,16}")
NONCE = 12
HKDF_INFO = b"berrylive.shop.recipient.v1"

EDITABLE = (OrderState.PENDING_PAYMENT.value, OrderState.PAID.value)
"""States in which an order's recipient may be given or changed (before shipping)."""


class KeyError_(ValueError):
    """An envelope cannot be opened: unknown key id, tampered, or not an envelope."""


def key_id(key: bytes, prefix: str = "k-") -> str:
    """A key's public fingerprint (never reveals the key)."""
    return prefix + hashlib.sha256(b"berrylive.kid" + key).hexdigest()[:8]


def derive_from_secret(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"berrylive.shop", info=HKDF_INFO)
    return hkdf.derive(secret.encode())


def parse_key_file(text: str) -> list[tuple[str, bytes]]:
    """The ``(key id, key)`` lines of a key file, in order (raises ValueError)."""
    out: list[tuple[str, bytes]] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not KID_RE.fullmatch(parts[0]):
            raise ValueError(
                f"line {n}: expected '<key id> <base64 key>' (id: 1..16 of A-Za-z0-9_-)"
            )
        try:
            key = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"line {n}: key is not base64") from None
        if len(key) != 32:
            raise ValueError(f"line {n}: key must be 32 bytes (AES-256), got {len(key)}")
        if any(kid == parts[0] for kid, _ in out):
            raise ValueError(f"line {n}: key id {parts[0]} given twice")
        out.append((parts[0], key))
    if not out:
        raise ValueError("no key in the key file")
    return out


class Sealer:
    """AES-GCM envelopes under a current key, opening any known key's envelopes."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a sealer needs at least one key")
        self._keys = {kid: AESGCM(key) for kid, key in keys}
        self.current = keys[-1][0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def seal(self, plain: bytes, aad: bytes) -> str:
        nonce = os.urandom(NONCE)
        ct = self._keys[self.current].encrypt(nonce, plain, aad)
        body = base64.urlsafe_b64encode(nonce + ct).rstrip(b"=").decode("ascii")
        return f"{VERSION}.{self.current}.{body}"

    def open(self, envelope: str, aad: bytes) -> bytes:
        parts = envelope.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise KeyError_("not a sealed value")
        aes = self._keys.get(parts[1])
        if aes is None:
            raise KeyError_(f"sealed under key {parts[1]}, which this node does not have")
        try:
            raw = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
            return aes.decrypt(raw[:NONCE], raw[NONCE:], aad)
        except (binascii.Error, ValueError, InvalidTag):
            raise KeyError_("sealed value does not open (tampered or another record's)") from None

    @staticmethod
    def kid_of(envelope: str) -> str:
        parts = envelope.split(".")
        return parts[1] if len(parts) == 3 else ""

    def seal_recipient(self, r: Recipient, aad: bytes) -> str:
        plain = json.dumps(r.as_dict(), ensure_ascii=False, separators=(",", ":")).encode()
        return self.seal(plain, aad)

    def open_recipient(self, envelope: str, aad: bytes) -> Recipient:
        data = json.loads(self.open(envelope, aad))
        return Recipient(str(data["name"]), str(data["phone"]), str(data["address"]))


def load_sealer(key_file: str, secret: str) -> Sealer:
    """The sealer of this node: the key file's keys (last one current) and the key derived
    from the server secret (current when there is no key file)."""
    keys: list[tuple[str, bytes]] = []
    if secret:
        derived = derive_from_secret(secret)
        keys.append((key_id(derived, "s-"), derived))
    if key_file:
        keys += parse_key_file(Path(key_file).read_text(encoding="utf-8"))
    if not keys:
        raise ValueError("no key for recipients: set server.secret or shop.recipient_key_file")
    return Sealer(keys)


def order_aad(order_id: str) -> bytes:
    return f"shop_orders.recipient:{order_id}".encode()


def address_aad(user_id: str) -> bytes:
    return f"shop_addresses:{user_id}".encode()


def masked_of(row: dict[str, Any], column: str = "recipient_masked") -> dict[str, str] | None:
    """The masked recipient stored in a row (None when there is none)."""
    raw = row.get(column)
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None


def sealed_columns(sealer: Sealer, order_id: str, r: Recipient) -> dict[str, Any]:
    """The order columns holding ``r``: the envelope and the masked copy."""
    return {
        "recipient": sealer.seal_recipient(r, order_aad(order_id)),
        "recipient_masked": json.dumps(mask(r), ensure_ascii=False, separators=(",", ":")),
    }


@dataclass(frozen=True, slots=True)
class RewrapResult:
    rewrapped: int
    left: int
    unreadable: int


class Recipients:
    """Orders' recipients: giving one, revealing it to a shipping operator, re-sealing."""

    def __init__(self, ctx: ShopContext, sealer: Sealer) -> None:
        self.ctx = ctx
        self.sealer = sealer
        self.required: bool = getattr(ctx.config, "require_recipient", True)

    def columns_for(self, r: Recipient | None) -> Callable[[str], dict[str, Any]] | None:
        """What a new order with recipient ``r`` stores next to its columns (a function of
        its id, which seals with that id as associated data); None without a recipient."""
        if r is None:
            return None
        sealer = self.sealer
        return lambda order_id: sealed_columns(sealer, order_id, r)

    async def set_for_order(
        self, order: dict[str, Any], r: Recipient, actor: str
    ) -> dict[str, Any]:
        """Give or change the recipient of an order not shipped yet (409 otherwise)."""
        if order["state"] not in EDITABLE:
            raise conflict(
                "recipient_locked",
                f"the recipient of a {order['state']} order cannot change any more",
                state=order["state"],
            )
        cols = sealed_columns(self.sealer, order["id"], r)
        async with self.ctx.engine.begin() as conn:
            res = await conn.execute(
                update(ORDERS)
                .where(ORDERS.c.id == order["id"], ORDERS.c.state.in_(EDITABLE))
                .values(**cols, updated_ms=self.ctx.now_ms())
            )
            if res.rowcount != 1:
                raise conflict("recipient_locked", "the order moved on meanwhile; read it again")
        logger.info("order %s: recipient set by %s", order["id"], actor)
        return {**order, **cols}

    def check_payable(self, order: dict[str, Any]) -> None:
        """409 ``recipient_required`` for an order nobody can ship (no recipient yet)."""
        if self.required and not order.get("recipient"):
            raise conflict(
                "recipient_required",
                "give the recipient first: PUT /api/orders/{id}/recipient with "
                "{name, phone, address} or {address_id}",
            )

    def reveal(self, order: dict[str, Any], actor: str) -> dict[str, str] | None:
        """The plaintext recipient for a shipping operator (logged without the data)."""
        env = order.get("recipient")
        if not env:
            return None
        try:
            r = self.sealer.open_recipient(env, order_aad(order["id"]))
        except KeyError_ as exc:
            logger.error("order %s: recipient unreadable: %s", order["id"], exc)
            raise ShopError(500, "recipient_unreadable", str(exc)) from None
        logger.info("order %s: recipient revealed to %s", order["id"], actor)
        return r.as_dict()

    async def order_for(self, order_id: str) -> dict[str, Any]:
        order = await self.ctx.book.get(order_id)
        if order is None:
            raise not_found("order", order_id)
        return order

    async def rewrap(self, batch: int = 500) -> RewrapResult:
        """:func:`rewrap` with this shop's engine and sealer."""
        return await rewrap(self.ctx.engine, self.sealer, batch)


async def rewrap(engine: Any, sealer: Sealer, batch: int = 500) -> RewrapResult:
    """Re-seal every stored recipient (orders and address books) not sealed under the
    current key. Safe to repeat and to run on several nodes at once: a row is rewritten
    only if it still holds the envelope read."""
    done = left = bad = 0
    current = f"{VERSION}.{sealer.current}.%"
    for table, col in ((ORDERS, "recipient"), (ADDRESSES, "sealed")):
        column = table.c[col]
        stale = column.is_not(None) & ~column.like(current)
        extra = [table.c.user_id] if table is ADDRESSES else []
        last: Any = None
        while True:
            q = select(table.c.id, column, *extra).where(stale)
            if last is not None:
                q = q.where(table.c.id > last)
            async with engine.connect() as conn:
                rows = [
                    dict(r)
                    for r in (await conn.execute(q.order_by(table.c.id).limit(batch))).mappings()
                ]
            if not rows:
                break
            last = rows[-1]["id"]
            for row in rows:
                aad = address_aad(row["user_id"]) if table is ADDRESSES else order_aad(row["id"])
                try:
                    plain = sealer.open(row[col], aad)
                except KeyError_:
                    bad += 1
                    continue
                async with engine.begin() as conn:
                    res = await conn.execute(
                        update(table)
                        .where(table.c.id == row["id"], column == row[col])
                        .values({col: sealer.seal(plain, aad)})
                    )
                done += res.rowcount
        async with engine.connect() as conn:
            left += len((await conn.execute(select(table.c.id).where(stale))).all())
    logger.info(
        "recipients re-sealed under %s: %d; %d left (%d unreadable)",
        sealer.current,
        done,
        left,
        bad,
    )
    return RewrapResult(done, left, bad)
