"""Talking to the API server: clients, resource names, and the few helpers every part needs."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config

GROUP = "kubewrit.io"
VERSION = "v1alpha1"
POLICIES = "agentpolicies"
APPROVALS = "actionapprovals"
RECORDS = "actionrecords"
KEYS_CONFIGMAP = "kubewrit-keys"
# Every kubewrit object the webhook writes (`?fieldValidation=`): a field the installed CRD
# does not know is refused, not pruned. Helm never upgrades a chart's CRDs, so a webhook
# newer than its CRDs would otherwise store a signed record without a field its signature
# covers, and answer as if it were durable; refused, the write fails and the decision is
# DENY. kube-apiserver's default (Warn) costs the same: it decodes as strictly, then prunes.
FIELD_VALIDATION = "Strict"

LABEL_AGENT = "kubewrit.io/agent"
LABEL_DECISION = "kubewrit.io/decision"
LABEL_CHAIN = "kubewrit.io/chain"
LABEL_TOOL = "kubewrit.io/tool"
LABEL_KIND = "kubewrit.io/kind"
LABEL_REQUEST = "kubewrit.io/request"
# When a record was made (UTC, YYYYMMDDHH and YYYYMMDD): a sequence rule's history lists
# only the hours or days its window reaches, not every PERMIT the agent ever had.
LABEL_HOUR = "kubewrit.io/hour"
LABEL_DAY = "kubewrit.io/day"

ANNOTATION_DECISION = "kubewrit.io/decision"
ANNOTATION_REASON = "kubewrit.io/reason"
ANNOTATION_DECIDED_BY = "kubewrit.io/decided-by"
ANNOTATION_DECIDED_GROUPS = "kubewrit.io/decided-by-groups"
ANNOTATION_DECIDED_AT = "kubewrit.io/decided-at"
STAMP_ANNOTATIONS = (ANNOTATION_DECIDED_BY, ANNOTATION_DECIDED_GROUPS, ANNOTATION_DECIDED_AT)
DECISION_ANNOTATIONS = (ANNOTATION_DECISION, ANNOTATION_REASON)

SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def load(kubeconfig: Path | str | None = None, context: str | None = None) -> client.ApiClient:
    """An API client from a kubeconfig file, or from the pod's service account in a cluster."""
    configuration = client.Configuration()
    # Enough pooled keep-alive connections for every concurrent writer: a pool smaller than the
    # writers discards connections, and each new one costs the API server a TLS handshake.
    configuration.connection_pool_maxsize = 32
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except config.ConfigException:
            pass
    config.load_kube_config(
        config_file=str(kubeconfig) if kubeconfig else None,
        context=context,
        client_configuration=configuration,
    )
    return client.ApiClient(configuration)


def label_value(value: str | None) -> str:
    """A label-safe spelling of a value (labels are for selection; the spec holds the truth)."""
    if not value:
        return ""
    safe = _LABEL_UNSAFE.sub("_", value).strip("_.-")
    if len(safe) > 63:
        safe = safe[:54].rstrip("_.-") + "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    return safe


def dns_label(value: str) -> str:
    """Lower-case DNS label (object names, chain ids)."""
    safe = re.sub(r"[^a-z0-9-]", "-", value.lower()).strip("-") or "x"
    if len(safe) > 63:
        safe = safe[:54].rstrip("-") + "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    return safe


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def read_custom(
    custom: client.CustomObjectsApi, namespace: str, plural: str, name: str
) -> dict[str, Any] | None:
    """One of kubewrit's objects, or None if it does not exist (any other error raises)."""
    try:
        return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name))
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def status_of(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


def annotations_of(obj: Any) -> dict[str, str]:
    if obj is None:
        return {}
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime | float | None = None) -> str:
    """Seconds-precision RFC 3339 in UTC (`2026-01-02T03:04:05Z`), as Kubernetes writes times."""
    if isinstance(moment, int | float):
        moment = datetime.fromtimestamp(moment, tz=UTC)
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


def timestamp(text: str | None) -> float:
    """RFC 3339 -> seconds since the epoch (0.0 when absent)."""
    moment = parse_time(text)
    return moment.timestamp() if moment else 0.0
