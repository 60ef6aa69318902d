"""The authority: canonicalize, evaluate, record, then answer.

Nothing is answered before its record is durable. Every path that cannot
record, or cannot tell who is asking, ends in DENY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubewrit.webhook import approval as approval_module
from kubewrit.webhook import canonical, policy, writ
from kubewrit.webhook.approval import Approval, ApprovalStore, Phase
from kubewrit.webhook.canonical import Action, InvalidToolName
from kubewrit.webhook.chain import Draft, Record
from kubewrit.webhook.decision import Decision, Reason, Verdict
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.keys import Signer
from kubewrit.webhook.policy.model import Policy
from kubewrit.webhook.recorder import RecordUnavailable

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request that is answered with an HTTP error (and, where it matters, a record)."""

    def __init__(
        self, status: int, code: str, message: str, outcome: Outcome | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.outcome = outcome


@dataclass(frozen=True)
class ActionInput:
    """An action as the caller sent it: nothing here is trusted yet."""

    tool: str
    args: Mapping[str, Any] | None = None
    operation: str | None = None
    agent: str | None = None
    context: Mapping[str, Any] | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    action_hash: str
    record: Record | None
    writ: str | None = None
    approval: Approval | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> Decision:
        return self.verdict.decision


PolicySource = Callable[[], Sequence[Policy]]


class RecordWriter(Protocol):
    """A Recorder, or a pool of them (one chain per namespace in Kubernetes)."""

    async def record(self, draft: Draft) -> Record: ...


Listener = Callable[[str, dict[str, Any]], None]


def verdict_from_record(record: Record) -> Verdict:
    return Verdict(
        Decision(record.decision),
        Reason(record.reason),
        record.rule,
        record.risk,
        record.message,
        None,
        record.policy_hash,
    )


def admit(
    agent: str,
    tool: str,
    args: Mapping[str, Any] | None,
    operation: str | None = None,
    context: Mapping[str, Any] | None = None,
    namespace: str | None = None,
) -> tuple[Action, Verdict | None]:
    """The canonical action, or the action as sent plus its DENY when the tool name is unsafe.

    A look-alike tool name is decided (and recorded), never matched and never an error;
    the server and `kubewrit check` share this so they cannot disagree.
    """
    try:
        return canonical.build_action(agent, tool, args, operation, context, namespace), None
    except InvalidToolName as exc:
        canonical.check_value(args or {})
        raw = Action(agent, exc.raw, dict(args or {}), operation, namespace=namespace)
        refusal = Verdict(Decision.DENY, Reason.INVALID_TOOL_NAME, "tool-name", message=exc.message)
        return raw, refusal


class Authority:
    def __init__(
        self,
        policies: PolicySource,
        recorder: RecordWriter,
        approvals: ApprovalStore,
        signer: Signer,
        find_request: Callable[[str, str], Record | None] | None = None,
        writ_ttl: int = writ.DEFAULT_TTL_SECONDS,
        approval_ttl: float = 15 * 60,
    ) -> None:
        self.policies = policies
        self.recorder = recorder
        self.approvals = approvals
        self.signer = signer
        self.find_request = find_request
        self.writ_ttl = writ_ttl
        self.approval_ttl = approval_ttl
        self.listeners: list[Listener] = []
        self._approval_lock = threading.Lock()
        self._changed = asyncio.Condition()

    # -- events -------------------------------------------------------------

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(kind, payload)
            except Exception:  # a broken listener must never break a decision
                log.exception("event listener failed")

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- deciding -----------------------------------------------------------

    def _draft(
        self, kind: str, action: Action, verdict: Verdict, action_hash: str, **extra: Any
    ) -> Draft:
        return Draft(
            kind=kind,
            decision=verdict.decision.value,
            reason=verdict.reason.value,
            agent=action.agent,
            tool=action.tool,
            action_hash=action_hash,
            policy_hash=verdict.policy_hash,
            rule=verdict.rule_id,
            risk=verdict.risk,
            message=verdict.message[:500],
            namespace=action.namespace,
            **extra,
        )

    async def _finish(self, kind: str, action: Action, verdict: Verdict, **extra: Any) -> Outcome:
        """Record the verdict; only then attach a writ or open an approval."""
        action_hash = canonical.action_hash(action)
        try:
            record = await self.recorder.record(
                self._draft(kind, action, verdict, action_hash, **extra)
            )
        except RecordUnavailable as exc:
            denied = verdict.but(
                decision=Decision.DENY,
                reason=Reason.RECORD_UNAVAILABLE,
                message=f"decision could not be recorded: {exc}",
            )
            self._emit(
                "decision",
                {
                    "decision": "DENY",
                    "reason": "record_unavailable",
                    "agent": action.agent,
                    "tool": action.tool,
                },
            )
            return Outcome(denied, action_hash, None)
        outcome = Outcome(verdict, action_hash, record)
        if verdict.decision is Decision.PERMIT and kind == "decision":
            outcome = Outcome(
                verdict, action_hash, record, writ.issue(self.signer, record, self.writ_ttl)
            )
        elif verdict.decision is Decision.DEFER:
            approval = self._open_approval(action, verdict, action_hash, extra.get("request_id"))
            outcome = Outcome(verdict, action_hash, record, approval=approval)
        self._emit(
            "decision",
            {
                "decision": verdict.decision.value,
                "reason": verdict.reason.value,
                "agent": action.agent,
                "tool": action.tool,
                "rule": verdict.rule_id,
                "seq": record.seq,
                "approval": outcome.approval.id if outcome.approval else None,
            },
        )
        return outcome

    def _open_approval(
        self, action: Action, verdict: Verdict, action_hash: str, request_id: str | None
    ) -> Approval:
        now = time.time()
        approval = Approval(
            id=approval_module.new_id(),
            namespace=action.namespace,
            agent=action.agent,
            tool=action.tool,
            action_hash=action_hash,
            action=action.car(),
            rule=verdict.rule_id,
            risk=verdict.risk,
            reason=verdict.reason.value,
            message=verdict.message,
            policy_hash=verdict.policy_hash,
            created_at=now,
            expires_at=now + self.approval_ttl,
            request_id=request_id,
        )
        self.approvals.create(approval)
        return approval

    async def decide(self, principal: Principal, request: ActionInput) -> Outcome:
        """Decide one action for an authenticated agent."""
        if principal.role is not Role.AGENT:
            raise Refused(403, "not_an_agent", f"{principal.name!r} is an approver, not an agent")
        raw_tool = request.tool if isinstance(request.tool, str) else ""
        if request.agent is not None and request.agent != principal.name:
            action = Action(
                principal.name,
                raw_tool,
                dict(request.args or {}),
                request.operation,
                namespace=principal.namespace,
            )
            verdict = Verdict(
                Decision.DENY,
                Reason.IDENTITY_MISMATCH,
                "identity",
                message=f"body claims agent {request.agent!r} but the token belongs to "
                f"{principal.name!r}",
            )
            outcome = await self._finish("decision", action, verdict, request_id=request.request_id)
            raise Refused(403, "identity_mismatch", verdict.message, outcome)
        action, refusal = admit(
            principal.name,
            request.tool,
            request.args,
            request.operation,
            request.context,
            principal.namespace,
        )
        if refusal is not None:
            return await self._finish("decision", action, refusal, request_id=request.request_id)
        if request.request_id and self.find_request is not None:
            previous = self.find_request(action.agent, request.request_id)
            if previous is not None:
                return self._replay(previous, action)
        verdict = policy.evaluate(self.policies(), action)
        return await self._finish("decision", action, verdict, request_id=request.request_id)

    def _replay(self, previous: Record, action: Action) -> Outcome:
        """A retry with the same request id gets the original decision, never a second one."""
        action_hash = canonical.action_hash(action)
        if previous.action_hash != action_hash:
            raise Refused(
                409, "request_id_reused", "request_id was already used for a different action"
            )
        verdict = verdict_from_record(previous)
        token = (
            writ.issue(self.signer, previous, self.writ_ttl)
            if verdict.decision is Decision.PERMIT
            else None
        )
        approval = None
        if verdict.decision is Decision.DEFER:
            approval = next(
                (
                    a
                    for a in self.approvals.list(None, 1000)
                    if a.request_id and a.action_hash == action_hash and a.agent == action.agent
                ),
                None,
            )
        return Outcome(verdict, action_hash, previous, token, approval, {"replayed": True})

    # -- approvals ----------------------------------------------------------

    def _get(self, approval_id: str) -> Approval:
        approval = self.approvals.get(approval_id)
        if approval is None:
            raise Refused(404, "approval_not_found", f"no approval {approval_id!r}")
        return approval

    def _selecting_policy(self, approval: Approval) -> Policy | None:
        name = approval.rule.split("/", 1)[0]
        return next(
            (p for p in self.policies() if p.name == name and p.namespace == approval.namespace),
            None,
        )

    def _check_approver(self, approval: Approval, approver: Principal) -> None:
        if approver.role is not Role.APPROVER:
            raise Refused(
                403,
                "not_an_approver",
                f"{approver.name!r} authenticated as an agent; agents can never approve",
            )
        if approver.name == approval.agent:
            raise Refused(403, "self_approval", "an agent cannot approve its own action")
        selecting = self._selecting_policy(approval)
        if selecting is None:
            return
        approvers = selecting.approvers
        if (approvers.users or approvers.groups) and not approvers.admits(
            approver.name, approver.groups
        ):
            raise Refused(
                403,
                "not_listed_approver",
                f"{approver.name!r} is not an approver of policy {selecting.name!r}"
                f" (users: {list(approvers.users)}, groups: {list(approvers.groups)})",
            )

    async def expire(self, approval: Approval) -> Approval:
        """Move an overdue Pending approval to Expired and record the denial."""
        expired = approval.moved(Phase.EXPIRED, decided_at=time.time(), decided_by="kubewrit")
        if not self.approvals.swap(Phase.PENDING, expired):
            return self._get(approval.id)
        action = approval_action(approval)
        verdict = Verdict(
            Decision.DENY,
            Reason.APPROVAL_EXPIRED,
            approval.rule,
            approval.risk,
            f"approval {approval.id} expired before anyone decided",
            None,
            approval.policy_hash,
        )
        await self._finish("expiry", action, verdict, approval=approval.id)
        await self._notify()
        return expired

    async def expire_overdue(self) -> int:
        now = time.time()
        overdue = [a for a in self.approvals.list(Phase.PENDING, 1000) if a.expired(now)]
        for approval in overdue:
            await self.expire(approval)
        return len(overdue)

    async def sweep_expired(self, interval: float = 1.0) -> None:
        """Run forever: overdue approvals become Expired (and are recorded) within `interval`."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_overdue()
            except Exception:
                log.exception("approval expiry sweep failed")

    async def resolve(
        self, approval_id: str, approver: Principal, approve: bool, reason: str | None = None
    ) -> Approval:
        """A human decides. Approval re-evaluates the current policy before permitting."""
        approval = self._get(approval_id)
        self._check_approver(approval, approver)
        if approval.phase is Phase.PENDING and approval.expired():
            await self.expire(approval)
            raise Refused(409, "approval_expired", f"approval {approval_id} has expired")
        if approval.phase is not Phase.PENDING:
            raise Refused(
                409,
                "already_decided",
                f"approval {approval_id} is already {approval.phase.value}"
                + (f" by {approval.decided_by}" if approval.decided_by else ""),
            )
        action = approval_action(approval)
        if approve:
            current = policy.evaluate(self.policies(), action)
            if current.decision is Decision.DENY:
                final, phase, kind = current, Phase.DENIED, "denial"
            else:
                final = current.but(
                    decision=Decision.PERMIT,
                    reason=Reason.APPROVED,
                    message=f"approved by {approver.name}" + (f": {reason}" if reason else ""),
                )
                phase, kind = Phase.APPROVED, "approval"
        else:
            final = Verdict(
                Decision.DENY,
                Reason.APPROVAL_DENIED,
                approval.rule,
                approval.risk,
                f"denied by {approver.name}" + (f": {reason}" if reason else ""),
                None,
                approval.policy_hash,
            )
            phase, kind = Phase.DENIED, "denial"
        with self._approval_lock:
            claimed = approval.moved(
                phase, decided_by=approver.name, decided_at=time.time(), decision_reason=reason
            )
            if not self.approvals.swap(Phase.PENDING, claimed):
                raise Refused(
                    409, "already_decided", f"approval {approval_id} was decided concurrently"
                )
        outcome = await self._finish(
            kind, action, final, approver=approver.name, approval=approval.id
        )
        if outcome.record is None:
            self.approvals.swap(
                phase, claimed.moved(Phase.DENIED, decision_reason="record_unavailable")
            )
            raise Refused(
                503, "record_unavailable", "the approval could not be recorded; it was denied"
            )
        done = claimed.moved(phase, outcome=outcome_summary(outcome))
        self.approvals.swap(phase, done)
        await self._notify()
        return done

    async def collect(
        self, approval_id: str, caller: Principal, wait: float = 0
    ) -> tuple[Approval, str | None]:
        """The agent's view of its approval; the first look after Approved consumes it for a writ."""
        deadline = time.monotonic() + max(0.0, min(wait, 300.0))
        while True:
            approval = self._get(approval_id)
            if caller.role is Role.AGENT and caller.name != approval.agent:
                raise Refused(403, "not_your_approval", "this approval belongs to another agent")
            if approval.phase is Phase.PENDING and approval.expired():
                approval = await self.expire(approval)
            if approval.phase is not Phase.PENDING or time.monotonic() >= deadline:
                break
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait(), timeout=min(1.0, deadline - time.monotonic())
                    )
        if approval.phase is Phase.APPROVED and caller.role is Role.AGENT:
            consumed = approval.moved(Phase.CONSUMED)
            if not self.approvals.swap(Phase.APPROVED, consumed):
                raise Refused(409, "approval_consumed", "approval was already used")
            record = decided_record(approval)
            token = writ.issue(self.signer, record, self.writ_ttl) if record else None
            return consumed, token
        if approval.phase is Phase.CONSUMED and caller.role is Role.AGENT:
            raise Refused(409, "approval_consumed", "approval is single-use and was already used")
        return approval, None


def approval_action(approval: Approval) -> Action:
    """The action an approval holds, exactly as it was decided."""
    return Action(
        approval.agent,
        approval.tool,
        approval.action.get("args") or {},
        approval.action.get("operation"),
        namespace=approval.namespace,
    )


def decided_record(approval: Approval) -> Record | None:
    """The record of an approval's final decision, kept in its outcome."""
    summary = (approval.outcome or {}).get("record") or {}
    return Record.from_dict(summary["full"]) if "full" in summary else None


def outcome_summary(outcome: Outcome) -> dict[str, Any]:
    """The final decision of an approval, kept with it for the agent to collect."""
    verdict = outcome.verdict
    record = outcome.record
    return {
        "decision": verdict.decision.value,
        "reason": verdict.reason.value,
        "rule_id": verdict.rule_id,
        "risk": verdict.risk,
        "message": verdict.message,
        "policy_hash": verdict.policy_hash,
        "action_hash": outcome.action_hash,
        "record": (
            {
                "chain": record.chain,
                "seq": record.seq,
                "hash": record.hash,
                "full": record.to_dict(),
            }
            if record
            else None
        ),
    }
