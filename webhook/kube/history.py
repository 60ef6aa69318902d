"""History facts from ActionRecords: what an agent was permitted recently, cluster-wide.

Records are created before their answers, by whichever replica decided, so a list
through the API server (a quorum read) sees every PERMIT that was answered before
this question was asked, whichever replica answered it: a sequence rule cannot be
stepped around by reaching another replica. Only policies that use `match.after` or
`history.*` pay for the read.

Whoever may create ActionRecords in a namespace could plant a PERMIT to satisfy a rule
that allows an action only `after` another; so only records a kubewrit key signed are
counted (`chain.genuine`), each once. A record's signature is checked once per replica;
after that only its content is hashed again, to the hash remembered as vouched for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kubernetes import client
from kubewrit.webhook.canonical import Action
from kubewrit.webhook.keys import Verifier
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube.records import signed_record
from kubewrit.webhook.policy.history import Facts, Recent, tally

log = logging.getLogger(__name__)

VOUCHED_MAX = 100_000  # record hashes remembered as genuine; forgotten all at once past this


class RecordHistory:
    def __init__(
        self, api: client.ApiClient, trusted_keys: Callable[[str], Sequence[Verifier]]
    ) -> None:
        self.custom = kube_api.custom(api)
        self.trusted_keys = trusted_keys
        self._vouched: set[str] = set()  # hashes of records found signed (chain.genuine)

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
        return tally(questions, action, now, self._genuine(listed.get("items", [])))

    def _genuine(self, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The listed records' contents, once each, without any no kubewrit key signed."""
        if len(self._vouched) >= VOUCHED_MAX:
            self._vouched.clear()
        found: dict[str, dict[str, Any]] = {}
        for item in items:
            record = signed_record(item.get("spec") or {}, self.trusted_keys, self._vouched)
            if record is not None:
                found.setdefault(record.hash, record.to_dict())  # a copy counts once
                continue
            log.warning(
                "ActionRecord %s/%s is not signed by a kubewrit key; history ignores it",
                item.get("metadata", {}).get("namespace"),
                item.get("metadata", {}).get("name"),
            )
        return list(found.values())
