from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RelayConfig:
    gop_max_frames: int = 1500
    """GOP cache bound in frames; beyond it the cache is cut (stream without keyframes)."""
    gop_max_bytes: int = 16 * 1024 * 1024
    """GOP cache bound in bytes."""
    audio_only_cache_ms: int = 2000
    """For a stream without video, the cache keeps this much of the latest audio (every
    audio frame is a sync point): a new viewer, and the recorder, start with it, as a video
    stream's viewers start with its GOP."""
    viewer_max_backlog_bytes: int = 4 * 1024 * 1024
    """A viewer further behind than this skips to the next keyframe."""
    viewer_drop_after_skips: int = 8
    """A viewer that has skipped this many times in a row without catching up is dropped."""
    viewer_max_lag_ms: int = 3000
    """A viewer whose queued media spans more than this skips to the next keyframe."""
    write_coalesce_ms: int = 40
    """Once a stream has ``write_coalesce_min_viewers`` viewers, its frames are merged into
    one write per viewer per batch (0 = never merge: every frame is written at once). A
    batch closes at the next video frame (so pictures go out as they come, with the audio
    since the previous one) or after this many milliseconds, whichever comes first: audio
    waits at most this long (in practice until the next picture). Longer at large
    audiences, see ``write_coalesce_per_viewer_us``. A new viewer's first bytes (headers +
    GOP cache) are always written at once."""
    write_coalesce_min_viewers: int = 200
    """Coalesce only when there is load to save: below this many viewers of a stream every
    frame is written to every viewer as it arrives (no batching, no added latency); from
    this many on frames are merged, until the audience falls below three quarters of it
    (hysteresis: an audience hovering at the threshold does not flip the mode on every
    join). 0: merge at any audience."""
    write_coalesce_max_ms: int = 90
    """Longest batch, however large the audience (see ``write_coalesce_per_viewer_us``); a
    tick in which 16 or more viewers joined makes the next batch this long, pictures or
    not. Keep it below 100 ms."""
    write_coalesce_per_viewer_us: int = 45
    """Batch length per viewer: ``max(write_coalesce_ms, min(write_coalesce_max_ms,
    viewers x this))``. With video the batch closes at the next picture anyway; a longer
    wait at large audiences keeps audio from being sent alone (a whole extra fan-out that
    delays the next picture), and keeps system calls per second about flat for audio-only
    streams. 0 keeps it fixed at ``write_coalesce_ms``."""
    publisher_linger: float = 10.0
    """Seconds a stream (and its viewers) waits for the publisher to come back."""
    # ---- the HTTP port (docs/cluster.md, "Deadlines on the HTTP port") ---------------
    http_head_timeout: float = 10.0
    """Seconds a request head may take: from the accept for a connection's first request,
    from its first byte for a later one on a keep-alive connection. A deadline for the whole
    head, not per read (a byte a second does not keep a connection); then 408 and close."""
    http_body_timeout: float = 10.0
    """Seconds a request body may take beyond what ``http_body_min_rate`` allows for the
    bytes already received; a slower body closes the connection (its request is not
    handled). Only the reading of a request is timed: responses (HTTP-FLV, WS-FLV,
    long-polls) last as long as they need."""
    http_body_min_rate: int = 32 * 1024
    """Bytes per second a request body must keep up on average (after the
    ``http_body_timeout`` grace): a 5 MiB cover over a 256 kbit/s uplink passes, a body
    trickled a few bytes at a time does not. 0: the body must be complete within
    ``http_body_timeout``."""
    http_keepalive_timeout: float = 30.0
    """Seconds an idle keep-alive connection is kept before it is closed (aiohttp's
    ``keepalive_timeout``)."""
    http_max_connections: int = 10_000
    """Most connections at once on the HTTP port (viewers, API, Socket.IO). At it, a new
    connection closes (503) the oldest one that has not sent a complete request head yet,
    and gets 503 itself only when every one has. 0: no limit (the file-descriptor limit
    still is one)."""
    http_max_connections_per_ip: int = 1000
    """Most connections at once on the HTTP port from one address (an IPv6 /64 counts as one
    address). Generous: viewers behind a carrier NAT share an address. 0: no limit."""
    # ---- LL-HLS (docs/hls.md) ------------------------------------------------------
    hls_part_target: float = 0.333
    """LL-HLS ``PART-TARGET`` (seconds): no part is longer (the cutter flushes before)."""
    hls_segment_target: float = 1.0
    """A segment closes at the first keyframe once it is this long (so a 2 s GOP gives
    2 s segments)."""
    hls_segment_max: float = 4.0
    """A segment closes at a part boundary once it is this long, keyframe or not (rare
    keyframes); sets ``EXT-X-TARGETDURATION`` (this + a part, rounded)."""
    hls_window: int = 6
    """Complete segments listed in the live playlist (and kept in memory, + 3 retired)."""
    hls_package_always: bool = True
    """Origins package every live stream from its first frame (the first HLS viewer finds
    a running packager: no warm-up stall in hls.js; ~0.1 % of a core and up to
    ``hls_window`` + 3 segments of memory per stream). False, and always on edges: a
    stream is packaged from the first HLS request (starting from the GOP cache) until
    ``hls_idle_timeout`` after the last."""
    hls_idle_timeout: float = 30.0
    """Seconds after the last HLS request (playlist, part, segment) a stream's packaging
    stops; the next request starts it again from the GOP cache."""
    hls_block_timeout: float = 0.0
    """Seconds a blocking playlist or preload-hint request is held before 503;
    0: 3 x ``EXT-X-TARGETDURATION``."""
    hls_max_waiters_stream: int = 2000
    """Blocking requests held at once for one stream; more get 503 at once."""
    hls_max_waiters: int = 20000
    """Blocking requests held at once on this node; more get 503 at once."""
    # ---- cluster (docs/cluster.md) -------------------------------------------------
    origins: tuple[str, ...] = ()
    """Edge: origins (``http://host:port`` HTTP-FLV, ``rtmp://host:port`` RTMP) tried after
    the Redis stream directory."""
    edge_idle_linger: float = 5.0
    """Edge: seconds a pull goes on after its last viewer left (a quick return reuses it)."""
    max_pulls: int = 256
    """Edge: streams pulled at once at most; a first viewer beyond that gets 404."""
    pull_connect_timeout: float = 3.0
    """Edge: seconds to connect to an origin and get its response headers."""
    pull_read_timeout: float = 5.0
    """Edge: an upstream silent this long is dropped and re-pulled."""
    pull_retry_min: float = 0.2
    """Edge: first retry delay after an upstream is lost (doubles, full jitter)."""
    pull_retry_max: float = 3.0
    """Edge: retry delay cap."""
    cluster_prefix: str = "berrylive:cluster:"
    """Redis key prefix of the node and stream directory (one per cluster sharing a Redis)."""
    cluster_heartbeat: float = 1.0
    """Seconds between load/stream registrations in Redis."""
    cluster_ttl: float = 4.0
    """A node or stream registration not refreshed for this long is dead."""
    scheduler_cpu_weight: float = 10.0
    """Scheduler: viewers one CPU percent counts for when comparing edges' load."""
    forward: tuple[str, ...] = ()
    """Origin: ``APP[/STREAM]=rtmp://host/app/key`` pushes of live streams to other servers."""
    forward_retry_max: float = 30.0
    """Origin: forward reconnect delay cap (seconds, full jitter)."""
