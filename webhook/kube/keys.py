"""The webhook replicas' public keys, as published in kubewrit's own namespace.

Every replica publishes its key in the `kubewrit-keys` ConfigMap of the webhook's
namespace (where tenants cannot write). A replica trusts an approval's seal or a
record's signature only under a key found there, so an approval opened, or a
decision recorded, by one replica is honoured by every other.
"""

from __future__ import annotations

import logging
import threading
import time

from kubernetes import client
from kubewrit.webhook.keys import Verifier
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import configmaps

log = logging.getLogger(__name__)


class PublishedKeys:
    """A key source (`approval.KeySource`): a cache of the home namespace's published keys."""

    def __init__(
        self, api: client.ApiClient, namespace: str, own: Verifier, min_interval: float = 1.0
    ) -> None:
        self.core = kube_api.core(api)
        self.namespace = namespace
        self.min_interval = min_interval
        self._known: dict[str, Verifier] = {own.key_id: own}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self, key_id: str) -> list[Verifier]:
        with self._lock:
            if key_id not in self._known and time.monotonic() - self._read_at > self.min_interval:
                self._reload()
            found = self._known.get(key_id)
        return [found] if found else []

    def _reload(self) -> None:
        self._read_at = time.monotonic()
        try:
            data = configmaps.read(self.core, self.namespace, kube_api.KEYS_CONFIGMAP)
        except Exception as exc:  # unknown keys stay untrusted: fail closed
            log.warning("cannot read the published keys: %s", exc)
            return
        verifiers, problems = configmaps.parse_keys(data, f"{self.namespace}/kubewrit-keys")
        for problem in problems:
            log.warning("%s", problem)
        self._known.update({v.key_id: v for v in verifiers})
