"""What kubewrit answers: PERMIT, DEFER or DENY, with the reason and the rule,
and where a DEFER's approval stands. The server, the CLI and the client SDK all
spell these from here (this module depends on nothing, so agents import it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum


class Decision(StrEnum):
    PERMIT = "PERMIT"
    DEFER = "DEFER"
    DENY = "DENY"


class Reason(StrEnum):
    """Machine-readable reason codes. Stable: clients and alerts key on them."""

    RULE_ALLOW = "rule_allow"
    APPROVAL_REQUIRED = "approval_required"
    RISK_ESCALATION = "risk_escalation"
    RULE_DENY = "rule_deny"
    DEFAULT_DENY = "default_deny"
    TYPE_MISMATCH = "type_mismatch"
    INVALID_TOOL_NAME = "invalid_tool_name"
    IDENTITY_MISMATCH = "identity_mismatch"
    IDENTITY_UNAVAILABLE = "identity_unavailable"
    RECORD_UNAVAILABLE = "record_unavailable"
    APPROVED = "approved"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    LIMIT_EXCEEDED = "limit_exceeded"
    LIMIT_UNAVAILABLE = "limit_unavailable"
    MONITOR = "monitor"


DEFAULT_DENY_RULE = "default-deny"


class Phase(StrEnum):
    """An approval's phase; the transitions between them are `approval.ApprovalWorkflow`'s."""

    PENDING = "Pending"
    DECIDING = "Deciding"
    APPROVED = "Approved"
    DENIED = "Denied"
    EXPIRED = "Expired"
    CONSUMED = "Consumed"

    @property
    def open(self) -> bool:
        """Nobody has finished deciding yet: an agent waiting on it keeps waiting."""
        return self in (Phase.PENDING, Phase.DECIDING)


@dataclass(frozen=True)
class Verdict:
    """The policy engine's answer for one action, before it is recorded."""

    decision: Decision
    reason: Reason
    rule_id: str
    risk: str = "low"
    message: str = ""
    policy: str | None = None
    policy_hash: str = ""
    risk_rule: str | None = None
    monitored: Verdict | None = field(default=None)
    # Every enforcing policy whose rules matched: for a DEFER, each must admit the approver.
    holders: tuple[str, ...] = ()

    def but(self, **changes: object) -> Verdict:
        return replace(self, **changes)  # type: ignore[arg-type]
