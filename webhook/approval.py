"""Approvals: a DEFER waiting for a human, bound to one action hash, and its one lifecycle.

    Pending ──claim──▶ Deciding ──recorded──▶ Approved ──collect──▶ Consumed
       │                  │                      │
       │                  └──────────────────▶ Denied    (a human denied; the policy now
       │                                         ▲         denies; the record could not be
       │                                         │         written)
       └──────────────────▶ Expired ◀────────────┘         (nobody decided in time; or the
                                                           writ was not collected in time)

`ApprovalWorkflow` is the only code that moves an approval. Every move is one
compare-and-swap on the stored phase that writes the new phase together with
everything that belongs to it (who decided, the final decision and its record),
so no reader ever sees Approved without the outcome that lets the agent run. A
swap that fails is never ignored: someone else moved first, and the caller is
told so. A human's decision is claimed (Deciding) before it is recorded, so two
approvers, or an approver and the expiry sweep, can never both produce a record.

Who may approve is bound into the approval when the action is held (the approver
sets of every policy that held it, each of which must admit the approver), so
renaming or deleting a policy later can never skip the check. The writ an approval
yields is its approval record's own (`writ.Issuer.for_decision`), so a phase put
back by whoever can write the store never mints a second usable writ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from kubewrit.webhook import canonical, chain, writ
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Record
from kubewrit.webhook.decision import Decision, Phase, Reason, Verdict
from kubewrit.webhook.errors import Conflict, Forbidden, NotFound, Unavailable
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.judge import Judge, Judgement
from kubewrit.webhook.keys import Verifier
from kubewrit.webhook.outcome import Outcome, Recording
from kubewrit.webhook.policy.model import Policy

log = logging.getLogger(__name__)

DEFAULT_TTL_SECONDS = 15 * 60
# A claim (Deciding) whose decider vanished is abandoned this long after the approval's expiry.
ABANDONED_CLAIM_SECONDS = 60.0
MAX_WAIT_SECONDS = 300.0


@dataclass(frozen=True)
class ApproverSet:
    """The approvers one policy names for the actions it holds; empty admits any approver."""

    policy: str = ""
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def admits(self, principal: Principal) -> bool:
        if not (self.users or self.groups):
            return True
        return principal.name in self.users or any(g in self.groups for g in principal.groups)

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "users": list(self.users), "groups": list(self.groups)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApproverSet:
        return cls(
            str(data.get("policy") or ""),
            tuple(data.get("users") or ()),
            tuple(data.get("groups") or ()),
        )

    @classmethod
    def of(cls, holder: Policy) -> ApproverSet:
        return cls(holder.name, tuple(holder.approvers.users), tuple(holder.approvers.groups))


# Who may decide an approval: someone whom every policy that held the action admits. Adding
# a policy can only add a requirement, so it can never loosen who approves.
Approvers = tuple[ApproverSet, ...]


def approvers_from(data: Any) -> Approvers | None:
    if not isinstance(data, list):
        return None
    return tuple(ApproverSet.from_dict(item) for item in data if isinstance(item, dict))


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
    # None only for approvals stored before approver sets were bound: those are refused.
    approvers: Approvers | None = None
    # The store's identity of this one object (an ActionApproval's metadata.uid), and the
    # writer's signature over it and everything above that the decision depends on: an
    # approval kubewrit did not open, or one deleted and created again, has no valid seal.
    uid: str = ""
    seal: str = ""
    seal_key: str = ""

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def belongs_to(self, principal: Principal) -> bool:
        """Identity is (namespace, name): a same-named agent elsewhere is someone else."""
        return principal.name == self.agent and principal.namespace == self.namespace

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["approvers"] = (
            [a.to_dict() for a in self.approvers] if self.approvers is not None else None
        )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approval:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(
            **{
                **known,
                "phase": Phase(data["phase"]),
                "approvers": approvers_from(data.get("approvers")),
            }
        )

    def sealed_content(self) -> bytes:
        """What the seal signs: the object's identity and every field a decision relies on."""
        return canonical.canonical_bytes(
            {
                "id": self.id,
                "uid": self.uid,
                "namespace": self.namespace,
                "agent": self.agent,
                "tool": self.tool,
                "action_hash": self.action_hash,
                "action": self.action,
                "rule": self.rule,
                "policy_hash": self.policy_hash,
                "expires_at": int(self.expires_at),
                "request_id": self.request_id,
                "approvers": [a.to_dict() for a in self.approvers or ()],
            }
        )

    def moved(self, phase: Phase, **changes: Any) -> Approval:
        return replace(self, phase=phase, **changes)

    def held_action(self) -> Action:
        """The action this approval holds, exactly as it was decided."""
        return Action(
            self.agent,
            self.tool,
            self.action.get("args") or {},
            self.action.get("operation"),
            namespace=self.namespace,
        )

    def decided_record(self) -> Record | None:
        """The record of the final decision, kept in the outcome with the phase that names it."""
        summary = (self.outcome or {}).get("record") or {}
        return Record.from_dict(summary["full"]) if "full" in summary else None


