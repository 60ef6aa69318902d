"""The server's decision engine offline, with a clock you move: `kubewrit test` and
`kubewrit check` decide through it, so what they say is what the server would do.

A simulation is a real `Authority` over the in-memory backend (records, budgets and
history all in memory) with an ephemeral key, and a clock that only moves when told.
Past actions (`kubewrit check --history`) are recorded as permitted at their time, and
count toward limits and sequence rules exactly as the server's own records do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubewrit.webhook import keys
from kubewrit.webhook.authority import ActionInput, Authority, admit
from kubewrit.webhook.decision import Decision, Reason, Verdict
from kubewrit.webhook.identity import Principal, Role
from kubewrit.webhook.outcome import Outcome
from kubewrit.webhook.policy.evaluator import matcher_matches
from kubewrit.webhook.policy.limits import demands
from kubewrit.webhook.policy.model import Policy
from kubewrit.webhook.store.memory import MemoryStore

ACTION_KEYS = {"agent", "tool", "args", "operation", "context"}


class Clock:
    def __init__(self, start: float | None = None) -> None:
        self.now = float(int(time.time())) if start is None else start

    def __call__(self) -> float:
        return self.now


def parse_action(document: Any, default_agent: str | None) -> tuple[str, ActionInput]:
    """(agent, action) from an action document. Raises ValueError naming what is wrong."""
    if not isinstance(document, Mapping):
        raise ValueError("an action must be a mapping with tool and args")
    unknown = set(document) - ACTION_KEYS
    if unknown:
        raise ValueError(f"unknown action keys {sorted(unknown)}; allowed: {sorted(ACTION_KEYS)}")
    agent = document.get("agent") or default_agent
    if not agent:
        raise ValueError("no agent: put `agent:` in the action or pass --agent")
    return agent, ActionInput(
        tool=document.get("tool", ""),
        args=document.get("args"),
        operation=document.get("operation"),
        context=document.get("context"),
    )


class Simulation:
    def __init__(self, policies: Sequence[Policy]) -> None:
        self.clock = Clock()
        signer = keys.generate()
        self.store = MemoryStore(signer, "simulation", clock=self.clock)
        self.policies = list(policies)
        self.authority = Authority(
            lambda: self.policies, self.store.backend(), signer, clock=self.clock
        )

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    async def decide(self, document: Any, default_agent: str | None = None) -> Outcome:
        agent, action = parse_action(document, default_agent)
        return await self.authority.decide(Principal(agent, Role.AGENT), action)

    async def remember(self, document: Any, ago: float, default_agent: str | None = None) -> None:
        """A past action, recorded as permitted `ago` seconds before now (history files)."""
        agent, raw = parse_action(document, default_agent)
        action, refusal = admit(agent, raw.tool, raw.args, raw.operation, raw.context)
        if refusal is not None:
            raise ValueError(refusal.message)
        now, self.clock.now = self.clock.now, self.clock.now - ago
        try:
            drawn = demands(self.policies, action, matcher_matches)
            budgets = self.authority.judge.budgets
            reservation = await budgets.reserve(drawn, self.clock.now, lambda _: False)
            verdict = Verdict(
                Decision.PERMIT, Reason.RULE_ALLOW, "history", message="a past action (history)"
            )
            outcome = await self.authority.recording.record(
                "decision", action, verdict, limits=reservation.records()
            )
            if outcome.record is not None:
                budgets.commit(reservation, self.clock.now)
        finally:
            self.clock.now = now
