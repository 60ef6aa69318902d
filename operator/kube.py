"""API names and clients the operator's threads use (kopf's handlers use kopf's own client)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

GROUP = "kubewrit.io"
VERSION = "v1alpha1"
POLICIES = "agentpolicies"
APPROVALS = "actionapprovals"
RECORDS = "actionrecords"
ANCHORS_CONFIGMAP = "kubewrit-anchors"

LABEL_CHAIN = "kubewrit.io/chain"

ANNOTATION_DECISION = "kubewrit.io/decision"
ANNOTATION_REASON = "kubewrit.io/reason"
ANNOTATION_DECIDED_BY = "kubewrit.io/decided-by"
ANNOTATION_DECIDED_GROUPS = "kubewrit.io/decided-by-groups"
ANNOTATION_DECIDED_AT = "kubewrit.io/decided-at"
STAMP_ANNOTATIONS = (ANNOTATION_DECIDED_BY, ANNOTATION_DECIDED_GROUPS, ANNOTATION_DECIDED_AT)
DECISION_ANNOTATIONS = (ANNOTATION_DECISION, ANNOTATION_REASON)


def api_client(kubeconfig: Path | None = None, context: str | None = None) -> client.ApiClient:
    """A client from the given kubeconfig, else the pod's service account, else ~/.kube."""
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, context=context,
                            client_configuration=configuration)
    return client.ApiClient(configuration)


def status_of(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | None = None) -> str:
    """Seconds-precision RFC 3339 in UTC (`2026-01-02T03:04:05Z`), as Kubernetes writes times."""
    return (moment or now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 (with `Z` or an offset, with or without fractions) -> aware datetime."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def annotations_of(obj: Any) -> dict[str, str]:
    if obj is None:
        return {}
    return dict((obj.get("metadata") or {}).get("annotations") or {})
