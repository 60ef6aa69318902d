"""Collect a cluster's chains for `kubewrit verify --kubeconfig`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kubewrit.webhook import keys
from kubewrit.webhook.chain import Anchor
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube.records import from_spec
from kubewrit.webhook.verify import Cut

LABELLED = {
    kube_api.LABEL_AGENT: "agent",
    kube_api.LABEL_DECISION: "decision",
    kube_api.LABEL_TOOL: "tool",
    kube_api.LABEL_CHAIN: "chain",
}


def with_labels_checked(item: dict[str, Any]) -> dict[str, Any]:
    """A record whose labels disagree with its signed spec was modified: make its hash say so."""
    record = from_spec(item["spec"])
    for label, field in LABELLED.items():
        shown = (item["metadata"].get("labels") or {}).get(label)
        if shown is not None and shown != kube_api.label_value(record.get(field)):
            record[field] = shown
    return record


def collect(
    kubeconfig: Path, namespace: str | None
) -> tuple[list[dict[str, Any]], list[Anchor], dict[str, Cut], list[keys.Verifier]]:
    api = kube_api.load(kubeconfig)
    custom, core = kube_api.custom(api), kube_api.core(api)
    if namespace:
        listing = custom.list_namespaced_custom_object(
            kube_api.GROUP, kube_api.VERSION, namespace, kube_api.RECORDS
        )
        configmaps = core.list_namespaced_config_map(
            namespace, field_selector=f"metadata.name={kube_api.ANCHORS_CONFIGMAP}"
        ).items
    else:
        listing = custom.list_cluster_custom_object(
            kube_api.GROUP, kube_api.VERSION, kube_api.RECORDS
        )
        configmaps = core.list_config_map_for_all_namespaces(
            field_selector=f"metadata.name={kube_api.ANCHORS_CONFIGMAP}"
        ).items
    records = sorted(
        (with_labels_checked(item) for item in listing.get("items", [])),
        key=lambda r: (str(r.get("chain")), int(r.get("seq") or 0)),
    )
    anchors, cuts = [], {}
    for configmap in configmaps:
        for key, value in (configmap.data or {}).items():
            if key.endswith(".cut"):
                data = json.loads(value)
                cuts[key[:-4]] = Cut(int(data["seq"]), str(data["prev"]))
            else:
                anchors.append(Anchor.from_dict(json.loads(value)))
    trusted: list[keys.Verifier] = []
    for configmap in core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.name={kube_api.KEYS_CONFIGMAP}"
    ).items:
        trusted.extend(keys.load_public(value) for value in (configmap.data or {}).values())
    return records, anchors, cuts, trusted
