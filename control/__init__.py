"""Operators' side: configuration, app assembly, the ``berrylive`` CLI, REST API, console."""

from control.app import create_app
from control.config import Config, load_config

__all__ = ["Config", "create_app", "load_config"]
