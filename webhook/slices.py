"""Budgets shared by several deciders: slices leased from one shared state per budget.

The Kubernetes webhook's replicas share each budget through a ConfigMap
(`kube.budget.ConfigMapBudgets`); `kubewrit serve --workers N` shares it through the
SQLite file (`store.sqlite.SQLiteBudgets`). Either way the protocol is this one.

A decider never spends what it has not leased. To decide, it spends from its slice
(a local step, no shared write); when the slice cannot cover an action it settles the
old slice and leases a new one in one compare-and-swap on the budget's shared state
(`BudgetState`): what it used of the old slice becomes spent (dated at the settle, no
earlier than the spends), and a new slice is granted only from what is left once
everything spent in the window and every other decider's live slice is counted in
full. The sum of all slices and spends never exceeds the bound, so the deciders
together can never permit one unit more than the limit allows.

Slices are returned when a decider goes idle (`return_idle`) and when it shuts down
(`close`). One that dies holding a slice cannot return it: at the slice's expiry
(`lease_seconds`, 30 s by default) it counts in full, dated at the expiry, for the rest
of the window. That unused part is lost for the window, never spent twice.

A slice is a few actions' worth (a quarter of what is left, in multiples of the
action's amount), so the common decision is local and the last units of a budget are
handed out one action at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from kubewrit.webhook.budget import Bounded, Reservation, Usage, entry, every_limit
from kubewrit.webhook.policy.limits import Demand, Limit

log = logging.getLogger(__name__)


@dataclass
class BudgetState:
    """One (limit, scope) budget shared by the deciders.

    `spent`: [time, amount] pairs, each dated no earlier than the spends it stands for;
    `leases`: holder -> (amount, expires), slices a holder may spend without asking.
    """

    limit: str
    scope: str
    spent: list[tuple[float, Decimal]] = field(default_factory=list)
    leases: dict[str, tuple[Decimal, float]] = field(default_factory=dict)

    def settle_expired(self, now: float) -> None:
        """A lease past its expiry counts in full, dated at its expiry: its holder may have
        spent all of it, at any moment up to then (it never spends after)."""
        for holder, (amount, expires) in list(self.leases.items()):
            if expires <= now:
                del self.leases[holder]
                if amount > 0:
                    self.spent.append((expires, amount))

    def used(self, now: float, window: int) -> Decimal:
        """Spent within the window plus every live lease (counted in full); expired leases
        are settled first."""
        self.settle_expired(now)
        self.spent = [(t, a) for t, a in self.spent if t > now - window]
        return sum((a for _, a in self.spent), Decimal(0)) + sum(
            (a for a, _ in self.leases.values()), Decimal(0)
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "limit": self.limit,
                "scope": self.scope,
                "spent": [[t, str(a)] for t, a in self.spent],
                "leases": {
                    h: {"amount": str(a), "expires": e} for h, (a, e) in self.leases.items()
                },
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: str | None, limit: str, scope: str) -> BudgetState:
        """The stored state (empty when there is none yet). Raises ValueError for one that is
        not a budget's, or another limit's (a digest collision or a forgery)."""
        if raw is None:
            return cls(limit, scope)
        try:
            state: Any = json.loads(raw)
            if state["limit"] != limit or state["scope"] != scope:
                raise ValueError(f"holds the budget of {state['limit']} {state['scope']}")
            return cls(
                limit,
                scope,
                [(float(t), Decimal(a)) for t, a in state["spent"]],
                {
                    h: (Decimal(v["amount"]), float(v["expires"]))
                    for h, v in state["leases"].items()
                },
            )
        except (KeyError, TypeError, AttributeError, ArithmeticError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a budget: {exc}") from None


class SharedBudgets(Protocol):
    """Where the deciders' budget states live, changed only by compare-and-swap."""

    def update(
        self,
        limit: Limit,
        scope: str,
        change: Callable[[BudgetState, float], None],
        clock: Callable[[], float],
    ) -> None:
        """Read the state, `change(state, now)` it, write it back if nobody wrote between;
        else again. A change that changes nothing writes nothing. Raises when it cannot
        be written."""
        ...

    def read(self, limit: Limit, scope: str) -> BudgetState | None: ...


ZERO = Decimal(0)
SAFETY_SECONDS = 2.0  # a slice is not spent this close to its expiry (clock skew, slow writes)
IDLE_SECONDS = 2.0
SHARE = 4


@dataclass
class Slice:
    granted: Decimal
    left: Decimal
    expires: float
    used_elsewhere: Decimal  # what the budget held besides this slice when it was granted
    touched: float = field(default_factory=time.monotonic)

    def covers(self, amount: Decimal, now: float) -> bool:
        return self.left >= amount and now < self.expires - SAFETY_SECONDS


@dataclass
class _Taken:
    key: tuple[str, str]
    slice: Slice | None
    amount: Decimal


