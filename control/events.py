"""Events the control plane publishes on the bus (the contract; see ``docs/events.md``).

* :class:`BroadcastEvent`: the ``broadcast.*`` family (created, updated, deleted, every
  state change, key rotated/revoked), one payload shape with the parts that apply;
* :class:`BroadcastReminder`: ``broadcast.reminder``, the go-live reminder to subscribers
  (its own shape; a ``broadcast.*`` family subscriber does not get it);
* :class:`StaffRevoked`: ``account.revoked``, every token a staff account held before now
  is void (its danmaku hub tokens too).

``stream.kick`` (cut a publisher), which control sends, is declared by ingest
(:class:`ingest.events.StreamKick`), the package that obeys it.

On the wire nothing changed when these became classes: the parts of one kind of event
only (``previous``, ``trigger``, ``reason``, ``actor``, ``changed``) are left out of the
payload when ``None``, so it is the JSON control sent before. Control always fills every
field; the defaults let an older node's (or a hand-written) payload decode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.events import BusEvent

__all__ = ["BroadcastEvent", "BroadcastReminder", "StaffRevoked"]

_OPTIONAL = ("previous", "trigger", "reason", "actor", "changed")


@dataclass(frozen=True, slots=True)
class BroadcastEvent(BusEvent, topic="broadcast.*"):
    """Something happened to a broadcast; ``topic`` says what:

    * ``broadcast.created``, ``broadcast.deleted``: the common fields and ``at``;
    * ``broadcast.updated``: also ``changed`` (the fields edited) and ``actor``;
    * ``broadcast.<state>`` (``live``, ``interrupted``, ``ended``, ``replay_ready``,
      ``cancelled``, ``banned``): also ``previous`` (state), ``trigger``, ``reason``,
      ``actor``;
    * ``broadcast.key_rotated``, ``broadcast.key_revoked``: also ``actor``.
    """

    topic: str
    id: int
    """The broadcast's id (also in ``broadcast_id``)."""
    app: str
    stream: str
    broadcast_id: int | None = None
    title: str = ""
    anchor_id: int | None = None
    state: str = ""
    """The state after the event (``control.lifecycle.State`` value)."""
    product_ids: tuple[int, ...] = ()
    settings: dict[str, bool] = field(default_factory=dict)
    """``{comments, likes, replay, sharing}``"""
    at: float = 0.0
    """Unix seconds."""
    previous: str | None = None
    trigger: str | None = None
    reason: str | None = None
    actor: str | None = None
    changed: tuple[str, ...] | None = None

    @property
    def room(self) -> str:
        """The danmaku room / stream path ``<app>/<stream>``."""
        return f"{self.app}/{self.stream}"

    def to_data(self) -> dict[str, Any]:
        data = BusEvent.to_data(self)
        for name in _OPTIONAL:
            if data[name] is None:
                del data[name]
        return data


@dataclass(frozen=True, slots=True)
class BroadcastReminder(BusEvent, topic="broadcast.reminder"):
    """The broadcast went live: remind these subscribers (at most 500 per event)."""

    broadcast_id: int
    app: str
    stream: str
    title: str
    subscribers: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class StaffRevoked(BusEvent, topic="account.revoked"):
    """A staff account's password changed, or it was disabled, demoted or deleted: every
    token it held before ``at`` is void. Its API tokens are revoked in the database; the
    danmaku hub refuses its hub tokens (``uid`` ``staff:<user_id>``) issued before ``at``
    and disconnects its sockets."""

    user_id: int
    at: float
    reason: str
