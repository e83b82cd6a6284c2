"""Events of the ``stream.*`` topics: what ingest publishes, and the kick it obeys
(the contract; see ``docs/events.md``).

* :class:`StreamPublished`, :class:`StreamUnpublished`: a publisher started or ended on
  this node (sent by ingest);
* :class:`StreamKick`: cut that stream's publisher now (sent by the control plane when a
  key is rotated or revoked, a broadcast ends or is banned). It is declared here, with the
  package that obeys it, because control already depends on ingest and ingest must not
  depend on control.

Every field a payload may lack has a default, so an older node's (or a hand-written)
payload decodes; the JSON is what ingest sent before these were classes.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.events import BusEvent

__all__ = ["StreamKick", "StreamPublished", "StreamUnpublished"]


@dataclass(frozen=True, slots=True)
class StreamPublished(BusEvent, topic="stream.published"):
    """A publisher's stream is live on ``node``."""

    app: str
    stream: str
    node: str = ""
    client_ip: str = ""
    protocol: str = "rtmp"
    takeover: bool = False
    """This publisher replaced a live one (no :class:`StreamUnpublished` for that one)."""


@dataclass(frozen=True, slots=True)
class StreamUnpublished(BusEvent, topic="stream.unpublished"):
    """A publisher's stream ended on ``node``."""

    app: str
    stream: str
    node: str = ""
    reason: str = "closed"
    """``unpublished`` (the anchor stopped), ``peer closed`` / ``connection error: ...`` /
    ``timed out waiting for data`` (dropped), or a kick's reason."""


@dataclass(frozen=True, slots=True)
class StreamKick(BusEvent, topic="stream.kick"):
    """Cut the publisher of ``app/stream`` (on whichever node has it)."""

    app: str
    stream: str
    reason: str = "kicked"
