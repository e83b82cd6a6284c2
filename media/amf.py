"""AMF0 and AMF3 (the subset RTMP peers use), decoding bounded against hostile input.

Values map to Python: number -> float, boolean -> bool, string -> str, null/undefined ->
None, object/ECMA array -> dict, strict array -> list, date -> :class:`AMFDate`. AMF3
integers decode to int. Encoding produces AMF0 only (what servers answer with).

**Bounded work, not only bounded depth.** Both AMF versions let a value refer back to an
earlier object. Decoded as shared Python objects, a few KB of references make a graph whose
*expanded* size (what a re-encode, a JSON dump for a hook or a copy walks) grows as N^2,
N^3... A depth bound does not stop that. So the decoder keeps, for every finished
container, its expanded weight (values + string bytes, references counted at the weight of
what they point to), and refuses a message whose expanded weight passes
:data:`MAX_EXPANDED` (a reference to an object still being decoded, a cycle, is refused
too). Whatever a caller then does with the values is bounded by that weight. The encoder
refuses output over :data:`MAX_ENCODED` bytes as a second line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from media.errors import AMFError

MAX_DEPTH = 32
MAX_ITEMS = 65536
MAX_EXPANDED = 1 << 17
"""Most expanded weight (values + string bytes, references expanded) in one message: far
above any real command or ``onMetaData`` (a few hundred values), and small enough that
walking it (a re-encode in Python) stays in the tens of milliseconds."""
MAX_ENCODED = 1 << 20
"""Most bytes one :func:`encode_amf0` call produces."""

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class AMFDate:
    milliseconds: float
    timezone: int = 0


class Undefined:
    """AMF ``undefined`` when the distinction from ``null`` matters on encode."""

    _instance: Undefined | None = None

    def __new__(cls) -> Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "Undefined"


UNDEFINED = Undefined()


class ECMAArray(dict[str, Any]):
    """A dict encoded as an AMF0 ECMA array (``onMetaData`` uses one)."""


# ---------------------------------------------------------------------------- AMF0 decode


class _Reader:
    __slots__ = (
        "amf3_objs",
        "amf3_strs",
        "amf3_traits",
        "buf",
        "expanded",
        "open",
        "pos",
        "refs",
        "weights",
    )

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = bytes(buf)
        self.pos = pos
        self.refs: list[Any] = []
        self.amf3_strs: list[str] = []
        self.amf3_objs: list[Any] = []
        self.amf3_traits: list[tuple[str, bool, list[str]]] = []
        self.expanded = 0
        """Expanded weight decoded so far (see the module docstring)."""
        self.weights: dict[int, int] = {}
        """id(container) -> its expanded weight, once finished."""
        self.open: set[int] = set()
        """id() of the containers being decoded (a reference to one is a cycle)."""

    def grow(self, n: int) -> None:
        self.expanded += n
        if self.expanded > MAX_EXPANDED:
            raise AMFError(f"AMF message expands past {MAX_EXPANDED} (references)")

    def begin(self, obj: Any) -> int:
        self.open.add(id(obj))
        self.grow(1)
        return self.expanded

    def end(self, obj: Any, start: int) -> None:
        self.open.discard(id(obj))
        self.weights[id(obj)] = self.expanded - start + 1

    def refer(self, obj: Any) -> Any:
        """A reference to an earlier value: charged at the weight of what it points to."""
        if id(obj) in self.open:
            raise AMFError("AMF reference cycle")
        self.grow(self.weights.get(id(obj), 1 + (len(obj) if isinstance(obj, str | bytes) else 0)))
        return obj

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise AMFError(f"AMF truncated: need {n} bytes at {self.pos}, have {len(self.buf)}")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        if self.pos >= len(self.buf):
            raise AMFError("AMF truncated: need 1 byte")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        v: int = _U16.unpack(self.take(2))[0]
        return v

    def u32(self) -> int:
        v: int = _U32.unpack(self.take(4))[0]
        return v

    def double(self) -> float:
        v: float = _DOUBLE.unpack(self.take(8))[0]
        return v

    def utf8(self, n: int) -> str:
        raw = self.take(n)
        self.grow(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos


def _amf0_value(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AMFError("AMF nesting too deep")
    marker = r.u8()
    r.grow(1)
    if marker == 0x00:
        return r.double()
    if marker == 0x01:
        return r.u8() != 0
    if marker == 0x02:
        return r.utf8(r.u16())
    if marker == 0x03:
        obj: dict[str, Any] = {}
        r.refs.append(obj)
        start = r.begin(obj)
        _amf0_props(r, obj, depth)
        r.end(obj, start)
        return obj
    if marker in (0x05, 0x06):
        return None
    if marker == 0x07:
        idx = r.u16()
        if idx >= len(r.refs):
            raise AMFError(f"AMF0 reference {idx} out of range")
        return r.refer(r.refs[idx])
    if marker == 0x08:
        r.u32()  # associative count: advisory only, and often wrong
        arr = ECMAArray()
        r.refs.append(arr)
        start = r.begin(arr)
        _amf0_props(r, arr, depth)
        r.end(arr, start)
        return arr
    if marker == 0x09:
        raise AMFError("unexpected AMF0 object-end marker")
    if marker == 0x0A:
        count = r.u32()
        if count > MAX_ITEMS or count > r.remaining:
            raise AMFError(f"AMF0 strict array of {count} items is too large")
        items: list[Any] = []
        r.refs.append(items)
        start = r.begin(items)
        for _ in range(count):
            items.append(_amf0_value(r, depth + 1))
        r.end(items, start)
        return items
    if marker == 0x0B:
        ms = r.double()
        tz = r.u16()
        return AMFDate(ms, tz - 0x10000 if tz >= 0x8000 else tz)
    if marker in (0x0C, 0x0F):
        return r.utf8(r.u32())
    if marker == 0x0D:
        return None
    if marker == 0x10:
        r.utf8(r.u16())  # class name
        typed: dict[str, Any] = {}
        r.refs.append(typed)
        start = r.begin(typed)
        _amf0_props(r, typed, depth)
        r.end(typed, start)
        return typed
    if marker == 0x11:
        return _amf3_value(r, depth + 1)
    raise AMFError(f"unknown AMF0 marker 0x{marker:02x}")


def _amf0_props(r: _Reader, obj: dict[str, Any], depth: int) -> None:
    for _ in range(MAX_ITEMS):
        key = r.utf8(r.u16())
        if key == "":
            if r.remaining == 0:
                return  # some encoders omit the end marker at the very end
            end = r.u8()
            if end == 0x09:
                return
            r.pos -= 1
        obj[key] = _amf0_value(r, depth + 1)
        if r.remaining == 0:
            return  # tolerate a missing object-end at the end of the message
    raise AMFError("AMF0 object has too many properties")


def decode_amf0(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every AMF0 value in ``data``."""
    r = _Reader(data)
    out: list[Any] = []
    while r.remaining > 0:
        out.append(_amf0_value(r, 0))
        if len(out) > MAX_ITEMS:
            raise AMFError("too many AMF values")
    return out


