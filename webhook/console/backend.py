"""What the console needs from a backend, whichever one (standalone or Kubernetes) serves it.

The pages are the same in both modes; only who acts and where the data lives differ.
Standalone, the console acts as the signed-in approver through the authority; on
Kubernetes, it acts with the approver's own kubeconfig, so the API server and the
operator's webhooks decide whether the approver may.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kubewrit.webhook import verify as verification
from kubewrit.webhook.approval import Approval
from kubewrit.webhook.chain import Record
from kubewrit.webhook.policy.model import Policy


class SignInRefused(Exception):
    """The secret given at sign-in does not belong to someone who may use the console."""


class ActionRefused(Exception):
    """The backend refused what the approver asked (its own words, shown on the page)."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class Viewer:
    """Who is signed in. `secret` stays server-side: it is re-checked on every request."""

    name: str
    groups: tuple[str, ...] = ()
    secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class RecordFilter:
    agent: str | None = None
    tool: str | None = None
    decision: str | None = None
    reason: str | None = None
    since: str | None = None  # RFC 3339 prefix, compared as text (records' times are UTC)
    limit: int = 200

    def admits(self, record: Record) -> bool:
        """The filters a backend cannot push down to its store, applied to what it returned."""
        checks = (
            (self.agent, record.agent),
            (self.tool, record.tool),
            (self.decision, record.decision),
            (self.reason, record.reason),
        )
        if any(wanted and wanted != actual for wanted, actual in checks):
            return False
        return not (self.since and record.time < self.since)


@dataclass(frozen=True)
class ChainStatus:
    """The verdict of `kubewrit verify`'s code over what this console can read."""

    report: verification.Report | None
    unavailable: str | None = None

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok

    @property
    def first_problem(self) -> verification.Problem | None:
        problems = self.report.problems if self.report else []
        return problems[0] if problems else None


@dataclass(frozen=True)
class PolicyView:
    """The policies in force, plus why the last change was refused (if one was)."""

    policies: Sequence[Policy]
    errors: Sequence[str] = ()
    loaded_at: float | None = None


class ConsoleBackend(Protocol):
    mode: str  # "standalone" | "kubernetes"
    secret_label: str  # what the sign-in form asks for
    namespace: str | None  # where new playground actions are decided (None standalone)
    poll_seconds: float  # how often the live queue looks for changes

    async def sign_in(self, secret: str) -> Viewer:
        """Who `secret` belongs to; SignInRefused if they may not use the console."""
        ...

    async def still_valid(self, viewer: Viewer) -> bool: ...

    async def approvals(self) -> list[Approval]: ...

    async def approval(self, approval_id: str) -> Approval | None: ...

    async def decide(
        self, viewer: Viewer, approval_id: str, approve: bool, reason: str | None
    ) -> Approval:
        """Approve or deny as `viewer`; ActionRefused with the backend's message if refused."""
        ...

    async def records(self, query: RecordFilter) -> list[Record]:
        """Matching records, oldest first, at most `query.limit` (the most recent ones)."""
        ...

    async def record(self, chain: str, seq: int) -> Record | None: ...

    async def chain_status(self) -> ChainStatus: ...

    async def policies(self) -> PolicyView: ...
