"""Wiring for `kubewrit webhook`: the decision API backed by the Kubernetes API."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from kubewrit.webhook import keys
from kubewrit.webhook.authority import Authority
from kubewrit.webhook.backend import Backend, RecordQuery
from kubewrit.webhook.chain import Record
from kubewrit.webhook.errors import Unsupported
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube.approvals import ActionApprovalStore
from kubewrit.webhook.kube.budget import ConfigMapBudgets
from kubewrit.webhook.kube.history import RecordHistory
from kubewrit.webhook.kube.identity import (
    DEFAULT_AUDIENCE,
    DEFAULT_TTL_SECONDS,
    TokenReviewAuthenticator,
)
from kubewrit.webhook.kube.keys import PublishedKeys
from kubewrit.webhook.kube.policies import PolicyCache
from kubewrit.webhook.kube.records import ActionRecordLedger, RecorderPool
from kubewrit.webhook.kube.requests import DEFAULT_TTL_SECONDS as LEASE_TTL_SECONDS
from kubewrit.webhook.kube.requests import LeaseRequestStore
from kubewrit.webhook.metrics import Metrics
from kubewrit.webhook.policy_state import PolicyState
from kubewrit.webhook.recorder import AnchorPolicy
from kubewrit.webhook.server.runtime import Runtime, Tuning
from kubewrit.webhook.slices import LeasedBudgets

log = logging.getLogger(__name__)


@dataclass
class Config(Tuning):
    kubeconfig: Path | None = None
    namespace: str = "kubewrit-system"
    replica: str = ""
    signing_key: Path = Path("/var/run/kubewrit/signing-key.pem")
    token_cache_seconds: float = DEFAULT_TTL_SECONDS
    token_audience: str = DEFAULT_AUDIENCE
    request_id_ttl: float = LEASE_TTL_SECONDS
    # The operator's namespaces (empty: all): only there are approval decisions validated.
    approval_namespaces: tuple[str, ...] = ()

    def replica_name(self) -> str:
        return kube_api.dns_label(self.replica or socket.gethostname())


class KubectlRecordQueries:
    """`GET /v1/records` in Kubernetes mode: records are objects there; kubectl reads them."""

    def query(self, q: RecordQuery) -> list[Record]:
        raise Unsupported(
            "records_in_kubernetes",
            "in Kubernetes mode records are ActionRecord objects: "
            "kubectl get actionrecords -n NAMESPACE -l kubewrit.io/agent=NAME "
            "(and kubewrit verify --kubeconfig to check the chains)",
        )


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
    approvals = ActionApprovalStore(api, config.approval_namespaces)
    trusted_keys = PublishedKeys(api, config.namespace, signer.verifier)
    requests = LeaseRequestStore(
        api, config.namespace, config.replica_name(), trusted_keys, ttl=config.request_id_ttl
    )
    policies = PolicyCache(api, state, metrics)
    budgets = LeasedBudgets(
        ConfigMapBudgets(kube_api.core(api), config.namespace), config.replica_name()
    )
    backend = Backend(
        records=recorders,
        approvals=approvals,
        requests=requests,
        queries=KubectlRecordQueries(),
        budgets=budgets,
        history=RecordHistory(api, trusted_keys),
    )
    authority = Authority(
        state.current,
        backend,
        signer,
        config.writ_ttl,
        config.approval_ttl,
        trusted_keys=trusted_keys,
    )
    authenticator = TokenReviewAuthenticator(
        api, ttl=config.token_cache_seconds, audiences=[config.token_audience]
    )

    def start() -> None:
        ledger.publish_key(signer.key_id, signer.verifier.b64)
        policies.start()

    async def watch_approvals() -> None:
        await asyncio.to_thread(
            approvals.start, asyncio.get_running_loop(), authority.approvals.resolve
        )

    runtime = Runtime(authority, authenticator, state, metrics, config.max_body)
    runtime.start.append(start)
    runtime.stop.extend([policies.stop, approvals.stop, budgets.settle_all, recorders.stop])
    runtime.background.extend(
        [watch_approvals, authority.approvals.sweep, requests.collect_garbage, budgets.return_idle]
    )
    return runtime
