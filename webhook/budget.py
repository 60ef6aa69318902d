"""Budgets: the running count behind every limit, exact under concurrency.

A decision that draws on limits first *reserves* what it needs (`Budgets.reserve`):
one atomic step that checks every limit and takes the amounts, or takes nothing and
reports which limits would be exceeded. The reservation is then either committed,
once the decision's record is durable (the record carries the same entries, so the
count is provable from the chain), or released when no record was written. Two
decisions can therefore never both fit into the last unit of a budget, and a count
never includes a decision that has no record.

What one process may spend is a `Budgets` implementation's business: `LocalBudgets`
owns its budgets outright (the standalone server: one process, one SQLite file); the
Kubernetes webhook leases slices of each budget from a shared object
(`kube.budget.LeasedBudgets`) so replicas decide locally and never overspend together.

Counts are kept in one-second buckets, rounded up: a charge leaves its window up to a
second late, never early, so rounding can only make a limit stricter.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from kubewrit.webhook.policy.history import format_window
from kubewrit.webhook.policy.limits import Demand, Limit

ZERO = Decimal(0)


@dataclass(frozen=True)
class LimitEntry:
    """What one decision drew from (or found exceeded in) one limit; records carry these."""

    limit: str
    scope: str
    amount: Decimal
    used: Decimal  # counted before this decision
    bound: Decimal
    window: int
    effect: str  # what exceeding it does: require_approval | deny
    exceeded: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "limit": self.limit,
            "scope": self.scope,
            "amount": str(self.amount),
            "used": str(self.used),
            "bound": str(self.bound),
            "window": self.window,
            "effect": self.effect,
        }
        if self.exceeded:
            data["exceeded"] = True
        return data

    @classmethod
    def from_dict(cls, data: Any) -> LimitEntry:
        """Raises ValueError for an entry that is not one kubewrit writes."""
        try:
            return cls(
                str(data["limit"]),
                str(data["scope"]),
                Decimal(str(data["amount"])),
                Decimal(str(data["used"])),
                Decimal(str(data["bound"])),
                int(data["window"]),
                str(data["effect"]),
                bool(data.get("exceeded", False)),
            )
        except (KeyError, TypeError, ArithmeticError) as exc:
            raise ValueError(f"not a limit entry: {data!r:.120}") from exc

    def explain(self) -> str:
        within = format_window(self.window)
        beyond = "approval is required" if self.effect == "require_approval" else "it is denied"
        return (
            f"limit {self.limit} ({readable_scope(self.scope)}): {self.used} of {self.bound} "
            "used in the last "
            f"{within}; this action adds {self.amount}; beyond the limit {beyond}"
        )


def readable_scope(scope: str) -> str:
    """`agent=shop/bot, args.customer_id=c-1` from a scope key (canonical JSON pairs)."""
    try:
        return ", ".join(f"{k}={v}" for k, v in json.loads(scope))
    except (ValueError, TypeError):
        return scope


def entry(demand: Demand, used: Decimal, exceeded: bool = False) -> LimitEntry:
    limit = demand.limit
    return LimitEntry(
        limit.id,
        demand.scope,
        demand.amount,
        used,
        limit.bound,
        limit.window,
        limit.exceeded,
        exceeded,
    )


@dataclass
class Reservation:
    """The outcome of one reserve: all entries taken, or none and the exceeded ones named."""

    entries: tuple[LimitEntry, ...] = ()
    exceeded: tuple[LimitEntry, ...] = ()
    handle: Any = field(default=None, repr=False)

    @property
    def fits(self) -> bool:
        return not self.exceeded

    def records(self) -> list[dict[str, Any]] | None:
        """What the decision's record carries."""
        shown = self.exceeded or self.entries
        return [e.to_dict() for e in shown] or None


@dataclass(frozen=True)
class Usage:
    """One limit's current count in one scope (for `kubewrit limits`, status and metrics)."""

    limit: str
    scope: str
    used: Decimal
    bound: Decimal
    window: int
    effect: str


Bounded = Callable[[Limit], bool]


def every_limit(limit: Limit) -> bool:
    return True


class Budgets(Protocol):
    async def reserve(
        self, demands: Sequence[Demand], now: float, bounded: Bounded = every_limit
    ) -> Reservation:
        """Take every demand or none. `bounded(limit)` False: count it without checking it
        (an approval granted past a require_approval limit still counts)."""
        ...

    def commit(self, reservation: Reservation, at: float) -> None:
        """The decision's record is durable, with time `at`."""
        ...

    def release(self, reservation: Reservation) -> None:
        """No record was written: give the amounts back."""
        ...

    def usage(self, now: float) -> list[Usage]: ...

    async def close(self) -> None: ...


