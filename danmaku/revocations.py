"""Staff hub tokens that are void: control's ``account.revoked`` (password changed, account
disabled, demoted or deleted) makes every hub token of ``staff:<id>`` issued before then
refused on every node, and disconnects that account's sockets here.

Hub tokens are stateless (signed, with an expiry), so revocation is a marker in Redis:
``revoked:staff:<id>`` = when, kept a little longer than the longest staff token lives
(``STAFF_TOKEN_MAX_S``). Each node that gets the event writes it (the same value), so a
join on any node is checked. Viewer tokens (issued by the app backend, short-lived) are not
covered: the backend stops issuing them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from core.tokens import Viewer
from danmaku.keys import REDIS_TIMEOUT, Keys

__all__ = ["STAFF_PREFIX", "STAFF_TOKEN_MAX_S", "Revocations"]

logger = logging.getLogger(__name__)

STAFF_PREFIX = "staff:"
"""The ``uid`` of a staff member's hub token is ``staff:<account id>`` (control mints it)."""
STAFF_TOKEN_MAX_S = 24 * 3600
"""The longest a staff hub token lives (control issues them for 12 h); the marker outlives it."""


class Revocations:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def key(self, uid: str) -> str:
        return f"{self.keys.prefix}revoked:{uid}"

    async def revoke(self, account_id: int, at: float) -> None:
        uid = f"{STAFF_PREFIX}{account_id}"
        await asyncio.wait_for(
            self.redis.set(self.key(uid), f"{at:.3f}", ex=STAFF_TOKEN_MAX_S + 3600),
            REDIS_TIMEOUT,
        )

    async def refused(self, viewer: Viewer) -> bool:
        """True if ``viewer``'s token was issued before its staff account was revoked (a
        token without an issue time counts as issued before)."""
        if not viewer.user_id.startswith(STAFF_PREFIX):
            return False
        raw = await asyncio.wait_for(self.redis.get(self.key(viewer.user_id)), REDIS_TIMEOUT)
        if raw is None:
            return False
        revoked_at = float(raw)
        return viewer.issued is None or viewer.issued <= revoked_at
