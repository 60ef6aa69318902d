"""History facts from ActionRecords: what an agent was permitted recently, cluster-wide.

Records are created before their answers, by whichever replica decided, so a list
through the API server (a quorum read) sees every PERMIT that was answered before
this question was asked, whichever replica answered it: a sequence rule cannot be
stepped around by reaching another replica. Only policies that use `match.after` or
`history.*` pay for the read.

Records carry the hour and the day they were made as labels, and the list names only the
hours (for windows up to two days) or days (up to the longest, 31) the questions' window
reaches, and the next one, for a replica whose clock runs ahead: each decision reads its
window's PERMITs, not every PERMIT the agent ever had. Records made before those labels
existed are listed too, by a second list run alongside (`!kubewrit.io/hour`), so an
upgrade forgets nothing a window still holds.

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
from kubewrit.webhook.kube.records import signed_record, time_labels_at
from kubewrit.webhook.policy.history import Facts, Recent, tally

log = logging.getLogger(__name__)

VOUCHED_MAX = 100_000  # record hashes remembered as genuine; forgotten all at once past this


HOUR, DAY = 3600, 86400


def window_selector(now: float, window: int) -> str:
    """The label requirement naming every hour, or past two days every day, a record made
    in the `window` seconds before `now` carries, and the one after `now`'s."""
    label, step = (kube_api.LABEL_HOUR, HOUR) if window <= 2 * DAY else (kube_api.LABEL_DAY, DAY)
    first, last = int(now - window) // step, int(now) // step + 1
    values = [time_labels_at(n * step)[label] for n in range(first, last + 1)]
    return f"{label} in ({','.join(values)})"


class RecordHistory:
    def __init__(
        self, api: client.ApiClient, trusted_keys: Callable[[str], Sequence[Verifier]]
    ) -> None:
        self.custom = kube_api.custom(api)
        self.trusted_keys = trusted_keys
        self._vouched: set[str] = set()  # hashes of records found signed (chain.genuine)

    async def facts(self, questions: Sequence[Recent], action: Action, now: float) -> Facts:
        tools = sorted({tool for q in questions for tool in q.tools})
        permits = ",".join(
            [
                f"{kube_api.LABEL_AGENT}={kube_api.label_value(action.agent)}",
                f"{kube_api.LABEL_DECISION}=PERMIT",
                f"{kube_api.LABEL_TOOL} in ({','.join(kube_api.label_value(t) for t in tools)})",
            ]
        )
        namespace = action.namespace or "default"
        window = max(q.window for q in questions)
        listings = await asyncio.gather(
            asyncio.to_thread(self._list, namespace, f"{permits},{window_selector(now, window)}"),
            asyncio.to_thread(self._list, namespace, f"{permits},!{kube_api.LABEL_HOUR}"),
        )
        items = [item for listing in listings for item in listing]
        return tally(questions, action, now, self._genuine(items))

    def _list(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        listed: Any = self.custom.list_namespaced_custom_object(
            kube_api.GROUP, kube_api.VERSION, namespace, kube_api.RECORDS, label_selector=selector
        )
        return list(listed.get("items", []))

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
