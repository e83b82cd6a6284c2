"""SDP (RFC 8866) as WebRTC offers use it (RFC 8829 JSEP), sans-I/O.

:func:`parse` keeps every line in order (session part, then one :class:`MediaSection` per
``m=``), so ``str(parse(text))`` gives the same lines back (CRLF-terminated). Helpers read
what an answerer needs: RTP codecs with their fmtp and rtcp-fb, ICE credentials, DTLS
fingerprints and setup role, mid, BUNDLE groups, SSRCs, header extensions, direction.

Bounds: :data:`MAX_SDP_SIZE` bytes, :data:`MAX_LINES` lines, :data:`MAX_MEDIA` m-sections;
anything larger or malformed raises :class:`SdpError` (a 400 for the HTTP layer).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from media.errors import ProtocolViolation

__all__ = [
    "MAX_LINES",
    "MAX_MEDIA",
    "MAX_SDP_SIZE",
    "MediaSection",
    "RtpCodec",
    "SdpError",
    "SessionDescription",
    "parse",
]

MAX_SDP_SIZE = 64 * 1024
MAX_LINES = 4096
MAX_MEDIA = 32

_LINE = re.compile(r"^([a-z])=(.*)$")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ProtocolViolation):
    """The text is not an SDP this parser accepts."""


def _number(text: str, digits: int = 10) -> int | None:
    """A non-negative decimal of at most ``digits`` ASCII digits, else None (``isdigit``
    alone accepts ``²``, and ``int`` accepts ``1_0``, spaces and non-ASCII digits)."""
    if 0 < len(text) <= digits and text.isascii() and text.isdigit():
        return int(text)
    return None


def _split_attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    return (name, rest) if sep else (name, None)


class _Lines:
    """Shared attribute lookups over (type, value) lines."""

    lines: tuple[tuple[str, str], ...]

    def attributes(self, name: str) -> list[str]:
        """Values of every ``a=name:value`` (``""`` for a flag ``a=name``)."""
        out: list[str] = []
        for kind, value in self.lines:
            if kind != "a":
                continue
            attr, rest = _split_attribute(value)
            if attr == name:
                out.append(rest if rest is not None else "")
        return out

    def attribute(self, name: str) -> str | None:
        values = self.attributes(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return bool(self.attributes(name))

    def direction(self) -> str | None:
        for kind, value in self.lines:
            if kind == "a" and value in _DIRECTIONS:
                return value
        return None


@dataclass(frozen=True)
class RtpCodec:
    """One payload type of an m-section: ``a=rtpmap`` + ``a=fmtp`` + ``a=rtcp-fb``."""

    payload_type: int
    name: str
    clock_rate: int
    channels: int | None
    fmtp: str
    rtcp_fb: tuple[str, ...]

    def fmtp_params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in self.fmtp.split(";"):
            key, sep, value = part.strip().partition("=")
            if key:
                out[key.lower()] = value.strip() if sep else ""
        return out


@dataclass(frozen=True)
class MediaSection(_Lines):
    """One ``m=`` line and the lines after it, up to the next ``m=``."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    lines: tuple[tuple[str, str], ...] = ()

    @property
    def mid(self) -> str | None:
        return self.attribute("mid")

    def codecs(self) -> list[RtpCodec]:
        """Codecs with an ``a=rtpmap`` among the m-line's formats, in offer order."""
        rtpmaps: dict[int, tuple[str, int, int | None]] = {}
        for value in self.attributes("rtpmap"):
            pt_text, _, desc = value.partition(" ")
            parts = desc.strip().split("/")
            pt = _number(pt_text, 3)
            rate = _number(parts[1]) if len(parts) > 1 else None
            channels = _number(parts[2], 3) if len(parts) > 2 else None
            if pt is None or pt > 127 or rate is None or not parts[0]:
                continue
            if len(parts) > 2 and channels is None:
                continue
            rtpmaps.setdefault(pt, (parts[0], rate, channels))
        fmtps: dict[int, str] = {}
        for value in self.attributes("fmtp"):
            pt_text, _, params = value.partition(" ")
            pt = _number(pt_text, 3)
            if pt is not None:
                fmtps.setdefault(pt, params.strip())
        feedback: dict[str, list[str]] = {}
        for value in self.attributes("rtcp-fb"):
            pt_text, _, fb = value.partition(" ")
            if fb.strip():
                feedback.setdefault(pt_text, []).append(" ".join(fb.split()))
        out: list[RtpCodec] = []
        for fmt in self.formats:
            number = _number(fmt, 3)
            if number is None or number not in rtpmaps:
                continue
            pt = number
            name, rate, channels = rtpmaps[pt]
            fb_list = feedback.get(fmt, []) + feedback.get("*", [])
            out.append(RtpCodec(pt, name, rate, channels, fmtps.get(pt, ""), tuple(fb_list)))
        return out

    def ssrcs(self) -> list[int]:
        """Distinct SSRCs of ``a=ssrc`` and ``a=ssrc-group`` lines, in order."""
        tokens = [v.split(" ", 1)[0] for v in self.attributes("ssrc")]
        for group in self.attributes("ssrc-group"):
            tokens.extend(group.split()[1:])
        seen: list[int] = []
        for token in tokens:
            ssrc = _number(token)
            if ssrc is not None and ssrc < 2**32 and ssrc not in seen:
                seen.append(ssrc)
        return seen

    def extmaps(self) -> dict[str, int]:
        """Header extension URI -> id (``a=extmap:ID[/direction] URI``)."""
        out: dict[str, int] = {}
        for value in self.attributes("extmap"):
            head, _, rest = value.partition(" ")
            ident = head.split("/", 1)[0]
            uri = rest.split(" ", 1)[0].strip()
            number = _number(ident, 3)
            if number is not None and uri and 1 <= number <= 255:
                out.setdefault(uri, number)
        return out


