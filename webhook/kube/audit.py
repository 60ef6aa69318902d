"""Collect a cluster's chains for `kubewrit verify --kubeconfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubewrit.webhook import keys
from kubewrit.webhook.chain import Anchor, Cut
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import configmaps
from kubewrit.webhook.kube.records import from_spec

LABELLED = {
    kube_api.LABEL_AGENT: "agent",
    kube_api.LABEL_DECISION: "decision",
    kube_api.LABEL_TOOL: "tool",
    kube_api.LABEL_CHAIN: "chain",
}


@dataclass
class Collected:
    """What a cluster holds to verify, and what in it could not be read (each a finding)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    cuts: dict[str, Cut] = field(default_factory=dict)
    trusted: list[keys.Verifier] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def with_labels_checked(item: dict[str, Any]) -> dict[str, Any]:
    """A record whose labels disagree with its signed spec was modified: make its hash say so."""
    record = from_spec(_mapping(item.get("spec")))
    labels = _mapping(_mapping(item.get("metadata")).get("labels"))
    for label, name in LABELLED.items():
        shown = labels.get(label)
        if shown is not None and shown != kube_api.label_value(record.get(name)):
            record[name] = shown
    return record


def collect(kubeconfig: Path, namespace: str | None) -> Collected:
    api = kube_api.load(kubeconfig)
    custom, core = kube_api.custom(api), kube_api.core(api)
    if namespace:
        listing = custom.list_namespaced_custom_object(
            kube_api.GROUP, kube_api.VERSION, namespace, kube_api.RECORDS
        )
        anchor_maps = core.list_namespaced_config_map(
            namespace, field_selector=f"metadata.name={kube_api.ANCHORS_CONFIGMAP}"
        ).items
    else:
        listing = custom.list_cluster_custom_object(
            kube_api.GROUP, kube_api.VERSION, kube_api.RECORDS
        )
        anchor_maps = core.list_config_map_for_all_namespaces(
            field_selector=f"metadata.name={kube_api.ANCHORS_CONFIGMAP}"
        ).items
    found = Collected(records=[with_labels_checked(item) for item in listing.get("items", [])])
    for configmap in anchor_maps:
        where = f"ConfigMap {configmap.metadata.namespace}/{configmap.metadata.name}"
        parsed = configmaps.parse_anchors(configmap.data, where)
        found.anchors.extend(parsed.anchors)
        found.cuts.update(parsed.cuts)
        found.problems.extend(parsed.problems)
    for configmap in core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.name={kube_api.KEYS_CONFIGMAP}"
    ).items:
        where = f"ConfigMap {configmap.metadata.namespace}/{configmap.metadata.name}"
        verifiers, problems = configmaps.parse_keys(configmap.data, where)
        found.trusted.extend(verifiers)
        found.problems.extend(problems)
    return found
