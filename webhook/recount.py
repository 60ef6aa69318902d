"""Recount every limit from the signed records: the proof that no budget was overspent.

A permitted record carries what it drew from each limit (`budget.LimitEntry`). From
the records alone, without trusting any counter, this replays every budget in time
order and checks that each action admitted under a bound found the budget within it:
the entries of its (limit, scope) inside its window, itself included, add up to at
most the bound. (An approval granted past a require_approval limit counts, but was
not bound by it.) It also reports each budget's count now, to compare with what the
server says (`kubewrit limits`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubewrit.webhook.budget import LimitEntry
from kubewrit.webhook.chain import epoch


@dataclass(frozen=True)
class Overspend:
    chain: str
    seq: int
    limit: str
    scope: str
    counted: Decimal  # within the window, this record included
    bound: Decimal


@dataclass
class Recount:
    charges: int = 0
    budgets: int = 0
    now_used: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    overspends: list[Overspend] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.overspends and not self.problems


@dataclass(frozen=True)
class _Charge:
    time: float
    chain: str
    seq: int
    entry: LimitEntry
    bounded: bool


def recount(records: Iterable[Mapping[str, Any]], now: float) -> Recount:
    result = Recount()
    by_budget: dict[tuple[str, str], list[_Charge]] = {}
    for record in records:
        if record.get("decision") != "PERMIT" or not record.get("limits"):
            continue
        for raw in record["limits"]:
            try:
                item = LimitEntry.from_dict(raw)
                when = epoch(str(record["time"]))
            except (ValueError, KeyError) as exc:
                result.problems.append(f"{record.get('chain')}/{record.get('seq')}: {exc}")
                continue
            if item.exceeded:
                continue
            bounded = record.get("kind") == "decision" or item.effect == "deny"
            charge = _Charge(when, str(record["chain"]), int(record["seq"]), item, bounded)
            by_budget.setdefault((item.limit, item.scope), []).append(charge)
    for key, charges in by_budget.items():
        charges.sort(key=lambda c: (c.time, c.chain, c.seq))
        times = [c.time for c in charges]
        running = [Decimal(0)]
        for c in charges:
            running.append(running[-1] + c.entry.amount)
        for index, c in enumerate(charges):
            start = bisect.bisect_right(times, c.time - c.entry.window)
            counted = running[index + 1] - running[start]
            if c.bounded and counted > c.entry.bound:
                result.overspends.append(
                    Overspend(c.chain, c.seq, key[0], key[1], counted, c.entry.bound)
                )
        window = charges[-1].entry.window
        start = bisect.bisect_right(times, now - window)
        result.now_used[key] = running[-1] - running[start]
        result.charges += len(charges)
    result.budgets = len(by_budget)
    return result
