"""QR codes of push URLs as PNG or SVG, drawn from ``qrcode``'s module matrix.

The PNG encoder is a few lines of ``zlib`` (1-bit grayscale), so no imaging library is
needed; the SVG is one path.
"""

from __future__ import annotations

import struct
import zlib

import qrcode
from qrcode.constants import ERROR_CORRECT_M

MAX_SCALE = 20


def matrix(data: str, border: int = 4) -> list[list[bool]]:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=border, box_size=1)
    qr.add_data(data)
    qr.make(fit=True)
    return [[bool(cell) for cell in row] for row in qr.get_matrix()]


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png(data: str, scale: int = 8) -> bytes:
    """A black-on-white PNG, ``scale`` pixels per module."""
    scale = max(1, min(scale, MAX_SCALE))
    m = matrix(data)
    size = len(m) * scale
    rows = bytearray()
    for row in m:
        bits = []
        for cell in row:
            bits.extend([0 if cell else 1] * scale)  # 1 = white in 1-bit grayscale
        packed = bytearray()
        for i in range(0, len(bits), 8):
            byte = 0
            for j, bit in enumerate(bits[i : i + 8]):
                byte |= bit << (7 - j)
            packed.append(byte)
        line = b"\x00" + bytes(packed)
        rows += line * scale
    header = struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _chunk(b"IEND", b"")
    )


def svg(data: str, scale: int = 8) -> str:
    scale = max(1, min(scale, MAX_SCALE))
    m = matrix(data)
    n = len(m)
    parts = []
    for y, row in enumerate(m):
        x = 0
        while x < n:
            if row[x]:
                start = x
                while x < n and row[x]:
                    x += 1
                parts.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{n * scale}" height="{n * scale}" '
        f'viewBox="0 0 {n} {n}" shape-rendering="crispEdges">'
        f'<rect width="{n}" height="{n}" fill="#fff"/>'
        f'<path fill="#000" d="{"".join(parts)}"/></svg>'
    )
