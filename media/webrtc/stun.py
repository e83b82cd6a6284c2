"""STUN messages (RFC 8489) as ICE uses them (RFC 8445), sans-I/O.

:func:`parse` turns one datagram into a :class:`StunMessage` or raises :class:`StunError`;
:func:`build` writes one, with MESSAGE-INTEGRITY (HMAC-SHA1, short-term credentials: the
key is the ICE password) and FINGERPRINT (CRC-32 xor ``0x5354554e``) appended when asked.

What ICE-lite needs and nothing more: the binding method, the attributes a full agent puts
in a check (USERNAME, PRIORITY, USE-CANDIDATE, ICE-CONTROLLING/-CONTROLLED,
MESSAGE-INTEGRITY, FINGERPRINT) and the ones an answer carries (XOR-MAPPED-ADDRESS,
ERROR-CODE). Unknown attributes are kept as raw bytes; attributes after MESSAGE-INTEGRITY
other than FINGERPRINT are ignored, as the RFC says.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass

from media.errors import ProtocolViolation

__all__ = [
    "ATTR_ERROR_CODE",
    "ATTR_FINGERPRINT",
    "ATTR_ICE_CONTROLLED",
    "ATTR_ICE_CONTROLLING",
    "ATTR_MESSAGE_INTEGRITY",
    "ATTR_PRIORITY",
    "ATTR_SOFTWARE",
    "ATTR_USERNAME",
    "ATTR_USE_CANDIDATE",
    "ATTR_XOR_MAPPED_ADDRESS",
    "BINDING",
    "CLASS_ERROR",
    "CLASS_INDICATION",
    "CLASS_REQUEST",
    "CLASS_SUCCESS",
    "HEADER_SIZE",
    "MAGIC_COOKIE",
    "MAX_ATTRIBUTES",
    "StunError",
    "StunMessage",
    "build",
    "decode_error_code",
    "decode_xor_address",
    "encode_error_code",
    "encode_xor_address",
    "is_stun",
    "parse",
]

HEADER_SIZE = 20
MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_FINGERPRINT_XOR = 0x5354554E
MAX_ATTRIBUTES = 64
"""More attributes than this in one message is a violation (a check has fewer than 10)."""

BINDING = 0x001
CLASS_REQUEST = 0
CLASS_INDICATION = 1
CLASS_SUCCESS = 2
CLASS_ERROR = 3

ATTR_USERNAME = 0x0006
ATTR_MESSAGE_INTEGRITY = 0x0008
ATTR_ERROR_CODE = 0x0009
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_PRIORITY = 0x0024
ATTR_USE_CANDIDATE = 0x0025
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028
ATTR_ICE_CONTROLLED = 0x8029
ATTR_ICE_CONTROLLING = 0x802A


class StunError(ProtocolViolation):
    """The datagram is not a well-formed STUN message."""


def is_stun(data: bytes) -> bool:
    """Cheap check before a full parse: first byte 0-3 (RFC 7983), magic cookie, length."""
    return (
        len(data) >= HEADER_SIZE
        and data[0] < 4
        and data[4:8] == _COOKIE_BYTES
        and (len(data) - HEADER_SIZE) == ((data[2] << 8) | data[3])
    )


def _method_class(message_type: int) -> tuple[int, int]:
    method = (
        (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    )
    cls = ((message_type & 0x0010) >> 4) | ((message_type & 0x0100) >> 7)
    return method, cls


def _message_type(method: int, cls: int) -> int:
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 1) << 4)
        | ((cls & 2) << 7)
    )


@dataclass(frozen=True)
class StunMessage:
    """One parsed STUN message.

    ``attributes`` are (type, value) in wire order, up to MESSAGE-INTEGRITY (FINGERPRINT
    is checked during the parse and not listed). ``integrity`` is the received HMAC and
    ``integrity_input`` the bytes it covers (with the header length adjusted), so the
    caller can check it with a key it looks up from USERNAME: :meth:`check_integrity`.
    """

    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    integrity: bytes | None = None
    integrity_input: bytes | None = None
    has_fingerprint: bool = False

    def get(self, attr_type: int) -> bytes | None:
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def has(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)

    @property
    def username(self) -> str | None:
        raw = self.get(ATTR_USERNAME)
        if raw is None:
            return None
        return raw.decode("utf-8", "replace")

    def check_integrity(self, key: bytes) -> bool:
        if self.integrity is None or self.integrity_input is None:
            return False
        expected = hmac.new(key, self.integrity_input, hashlib.sha1).digest()
        return hmac.compare_digest(expected, self.integrity)

    def __bytes__(self) -> bytes:
        """Re-encoded without integrity or fingerprint (those need the key: :func:`build`)."""
        return build(self.method, self.cls, self.transaction_id, self.attributes)


def parse(data: bytes) -> StunMessage:
    """Parse one datagram; :class:`StunError` for anything that is not valid STUN."""
    if len(data) < HEADER_SIZE:
        raise StunError("shorter than a STUN header")
    message_type, length = struct.unpack_from("!HH", data, 0)
    if message_type & 0xC000:
        raise StunError("top bits of the message type are set")
    if data[4:8] != _COOKIE_BYTES:
        raise StunError("no magic cookie")
    if length % 4 or HEADER_SIZE + length != len(data):
        raise StunError("length does not match the datagram")
    method, cls = _method_class(message_type)
    transaction_id = bytes(data[8:20])
    attributes: list[tuple[int, bytes]] = []
    integrity: bytes | None = None
    integrity_input: bytes | None = None
    has_fingerprint = False
    pos = HEADER_SIZE
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise StunError("truncated attribute header")
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        value_start = pos + 4
        value_end = value_start + attr_len
        if value_end > end:
            raise StunError("attribute runs past the message")
        value = bytes(data[value_start:value_end])
        next_pos = value_start + ((attr_len + 3) & ~3)
        if next_pos > end:
            raise StunError("attribute padding runs past the message")
        if attr_type == ATTR_FINGERPRINT:
            if attr_len != 4 or next_pos != end:
                raise StunError("FINGERPRINT is not the last 4-byte attribute")
            header = struct.pack("!HH", message_type, pos + 8 - HEADER_SIZE)
            crc = zlib.crc32(header + data[4:pos]) ^ _FINGERPRINT_XOR
            if struct.unpack("!I", value)[0] != crc:
                raise StunError("FINGERPRINT does not match")
            has_fingerprint = True
        elif integrity is not None:
            pass  # ignored after MESSAGE-INTEGRITY (RFC 8489 14.5)
        elif attr_type == ATTR_MESSAGE_INTEGRITY:
            if attr_len != 20:
                raise StunError("MESSAGE-INTEGRITY is not 20 bytes")
            integrity = value
            header = struct.pack("!HH", message_type, pos + 24 - HEADER_SIZE)
            integrity_input = header + bytes(data[4:pos])
        else:
            if len(attributes) >= MAX_ATTRIBUTES:
                raise StunError("too many attributes")
            attributes.append((attr_type, value))
        pos = next_pos
    return StunMessage(
        method=method,
        cls=cls,
        transaction_id=transaction_id,
        attributes=tuple(attributes),
        integrity=integrity,
        integrity_input=integrity_input,
        has_fingerprint=has_fingerprint,
    )


def build(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: tuple[tuple[int, bytes], ...] | list[tuple[int, bytes]] = (),
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = False,
) -> bytes:
    """Encode a message; MESSAGE-INTEGRITY then FINGERPRINT are appended when asked."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 12 bytes")
    message_type = _message_type(method, cls)
    body = bytearray()
    for attr_type, value in attributes:
        if len(value) > 0xFFFF:
            raise ValueError("attribute too long")
        body += struct.pack("!HH", attr_type, len(value)) + value
        body += b"\x00" * (-len(value) % 4)
    if integrity_key is not None:
        header = struct.pack("!HH", message_type, len(body) + 24) + _COOKIE_BYTES + transaction_id
        mac = hmac.new(integrity_key, header + body, hashlib.sha1).digest()
        body += struct.pack("!HH", ATTR_MESSAGE_INTEGRITY, 20) + mac
    if fingerprint:
        header = struct.pack("!HH", message_type, len(body) + 8) + _COOKIE_BYTES + transaction_id
        crc = zlib.crc32(header + body) ^ _FINGERPRINT_XOR
        body += struct.pack("!HHI", ATTR_FINGERPRINT, 4, crc)
    return (
        struct.pack("!HH", message_type, len(body)) + _COOKIE_BYTES + transaction_id + bytes(body)
    )


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS value for an IPv4 or IPv6 address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 peer seen through a dual-stack socket
    xport = port ^ (MAGIC_COOKIE >> 16)
    if ip.version == 4:
        xaddr = int(ip) ^ MAGIC_COOKIE
        return struct.pack("!BBHI", 0, 1, xport, xaddr)
    mask = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
    return struct.pack("!BBH", 0, 2, xport) + (int(ip) ^ mask).to_bytes(16, "big")


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    if len(value) < 4:
        raise StunError("XOR-MAPPED-ADDRESS too short")
    _, family, xport = struct.unpack_from("!BBH", value, 0)
    port = xport ^ (MAGIC_COOKIE >> 16)
    if family == 1 and len(value) == 8:
        addr = struct.unpack_from("!I", value, 4)[0] ^ MAGIC_COOKIE
        return str(ipaddress.IPv4Address(addr)), port
    if family == 2 and len(value) == 20:
        mask = int.from_bytes(_COOKIE_BYTES + transaction_id, "big")
        addr6 = int.from_bytes(value[4:20], "big") ^ mask
        return str(ipaddress.IPv6Address(addr6)), port
    raise StunError("XOR-MAPPED-ADDRESS of unknown family or size")


def encode_error_code(code: int, reason: str) -> bytes:
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def decode_error_code(value: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise StunError("ERROR-CODE too short")
    code = (value[2] & 0x7) * 100 + value[3]
    return code, value[4:].decode("utf-8", "replace")
