"""Prometheus metrics: decisions by outcome and reason, latency, policy reload health."""

from __future__ import annotations

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
