"""The headless Chromium that browser tests drive through Playwright's ``executable_path``.

Looked up once per test session, in this order:

1. ``BERRYLIVE_CHROMIUM``: a Chromium (or Chrome) binary named explicitly;
2. the npm package ``@sparticuz/chromium`` installed by ``make test`` under
   ``tests/chromium/node_modules`` (a brotli-packed Linux Chromium that unpacks itself into
   the temp dir on first use; no system library needed);
3. the system ``chromium`` (Debian's package), if one is installed.

Every browser test gets it from :func:`chromium_executable` and launches with
:data:`LAUNCH_ARGS`, so the WebRTC and viewer-page tests to come reuse the same lookup.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent / "chromium"
"""Where ``make test`` runs ``npm ci`` for ``@sparticuz/chromium``."""

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--no-zygote",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

_UNPACK = (
    "const m = require('@sparticuz/chromium');"
    "(m.default || m).executablePath().then((p) => console.log(p))"
    ".catch((e) => { console.error(String(e)); process.exit(1); });"
)


class BrowserUnavailable(RuntimeError):
    pass


def _packaged() -> tuple[str | None, str]:
    module = PACKAGE_DIR / "node_modules" / "@sparticuz" / "chromium"
    if not module.is_dir():
        return None, f"{module} missing (make test runs npm ci in {PACKAGE_DIR})"
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed (needed to unpack @sparticuz/chromium)"
    try:
        out = subprocess.run(
            [node, "-e", _UNPACK],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        return None, "unpacking @sparticuz/chromium timed out"
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return None, f"@sparticuz/chromium did not unpack: {out.stderr.strip()[-500:]}"
    exe = lines[-1].strip()
    if not os.access(exe, os.X_OK):
        return None, f"@sparticuz/chromium gave {exe!r}, which is not executable"
    return exe, ""


@functools.cache
def chromium_executable() -> str:
    """Path of the Chromium binary for Playwright; raises :class:`BrowserUnavailable` with
    every place looked at when there is none."""
    explicit = os.environ.get("BERRYLIVE_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BrowserUnavailable(f"BERRYLIVE_CHROMIUM={explicit} is not an executable")
        return explicit
    exe, why = _packaged()
    if exe is not None:
        return exe
    system = shutil.which("chromium") or shutil.which("chromium-browser")
    if system is not None:
        return system
    raise BrowserUnavailable(
        "no Chromium: BERRYLIVE_CHROMIUM is unset; " + why + "; no system chromium on PATH"
    )
