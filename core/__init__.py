"""Shared runtime kernel: configuration loading, the event bus, Redis and ffmpeg.

Sits at the bottom beside :mod:`media` (which is pure and sans-I/O); every
package may import it. It holds no business rules.
"""

from core.bus import Event, EventBus, InProcessBus, RedisBus
from core.config import load_section
from core.ffmpeg import ffmpeg_exe, ffprobe_exe

__all__ = [
    "Event",
    "EventBus",
    "InProcessBus",
    "RedisBus",
    "ffmpeg_exe",
    "ffprobe_exe",
    "load_section",
]
