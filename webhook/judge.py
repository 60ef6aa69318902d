"""The judge: policy evaluation together with what it depends on, history and limits.

`policy.evaluate` is pure: one action against compiled policies. Deciding for real
needs two more things, and this module is the one place that adds them, for a fresh
decision and for a human's approval alike:

- history: the facts the selecting policies ask about (`match.after`,
  `history.count(...)`), read from the durable records before evaluating;
- limits: what the action draws from each budget, reserved in one atomic step
  (`budget.Budgets`). A PERMIT that would take a limit past its bound becomes DEFER or
  DENY `limit_exceeded`; a DEFER that a deny-limit could never grant becomes DENY.

The reservation travels with the judgement until the record is written, then is
committed (`settle`). A record that could not be written keeps its reservation: a
write whose answer was lost may still have landed, and counting it once too often
only makes the limit stricter, never looser.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubewrit.webhook.backend import HistoryReader
from kubewrit.webhook.budget import Bounded, Budgets, LimitEntry, Reservation, every_limit
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.chain import Record, epoch
from kubewrit.webhook.decision import Decision, Reason, Verdict
from kubewrit.webhook.policy import evaluate
from kubewrit.webhook.policy.conditions import TypeMismatch
from kubewrit.webhook.policy.evaluator import history_needed, matcher_matches
from kubewrit.webhook.policy.history import NO_HISTORY, Facts
from kubewrit.webhook.policy.limits import Demand, Limit, demands
from kubewrit.webhook.policy.model import Policy

PolicySource = Callable[[], Sequence[Policy]]
log = logging.getLogger(__name__)


@dataclass
class Judgement:
    verdict: Verdict
    policies: Sequence[Policy]
    reservation: Reservation = field(default_factory=Reservation)

    @property
    def limits(self) -> list[dict[str, object]] | None:
        """What the decision's record carries about limits."""
        return self.reservation.records()


def _denies(limit: Limit) -> bool:
    return limit.denies


class Judge:
    def __init__(
        self,
        policies: PolicySource,
        budgets: Budgets,
        history: HistoryReader,
        clock: Callable[[], float],
    ) -> None:
        self.policies = policies
        self.budgets = budgets
        self.history = history
        self.clock = clock

    async def evaluate(self, action: Action) -> tuple[Verdict, Sequence[Policy], float]:
        """The policies' verdict with the history facts they ask for (no limits)."""
        policies = self.policies()
        now = self.clock()
        return evaluate(policies, action, await self._facts(policies, action, now)), policies, now

    async def _facts(self, policies: Sequence[Policy], action: Action, now: float) -> Facts:
        questions = history_needed(policies, action)
        if not questions:
            return NO_HISTORY
        return await self.history.facts(questions, action, now)

    async def decide(self, action: Action) -> Judgement:
        """A fresh decision: evaluate, then hold the limits it draws on."""
        return await self._judge(action, approving=False)

    async def approve(self, action: Action) -> Judgement:
        """A human approves a held action: it counts toward every limit it draws on; only a
        deny-limit can refuse it (`Judgement.reservation.fits` is then False)."""
        return await self._judge(action, approving=True)

    async def _judge(self, action: Action, approving: bool) -> Judgement:
        verdict, policies, now = await self.evaluate(action)
        if verdict.decision is Decision.DENY:
            return Judgement(verdict, policies)
        drawn = self._demands(policies, action)
        if isinstance(drawn, Verdict) or not drawn:
            return Judgement(drawn if isinstance(drawn, Verdict) else verdict, policies)
        holding = verdict.decision is Decision.DEFER and not approving
        if holding:
            # Held for a human: nothing is counted yet, but a deny-limit that could never
            # grant it is said now rather than after somebody approved.
            drawn = [d for d in drawn if d.limit.denies]
        reservation = await self._reserve(drawn, now, _denies if approving else every_limit)
        if isinstance(reservation, Verdict):
            return Judgement(reservation, policies)
        if holding:
            self.budgets.release(reservation)
            if reservation.fits:
                return Judgement(verdict, policies)
        if reservation.fits:
            return Judgement(verdict, policies, reservation)
        return Judgement(exceeded(verdict, reservation.exceeded, policies), policies, reservation)

    async def _reserve(
        self, drawn: list[Demand], now: float, bounded: Bounded = every_limit
    ) -> Reservation | Verdict:
        """The reservation, or DENY `limit_unavailable` when the count cannot be established
        (the shared budget cannot be reached): nothing is permitted on an unknown count."""
        try:
            return await self.budgets.reserve(drawn, now, bounded)
        except Exception as exc:
            log.warning("cannot reserve from limits %s: %s", [d.limit.id for d in drawn], exc)
            return Verdict(
                Decision.DENY,
                Reason.LIMIT_UNAVAILABLE,
                "limits",
                message=f"the count of a limit could not be established ({exc}); nothing is "
                "permitted on an unknown count",
            )

    def _demands(self, policies: Sequence[Policy], action: Action) -> list[Demand] | Verdict:
        try:
            return demands(policies, action, matcher_matches)
        except TypeMismatch as exc:
            return Verdict(
                Decision.DENY,
                Reason.TYPE_MISMATCH,
                "limits",
                message=f"{exc}: a value of the wrong type is denied, never counted as 0",
            )

    def settle(self, judgement: Judgement, record: Record | None) -> None:
        """The record is durable: the reservation's charges now date from it."""
        if record is not None and judgement.reservation.entries:
            self.budgets.commit(judgement.reservation, epoch(record.time))


def exceeded(
    verdict: Verdict, entries: Sequence[LimitEntry], policies: Sequence[Policy]
) -> Verdict:
    """DENY when a deny-limit is exceeded, else DEFER: each names the limit it exceeded."""
    first = next((e for e in entries if e.effect == "deny"), entries[0])
    decision = Decision.DENY if first.effect == "deny" else Decision.DEFER
    owner = next((p for p in policies for lim in p.limits if lim.id == first.limit), None)
    limit = next((lim for lim in owner.limits if lim.id == first.limit), None) if owner else None
    message = first.explain() + (f": {limit.message}" if limit and limit.message else "")
    holders = set(verdict.holders)
    holders.update(
        p.name for p in policies for lim in p.limits for e in entries if lim.id == e.limit
    )
    return verdict.but(
        decision=decision,
        reason=Reason.LIMIT_EXCEEDED,
        rule_id=f"{limit.policy}/limit:{limit.name}" if limit else first.limit,
        message=message,
        policy=owner.name if owner else verdict.policy,
        policy_hash=owner.hash if owner else verdict.policy_hash,
        holders=tuple(sorted(holders)),
    )
