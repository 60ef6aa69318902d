"""What a backend must provide: every capability, none optional.

Both backends (SQLite for `kubewrit serve`, the Kubernetes API for `kubewrit
webhook`) implement each of these. A capability a backend cannot offer is an
implementation that raises `errors.Unsupported` with where to look instead,
never a `None` that silently switches a check off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kubewrit.webhook.budget import Budgets, LimitEntry
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Record
from kubewrit.webhook.policy.history import Facts, Recent

if TYPE_CHECKING:
    from kubewrit.webhook.approval import ApprovalStore
    from kubewrit.webhook.outcome import RecordWriter
    from kubewrit.webhook.requests import RequestStore


@dataclass(frozen=True)
class RecordQuery:
    chain: str | None = None
    agent: str | None = None
    tool: str | None = None
    decision: str | None = None
    after_seq: int | None = None
    limit: int = 100
    namespace: str | None = None


class RecordReader(Protocol):
    def query(self, q: RecordQuery) -> list[Record]: ...


class HistoryReader(Protocol):
    async def facts(self, questions: Sequence[Recent], action: Action, now: float) -> Facts:
        """How many of each question's tools were permitted to this agent (or session)
        within its window before `now`, from the durable records."""
        ...


def counted(record: Record) -> list[LimitEntry]:
    """The limit entries a record adds to its budgets: a PERMIT's, never an exceeded one."""
    if record.decision != "PERMIT" or not record.limits:
        return []
    entries = [LimitEntry.from_dict(item) for item in record.limits]
    return [e for e in entries if not e.exceeded]


@dataclass(frozen=True)
class Backend:
    records: RecordWriter
    approvals: ApprovalStore
    requests: RequestStore
    queries: RecordReader
    budgets: Budgets
    history: HistoryReader
