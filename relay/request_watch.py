"""Where the requests on one HTTP/1.x connection begin and end, for their deadlines.

:class:`RequestWatch` follows the framing of the bytes a client sends: where each request
head ends (``\\r\\n\\r\\n``) and how long its body is (``Content-Length`` or chunked). It
answers one question, "what is the client sending now?" (:class:`Phase`), so the connection
can put a deadline on the head and on the body. It does not interpret requests: the HTTP
stack behind it (aiohttp) parses them and refuses malformed ones itself.

Sans-I/O: bytes in, state out; no clock, no asyncio. Never raises on wire data. Where the
framing is not plain HTTP/1.x any more (an ``Upgrade``, ``CONNECT``, a framing it cannot
follow), it stops (:data:`Phase.DONE`): from then on the connection is the HTTP stack's to
time (aiohttp's keep-alive timeout, the WebSocket's own pings).
"""

from __future__ import annotations

import enum
import re

MAX_REQUEST_HEAD = 64 * 1024
"""A request head longer than this is refused (431): real clients send a few KiB."""
MAX_CHUNK_LINE = 4096
"""A chunk-size or trailer line longer than this is not one the watch follows."""

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class Phase(enum.Enum):
    HEAD = "head"
    """A request head is due or under way (a connection starts here)."""
    BODY = "body"
    """The head is complete; its body is arriving."""
    IDLE = "idle"
    """Between requests: nothing of the next one yet (a response may be under way)."""
    DONE = "done"
    """No longer followed: an upgrade, CONNECT, or framing the watch cannot follow."""
    TOO_LARGE = "too_large"
    """A head over :data:`MAX_REQUEST_HEAD`: the connection should be refused."""


class _Chunk(enum.Enum):
    SIZE = 0
    DATA = 1
    DATA_END = 2
    TRAILER = 3


class RequestWatch:
    """Follows request framing on one connection (see the module docstring).

    ``heads_begun``/``heads_done``/``bodies_begun`` count, so a caller that feeds a chunk
    holding the end of one request and the start of the next still sees both.
    """

    __slots__ = (
        "_after_body",
        "_chunk",
        "_chunked",
        "_head",
        "_line",
        "_remaining",
        "bodies_begun",
        "body_received",
        "heads_begun",
        "heads_done",
        "phase",
    )

    def __init__(self) -> None:
        self.phase = Phase.HEAD
        self.heads_begun = 1
        """Heads begun; the first is due from the accept, before any byte."""
        self.heads_done = 0
        self.bodies_begun = 0
        self.body_received = 0
        """Bytes of the current body received (chunk framing included)."""
        self._head = b""
        self._chunked = False
        self._remaining = 0
        self._chunk = _Chunk.SIZE
        self._line = b""
        self._after_body = Phase.IDLE
        """After the body: the next request (IDLE), or another protocol (DONE: an upgrade)."""

    def feed(self, data: bytes) -> None:
        """Account for ``data``, the next bytes the client sent."""
        pos = 0
        end = len(data)
        while pos < end:
            phase = self.phase
            if phase is Phase.IDLE:
                self.phase = Phase.HEAD
                self.heads_begun += 1
                continue
            if phase is Phase.HEAD:
                pos = self._feed_head(data, pos)
            elif phase is Phase.BODY:
                if self._chunked:
                    pos = self._feed_chunked(data, pos)
                else:
                    pos = self._feed_sized(data, pos)
            else:  # DONE, TOO_LARGE: nothing more to follow
                return

    # -- head ------------------------------------------------------------------------------
    def _feed_head(self, data: bytes, pos: int) -> int:
        held = self._head
        if held:
            buf = held + data[pos:] if pos else held + data
            start = max(0, len(held) - 3)
        else:
            buf = data[pos:] if pos else data
            start = 0
        cut = buf.find(b"\r\n\r\n", start, MAX_REQUEST_HEAD + 4)
        if cut < 0:
            if len(buf) > MAX_REQUEST_HEAD:
                self.phase = Phase.TOO_LARGE
                self._head = b""
                return len(data)
            self._head = buf
            return len(data)
        self._head = b""
        self.heads_done += 1
        self._framing(buf[:cut])
        return pos + (cut + 4 - len(held))

    def _framing(self, head: bytes) -> None:
        """Decide what follows a complete head: nothing, a body, or no more framing."""
        lines = head.lstrip(b"\r\n").split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        length: int | None = None
        chunked = False
        upgrade = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue  # malformed: aiohttp answers 400 and closes
            key = name.strip().lower()
            if key == b"content-length":
                text = value.strip()
                if not text.isdigit() or (length is not None and int(text) != length):
                    self.phase = Phase.DONE  # aiohttp refuses it; nothing to follow
                    return
                length = int(text)
            elif key == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
                if not chunked:
                    self.phase = Phase.DONE  # not a framing a server can read: refused
                    return
            elif key == b"upgrade":
                upgrade = True
        if method == b"CONNECT":
            self.phase = Phase.DONE
            return
        if chunked or length:
            self.phase = Phase.BODY
            self.bodies_begun += 1
            self.body_received = 0
            self._chunked = chunked
            self._remaining = 0 if chunked else int(length or 0)
            self._chunk = _Chunk.SIZE
            self._line = b""
            # An upgrade's body is timed; what follows it is another protocol's.
            self._after_body = Phase.DONE if upgrade else Phase.IDLE
            return
        self.phase = Phase.DONE if upgrade else Phase.IDLE

    # -- body ------------------------------------------------------------------------------
    def _feed_sized(self, data: bytes, pos: int) -> int:
        take = min(self._remaining, len(data) - pos)
        self._remaining -= take
        self.body_received += take
        if self._remaining == 0:
            self.phase = self._after_body
        return pos + take

    def _feed_chunked(self, data: bytes, pos: int) -> int:
        end = len(data)
        while pos < end:
            state = self._chunk
            if state is _Chunk.DATA or state is _Chunk.DATA_END:
                take = min(self._remaining, end - pos)
                self._remaining -= take
                self.body_received += take
                pos += take
                if self._remaining == 0:
                    if state is _Chunk.DATA:
                        self._chunk = _Chunk.DATA_END
                        self._remaining = 2  # the CRLF after a chunk's data
                    else:
                        self._chunk = _Chunk.SIZE
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self.body_received += end - pos
                self._line += data[pos:]
                if len(self._line) > MAX_CHUNK_LINE:
                    self.phase = Phase.DONE
                return end
            self.body_received += nl + 1 - pos
            line = (self._line + data[pos:nl] if self._line else data[pos:nl]).rstrip(b"\r")
            self._line = b""
            pos = nl + 1
            if state is _Chunk.SIZE:
                size = line.split(b";", 1)[0].strip()
                if _HEX.fullmatch(size) is None:
                    self.phase = Phase.DONE  # aiohttp refuses it
                    return pos
                n = int(size, 16)
                if n:
                    self._chunk = _Chunk.DATA
                    self._remaining = n
                else:
                    self._chunk = _Chunk.TRAILER
            elif not line:  # the empty line after the trailers: the body is complete
                self.phase = self._after_body
                return pos
        return pos
