"""The authority: canonicalize, evaluate, record, then answer.

Nothing is answered before its record is durable. Every path that cannot
record, or cannot tell who is asking, ends in DENY. The authority composes the
owners of each invariant and adds none of its own:

- `judge.Judge`: the policies' verdict, with the history and the limits it depends on;
- `requests.Requests`: one decision per (agent, request_id), and what a replay means;
- `outcome.Recording`: no outcome without its durable record;
- `approval.ApprovalWorkflow`: every approval transition;
- `writ.Issuer`: every writ.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubewrit.webhook import approval as approvals
from kubewrit.webhook import canonical, writ
from kubewrit.webhook.approval import (
    Approval,
    ApprovalWorkflow,
    ApproverSet,
    KeySource,
    PolicySource,
)
from kubewrit.webhook.backend import Backend
from kubewrit.webhook.canonical import Action, InvalidToolName
from kubewrit.webhook.chain import Record
from kubewrit.webhook.decision import Decision, Reason, Verdict
from kubewrit.webhook.errors import Conflict, Forbidden, Unavailable
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.judge import Judge, Judgement
from kubewrit.webhook.keys import Signer
from kubewrit.webhook.outcome import Outcome, Recording, verdict_from_record
from kubewrit.webhook.requests import RequestKey, Requests

log = logging.getLogger(__name__)

# How long a replayed DEFER waits for the approval its decider is still storing (the
# decider creates it right after the record; in Kubernetes, an object and its status).
APPROVAL_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class ActionInput:
    """An action as the caller sent it: nothing here is trusted yet."""

    tool: str
    args: Mapping[str, Any] | None = None
    operation: str | None = None
    agent: str | None = None
    context: Mapping[str, Any] | None = None
    request_id: str | None = None


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
    """Decides actions for authenticated agents over one backend."""

    def __init__(
        self,
        policies: PolicySource,
        backend: Backend,
        signer: Signer,
        writ_ttl: int = writ.DEFAULT_TTL_SECONDS,
        approval_ttl: float = approvals.DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
        trusted_keys: KeySource | None = None,
    ) -> None:
        self.policies = policies
        self.backend = backend
        self.recording = Recording(backend.records)
        self.writs = writ.Issuer(signer, writ_ttl)
        self.requests = Requests(backend.requests)
        self.judge = Judge(policies, backend.budgets, backend.history, clock)
        self.approvals = ApprovalWorkflow(
            backend.approvals,
            self.recording,
            self.judge,
            self.writs,
            approval_ttl,
            clock,
            trusted_keys,
        )

    async def decide(self, principal: Principal, request: ActionInput) -> Outcome:
        """Decide one action for an authenticated agent (at most once per request id)."""
        if principal.role is not Role.AGENT:
            raise Forbidden("not_an_agent", f"{principal.name!r} is an approver, not an agent")
        if request.agent is not None and request.agent != principal.name:
            await self._refuse_impersonation(principal, request)
        action, refusal = admit(
            principal.name,
            request.tool,
            request.args,
            request.operation,
            request.context,
            principal.namespace,
        )
        request_id = request.request_id
        if refusal is None and not principal.verified:
            refusal = Verdict(
                Decision.DENY,
                Reason.IDENTITY_UNAVAILABLE,
                "identity",
                message="the caller's identity could not be confirmed just now (the API server "
                "is unavailable); nothing is permitted on a stale identity",
            )

        async def decide_now() -> Outcome:
            if refusal is not None:
                return await self.recording.record(
                    "decision", action, refusal, request_id=request_id
                )
            return await self._decide(action, request_id)

        if not request_id:
            return await decide_now()
        key = RequestKey(principal.namespace, principal.name, request_id)
        action_hash = canonical.action_hash(action)
        return await self.requests.once(
            key, action_hash, decide_now, lambda record: self._replay(record, action_hash)
        )

    async def _refuse_impersonation(self, principal: Principal, request: ActionInput) -> None:
        """The body names another agent: recorded as the caller's DENY, then refused."""
        action = Action(
            principal.name,
            request.tool if isinstance(request.tool, str) else "",
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
        outcome = await self.recording.record("decision", action, verdict)
        raise Forbidden("identity_mismatch", verdict.message, outcome)

    async def _decide(self, action: Action, request_id: str | None) -> Outcome:
        judgement = await self.judge.decide(action)
        if judgement.verdict.decision is Decision.DEFER:
            return await self._hold(action, judgement, request_id)
        outcome = await self.recording.record(
            "decision", action, judgement.verdict, request_id=request_id, limits=judgement.limits
        )
        self.judge.settle(judgement, outcome.record)
        if outcome.record is None or outcome.decision is not Decision.PERMIT:
            return outcome
        token = self.writs.for_decision(outcome.record)
        if token is None:
            raise Unavailable("writ_unavailable", "the decision took longer than a writ lives")
        return Outcome(outcome.verdict, outcome.action_hash, outcome.record, token)

    async def _hold(self, action: Action, judgement: Judgement, request_id: str | None) -> Outcome:
        """A DEFER: its record names the approval it opens, and who may decide it."""
        verdict, policies = judgement.verdict, judgement.policies
        approval_id = approvals.new_id()
        outcome = await self.recording.record(
            "decision",
            action,
            verdict,
            request_id=request_id,
            approval=approval_id,
            limits=judgement.limits,
        )
        if outcome.record is None:
            return outcome
        approvers = tuple(
            ApproverSet.of(p)
            for p in policies
            if p.name in verdict.holders and p.namespace == action.namespace
        )
        try:
            approval = self.approvals.hold(
                approval_id, action, verdict, outcome.action_hash, approvers, request_id
            )
        except Exception as exc:
            log.exception("cannot store approval %s", approval_id)
            raise Unavailable(
                "approval_unavailable",
                f"the action was held (record {outcome.record.chain}/{outcome.record.seq}) but "
                f"its approval could not be stored: {exc}",
                outcome,
            ) from exc
        return Outcome(outcome.verdict, outcome.action_hash, outcome.record, approval=approval)

    async def _replay(self, previous: Record, action_hash: str) -> Outcome:
        """The original decision for a repeated request id (see `requests`)."""
        if previous.action_hash != action_hash:
            raise Conflict(
                "request_id_reused", "request_id was already used for a different action"
            )
        verdict = verdict_from_record(previous)
        token, approval = None, None
        if verdict.decision is Decision.PERMIT:
            token = self.writs.for_decision(previous)
            if token is None:
                raise Conflict(
                    "writ_expired",
                    f"request_id was decided PERMIT at {previous.time}; its writ has expired "
                    "and a decision's writ is never issued twice: send the action again with "
                    "a new request_id",
                )
        elif verdict.decision is Decision.DEFER and previous.approval:
            approval = await self._approval_opened_by(previous)
        return Outcome(verdict, action_hash, previous, token, approval, {"replayed": True})

    async def _approval_opened_by(self, held: Record) -> Approval | None:
        """The approval a DEFER's record names. Its decider stores it just after the record,
        so a retry that found the record (on another replica, say) can be there first: wait
        for it as long as storing it may take. Past that, the decider died between the two
        (or answered `approval_unavailable`): the DEFER is answered without an approval, as
        the record is all that was decided; a new request id opens a new one."""
        assert held.approval is not None
        deadline, pause = time.monotonic() + APPROVAL_WAIT_SECONDS, 0.01
        while True:
            approval = await asyncio.to_thread(
                self.backend.approvals.get, held.approval, held.namespace
            )
            if approval is not None:
                return approval
            if time.monotonic() >= deadline:
                log.warning(
                    "record %s/%s holds the action for approval %s, which was never stored",
                    held.chain,
                    held.seq,
                    held.approval,
                )
                return None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.25)
