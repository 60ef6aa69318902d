"""The webhook replicas' shared budgets: one ConfigMap per (limit, scope) in kubewrit's
namespace, changed by compare-and-swap (`configmaps.update`). The leasing protocol is
`slices.LeasedBudgets`'; the wire format is `configmaps.budget_data`'s."""

from __future__ import annotations

from collections.abc import Callable

from kubernetes import client
from kubewrit.webhook.kube import configmaps
from kubewrit.webhook.kube.api import label_value
from kubewrit.webhook.policy.limits import Limit
from kubewrit.webhook.slices import BudgetState


class ConfigMapBudgets:
    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core = core
        self.namespace = namespace

    def update(
        self,
        limit: Limit,
        scope: str,
        change: Callable[[BudgetState, float], None],
        clock: Callable[[], float],
    ) -> None:
        def apply(data: dict[str, str]) -> dict[str, str] | None:
            now = clock()
            state = configmaps.parse_budget(data, limit.id, scope)
            before = state.to_json()
            change(state, now)
            if state.to_json() == before:
                return None  # nothing to settle or grant: no write, no conflict for others
            return configmaps.budget_data(state, now, limit.window, limit.bound)

        configmaps.update(
            self.core,
            self.namespace,
            configmaps.budget_name(limit.id, scope),
            apply,
            labels={configmaps.BUDGET_LABEL: label_value(limit.id)},
        )

    def read(self, limit: Limit, scope: str) -> BudgetState | None:
        data = configmaps.read(self.core, self.namespace, configmaps.budget_name(limit.id, scope))
        try:
            return configmaps.parse_budget(data, limit.id, scope) if data else None
        except ValueError:
            return None