class ChargeSource(Protocol):
    """Where committed charges can be read back (the SQLite charges table)."""

    def charges(self, limit: str, scope: str, since: float) -> Iterable[tuple[float, Decimal]]: ...


class Window:
    """One (limit, scope) count: one-second buckets of [time, amount], oldest first."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.buckets: deque[list[Any]] = deque()
        self.total = ZERO
        self.horizon = math.inf  # nothing before this time has been loaded

    def add(self, at: float, amount: Decimal) -> list[Any]:
        second = math.ceil(at)
        if self.buckets and self.buckets[-1][0] >= second:
            bucket = self.buckets[-1]  # a later bucket only ever makes a charge last longer
        else:
            bucket = [second, ZERO]
            self.buckets.append(bucket)
        bucket[1] += amount
        self.total += amount
        return bucket

    def take(self, bucket: list[Any], amount: Decimal) -> None:
        bucket[1] -= amount
        self.total -= amount

    def used(self, now: float) -> Decimal:
        cutoff = now - self.limit.window
        while self.buckets and self.buckets[0][0] <= cutoff:
            self.total -= self.buckets.popleft()[1]
        return self.total


@dataclass
class _Taken:
    window: Window
    bucket: list[Any]
    amount: Decimal


class LocalBudgets:
    """Budgets this process owns outright (standalone: one server per SQLite file).

    Committed charges are also written with their records (the SQLite `charges` table,
    in the records' own transaction); a window is loaded from there the first time it
    is used and again when a policy change lengthens it, so a restart or a reload
    counts exactly what the records say.
    """

    def __init__(self, source: ChargeSource | None = None) -> None:
        self.source = source
        self._windows: dict[tuple[str, str], Window] = {}
        self._lock = threading.Lock()

    def _window(self, demand: Demand, now: float) -> Window:
        key = (demand.limit.id, demand.scope)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = Window(demand.limit)
        window.limit = demand.limit
        since = now - demand.limit.window
        if window.horizon > since:
            self._load(window, key, since)
        return window

    def _load(self, window: Window, key: tuple[str, str], since: float) -> None:
        if self.source is not None:
            loaded = sorted(self.source.charges(key[0], key[1], since))
            older = [(t, a) for t, a in loaded if t < window.horizon]
            fresh: deque[list[Any]] = deque()
            for t, amount in older:
                second = math.ceil(t)
                if fresh and fresh[-1][0] == second:
                    fresh[-1][1] += amount
                else:
                    fresh.append([second, amount])
            window.buckets = fresh + window.buckets
            window.total += sum((a for _, a in older), ZERO)
        window.horizon = since

    async def reserve(
        self, demands: Sequence[Demand], now: float, bounded: Bounded = every_limit
    ) -> Reservation:
        if not demands:
            return Reservation()
        with self._lock:
            # One window per demand: a limit's id is unique (policy names are).
            windows = [self._window(d, now) for d in demands]
            used = [w.used(now) for w in windows]
            exceeded = [
                entry(demand, before, exceeded=True)
                for demand, before in zip(demands, used, strict=True)
                if bounded(demand.limit) and before + demand.amount > demand.limit.bound
            ]
            if exceeded:
                return Reservation(exceeded=tuple(exceeded))
            taken = [
                _Taken(w, w.add(now, d.amount), d.amount)
                for d, w in zip(demands, windows, strict=True)
            ]
        entries = tuple(entry(d, u) for d, u in zip(demands, used, strict=True))
        return Reservation(entries=entries, handle=taken)

    def commit(self, reservation: Reservation, at: float) -> None:
        with self._lock:
            for taken in reservation.handle or ():
                if math.ceil(at) > taken.bucket[0]:  # recorded after its bucket: move it later
                    taken.window.take(taken.bucket, taken.amount)
                    taken.bucket = taken.window.add(at, taken.amount)

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            for taken in reservation.handle or ():
                taken.window.take(taken.bucket, taken.amount)
            reservation.handle = None

    def usage(self, now: float) -> list[Usage]:
        with self._lock:
            return [
                Usage(limit_id, scope, w.used(now), w.limit.bound, w.limit.window, w.limit.exceeded)
                for (limit_id, scope), w in sorted(self._windows.items())
            ]

    async def close(self) -> None:
        """Nothing is held on anyone else's behalf."""
