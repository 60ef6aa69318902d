"""A verdict becomes an outcome only once its record is durable.

`Recording` is the single step every decision, approval, denial and expiry goes
through: seal the verdict into the writer's chain and wait until it is durable.
If it cannot be made durable, the outcome is DENY `record_unavailable` with no
record: nothing is ever answered, permitted or approved without its record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from kubewrit.webhook import canonical
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Draft, Record
from kubewrit.webhook.decision import Decision, Reason, Verdict
from kubewrit.webhook.recorder import RecordUnavailable

if TYPE_CHECKING:
    from kubewrit.webhook.approval import Approval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """A recorded verdict, with what it grants: a writ (PERMIT) or an approval (DEFER)."""

    verdict: Verdict
    action_hash: str
    record: Record | None
    writ: str | None = None
    approval: Approval | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> Decision:
        return self.verdict.decision


class RecordWriter(Protocol):
    """A Recorder, or a pool of them (one chain per namespace in Kubernetes)."""

    async def record(self, draft: Draft) -> Record: ...


def verdict_from_record(record: Record) -> Verdict:
    """The verdict a stored record proves (for replays)."""
    return Verdict(
        Decision(record.decision),
        Reason(record.reason),
        record.rule,
        record.risk,
        record.message,
        None,
        record.policy_hash,
    )


def unrecorded(action_hash: str, cause: object, verdict: Verdict | None = None) -> Outcome:
    """DENY `record_unavailable`: what is answered whenever a decision cannot be recorded."""
    denied = Verdict(Decision.DENY, Reason.RECORD_UNAVAILABLE, "record")
    if verdict is not None:
        denied = verdict.but(decision=Decision.DENY, reason=Reason.RECORD_UNAVAILABLE)
    return Outcome(
        denied.but(message=f"decision could not be recorded: {cause}"), action_hash, None
    )


class Recording:
    """Seal verdicts into the chain; fail closed when the store cannot take them."""

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer

    async def record(self, kind: str, action: Action, verdict: Verdict, **extra: Any) -> Outcome:
        action_hash = canonical.action_hash(action)
        session = action.context.get("session")
        draft = Draft(
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
            session=session if isinstance(session, str) and session else None,
            **extra,
        )
        try:
            record = await self.writer.record(draft)
        except RecordUnavailable as exc:
            log.warning("DENY record_unavailable for %s/%s: %s", action.agent, action.tool, exc)
            return unrecorded(action_hash, exc, verdict)
        return Outcome(verdict, action_hash, record)
