"""Typed configuration sections loaded from a TOML mapping plus ``BERRYLIVE_*`` env vars.

Each package defines its own frozen dataclass (``RelayConfig``, ``DanmakuConfig``...);
:func:`load_section` fills one from ``[section]`` of the TOML file, then from environment
variables named ``BERRYLIVE_<SECTION>_<FIELD>`` (upper case). ``control.config`` composes
the sections into the one ``Config`` passed to constructors.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type."""


def _convert(name: str, raw: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw == "" and type(None) in args):
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(name, raw, non_none[0])
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(raw, str) and raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {raw!r}")
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if tp is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if tp is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected a string, got {raw!r}")
        return raw
    if origin is tuple:
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        items = [i.strip() if isinstance(i, str) else i for i in items]
        items = [i for i in items if i != ""]
        inner = args[0] if args else str
        return tuple(_convert(name, i, inner) for i in items)
    return raw


def load_section(
    cls: type[T],
    section: str,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> T:
    """Build the frozen dataclass ``cls`` from TOML ``data[section]``, env, then overrides.

    Unknown keys in the TOML section are an error (a typo must not be silently ignored).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    env = os.environ if env is None else env
    raw_section = dict((data or {}).get(section, {}) or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw_section) - set(fields)
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s) {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in fields:
        key = f"{section}.{name}"
        env_name = f"BERRYLIVE_{section.upper()}_{name.upper()}"
        if name in overrides and overrides[name] is not None:
            values[name] = _convert(key, overrides[name], hints[name])
        elif env_name in env:
            values[name] = _convert(key, env[env_name], hints[name])
        elif name in raw_section:
            values[name] = _convert(key, raw_section[name], hints[name])
    return cls(**values)
