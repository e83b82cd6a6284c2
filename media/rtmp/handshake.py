"""RTMP handshake: simple (echo) and complex (HMAC-SHA256 digest, Flash-style).

Server side: given C0+C1, produce S0+S1+S2. If C1 carries a valid client digest (scheme 0
or 1), S1 carries a server digest at the same scheme's position and S2 is signed with a
key derived from the client digest, as Flash Player and ffmpeg (when playing) check;
otherwise S1 is plain and S2 echoes C1.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable

from media.errors import ProtocolViolation

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

# Protocol constants (the public "Genuine Adobe" keys every implementation uses).
_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL
FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL
FP_KEY_SHORT = FP_KEY[:30]
FMS_KEY_SHORT = FMS_KEY[:36]
SERVER_VERSION = b"\x04\x05\x00\x01"


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def digest_offset(block: bytes, scheme: int) -> int:
    """Where the 32-byte digest sits in a 1536-byte C1/S1 for ``scheme`` 0 or 1."""
    base = 8 if scheme == 0 else 772
    return sum(block[base : base + 4]) % 728 + base + 4


def _digest_at(block: bytes, offset: int, key: bytes) -> bytes:
    return _hmac(key, block[:offset] + block[offset + DIGEST_SIZE :])


def find_client_digest(c1: bytes) -> tuple[int, bytes] | None:
    """(scheme, digest) when C1 carries a valid Flash Player digest, else None."""
    for scheme in (0, 1):
        off = digest_offset(c1, scheme)
        if hmac.compare_digest(c1[off : off + DIGEST_SIZE], _digest_at(c1, off, FP_KEY_SHORT)):
            return scheme, c1[off : off + DIGEST_SIZE]
    return None


def server_response(
    c0c1: bytes, random_bytes: Callable[[int], bytes] = os.urandom
) -> tuple[bytes, bool]:
    """S0+S1+S2 for a client's C0+C1 (1537 bytes); returns (bytes, complex_used)."""
    if len(c0c1) != 1 + HANDSHAKE_SIZE:
        raise ProtocolViolation("handshake: C0+C1 must be 1537 bytes")
    version = c0c1[0]
    if version != RTMP_VERSION:
        raise ProtocolViolation(
            f"handshake: RTMP version {version} not supported"
            + (" (RTMPE encryption)" if version in (6, 8, 9) else "")
        )
    c1 = c0c1[1:]
    found = find_client_digest(c1) if c1[4:8] != b"\x00\x00\x00\x00" else None
    if found is None:
        s1 = b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00" + random_bytes(HANDSHAKE_SIZE - 8)
        return bytes([RTMP_VERSION]) + s1 + c1, False
    scheme, client_digest = found
    s1b = bytearray(b"\x00\x00\x00\x00" + SERVER_VERSION + random_bytes(HANDSHAKE_SIZE - 8))
    off = digest_offset(bytes(s1b), scheme)
    s1b[off : off + DIGEST_SIZE] = _digest_at(bytes(s1b), off, FMS_KEY_SHORT)
    s2 = bytearray(random_bytes(HANDSHAKE_SIZE))
    key = _hmac(FMS_KEY, client_digest)
    s2[-DIGEST_SIZE:] = _hmac(key, bytes(s2[:-DIGEST_SIZE]))
    return bytes([RTMP_VERSION]) + bytes(s1b) + bytes(s2), True


def client_hello(
    random_bytes: Callable[[int], bytes] = os.urandom, complex_: bool = False
) -> bytes:
    """C0+C1. With ``complex_`` C1 carries a scheme-0 client digest."""
    if not complex_:
        return bytes([RTMP_VERSION]) + b"\x00" * 8 + random_bytes(HANDSHAKE_SIZE - 8)
    c1 = bytearray(b"\x00\x00\x00\x00" + b"\x0a\x00\x28\x02" + random_bytes(HANDSHAKE_SIZE - 8))
    off = digest_offset(bytes(c1), 0)
    c1[off : off + DIGEST_SIZE] = _digest_at(bytes(c1), off, FP_KEY_SHORT)
    return bytes([RTMP_VERSION]) + bytes(c1)


def verify_server_s1(s1: bytes) -> bool:
    """True when S1 carries a valid server digest under either scheme."""
    for scheme in (0, 1):
        off = digest_offset(s1, scheme)
        if hmac.compare_digest(s1[off : off + DIGEST_SIZE], _digest_at(s1, off, FMS_KEY_SHORT)):
            return True
    return False


def c2_for(s1: bytes) -> bytes:
    """The simple-handshake C2: an echo of S1 (servers we talk to accept it)."""
    return s1[:4] + struct.pack(">I", 0) + s1[8:]
