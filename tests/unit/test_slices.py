"""Budgets shared by several deciders through leased slices (over the SQLite state, as
`kubewrit serve --workers` shares them; the webhook replicas do the same over ConfigMaps)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import yaml
from kubewrit.webhook import policy
from kubewrit.webhook.policy.limits import Demand
from kubewrit.webhook.slices import LeasedBudgets
from kubewrit.webhook.store.sqlite import SQLiteBudgets

POLICY = """
name: p
rules: [{match: {tool: refund}, allow: true}]
limits:
  - {name: budget, match: {tool: refund}, sum: amount, max: 1000, window: 24h}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def demand(amount: int = 100) -> Demand:
    limit = policy.compile_document(yaml.safe_load(POLICY), "p.yaml").limits[0]
    return Demand(limit, "a", Decimal(amount))


def deciders(path: Path, clock: Clock, n: int = 2) -> list[LeasedBudgets]:
    return [LeasedBudgets(SQLiteBudgets(path), f"w{i}", clock=clock) for i in range(n)]


def test_deciders_sharing_a_budget_permit_exactly_it_together(tmp_path: Path) -> None:
    clock = Clock()
    workers = deciders(tmp_path / "s.db", clock, 3)

    async def attack() -> int:
        results = await asyncio.gather(
            *(workers[i % 3].reserve([demand()], clock()) for i in range(60))
        )
        return sum(1 for r in results if r.fits)

    assert asyncio.run(attack()) == 10


def test_a_returned_slice_is_spent_by_another_decider(tmp_path: Path) -> None:
    clock = Clock()
    first, second = deciders(tmp_path / "s.db", clock)

    async def scenario() -> tuple[bool, bool, bool]:
        taken = await first.reserve([demand()], clock())  # leases 200, spends 100 of it
        full = await second.reserve([demand(900)], clock())  # 200 is leased to `first`
        await first.close()  # returns the 100 it did not use
        after = await second.reserve([demand(900)], clock())
        return taken.fits, full.fits, after.fits

    assert asyncio.run(scenario()) == (True, False, True)


def test_a_slice_whose_holder_died_counts_in_full_until_the_window_passes(tmp_path: Path) -> None:
    clock = Clock()
    dead, alive = deciders(tmp_path / "s.db", clock)

    async def scenario() -> list[bool]:
        await dead.reserve([demand()], clock())  # leases 200, spends 100, never returns it
        seen = [(await alive.reserve([demand(900)], clock())).fits]
        clock.now += 40  # the slice expired: all 200 count (lost for the window), not more
        seen.append((await alive.reserve([demand(900)], clock())).fits)
        seen.append((await alive.reserve([demand(800)], clock())).fits)
        clock.now += 86400 + 60  # a day after the expiries, all of it is back
        seen.append((await alive.reserve([demand(1000)], clock())).fits)
        return seen

    assert asyncio.run(scenario()) == [False, False, True, True]


def test_a_restarted_holder_counts_its_predecessors_slice_in_full(tmp_path: Path) -> None:
    clock = Clock()
    (before,) = deciders(tmp_path / "s.db", clock, 1)

    async def scenario() -> list[bool]:
        await before.reserve([demand()], clock())  # leases 200, spends 100, then is killed
        (after,) = deciders(tmp_path / "s.db", clock, 1)  # same holder name, new process
        return [
            (await after.reserve([demand(900)], clock())).fits,  # the 200 may all be spent
            (await after.reserve([demand(800)], clock())).fits,
        ]

    assert asyncio.run(scenario()) == [False, True]
