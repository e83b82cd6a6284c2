"""Domain errors of the shop; the API turns them into ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from typing import Any


class ShopError(Exception):
    """A refusal with an HTTP status, a stable machine code and a human reason."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def invalid(field: str, message: str) -> ShopError:
    return ShopError(400, "invalid_field", f"{field}: {message}", field=field)


def not_found(what: str, ident: object) -> ShopError:
    return ShopError(404, f"{what}_not_found", f"no {what.replace('_', ' ')} {ident!s}")


def unknown_ref(what: str, ident: object) -> ShopError:
    """A body refers to something that does not exist (422: the request itself is fine)."""
    return ShopError(422, f"unknown_{what}", f"no {what.replace('_', ' ')} {ident!s}")


def conflict(code: str, message: str, **extra: Any) -> ShopError:
    return ShopError(409, code, message, **extra)


class ProviderUnavailable(Exception):
    """The payment provider did not answer (or answered nonsense); try again later."""
