"""The auditable draw of a lottery: pure functions, no I/O.

Fairness protocol (anyone can check it with :func:`verify`):

1. On creation the hub draws a random 256-bit ``seed`` and publishes only its
   ``commitment = sha256(seed)`` to the room.
2. Entries: one per user (a Redis set). ``instant`` mode decides each entry at once:
   the entry wins when ``int(sha1(seed ":" user_id)[:8], 16) / 16**8 < probability`` and
   stock is left; the first ``stock`` winning tickets in entry order win.
3. ``timed`` mode: when the window closes the entrant list is frozen and
   ``entrants_hash = sha256("\\n".join(sorted(user_ids)))`` is published, then winners are
   drawn by :func:`draw_winners` (sha256 of ``seed:entrants_hash:i`` picks an index into
   the remaining sorted list, k times), and the seed is revealed.
4. The n-th winner (0-based) gets the prize whose cumulative stock covers n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

__all__ = [
    "commitment",
    "draw_winners",
    "entrants_digest",
    "instant_ticket_wins",
    "prize_index",
    "verify",
]


def commitment(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def entrants_digest(entrants: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(entrants))).encode()).hexdigest()


def draw_winners(seed: str, entrants: Sequence[str], k: int) -> list[str]:
    """Deterministic: the same seed and entrant set always give the same winners, in order."""
    pool = sorted(set(entrants))
    digest = entrants_digest(pool)
    winners: list[str] = []
    for i in range(min(k, len(pool))):
        h = hashlib.sha256(f"{seed}:{digest}:{i}".encode()).digest()
        winners.append(pool.pop(int.from_bytes(h, "big") % len(pool)))
    return winners


def instant_ticket_wins(seed: str, user_id: str, probability: float) -> bool:
    h = hashlib.sha1(f"{seed}:{user_id}".encode()).hexdigest()
    return int(h[:8], 16) / 16**8 < probability


def prize_index(n: int, stocks: Sequence[int]) -> int:
    for i, stock in enumerate(stocks):
        if n < stock:
            return i
        n -= stock
    raise ValueError("winner number beyond total stock")


def verify(audit_data: dict[str, Any]) -> list[str]:
    """Recompute the winners from published audit data; raises ValueError if it does not hold."""
    seed = audit_data["seed"]
    if commitment(seed) != audit_data["commitment"]:
        raise ValueError("seed does not match the commitment")
    total = sum(int(p["stock"]) for p in audit_data["prizes"])
    if audit_data["mode"] == "timed":
        entrants = list(audit_data["entrants"])
        if entrants_digest(entrants) != audit_data["entrants_hash"]:
            raise ValueError("entrant list does not match the published hash")
        return draw_winners(seed, entrants, total)
    p = float(audit_data["probability"])
    winners = [u for u in audit_data["entry_order"] if instant_ticket_wins(seed, u, p)]
    return winners[:total]
