"""Configuration of the viewer page: the ``[viewer]`` section (``BERRYLIVE_VIEWER_<FIELD>``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ViewerConfig:
    enabled: bool = True
    """Serve the H5 viewer page at ``/watch/APP/STREAM`` (with its scripts and styles)."""
    anonymous_tokens: bool = False
    """Let anyone get a viewer token for a broadcast's room at
    ``POST /api/watch/APP/STREAM/token`` (a random user id; comments, likes, lotteries and
    buys as that user). For demos only (``make demo`` sets it): anyone could mint as many
    buyers as they like. A real site's backend issues each signed-in user's token through
    ``POST /api/broadcasts/{id}/viewer-token`` with an operator API token instead."""
    anonymous_token_ttl: int = 86400
    """Lifetime (seconds) of an anonymous viewer token; the page asks again when it expires."""
    whep: bool = True
    """Let the page try WebRTC (WHEP at ``/whep/APP/STREAM``) first when the server answers
    ``OPTIONS`` there; off: LL-HLS first."""