@dataclass(frozen=True)
class SessionDescription(_Lines):
    """The session-level lines and the media sections."""

    lines: tuple[tuple[str, str], ...]
    media: tuple[MediaSection, ...] = ()

    def bundle_groups(self) -> list[list[str]]:
        out: list[list[str]] = []
        for value in self.attributes("group"):
            tokens = value.split()
            if tokens and tokens[0] == "BUNDLE":
                out.append(tokens[1:])
        return out

    def media_attribute(self, media: MediaSection, name: str) -> str | None:
        """``a=name`` of the m-section, else of the session (ice-ufrag, fingerprint...)."""
        value = media.attribute(name)
        return value if value is not None else self.attribute(name)

    def media_attributes(self, media: MediaSection, name: str) -> list[str]:
        values = media.attributes(name)
        return values if values else self.attributes(name)

    def __str__(self) -> str:
        out = [f"{k}={v}" for k, v in self.lines]
        for m in self.media:
            out.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}".rstrip())
            out.extend(f"{k}={v}" for k, v in m.lines)
        return "".join(line + "\r\n" for line in out)


def _check_value(value: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise SdpError("line contains CR, LF or NUL")


def parse(text: str | bytes) -> SessionDescription:
    """Parse an SDP; :class:`SdpError` when it is too large or not SDP."""
    if isinstance(text, bytes):
        if len(text) > MAX_SDP_SIZE:
            raise SdpError(f"SDP larger than {MAX_SDP_SIZE} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
    if len(text) > MAX_SDP_SIZE:
        raise SdpError(f"SDP larger than {MAX_SDP_SIZE} bytes")
    if "\x00" in text:
        raise SdpError("SDP contains NUL")
    raw_lines = [line.rstrip("\r") for line in text.split("\n")]
    raw_lines = [line for line in raw_lines if line.strip() != ""]
    if len(raw_lines) > MAX_LINES:
        raise SdpError(f"SDP has more than {MAX_LINES} lines")
    if not raw_lines or raw_lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    session_lines: list[tuple[str, str]] = []
    media: list[MediaSection] = []
    current: tuple[str, int, str, tuple[str, ...]] | None = None
    current_lines: list[tuple[str, str]] = []
    for line in raw_lines:
        match = _LINE.match(line)
        if match is None:
            raise SdpError(f"not an SDP line: {line[:60]!r}")
        kind, value = match.group(1), match.group(2)
        if "\r" in value:
            raise SdpError("stray CR inside a line")
        if kind == "m":
            if current is not None:
                media.append(MediaSection(*current, lines=tuple(current_lines)))
            if len(media) >= MAX_MEDIA:
                raise SdpError(f"more than {MAX_MEDIA} media sections")
            current = _parse_m_line(value)
            current_lines = []
        elif current is None:
            session_lines.append((kind, value))
        else:
            current_lines.append((kind, value))
    if current is not None:
        media.append(MediaSection(*current, lines=tuple(current_lines)))
    return SessionDescription(lines=tuple(session_lines), media=tuple(media))


def _parse_m_line(value: str) -> tuple[str, int, str, tuple[str, ...]]:
    tokens = value.split(" ")
    if len(tokens) < 3 or any(t == "" for t in tokens):
        raise SdpError(f"bad m= line: {value[:60]!r}")
    kind, port_text, proto = tokens[0], tokens[1].split("/", 1)[0], tokens[2]
    port = _number(port_text, 5)
    if port is None or port > 65535:
        raise SdpError(f"bad port in m= line: {value[:60]!r}")
    return kind, port, proto, tuple(tokens[3:])


def build(
    session_lines: Iterable[tuple[str, str]], media: Iterable[MediaSection]
) -> SessionDescription:
    """A description from lines we generate; refuses values that would break the framing."""
    lines = tuple(session_lines)
    sections = tuple(media)
    for _, value in lines:
        _check_value(value)
    for m in sections:
        for _, value in m.lines:
            _check_value(value)
    return SessionDescription(lines=lines, media=sections)
