"""Reading broadcast states from control's records (the truth when an event was missed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from control.models import broadcasts

BroadcastStates = Callable[[list[int]], Awaitable[dict[int, str]]]
"""``ids -> {id: state}``; an id missing from the answer has no record (deleted)."""

WITHHELD_STATES = frozenset({"banned"})
"""Broadcast states whose replays are not public."""


def db_states(engine: AsyncEngine) -> BroadcastStates:
    async def states(ids: list[int]) -> dict[int, str]:
        query = sa.select(broadcasts.c.id, broadcasts.c.state).where(broadcasts.c.id.in_(ids))
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {int(row.id): str(row.state) for row in rows}

    return states
