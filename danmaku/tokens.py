"""Viewer tokens live in :mod:`core.tokens` (the hub, the shop and the control plane all
use them); this module keeps the hub's import path."""

from core.tokens import Role, TokenError, Viewer, issue_token, verify_token

__all__ = ["Role", "TokenError", "Viewer", "issue_token", "verify_token"]
