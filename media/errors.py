"""Errors of the media kernel.

``LocalProtocolError``: our own misuse of an API (a bug here). ``ProtocolViolation``: the
peer sent something invalid; the asyncio shell turns it into a clean close of that one
connection with the reason.
"""

from __future__ import annotations


class LocalProtocolError(RuntimeError):
    """We called the protocol core in a way the state machine does not allow."""


class ProtocolViolation(ValueError):
    """The peer's bytes break the protocol; the connection must be closed."""


class AMFError(ProtocolViolation):
    """Malformed AMF0/AMF3 data."""


class FLVError(ProtocolViolation):
    """Malformed FLV data."""