def new_id() -> str:
    return "apr-" + secrets.token_hex(8)


Sealer = Callable[[Approval], Approval]


class ApprovalStore(Protocol):
    """Where approvals live (a SQLite table, ActionApproval objects, or memory in tests)."""

    def create(self, approval: Approval, sealer: Sealer) -> Approval:
        """Store a new approval: give it its uid, then store `sealer(approval)`."""
        ...

    def get(self, approval_id: str, namespace: str | None = None) -> Approval | None:
        """The approval named `approval_id` (in `namespace`, where namespaces exist)."""
        ...

    def swap(self, expected: Phase, updated: Approval) -> bool:
        """Store `updated` (phase and all) only if the stored phase is still `expected`."""
        ...

    def list(self, phase: Phase | None = None, limit: int = 100) -> list[Approval]: ...


def outcome_summary(outcome: Outcome) -> dict[str, Any]:
    """The final decision of an approval, stored with it (DecisionResponse's fields + record)."""
    verdict, record = outcome.verdict, outcome.record
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


PolicySource = Callable[[], Sequence[Policy]]
# The trusted public keys with a key id (a deployment's writers publish theirs).
KeySource = Callable[[str], Sequence[Verifier]]


class ApprovalWorkflow:
    """The one owner of the approval lifecycle: every transition, and the record it produces."""

    def __init__(
        self,
        store: ApprovalStore,
        recording: Recording,
        judge: Judge,
        writs: writ.Issuer,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
        trusted_keys: KeySource | None = None,
    ) -> None:
        self.store = store
        # Whose seals and records are trusted: every writer of this deployment.
        own = writs.signer.verifier
        self.trusted_keys = trusted_keys or (lambda key_id: [own] if key_id == own.key_id else [])
        self.recording = recording
        self.judge = judge
        self.writs = writs
        self.ttl = ttl
        self.clock = clock
        self._changed: asyncio.Condition | None = None

    # -- reading ------------------------------------------------------------

    def get(self, approval_id: str, namespace: str | None = None) -> Approval:
        approval = self.store.get(approval_id, namespace)
        if approval is None:
            raise NotFound("approval_not_found", f"no approval {approval_id!r}")
        return approval

    def visible_to(self, principal: Principal, phase: Phase | None, limit: int) -> list[Approval]:
        """Approvers see the queue; an agent sees only its own approvals."""
        approvals = self.store.list(phase, limit)
        if principal.role is Role.AGENT:
            approvals = [a for a in approvals if a.belongs_to(principal)]
        return approvals

    async def changed(self, timeout: float) -> None:
        """Wait until some approval moved (or `timeout` passed): for long-polls and live pages."""
        async with self._condition():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._condition().wait(), timeout=max(0.0, timeout))

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    # -- transitions ----------------------------------------------------------

    def hold(
        self,
        approval_id: str,
        action: Action,
        verdict: Verdict,
        action_hash: str,
        approvers: Approvers,
        request_id: str | None,
    ) -> Approval:
        """Open a Pending approval for a DEFER whose record is already durable."""
        now = self.clock()
        approval = Approval(
            id=approval_id,
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
            expires_at=now + self.ttl,
            request_id=request_id,
            approvers=approvers,
        )
        return self.store.create(approval, self._seal)

    def _seal(self, approval: Approval) -> Approval:
        signer = self.writs.signer
        signature = signer.sign(approval.sealed_content())
        return replace(approval, seal=signature, seal_key=signer.key_id)

    def _check_genuine(self, approval: Approval) -> None:
        """Only approvals kubewrit opened, as the very objects it created, are ever decided."""
        sealed = any(
            v.verify(approval.seal, approval.sealed_content())
            for v in self.trusted_keys(approval.seal_key)
        )
        if not (approval.uid and sealed):
            log.error("approval %s/%s has no valid seal", approval.namespace, approval.id)
            raise Forbidden(
                "approval_not_genuine",
                f"approval {approval.id} was not opened by kubewrit for this object (made by "
                "hand, altered, or deleted and created again); it cannot be decided",
            )

    def _check_approver(self, approval: Approval, approver: Principal) -> None:
        if approver.role is not Role.APPROVER:
            raise Forbidden(
                "not_an_approver",
                f"{approver.name!r} authenticated as an agent; agents can never approve",
            )
        if approver.name == approval.agent and approver.namespace == approval.namespace:
            raise Forbidden("self_approval", "an agent cannot approve its own action")
        if approval.approvers is None:
            raise Forbidden(
                "no_approver_set",
                f"approval {approval.id} does not name who may approve it (it was created by an "
                "older kubewrit); it cannot be approved: let it expire and retry the action",
            )
        refusing = next((a for a in approval.approvers if not a.admits(approver)), None)
        if refusing is not None:
            raise Forbidden(
                "not_listed_approver",
                f"{approver.name!r} is not an approver of policy {refusing.policy!r}, which "
                f"held this action (users: {list(refusing.users)},"
                f" groups: {list(refusing.groups)})",
            )

    async def resolve(
        self,
        approval_id: str,
        approver: Principal,
        approve: bool,
        reason: str | None = None,
        namespace: str | None = None,
    ) -> Approval:
        """A human decides: claim, record the final decision, then publish phase and outcome."""
        approval = self.get(approval_id, namespace)
        self._check_genuine(approval)
        self._check_approver(approval, approver)
        if approval.phase is Phase.PENDING and approval.expired(self.clock()):
            await self.expire(approval)
            raise Conflict("approval_expired", f"approval {approval_id} has expired")
        if approval.phase is not Phase.PENDING:
            raise Conflict(
                "already_decided",
                f"approval {approval_id} is already {approval.phase.value}"
                + (f" by {approval.decided_by}" if approval.decided_by else ""),
            )
        claimed = approval.moved(
            Phase.DECIDING,
            decided_by=approver.name,
            decided_at=self.clock(),
            decision_reason=reason,
        )
        if not self.store.swap(Phase.PENDING, claimed):
            raise Conflict("already_decided", f"approval {approval_id} was decided concurrently")
        action = approval.held_action()
        by = f"{approver.name}" + (f": {reason}" if reason else "")
        judgement: Judgement | None = None
        if approve:
            judgement = await self.judge.approve(action)
            current = judgement.verdict
            if not judgement.reservation.fits:
                self._move(Phase.DECIDING, approval)  # back as it was before the claim
                await self._notify()
                raise Conflict(
                    "limit_exceeded",
                    f"approval {approval_id} cannot be granted now: {current.message}; it stays "
                    "Pending and can be approved once the limit allows it",
                )
            if current.decision is Decision.DENY:
                final, phase, kind = current, Phase.DENIED, "denial"
            else:
                final = current.but(
                    decision=Decision.PERMIT, reason=Reason.APPROVED, message=f"approved by {by}"
                )
                phase, kind = Phase.APPROVED, "approval"
        else:
            final = self._held_verdict(approval, Reason.APPROVAL_DENIED, f"denied by {by}")
            phase, kind = Phase.DENIED, "denial"
        outcome = await self.recording.record(
            kind,
            action,
            final,
            approver=approver.name,
            approval=approval.id,
            limits=judgement.limits if judgement and phase is Phase.APPROVED else None,
        )
        if judgement is not None and phase is Phase.APPROVED:
            self.judge.settle(judgement, outcome.record)
        if outcome.record is None:
            failed = claimed.moved(
                Phase.DENIED, decision_reason="record_unavailable", outcome=outcome_summary(outcome)
            )
            self._move(Phase.DECIDING, failed)
            await self._notify()
            raise Unavailable(
                "record_unavailable", "the decision could not be recorded; the approval is denied"
            )
        done = self._move(Phase.DECIDING, claimed.moved(phase, outcome=outcome_summary(outcome)))
        await self._notify()
        return done

    def _move(self, expected: Phase, updated: Approval) -> Approval:
        """A transition that must win: losing it means the lifecycle was broken elsewhere."""
        if not self.store.swap(expected, updated):
            current = self.store.get(updated.id, updated.namespace)
            found = current.phase.value if current else "gone"
            log.error("approval %s left %s underneath us (now %s)", updated.id, expected, found)
            raise Conflict(
                "approval_moved",
                f"approval {updated.id} moved out of {expected.value} concurrently (now {found})",
            )
        return updated

    def _held_verdict(self, approval: Approval, reason: Reason, message: str) -> Verdict:
        return Verdict(
            Decision.DENY,
            reason,
            approval.rule,
            approval.risk,
            message,
            None,
            approval.policy_hash,
        )

    async def expire(self, approval: Approval) -> Approval:
        """An open (or uncollected) approval ran out of time: Expired, with the DENY recorded."""
        expired = approval.moved(
            Phase.EXPIRED,
            decided_by=approval.decided_by or "kubewrit",
            decided_at=self.clock(),
        )
        if not self.store.swap(approval.phase, expired):
            return self.get(approval.id, approval.namespace)  # someone else moved first
        verdict = self._held_verdict(
            approval,
            Reason.APPROVAL_EXPIRED,
            f"approval {approval.id} expired before "
            + ("its writ was collected" if approval.phase is Phase.APPROVED else "anyone decided"),
        )
        await self.recording.record("expiry", approval.held_action(), verdict, approval=approval.id)
        await self._notify()
        return expired

    def _overdue(self, approval: Approval, now: float) -> bool:
        if approval.phase is Phase.DECIDING:
            return now >= approval.expires_at + ABANDONED_CLAIM_SECONDS
        return approval.phase in (Phase.PENDING, Phase.APPROVED) and approval.expired(now)

    async def expire_overdue(self) -> int:
        now = self.clock()
        overdue = [
            a
            for phase in (Phase.PENDING, Phase.DECIDING, Phase.APPROVED)
            for a in self.store.list(phase, 1000)
            if self._overdue(a, now)
        ]
        for approval in overdue:
            await self.expire(approval)
        return len(overdue)

    async def sweep(self, interval: float = 1.0) -> None:
        """Run forever: overdue approvals become Expired (and are recorded) within `interval`."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.expire_overdue()
            except Exception:
                log.exception("approval expiry sweep failed")

    async def collect(
        self, approval_id: str, caller: Principal, wait: float = 0
    ) -> tuple[Approval, str | None]:
        """The caller's view of an approval; the agent's first look after Approved takes the writ.

        The writ is issued only if, at that moment, the approval is still within its time
        and the current policy does not deny the action: a late or now-forbidden collection
        is recorded as such and yields nothing to run.
        """
        deadline = time.monotonic() + max(0.0, min(wait, MAX_WAIT_SECONDS))
        scope = caller.namespace if caller.role is Role.AGENT else None
        while True:
            approval = self.get(approval_id, scope)
            if caller.role is Role.AGENT and not approval.belongs_to(caller):
                raise NotFound("approval_not_found", f"no approval {approval_id!r}")
            if approval.phase is Phase.PENDING and approval.expired(self.clock()):
                approval = await self.expire(approval)
            if not approval.phase.open or time.monotonic() >= deadline:
                break
            await self.changed(min(1.0, deadline - time.monotonic()))
        if caller.role is not Role.AGENT:
            return approval, None
        if not caller.verified and approval.phase is Phase.APPROVED:
            raise Unavailable(
                "identity_unavailable",
                "the caller's identity could not be confirmed just now; collect again shortly",
            )
        if approval.phase is Phase.CONSUMED:
            raise Conflict("approval_consumed", "approval is single-use and was already used")
        if approval.phase is not Phase.APPROVED:
            return approval, None
        return await self._consume(approval)

    def _genuine_approval_record(self, approval: Approval) -> Record:
        """The PERMIT record behind an Approved phase, only if a trusted writer signed it.

        An approval's phase and outcome are read back from a store that others may be
        able to write (an ActionApproval's status in Kubernetes), so the record is checked:
        its hash, a trusted signature, and that it approves exactly this approval's action.
        """
        record = approval.decided_record()
        problem = None
        if record is None:
            problem = "has no decision record"
        elif not chain.genuine(record, self.trusted_keys(record.key_id)):
            problem = "carries a record whose content no trusted kubewrit key signed"
        elif (
            record.kind,
            record.decision,
            record.approval,
            record.action_hash,
            record.agent,
            record.namespace,
        ) != (
            "approval",
            Decision.PERMIT.value,
            approval.id,
            approval.action_hash,
            approval.agent,
            approval.namespace,
        ):
            problem = "carries a record that does not approve this action"
        if problem or record is None:
            log.error("approval %s %s: no writ", approval.id, problem)
            raise Forbidden("approval_not_genuine", f"approval {approval.id} {problem}")
        return record

    async def _consume(self, approval: Approval) -> tuple[Approval, str | None]:
        self._check_genuine(approval)
        record = self._genuine_approval_record(approval)
        if approval.expired(self.clock()):
            return await self.expire(approval), None
        current, _, _ = await self.judge.evaluate(approval.held_action())
        if current.decision is Decision.DENY:
            return await self._revoke(approval, current), None
        # The writ is the approval record's own (issued at its time, `writ.Issuer`): a phase
        # put back by whoever can write the store yields the same writ, same jti and same
        # expiry, which an executor has already used, never a second usable one.
        token = self.writs.for_decision(record, self.clock())
        if token is None:
            raise Conflict(
                "writ_expired",
                f"approval {approval.id} was granted at {record.time}; its writ lasted "
                f"{self.writs.ttl} s and is never issued twice: send the action again",
            )
        if not self.store.swap(Phase.APPROVED, approval.moved(Phase.CONSUMED)):
            raise Conflict("approval_consumed", "approval was already used")
        await self._notify()
        return approval.moved(Phase.CONSUMED), token

    async def _revoke(self, approval: Approval, current: Verdict) -> Approval:
        """Approved, but the policy now denies: Denied, with the policy's DENY recorded."""
        verdict = current.but(
            message=f"approved by {approval.decided_by}, but the policy now denies: "
            + (current.message or current.reason.value)
        )
        outcome = await self.recording.record(
            "denial", approval.held_action(), verdict, approval=approval.id
        )
        denied = approval.moved(Phase.DENIED, outcome=outcome_summary(outcome))
        if not self.store.swap(Phase.APPROVED, denied):
            raise Conflict("approval_consumed", "approval was already used")
        await self._notify()
        return denied
