"""Operators' side: configuration, app assembly, the ``berrylive`` CLI, REST API, console.

``create_app``, ``Config`` and ``load_config`` are loaded on first use: other packages
import :mod:`control.events` (the ``broadcast.*`` contract), and importing that must not
assemble the whole app (``control.app`` imports every package). Import them from
``control.app`` / ``control.config`` for static typing.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Config", "create_app", "load_config"]

_LAZY = {"create_app": "control.app", "Config": "control.config", "load_config": "control.config"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'control' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
