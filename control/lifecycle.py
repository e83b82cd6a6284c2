"""The broadcast lifecycle: one enum, one explicit transition table; an illegal move raises.

::

    scheduled --publish--> live --unpublish--> interrupted --grace_expired--> ended
    scheduled --cancel--> cancelled      interrupted --publish--> live
    live, interrupted --end--> ended     ended --replay_ready--> replay_ready
    scheduled, live, interrupted, ended, replay_ready --ban--> banned

Pure: no I/O, no clock. :class:`control.broadcasts.BroadcastService` applies a transition
with a compare-and-set on the stored state, timestamps it, and publishes
``broadcast.<new state>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class State(StrEnum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    INTERRUPTED = "interrupted"
    ENDED = "ended"
    REPLAY_READY = "replay_ready"
    CANCELLED = "cancelled"
    BANNED = "banned"


class Trigger(StrEnum):
    PUBLISH = "publish"
    """ingest: ``stream.published`` for the broadcast's stream."""
    UNPUBLISH = "unpublish"
    """ingest: ``stream.unpublished`` (publisher dropped, kicked, errored)."""
    GRACE_EXPIRED = "grace_expired"
    """the sweeper: the publisher did not come back within the grace period."""
    END = "end"
    """operator (or the broadcast's anchor) ends the show."""
    CANCEL = "cancel"
    """operator cancels a show that has not started."""
    BAN = "ban"
    """operator takes the broadcast down (cuts the publisher, no replay)."""
    REPLAY_READY = "replay_ready"
    """replay: the recording is published (``replay.ready``)."""


class IllegalTransition(Exception):
    """``trigger`` is not allowed in ``state`` (our misuse, or a stale request)."""

    def __init__(self, state: State, trigger: Trigger) -> None:
        self.state = state
        self.trigger = trigger
        super().__init__(f"cannot {trigger.value} a broadcast that is {state.value}")


TRANSITIONS: Mapping[tuple[State, Trigger], State] = {
    (State.SCHEDULED, Trigger.PUBLISH): State.LIVE,
    (State.SCHEDULED, Trigger.CANCEL): State.CANCELLED,
    (State.SCHEDULED, Trigger.BAN): State.BANNED,
    (State.LIVE, Trigger.UNPUBLISH): State.INTERRUPTED,
    (State.LIVE, Trigger.END): State.ENDED,
    (State.LIVE, Trigger.BAN): State.BANNED,
    (State.INTERRUPTED, Trigger.PUBLISH): State.LIVE,
    (State.INTERRUPTED, Trigger.GRACE_EXPIRED): State.ENDED,
    (State.INTERRUPTED, Trigger.END): State.ENDED,
    (State.INTERRUPTED, Trigger.BAN): State.BANNED,
    (State.ENDED, Trigger.REPLAY_READY): State.REPLAY_READY,
    (State.ENDED, Trigger.BAN): State.BANNED,
    (State.REPLAY_READY, Trigger.BAN): State.BANNED,
}

TERMINAL: frozenset[State] = frozenset({State.CANCELLED, State.BANNED})
"""No way out."""

OPEN: frozenset[State] = frozenset({State.SCHEDULED, State.LIVE, State.INTERRUPTED})
"""A publisher may (still) push: the push URL is alive."""

ON_AIR: frozenset[State] = frozenset({State.LIVE, State.INTERRUPTED})


def next_state(state: State, trigger: Trigger) -> State:
    """The state after ``trigger`` in ``state``; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransition(state, trigger) from None


def can(state: State, trigger: Trigger) -> bool:
    return (state, trigger) in TRANSITIONS


def allowed(state: State) -> list[Trigger]:
    """Triggers accepted in ``state``, in declaration order (for the API and console)."""
    return [t for (s, t) in TRANSITIONS if s is state]