# ---------------------------------------------------------------------------- AMF3 decode


def _u29(r: _Reader) -> int:
    value = 0
    for i in range(4):
        b = r.u8()
        if i == 3:
            return (value << 8) | b
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value
    return value  # pragma: no cover - loop always returns


def _amf3_string(r: _Reader) -> str:
    ref = _u29(r)
    if not ref & 1:
        idx = ref >> 1
        if idx >= len(r.amf3_strs):
            raise AMFError(f"AMF3 string reference {idx} out of range")
        known = r.amf3_strs[idx]
        r.refer(known)
        return known
    s = r.utf8(ref >> 1)
    if s:
        r.amf3_strs.append(s)
    return s


def _amf3_ref(r: _Reader, ref: int) -> Any:
    idx = ref >> 1
    if idx >= len(r.amf3_objs):
        raise AMFError(f"AMF3 object reference {idx} out of range")
    return r.refer(r.amf3_objs[idx])


def _amf3_value(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AMFError("AMF nesting too deep")
    marker = r.u8()
    r.grow(1)
    if marker in (0x00, 0x01):
        return None
    if marker == 0x02:
        return False
    if marker == 0x03:
        return True
    if marker == 0x04:
        v = _u29(r)
        return v - (1 << 29) if v & (1 << 28) else v
    if marker == 0x05:
        return r.double()
    if marker == 0x06:
        return _amf3_string(r)
    if marker in (0x07, 0x0B, 0x0C):  # xml-doc, xml, bytearray
        ref = _u29(r)
        if not ref & 1:
            return _amf3_ref(r, ref)
        raw = r.take(ref >> 1)
        r.grow(len(raw))
        val: Any = raw if marker == 0x0C else raw.decode("utf-8", errors="replace")
        r.amf3_objs.append(val)
        return val
    if marker == 0x08:
        ref = _u29(r)
        if not ref & 1:
            return _amf3_ref(r, ref)
        d = AMFDate(r.double())
        r.amf3_objs.append(d)
        return d
    if marker == 0x09:
        ref = _u29(r)
        if not ref & 1:
            return _amf3_ref(r, ref)
        dense = ref >> 1
        assoc: dict[str, Any] = {}
        r.amf3_objs.append(assoc)
        start = r.begin(assoc)
        for _ in range(MAX_ITEMS):
            key = _amf3_string(r)
            if key == "":
                break
            assoc[key] = _amf3_value(r, depth + 1)
        else:
            raise AMFError("AMF3 array has too many keys")
        if dense > MAX_ITEMS or dense > r.remaining:
            raise AMFError(f"AMF3 array of {dense} items is too large")
        slot = len(r.amf3_objs) - 1
        items: list[Any] = []
        r.open.add(id(items))
        for _ in range(dense):
            items.append(_amf3_value(r, depth + 1))
        r.open.discard(id(items))
        r.end(assoc, start)
        if assoc:
            assoc.update({str(i): v for i, v in enumerate(items)})
            return assoc
        r.amf3_objs[slot] = items
        r.weights[id(items)] = r.weights[id(assoc)]
        return items
    if marker == 0x0A:
        ref = _u29(r)
        if not ref & 1:
            return _amf3_ref(r, ref)
        if not ref & 2:
            tidx = ref >> 2
            if tidx >= len(r.amf3_traits):
                raise AMFError(f"AMF3 traits reference {tidx} out of range")
            _cls, dynamic, names = r.amf3_traits[tidx]
        else:
            if ref & 4:
                raise AMFError("AMF3 externalizable objects are not supported")
            dynamic = bool(ref & 8)
            count = ref >> 4
            cls_name = _amf3_string(r)
            if count > MAX_ITEMS or count > r.remaining:
                raise AMFError("AMF3 traits too large")
            names = [_amf3_string(r) for _ in range(count)]
            r.amf3_traits.append((cls_name, dynamic, names))
        obj: dict[str, Any] = {}
        r.amf3_objs.append(obj)
        start = r.begin(obj)
        for name in names:
            obj[name] = _amf3_value(r, depth + 1)
        if dynamic:
            for _ in range(MAX_ITEMS):
                key = _amf3_string(r)
                if key == "":
                    break
                obj[key] = _amf3_value(r, depth + 1)
            else:
                raise AMFError("AMF3 object has too many properties")
        r.end(obj, start)
        return obj
    raise AMFError(f"unsupported AMF3 marker 0x{marker:02x}")


def decode_amf3(data: bytes | bytearray | memoryview) -> list[Any]:
    """Decode every AMF3 value in ``data``."""
    r = _Reader(data)
    out: list[Any] = []
    while r.remaining > 0:
        out.append(_amf3_value(r, 0))
        if len(out) > MAX_ITEMS:
            raise AMFError("too many AMF values")
    return out


# ---------------------------------------------------------------------------- AMF0 encode


def _enc_str_body(s: str) -> bytes:
    raw = s.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("AMF0 short string over 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _enc_props(obj: dict[str, Any], out: bytearray, depth: int) -> None:
    for key, value in obj.items():
        out += _enc_str_body(str(key))
        _enc_value(value, out, depth + 1)
    out += b"\x00\x00\x09"


def _enc_value(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError("AMF value nested too deeply")
    if len(out) > MAX_ENCODED:
        raise ValueError(f"AMF0 encoding over {MAX_ENCODED} bytes")
    if value is None:
        out.append(0x05)
    elif value is UNDEFINED:
        out.append(0x06)
    elif isinstance(value, bool):
        out += b"\x01\x01" if value else b"\x01\x00"
    elif isinstance(value, int | float):
        out.append(0x00)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(0x02)
            out += _U16.pack(len(raw)) + raw
        else:
            out.append(0x0C)
            out += _U32.pack(len(raw)) + raw
    elif isinstance(value, ECMAArray):
        out.append(0x08)
        out += _U32.pack(len(value))
        _enc_props(value, out, depth)
    elif isinstance(value, dict):
        out.append(0x03)
        _enc_props(value, out, depth)
    elif isinstance(value, list | tuple):
        out.append(0x0A)
        out += _U32.pack(len(value))
        for item in value:
            _enc_value(item, out, depth + 1)
    elif isinstance(value, AMFDate):
        out.append(0x0B)
        out += _DOUBLE.pack(value.milliseconds) + struct.pack(">h", value.timezone)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode_amf0(*values: Any) -> bytes:
    """AMF0 bytes of ``values``; ValueError past :data:`MAX_ENCODED` bytes or
    :data:`MAX_DEPTH` levels (a shared or cyclic structure cannot blow up the work)."""
    out = bytearray()
    for v in values:
        _enc_value(v, out, 0)
    if len(out) > MAX_ENCODED:
        raise ValueError(f"AMF0 encoding over {MAX_ENCODED} bytes")
    return bytes(out)
