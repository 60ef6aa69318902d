"""What a governed call can end in, besides running. All of them mean: do not run."""

from __future__ import annotations

from typing import Any


class KubewritError(Exception):
    """Base class: the action must not run."""

    def __init__(self, code: str, message: str, status: int | None = None,
                 decision: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.decision = decision or {}

    @property
    def record(self) -> dict[str, Any] | None:
        """The provenance record of the decision, when there is one."""
        return self.decision.get("record")


class ApiError(KubewritError):
    """The server refused the request (bad input, wrong identity, conflict)."""


class ActionDenied(KubewritError):
    """The decision was DENY (or an approver denied, or the approval expired)."""


class ApprovalTimeout(KubewritError):
    """A DEFER was not decided within the caller's wait limit."""


class GovernanceUnavailable(KubewritError):
    """No trustworthy answer: unreachable, timeout, 5xx, or a malformed response. Fail closed."""
