"""The ``Frame``: one audio, video or script message, made once by ingest.

The payload is the FLV tag body (= the RTMP message payload). Output encodings are built
lazily, once, and the same ``bytes`` object is shared by every viewer.
"""

from __future__ import annotations

from enum import IntEnum

from media import flv
from media.errors import FLVError
from media.rtmp.chunk import encode_message


class Kind(IntEnum):
    AUDIO = flv.TAG_AUDIO
    VIDEO = flv.TAG_VIDEO
    SCRIPT = flv.TAG_SCRIPT


# Chunk stream ids used for media sent to players.
CSID_SCRIPT = 5
CSID_AUDIO = 4
CSID_VIDEO = 6
_CSID = {Kind.AUDIO: CSID_AUDIO, Kind.VIDEO: CSID_VIDEO, Kind.SCRIPT: CSID_SCRIPT}


class Frame:
    """An immutable media frame. ``dts`` is in ms on the stream's continuous timeline."""

    __slots__ = (
        "_flv",
        "_rtmp",
        "_rtmp_chunk",
        "cts",
        "dts",
        "header",
        "keyframe",
        "kind",
        "payload",
    )

    def __init__(
        self,
        kind: Kind,
        dts: int,
        payload: bytes,
        *,
        keyframe: bool = False,
        header: bool = False,
        cts: int = 0,
    ) -> None:
        self.kind = kind
        self.dts = dts
        self.payload = payload
        self.keyframe = keyframe
        self.header = header
        self.cts = cts
        self._flv: bytes | None = None
        self._rtmp: bytes | None = None
        self._rtmp_chunk = 0

    @classmethod
    def from_payload(cls, kind: Kind, dts: int, payload: bytes) -> Frame:
        """Classify an RTMP/FLV payload (keyframe, sequence header, CTS)."""
        if kind == Kind.VIDEO:
            try:
                info = flv.parse_video_header(payload)
            except FLVError:
                return cls(kind, dts, payload)
            return cls(
                kind,
                dts,
                payload,
                keyframe=info.keyframe,
                header=info.sequence_header,
                cts=info.cts,
            )
        if kind == Kind.AUDIO:
            try:
                ainfo = flv.parse_audio_header(payload)
            except FLVError:
                return cls(kind, dts, payload)
            return cls(kind, dts, payload, header=ainfo.sequence_header)
        return cls(kind, dts, payload)

    def with_dts(self, dts: int) -> Frame:
        return Frame(
            self.kind, dts, self.payload, keyframe=self.keyframe, header=self.header, cts=self.cts
        )

    @property
    def pts(self) -> int:
        return self.dts + self.cts

    def flv_tag(self) -> bytes:
        """FLV tag bytes (header + body + PreviousTagSize), built once."""
        b = self._flv
        if b is None:
            b = self._flv = flv.tag(int(self.kind), self.dts, self.payload)
        return b

    def rtmp_message(self, chunk_size: int, stream_id: int = 1) -> bytes:
        """RTMP chunks (fmt0 + fmt3) of this frame for players, built once per chunk size."""
        b = self._rtmp
        if b is None or self._rtmp_chunk != chunk_size or stream_id != 1:
            from media.rtmp.chunk import AUDIO, DATA_AMF0, VIDEO

            type_id = {Kind.AUDIO: AUDIO, Kind.VIDEO: VIDEO, Kind.SCRIPT: DATA_AMF0}[self.kind]
            b = encode_message(
                _CSID[self.kind], type_id, stream_id, self.dts, self.payload, chunk_size
            )
            if stream_id != 1:
                return b
            self._rtmp = b
            self._rtmp_chunk = chunk_size
        return b

    def __len__(self) -> int:
        return len(self.payload)

    def __repr__(self) -> str:
        flags = ("K" if self.keyframe else "") + ("H" if self.header else "")
        return f"Frame({self.kind.name}, dts={self.dts}, {len(self.payload)}B {flags})"
