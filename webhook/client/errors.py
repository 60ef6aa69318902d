"""What a governed call can end in, besides running. All of them mean: do not run."""

from __future__ import annotations

from typing import Any


class KubewritError(Exception):
    """Base class: the action must not run.

    `code` is the machine-readable reason (the server's reason code, such as
    `default_deny` or `approval_denied`, or a client-side one such as `timeout`);
    `decision` is the server's answer when there was one, so the record that
    proves the decision travels with the exception.
    """

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        decision: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.decision = decision or {}

    @property
    def reason(self) -> str:
        """Alias of `code`, named as the decision API names it."""
        return self.code

    @property
    def record(self) -> dict[str, Any] | None:
        """The provenance record of the decision ({chain, seq, hash}), when there is one."""
        record = self.decision.get("record")
        return record if isinstance(record, dict) else None

    @property
    def record_ref(self) -> str | None:
        """`chain/seq`, the short form a person can look up with `kubewrit records`."""
        record = self.record
        return f"{record.get('chain')}/{record.get('seq')}" if record else None

    @property
    def approval_id(self) -> str | None:
        approval = self.decision.get("approval")
        return approval.get("id") if isinstance(approval, dict) else None

    @property
    def rule_id(self) -> str | None:
        rule = self.decision.get("rule_id")
        return rule if isinstance(rule, str) else None


class ApiError(KubewritError):
    """The server refused the request (bad input, wrong identity, conflict)."""


class ActionDenied(KubewritError):
    """The decision was DENY (or an approver denied, or the approval expired)."""


class ApprovalTimeout(KubewritError):
    """A DEFER was not decided within the caller's wait limit."""


class GovernanceUnavailable(KubewritError):
    """No trustworthy answer: unreachable, timeout, 5xx, or a malformed response. Fail closed."""
