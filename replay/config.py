from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplayConfig:
    """``[replay]`` section; every field also reads ``BERRYLIVE_REPLAY_<FIELD>``."""

    enabled: bool = True
    """Record every live stream into live HLS and a VOD replay."""
    apps: tuple[str, ...] = ()
    """Apps whose streams are recorded (empty = every app). A broadcast whose settings say
    ``replay: false`` (``broadcast.*`` events) is not recorded either."""
    segment_seconds: float = 2.0
    """HLS target segment duration (segments are cut at keyframes, so a segment lasts at
    least one GOP)."""
    segment_type: str = "mpegts"
    """``mpegts`` (``.ts``, plays everywhere) or ``fmp4`` (``.m4s`` + ``init.mp4``)."""
    ffmpeg: str = ""
    """ffmpeg binary for recording and remuxing; empty = ``core.ffmpeg.ffmpeg_exe()`` for
    H.264/AAC and the bundled recent ffmpeg for Enhanced-RTMP codecs (HEVC, AV1)."""
    max_backlog_bytes: int = 8 * 1024 * 1024
    """Bytes queued for one ffmpeg's stdin before the recorder skips to the next keyframe
    (ffmpeg fell behind, logged); after ``relay.viewer_drop_after_skips`` skips in a row the
    ffmpeg is cut and restarted (a new part)."""
    restart_backoff: float = 1.0
    """Seconds before restarting an ffmpeg that died (doubles per crash, up to 30 s)."""
    max_restarts: int = 20
    """Crashes per recording after which recording gives up (the replay keeps what it has)."""
    resume_window: float = 300.0
    """When a stream belongs to a broadcast that is still live or interrupted (``broadcast.*``
    events) and its hub goes away, the replay stays open this long for the publisher to
    come back (a new part); ``broadcast.ended`` finalises it at once. Keep it above
    control's ``interrupt_grace``. Streams without a broadcast end with their hub."""
    mp4: bool = True
    """Remux a ``+faststart`` MP4 from the segments when a broadcast ends."""
    thumbnail_interval: float = 10.0
    """Seconds between scrubbing thumbnails (sprite + WebVTT); 0 disables them."""
    thumbnail_width: int = 160
    """Width of a thumbnail in the sprite (height keeps the aspect ratio)."""
    sprite_columns: int = 10
    """Thumbnails per sprite row (a sprite holds ``sprite_columns``² thumbnails)."""
    clip_max_seconds: float = 300.0
    """Longest product clip: from a ``card.pushed`` to the next card, a clear, the end of
    the replay or this many seconds."""
    clip_min_seconds: float = 1.0
    """Cards shown for less than this make no clip."""
    max_age_days: float = 30.0
    """Replays older than this are deleted (0 = keep forever)."""
    max_total_bytes: int = 20 * 1024**3
    """Total size of all replays (recordings in progress count, they are never deleted); the
    oldest finished ones are deleted beyond it at each retention sweep (0 = no cap)."""
    min_free_bytes: int = 1024**3
    """Free-space floor on the recording filesystem (which holds the database and Redis's
    append-only file too by default): below ``max(min_free_bytes, min_free_percent)`` every
    recording pauses (logged, ``berrylive_replay_recording_paused{reason="disk"}`` = 1, the
    replay's ``paused`` says ``disk``) and resumes, in a new part, once free space is back
    above it. 0 (and ``min_free_percent`` 0) = no floor."""
    min_free_percent: float = 5.0
    """The floor as a share of the filesystem's size; the larger of the two applies."""
    disk_check_interval: float = 5.0
    """Seconds between free-space checks."""
    broadcast_check_interval: float = 5.0
    """Seconds a broadcast's state read from control's records is trusted: a replay whose
    broadcast is banned or deleted is refused on read even if the ``broadcast.banned`` /
    ``broadcast.deleted`` event was missed (at most this late)."""
    retention_interval: float = 600.0
    """Seconds between retention sweeps."""
    finalize_concurrency: int = 2
    """Replays finalised at once (each runs ffmpeg remux / thumbnails / clips in turn)."""
    process_timeout: float = 600.0
    """Longest a remux/thumbnail/clip ffmpeg may run before it is killed."""
