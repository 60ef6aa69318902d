"""A backend in memory: the same contracts as SQLite, for fast tests of the workflow.

Not durable, so never used to serve; it exists so the decision workflow (decide,
hold, approve, deny, expire, collect, replay, races) can be tested in
milliseconds against exactly the interfaces the real backends implement.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal

from kubewrit.webhook.approval import Approval, Sealer
from kubewrit.webhook.backend import Backend, RecordQuery, counted
from kubewrit.webhook.budget import LocalBudgets
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Anchor, Draft, Head, Record, epoch
from kubewrit.webhook.decision import Phase
from kubewrit.webhook.keys import Signer
from kubewrit.webhook.policy.history import Facts, Recent, tally
from kubewrit.webhook.recorder import RecordUnavailable
from kubewrit.webhook.requests import RequestKey


class MemoryStore:
    """records (a RecordWriter sealing one chain), approvals, requests and queries."""

    def __init__(
        self, signer: Signer, chain: str = "memory", clock: Callable[[], float] = time.time
    ) -> None:
        self.signer = signer
        self.clock = clock
        self.head = Head(chain)
        self.records: list[Record] = []
        self.anchors: list[Anchor] = []
        self.approvals: dict[str, Approval] = {}
        self.available = True
        self._lock = threading.Lock()

    def backend(self) -> Backend:
        return Backend(
            records=self,
            approvals=self,
            requests=self,
            queries=self,
            budgets=LocalBudgets(self),
            history=self,
        )

    # -- RecordWriter -------------------------------------------------------------

    async def record(self, draft: Draft) -> Record:
        with self._lock:
            if not self.available:
                raise RecordUnavailable("memory store switched off")
            if (
                draft.kind == "decision"
                and draft.request_id
                and self._decision(draft.agent, draft.request_id)
            ):
                raise RecordUnavailable(f"a decision for request {draft.request_id} exists")
            record = self.head.seal_next(draft, self.signer, self.clock())
            self.records.append(record)
            return record

    def _decision(self, agent: str, request_id: str) -> Record | None:
        return next(
            (
                r
                for r in self.records
                if r.kind == "decision" and r.agent == agent and r.request_id == request_id
            ),
            None,
        )

    # -- budget.ChargeSource and HistoryReader --------------------------------------

    def charges(self, limit: str, scope: str, since: float) -> builtins.list[tuple[float, Decimal]]:
        with self._lock:
            return [
                (epoch(r.time), e.amount)
                for r in self.records
                for e in counted(r)
                if e.limit == limit and e.scope == scope and epoch(r.time) > since
            ]

    async def facts(self, questions: Sequence[Recent], action: Action, now: float) -> Facts:
        with self._lock:
            return tally(questions, action, now, [r.to_dict() for r in self.records])

    # -- RequestStore -------------------------------------------------------------

    async def claim(self, key: RequestKey, action_hash: str) -> Record | None:
        with self._lock:
            return self._decision(key.agent, key.request_id)

    async def release(self, key: RequestKey) -> None:
        """Nothing is reserved durably here either."""

    # -- ApprovalStore ------------------------------------------------------------

    def create(self, approval: Approval, sealer: Sealer) -> Approval:
        approval = sealer(replace(approval, uid=approval.id))  # one row, never re-created
        with self._lock:
            if approval.id in self.approvals:
                raise ValueError(f"approval {approval.id} exists")
            self.approvals[approval.id] = approval
        return approval

    def get(self, approval_id: str, namespace: str | None = None) -> Approval | None:
        with self._lock:
            return self.approvals.get(approval_id)

    def swap(self, expected: Phase, updated: Approval) -> bool:
        with self._lock:
            current = self.approvals.get(updated.id)
            if current is None or current.phase is not expected:
                return False
            self.approvals[updated.id] = updated
            return True

    def list(self, phase: Phase | None = None, limit: int = 100) -> list[Approval]:
        with self._lock:
            found = [a for a in self.approvals.values() if phase is None or a.phase is phase]
        return sorted(found, key=lambda a: a.created_at)[:limit]

    # -- RecordReader ---------------------------------------------------------------

    def query(self, q: RecordQuery) -> builtins.list[Record]:
        with self._lock:
            found = [
                r
                for r in self.records
                if (q.agent is None or r.agent == q.agent)
                and (q.tool is None or r.tool == q.tool)
                and (q.decision is None or r.decision == q.decision)
                and (q.after_seq is None or r.seq > q.after_seq)
            ]
        return found[: q.limit]
