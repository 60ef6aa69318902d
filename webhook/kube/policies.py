"""A watch-fed cache of AgentPolicies: no API read on the decision path.

Each object is compiled by the same compiler the CLI uses. An object that stops
compiling keeps its last valid version in force (the operator says so in its
status); a deleted object is gone at once, so its agents fall to default deny.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client
from kubewrit.webhook import policy
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import watching
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy.model import Policy
from kubewrit.webhook.policy_state import PolicyState, SourceProblem

log = logging.getLogger(__name__)


def compile_object(obj: dict[str, Any]) -> Policy:
    metadata = obj.get("metadata") or {}
    source = f"AgentPolicy {metadata.get('namespace')}/{metadata.get('name')}"
    return policy.compile_document(obj, source)


class PolicyCache:
    def __init__(
        self, api: client.ApiClient, state: PolicyState, metrics: Metrics | None = None
    ) -> None:
        self.api = api
        self.state = state
        # Ready means synced: an empty list of AgentPolicies is an answer too.
        state.empty_is_ready = True
        self.metrics = metrics
        self.synced = threading.Event()
        self._by_key: dict[tuple[str, str], Policy] = {}
        self._errors: dict[tuple[str, str], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="policy-cache", daemon=True)
        self._thread.start()
        if not self.synced.wait(timeout=30):
            log.error("policy cache did not sync within 30 s; every action is denied until it does")

    def stop(self) -> None:
        self._stop.set()

    def _publish(self) -> None:
        self.state.replace(
            sorted(self._by_key.values(), key=lambda p: (p.namespace or "", p.name)),
            {
                f"AgentPolicy {namespace}/{name}": SourceProblem(
                    error, kept_last_valid=(namespace, name) in self._by_key
                )
                for (namespace, name), error in self._errors.items()
            },
        )
        if self.metrics:
            self.metrics.policies_loaded.set(len(self._by_key))

    def apply(self, event_type: str, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        key = (metadata.get("namespace", ""), metadata.get("name", ""))
        if event_type == "DELETED":
            self._by_key.pop(key, None)
            self._errors.pop(key, None)
        else:
            try:
                self._by_key[key] = compile_object(obj)
                self._errors.pop(key, None)
            except policy.PolicyError as exc:
                log.error("keeping the last valid version of %s/%s: %s", *key, exc)
                self._errors[key] = str(exc)
                if self.metrics:
                    self.metrics.reload_failures.inc()
        self._publish()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        seen = set()
        for obj in items:
            metadata = obj["metadata"]
            seen.add((metadata["namespace"], metadata["name"]))
            self.apply("ADDED", obj)
        for key in set(self._by_key) - seen:
            self._by_key.pop(key, None)
        self._publish()
        self.synced.set()

    def _run(self) -> None:
        watching.follow(self.api, kube_api.POLICIES, self._stop, self._listed, self.apply)
