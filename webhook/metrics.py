"""Prometheus metrics: decisions by outcome and reason, latency, policy reload health,
and each limit's fullest scope (one series per limit: scopes can be per customer)."""

from __future__ import annotations

from collections.abc import Sequence

from kubewrit.webhook.budget import Usage
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """One registry per server, so several servers in one process (tests) stay apart."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "kubewrit_decisions",
            "Decisions by outcome and reason code",
            ["decision", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kubewrit_decide_latency_seconds",
            "Time to decide and durably record one action",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.reload_failures = Counter(
            "kubewrit_policy_reload_failures",
            "Policy changes rejected (previous policy kept)",
            registry=self.registry,
        )
        self.policies_loaded = Gauge(
            "kubewrit_policies_loaded",
            "Valid policies currently enforced",
            registry=self.registry,
        )
        self.approvals_pending = Gauge(
            "kubewrit_approvals_pending",
            "Approvals waiting for a human",
            registry=self.registry,
        )
        self.limit_used = Gauge(
            "kubewrit_limit_used",
            "Counted within the window, in the limit's fullest scope",
            ["limit"],
            registry=self.registry,
        )
        self.limit_bound = Gauge(
            "kubewrit_limit_bound", "A limit's bound", ["limit"], registry=self.registry
        )
        self.limit_scopes = Gauge(
            "kubewrit_limit_scopes",
            "Scopes a limit is counting in",
            ["limit"],
            registry=self.registry,
        )

    def observe_limits(self, usage: Sequence[Usage]) -> None:
        fullest: dict[str, Usage] = {}
        scopes: dict[str, int] = {}
        for u in usage:
            scopes[u.limit] = scopes.get(u.limit, 0) + 1
            if u.limit not in fullest or u.used > fullest[u.limit].used:
                fullest[u.limit] = u
        for limit, u in fullest.items():
            self.limit_used.labels(limit).set(float(u.used))
            self.limit_bound.labels(limit).set(float(u.bound))
            self.limit_scopes.labels(limit).set(scopes[limit])
