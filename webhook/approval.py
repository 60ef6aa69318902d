"""Approval requests: a DEFER waiting for a human, bound to one action hash.

Phases move one way only: Pending -> Approved | Denied | Expired, and
Approved -> Consumed when the agent collects its writ. Every transition is a
compare-and-swap on the phase, so two approvers (or an approver and the
expiry sweep) can never both win.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol


class Phase(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    DENIED = "Denied"
    EXPIRED = "Expired"
    CONSUMED = "Consumed"

    @property
    def final(self) -> bool:
        return self is not Phase.PENDING


DEFAULT_TTL_SECONDS = 15 * 60


@dataclass(frozen=True)
class Approval:
    id: str
    agent: str
    tool: str
    action_hash: str
    action: dict[str, Any]
    rule: str
    risk: str
    reason: str
    message: str
    policy_hash: str
    created_at: float
    expires_at: float
    phase: Phase = Phase.PENDING
    request_id: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    decision_reason: str | None = None
    outcome: dict[str, Any] | None = field(default=None)
    namespace: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        return cls(**{**data, "phase": Phase(data["phase"])})

    def moved(self, phase: Phase, **changes: Any) -> Approval:
        return replace(self, phase=phase, **changes)


def new_id() -> str:
    return "apr-" + secrets.token_hex(8)


class ApprovalStore(Protocol):
    def create(self, approval: Approval) -> None: ...

    def get(self, approval_id: str) -> Approval | None: ...

    def swap(self, expected: Phase, updated: Approval) -> bool:
        """Store `updated` only if the stored phase is still `expected`."""
        ...

    def list(self, phase: Phase | None = None, limit: int = 100) -> list[Approval]: ...
