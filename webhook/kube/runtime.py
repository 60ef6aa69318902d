"""Wiring for `kubewrit webhook`: the decision API backed by the Kubernetes API."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from kubewrit.webhook import keys
from kubewrit.webhook.authority import Authority
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube.approvals import ActionApprovalStore
from kubewrit.webhook.kube.identity import TokenReviewAuthenticator
from kubewrit.webhook.kube.policies import PolicyCache
from kubewrit.webhook.kube.records import ActionRecordLedger, RecorderPool
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.recorder import AnchorPolicy
from kubewrit.webhook.server.runtime import Runtime
from kubewrit.webhook.store.sqlite import RecordQuery

log = logging.getLogger(__name__)


@dataclass
class Config:
    kubeconfig: Path | None = None
    namespace: str = "kubewrit-system"
    replica: str = ""
    signing_key: Path = Path("/var/run/kubewrit/signing-key.pem")
    max_body: int = 64 * 1024
    writ_ttl: int = 60
    approval_ttl: float = 15 * 60
    anchor_every: int = 100
    anchor_seconds: float = 10.0
    token_cache_seconds: float = 30.0

    def replica_name(self) -> str:
        return kube_api.dns_label(self.replica or socket.gethostname())


class NoRecordQueries:
    """`GET /v1/records` in Kubernetes mode points at kubectl: records are objects there."""

    def query(self, q: RecordQuery) -> list:  # type: ignore[type-arg]
        return []


def build(config: Config) -> Runtime:
    api = kube_api.load(config.kubeconfig)
    metrics = Metrics()
    state = PolicyState()
    signer = keys.load_or_create(config.signing_key)
    ledger = ActionRecordLedger(api, config.namespace)
    recorders = RecorderPool(
        ledger,
        signer,
        config.replica_name(),
        AnchorPolicy(config.anchor_every, config.anchor_seconds),
        signer.verifier.b64,
    )
    approvals = ActionApprovalStore(api)
    policies = PolicyCache(api, state, metrics)
    authority = Authority(
        state.current, recorders, approvals, signer, None, config.writ_ttl, config.approval_ttl
    )
    authenticator = TokenReviewAuthenticator(api, ttl=config.token_cache_seconds)

    def start() -> None:
        ledger.publish_key(signer.key_id, signer.verifier.b64)
        policies.start()

    async def watch_approvals() -> None:
        await asyncio.to_thread(approvals.start, asyncio.get_running_loop(), authority.resolve)

    runtime = Runtime(authority, authenticator, state, metrics, NoRecordQueries(), config.max_body)
    runtime.start.append(start)
    runtime.stop.extend([policies.stop, approvals.stop, recorders.stop])
    runtime.background.extend([watch_approvals, authority.sweep_expired])
    return runtime
