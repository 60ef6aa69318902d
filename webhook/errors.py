"""Domain errors, typed by what went wrong, never by how HTTP spells it.

The decision workflow raises these; only the HTTP layer (`server/app.py`) maps
them to status codes. Each carries a stable machine-readable `code` (clients and
alerts key on it) and, where a decision was recorded on the way to the refusal,
the `outcome` so the record travels with the error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubewrit.webhook.authority import Outcome


class DomainError(Exception):
    """A request kubewrit refuses. Subclasses say why; `code` says exactly what."""

    def __init__(self, code: str, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.outcome = outcome


class InvalidRequest(DomainError):
    """The request cannot be understood as sent (malformed body, bad parameter)."""


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than the configured limit; it was not buffered."""


class Unauthenticated(DomainError):
    """No credential, or one nobody issued."""


class Forbidden(DomainError):
    """The caller is known but may not do this (wrong role, someone else's action)."""


class NotFound(DomainError):
    """The thing named does not exist (or is not visible to this caller)."""


class Conflict(DomainError):
    """The request contradicts the current state (already decided, id reused, expired)."""


class Unavailable(DomainError):
    """kubewrit cannot answer safely right now (the record store is down): fail closed."""


class Unsupported(DomainError):
    """This backend does not offer the capability; the message says where to look instead."""
