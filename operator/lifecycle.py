"""Operator startup and shutdown: kopf settings, the admission server, singleton work."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubewrit.operator import admission, approvals
from kubewrit.operator.config import Config
from kubewrit.operator.leader import LeaderElector, Singleton
from kubewrit.operator.retention import Retention
from kubewrit.webhook.kube import api as kube

log = logging.getLogger(__name__)


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """--kubeconfig wins (read now, not when the client library was imported); else in-cluster."""
    if memo.config.kubeconfig is not None:
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Wire kopf to the configuration and start leader election for the singleton work."""
    config: Config = memo.config
    # Our own Lease elects the singleton; kopf's peering would pause *all* handling in
    # every replica but one, and admission must be answered by every replica.
    settings.peering.standalone = True
    # Status is a pure function of the spec; no kopf bookkeeping annotations on objects.
    settings.persistence.finalizer = "kubewrit.io/operator"
    settings.posting.level = logging.WARNING  # Events only for what needs a human
    admission.configure(settings, config.admission)

    api = kube.load(config.kubeconfig)
    approvals.API["client"] = api
    memo.api = api
    if config.retention.enabled:
        retention = Retention(api, config.retention, config.namespaces)
        elector = LeaderElector(api, config.leader)
        memo.singleton = Singleton(
            elector, lambda e: retention.run_once(lambda: e.leading), config.retention.interval
        )
        memo.singleton.start()
        log.info(
            "retention: max age %.0fs, max count %d per namespace, sink %s, lease %s/%s as %s",
            config.retention.max_age,
            config.retention.max_count,
            config.retention.sink,
            config.leader.namespace,
            config.leader.name,
            config.leader.identity,
        )
    else:
        log.info("retention: off (neither --retention-max-age nor --retention-max-count set)")


@kopf.on.cleanup()
def shutdown(memo: kopf.Memo, **_: Any) -> None:
    """Release the lease so another replica takes over the singleton work at once."""
    singleton = getattr(memo, "singleton", None)
    if singleton is not None:
        singleton.stop()
