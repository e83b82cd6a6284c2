"""The broadcast lifecycle: the pure table, and the service driven by bus events."""

from __future__ import annotations

import asyncio
import time

import pytest

from control.api import CONTROL
from control.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    State,
    Trigger,
    allowed,
    can,
    next_state,
)
from ingest import auth as ingest_auth


def test_table_is_explicit_and_illegal_moves_raise() -> None:
    assert next_state(State.SCHEDULED, Trigger.PUBLISH) is State.LIVE
    assert next_state(State.LIVE, Trigger.UNPUBLISH) is State.INTERRUPTED
    assert next_state(State.INTERRUPTED, Trigger.PUBLISH) is State.LIVE
    assert next_state(State.INTERRUPTED, Trigger.GRACE_EXPIRED) is State.ENDED
    assert next_state(State.ENDED, Trigger.REPLAY_READY) is State.REPLAY_READY
    for terminal in (State.CANCELLED, State.BANNED):
        assert allowed(terminal) == []
        for trigger in Trigger:
            with pytest.raises(IllegalTransition):
                next_state(terminal, trigger)
    with pytest.raises(IllegalTransition, match="cannot cancel a broadcast that is live"):
        next_state(State.LIVE, Trigger.CANCEL)
    assert not can(State.ENDED, Trigger.PUBLISH)
    # every state but the terminal ones has a way out; every target is a state
    for state in State:
        if state not in (State.CANCELLED, State.BANNED):
            assert allowed(state), state
    assert set(TRANSITIONS.values()) <= set(State)


async def wait_state(staff, bid: int, state: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, b = await staff.api.call("GET", f"/api/broadcasts/{bid}", staff.operator)
        assert status == 200
        if b["state"] == state:
            return b
        if time.monotonic() > deadline:
            raise AssertionError(f"broadcast {bid} is {b['state']}, expected {state}")
        await asyncio.sleep(0.05)


async def test_publish_events_drive_the_lifecycle(staff) -> None:
    bus = staff.server.runtime.bus
    seen: list[tuple[str, dict]] = []
    bus.subscribe("broadcast.*", lambda e: seen.append((e.topic, e.data)))
    kicks: list[dict] = []
    bus.subscribe("stream.kick", lambda e: kicks.append(e.data))

    b = await staff.create_broadcast(anchor_id=staff.ids["anchor"])
    status, _ = await staff.api.call(
        "POST",
        f"/api/broadcasts/{b['id']}/reminders",
        staff.operator,
        json={"subscriber": "openid-1"},
    )
    assert status == 201
    app, stream = b["app"], b["stream"]
    await bus.publish(
        "stream.published",
        {"app": app, "stream": stream, "node": "n", "client_ip": "10.0.0.1", "video": {}},
    )
    live = await wait_state(staff, b["id"], "live")
    assert live["started_at"] is not None
    await bus.publish("stream.unpublished", {"app": app, "stream": stream, "reason": "closed"})
    await wait_state(staff, b["id"], "interrupted")
    # the anchor comes back within the grace period
    await bus.publish("stream.published", {"app": app, "stream": stream, "client_ip": "10.0.0.2"})
    await wait_state(staff, b["id"], "live")
    # a takeover does not interrupt
    await bus.publish("stream.unpublished", {"app": app, "stream": stream, "reason": "takeover"})
    await bus.drain()
    await wait_state(staff, b["id"], "live")
    # dropped for good: ended after the grace (1.5 s in tests)
    t0 = time.monotonic()
    await bus.publish("stream.unpublished", {"app": app, "stream": stream, "reason": "error"})
    await wait_state(staff, b["id"], "interrupted")
    ended = await wait_state(staff, b["id"], "ended")
    assert time.monotonic() - t0 >= 1.0
    assert ended["ended_at"] is not None
    # the push key is closed: old URLs are refused by ingest
    kv = await ingest_auth.current_key_version(staff.server.runtime.redis, app, stream)
    assert kv is not None and kv.startswith("x")
    status, body = await staff.api.call("GET", f"/api/broadcasts/{b['id']}/push", staff.operator)
    assert status == 409 and body["error"]["code"] == "conflict"
    # a publisher on an ended broadcast is cut
    await bus.publish("stream.published", {"app": app, "stream": stream})
    await bus.drain()
    assert kicks and kicks[-1]["stream"] == stream
    # replay.ready from the recorder
    await bus.publish(
        "replay.ready", {"app": app, "stream": stream, "url": "/replay/b1/index.m3u8"}
    )
    ready = await wait_state(staff, b["id"], "replay_ready")
    assert ready["replay_url"] == "/replay/b1/index.m3u8"

    await bus.drain()
    topics = [t for t, _ in seen]
    assert topics[:1] == ["broadcast.created"]
    for topic in (
        "broadcast.live",
        "broadcast.interrupted",
        "broadcast.ended",
        "broadcast.replay_ready",
        "broadcast.reminder",
    ):
        assert topic in topics, topics
    reminder = next(d for t, d in seen if t == "broadcast.reminder")
    assert reminder["subscribers"] == ["openid-1"]
    assert next(d for t, d in seen if t == "broadcast.live")["previous"] == "scheduled"

    status, hist = await staff.api.call(
        "GET", f"/api/broadcasts/{b['id']}/history?limit=100", staff.anchor
    )
    assert status == 200
    states = [h["state"] for h in hist["items"]]
    assert states == [
        "scheduled",
        "live",
        "interrupted",
        "live",
        "interrupted",
        "ended",
        "replay_ready",
    ]
    assert all(h["at"] for h in hist["items"])
    assert [h["trigger"] for h in hist["items"]][-2] == "grace_expired"


async def test_operator_actions_and_conflicts(staff) -> None:
    bus = staff.server.runtime.bus
    kicks: list[dict] = []
    bus.subscribe("stream.kick", lambda e: kicks.append(e.data))
    b = await staff.create_broadcast()
    bid = b["id"]
    status, body = await staff.api.call("POST", f"/api/broadcasts/{bid}/end", staff.operator)
    assert status == 409 and body["error"]["code"] == "illegal_transition"
    status, body = await staff.api.call(
        "POST", f"/api/broadcasts/{bid}/cancel", staff.operator, json={"reason": "rain"}
    )
    assert status == 200 and body["state"] == "cancelled" and body["actions"] == []
    status, body = await staff.api.call(
        "PATCH", f"/api/broadcasts/{bid}", staff.operator, json={"title": "x"}
    )
    assert status == 409

    b2 = await staff.create_broadcast()
    await bus.publish("stream.published", {"app": b2["app"], "stream": b2["stream"]})
    await wait_state(staff, b2["id"], "live")
    status, body = await staff.api.call(
        "POST", f"/api/broadcasts/{b2['id']}/ban", staff.operator, json={"reason": "fake goods"}
    )
    assert status == 200 and body["state"] == "banned" and body["ban_reason"] == "fake goods"
    await bus.drain()
    assert any(k["stream"] == b2["stream"] for k in kicks)
    status, body = await staff.api.call("DELETE", f"/api/broadcasts/{b2['id']}", staff.operator)
    assert status == 409


async def test_two_nodes_apply_an_event_once(staff) -> None:
    """The compare-and-set on the state: concurrent identical triggers move it once."""
    svc = staff.server.app[CONTROL].broadcasts
    b = await staff.create_broadcast()
    results = await asyncio.gather(
        *(svc.apply(b["id"], Trigger.PUBLISH) for _ in range(5)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if r not in ok)
    hist, _ = await svc.history(b["id"], 100, 0)
    assert [h.state for h in hist] == [State.SCHEDULED, State.LIVE]