class LeasedBudgets:
    """`budget.Budgets` over shared state: each decider (`holder`) spends only slices it
    leased from `states`."""

    def __init__(
        self,
        states: SharedBudgets,
        holder: str,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.states = states
        self.replica = holder
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._slices: dict[tuple[str, str], Slice] = {}
        self._limits: dict[tuple[str, str], Limit] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._seen: dict[tuple[str, str], Decimal] = {}

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def reserve(
        self, demands: Sequence[Demand], now: float, bounded: Bounded = every_limit
    ) -> Reservation:
        if not demands:
            return Reservation()
        keyed = sorted(
            ((d.limit.id, d.scope), d) for d in demands
        )  # one order for every caller: no two reservations wait on each other
        locks = [self._lock(key) for key in dict.fromkeys(k for k, _ in keyed)]
        for lock in locks:
            await lock.acquire()
        try:
            taken: list[_Taken] = []
            entries, exceeded = [], []
            for key, demand in keyed:
                self._limits[key] = demand.limit
                if not bounded(demand.limit):
                    used = await asyncio.to_thread(self._spend_outright, demand)
                    taken.append(_Taken(key, None, demand.amount))
                    entries.append(entry(demand, used))
                    continue
                current = self._slices.get(key)
                if current is None or not current.covers(demand.amount, now):
                    current = await asyncio.to_thread(self._lease, demand, key)
                if current is None or not current.covers(demand.amount, now):
                    used = self._seen.get(key, demand.limit.bound)
                    exceeded.append(entry(demand, used, exceeded=True))
                    break  # nothing will be taken: the other limits need not be asked
                used = current.used_elsewhere + current.granted - current.left
                current.left -= demand.amount
                current.touched = time.monotonic()
                taken.append(_Taken(key, current, demand.amount))
                entries.append(entry(demand, used))
            if exceeded:
                self._give_back(taken)
                return Reservation(exceeded=tuple(exceeded))
            return Reservation(entries=tuple(entries), handle=taken)
        finally:
            for lock in locks:
                lock.release()

    def _give_back(self, taken: list[_Taken]) -> None:
        for item in taken:
            if item.slice is not None and self._slices.get(item.key) is item.slice:
                item.slice.left += item.amount
            # a spend made outright, or from a slice since settled, stays spent

    def commit(self, reservation: Reservation, at: float) -> None:
        """Spent from a slice: the settle dates it (later than the record, never earlier)."""

    def release(self, reservation: Reservation) -> None:
        self._give_back(reservation.handle or [])
        reservation.handle = None

    # -- the shared state ------------------------------------------------------------

    def _update(
        self, limit: Limit, scope: str, change: Callable[[BudgetState, float], None]
    ) -> BudgetState:
        result: list[BudgetState] = []

        def apply(state: BudgetState, now: float) -> None:
            state.settle_expired(now)
            change(state, now)
            result[:] = [state]

        self.states.update(limit, scope, apply, self.clock)
        return result[0]

    def _settle_into(self, state: BudgetState, key: tuple[str, str], now: float) -> None:
        """This holder's slice leaves the lease table; what it used of it becomes spent.

        No lease in the state: it expired and already counts in full (settle_expired). A
        lease this process does not know was taken by a predecessor under the same name
        (a restarted worker or replica): how much of it was spent is unknown, so all of
        it counts.
        """
        held = state.leases.pop(self.replica, None)
        if held is None:
            return
        mine = self._slices.get(key)
        used = mine.granted - mine.left if mine is not None else held[0]
        if used > 0:
            state.spent.append((now, used))

    def _lease(self, demand: Demand, key: tuple[str, str]) -> Slice | None:
        """Settle this replica's slice and lease a new one (None if nothing is left)."""
        limit = demand.limit
        granted: list[Slice] = []

        def change(state: BudgetState, now: float) -> None:
            self._settle_into(state, key, now)
            granted.clear()
            elsewhere = state.used(now, limit.window)
            available = limit.bound - elsewhere
            if available >= demand.amount:
                size = demand.amount * max(1, int(available / (demand.amount * SHARE)))
                size = min(available, size) if demand.amount > 0 else available
                state.leases[self.replica] = (size, now + self.lease_seconds)
                granted.append(Slice(size, size, now + self.lease_seconds, elsewhere))
            self._seen[key] = elsewhere

        try:
            self._update(limit, demand.scope, change)
        except Exception:
            log.exception("cannot lease from budget %s %s", limit.id, demand.scope)
            self._slices.pop(key, None)  # its use is unknown now: it counts in full at expiry
            raise
        if granted:
            self._slices[key] = granted[0]
            return granted[0]
        self._slices.pop(key, None)
        return None

    def _spend_outright(self, demand: Demand) -> Decimal:
        """Counted without a bound (an approval past a require_approval limit)."""
        seen: list[Decimal] = []

        def change(state: BudgetState, now: float) -> None:
            seen[:] = [state.used(now, demand.limit.window)]
            state.spent.append((now, demand.amount))

        self._update(demand.limit, demand.scope, change)
        return seen[0]

    def _settle(self, key: tuple[str, str]) -> None:
        limit = self._limits[key]

        def change(state: BudgetState, now: float) -> None:
            self._settle_into(state, key, now)

        self._update(limit, key[1], change)
        self._slices.pop(key, None)

    async def return_idle(self, interval: float = 1.0) -> None:
        """Give back slices nobody here has drawn on for a while, so other replicas can."""
        while True:
            await asyncio.sleep(interval)
            idle = [
                key
                for key, s in list(self._slices.items())
                if time.monotonic() - s.touched > IDLE_SECONDS
            ]
            for key in idle:
                async with self._lock(key):
                    if key in self._slices:
                        try:
                            await asyncio.to_thread(self._settle, key)
                        except Exception as exc:
                            log.warning("cannot return slice of %s: %s", key[0], exc)

    def settle_all(self) -> None:
        """On shutdown: return every slice (what was not used goes back to the budget)."""
        for key in list(self._slices):
            try:
                self._settle(key)
            except Exception as exc:
                log.warning("cannot return slice of %s at shutdown: %s", key[0], exc)

    async def close(self) -> None:
        await asyncio.to_thread(self.settle_all)

    def usage(self, now: float) -> list[Usage]:
        found = []
        for key, limit in sorted(self._limits.items()):
            state = self.states.read(limit, key[1])
            if state is None:
                continue
            used = state.used(now, limit.window)
            found.append(Usage(key[0], key[1], used, limit.bound, limit.window, limit.exceeded))
        return found
