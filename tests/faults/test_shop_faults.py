"""Fault drills 1 and 2 at CI size (bench/faults/ runs them at full load): a real
``berrylive serve`` killed with SIGKILL mid flash sale, and its Redis (an external one with
an append-only file, restarted as it was or from an older copy) or PostgreSQL killed.

Invariants only (no timing): every buyer told "ordered" has that order in the database, no
buyer over the limit, no more units held than the sale had, Redis stock + orders = the
sale's stock; for a store fault, buys work again without a restart of berrylive.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import server_kill, store_kill


def _check(figures: dict) -> None:
    assert not figures["failures"], figures
    assert figures["oversold"] <= 0 and figures["lost"] == 0, figures
    # the drill did what it says: buyers were cut off, and the sale sold out
    assert figures["redis_stock"] == 0 and figures["units_held"] == figures["sale_stock"], figures


async def test_kill9_of_the_server_mid_sale_loses_no_order(tmp_path: Path) -> None:
    figures = await server_kill.drill(
        tmp_path, rate=300, seconds=4, kill_at=1.5, stock=900, connections=30
    )
    _check(figures)
    assert figures["answers"].get("201", 0) > 0, figures
    unknown = figures["answers"].get("0", 0) + figures["answers"].get("-1", 0)
    assert unknown > 0, f"the kill cut off no buyer: {figures}"


@pytest.mark.parametrize("fault", ["redis", "redis-rollback", "postgres"])
async def test_a_store_killed_mid_sale_loses_no_order_and_buys_resume(
    tmp_path: Path, fault: str
) -> None:
    figures = await store_kill.drill(
        tmp_path, fault, rate=200, seconds=5, fault_at=2, stock=900, connections=20,
        resume_timeout=30,
    )  # fmt: skip
    _check(figures)
    assert figures["buys_resumed_after_s"] is not None and not figures["node_restarted_by_drill"]


async def test_embedded_valkey_killed_mid_sale_loses_no_order(tmp_path: Path) -> None:
    """berrylive restarts its own valkey-server (core/redis.py): buys resume without a
    restart of berrylive (the shop rebuilds from the orders); nothing is lost."""
    figures = await store_kill.drill(
        tmp_path, "embedded", rate=200, seconds=4, fault_at=1.5, stock=700, connections=20,
        resume_timeout=30,
    )  # fmt: skip
    assert figures["lost"] == 0 and figures["oversold"] <= 0 and not figures["users_over_limit"]
    assert figures["redis_stock"] == 0 and figures["units_held"] == 700, figures
    assert figures["buys_resumed_after_s"] is not None, figures
    assert not figures["node_restarted_by_drill"] and not figures["failures"], figures
