"""Collect a cluster's chains for `kubewrit verify --kubeconfig`.

Trust comes only from kubewrit's own namespace (`trust_namespace`): the public keys in its
`kubewrit-keys` and the anchors and cuts in its `kubewrit-anchors-<namespace>` ConfigMaps.
A namespace admin can write ConfigMaps in their own namespace, so nothing there is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubewrit.webhook import keys
from kubewrit.webhook.chain import Anchor, Cut, Record
from kubewrit.webhook.kube import api as kube_api
from kubewrit.webhook.kube import configmaps
from kubewrit.webhook.kube.records import from_spec, labels
from kubewrit.webhook.verify import Problem

LABEL_PREFIX = "kubewrit.io/"


@dataclass
class Collected:
    """What a cluster holds to verify, and what in it is wrong before any hash is checked."""

    records: list[dict[str, Any]] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    cuts: dict[str, Cut] = field(default_factory=dict)
    trusted: list[keys.Verifier] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    namespace_of: dict[str, str] = field(default_factory=dict)  # chain -> its namespace


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


TIME_LABELS = {kube_api.LABEL_HOUR, kube_api.LABEL_DAY}


def label_problem(item: dict[str, Any]) -> Problem | None:
    """Every `kubewrit.io/` label must be exactly what the webhook set from the signed spec.

    Selections (`-l kubewrit.io/decision=PERMIT`, the console's filters) read labels, so a
    removed, changed or added label hides or disguises a record: it is a modification.
    A record with neither time label was made before they existed; history lists such
    records on their own (`kube.history`), so their absence hides nothing.
    """
    record = from_spec(_mapping(item.get("spec")))
    try:
        expected = labels(Record.from_dict(record))
    except ValueError:
        return None  # unreadable: the verifier names it
    shown = {
        key: value
        for key, value in _mapping(_mapping(item.get("metadata")).get("labels")).items()
        if key.startswith(LABEL_PREFIX)
    }
    if not shown.keys() & TIME_LABELS:
        expected = {key: value for key, value in expected.items() if key not in TIME_LABELS}
    if shown == expected:
        return None
    name = _mapping(item.get("metadata")).get("name")
    changes = []
    for key in sorted(set(shown) | set(expected)):
        if key not in shown:
            changes.append(f"label {key} was removed (the signed record says {expected[key]!r})")
        elif key not in expected:
            changes.append(f"label {key}={shown[key]!r} was added")
        elif shown[key] != expected[key]:
            changes.append(f"label {key} says {shown[key]!r}, the signed record {expected[key]!r}")
    return Problem(
        str(record.get("chain") or ""),
        record.get("seq") if type(record.get("seq")) is int else None,
        "modified",
        f"ActionRecord {name}: " + "; ".join(changes),
    )


def collect(
    kubeconfig: Path,
    namespace: str | None,
    trust_namespace: str = configmaps.HOME_NAMESPACE,
) -> Collected:
    api = kube_api.load(kubeconfig)
    custom, core = kube_api.custom(api), kube_api.core(api)
    if namespace:
        listing = custom.list_namespaced_custom_object(
            kube_api.GROUP, kube_api.VERSION, namespace, kube_api.RECORDS
        )
        wanted = configmaps.anchors_name(namespace)
        anchor_maps = core.list_namespaced_config_map(
            trust_namespace, field_selector=f"metadata.name={wanted}"
        ).items
    else:
        listing = custom.list_cluster_custom_object(
            kube_api.GROUP, kube_api.VERSION, kube_api.RECORDS
        )
        anchor_maps = [
            configmap
            for configmap in core.list_namespaced_config_map(trust_namespace).items
            if configmap.metadata.name.startswith(configmaps.ANCHORS_PREFIX)
        ]
    found = Collected()
    for item in listing.get("items", []):
        found.records.append(from_spec(_mapping(item.get("spec"))))
        problem = label_problem(item)
        if problem is not None:
            found.problems.append(problem)
    for configmap in anchor_maps:
        where = f"ConfigMap {trust_namespace}/{configmap.metadata.name}"
        parsed = configmaps.parse_anchors(configmap.data, where)
        found.anchors.extend(parsed.anchors)
        found.cuts.update(parsed.cuts)
        found.problems.extend(Problem("", None, "malformed", p) for p in parsed.problems)
        home = configmap.metadata.name[len(configmaps.ANCHORS_PREFIX) :]
        found.namespace_of.update({a.chain: home for a in parsed.anchors})
    keys_map = configmaps.read(core, trust_namespace, kube_api.KEYS_CONFIGMAP)
    where = f"ConfigMap {trust_namespace}/{kube_api.KEYS_CONFIGMAP}"
    verifiers, problems = configmaps.parse_keys(keys_map, where)
    found.trusted.extend(verifiers)
    found.problems.extend(Problem("", None, "malformed", p) for p in problems)
    return found
