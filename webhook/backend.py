"""What a backend must provide: every capability, none optional.

Both backends (SQLite for `kubewrit serve`, the Kubernetes API for `kubewrit
webhook`) implement each of these. A capability a backend cannot offer is an
implementation that raises `errors.Unsupported` with where to look instead,
never a `None` that silently switches a check off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from kubewrit.webhook.chain import Record

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


@dataclass(frozen=True)
class Backend:
    records: RecordWriter
    approvals: ApprovalStore
    requests: RequestStore
    queries: RecordReader
