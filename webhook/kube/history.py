"""History facts from ActionRecords: what an agent was permitted recently, cluster-wide.

Records are created before their answers, by whichever replica decided, so a list
through the API server (a quorum read) sees every PERMIT that was answered before
this question was asked, whichever replica answered it: a sequence rule cannot be
stepped around by reaching another replica. Only policies that use `match.after` or
`history.*` pay for the read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from kubernetes import client
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.policy.history import Facts, Recent, tally


class RecordHistory:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = kube_api.custom(api)

    async def facts(self, questions: Sequence[Recent], action: Action, now: float) -> Facts:
        return await asyncio.to_thread(self._facts, questions, action, now)

    def _facts(self, questions: Sequence[Recent], action: Action, now: float) -> Facts:
        tools = sorted({tool for q in questions for tool in q.tools})
        selector = ",".join(
            [
                f"{kube_api.LABEL_AGENT}={kube_api.label_value(action.agent)}",
                f"{kube_api.LABEL_DECISION}=PERMIT",
                f"{kube_api.LABEL_TOOL} in ({','.join(kube_api.label_value(t) for t in tools)})",
            ]
        )
        listed: Any = self.custom.list_namespaced_custom_object(
            kube_api.GROUP,
            kube_api.VERSION,
            action.namespace or "default",
            kube_api.RECORDS,
            label_selector=selector,
        )
        return tally(questions, action, now, [i.get("spec", {}) for i in listed.get("items", [])])
